// BullMQ's sandboxed processor file: each job runs in a child process of the worker (BullMQ forks it),
// so the worker's event loop stays free to renew job locks while a run trains for hours, and a crashed
// run fails only its job. The run itself is another child (`topiary run`), started by executeRun.
import type { SandboxedJob } from 'bullmq';
import { RunFailedError, executeRun, type RunJob } from './runner.js';
import type { RunResult } from './results.js';

export default async function process_(job: SandboxedJob<RunJob, RunResult>, _token?: string, signal?: AbortSignal): Promise<RunResult> {
  const env = process.env;
  try {
    return await executeRun(job.data, {
      bin: env['TOPIARY_SWEEP_BIN']!,
      cliArgs: JSON.parse(env['TOPIARY_SWEEP_CLI_ARGS'] ?? '[]') as string[],
      ...(env['TOPIARY_SWEEP_BACKEND'] ? { backend: env['TOPIARY_SWEEP_BACKEND'] } : {}),
      onProgress: (p) => void job.updateProgress(p as unknown as Record<string, unknown>).catch(() => {}),
      ...(signal ? { signal } : {}),
    });
  } catch (err) {
    // A config error fails the same way on every attempt: BullMQ does not retry an UnrecoverableError.
    if (err instanceof RunFailedError && err.permanent) err.name = 'UnrecoverableError';
    throw err;
  }
}
