import { existsSync, promises as fs, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MARKER_FILE, OutputError, outputMarker, prepareOutput, readMarker, writeFileAtomic } from '@topiary/core';
import { runOnBullmq, type ExecutorCallbacks } from './bullmq.js';
import type { SweepEvent } from './events.js';
import { readRunResult, rowOf, writeResults, type Executor, type RunResult, type RunStatus, type SweepResults } from './results.js';
import { executeRun, type RunJob } from './runner.js';
import type { SweepPlan } from './spec.js';

/** What Topiary writes into a sweep folder (its marker lists them, so a re-run may write there again). */
const SWEEP_ENTRIES = ['configs', 'runs', 'sweep.json', 'sweep.csv'];

export interface SweepOptions {
  executor: Executor;
  /** Local lanes (default: one per core). */
  lanes?: number;
  redis?: string;
  queue?: string;
  attempts?: number;
  backoff?: number;
  force?: boolean;
  /** The topiary CLI's bin.js and the global options each run gets. */
  bin: string;
  cliArgs?: string[];
  backend?: string;
  onEvent(e: SweepEvent): void;
  /** Aborting stops the sweep: local runs checkpoint and stop (resumed by the next `topiary sweep`), BullMQ jobs stay queued. */
  signal?: AbortSignal;
}

/** Local lanes and native threads per lane: lanes x threads never exceeds the cores. */
export function laneLayout(lanes: number | undefined, runs: number, cores = os.availableParallelism()): { lanes: number; threads: number } {
  const n = Math.max(1, Math.min(lanes ?? cores, Math.max(runs, 1)));
  return { lanes: n, threads: Math.max(1, Math.floor(cores / n)) };
}

/** The runs with their state on disk: completed ones (report.json and sweep-run.json in their folder) are skipped. */
export async function sweepState(plan: SweepPlan): Promise<Map<string, { status: RunStatus; result?: RunResult; error?: string }>> {
  const state = new Map<string, { status: RunStatus; result?: RunResult; error?: string }>();
  for (const r of plan.runs) {
    const result = await readRunResult(String(r.config['out']));
    state.set(r.id, result ? { status: 'completed', result } : { status: 'pending' });
  }
  return state;
}

/**
 * Runs a sweep: prepares its folder (a Topiary `sweep` folder: `configs/<id>.json`, `runs/<id>/`,
 * `sweep.json`, `sweep.csv`), skips the runs that completed before, executes the others on local lanes
 * or BullMQ workers (each resumes from its checkpoint when it has one) and rewrites sweep.json and
 * sweep.csv after every run.
 */
