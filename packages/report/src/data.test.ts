import { describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readConfig, type RunEvent } from '@topiary/core';
import { keptFromMasks, keptPerLayer, paretoFront, runCurves, type TradeoffPoint } from './data.js';
import { bestPerSparsity, markFronts, readSweep, sparsityLevel, type SweepRun } from './sweep.js';
import { sweepFixture } from './test-support/fixtures.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SHARED = path.resolve(REPO, '../shared');
const TINY = path.join(REPO, 'examples/models/bert-tiny-wordnet-supersense');
const scratch = () => mkdtempSync(path.join(tmpdir(), 'topiary-report-data-'));

const step = (s: number, total: number, kd: number, phase?: string): RunEvent => ({ type: 'step', step: s, totalSteps: 100, epoch: 0, loss: { total, kd }, learningRate: 1e-4, ...(phase ? { phase } : {}) });
const evaluated = (s: number, accuracy: number): RunEvent => ({ type: 'evaluated', step: s, metrics: { accuracy, macroF1: accuracy / 2, examples: 10 } });
const masks = (s: number, encoderSparsity: number, level: number): RunEvent => ({ type: 'masks-updated', step: s, level, target: level / 4, sparsity: { encoderSparsity, totalSparsity: encoderSparsity / 3, encoderParams: 100, remainingEncoderParams: 100 * (1 - encoderSparsity) } });
const started: RunEvent = { type: 'run-started', method: 'structured', backend: 'wasm', totalSteps: 100, time: '2026-01-01T00:00:00.000Z' };

describe('runCurves: the curves of a run from its events', () => {
  it('takes every loss term of every step, evaluations with their step, and each mask update', () => {
    const events: RunEvent[] = [started, masks(0, 0.25, 1), step(1, 2, 1.5, 'level 1/2'), step(2, 1.8, 1.2, 'level 1/2'), evaluated(2, 0.7), { type: 'log', message: 'x' }, masks(2, 0.5, 2), step(3, 1.6, 1.1), { type: 'evaluated', step: -1, metrics: { accuracy: 0.69, macroF1: 0.3, examples: 10 }, label: 'exported model' }];
    const stepEvents = events.filter((e): e is Extract<RunEvent, { type: 'step' }> => e.type === 'step');
    const c = runCurves(events);
    // One point per (step, term), with the term's value, for every term the events carry.
    expect(c.loss).toHaveLength(stepEvents.reduce((n, e) => n + Object.keys(e.loss).length, 0));
    for (const e of stepEvents) for (const [term, value] of Object.entries(e.loss)) expect(c.loss).toContainEqual({ step: e.step, term, value, phase: e.phase ?? null });
    expect(c.accuracy).toEqual([{ step: 2, accuracy: 0.7, macroF1: 0.35, phase: null }]);
    expect(c.exportedAccuracy).toBe(0.69);
    expect(c.sparsity.map((p) => [p.step, p.encoderSparsity, p.level, p.target])).toEqual([
      [0, 0.25, 1, 0.25],
      [2, 0.5, 2, 0.5],
    ]);
  });

  it('a resumed run (appended after a second run-started) replaces the steps it redid, and keeps those before its checkpoint', () => {
    // First process: steps 1..5, evaluated at 4, killed; checkpoint at step 3; the resumed one does 4..6.
    const first = [started, masks(0, 0.25, 1), step(1, 9, 9), step(2, 8, 8), step(3, 7, 7), step(4, 6, 6), evaluated(4, 0.5), step(5, 5, 5)];
    const second = [started, { type: 'log', message: 'resuming' } as RunEvent, step(4, 4, 4), evaluated(4, 0.6), step(5, 3, 3), step(6, 2, 2)];
    const c = runCurves([...first, ...second]);
    const totals = c.loss.filter((p) => p.term === 'total').map((p) => [p.step, p.value]);
    expect(totals).toEqual([
      [1, 9],
      [2, 8],
      [3, 7],
      [4, 4],
      [5, 3],
      [6, 2],
    ]);
    expect(c.accuracy.map((p) => [p.step, p.accuracy])).toEqual([[4, 0.6]]);
    expect(c.sparsity.map((p) => p.step)).toEqual([0]);
    // A resumed process that emitted nothing yet changes nothing.
    expect(runCurves([...first, started])).toEqual(runCurves(first));
  });
});

