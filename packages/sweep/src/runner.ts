import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '@topiary/core';
import { RUN_RESULT_FILE, readRunResult, type RunResult, type SpeedupMeasure } from './results.js';

/** What a lane knows about the run it executes (also the BullMQ job's data). */
export interface RunJob {
  id: string;
  /** The resolved run config (absolute paths; `out` is the run folder). */
  config: Record<string, unknown>;
  /** Where the resolved config is written (on the shared folder with BullMQ). */
  configFile: string;
}

/** Progress of a run, from its NDJSON events (the BullMQ job's progress value too). */
export interface RunProgress {
  id: string;
  /** Who runs it: `host:pid` of the lane. */
  lane: string;
  phase: string | null;
  /** Pruning level (1-based) of the last masks update, when the method has levels. */
  level: number | null;
  /** Encoder sparsity of the last masks update. */
  sparsity: number | null;
  step: number;
  totalSteps: number;
  /** Accuracy of the last evaluation. */
  accuracy: number | null;
  etaSeconds: number | null;
  /** Whether this attempt continues from a checkpoint. */
  resumed: boolean;
}

export interface ExecuteOptions {
  /** The topiary CLI's bin.js (run with this Node). */
  bin: string;
  /** Global CLI options every run gets (`--backend`, `--plugin`). */
  cliArgs?: string[];
  backend?: string;
  env?: NodeJS.ProcessEnv;
  lane?: string;
  onProgress?: (p: RunProgress) => void;
  /** Aborting sends SIGTERM to the run: it checkpoints and stops (the run can be resumed). */
  signal?: AbortSignal;
  /** Progress at most this often (ms), besides level changes and evaluations. */
  progressEvery?: number;
}

/** A run that failed: the message of its `run-failed` event (or its stderr's end) and its exit code. */
export class RunFailedError extends Error {
  override name = 'RunFailedError';
  constructor(
    message: string,
    public readonly exitCode: number | null,
    /** A usage/config error (exit 2): retrying cannot help. */
    public readonly permanent: boolean,
  ) {
    super(message);
  }
}

// Always the built script (a child runs it with plain Node, from src/ under the tests as from dist/).
const speedupMain = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'speedup-main.js');

/** Runs `node <args>` with NDJSON on stdout; resolves with the exit code and the tail of stderr. */
function child(args: string[], env: NodeJS.ProcessEnv, onLine: (e: Record<string, any>) => void, signal?: AbortSignal): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    // Ctrl-C in a terminal reaches the run too (same process group); a second signal would make it exit
    // at once without its checkpoint, so it is sent SIGTERM only when it did not say it is stopping.
    let stopping = false;
    const onAbort = () => setTimeout(() => !stopping && proc.exitCode === null && proc.signalCode === null && proc.kill('SIGTERM'), 1000).unref();
    signal?.addEventListener('abort', onAbort, { once: true });
    // A lane that loses its parent (a BullMQ sandbox whose worker died) stops its run too.
    const onDisconnect = () => proc.kill('SIGTERM');
    process.once('disconnect', onDisconnect);
    proc.stdout.on('data', (d: Buffer) => {
      out += d;
      let i: number;
      while ((i = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, i);
        out = out.slice(i + 1);
        if (!line.startsWith('{')) continue;
        try {
          onLine(JSON.parse(line));
        } catch {
          // not an event
        }
      }
    });
    proc.stderr.on('data', (d: Buffer) => {
      err = (err + d).slice(-4000);
      if (/stopping at the next step boundary/.test(err)) stopping = true;
    });
    proc.on('error', reject);
    proc.on('exit', (code, sig) => {
      signal?.removeEventListener('abort', onAbort);
      process.off('disconnect', onDisconnect);
      resolve({ code, signal: sig, stderr: err });
    });
  });
}

/**
 * Executes one run of a sweep in child processes: `topiary run <config> --json` (with `--resume` when
 * its folder holds a checkpoint, so a retried or restarted run continues where it stopped), then the
 * speedup measurement, then writes `sweep-run.json` into the run folder. A run whose folder already
 * holds both is not run again.
 */
