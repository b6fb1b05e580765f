import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../tf.js';
import { loadBert } from '../io/checkpoint.js';
import { loadTokenizer } from '../io/tokenizer.js';
import { loadDataset } from '../data/dataset.js';
import { trainLoop } from './train.js';
import { CrossEntropyLoss } from './losses.js';
import { AdamW, defaultFinetuneLearningRate, linearSchedule } from './optimizer.js';
import type { RunControl, RunEvent } from '../events.js';
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
