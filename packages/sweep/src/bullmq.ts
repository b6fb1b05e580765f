import { createHash } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Job, Queue, Worker } from 'bullmq';
import type { RunResult } from './results.js';
import type { RunJob, RunProgress } from './runner.js';

export const DEFAULT_QUEUE = 'topiary-sweep';

/** The processor file BullMQ forks per job (always the built one: BullMQ runs it with plain Node). */
const processorFile = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'processor.js');

export interface ExecutorCallbacks {
  onProgress(p: RunProgress): void;
  onCompleted(r: RunResult): void | Promise<void>;
  onFailed(id: string, error: string, willRetry: boolean): void | Promise<void>;
}

export interface BullmqSweepOptions {
  redis: string;
  queue?: string;
  /** Attempts per run (retries with exponential backoff; a retry resumes from the run's checkpoint). */
  attempts?: number;
  /** First backoff delay in ms (doubles on each retry). */
  backoff?: number;
  /** How often the coordinator reads the jobs' state (ms). */
  pollEvery?: number;
  signal?: AbortSignal;
}

const connection = (url: string) => ({ url, maxRetriesPerRequest: null });

/** Waits for the connection, or fails naming the URL (the client would otherwise retry forever, silently). */
export async function ready(what: { waitUntilReady(): Promise<unknown> }, url: string, ms = 15_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([what.waitUntilReady(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`cannot reach Redis at ${url} within ${ms / 1000} s (is redis-server running there?)`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Enqueues the runs (job id = sweep folder hash + run id, so enqueueing again is a no-op while the job
 * exists; a failed or finished job of an earlier attempt of the sweep is replaced) and follows them
 * until each completed or failed for good. Aborting stops following; the jobs stay queued.
 */
export async function runOnBullmq(sweepOut: string, jobs: RunJob[], o: BullmqSweepOptions, cb: ExecutorCallbacks): Promise<void> {
  const queue = new Queue<RunJob, RunResult>(o.queue ?? DEFAULT_QUEUE, { connection: connection(o.redis) });
  const key = createHash('sha256').update(path.resolve(sweepOut)).digest('hex').slice(0, 8);
  const jobId = (id: string) => `${key}-${id}`;
  // Connection errors repeat every retry; `ready` reports an unreachable server once.
  let lastError = '';
  queue.on('error', (err) => {
    if (err.message !== lastError) process.stderr.write(`queue: ${err.message}\n`);
    lastError = err.message;
  });
  try {
    await ready(queue, o.redis);
    for (const j of jobs) {
      const old = await queue.getJob(jobId(j.id));
      if (old) {
        const state = await old.getState();
        if (state === 'failed' || state === 'completed') await old.remove();
        else continue; // waiting, delayed or active: a worker has it or will
      }
      await queue.add('run', j, { jobId: jobId(j.id), attempts: o.attempts ?? 3, backoff: { type: 'exponential', delay: o.backoff ?? 10_000 }, removeOnComplete: false, removeOnFail: false });
    }
    // attempts -1: not seen yet (a job queued by an earlier sweep may have failed attempts already).
    const open = new Map(jobs.map((j) => [j.id, { progress: '', attempts: -1 }]));
    while (open.size > 0 && !o.signal?.aborted) {
      for (const [id, seen] of open) {
        const job = await Job.fromId<RunJob, RunResult>(queue, jobId(id));
        if (!job) {
          open.delete(id);
          await cb.onFailed(id, 'the job was removed from the queue', false);
          continue;
        }
        const state = await job.getState();
        const progress = JSON.stringify(job.progress ?? '');
        if (progress !== seen.progress && typeof job.progress === 'object' && state === 'active') cb.onProgress(job.progress as unknown as RunProgress);
        seen.progress = progress;
        if (state === 'completed') {
          open.delete(id);
          await cb.onCompleted(job.returnvalue);
        } else if (state === 'failed') {
          open.delete(id);
          await cb.onFailed(id, job.failedReason ?? 'failed', false);
        } else if (seen.attempts >= 0 && job.attemptsMade > seen.attempts) {
          await cb.onFailed(id, job.failedReason ?? 'failed', true);
        }
        seen.attempts = job.attemptsMade;
      }
      await new Promise((r) => setTimeout(r, o.pollEvery ?? 1000));
    }
  } finally {
    await queue.close();
  }
}

export interface WorkerOptions {
  redis: string;
  queue?: string;
  /** Runs at once on this machine (each in its own sandboxed child process). */
  lanes: number;
  /** TOPIARY_NATIVE_THREADS of each run. */
  threads: number;
  bin: string;
  cliArgs?: string[];
  backend?: string;
  /** Job lock duration (ms): a run whose worker stops renewing it for this long is taken by another worker. */
  lockDuration?: number;
  /** How often this worker looks for stalled jobs (ms). */
  stalledInterval?: number;
}

/** A BullMQ worker taking sweep runs, each in a sandboxed child process (processor.js). */
export function startWorker(o: WorkerOptions): Worker<RunJob, RunResult> {
  return new Worker<RunJob, RunResult>(o.queue ?? DEFAULT_QUEUE, processorFile, {
    connection: connection(o.redis),
    concurrency: o.lanes,
    name: `${os.hostname()}:${process.pid}`,
    lockDuration: o.lockDuration ?? 60_000,
    stalledInterval: o.stalledInterval ?? 30_000,
    // A run whose worker died is taken again by another worker, twice at most.
    maxStalledCount: 2,
    workerForkOptions: {
      env: {
        ...process.env,
        TOPIARY_NATIVE_THREADS: String(o.threads),
        TOPIARY_SWEEP_BIN: o.bin,
        TOPIARY_SWEEP_CLI_ARGS: JSON.stringify(o.cliArgs ?? []),
        ...(o.backend ? { TOPIARY_SWEEP_BACKEND: o.backend } : {}),
      },
    },
  });
}
