import { describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { MARKER_FILE, outputMarker } from '@topiary/core';
import { expandSweep, runId, type RunConfigRules } from './spec.js';
import { RUN_RESULT_FILE, toCsv } from './results.js';
import { laneLayout, runSweep } from './sweep.js';
import type { SweepEvent } from './events.js';

const work = mkdtempSync(path.join(tmpdir(), 'topiary-sweep-'));
const at = (...p: string[]) => path.join(work, ...p);
const write = (file: string, text: string) => {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
};

const PATHS = ['model', 'teacher', 'data.train', 'data.dev', 'data.labels'];
/** A stand-in for the CLI's run-config checks: method required, targetSparsity below 1, no `pruner` field. */
const rules: RunConfigRules = {
  pathFields: PATHS,
  validate: (c) => [
    ...(typeof c['method'] !== 'string' ? [{ field: 'method', message: 'expected a string' }] : []),
    ...(typeof c['targetSparsity'] === 'number' && c['targetSparsity'] >= 1 ? [{ field: 'targetSparsity', message: 'too big: expected < 1' }] : []),
    ...Object.keys(c).filter((k) => k === 'pruner').map((k) => ({ field: k, message: 'unknown field' })),
  ],
};

// A run config in another folder: its paths resolve against it, the sweep's against the sweep file.
write(at('configs/run.yaml'), 'method: structured\nmodel: ../models/tiny\ndata: { train: ../data/train.jsonl, dev: ../data/dev.jsonl }\ntraining: { maxSteps: 8 }\nseed: 1\n');
const sweepFile = (name: string, body: string) => write(at('sweeps', name), body);

describe('sweep files', () => {
  it('expands the grid crossed with the runs list, resolves paths against the file that wrote them, and names each axis', async () => {
    const file = sweepFile('grid.yaml', [
      'base:',
      '  extends: ../configs/run.yaml',
      '  training: { batchSize: 8 }',
      '  teacher: ../models/teacher',
      'grid:',
      '  targetSparsity: [0.5, 0.7]',
      '  seed: [1, 2, 3]',
      'runs:',
      '  - { method: structured, criterion: first-order }',
      '  - { method: cofi, data.dev: ../data/other-dev.jsonl }',
      '',
    ].join('\n'));
    const plan = await expandSweep(file, rules);
    expect(plan.runs).toHaveLength(2 * 2 * 3);
    expect(plan.axes).toEqual(['targetSparsity', 'seed', 'method', 'criterion', 'data.dev']);
    expect(plan.out).toBe(path.resolve('runs/grid'));
    const first = plan.runs[0]!;
    // extends: paths relative to the run config; the sweep's own fields relative to the sweep file; objects merged.
    expect(first.config['model']).toBe(at('models/tiny'));
    expect(first.config['teacher']).toBe(at('models/teacher'));
    expect(first.config['training']).toEqual({ maxSteps: 8, batchSize: 8 });
    expect(first.values).toEqual({ targetSparsity: 0.5, seed: 1, method: 'structured', criterion: 'first-order', 'data.dev': at('data/dev.jsonl') });
    const cofi = plan.runs.find((r) => r.config['method'] === 'cofi')!;
    expect((cofi.config['data'] as Record<string, unknown>)['dev']).toBe(at('data/other-dev.jsonl'));
    expect(cofi.values['criterion']).toBeNull();
    // Every combination once, each with its own folder under the sweep's.
    const combos = new Set(plan.runs.map((r) => JSON.stringify(r.values)));
    expect(combos.size).toBe(plan.runs.length);
    for (const r of plan.runs) expect(r.config['out']).toBe(path.join(plan.out, 'runs', r.id));
  });

  it('gives each run an id that is a hash of its resolved config: stable across expansions and checkouts, apart from out and checkpointEvery', async () => {
    const body = 'out: ../out\nbase: { extends: ../configs/run.yaml }\ngrid: { targetSparsity: [0.5, 0.7] }\n';
    const a = await expandSweep(sweepFile('ids.yaml', body), rules);
    const b = await expandSweep(sweepFile('ids.yaml', body), rules, { out: at('elsewhere') });
    expect(a.runs.map((r) => r.id)).toEqual(b.runs.map((r) => r.id));
    expect(new Set(a.runs.map((r) => r.id)).size).toBe(2);
    for (const r of a.runs) expect(r.id).toMatch(/^[0-9a-f]{10}$/);
    // The same sweep in another checkout (moved as a whole) has the same ids.
    const moved = mkdtempSync(path.join(tmpdir(), 'topiary-sweep-moved-'));
    write(path.join(moved, 'configs/run.yaml'), readFileSync(at('configs/run.yaml'), 'utf8'));
    write(path.join(moved, 'sweeps/ids.yaml'), body);
    const c = await expandSweep(path.join(moved, 'sweeps/ids.yaml'), rules);
    expect(c.runs.map((r) => r.id)).toEqual(a.runs.map((r) => r.id));
    // Fields that do not change the result do not change the id; any other does.
    const cfg = { ...a.runs[0]!.config };
    expect(runId({ ...cfg, out: 'x', checkpointEvery: 5 })).toBe(runId(cfg));
    expect(runId({ ...cfg, seed: 99 })).not.toBe(runId(cfg));
    // Key order does not matter.
    expect(runId(Object.fromEntries(Object.entries(cfg).reverse()))).toBe(runId(cfg));
  });

  it('names the sweep file, the run and the field of each invalid value', async () => {
    const file = sweepFile('bad.yaml', 'base: { extends: ../configs/run.yaml, pruner: x }\ngrid: { targetSparsity: [0.5, 1.5] }\n');
    const err = await expandSweep(file, rules).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    const msg = (err as Error).message;
    expect(msg).toContain(file);
    expect(msg).toContain("field 'grid.targetSparsity[1]': too big");
    expect(msg).not.toContain('grid.targetSparsity[0]');
    expect(msg).toContain("field 'base.pruner': unknown field");
    // A field the extended file got wrong names that file.
    write(at('configs/nomethod.yaml'), 'model: ../models/tiny\n');
    const e2 = await expandSweep(sweepFile('bad2.yaml', 'base: { extends: ../configs/nomethod.yaml }\n'), rules).catch((e: Error) => e);
    expect((e2 as Error).message).toContain(`field 'method' of ${at('configs/nomethod.yaml')}`);
    // The sweep file's own shape.
    const e3 = await expandSweep(sweepFile('bad3.yaml', 'base: { extends: ../configs/run.yaml }\ngrid: { seed: [] }\nlanes: 3\n'), rules).catch((e: Error) => e);
    expect((e3 as Error).message).toContain(sweepFile('bad3.yaml', readFileSync(at('sweeps/bad3.yaml'), 'utf8')));
    expect((e3 as Error).message).toMatch(/field 'grid\.seed'/);
    expect((e3 as Error).message).toMatch(/lanes/);
    // Two runs that are one config.
    const e4 = await expandSweep(sweepFile('dup.yaml', 'base: { extends: ../configs/run.yaml }\nruns: [{ seed: 1 }, { seed: 1 }]\n'), rules).catch((e: Error) => e);
    expect((e4 as Error).message).toMatch(/resolves to the same config as run runs\[0\]/);
  });

  it('splits the cores between local lanes', () => {
    expect(laneLayout(undefined, 10, 8)).toEqual({ lanes: 8, threads: 1 });
    expect(laneLayout(2, 10, 8)).toEqual({ lanes: 2, threads: 4 });
    expect(laneLayout(undefined, 3, 8)).toEqual({ lanes: 3, threads: 2 });
    expect(laneLayout(4, 10, 2)).toEqual({ lanes: 4, threads: 1 });
  });
});

// A stand-in for `topiary run`: records its arguments, emits a few events, writes report.json.
const fakeBin = write(at('fake-topiary.mjs'), `
import { appendFileSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
const args = process.argv.slice(2);
const out = args[args.indexOf('--out') + 1];
const config = JSON.parse(readFileSync(args[args.indexOf('run') + 1], 'utf8'));
appendFileSync(process.env.FAKE_LOG, JSON.stringify({ id: path.basename(out), resume: args.includes('--resume'), threads: process.env.TOPIARY_NATIVE_THREADS }) + '\\n');
if (config.seed === 13) { console.log(JSON.stringify({ type: 'run-failed', error: { name: 'Error', message: 'boom', kind: 'failure', exitCode: 3 } })); process.exit(3); }
mkdirSync(out, { recursive: true });
console.log(JSON.stringify({ type: 'run-started', method: config.method, backend: 'fake', totalSteps: 4, time: '' }));
for (let s = 1; s <= 4; s++) console.log(JSON.stringify({ type: 'step', step: s, totalSteps: 4, epoch: 0, loss: { total: 1 }, learningRate: 1 }));
console.log(JSON.stringify({ type: 'evaluated', step: 4, metrics: { accuracy: 0.5, macroF1: 0.5, examples: 4 } }));
writeFileSync(path.join(out, 'report.json'), JSON.stringify({ method: config.method, accuracy: 0.5, teacherAccuracy: 0.6, encoderSparsity: config.targetSparsity, params: 10, exportedParams: 5, wallSeconds: 1 }));
`);

describe('running a sweep', () => {
  it('skips the runs that completed, resumes the ones with a checkpoint, starts the others, and writes a row per run', async () => {
    const file = sweepFile('local.yaml', `out: ../local-out\nbase: { extends: ../configs/run.yaml }\ngrid: { targetSparsity: [0.1, 0.2, 0.3, 0.4], seed: [1, 13] }\n`);
    const plan = await expandSweep(file, rules);
    const bySeed = (seed: number) => plan.runs.filter((r) => r.config['seed'] === seed);
    const [done, interrupted, fresh] = bySeed(1);
    // An earlier sweep into this folder completed one run and stopped another after a checkpoint.
    write(path.join(plan.out, MARKER_FILE), JSON.stringify(outputMarker('sweep', ['configs', 'runs', 'sweep.json', 'sweep.csv'])));
    const dir = (r: (typeof plan.runs)[number]) => String(r.config['out']);
    write(path.join(dir(done!), 'report.json'), JSON.stringify({ method: 'structured', accuracy: 0.9, encoderSparsity: 0.1, params: 10, exportedParams: 9, wallSeconds: 3 }));
    write(path.join(dir(done!), RUN_RESULT_FILE), JSON.stringify({ id: done!.id, host: 'elsewhere', speedup: { speedup: 1.5 } }));
    write(path.join(dir(interrupted!), 'checkpoint', 'state.json'), '{}');
    process.env['FAKE_LOG'] = at('calls.log');
    const events: SweepEvent[] = [];
    const res = await runSweep(plan, { executor: 'local', lanes: 2, bin: fakeBin, onEvent: (e) => events.push(e) });
    const calls = readFileSync(at('calls.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; resume: boolean; threads: string });
    expect(calls.map((c) => c.id)).not.toContain(done!.id);
    expect(calls.find((c) => c.id === interrupted!.id)?.resume).toBe(true);
    expect(calls.find((c) => c.id === fresh!.id)?.resume).toBe(false);
    expect(calls).toHaveLength(plan.runs.length - 1);
    // Each run's row, in plan order, as sweep.json holds it.
    const saved = JSON.parse(readFileSync(path.join(plan.out, 'sweep.json'), 'utf8'));
    expect(saved).toEqual(res);
    expect(saved.sweep).toMatchObject({ axes: ['targetSparsity', 'seed'], executor: 'local', file: '../sweeps/local.yaml' });
    expect(saved.runs.map((r: { id: string }) => r.id)).toEqual(plan.runs.map((r) => r.id));
    const row = (id: string) => saved.runs.find((r: { id: string }) => r.id === id);
    expect(row(done!.id)).toMatchObject({ status: 'completed', accuracy: 0.9, speedup: 1.5, host: 'elsewhere', out: `runs/${done!.id}` });
    expect(row(fresh!.id)).toMatchObject({ status: 'completed', accuracy: 0.5, teacherAccuracy: 0.6, params: 10, exportedParams: 5, encoderSparsity: fresh!.config['targetSparsity'], error: null });
    for (const r of bySeed(13)) expect(row(r.id)).toMatchObject({ status: 'failed', accuracy: null, error: expect.stringContaining('boom') });
    expect(readFileSync(path.join(plan.out, 'sweep.csv'), 'utf8')).toBe(toCsv(saved));
    // Events: started (with the skipped run), progress, one result per run, completed.
    expect(events[0]).toMatchObject({ type: 'sweep-started', skipped: [done!.id], lanes: 2 });
    expect(events.filter((e) => e.type === 'sweep-run-completed')).toHaveLength(bySeed(1).length - 1);
    expect(events.filter((e) => e.type === 'sweep-run-failed')).toHaveLength(bySeed(13).length);
    expect(events.some((e) => e.type === 'sweep-run-progress' && e.id === fresh!.id && e.totalSteps === 4)).toBe(true);
    expect(events.at(-1)).toMatchObject({ type: 'sweep-completed', completed: bySeed(1).length, failed: bySeed(13).length, pending: 0 });
    // A second sweep skips every completed run and tries the failed ones again.
    writeFileSync(at('calls.log'), '');
    await runSweep(plan, { executor: 'local', lanes: 2, bin: fakeBin, onEvent: () => {} });
    const again = readFileSync(at('calls.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).id);
    expect(again.sort()).toEqual(bySeed(13).map((r) => r.id).sort());
  });

  it('refuses a sweep folder holding files Topiary did not write, unless forced', async () => {
    const file = sweepFile('own.yaml', 'out: ../own-out\nbase: { extends: ../configs/run.yaml }\n');
    write(at('own-out/notes.txt'), 'mine');
    const plan = await expandSweep(file, rules);
    await expect(runSweep(plan, { executor: 'local', bin: fakeBin, onEvent: () => {} })).rejects.toThrow(/own-out.*notes\.txt/);
    process.env['FAKE_LOG'] = at('own.log');
    await runSweep(plan, { executor: 'local', bin: fakeBin, force: true, onEvent: () => {} });
    expect(readFileSync(at('own-out/notes.txt'), 'utf8')).toBe('mine');
    expect(existsSync(at('own-out/sweep.json'))).toBe(true);
  });
});
