import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BertModel, MaskSet, compact, compactedParamCount, encoderFlops, layerParamNames, loadBert, saveBert, tf, type Batch, type Tensor } from '@topiary/core';
import { randomBert } from '../../core/src/test-support/random-bert.js';
import { testBackend } from '../../core/src/test-support/backend.js';
import { allocateRanks, lowRankFactors, svd } from './svd.js';
import { withLowRank } from './factorize.js';

function batch(seed: number, B = 3, T = 7, vocab = 32, labels = 3): Batch {
  let s = seed;
  const r = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const inputIds = Int32Array.from({ length: B * T }, () => Math.floor(r() * vocab));
  const attentionMask = Int32Array.from({ length: B * T }, (_, i) => (i % T < T - (Math.floor(i / T) % 3) ? 1 : 0));
  return { inputIds, attentionMask, tokenTypeIds: new Int32Array(B * T), batchSize: B, seqLen: T, labels: Int32Array.from({ length: B }, () => Math.floor(r() * labels)) };
}
const randMatrix = (rows: number, cols: number, seed: number) => {
  let s = seed;
  return Float32Array.from({ length: rows * cols }, () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1);
};
/** sum_j c_j sum_i (A - B)_ij^2 over a row-major [rows, cols] pair, computed directly. */
const weightedErr = (a: ArrayLike<number>, b: ArrayLike<number>, rows: number, cols: number, colWeight?: ArrayLike<number>) => {
  let e = 0;
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) e += (colWeight?.[j] ?? 1) * (a[i * cols + j]! - b[i * cols + j]!) ** 2;
  return e;
};
const product = (v: Float32Array, u: Float32Array, rows: number, r: number, cols: number) => {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let k = 0; k < r; k++) for (let j = 0; j < cols; j++) out[i * cols + j] += v[i * r + k]! * u[k * cols + j]!;
  return out;
};
const logits = (m: BertModel, b: Batch) => tf.tidy(() => m.forward(b).logits!.arraySync());
const maxDiff = (a: number[][], b: number[][]) => Math.max(...a.flatMap((row, i) => row.map((x, j) => Math.abs(x - b[i]![j]!))));

/** A dense model whose weights are the factors' products (the independent reference). */
function denseFrom(m: BertModel): BertModel {
  const config = structuredClone(m.config);
  delete config.lowRank;
  const params = new Map<string, Tensor>();
  for (const [n, p] of m.params) if (!n.endsWith('.weight_u') && !n.endsWith('.weight_v')) params.set(n, tf.clone(p));
  for (const name of Object.keys(m.config.lowRank ?? {})) params.set(`${name}.weight`, m.denseWeight(name));
  const d = new BertModel(config, params);
  for (const t of params.values()) t.dispose();
  return d;
}

function factorizeAll(model: BertModel, rank: number, parts: ('inter' | 'out' | 'query' | 'attnOut')[]) {
  const factors = new Map<string, { v: Float32Array; u: Float32Array; rank: number }>();
  for (let l = 0; l < model.config.numHiddenLayers; l++) {
    for (const part of parts) {
      const name = layerParamNames(l)[part];
      const w = model.param(`${name}.weight`);
      const [i, o] = w.shape as [number, number];
      const f = lowRankFactors(w.dataSync(), i, o, rank);
      factors.set(name, { v: f.v, u: f.u, rank });
    }
  }
  return withLowRank(model, factors);
}

describe('truncated SVD and FWSVD (independent computations)', () => {
  it('the Frobenius reconstruction error equals the energy of the discarded singular values', () => {
    const [R, C, r] = [12, 9, 4];
    const w = randMatrix(R, C, 7);
    const f = lowRankFactors(w, R, C, r);
    const err = weightedErr(w, product(f.v, f.u, R, r, C), R, C);
    const discarded = f.s.slice(r).reduce((a, x) => a + x * x, 0);
    expect(Math.abs(err - discarded) / discarded).toBeLessThan(1e-4);
    // Also for a wide matrix (ml-matrix transposes it internally).
    const g = lowRankFactors(randMatrix(C, R, 3), C, R, r);
    expect(Math.abs(weightedErr(randMatrix(C, R, 3), product(g.v, g.u, C, r, R), C, R) - g.s.slice(r).reduce((a, x) => a + x * x, 0))).toBeLessThan(1e-3);
  });

  it('FWSVD minimises the Fisher-weighted error: lower than plain SVD, equal to the weighted spectrum tail', () => {
    const [R, C, r] = [10, 8, 3];
    const w = randMatrix(R, C, 11);
    const fisher = Float32Array.from({ length: C }, (_, j) => (j % 3 === 0 ? 50 : 0.1 + j / 10)); // per output unit
    const fw = lowRankFactors(w, R, C, r, fisher);
    const plain = lowRankFactors(w, R, C, r);
    const eFw = weightedErr(w, product(fw.v, fw.u, R, r, C), R, C, fisher);
    const ePlain = weightedErr(w, product(plain.v, plain.u, R, r, C), R, C, fisher);
    expect(eFw).toBeLessThan(ePlain);
    // Closed form for diagonal weights: the optimum is the tail energy of W diag(sqrt I).
    const scaled = Float64Array.from(w, (x, k) => x * Math.sqrt(fisher[k % C]!));
    const tail = svd(scaled, R, C).s.slice(r).reduce((a, x) => a + x * x, 0);
    expect(Math.abs(eFw - tail) / tail).toBeLessThan(1e-4);
    // Uniform weights change nothing.
    const uni = lowRankFactors(w, R, C, r, new Float32Array(C).fill(4));
    expect(weightedErr(product(uni.v, uni.u, R, r, C), product(plain.v, plain.u, R, r, C), R, C)).toBeLessThan(1e-8);
  });

  it('rank allocation stays within the budget and spends it', () => {
    const layers = [0, 1, 2].map((k) => {
      const [i, o] = [16, 8 + 4 * k];
      return { name: `l${k}`, s: svd(randMatrix(i, o, 5 + k), i, o).s, inDim: i, outDim: o };
    });
    const dense = layers.reduce((a, l) => a + l.inDim * l.outDim, 0);
    for (const ratio of [0.25, 0.5]) {
      const budget = Math.floor(ratio * dense);
      const ranks = allocateRanks(layers, budget);
      const used = layers.reduce((a, l) => a + ranks[l.name]! * (l.inDim + l.outDim), 0);
      expect(used).toBeLessThanOrEqual(budget);
      // No layer could take one more direction within the budget unless it is at its useful maximum.
      const minCost = Math.min(...layers.map((l) => l.inDim + l.outDim));
      expect(budget - used < minCost || layers.every((l) => ranks[l.name]! >= Math.floor((l.inDim * l.outDim - 1) / (l.inDim + l.outDim)))).toBe(true);
    }
    expect(() => allocateRanks(layers, 10)).toThrow(/paramRatio/);
  });
});

