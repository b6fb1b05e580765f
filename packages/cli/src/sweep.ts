import { existsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Option, type Command } from 'commander';
import { createRunContainer } from '@topiary/core';
import { DEFAULT_QUEUE, expandSweep, laneLayout, ready, runSweep, startWorker, type SweepEvent } from '@topiary/sweep';
import { RUN_CONFIG_PATH_FIELDS, UsageError, runConfigIssues } from './config.js';
import { allPlugins } from './plugins.js';

interface Globals {
  backend: string;
  plugin: string[];
  json: boolean;
}

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${name} must be a positive integer, got '${v}'`);
  return n;
};

/** This CLI's bin.js: every run of a sweep is `node bin.js run <config> --json`. */
const bin = fileURLToPath(new URL('./bin.js', import.meta.url));

/** The global options a sweep's runs get from the sweep command. */
const runArgs = (g: Globals) => ['--backend', g.backend, ...g.plugin.flatMap((p) => ['--plugin', p])];

const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(2)}%`);
const eta = (s: number | null) => (s === null ? '-' : s >= 3600 ? `${(s / 3600).toFixed(1)} h` : s >= 60 ? `${Math.round(s / 60)} min` : `${Math.round(s)} s`);

/**
 * The live view: one line per lane (run id, level, step/total, last accuracy, ETA), redrawn in place on
 * a terminal and printed every few seconds otherwise; run results as they come. `--json`: NDJSON.
 */
function sweepView(json: boolean): (e: SweepEvent) => void {
  if (json) return (e) => process.stdout.write(`${JSON.stringify(e)}\n`);
  const tty = Boolean(process.stderr.isTTY);
  const lanes = new Map<string, string>();
  let drawn = 0;
  let printed = 0;
  const draw = () => {
    if (!tty) return;
    if (drawn) process.stderr.write(`\x1b[${drawn}A`);
    for (const l of lanes.values()) process.stderr.write(`\x1b[2K${l}\n`);
    drawn = lanes.size;
  };
  const say = (m: string) => {
    if (tty && drawn) process.stderr.write(`\x1b[${drawn}A\x1b[J`);
    drawn = 0;
    process.stderr.write(`${m}\n`);
    draw();
  };
  return (e) => {
    switch (e.type) {
      case 'sweep-started':
        say(`sweep ${e.file}: ${e.runs} runs (${e.skipped.length} done before), ${e.executor}${e.lanes ? ` with ${e.lanes} lanes` : ''}; results in ${e.out}`);
        break;
      case 'sweep-run-progress': {
        // Structured pruners name the level in the phase (`level 1/2`); others only in masks updates.
        const phase = e.phase ?? (e.level !== null ? `level ${e.level}` : 'train');
        lanes.set(e.lane, `${e.lane.padEnd(8)} ${e.id}${e.resumed ? ' (resumed)' : ''} ${phase} step ${e.step}/${e.totalSteps} accuracy ${pct(e.accuracy)} ETA ${eta(e.etaSeconds)}`);
        if (tty) draw();
        else if (Date.now() - printed > 5000) {
          printed = Date.now();
          for (const l of lanes.values()) process.stderr.write(`${l}\n`);
        }
        break;
      }
      case 'sweep-run-completed':
        for (const [k, l] of lanes) if (l.includes(e.id)) lanes.delete(k);
        say(`done ${e.id} on ${e.host}: accuracy ${pct(e.accuracy)}, encoder sparsity ${pct(e.encoderSparsity)}, speedup ${e.speedup === null ? '-' : `${e.speedup.toFixed(2)}x`}, ${e.wallSeconds?.toFixed(0) ?? '-'} s`);
        break;
      case 'sweep-run-failed':
        for (const [k, l] of lanes) if (l.includes(e.id)) lanes.delete(k);
        say(`${e.willRetry ? 'retrying' : 'failed'} ${e.id}: ${e.error}`);
        break;
      case 'sweep-completed':
        say(`sweep: ${e.completed} completed, ${e.failed} failed, ${e.pending} pending in ${e.wallSeconds.toFixed(0)} s; ${e.results} (and sweep.csv)`);
        break;
    }
  };
}

/** One AbortController for SIGINT/SIGTERM; a second signal exits at once. */
function onSignals(what: string): { signal: AbortSignal; stop: () => void; code: () => number | undefined } {
  const controller = new AbortController();
  const handler = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(sig === 'SIGTERM' ? 143 : 130);
    process.stderr.write(`${sig}: ${what} (send it again to exit at once)\n`);
    controller.abort(sig);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: controller.signal,
    stop: () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
    code: () => (controller.signal.aborted ? (controller.signal.reason === 'SIGTERM' ? 143 : 130) : undefined),
  };
}

