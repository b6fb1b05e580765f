import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { tf } from '../tf.js';
import { loadBert, saveBert } from '../io/checkpoint.js';
import { MaskSet, bindMasks } from './masks.js';
import { compact, compactedParamCount } from './compact.js';
import { structureFromWeightMasks } from './weight-structure.js';
import { layerParamNames, type BertModel, type Batch } from '../model/bert.js';
import { Rng } from '../model/ops.js';
import { maxAbsDiff } from '../test-support/shared.js';
import { testBackend } from '../test-support/backend.js';
import { randomBert } from '../test-support/random-bert.js';

const H = 16;
const d = 4;
const I = 12;
// Two examples, the second padded: the value-bias fold relies on attention probabilities summing to 1 over the attended keys.
const batch: Batch = {
  batchSize: 2,
  seqLen: 6,
  inputIds: Int32Array.from([1, 7, 19, 4, 30, 2, 1, 11, 23, 2, 0, 0]),
  attentionMask: Int32Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]),
  tokenTypeIds: Int32Array.from([0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0]),
};
const logits = (model: BertModel, masks?: MaskSet) => tf.tidy(() => model.forward(batch, masks ? masks.toTensors() : {}).logits!.arraySync());
const params = (m: BertModel) => [...m.params.values()].reduce((a, v) => a + v.size, 0);

/** Weight-mask editing in the stored `[in, out]` layout. */
function masker(model: BertModel, masks: MaskSet) {
  const get = (name: string) => {
    const full = `${name}.weight`;
    if (!masks.weightMasks.has(full)) masks.weightMasks.set(full, new Float32Array(model.param(full).size).fill(1));
    return { m: masks.weightMasks.get(full)!, cols: model.param(full).shape[1]! };
  };
  return {
    /** Zeroes columns `[c0, c1)` (outputs), on every row but `except`. */
    cols(name: string, c0: number, c1: number, except = -1) {
      const { m, cols } = get(name);
      for (let r = 0; r < m.length / cols; r++) for (let j = c0; j < c1; j++) if (r !== except) m[r * cols + j] = 0;
    },
    /** Zeroes rows `[r0, r1)` (inputs), on every column but `except`. */
    rows(name: string, r0: number, r1: number, except = -1) {
      const { m, cols } = get(name);
      for (let i = r0; i < r1; i++) for (let j = 0; j < cols; j++) if (j !== except) m[i * cols + j] = 0;
    },
    /** Zeroes a random `fraction` of rows `[r0, r1)`. */
    random(name: string, fraction: number, seed: number, r0 = 0, r1?: number) {
      const { m, cols } = get(name);
      const rng = new Rng(seed);
      for (let k = r0 * cols; k < (r1 ?? m.length / cols) * cols; k++) if (rng.next() < fraction) m[k] = 0;
    },
  };
}

