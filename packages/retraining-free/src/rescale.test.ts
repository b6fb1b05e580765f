import { beforeAll, describe, expect, it } from 'vitest';
import { layerParamNames, tf, type Batch, type BertModel } from '@topiary/core';
import { testBackend } from '../../core/src/test-support/backend.js';
import { randomBert } from '../../core/src/test-support/random-bert.js';
import { maxAbsDiff } from '../../core/src/test-support/shared.js';
import { additiveMask, embeddings, runLayer, tokenRows } from './layer.js';
import { dampedScaleSolve } from './linalg.js';
import { rescaleMasks } from './rescale.js';

beforeAll(testBackend);

const H = 8;
const d = 4;
const I = 6;
const batches: Batch[] = [3, 2].map((B, k) => {
  const T = 5 + k;
  return {
    batchSize: B,
    seqLen: T,
    inputIds: Int32Array.from({ length: B * T }, (_, i) => (i * 7 + 3 * k) % 32),
    attentionMask: Int32Array.from({ length: B * T }, (_, i) => (i % T < T - (Math.floor(i / T) % 3) ? 1 : 0)),
    tokenTypeIds: new Int32Array(B * T),
  };
});
const ones = (n: number) => [new Float32Array(n).fill(1), new Float32Array(n).fill(1)];
const studentHeads = () => [Float32Array.from([1, 1]), Float32Array.from([1, 1])];
const studentNeurons = () => [Float32Array.from([1, 0, 1, 1, 0, 1]), Float32Array.from([0, 1, 1, 1, 1, 0])];
const arr = (t: tf.Tensor) => Array.from(t.dataSync());

/** Layer `l`'s input for every batch under masks, from `BertModel.forward` (independent of `runLayer`). */
function inputs(model: BertModel, l: number, headMask: Float32Array[], neuronMask: Float32Array[]): number[][] {
  return batches.map((b) => tf.tidy(() => arr(model.forward(b, { masks: { headMask: headMask.map((m) => tf.tensor1d(m)), neuronMask: neuronMask.map((m) => tf.tensor1d(m)) }, outputHiddenStates: true }).hiddenStates![l]!)));
}