describe('low-rank linear layers in the model', () => {
  beforeAll(testBackend);
  const shape = { layers: 2, hidden: 8, heads: 2, intermediate: 12, labels: 3 };

  it('logits equal a dense model built from the factors; gradients reach both factors; tensor count flat', () => {
    const model = randomBert(shape, 3);
    const low = factorizeAll(model, 3, ['inter', 'out', 'query', 'attnOut']);
    const dense = denseFrom(low);
    const b = batch(1);
    expect(maxDiff(logits(low, b), logits(dense, b))).toBeLessThan(1e-5);
    const before = tf.memory().numTensors;
    const names = [...low.params.keys()];
    tf.tidy(() => {
      const { grads } = tf.variableGrads(() => tf.sum(low.forward(b, { training: true }).logits!) as tf.Scalar, [...low.params.values()]);
      const gu = grads[low.param(`${layerParamNames(0).inter}.weight_u`).name]!;
      const gv = grads[low.param(`${layerParamNames(0).inter}.weight_v`).name]!;
      expect(tf.sum(tf.abs(gu)).dataSync()[0]).toBeGreaterThan(0);
      expect(tf.sum(tf.abs(gv)).dataSync()[0]).toBeGreaterThan(0);
    });
    logits(low, b);
    expect(tf.memory().numTensors).toBe(before);
    expect(names).toContain(`${layerParamNames(1).out}.weight_u`);
    expect(names).not.toContain(`${layerParamNames(1).out}.weight`);
    for (const m of [model, low, dense]) m.dispose();
  });

  it('counts parameters and FLOPs of the factors, refuses weight masks, compacts neuron masks into the factors', () => {
    const model = randomBert(shape, 4);
    const low = factorizeAll(model, 2, ['inter', 'out']);
    const count = (m: BertModel) => [...m.params.values()].reduce((a, v) => a + v.size, 0);
    const ones = MaskSet.ones(low);
    expect(compactedParamCount(low, ones)).toBe(count(low));
    const H = shape.hidden;
    const I = shape.intermediate;
    expect(count(model) - count(low)).toBe(shape.layers * 2 * (H * I - 2 * (H + I)));
    expect(encoderFlops(model.config, 10) - encoderFlops(low.config, 10)).toBe(2 * 10 * shape.layers * 2 * (H * I - 2 * (H + I)));
    const inter = layerParamNames(0).inter;
    const b = batch(2);
    expect(() => low.forward(b, { weightMasks: { [`${inter}.weight`]: tf.ones([H, I]) } })).toThrow(/low-rank/);
    // A neuron mask applies to the factorized FFN's activations; compaction drops its columns of weight_u and rows of weight_v.
    const masks = MaskSet.ones(low);
    masks.neuronMask[0]![1] = 0;
    masks.neuronMask[0]![5] = 0;
    const want = tf.tidy(() => low.forward(b, masks.toTensors()).logits!.arraySync());
    const small = compact(low, masks);
    expect(small.config.lowRank).toEqual(low.config.lowRank);
    expect(small.param(`${inter}.weight_u`).shape).toEqual([2, I - 2]);
    expect(maxDiff(logits(small, b), want)).toBeLessThan(1e-5);
    expect(compactedParamCount(low, masks)).toBe(count(small));
    for (const m of [model, low, small]) m.dispose();
  });

  it('saves weight_u [out, r] / weight_v [r, in] with topiary_low_rank and reloads the same function', async () => {
    const model = randomBert(shape, 5);
    const low = factorizeAll(model, 3, ['inter', 'out']);
    const dir = path.join(mkdtempSync(path.join(tmpdir(), 'topiary-lowrank-')), 'model');
    await saveBert(low, dir);
    const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    expect(config.topiary_low_rank).toEqual(low.config.lowRank);
    const header = (() => {
      const buf = readFileSync(path.join(dir, 'model.safetensors'));
      const n = Number(buf.readBigUInt64LE(0));
      return JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
    })();
    const inter = layerParamNames(0).inter;
    expect(header[`${inter}.weight_u`].shape).toEqual([shape.intermediate, 3]);
    expect(header[`${inter}.weight_v`].shape).toEqual([3, shape.hidden]);
    expect(header[`${inter}.weight`]).toBeUndefined();
    const back = await loadBert(dir);
    const b = batch(3);
    expect(maxDiff(logits(back, b), logits(low, b))).toBe(0);
    for (const m of [model, low, back]) m.dispose();
  });
});
