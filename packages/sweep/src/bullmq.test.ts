import { afterAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SweepEvent } from './events.js';
import type { SweepResults } from './results.js';

// A 4-run sweep of tiny runs through the built CLI on a real redis-server with two `topiary worker`s;
// one worker (its whole process group: worker, sandbox, run) is killed with SIGKILL after its run wrote
// a checkpoint, as when a machine is lost. Its run must be taken by the other worker, resumed from the
// checkpoint, and the sweep must complete with every row.
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = path.join(root, 'packages/cli/dist/bin.js');
const ex = path.join(root, 'examples');
const hasRedis = spawnSync('redis-server', ['--version']).status === 0;
if (!hasRedis) console.warn('bullmq.test.ts: skipped: redis-server is not installed (apt-get install -y redis-server; .ci/run installs it)');

const work = mkdtempSync(path.join(tmpdir(), 'topiary-bullmq-'));
const started: ChildProcess[] = [];
afterAll(() => {
  for (const p of started) {
    if (p.exitCode !== null || p.signalCode !== null) continue;
    try {
      process.kill(-p.pid!, 'SIGKILL');
    } catch {
      p.kill('SIGKILL');
    }
  }
  rmSync(work, { recursive: true, force: true });
});

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

/** A process in its own group (so the test can kill it with its children); its output collected. */
function start(cmd: string, args: string[]): { proc: ChildProcess; out: () => string; err: () => string; exited: Promise<number | null> } {
  const proc = spawn(cmd, args, { cwd: work, detached: true, env: { ...process.env, TOPIARY_NATIVE_THREADS: '1' } });
  started.push(proc);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d));
  proc.stderr!.on('data', (d: Buffer) => (err += d));
  return { proc, out: () => out, err: () => err, exited: new Promise((r) => proc.on('exit', (code) => r(code))) };
}

const until = async (what: string, ok: () => boolean, ms = 90_000) => {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

describe.skipIf(!hasRedis)('topiary sweep --executor bullmq', () => {
  it('completes every run with two workers when one is killed mid-run: the other retries it from its checkpoint', async () => {
    const port = await freePort();
    const redis = start('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', work]);
    await until('redis-server', () => redis.out().includes('Ready to accept connections'), 20_000);
    const url = `redis://127.0.0.1:${port}`;

    // A dev set spread over the (shuffled) training sample, away from the training examples used.
    const lines = readFileSync(path.join(ex, 'data/train-10k.jsonl'), 'utf8').trim().split('\n');
    writeFileSync(path.join(work, 'dev.jsonl'), `${lines.filter((_, i) => i >= 1000 && i % 250 === 0).join('\n')}\n`);
    const tiny = path.join(ex, 'models/bert-tiny-wordnet-supersense');
    writeFileSync(
      path.join(work, 'sweep.yaml'),
      [
        'out: out',
        'base:',
        `  model: ${tiny}`,
        `  teacher: ${tiny}`,
        `  data: { train: ${path.join(ex, 'data/train-10k.jsonl')}, dev: dev.jsonl, labels: ${path.join(ex, 'data/labels.json')}, trainLimit: 480 }`,
        '  training: { batchSize: 16, maxSteps: 40, maxLength: 32 }',
        '  checkpointEvery: 2',
        '  seed: 3',
        'grid:',
        '  targetSparsity: [0.3, 0.5]',
        'runs:',
        '  - { method: structured, criterion: first-order, scheduler: { id: iterative, options: { steps: 2 } }, losses: [kd], options: { scoreBatches: 2 } }',
        '  - { method: unstructured, criterion: magnitude, scheduler: { id: iterative, options: { steps: 2 } }, losses: [kd] }',
        '',
      ].join('\n'),
    );
    // Short locks so the killed worker's run is taken over within seconds (the defaults are a minute).
    const workerArgs = [bin, 'worker', '--redis', url, '--lanes', '1', '--queue', 'test', '--lock-duration', '3000', '--stalled-interval', '1000'];
    const w1 = start(process.execPath, workerArgs);
    const w2 = start(process.execPath, workerArgs);
    await until('both workers', () => w1.err().includes('lane(s)') && w2.err().includes('lane(s)'), 30_000);
    const sweep = start(process.execPath, [bin, '--json', 'sweep', 'sweep.yaml', '--executor', 'bullmq', '--redis', url, '--queue', 'test', '--backoff', '1000']);

    // The first run worker 1 takes: kill the worker with its sandbox and run once a checkpoint is there.
    let victim = '';
    await until('worker 1 to start a run', () => Boolean((victim = /started (\w+)/.exec(w1.err())?.[1] ?? '')));
    await until('its first checkpoint', () => existsSync(path.join(work, 'out/runs', victim, 'checkpoint/state.json')));
    expect(w1.err()).not.toContain(`completed ${victim}`);
    process.kill(-w1.proc.pid!, 'SIGKILL');

    const code = await Promise.race([sweep.exited, new Promise((r) => setTimeout(() => r('timeout'), 210_000))]);
    expect(code, sweep.err()).toBe(0);
    const results = JSON.parse(readFileSync(path.join(work, 'out/sweep.json'), 'utf8')) as SweepResults;
    expect(results.sweep.executor).toBe('bullmq');
    expect(results.runs).toHaveLength(4);
    for (const r of results.runs) {
      expect(r.status, `${r.id}: ${r.error}`).toBe('completed');
      expect(r.accuracy).toBeGreaterThan(0);
      expect(r.encoderSparsity).toBeCloseTo(r.values['targetSparsity'] as number, 1);
      expect(r.speedup).toBeGreaterThan(0);
      expect(r.host).toBeTruthy();
      expect(existsSync(path.join(work, 'out', r.out, 'report.json'))).toBe(true);
    }
    // The killed run was taken by worker 2, which resumed it from the checkpoint worker 1 had written.
    expect(w2.err()).toContain(`started ${victim}, resuming from its checkpoint`);
    expect(w2.err()).toContain(`completed ${victim}`);
    const events = sweep.out().trim().split('\n').map((l) => JSON.parse(l) as SweepEvent);
    expect(events.some((e) => e.type === 'sweep-run-progress' && e.id === victim && e.resumed)).toBe(true);
    expect(events.at(-1)).toMatchObject({ type: 'sweep-completed', completed: 4, failed: 0, pending: 0 });
    // The sweep's results came back through the queue: one completion event per run.
    expect(new Set(events.filter((e) => e.type === 'sweep-run-completed').map((e) => (e as { id: string }).id)).size).toBe(4);
  }, 300_000);
});