describe('mask tuning by least squares', () => {
  it("runLayer reproduces BertModel.forward's layer outputs under fractional masks", () => {
    const model = randomBert({ layers: 2, hidden: H, heads: 2, intermediate: I, labels: 3 }, 5);
    const hm = [Float32Array.from([0.5, 1.5]), Float32Array.from([0, 2])];
    const nm = [Float32Array.from([1, 0, 0.3, 2, 1, 1]), Float32Array.from([0.2, 1, 1, 0, 1, 3])];
    for (const b of batches) {
      tf.tidy(() => {
        const want = model.forward(b, { masks: { headMask: hm.map((m) => tf.tensor1d(m)), neuronMask: nm.map((m) => tf.tensor1d(m)) }, outputHiddenStates: true }).hiddenStates!;
        let x = embeddings(model, b);
        expect(maxAbsDiff(x.arraySync(), want[0]!.arraySync())).toBeLessThan(1e-5);
        for (let l = 0; l < 2; l++) {
          x = runLayer(model, l, x, additiveMask(b), hm[l], nm[l]).out;
          expect(maxAbsDiff(x.arraySync(), want[l + 1]!.arraySync())).toBeLessThan(1e-4);
        }
      });
    }
    model.dispose();
  });

  it('solves the layer-0 FFN and layer-1 attention systems built explicitly, row by row', () => {
    const model = randomBert({ layers: 2, hidden: H, heads: 2, intermediate: I, labels: 3 }, 9, 0.6, 0.3);
    const before = tf.memory().numTensors;
    const res = rescaleMasks({ model, teacherHeadMask: ones(2), teacherNeuronMask: ones(I), headMask: studentHeads(), neuronMask: studentNeurons(), batches, maxScale: 1e9 });
    expect(tf.memory().numTensors).toBe(before);
    expect(res.blocks.map((b) => `${b.layer}:${b.block}:${b.status}`)).toEqual(['0:attention:not-tuned', '0:ffn:scaled', '1:attention:scaled', '1:ffn:scaled']);
    const p = (n: string) => arr(model.param(n));

    // Layer 0 FFN: rows (token, hidden j), columns kept neurons n: act[t, n] * W2[n, j]; target teacher - b2 - residual.
    const n0 = layerParamNames(0);
    const kept = [0, 2, 3, 5];
    const w2 = p(`${n0.out}.weight`);
    const b2 = p(`${n0.out}.bias`);
    const ata = new Float64Array(16);
    const atb = new Float64Array(4);
    batches.forEach((b) => {
      tf.tidy(() => {
        const x = embeddings(model, b);
        const t = runLayer(model, 0, x, additiveMask(b), ones(2)[0], ones(I)[0]);
        const s = runLayer(model, 0, x, additiveMask(b), studentHeads()[0], studentNeurons()[0]);
        const [tp, act, mid] = [arr(t.ffnPre), arr(s.act), arr(s.mid)];
        for (const r of tokenRows(b)) {
          for (let j = 0; j < H; j++) {
            const row = kept.map((n) => act[r * I + n]! * w2[n * H + j]!);
            const target = tp[r * H + j]! - b2[j]! - mid[r * H + j]!;
            row.forEach((a, u) => {
              atb[u]! += a * target;
              row.forEach((c, v) => (ata[u * 4 + v]! += a * c));
            });
          }
        }
      });
    });
    const want0 = dampedScaleSolve(ata, atb, 4).x!;
    kept.forEach((n, u) => expect(res.neuronMask[0]![n]).toBeCloseTo(want0[u]!, 3));
    expect(res.neuronMask[0]![1]).toBe(0);

    // Layer 1 attention, on the student's own layer-1 input (layer 0 tuned) and the teacher's.
    const n1 = layerParamNames(1);
    const tuned0 = [res.neuronMask[0]!, studentNeurons()[1]!];
    const xs = inputs(model, 1, studentHeads(), tuned0);
    const xt = inputs(model, 1, ones(2), ones(I));
    const wo = p(`${n1.attnOut}.weight`);
    const bo = p(`${n1.attnOut}.bias`);
    const A2 = new Float64Array(9);
    const B2 = new Float64Array(3);
    batches.forEach((b, k) => {
      tf.tidy(() => {
        const shape = [b.batchSize, b.seqLen, H];
        const t = runLayer(model, 1, tf.tensor(xt[k]!, shape), additiveMask(b), ones(2)[1], ones(I)[1]);
        const s = runLayer(model, 1, tf.tensor(xs[k]!, shape), additiveMask(b), studentHeads()[1], tuned0[1]);
        const [tp, ctx] = [arr(t.attnPre), arr(s.context)];
        for (const r of tokenRows(b)) {
          for (let j = 0; j < H; j++) {
            const row = [0, 1].map((h) => Array.from({ length: d }, (_, e) => ctx[r * 2 * d + h * d + e]! * wo[(h * d + e) * H + j]!).reduce((a, v) => a + v, 0));
            row.push(1);
            const target = tp[r * H + j]! - bo[j]! - xs[k]![r * H + j]!;
            row.forEach((a, u) => {
              B2[u]! += a * target;
              row.forEach((c, v) => (A2[u * 3 + v]! += a * c));
            });
          }
        }
      });
    });
    const want1 = dampedScaleSolve(A2, B2, 3).x!;
    [0, 1].forEach((h) => expect(res.headMask[1]![h]).toBeCloseTo(want1[h]!, 3));
    model.dispose();
  });

  it('falls back to the binary mask when a scale leaves the range: stops (reference) or skips the block', () => {
    const model = randomBert({ layers: 2, hidden: H, heads: 2, intermediate: I, labels: 3 }, 9, 0.6, 0.3);
    const base = { model, teacherHeadMask: ones(2), teacherNeuronMask: ones(I), batches, maxScale: 1e-6 };
    const stop = rescaleMasks({ ...base, headMask: studentHeads(), neuronMask: studentNeurons() });
    expect(stop.blocks.map((b) => b.status)).toEqual(['not-tuned', 'out-of-range', 'not-tuned', 'not-tuned']);
    expect(stop.neuronMask.map((m) => Array.from(m))).toEqual(studentNeurons().map((m) => Array.from(m)));
    expect(stop.headMask.map((m) => Array.from(m))).toEqual(studentHeads().map((m) => Array.from(m)));
    const skip = rescaleMasks({ ...base, headMask: studentHeads(), neuronMask: studentNeurons(), onFailure: 'skip' });
    expect(skip.blocks.map((b) => b.status)).toEqual(['not-tuned', 'out-of-range', 'out-of-range', 'out-of-range']);
    model.dispose();
  });
});
