import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../tf.js';
import { loadBert } from '../io/checkpoint.js';
import { loadTokenizer } from '../io/tokenizer.js';
import { loadDataset } from '../data/dataset.js';
import { trainLoop } from './train.js';
import { CrossEntropyLoss } from './losses.js';
import { AdamW, defaultFinetuneLearningRate, linearSchedule } from './optimizer.js';
import { RunAborted, type RunControl, type RunEvent } from '../events.js';
import { RunCheckpoints, type SavedState } from './checkpoint.js';
import { SHARED, modelDir } from '../test-support/shared.js';
import { testBackend } from '../test-support/backend.js';
import { useBackend } from '../backend/backend.js';
import * as path from 'node:path';

const control = (events: RunEvent[]): RunControl => ({ emit: (e) => events.push(e), signal: new AbortController().signal, checkpoint: () => {} });
const training = { batchSize: 8, learningRate: 1e-4, maxSteps: 20, warmupRatio: 0.1, weightDecay: 0.01, maxGradNorm: 1, maxLength: 64 };

describe('training engine', () => {
  beforeAll(testBackend);

  it('keeps tf.memory().numTensors flat across 20 training steps', async () => {
    const dir = modelDir('bert-tiny-wordnet-supersense');
    const model = await loadBert(dir);
    const tok = await loadTokenizer(dir);
    const train = await loadDataset(path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl'), tok, { limit: 200, labels: model.config.id2label, maxLength: 64 });
    const counts: number[] = [];
    const events: RunEvent[] = [];
    await trainLoop({
      model, train, losses: [new CrossEntropyLoss()], training, seed: 1, control: control(events),
      afterStep: () => counts.push(tf.memory().numTensors),
    });
    expect(counts).toHaveLength(20);
    // The optimizer's moments are created up front, so every step ends with the same tensors alive.
    expect(new Set(counts.slice(1)).size).toBe(1);
    expect(events.filter((e) => e.type === 'step')).toHaveLength(20);
    model.dispose();
  });

  it('is deterministic by seed', async () => {
    const dir = modelDir('bert-tiny-wordnet-supersense');
    const tok = await loadTokenizer(dir);
    const losses: number[][] = [];
    for (let run = 0; run < 2; run++) {
      const model = await loadBert(dir);
      const train = await loadDataset(path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl'), tok, { limit: 64, labels: model.config.id2label, maxLength: 64 });
      const events: RunEvent[] = [];
      await trainLoop({ model, train, losses: [new CrossEntropyLoss()], training: { ...training, maxSteps: 4 }, seed: 5, control: control(events) });
      losses.push(events.flatMap((e) => (e.type === 'step' ? [e.loss.total] : [])));
      model.dispose();
    }
    expect(losses[0]).toEqual(losses[1]);
  });

  it.each([['the whole batch', undefined], ['micro-batches of 3 (3 + 3 + 2)', 3]])('an aborted loop saves at the step boundary and a resumed one ends bit for bit as the uninterrupted one (mid-epoch, dropout on, %s)', async (_, micro) => {
    const dir = modelDir('bert-tiny-wordnet-supersense');
    const tok = await loadTokenizer(dir);
    const labels = (await loadBert(dir).then((m) => { const l = m.config.id2label; m.dispose(); return l; }));
    // 40 examples in batches of 8: 12 steps span three shuffled epochs; the abort falls inside the second.
    const train = await loadDataset(path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl'), tok, { limit: 40, labels, maxLength: 32 });
    const opts = { train, losses: [new CrossEntropyLoss()], training: { ...training, maxSteps: 12, ...(micro ? { microBatchSize: micro } : {}) }, seed: 7, phase: 'test' };
    const weights = (m: { params: Map<string, tf.Variable> }) => new Map([...m.params].map(([k, v]) => [k, Float32Array.from(v.dataSync())]));
    const stepLosses = (events: RunEvent[]) => new Map(events.flatMap((e) => (e.type === 'step' ? [[e.step, e.loss.total] as const] : [])));

    const full = await loadBert(dir);
    const fullEvents: RunEvent[] = [];
    await trainLoop({ ...opts, model: full, control: control(fullEvents) });
    const want = weights(full);
    full.dispose();

    const before = tf.memory().numTensors;
    const model = await loadBert(dir);
    const controller = new AbortController();
    const aborting: RunControl = { emit: () => {}, signal: controller.signal, checkpoint: () => { if (controller.signal.aborted) throw new RunAborted(); } };
    let saved: { state: SavedState; weights: Map<string, Float32Array> } | undefined;
    const config = { seed: 7 };
    const cp = new RunCheckpoints({ config, write: async (state) => { saved = { state, weights: weights(model) }; return 'memory'; } });
    await expect(trainLoop({ ...opts, model, control: aborting, checkpoints: cp, afterStep: (s) => { if (s === 6) controller.abort('test'); } })).rejects.toBeInstanceOf(RunAborted);
    expect(saved!.state.step).toBe(7);
    expect(tf.memory().numTensors - before).toBe(model.params.size);

    // A new process, as it were: a fresh model takes the saved weights, the loop its saved state.
    const again = await loadBert(dir);
    for (const [k, v] of again.params) v.assign(tf.tensor(saved!.weights.get(k)!, v.shape));
    const events: RunEvent[] = [];
    const resumed = new RunCheckpoints({ config, write: async () => 'memory', resumed: saved!.state, resumedPath: 'memory' });
    await trainLoop({ ...opts, model: again, control: control(events), checkpoints: resumed });
    const got = weights(again);
    for (const [k, v] of want) expect(Buffer.compare(Buffer.from(got.get(k)!.buffer), Buffer.from(v.buffer)), k).toBe(0);
    // The same batches with the same dropout masks: every step's loss after the checkpoint matches.
    const a = stepLosses(fullEvents);
    const b = stepLosses(events);
    expect([...b.keys()]).toEqual([8, 9, 10, 11, 12]);
    for (const [s, l] of b) expect(l).toBe(a.get(s));
    model.dispose();
    again.dispose();
  });

  it('trains on wasm with a batch of one example, alone or as the remainder of an epoch (33 at batch 32)', async () => {
    await useBackend('wasm');
    try {
      const dir = modelDir('bert-tiny-wordnet-supersense');
      const tok = await loadTokenizer(dir);
      for (const [examples, batchSize] of [[33, 32], [3, 1]] as const) {
        const model = await loadBert(dir);
        const train = await loadDataset(path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl'), tok, { limit: examples, labels: model.config.id2label, maxLength: 32 });
        const before = model.params.get('bert.embeddings.word_embeddings.weight')!.sum().dataSync()[0];
        const events: RunEvent[] = [];
        await trainLoop({ model, train, losses: [new CrossEntropyLoss()], training: { ...training, batchSize, maxSteps: 2 }, seed: 3, control: control(events) });
        const losses = events.flatMap((e) => (e.type === 'step' ? [e.loss.total] : []));
        expect(losses).toHaveLength(2);
        for (const l of losses) expect(Number.isFinite(l)).toBe(true);
        // The embedding lookup's gradient (UnsortedSegmentSum) reached the table.
        expect(model.params.get('bert.embeddings.word_embeddings.weight')!.sum().dataSync()[0]).not.toBe(before);
        model.dispose();
      }
    } finally {
      await testBackend();
    }
  });

  it('AdamW matches a hand-computed first step, with decoupled decay', () => {
    const p = tf.variable(tf.tensor1d([1, -2]));
    const opt = new AdamW([{ variables: [p], learningRate: 0.1, weightDecay: 0.5 }]);
    const g = tf.tensor1d([0.5, 0.25]);
    opt.apply(new Map([[p, g]]));
    // First Adam step moves each weight by lr * sign(g) (bias-corrected m/sqrt(v) = g/|g|); decay scales by 1 - lr*wd.
    const got = p.dataSync();
    expect(got[0]).toBeCloseTo(1 * 0.95 - 0.1, 5);
    expect(got[1]).toBeCloseTo(-2 * 0.95 - 0.1, 5);
    opt.dispose();
    p.dispose();
    g.dispose();
  });

  it('AdamW with its moments in JS memory updates as with them on the heap, bit for bit, and saves and restores them', () => {
    const run = (offHeap: boolean) => {
      const p = tf.variable(tf.tensor1d([1, -2, 0.5, 3]));
      const q = tf.variable(tf.tensor1d([0.1, 0.2]));
      const opt = new AdamW([{ variables: [p], learningRate: 0.1, weightDecay: 0.5 }, { variables: [q], learningRate: 0.05, weightDecay: 0, ascent: true }], 0.9, 0.999, 1e-8, offHeap);
      expect(opt.offHeap).toBe(offHeap);
      for (let s = 0; s < 3; s++) {
        tf.tidy(() => opt.apply(new Map([[p, tf.tensor1d([0.5, 0.25, -s, 1e-3])], [q, tf.tensor1d([s, -1])]]), 0.5 + s / 4));
      }
      const state = opt.state();
      const out = { p: Array.from(p.dataSync()), q: Array.from(q.dataSync()), m: Array.from(state.tensors.get('m.0')!.data), v: Array.from(state.tensors.get('v.1')!.data) };
      // A fresh optimizer restored from the state continues identically.
      const again = new AdamW(opt.groups, 0.9, 0.999, 1e-8, offHeap);
      again.restore(state);
      expect(Array.from(again.state().tensors.get('m.0')!.data)).toEqual(out.m);
      for (const o of [opt, again]) o.dispose();
      p.dispose();
      q.dispose();
      return out;
    };
    // Without the native addon there is no off-heap path to compare.
    if (!new AdamW([]).offHeap && !tf.getKernel('TopiaryAdamWOffHeap', tf.getBackend())) return;
    expect(run(true)).toEqual(run(false));
  });

  it('defaults the fine-tuning learning rate from the hidden size: 1e-3 up to 256, lower for wider models', () => {
    expect(defaultFinetuneLearningRate(128)).toBe(1e-3);
    expect(defaultFinetuneLearningRate(256)).toBe(1e-3);
    expect(defaultFinetuneLearningRate(768)).toBeCloseTo(1e-3 / 9, 12);
    expect(defaultFinetuneLearningRate(1024)).toBeLessThan(defaultFinetuneLearningRate(768));
  });

  it('warms up linearly and decays to zero', () => {
    expect(linearSchedule(0, 10, 100)).toBeCloseTo(0.1);
    expect(linearSchedule(9, 10, 100)).toBeCloseTo(1);
    expect(linearSchedule(55, 10, 100)).toBeCloseTo(0.5);
    expect(linearSchedule(100, 10, 100)).toBe(0);
  });
});
