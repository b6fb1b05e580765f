import { beforeAll, describe, expect, it } from 'vitest';
import { crossEntropy, loadBert, tf, type Batch } from '@topiary/core';
import { golden, goldenBatch, modelDir } from '../../core/src/test-support/shared.js';
import { testBackend } from '../../core/src/test-support/backend.js';
import { randomBert } from '../../core/src/test-support/random-bert.js';
import { collectMaskGrads, fisherInformation } from './fisher.js';

beforeAll(testBackend);

/** The golden's single texts with their labels. */
const singleBatch = (g: any): Batch => goldenBatch(g.single, g.labels);

function randomBatch(seed: number, B: number, T: number, vocab: number, labels: number): Batch {
  let s = seed;
  const r = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const attentionMask = Int32Array.from({ length: B * T }, (_, i) => (i % T < T - (Math.floor(i / T) % 2) ? 1 : 0));
  return {
    batchSize: B,
    seqLen: T,
    inputIds: Int32Array.from({ length: B * T }, () => Math.floor(r() * vocab)),
    attentionMask,
    tokenTypeIds: new Int32Array(B * T),
    labels: Int32Array.from({ length: B }, () => Math.floor(r() * labels)),
  };
}

describe('Fisher information of head and neuron masks', () => {
  it('is the square of the goldens\' |dL/dm| on one batch (bert-tiny, 1e-4 relative)', async () => {
    const g = golden('bert-tiny-golden.json');
    const model = await loadBert(modelDir('bert-tiny-wordnet-supersense'));
    const grads = collectMaskGrads(model, [singleBatch(g)]);
    const check = (got: Float64Array, want: number[]) => {
      const sq = want.map((w) => w * w);
      const scale = Math.max(...sq);
      expect(Math.max(...sq.map((w, i) => Math.abs(got[i]! - w))) / scale).toBeLessThan(2e-4);
    };
    g.first_order.head_importance.forEach((row: number[], l: number) => check(fisherInformation(grads.heads[l]!, 1), row));
    g.first_order.neuron_importance.forEach((row: number[], l: number) => check(fisherInformation(grads.neurons[l]!, 1), row));
    model.dispose();
  });

  it('sums squared per-batch gradients, against mask variables differentiated batch by batch', () => {
    const model = randomBert({ layers: 2, hidden: 8, heads: 2, intermediate: 6, labels: 3 }, 3);
    const batches = [randomBatch(1, 3, 5, 32, 3), randomBatch(2, 2, 4, 32, 3), randomBatch(3, 4, 6, 32, 3)];
    const before = tf.memory().numTensors;
    const grads = collectMaskGrads(model, batches);
    expect(tf.memory().numTensors).toBe(before);
    expect(grads.batches).toBe(3);
    // Explicit loop: one set of mask variables, gradients by tf.variableGrads, squares summed here.
    const hv = [0, 1].map((l) => tf.variable(tf.ones([2]), true, `rf-h${l}`));
    const nv = [0, 1].map((l) => tf.variable(tf.ones([6]), true, `rf-n${l}`));
    const want = { heads: [new Float64Array(2), new Float64Array(2)], neurons: [new Float64Array(6), new Float64Array(6)] };
    for (const b of batches) {
      tf.tidy(() => {
        const { grads: g } = tf.variableGrads(() => crossEntropy(model.forward(b, { masks: { headMask: hv, neuronMask: nv } }).logits!, tf.tensor1d(b.labels!, 'int32')), [...hv, ...nv]);
        hv.forEach((v, l) => (g[v.name]!.dataSync() as Float32Array).forEach((x, i) => (want.heads[l]![i]! += x * x)));
        nv.forEach((v, l) => (g[v.name]!.dataSync() as Float32Array).forEach((x, i) => (want.neurons[l]![i]! += x * x)));
      });
    }
    tf.dispose([...hv, ...nv]);
    for (const l of [0, 1]) {
      const fh = fisherInformation(grads.heads[l]!, 3);
      const fn = fisherInformation(grads.neurons[l]!, 3);
      want.heads[l]!.forEach((w, i) => expect(fh[i]).toBeCloseTo(w, 5));
      want.neurons[l]!.forEach((w, i) => expect(fn[i]).toBeCloseTo(w, 5));
    }
    model.dispose();
  });
});
