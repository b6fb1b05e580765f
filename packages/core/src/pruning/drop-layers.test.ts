import 'reflect-metadata';
import { beforeAll, expect, it } from 'vitest';
import { tf } from '../tf.js';
import { clsOf, layerParamNames } from '../model/bert.js';
import { linear } from '../model/ops.js';
import { serializeBertConfig } from '../model/config.js';
import { MaskSet } from './masks.js';
import { compact, dropLayers } from './compact.js';
import { randomBert } from '../test-support/random-bert.js';
import { maxAbsDiff } from '../test-support/shared.js';
import { testBackend } from '../test-support/backend.js';
beforeAll(testBackend);

const batch = { batchSize: 2, seqLen: 4, inputIds: Int32Array.from([1, 5, 9, 2, 1, 7, 3, 0]), attentionMask: Int32Array.from([1, 1, 1, 1, 1, 1, 1, 0]), tokenTypeIds: new Int32Array(8) };

it('drops whole layers: the top ones leave the classifier reading an earlier hidden state', () => {
  const model = randomBert({ layers: 3, hidden: 8, heads: 2, intermediate: 6, labels: 3 });
  const small = dropLayers(model, [1, 2]);
  expect(small.config.numHiddenLayers).toBe(1);
  expect(serializeBertConfig(small.config)['num_hidden_layers']).toBe(1);
  const [want, got] = tf.tidy(() => {
    const h = model.forward(batch, { outputHiddenStates: true }).hiddenStates![1]!;
    const pooled = tf.tanh(linear(clsOf(h), model.param('bert.pooler.dense.weight'), model.param('bert.pooler.dense.bias')));
    return [linear(pooled, model.param('classifier.weight'), model.param('classifier.bias')).arraySync(), small.forward(batch).logits!.arraySync()];
  });
  expect(maxAbsDiff(want, got)).toBeLessThan(1e-5);
  small.dispose();
  model.dispose();
});

it('renumbers the kept layers, with their sizes and pruned heads, and leaves the source intact', () => {
  const model = randomBert({ layers: 3, hidden: 8, heads: 2, intermediate: 6, labels: 3 });
  const m = MaskSet.ones(model);
  m.headMask[2] = Float32Array.from([1, 0]);
  m.neuronMask[2] = Float32Array.from([1, 1, 0, 0, 1, 1]);
  const pruned = compact(model, m);
  const small = dropLayers(pruned, [0]);
  expect(small.config.layerHeads).toEqual([2, 1]);
  expect(small.config.layerIntermediate).toEqual([6, 4]);
  expect(small.config.prunedHeads).toEqual({ '1': [1] });
  for (const [from, to] of [[1, 0], [2, 1]] as const) {
    const a = layerParamNames(from);
    const b = layerParamNames(to);
    for (const k of Object.keys(a) as (keyof typeof a)[]) {
      expect(Array.from(small.param(`${b[k]}.weight`).dataSync())).toEqual(Array.from(pruned.param(`${a[k]}.weight`).dataSync()));
    }
  }
  expect(pruned.config.numHiddenLayers).toBe(3);
  tf.tidy(() => pruned.forward(batch));
  expect(() => dropLayers(model, [0, 1, 2])).toThrow(/no encoder/);
  expect(() => dropLayers(model, [3])).toThrow(/not in \[0, 2\]/);
  [small, pruned, model].forEach((x) => x.dispose());
});

it('a layer mask of 0 passes the residual stream through: masked forward = dropLayers = compact, sparsity and sizes count it gone, and it saves', async () => {
  const { saveMasks, loadMasks } = await import('./mask-io.js');
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const path = await import('node:path');
  const { compactedParamCount } = await import('./compact.js');
  const model = randomBert({ layers: 3, hidden: 8, heads: 2, intermediate: 6, labels: 3 }, 7);
  const m = MaskSet.ones(model);
  m.layerMask = Float32Array.from([1, 0, 1]);
  m.neuronMask[2] = Float32Array.from([1, 0, 1, 1, 0, 1]);
  const dropped = dropLayers(compact(model, { ...m, layerMask: Float32Array.from([1, 1, 1]) } as MaskSet), [1]);
  const small = compact(model, m);
  expect(small.config.numHiddenLayers).toBe(2);
  expect(small.config.layerIntermediate).toEqual([6, 4]);
  const [masked, viaDrop, viaCompact] = tf.tidy(() => {
    const t = m.toTensors();
    return [model.forward(batch, t).logits!.arraySync(), dropped.forward(batch).logits!.arraySync(), small.forward(batch).logits!.arraySync()];
  });
  expect(maxAbsDiff(masked, viaDrop)).toBeLessThan(1e-5);
  expect(maxAbsDiff(masked, viaCompact)).toBeLessThan(1e-5);
  const total = (x: typeof model) => [...x.params.values()].reduce((a, v) => a + v.size, 0);
  expect(compactedParamCount(model, m)).toBe(total(small));
  const s = m.sparsity(model);
  expect(s.totalSparsity).toBeCloseTo(1 - total(small) / total(model), 9);
  // A gate of 0.5 is halfway between the layer and no layer.
  const half = MaskSet.ones(model);
  half.layerMask = Float32Array.from([1, 0.5, 1]);
  const [h0, h1, hh] = tf.tidy(() => {
    const states = (ms: MaskSet) => model.forward(batch, { ...ms.toTensors(), outputHiddenStates: true }).hiddenStates![2]!.arraySync() as number[][][];
    return [states(MaskSet.ones(model)), states(Object.assign(MaskSet.ones(model), { layerMask: Float32Array.from([1, 0, 1]) })), states(half)];
  });
  expect(maxAbsDiff(hh, h0.map((r, b) => r.map((v, t) => v.map((x, i) => (x + h1[b]![t]![i]!) / 2))))).toBeLessThan(1e-5);
  const dir = mkdtempSync(path.join(tmpdir(), 'topiary-layer-mask-'));
  await saveMasks(m, dir);
  expect(Array.from((await loadMasks(dir, model)).layerMask)).toEqual([1, 0, 1]);
  [small, dropped, model].forEach((x) => x.dispose());
});
