import 'reflect-metadata';
import { beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { MaskSet, bindMasks, checkOptions, compact, corePlugin, createRunContainer, loadBert, loadDataset, loadTokenizer, tf, type PruneContext, type RunEvent } from '@topiary/core';
import { SHARED, maxAbsDiff, modelDir } from '../../core/src/test-support/shared.js';
import { testBackend } from '../../core/src/test-support/backend.js';
import { randomBert } from '../../core/src/test-support/random-bert.js';
import { RETRAINING_FREE_OPTIONS, retrainingFreePlugin } from './index.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { LAYER_DROP_STRATEGIES, layerSimilarity, layersFor, layersToDrop } from './layer-drop.js';
import { maskMacs, modelMacs } from './mac.js';

beforeAll(testBackend);

async function context(method: string, options: Record<string, unknown>) {
  const { registry } = await createRunContainer([corePlugin(), retrainingFreePlugin()]);
  const dir = modelDir('bert-tiny-wordnet-supersense');
  const model = await loadBert(dir);
  const teacher = await loadBert(dir);
  const tok = await loadTokenizer(dir);
  // Dev is sorted by label too: evenly spaced examples cover the classes.
  const data = (await loadDataset(path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl'), tok, { labels: model.config.id2label, maxLength: 24 })).evenlySpaced(96);
  const events: RunEvent[] = [];
  const ctx: PruneContext = {
    model,
    teacher,
    masks: bindMasks(MaskSet.ones(model), model),
    train: data,
    dev: data,
    control: { emit: (e) => events.push(e), signal: new AbortController().signal, checkpoint: () => {} },
    resolve: registry,
    options,
    seed: 3,
    training: { batchSize: 16, learningRate: 1e-4, maxSteps: 4, warmupRatio: 0, weightDecay: 0.01, maxGradNorm: 1, maxLength: 24 },
  };
  return { ctx, pruner: registry.pruner(method, {}), events, dispose: () => (model.dispose(), teacher.dispose()) };
}

const batch = { batchSize: 2, seqLen: 5, inputIds: Int32Array.from([101, 2000, 2001, 2002, 102, 101, 2010, 2020, 102, 0]), attentionMask: Int32Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 0]), tokenTypeIds: new Int32Array(10) };

describe('retraining-free pruner', () => {
  it('keeps at most the MAC constraint, tunes the masks, and the compacted model computes the masked one', async () => {
    const { ctx, pruner, dispose } = await context('retraining-free', { macConstraint: 0.5, samples: 48, sampleBatchSize: 16, finetuneSteps: 2 });
    const before = tf.memory().numTensors;
    const res = await pruner.run(ctx);
    expect(tf.memory().numTensors).toBe(before);
    const r = res.report as Record<string, any>;
    const macs = maskMacs(ctx.model.config, res.masks.headMask, res.masks.neuronMask, r.seqLen) / modelMacs(ctx.model.config, r.seqLen);
    expect(macs).toBeLessThanOrEqual(0.5);
    expect(r.macFraction).toBeCloseTo(macs, 12);
    expect(r.tuning.some((b: any) => b.status === 'scaled')).toBe(true);
    expect(res.masks.neuronMask.some((m) => m.some((v) => v !== 0 && v !== 1))).toBe(true);
    const small = compact(res.model, res.masks);
    const [a, b] = tf.tidy(() => [res.model.forward(batch, res.masks.toTensors()).logits!.arraySync(), small.forward(batch).logits!.arraySync()]);
    expect(maxAbsDiff(a, b)).toBeLessThan(1e-4);
    small.dispose();
    dispose();
  });

  it('searches under a latency table: the masks keep at most the latency constraint by the table\'s fit', async () => {
    // A table for bert-tiny's sizes (2 heads of 64, 512 neurons, hidden 128) with a fixed cost per block.
    const fit = (threshold: number, c: number, slope: number, zero: number) => ({ threshold, c, slope, zero });
    const table = {
      format: 'topiary-latency-lut', version: 1, backend: 'wasm', batch: 32, seq: 24, hiddenSize: 128, attentionHeadSize: 64, heads: 2, intermediate: 512, hiddenAct: 'gelu',
      mha: { units: [0, 1, 2], ms: [0.1, 1, 1.8], fit: fit(1, 1, 0.8, 0.1) },
      ffn: { units: [0, 64, 512], ms: [0.1, 0.5, 2.74], fit: fit(64, 0.5, 0.005, 0.1) },
    };
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'topiary-lut-')), 'lut.json');
    writeFileSync(file, JSON.stringify(table));
    const { ctx, pruner, events, dispose } = await context('retraining-free', { latencyConstraint: 0.5, latencyTable: file, samples: 32, sampleBatchSize: 16 });
    const res = await pruner.run(ctx);
    const r = res.report as Record<string, any>;
    const kept = (m: Float32Array) => m.filter((v) => v !== 0).length;
    const at = (f: ReturnType<typeof fit>, n: number) => (n === 0 ? f.zero : n <= f.threshold ? f.c : f.c + f.slope * (n - f.threshold));
    const ms = res.masks.headMask.reduce((a, m, l) => a + at(table.mha.fit, kept(m)) + at(table.ffn.fit, kept(res.masks.neuronMask[l]!)), 0);
    const dense = 2 * (at(table.mha.fit, 2) + at(table.ffn.fit, 512));
    expect(ms / dense).toBeLessThanOrEqual(0.5);
    expect(r.latencyFraction).toBeCloseTo(ms / dense, 12);
    expect(r.latencyConstraint).toBe(0.5);
    expect(events.some((e) => e.type === 'log' && /of the dense encoder latency by the table/.test(e.message))).toBe(true);
    // A table of other sizes is refused, naming the file and field.
    writeFileSync(file, JSON.stringify({ ...table, hiddenSize: 256 }));
    await expect(pruner.run({ ...ctx, masks: bindMasks(MaskSet.ones(ctx.model), ctx.model) })).rejects.toThrow(/lut\.json: field 'hiddenSize' must be 128/);
    dispose();
  });

  it('names a bad or unknown option', async () => {
    const { registry } = await createRunContainer([corePlugin(), retrainingFreePlugin()]);
    const ctx = { options: {} } as PruneContext;
    await expect(registry.pruner('retraining-free', {}).run({ ...ctx, options: { macConstraint: 1.2 } })).rejects.toThrow(/'macConstraint' must be in \(0, 1\)/);
    await expect(registry.pruner('retraining-free', {}).run({ ...ctx, options: { macConstraint: 0.5, sample: 3 } })).rejects.toThrow(/unknown option 'sample'/);
    await expect(registry.pruner('retraining-free', {}).run({ ...ctx, options: { targetSparsity: 0.5 } })).rejects.toThrow(/macConstraint/);
    await expect(registry.pruner('retraining-free', {}).run({ ...ctx, options: { macConstraint: 0.5, latencyConstraint: 0.5 } })).rejects.toThrow(/exactly one of 'macConstraint'/);
    await expect(registry.pruner('retraining-free', {}).run({ ...ctx, options: { latencyConstraint: 0.5 } })).rejects.toThrow(/'latencyTable' must name the file/);
    expect(checkOptions(RETRAINING_FREE_OPTIONS, { latencyConstraint: 0.5 }).issues).toEqual([expect.objectContaining({ path: ['latencyTable'] })]);
    expect(checkOptions(RETRAINING_FREE_OPTIONS, {}).issues).toEqual([expect.objectContaining({ path: ['macConstraint'] })]);
    expect(checkOptions(RETRAINING_FREE_OPTIONS, { macConstraint: 0.5 }).issues).toEqual([]);
    await expect(registry.pruner('layer-drop', {}).run({ ...ctx, options: { drop: 1, strategy: 'middle' } })).rejects.toThrow(/'strategy' must be one of/);
  });
});

