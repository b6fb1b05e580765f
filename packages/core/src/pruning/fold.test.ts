import 'reflect-metadata';
import { beforeAll, expect, it } from 'vitest';
import { tf } from '../tf.js';
import { loadBert } from '../io/checkpoint.js';
import { MaskSet, bindMasks } from './masks.js';
import { compact } from './compact.js';
import { modelDir, maxAbsDiff } from '../test-support/shared.js';
import { testBackend } from '../test-support/backend.js';
beforeAll(testBackend);
// CoFi learns fractional masks of every kind; compaction must fold each one exactly into the weights.
it('folds a fractional mask of every kind into the compacted weights (logits to 1e-5)', async () => {
  const model = await loadBert(modelDir('bert-tiny-wordnet-supersense'));
  const batch = { batchSize: 2, seqLen: 4, inputIds: Int32Array.from([101, 2000, 2001, 102, 101, 2010, 2020, 102]), attentionMask: new Int32Array(8).fill(1), tokenTypeIds: new Int32Array(8) };
  for (const kind of ['head', 'neuron', 'hidden', 'mha', 'ffn', 'hidden-binary']) {
    const m = bindMasks(MaskSet.ones(model), model);
    if (kind === 'head') m.headMask = m.headMask.map((a) => a.map((_, i) => 0.3 + 0.2 * i));
    if (kind === 'neuron') m.neuronMask = m.neuronMask.map((a) => a.map((_, i) => (i % 3) * 0.4));
    if (kind === 'hidden') m.hiddenMask = m.hiddenMask.map((_, i) => (i % 4 === 0 ? 0 : 0.5 + (i % 3) * 0.2));
    if (kind === 'hidden-binary') m.hiddenMask = m.hiddenMask.map((_, i) => (i % 4 === 0 ? 0 : 1));
    if (kind === 'mha') m.mhaMask = Float32Array.from([0.7, 0.4]);
    if (kind === 'ffn') m.ffnMask = Float32Array.from([0.6, 0.9]);
    const small = compact(model, m);
    const [a, b] = tf.tidy(() => [model.forward(batch, m.toTensors()).logits!.arraySync(), small.forward(batch).logits!.arraySync()]);
    expect(maxAbsDiff(a, b), kind).toBeLessThan(1e-5);
    small.dispose();
  }
});
