import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EVENTS_FILE, readEventLog } from '@topiary/core';
import { runCurves } from '@topiary/report';

// Interruption and resume through the built CLI, as a user runs it: a run killed with SIGKILL after a
// checkpoint and resumed with --resume must end with the uninterrupted run's report.
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = path.join(root, 'packages/cli/dist/bin.js');
const ex = path.join(root, 'examples');
// One thread per kernel: the children run two at a time next to the rest of the suite.
const env = { ...process.env, TOPIARY_NATIVE_THREADS: '1' };

interface Child {
  proc: ChildProcess;
  events: Record<string, any>[];
  stderr: () => string;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts the CLI; `onEvent` sees each NDJSON event of stdout as it arrives. */
function start(args: string[], onEvent: (e: Record<string, any>, c: Child) => void = () => {}): Child {
  const proc = spawn(process.execPath, [bin, ...args], { cwd: root, env });
  let out = '';
  let err = '';
  const c: Child = {
    proc,
    events: [],
    stderr: () => err,
    done: new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal }))),
  };
  proc.stdout!.on('data', (d: Buffer) => {
    out += d;
    let i: number;
    while ((i = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, i);
      out = out.slice(i + 1);
      if (!line.startsWith('{')) continue;
      const e = JSON.parse(line);
      c.events.push(e);
      onEvent(e, c);
    }
  });
  proc.stderr!.on('data', (d: Buffer) => (err += d));
  return c;
}

const work = mkdtempSync(path.join(tmpdir(), 'topiary-resume-'));
// A small dev set spread over the (shuffled) training sample, away from the training examples used.
const trainLines = readFileSync(path.join(ex, 'data/train-10k.jsonl'), 'utf8').trim().split('\n');
const dev = path.join(work, 'dev.jsonl');
writeFileSync(dev, `${trainLines.filter((_, i) => i >= 1000 && i % 250 === 0).join('\n')}\n`);

const tiny = path.join(ex, 'models/bert-tiny-wordnet-supersense');
const pretrained = path.join(ex, 'models/bert-tiny-wordnet-pretrained');
const common = {
  teacher: tiny,
  data: { train: path.join(ex, 'data/train-10k.jsonl'), dev, labels: path.join(ex, 'data/labels.json'), trainLimit: 48 },
  training: { batchSize: 16, maxSteps: 8, maxLength: 32 },
  checkpointEvery: 2,
  seed: 3,
};
const levels = { id: 'iterative', options: { levels: [0.25, 0.5] } };
/** The five methods on tiny budgets (dropout on: the dropout RNG is part of the state). */
const methods: Record<string, Record<string, unknown>> = {
  'structured first-order': { method: 'structured', model: tiny, targetSparsity: 0.5, criterion: 'first-order', scheduler: levels, losses: ['kd'], options: { scoreBatches: 2 } },
  magnitude: { method: 'unstructured', model: tiny, targetSparsity: 0.5, criterion: 'magnitude', scheduler: levels, losses: ['kd'] },
  movement: { method: 'movement', model: tiny, options: { mode: 'soft', warmupSteps: 2 } },
  cofi: { method: 'cofi', model: tiny, targetSparsity: 0.5, options: { maskLearningRate: 0.1, evalEvery: 2, distillSteps: 2, finetuneSteps: 2 } },
  cap: {
    method: 'structured',
    model: pretrained,
    pretrained,
    targetSparsity: 0.5,
    criterion: 'first-order',
    scheduler: levels,
    losses: ['kd', { id: 'contrastive', options: { extraExamples: 16 } }],
    options: { scoreBatches: 2 },
  },
};
/** After which `checkpoint-saved` event the run is killed: spread over the methods' phases. */
const killAfter: Record<string, number> = { 'structured first-order': 3, magnitude: 1, movement: 2, cofi: 2, cap: 3 };