export function registerSweep(program: Command, globals: () => Globals): void {
  program
    .command('sweep <file>')
    .description('a grid of pruning runs from a sweep file, on local lanes or BullMQ workers: <out>/runs/<id>/, sweep.json and sweep.csv')
    .option('--out <dir>', "sweep folder (overrides the sweep file's out)")
    .addOption(new Option('--executor <name>', 'local child processes, or a BullMQ queue that `topiary worker`s take runs from').choices(['local', 'bullmq']).default('local'))
    .option('--lanes <n>', 'local: runs at once (default: one per core; native threads are split between lanes)', int('--lanes'))
    .option('--redis <url>', 'bullmq: the Redis server, e.g. redis://host:6379')
    .option('--queue <name>', 'bullmq: queue name', DEFAULT_QUEUE)
    .option('--attempts <n>', 'bullmq: attempts per run (retries back off exponentially and resume from the checkpoint)', int('--attempts'), 3)
    .option('--backoff <ms>', 'bullmq: first retry delay in ms (doubles each time)', int('--backoff'), 10_000)
    .option('--force', 'write into an existing sweep folder that holds files Topiary did not write (only its own files are replaced)', false)
    .action(async (file: string, o: { out?: string; executor: 'local' | 'bullmq'; lanes?: number; redis?: string; queue: string; attempts: number; backoff: number; force: boolean }) => {
      if (o.executor === 'bullmq' && !o.redis) throw new UsageError('--executor bullmq needs --redis URL');
      const g = globals();
      const { registry } = await createRunContainer(await allPlugins(g.plugin));
      const plan = await expandSweep(file, { pathFields: RUN_CONFIG_PATH_FIELDS, validate: (c) => runConfigIssues(c, registry) }, o.out ? { out: o.out } : {});
      const sig = onSignals(o.executor === 'local' ? 'stopping the runs at their next step boundary (they resume on the next `topiary sweep`)' : 'no longer following the queue (the jobs stay queued)');
      try {
        const res = await runSweep(plan, {
          executor: o.executor,
          ...(o.lanes ? { lanes: o.lanes } : {}),
          ...(o.redis ? { redis: o.redis } : {}),
          queue: o.queue,
          attempts: o.attempts,
          backoff: o.backoff,
          force: o.force,
          bin,
          cliArgs: runArgs(g),
          backend: g.backend,
          onEvent: sweepView(g.json),
          signal: sig.signal,
        });
        process.exitCode = sig.code() ?? (res.runs.some((r) => r.status !== 'completed') ? 3 : 0);
      } finally {
        sig.stop();
      }
    });

  program
    .command('worker')
    .description('take sweep runs from a BullMQ queue (topiary sweep --executor bullmq), each in a sandboxed child process, until stopped')
    .requiredOption('--redis <url>', 'the Redis server, e.g. redis://host:6379')
    .option('--lanes <n>', 'runs at once on this machine (default: one per core; native threads are split between lanes)', int('--lanes'))
    .option('--queue <name>', 'queue name', DEFAULT_QUEUE)
    .option('--lock-duration <ms>', 'a run whose worker is gone is taken by another worker after this long', int('--lock-duration'), 60_000)
    .option('--stalled-interval <ms>', 'how often to look for runs whose worker is gone', int('--stalled-interval'), 30_000)
    .action(async (o: { redis: string; lanes?: number; queue: string; lockDuration: number; stalledInterval: number }) => {
      const g = globals();
      const layout = laneLayout(o.lanes, o.lanes ?? os.availableParallelism());
      // Several workers on one machine: TOPIARY_NATIVE_THREADS, when set, says how many threads each run gets.
      const threads = Number(process.env['TOPIARY_NATIVE_THREADS']);
      if (Number.isInteger(threads) && threads > 0) layout.threads = threads;
      const worker = startWorker({ redis: o.redis, queue: o.queue, lanes: layout.lanes, threads: layout.threads, bin, cliArgs: runArgs(g), backend: g.backend, lockDuration: o.lockDuration, stalledInterval: o.stalledInterval });
      const log = (m: string) => process.stderr.write(`${m}\n`);
      worker.on('active', (job) => {
        const resuming = existsSync(path.join(String(job.data.config['out']), 'checkpoint', 'state.json'));
        log(`started ${job.data.id}${job.attemptsMade ? ` (attempt ${job.attemptsMade + 1})` : ''}${resuming ? ', resuming from its checkpoint' : ''}`);
      });
      worker.on('completed', (job) => log(`completed ${job.data.id}`));
      worker.on('failed', (job, err) => log(`failed ${job?.data.id ?? '?'}: ${err.message}`));
      // The client retries a lost connection every second: say each distinct error once.
      let lastError = '';
      worker.on('error', (err) => {
        if (err.message !== lastError) log(`worker: ${err.message}`);
        lastError = err.message;
      });
      try {
        await ready(worker, o.redis);
      } catch (err) {
        await worker.close(true).catch(() => {});
        throw err;
      }
      log(`worker ${os.hostname()}:${process.pid} on ${o.queue}: ${layout.lanes} lane(s), ${layout.threads} native thread(s) each`);
      const sig = onSignals('stopping: the runs checkpoint and go back to the queue');
      await new Promise<void>((resolve) => sig.signal.addEventListener('abort', () => resolve(), { once: true }));
      // The runs get SIGTERM (they checkpoint and stop); their jobs fail and are retried, resumed, elsewhere.
      worker.cancelAllJobs('worker stopping');
      await worker.close();
      sig.stop();
      process.exitCode = sig.code() ?? 0;
    });
}
