import 'reflect-metadata';
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import {
  MaskSet,
  bindMasks,
  compact,
  corePlugin,
  createRunContainer,
  crossEntropy,
  evaluate,
  loadBert,
  loadDataset,
  loadMasks,
  loadTokenizer,
  runPruning,
  tf,
  type BertModel,
  type Batch,
  type PruneContext,
  type RunEvent,
  type RunSpec,
} from '@topiary/core';
import { SHARED, golden, goldenBatch, maxAbsDiff, modelDir } from '../../core/src/test-support/shared.js';
import { testBackend } from '../../core/src/test-support/backend.js';
import { movementPlugin } from './index.js';
import { straightThrough } from './movement.js';

/** The golden's single texts with their labels. */
const singleBatch = (g: any): Batch => goldenBatch(g.single, g.labels);

async function context(options: Record<string, unknown>, maxSteps: number) {
  const { registry } = await createRunContainer([corePlugin(), movementPlugin()]);
  const dir = modelDir('bert-tiny-wordnet-supersense');
  const model = await loadBert(dir);
  const teacher = await loadBert(dir);
  const tok = await loadTokenizer(dir);
  const train = await loadDataset(path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl'), tok, { limit: 96, labels: model.config.id2label, maxLength: 32 });
  const events: RunEvent[] = [];
  const ctx: PruneContext = {
    model,
    teacher,
    masks: MaskSet.ones(model),
    train,
    dev: train,
    control: { emit: (e) => events.push(e), signal: new AbortController().signal, checkpoint: () => {} },
    resolve: registry,
    options,
    seed: 3,
    training: { batchSize: 16, learningRate: 1e-4, maxSteps, warmupRatio: 0.1, weightDecay: 0.01, maxGradNorm: 1, maxLength: 32 },
  };
  return { ctx, registry, events, teacher };
}

describe('movement pruning', () => {
  beforeAll(testBackend);

  it('score gradients through the straight-through mask are -(movement scores) of the Hugging Face goldens', async () => {
    const g = golden('bert-tiny-golden.json');
    const model = await loadBert(modelDir('bert-tiny-wordnet-supersense'));
    const name = 'bert.encoder.layer.0.attention.self.query.weight';
    const inter = 'bert.encoder.layer.0.intermediate.dense.weight';
    const batch = singleBatch(g);
    const scores = [name, inter].map((n) => tf.variable(tf.zeros(model.params.get(n)!.shape)));
    const { grads } = tf.variableGrads(() => {
      const weightMasks = { [name]: straightThrough(scores[0]!, () => new Float32Array(scores[0]!.size).fill(1)), [inter]: straightThrough(scores[1]!, () => new Float32Array(scores[1]!.size).fill(1)) };
      return crossEntropy(model.forward(batch, { weightMasks }).logits!, tf.tensor1d(batch.labels!, 'int32'));
    }, scores);
    // Golden [out, in]; ours [in, out]. dL/dS = W dL/dW, the golden is -W dL/dW.
    const want = tf.tidy(() => tf.tensor2d(g.movement[name]).neg().transpose());
    const got = grads[scores[0]!.name]!;
    const scale = tf.tidy(() => want.abs().max().dataSync()[0]!);
    expect(tf.tidy(() => got.sub(want).abs().max().dataSync()[0]!) / scale).toBeLessThan(1e-4);
    // Row sums of the intermediate weight's movement ([out] rows = our columns).
    const rowSums = tf.tidy(() => grads[scores[1]!.name]!.neg().sum(0).dataSync());
    const wantRows = g.movement[`${inter}.row_sums`] as number[];
    const rs = Math.max(...wantRows.map(Math.abs));
    wantRows.forEach((v, i) => expect(Math.abs(rowSums[i]! - v) / rs).toBeLessThan(1e-4));
    tf.dispose([...scores, want, ...Object.values(grads)]);
    model.dispose();
  });

  it('topk reaches the scheduled keep fraction, exports zeros, and keeps numTensors flat', async () => {
    const { ctx, registry, events, teacher } = await context({ mode: 'topk', finalThreshold: 0.3, warmupSteps: 2 }, 12);
    const before = tf.memory().numTensors;
    const result = await registry.pruner('movement').run(ctx);
    const report = result.report as { reachedWeightSparsity: number; maskedAccuracy: number };
    expect(report.reachedWeightSparsity).toBeCloseTo(0.7, 2);
    // The scores and optimizer state are gone: only the model's own tensors remain.
    expect(tf.memory().numTensors).toBe(before);
    expect(events.filter((e) => e.type === 'step')).toHaveLength(12);
    const small = compact(result.model, result.masks);
    const w = small.params.get('bert.encoder.layer.1.output.dense.weight')!.dataSync() as Float32Array;
    const zeros = w.reduce((a, v) => a + (v === 0 ? 1 : 0), 0);
    expect(zeros / w.length).toBeCloseTo(0.7, 2);
    // The exported model's accuracy equals the masked model's.
    expect(evaluate(small, ctx.dev).accuracy).toBeCloseTo(evaluate(result.model, ctx.dev, { forward: () => result.masks.toTensors() }).accuracy, 6);
    small.dispose();
    result.model.dispose();
    teacher.dispose();
  });

  it('soft movement and block granularity run, with the L1 term in the loss', async () => {
    const { ctx, registry, events, teacher } = await context({ finalThreshold: 0.6, warmupSteps: 1, granularity: [32, 32], scoreLearningRate: 0.5 }, 6);
    const result = await registry.pruner('soft-movement').run(ctx);
    const steps = events.flatMap((e) => (e.type === 'step' ? [e.loss] : []));
    // The penalty's weight follows the threshold: 0 during the initial warm-up (threshold 0), then positive.
    const l1 = steps.map((l) => (l as Record<string, number>)['l1']!);
    expect(l1[0]).toBe(0);
    expect(l1[l1.length - 1]).toBeGreaterThan(0);
    // Blocks are pruned whole: each 32 x 32 block of a mask is all 0 or all 1.
    const m = result.masks.weightMasks.get('bert.encoder.layer.0.attention.self.query.weight')!;
    for (let bi = 0; bi < 128; bi += 32) {
      for (let bj = 0; bj < 128; bj += 32) {
        const v = m[bi * 128 + bj];
        for (let i = 0; i < 32; i++) for (let j = 0; j < 32; j++) expect(m[(bi + i) * 128 + bj + j]).toBe(v);
      }
    }
    expect((result.report as { mode: string }).mode).toBe('soft');
    result.model.dispose();
    teacher.dispose();
  });

  const params = (m: BertModel) => [...m.params.values()].reduce((a, v) => a + v.size, 0);
  const logitsOf = (m: BertModel, batch: Batch, masks?: MaskSet) => tf.tidy(() => m.forward(batch, masks ? masks.toTensors() : {}).logits!.arraySync());

  it('row granularity: a run exports the compacted model (FFN rows folded away), reports its size, and it reloads with the masked model\'s logits', async () => {
    const { registry } = await createRunContainer([corePlugin(), movementPlugin()]);
    const dir = modelDir('bert-tiny-wordnet-supersense');
    const dev = path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl');
    const out = mkdtempSync(path.join(tmpdir(), 'topiary-movement-run-'));
    const spec: RunSpec = {
      method: 'movement',
      model: dir,
      teacher: dir,
      data: { train: dev, dev, trainLimit: 48, devLimit: 16 },
      options: { mode: 'topk', granularity: 'row', finalThreshold: 0.25, warmupSteps: 1 },
      // Weights frozen (only the scores learn), so the masked model before any fold is the checkpoint under the weight masks.
      training: { batchSize: 16, learningRate: 0, maxSteps: 6, warmupRatio: 0, weightDecay: 0.01, maxGradNorm: 1, maxLength: 24 },
      seed: 3,
      out,
    };
    await new Promise<void>((resolve, reject) => runPruning(spec, registry).subscribe({ error: reject, complete: resolve }));
    const report = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
    // A Hugging Face row of the intermediate projection is one neuron's input weights: 3/4 of each layer's
    // 512 neurons go, each a constant folded into the output bias.
    expect(report.foldedNeurons).toBe(2 * (512 - 128));
    expect(report.removedNeurons).toBe(report.foldedNeurons);
    const exported = await loadBert(path.join(out, 'model'));
    expect(exported.config.layerIntermediate).toEqual([128, 128]);
    expect(report.exportedParams).toBe(params(exported));
    // Each neuron: an intermediate column and bias and an output row (hidden 128); each head (d = 64): Q, K, V columns and biases, output rows.
    expect(report.exportedParams).toBe(report.params - report.removedNeurons * (2 * 128 + 1) - report.removedHeads * (3 * (128 * 64 + 64) + 64 * 128));
    // The exported model computes what the weight-masked model computes, and what the saved checkpoint
    // (folded biases, structured masks) computes under its masks, so a resumed run starts where this one ended.
    const ckpt = await loadBert(path.join(out, 'checkpoint', 'model'));
    const masks = await loadMasks(path.join(out, 'checkpoint'), ckpt);
    const original = await loadBert(dir);
    const weightMasked = MaskSet.ones(original);
    weightMasked.weightMasks = masks.weightMasks;
    const tok = await loadTokenizer(dir);
    const batch = [...(await loadDataset(dev, tok, { limit: 8, labels: ckpt.config.id2label, maxLength: 24 })).batches(8)][0]!;
    const want = logitsOf(original, batch, bindMasks(weightMasked, original));
    expect(maxAbsDiff(logitsOf(exported, batch), want)).toBeLessThan(1e-5);
    expect(maxAbsDiff(logitsOf(ckpt, batch, masks), want)).toBeLessThan(1e-5);
    for (const m of [exported, ckpt, original]) m.dispose();
    rmSync(out, { recursive: true, force: true });
  });

  it('head-sized blocks of the attention output remove whole heads; the compacted model computes the masked one', async () => {
    // [128, 64] blocks in [out, in]: attention.output.dense has one block per head (d = 64), output.dense one per 64 neurons.
    const { ctx, registry, teacher } = await context({ mode: 'topk', granularity: [128, 64], finalThreshold: 0.5, warmupSteps: 1 }, 4);
    // Weights frozen: the teacher is then the model before pruning.
    ctx.training = { ...ctx.training, learningRate: 0 };
    const result = await registry.pruner('movement').run(ctx);
    const report = result.report as { removedHeads: number; removedNeurons: number; exportedParams: number };
    expect(report.removedHeads).toBe(2);
    expect(report.removedNeurons).toBeGreaterThanOrEqual(2 * 256);
    const small = compact(result.model, result.masks);
    expect(small.config.layerHeads).toEqual([1, 1]);
    expect(report.exportedParams).toBe(params(small));
    const batch = [...ctx.dev.batches(8)][0]!;
    const weightMasked = MaskSet.ones(teacher);
    weightMasked.weightMasks = result.masks.weightMasks;
    expect(maxAbsDiff(logitsOf(small, batch), logitsOf(teacher, batch, bindMasks(weightMasked, teacher)))).toBeLessThan(1e-5);
    for (const m of [small, result.model]) m.dispose();
    teacher.dispose();
  });

  it('names a bad option', async () => {
    const { ctx, registry, teacher } = await context({ granularity: [3, 5] }, 1);
    await expect(registry.pruner('movement').run(ctx)).rejects.toThrow(/option 'granularity'/);
    ctx.model.dispose();
    teacher.dispose();
  });
});