describe('structureFromWeightMasks', () => {
  beforeAll(testBackend);

  it('removes heads and neurons whose weights are masked whole, folding constant ones into the output bias: same logits, fewer parameters, reloads', async () => {
    const model = randomBert({ layers: 2, hidden: H, heads: 4, intermediate: I, labels: 3 }, 11);
    const masks = bindMasks(MaskSet.ones(model), model);
    const m = masker(model, masks);
    const [l0, l1] = [layerParamNames(0), layerParamNames(1)];
    // A dropped hidden dimension: weights on it do not count (5 is left unmasked in the rows/columns below).
    masks.hiddenMask[5] = 0;
    m.random(l0.query, 0.5, 1); // unstructured zeros elsewhere
    // Layer 0, FFN: neurons 1 and 5 produced by masked weights (folded; 5 with a fractional neuron mask),
    // 2 produced and read by masked weights, 3 read by masked weights (no fold).
    m.cols(l0.inter, 1, 2, 5);
    m.cols(l0.inter, 5, 6, 5);
    m.cols(l0.inter, 2, 3);
    m.rows(l0.out, 2, 4, 5);
    masks.neuronMask[0]![5] = 0.5;
    m.random(l0.out, 0.3, 2, 5, 6); // the fold must use the masked row
    // Layer 0, attention: head 1's values masked (folded, fractional head mask, masked output rows), head 2's output rows masked.
    m.cols(l0.value, 1 * d, 2 * d, 5);
    masks.headMask[0]![1] = 0.6;
    m.random(l0.attnOut, 0.3, 3, 1 * d, 2 * d);
    m.rows(l0.attnOut, 2 * d, 3 * d);
    // Layer 1: head 0's queries and head 3's keys masked (both change the softmax: kept), head 2's values masked
    // (folded); every intermediate column masked, so the whole FFN folds into its bias.
    m.cols(l1.query, 0, d);
    m.cols(l1.key, 3 * d, 4 * d);
    m.cols(l1.value, 2 * d, 3 * d);
    m.cols(l1.inter, 0, I);
    m.random(l1.out, 0.3, 4);

    const masked = logits(model, masks);
    const before = compactedParamCount(model, masks);
    const outBias = model.param(`${l1.out}.bias`).dataSync().slice();
    const tensors = tf.memory().numTensors;
    const s = structureFromWeightMasks(model, masks);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(s).toEqual({ heads: [2, 1], neurons: [4, I], foldedHeads: 2, foldedNeurons: 2 + I });
    expect([...masks.headMask[0]!]).toEqual([1, 0, 0, 1]);
    expect([...masks.headMask[1]!]).toEqual([1, 1, 0, 1]);
    expect([...masks.neuronMask[0]!].map((v, i) => (v === 0 ? i : -1)).filter((i) => i >= 0)).toEqual([1, 2, 3, 5]);
    // The bias carries the folded FFN.
    expect(maxAbsDiff(Array.from(model.param(`${l1.out}.bias`).dataSync()), Array.from(outBias))).toBeGreaterThan(1e-2);
    // The model under the new masks computes what it did.
    expect(maxAbsDiff(logits(model, masks), masked)).toBeLessThan(1e-5);

    const small = compact(model, masks);
    expect(maxAbsDiff(logits(small), masked)).toBeLessThan(1e-5);
    expect(small.config.layerHeads).toEqual([2, 3]);
    expect(small.config.layerIntermediate).toEqual([I - 4, 0]);
    const hKept = H - 1;
    const perHead = 3 * (hKept * d + d) + d * hKept; // Q, K, V columns and biases, output rows
    const perNeuron = hKept + 1 + hKept; // intermediate column and bias, output row
    expect(params(small)).toBe(before - 3 * perHead - (4 + I) * perNeuron);
    expect(compactedParamCount(model, masks)).toBe(params(small));

    const out = mkdtempSync(path.join(tmpdir(), 'topiary-structure-'));
    await saveBert(small, out);
    const reloaded = await loadBert(out);
    expect(reloaded.config.prunedHeads).toEqual({ '0': [1, 2], '1': [2] });
    expect(maxAbsDiff(logits(reloaded), masked)).toBeLessThan(1e-5);
    rmSync(out, { recursive: true, force: true });
    for (const x of [model, small, reloaded]) x.dispose();
  });

  it('leaves masks and biases alone when no head or neuron is masked whole', () => {
    const model = randomBert({ layers: 1, hidden: H, heads: 4, intermediate: I, labels: 2 }, 5);
    const masks = bindMasks(MaskSet.ones(model), model);
    const m = masker(model, masks);
    const n = layerParamNames(0);
    // Everything but one weight of each head / neuron: a single surviving weight keeps it.
    m.cols(n.value, 0, 4 * d, 3);
    m.rows(n.attnOut, 0, 4 * d, 7);
    m.cols(n.inter, 0, I, 0);
    m.rows(n.out, 0, I, 9);
    const before = masks.clone();
    const biases = [n.attnOut, n.out].map((b) => model.param(`${b}.bias`).dataSync().slice());
    expect(structureFromWeightMasks(model, masks)).toEqual({ heads: [0], neurons: [0], foldedHeads: 0, foldedNeurons: 0 });
    expect(masks.headMask).toEqual(before.headMask);
    expect(masks.neuronMask).toEqual(before.neuronMask);
    [n.attnOut, n.out].forEach((b, i) => expect(model.param(`${b}.bias`).dataSync()).toEqual(biases[i]));
    model.dispose();
  });
});