export async function runSweep(plan: SweepPlan, o: SweepOptions): Promise<SweepResults> {
  const started = Date.now();
  const inputs = plan.runs.flatMap((r) => [r.config['model'], r.config['teacher'], r.config['pretrained']].filter((p): p is string => typeof p === 'string'));
  await prepareOutput(plan.out, { kind: 'sweep', inputs: [plan.file, ...new Set(inputs)], ...(o.force ? { force: true } : {}), what: 'sweep out' });
  const marker = await readMarker(plan.out);
  if (marker && marker.kind !== 'sweep') throw new OutputError(`sweep out ${plan.out}: holds a Topiary ${marker.kind}, not a sweep`);
  await fs.writeFile(path.join(plan.out, MARKER_FILE), `${JSON.stringify(outputMarker('sweep', SWEEP_ENTRIES), null, 2)}\n`);
  await fs.mkdir(path.join(plan.out, 'configs'), { recursive: true });
  await fs.mkdir(path.join(plan.out, 'runs'), { recursive: true });
  const jobs: RunJob[] = [];
  for (const r of plan.runs) {
    const configFile = path.join(plan.out, 'configs', `${r.id}.json`);
    const text = `${JSON.stringify(r.config, null, 2)}\n`;
    if (!existsSync(configFile) || readFileSync(configFile, 'utf8') !== text) await writeFileAtomic(configFile, text);
    jobs.push({ id: r.id, config: r.config, configFile });
  }

  const state = await sweepState(plan);
  let created = new Date(started).toISOString();
  try {
    const prev = JSON.parse(await fs.readFile(path.join(plan.out, 'sweep.json'), 'utf8')) as SweepResults;
    if (typeof prev.sweep?.created === 'string') created = prev.sweep.created;
  } catch {
    // a new sweep
  }
  const results = (): SweepResults => ({
    sweep: { file: path.relative(plan.out, plan.file).split(path.sep).join('/'), axes: plan.axes, executor: o.executor, created },
    runs: plan.runs.map((r) => rowOf(plan, r, state.get(r.id)!)),
  });
  // One write at a time, in order: lanes finish concurrently.
  let writing = Promise.resolve();
  const save = () => (writing = writing.then(() => writeResults(plan.out, results())));
  await save();

  const pending = jobs.filter((j) => state.get(j.id)!.status !== 'completed');
  const layout = laneLayout(o.lanes, pending.length);
  o.onEvent({ type: 'sweep-started', file: plan.file, out: plan.out, executor: o.executor, runs: plan.runs.length, skipped: jobs.filter((j) => !pending.includes(j)).map((j) => j.id), lanes: o.executor === 'local' ? layout.lanes : null, time: created });

  const cb: ExecutorCallbacks = {
    onProgress: (p) => o.onEvent({ type: 'sweep-run-progress', ...p }),
    onCompleted: async (r) => {
      state.set(r.id, { status: 'completed', result: r });
      const row = rowOf(plan, plan.runs.find((x) => x.id === r.id)!, state.get(r.id)!);
      o.onEvent({ type: 'sweep-run-completed', id: r.id, host: r.host, accuracy: row.accuracy, encoderSparsity: row.encoderSparsity, speedup: row.speedup, wallSeconds: row.wallSeconds });
      await save();
    },
    onFailed: async (id, error, willRetry) => {
      o.onEvent({ type: 'sweep-run-failed', id, error, willRetry });
      if (willRetry) return;
      state.set(id, { status: 'failed', error });
      await save();
    },
  };

  if (o.executor === 'bullmq') {
    if (!o.redis) throw new OutputError('--executor bullmq needs --redis URL');
    await runOnBullmq(plan.out, pending, { redis: o.redis, ...(o.queue ? { queue: o.queue } : {}), ...(o.attempts ? { attempts: o.attempts } : {}), ...(o.backoff ? { backoff: o.backoff } : {}), ...(o.signal ? { signal: o.signal } : {}) }, cb);
  } else {
    let next = 0;
    const lane = async (k: number) => {
      while (next < pending.length && !o.signal?.aborted) {
        const job = pending[next++]!;
        try {
          const r = await executeRun(job, {
            bin: o.bin,
            cliArgs: o.cliArgs ?? [],
            ...(o.backend ? { backend: o.backend } : {}),
            env: { TOPIARY_NATIVE_THREADS: String(layout.threads) },
            lane: `lane ${k + 1}`,
            onProgress: cb.onProgress,
            ...(o.signal ? { signal: o.signal } : {}),
          });
          await cb.onCompleted(r);
        } catch (err) {
          // Stopped by the user: the run checkpointed and stays pending (resumed by the next sweep).
          if (o.signal?.aborted) break;
          await cb.onFailed(job.id, (err as Error).message, false);
        }
      }
    };
    await Promise.all(Array.from({ length: layout.lanes }, (_, k) => lane(k)));
  }
  await save();
  const final = results();
  const count = (s: RunStatus) => final.runs.filter((r) => r.status === s).length;
  o.onEvent({ type: 'sweep-completed', completed: count('completed'), failed: count('failed'), pending: count('pending'), wallSeconds: (Date.now() - started) / 1000, results: path.join(plan.out, 'sweep.json') });
  return final;
}