export async function executeRun(job: RunJob, o: ExecuteOptions): Promise<RunResult> {
  const runDir = String(job.config['out']);
  const done = await readRunResult(runDir);
  if (done) return done;
  const env = { ...process.env, ...o.env };
  const lane = o.lane ?? `${os.hostname()}:${process.pid}`;
  if (!existsSync(job.configFile)) {
    await fs.mkdir(path.dirname(job.configFile), { recursive: true });
    await writeFileAtomic(job.configFile, `${JSON.stringify(job.config, null, 2)}\n`);
  }
  if (!existsSync(path.join(runDir, 'report.json'))) {
    const resumed = existsSync(path.join(runDir, 'checkpoint', 'state.json'));
    const p: RunProgress = { id: job.id, lane, phase: null, level: null, sparsity: null, step: 0, totalSteps: 0, accuracy: null, etaSeconds: null, resumed };
    let failure: string | undefined;
    let last = 0;
    let phaseStart = { t: Date.now(), step: 0, phase: '' as string | null };
    const emit = (force: boolean) => {
      if (!o.onProgress || (!force && Date.now() - last < (o.progressEvery ?? 1000))) return;
      last = Date.now();
      o.onProgress({ ...p });
    };
    const args = [o.bin, ...(o.cliArgs ?? []), '--json', 'run', job.configFile, '--out', runDir, ...(resumed ? ['--resume'] : [])];
    const r = await child(args, env, (e) => {
      switch (e['type']) {
        case 'run-started':
          p.totalSteps = e['totalSteps'];
          emit(true);
          break;
        case 'step': {
          const phase = e['phase'] ?? null;
          if (phase !== phaseStart.phase || e['step'] < phaseStart.step) phaseStart = { t: Date.now(), step: e['step'], phase };
          p.phase = phase;
          p.step = e['step'];
          p.totalSteps = e['totalSteps'];
          const done = p.step - phaseStart.step;
          p.etaSeconds = done > 0 ? ((Date.now() - phaseStart.t) / 1000 / done) * (p.totalSteps - p.step) : null;
          emit(false);
          break;
        }
        case 'masks-updated':
          p.level = e['level'] ?? p.level;
          p.sparsity = e['sparsity']?.encoderSparsity ?? p.sparsity;
          emit(true);
          break;
        case 'evaluated':
          p.accuracy = e['metrics']?.accuracy ?? p.accuracy;
          emit(true);
          break;
        case 'run-failed':
          failure = e['error']?.message;
          break;
      }
    }, o.signal);
    // 1: the run finished but missed its `minAccuracyRetention`; its report is there.
    if (r.code !== 0 && r.code !== 1) {
      const why = failure ?? (r.signal ? `killed by ${r.signal}` : r.stderr.trim().split('\n').slice(-3).join('\n'));
      throw new RunFailedError(`run ${job.id}: topiary run exited ${r.code ?? r.signal}: ${why}`, r.code, r.code === 2);
    }
  }
  const report = JSON.parse(await fs.readFile(path.join(runDir, 'report.json'), 'utf8')) as Record<string, unknown>;
  const speedup = await measure(job, runDir, env, o);
  const result: RunResult = { id: job.id, report, host: os.hostname(), speedup };
  const { report: _r, ...saved } = result;
  await writeFileAtomic(path.join(runDir, RUN_RESULT_FILE), `${JSON.stringify(saved, null, 2)}\n`);
  return result;
}

/** The dense/pruned inference time ratio on a few dev batches, in a child process with the lane's environment. */
async function measure(job: RunJob, runDir: string, env: NodeJS.ProcessEnv, o: ExecuteOptions): Promise<SpeedupMeasure | null> {
  const c = job.config as { model: string; data: { dev: string; textField?: string; pairField?: string; labelField?: string }; training?: { maxLength?: number } };
  const pruned = path.join(runDir, 'model');
  if (!existsSync(path.join(pruned, 'config.json'))) return null;
  const opts = { dense: c.model, pruned, dev: c.data.dev, textField: c.data.textField, pairField: c.data.pairField, labelField: c.data.labelField, maxLength: c.training?.maxLength ?? 64, ...(o.backend ? { backend: o.backend } : {}) };
  let m: SpeedupMeasure | null = null;
  const r = await child([speedupMain, JSON.stringify(opts)], env, (e) => (m = e as SpeedupMeasure), o.signal);
  if (r.code !== 0) process.stderr.write(`run ${job.id}: speedup not measured: ${r.stderr.trim()}\n`);
  return m;
}