describe('keptPerLayer: the heatmap of heads and FFN neurons kept', () => {
  /** A copy of a checkpoint's config with Topiary's per-layer sizes set, as compaction writes them. */
  const compacted = (dir: string, raw: Record<string, unknown>, heads: number[], ffn: number[]) => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...raw, topiary_layer_heads: heads, topiary_layer_intermediate: ffn }));
    return dir;
  };

  it('counts each layer against the dense sizes of the config (BERT)', async () => {
    const raw = JSON.parse(readFileSync(path.join(TINY, 'config.json'), 'utf8')) as Record<string, number>;
    const layers = raw['num_hidden_layers']!;
    const heads = Array.from({ length: layers }, (_, l) => Math.max(0, raw['num_attention_heads']! - 1 - l));
    const ffn = Array.from({ length: layers }, (_, l) => Math.floor(raw['intermediate_size']! / (l + 2)));
    const cells = keptPerLayer(await readConfig(compacted(path.join(scratch(), 'm'), raw, heads, ffn)));
    expect(cells).toHaveLength(2 * layers);
    for (let l = 0; l < layers; l++) {
      expect(cells).toContainEqual({ layer: l, kind: 'heads', kept: heads[l], total: raw['num_attention_heads'], fraction: heads[l]! / raw['num_attention_heads']! });
      expect(cells).toContainEqual({ layer: l, kind: 'FFN neurons', kept: ffn[l], total: raw['intermediate_size'], fraction: ffn[l]! / raw['intermediate_size']! });
    }
    // The dense model itself keeps everything.
    expect(keptPerLayer(await readConfig(TINY)).every((c) => c.kept === c.total && c.fraction === 1)).toBe(true);
  });

  it.skipIf(!existsSync(path.join(SHARED, 'goldens/families/distilbert/config.json')))('reads another family through its adapter (DistilBERT: n_heads, hidden_dim)', async () => {
    const raw = JSON.parse(readFileSync(path.join(SHARED, 'goldens/families/distilbert/config.json'), 'utf8')) as Record<string, number>;
    const heads = Array.from({ length: raw['n_layers']! }, (_, l) => (l === 0 ? 1 : raw['n_heads']!));
    const ffn = Array.from({ length: raw['n_layers']! }, (_, l) => (l === 0 ? 0 : raw['hidden_dim']! - 3));
    const cells = keptPerLayer(await readConfig(compacted(path.join(scratch(), 'd'), raw, heads, ffn)));
    expect(cells.filter((c) => c.kind === 'heads').map((c) => [c.kept, c.total])).toEqual(heads.map((h) => [h, raw['n_heads']]));
    expect(cells.filter((c) => c.kind === 'FFN neurons').map((c) => [c.kept, c.total])).toEqual(ffn.map((n) => [n, raw['hidden_dim']]));
  });

  it('from a checkpoint\'s masks: non-zero entries, and none in a removed block', async () => {
    const config = await readConfig(TINY);
    const L = config.numHiddenLayers;
    const m = new Map<string, { data: Float32Array }>();
    const headKept: number[] = [];
    const ffnKept: number[] = [];
    for (let l = 0; l < L; l++) {
      const h = new Float32Array(config.numAttentionHeads).map((_, i) => (i <= l ? 1 : 0));
      const n = new Float32Array(config.intermediateSize).map((_, i) => (i % (l + 2) === 0 ? 0.5 : 0));
      m.set(`head_mask.${l}`, { data: h });
      m.set(`neuron_mask.${l}`, { data: n });
      headKept.push(h.filter((v) => v !== 0).length);
      ffnKept.push(n.filter((v) => v !== 0).length);
    }
    const ffnBlock = new Float32Array(L).fill(1);
    ffnBlock[L - 1] = 0;
    m.set('mha_mask', { data: new Float32Array(L).fill(1) });
    m.set('ffn_mask', { data: ffnBlock });
    const cells = keptFromMasks(m, config);
    expect(cells.filter((c) => c.kind === 'heads').map((c) => c.kept)).toEqual(headKept);
    expect(cells.filter((c) => c.kind === 'FFN neurons').map((c) => c.kept)).toEqual(ffnKept.map((k, l) => (l === L - 1 ? 0 : k)));
    expect(cells.every((c) => c.total === (c.kind === 'heads' ? config.numAttentionHeads : config.intermediateSize))).toBe(true);
  });
});