function configFile(name: string): string {
  const file = path.join(work, `${name.replace(/\W+/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ ...common, ...methods[name] }));
  return file;
}

const digest = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** A run's memory figures without the sampled peaks (they are the process's, not the run's result). */
function withoutPeaks(m: Record<string, unknown>): Record<string, unknown> {
  const { peakHeapBytes: _h, peakRssBytes: _r, ...rest } = (m['memory'] ?? {}) as Record<string, unknown>;
  return { ...m, memory: rest };
}

/** report.json without its wall time and memory peaks, with the output folder's path made relative. */
function report(out: string): Record<string, unknown> {
  const text = readFileSync(path.join(out, 'report.json'), 'utf8').split(out).join('<out>');
  const { wallSeconds: _w, ...rest } = JSON.parse(text);
  return withoutPeaks(rest);
}

describe.runIf(existsSync(bin))('interrupt and resume (CLI)', () => {
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  for (const name of Object.keys(methods)) {
    it(`${name}: killed with SIGKILL after a checkpoint and resumed, ends with the uninterrupted run's report`, async () => {
      const cfg = configFile(name);
      const full = path.join(work, `${name}-full`);
      const killed = path.join(work, `${name}-killed`);
      // The uninterrupted run and the one to kill, side by side.
      let saved = 0;
      const a = start(['--json', 'run', cfg, '--out', full]);
      const b = start(['--json', 'run', cfg, '--out', killed], (e, c) => {
        if (e['type'] === 'checkpoint-saved' && ++saved === killAfter[name]) c.proc.kill('SIGKILL');
      });
      const [ra, rb] = await Promise.all([a.done, b.done]);
      expect(ra.code, a.stderr()).toBe(0);
      expect(rb.signal).toBe('SIGKILL');
      const killedAt = b.events.filter((e) => e['type'] === 'checkpoint-saved').at(-1)!['step'] as number;
      expect(existsSync(path.join(killed, 'report.json'))).toBe(false);

      const r = start(['--json', 'run', cfg, '--out', killed, '--resume']);
      const rr = await r.done;
      expect(rr.code, r.stderr()).toBe(0);
      // It continued from the checkpoint, not from the start.
      const firstStep = r.events.find((e) => e['type'] === 'step')!;
      expect(firstStep['step']).toBeGreaterThan(killedAt);
      expect(r.events.some((e) => e['type'] === 'log' && /^resuming from /.test(e['message']))).toBe(true);
      expect(killedAt).toBeGreaterThan(0);

      const want = report(full);
      const got = report(killed);
      expect(got['encoderSparsity']).toBe(want['encoderSparsity']);
      expect(Math.abs((got['accuracy'] as number) - (want['accuracy'] as number))).toBeLessThanOrEqual(1e-6);
      // Everything else too (levels, per-phase figures, CoFi's multipliers), and the weights and masks
      // bit for bit: resume is exact, not merely close.
      expect(got).toEqual(want);
      for (const f of ['checkpoint/model/model.safetensors', 'checkpoint/masks.safetensors', 'model/model.safetensors']) {
        expect(digest(path.join(killed, f)), f).toBe(digest(path.join(full, f)));
      }
      // events.ndjson holds what --json printed; the resumed run appended to the killed one's (which may
      // have logged a few events its parent had not read yet), and the report's curves of the two are
      // the uninterrupted run's: the steps redone after the checkpoint replace the killed run's.
      const fullLog = await readEventLog(path.join(full, EVENTS_FILE));
      expect(fullLog).toEqual(a.events);
      const killedLog = await readEventLog(path.join(killed, EVENTS_FILE));
      expect(killedLog.slice(0, b.events.length)).toEqual(b.events);
      expect(killedLog.slice(-r.events.length)).toEqual(r.events);
      expect(runCurves(killedLog)).toEqual(runCurves(fullLog));
    });
  }

  it('retraining-free: killed after its Fisher pass or after mask tuning, resumes from the saved gradients or masks and ends as the uninterrupted run', async () => {
    const cfg = path.join(work, 'retraining-free.json');
    const rf = { method: 'retraining-free', model: tiny, options: { macConstraint: 0.5, samples: 48, sampleBatchSize: 4, finetuneSteps: 4 } };
    writeFileSync(cfg, JSON.stringify({ ...common, ...rf }));
    const full = path.join(work, 'rf-full');
    // Checkpoints at step 0 after the Fisher pass (1) and after mask tuning (2), then the fine-tune's.
    const outs = [1, 2].map((n) => path.join(work, `rf-killed-${n}`));
    const killAt = (n: number) => {
      let saved = 0;
      return start(['--json', 'run', cfg, '--out', outs[n - 1]!], (e, ch) => {
        if (e['type'] === 'checkpoint-saved' && ++saved === n) ch.proc.kill('SIGKILL');
      });
    };
    const a = start(['--json', 'run', cfg, '--out', full]);
    const killed = [killAt(1), killAt(2)];
    const [ra, ...rk] = await Promise.all([a.done, ...killed.map((k) => k.done)]);
    expect(ra.code, a.stderr()).toBe(0);
    rk.forEach((r) => expect(r.signal).toBe('SIGKILL'));
    const resumed = outs.map((o) => start(['--json', 'run', cfg, '--out', o, '--resume']));
    const rr = await Promise.all(resumed.map((r) => r.done));
    rr.forEach((r, i) => expect(r.code, resumed[i]!.stderr()).toBe(0));
    const logs = (c: Child) => c.events.filter((e) => e['type'] === 'log').map((e) => e['message'] as string);
    expect(logs(resumed[0]!)).toContain('retraining-free: resumed with the Fisher gradients of 12 of 12 batches');
    expect(logs(resumed[1]!)).toContain('retraining-free: resumed after mask tuning (the checkpoint holds the tuned masks)');
    // Stage times are the interrupted run's; everything else, and the weights, as the uninterrupted run.
    const { seconds: _s, cpuSeconds: _c, ...want } = report(full);
    for (const o of outs) {
      const { seconds: _s2, cpuSeconds: _c2, ...got } = report(o);
      expect(got).toEqual(want);
      expect(digest(path.join(o, 'model/model.safetensors'))).toBe(digest(path.join(full, 'model/model.safetensors')));
    }
  });

  it('finetune: killed after a checkpoint and resumed with --resume, saves the same weights as the uninterrupted run', async () => {
    const args = (out: string) => ['--json', 'finetune', pretrained, '--train', common.data.train, '--dev', dev, '--labels', common.data.labels, '--limit', '48', '--batch-size', '16', '--max-steps', '8', '--max-length', '32', '--checkpoint-every', '2', '--out', out];
    const full = path.join(work, 'ft-full');
    const killed = path.join(work, 'ft-killed');
    let saved = 0;
    const a = start(args(full));
    const b = start(args(killed), (e, c) => {
      if (e['type'] === 'checkpoint-saved' && ++saved === 2) c.proc.kill('SIGKILL');
    });
    const [ra, rb] = await Promise.all([a.done, b.done]);
    expect(ra.code, a.stderr()).toBe(0);
    expect(rb.signal).toBe('SIGKILL');
    // Mid-run, --out is a loadable model folder with the resumable state beside it.
    expect(existsSync(path.join(killed, 'model.safetensors'))).toBe(true);
    expect(existsSync(path.join(killed, 'state.json'))).toBe(true);
    const r = start([...args(killed), '--resume']);
    expect((await r.done).code, r.stderr()).toBe(0);
    expect(r.events.find((e) => e['type'] === 'step')!['step']).toBeGreaterThan(2);
    const metrics = (c: Child) => {
      const { wallSeconds: _w, ...m } = c.events.find((e) => e['type'] === 'run-completed')!['metrics'];
      return withoutPeaks(m);
    };
    expect(metrics(r)).toEqual(metrics(a));
    expect(digest(path.join(killed, 'model.safetensors'))).toBe(digest(path.join(full, 'model.safetensors')));
    // Finished: the model alone, nothing left to resume.
    expect(existsSync(path.join(killed, 'state.json'))).toBe(false);
  });

  it('SIGINT stops at the next step boundary with a checkpoint, exits 130 and says how to resume; the resumed run ends as the uninterrupted one', async () => {
    const name = 'structured first-order';
    const cfg = path.join(work, 'sigint.json');
    writeFileSync(cfg, JSON.stringify({ ...common, ...methods[name], checkpointEvery: 0 }));
    const out = path.join(work, 'sigint');
    let sent = false;
    const c = start(['--json', 'run', cfg, '--out', out], (e, ch) => {
      if (e['type'] === 'step' && !sent) {
        sent = true;
        ch.proc.kill('SIGINT');
      }
    });
    const r = await c.done;
    expect(r.code, c.stderr()).toBe(130);
    const stop = c.events.find((e) => e['type'] === 'run-interrupted')!;
    expect(stop).toMatchObject({ reason: 'SIGINT', checkpoint: path.join(out, 'checkpoint') });
    expect(stop['step']).toBeGreaterThanOrEqual(1);
    expect(stop['step']).toBeLessThan(common.training.maxSteps);
    expect(stop['resume']).toBe(`topiary --json run ${cfg} --out ${out} --resume`);
    expect(c.events.filter((e) => e['type'] === 'step').at(-1)!['step']).toBe(stop['step']);
    expect(existsSync(path.join(out, 'checkpoint', 'state.json'))).toBe(true);
    expect(c.events.some((e) => e['type'] === 'run-completed')).toBe(false);

    const resumed = start(['--json', 'run', cfg, '--out', out, '--resume']);
    const rr = await resumed.done;
    expect(rr.code, resumed.stderr()).toBe(0);
    expect(resumed.events.find((e) => e['type'] === 'step')!['step']).toBe(stop['step'] + 1);
    const full = path.join(work, `${name}-full`);
    if (existsSync(path.join(full, 'report.json'))) expect(report(out)).toEqual(report(full));
  });

  it('SIGTERM exits 143 and prints the resume command; a second signal exits at once', async () => {
    const cfg = path.join(work, 'sigterm.json');
    writeFileSync(cfg, JSON.stringify({ ...common, ...methods['structured first-order'], checkpointEvery: 0, training: { ...common.training, batchSize: 48, maxLength: 64 } }));
    // Without --json the progress lines go to stderr.
    const out = path.join(work, 'sigterm');
    const c = start(['run', cfg, '--out', out]);
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (/ step \d+\/\d+/.test(c.stderr())) {
          clearInterval(t);
          c.proc.kill('SIGTERM');
          resolve();
        }
      }, 5);
    });
    const r = await c.done;
    expect(r.code, c.stderr()).toBe(143);
    expect(c.stderr()).toMatch(/interrupted \(SIGTERM\): stopped at step \d+; checkpoint .*checkpoint/);
    expect(c.stderr()).toContain(`resume with: topiary run ${cfg} --out ${out} --resume`);

    // Twice: the second signal arrives while the first waits for the step boundary and the checkpoint.
    const twice = start(['run', cfg, '--out', path.join(work, 'twice')]);
    await new Promise<void>((resolve) => {
      let first = false;
      const t = setInterval(() => {
        if (!first && / step \d+\/\d+/.test(twice.stderr())) {
          first = true;
          twice.proc.kill('SIGINT');
        } else if (first && /stopping at the next step boundary/.test(twice.stderr())) {
          clearInterval(t);
          twice.proc.kill('SIGINT');
          resolve();
        }
      }, 1);
    });
    const r2 = await twice.done;
    expect(r2.code).toBe(130);
    expect(twice.stderr()).toContain('SIGINT again: exiting now');
  });

  it('--resume without a checkpoint names the folder; with another config names the differing fields (exit 2)', async () => {
    const cfg = configFile('structured first-order');
    const empty = path.join(work, 'never-ran');
    const none = start(['run', cfg, '--out', empty, '--resume']);
    expect((await none.done).code).toBe(2);
    expect(none.stderr()).toContain(`${empty}: no checkpoint to resume from`);
    expect(existsSync(empty)).toBe(false);

    const other = path.join(work, 'other.json');
    writeFileSync(other, JSON.stringify({ ...common, ...methods['structured first-order'], seed: 4, training: { ...common.training, learningRate: 0.001 } }));
    const killed = path.join(work, 'structured first-order-killed');
    const bad = start(['run', other, '--out', killed, '--resume']);
    expect((await bad.done).code).toBe(2);
    expect(bad.stderr()).toContain('differing fields');
    expect(bad.stderr()).toContain('seed (checkpoint 3, now 4)');
    expect(bad.stderr()).toContain('training.learningRate');
  });
});