describe('layer-drop pruner', () => {
  it("picks Sajjad et al.'s layers (their 12-layer, 4-dropped examples)", () => {
    expect(layersFor('top', 12, 4)).toEqual([8, 9, 10, 11]);
    expect(layersFor('bottom', 12, 4)).toEqual([0, 1, 2, 3]);
    expect(layersFor('alternate', 12, 4)).toEqual([4, 6, 8, 10]); // 1-based 5, 7, 9, 11
    expect(layersFor('symmetric', 12, 4)).toEqual([4, 5, 6, 7]); // 1-based 5-8
    expect(layersFor('contribution', 4, 2, [0.2, 0.9, 0.1, 0.8])).toEqual([1, 3]);
    expect(layersToDrop(0.5, 4)).toBe(2);
    expect(layersToDrop(1, 4)).toBe(1);
    expect(() => layersToDrop(4, 4)).toThrow(/between 1 and 3/);
    expect(() => layersFor('alternate', 4, 3)).toThrow(/at most 2/);
    expect(LAYER_DROP_STRATEGIES).toHaveLength(5);
  });

  it('measures contribution as the mean cosine of each layer\'s input and output tokens', () => {
    const model = randomBert({ layers: 3, hidden: 8, heads: 2, intermediate: 6, labels: 3 }, 2);
    const small = { ...batch, inputIds: batch.inputIds.map((v) => v % 32) };
    const sim = layerSimilarity(model, [small]);
    const hs = tf.tidy(() => model.forward(small, { outputHiddenStates: true }).hiddenStates!.map((h) => h.arraySync() as number[][][]));
    [0, 1, 2].forEach((l) => {
      let s = 0;
      let n = 0;
      for (let b = 0; b < 2; b++) {
        for (let t = 0; t < 5; t++) {
          if (!batch.attentionMask[b * 5 + t]) continue;
          const x = hs[l]![b]![t]!;
          const y = hs[l + 1]![b]![t]!;
          const dot = x.reduce((a, v, i) => a + v * y[i]!, 0);
          s += dot / Math.hypot(...x) / Math.hypot(...y);
          n++;
        }
      }
      expect(sim[l]).toBeCloseTo(s / n, 5);
    });
    model.dispose();
  });

  it('exports fewer layers, fine-tunes the smaller model, and reports sparsity against the original', async () => {
    const { ctx, pruner, events, dispose } = await context('layer-drop', { strategy: 'contribution', drop: 1, samples: 32, finetuneSteps: 2 });
    const res = await pruner.run(ctx);
    expect(res.model.config.numHiddenLayers).toBe(1);
    const r = res.report as Record<string, any>;
    expect(r.droppedLayers).toHaveLength(1);
    expect(r.similarity).toHaveLength(2);
    expect(r.encoderSparsity).toBeCloseTo(0.5, 6);
    expect(events.filter((e) => e.type === 'step')).toHaveLength(2);
    expect(events.some((e) => e.type === 'evaluated' && e.label === 'after dropping')).toBe(true);
    res.model.dispose();
    dispose();
  });
});