/** The Pareto front by a sweep: sorted by x descending (accuracy descending on ties), keep a point when it beats every point before it. */
function frontBySweep(points: TradeoffPoint[]): string[] {
  const sorted = [...points].sort((a, b) => b.x - a.x || b.accuracy - a.accuracy);
  const kept: TradeoffPoint[] = [];
  let best = -Infinity;
  for (const p of sorted) {
    if (p.accuracy > best) {
      kept.push(p);
      best = p.accuracy;
    }
  }
  return kept.map((p) => p.id).sort();
}

describe('paretoFront', () => {
  it('matches a sweep-line computation on random point sets, ties included', () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + Math.floor(rand() * 12);
      // Coarse values so that equal coordinates happen.
      const points = Array.from({ length: n }, (_, i) => ({ id: `p${i}`, method: 'm', x: Math.round(rand() * 5) / 5, accuracy: Math.round(rand() * 5) / 5 }));
      const front = paretoFront(points);
      expect(front.map((p) => p.id).sort()).toEqual(frontBySweep(points));
      expect(front.map((p) => p.x)).toEqual([...front.map((p) => p.x)].sort((a, b) => a - b));
    }
  });

  it('marks the front of all runs and of each method', () => {
    const points: TradeoffPoint[] = [
      { id: 'a', method: 'A', x: 0.5, accuracy: 0.8 },
      { id: 'b', method: 'A', x: 0.7, accuracy: 0.7 },
      { id: 'c', method: 'B', x: 0.5, accuracy: 0.75 },
      { id: 'd', method: 'B', x: 0.9, accuracy: 0.6 },
      { id: 'e', method: 'B', x: 0.6, accuracy: 0.7 },
    ];
    const marked = markFronts(points);
    const all = new Set(frontBySweep(points));
    const own = new Set(['A', 'B'].flatMap((m) => frontBySweep(points.filter((p) => p.method === m))));
    for (const p of marked) {
      expect(p.front).toBe(all.has(p.id));
      expect(p.methodFront).toBe(own.has(p.id));
    }
  });
});

describe('sweep.json: reading it, levels and the best run per sparsity', () => {
  it('reads the fixture and refuses a bad field, naming the file and the field', async () => {
    const dir = scratch();
    const fixture = sweepFixture();
    writeFileSync(path.join(dir, 'sweep.json'), JSON.stringify(fixture));
    expect((await readSweep(path.join(dir, 'sweep.json'))).runs).toHaveLength(fixture.runs.length);
    const bad = structuredClone(fixture) as any;
    bad.runs[2].accuracy = 'high';
    writeFileSync(path.join(dir, 'bad.json'), JSON.stringify(bad));
    await expect(readSweep(path.join(dir, 'bad.json'))).rejects.toThrow(/bad\.json: field 'runs\[2\]\.accuracy'/);
    bad.runs[2].accuracy = 0.5;
    bad.runs[1].status = 'running';
    writeFileSync(path.join(dir, 'bad.json'), JSON.stringify(bad));
    await expect(readSweep(path.join(dir, 'bad.json'))).rejects.toThrow(/field 'runs\[1\]\.status'/);
  });

  it('groups by the target-sparsity axis (else the measured sparsity) and picks the most accurate completed run', () => {
    const runs = sweepFixture().runs as SweepRun[];
    const best = bestPerSparsity(runs);
    const axis = (r: SweepRun) => Object.entries(r.values).find(([k]) => k.endsWith('targetSparsity'))?.[1] as number | undefined;
    const levels = [...new Set(runs.filter((r) => r.status === 'completed').map((r) => axis(r) ?? Math.round(r.encoderSparsity! * 100) / 100))].sort((a, b) => a - b);
    expect(best.map((b) => b.level)).toEqual(levels);
    for (const b of best) {
      const here = runs.filter((r) => r.status === 'completed' && r.accuracy !== null && sparsityLevel(r) === b.level);
      const top = Math.max(...here.map((r) => r.accuracy!));
      expect(b.run.accuracy).toBe(top);
      expect(b.candidates).toBe(here.length);
      expect(b.run.status).toBe('completed');
    }
    // Without the axis: the measured sparsity, to 0.01.
    const noAxis = { ...runs[0]!, values: {}, encoderSparsity: 0.4987 };
    expect(sparsityLevel(noAxis)).toBe(0.5);
  });
});
