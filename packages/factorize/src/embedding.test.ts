import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BertModel, MaskSet, WORD_EMBEDDINGS, compact, compactedParamCount, loadBert, paramCount, parseBertConfig, saveBert, sparsityOf, tf, wordEmbeddingParams, type Batch, type Tensor } from '@topiary/core';
import { randomBert } from '../../core/src/test-support/random-bert.js';
import { testBackend } from '../../core/src/test-support/backend.js';
import { svd, tallFactors } from './svd.js';
import { withFactorizedEmbeddings } from './factorize.js';
import { EMBEDDING_SVD_OPTIONS } from './options.js';

const randMatrix = (rows: number, cols: number, seed: number) => {
  let s = seed;
  return Float32Array.from({ length: rows * cols }, () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1);
};
function batch(seed: number, vocab: number, B = 3, T = 7): Batch {
  let s = seed;
  const r = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const inputIds = Int32Array.from({ length: B * T }, () => Math.floor(r() * vocab));
  const attentionMask = Int32Array.from({ length: B * T }, (_, i) => (i % T < T - (Math.floor(i / T) % 3) ? 1 : 0));
  return { inputIds, attentionMask, tokenTypeIds: new Int32Array(B * T), batchSize: B, seqLen: T };
}
const logits = (m: BertModel, b: Batch) => tf.tidy(() => m.forward(b).logits!.arraySync());
const maxDiff = (a: number[][], b: number[][]) => Math.max(...a.flatMap((row, i) => row.map((x, j) => Math.abs(x - b[i]![j]!))));

/** The model's factorized embedding made dense again (U V as the table): the independent reference. */
function denseFrom(m: BertModel): BertModel {
  const config = structuredClone(m.config);
  delete config.embeddingRank;
  const params = new Map<string, Tensor>();
  for (const [n, p] of m.params) if (!n.startsWith(`${WORD_EMBEDDINGS}.weight_`)) params.set(n, tf.clone(p));
  params.set(`${WORD_EMBEDDINGS}.weight`, m.denseWordEmbeddings());
  const d = new BertModel(config, params);
  for (const t of params.values()) t.dispose();
  return d;
}

function factorized(model: BertModel, rank: number): BertModel {
  const c = model.config;
  const f = tallFactors(model.param(`${WORD_EMBEDDINGS}.weight`).dataSync(), c.vocabSize, c.embeddingSize, rank);
  return withFactorizedEmbeddings(model, f.u, f.v, rank);
}

describe('factorized word embeddings: the SVD of a tall table', () => {
  it('reconstruction error equals the energy of the discarded singular values (of a direct SVD)', () => {
    const [R, C] = [200, 16];
    const w = randMatrix(R, C, 5);
    const direct = svd(w, R, C).s; // ml-matrix's SVD of W itself, not of the Gram matrix
    for (const r of [3, 9]) {
      const f = tallFactors(w, R, C, r);
      expect(f.u.length).toBe(R * r);
      expect(f.v.length).toBe(r * C);
      let err = 0;
      for (let i = 0; i < R; i++) {
        for (let j = 0; j < C; j++) {
          let x = 0;
          for (let k = 0; k < r; k++) x += f.u[i * r + k]! * f.v[k * C + j]!;
          err += (w[i * C + j]! - x) ** 2;
        }
      }
      const discarded = direct.slice(r).reduce((a, x) => a + x * x, 0);
      expect(Math.abs(err - discarded) / discarded).toBeLessThan(1e-4);
      f.s.forEach((x, k) => expect(Math.abs(x - direct[k]!)).toBeLessThan(1e-6 * direct[0]!));
    }
  });
});

describe('factorized word embeddings in the model (config.embeddingRank)', () => {
  beforeAll(testBackend);
  const shape = { layers: 2, hidden: 8, heads: 2, intermediate: 12, labels: 3, vocab: 40 };

  it('at full rank equals the dense model; at low rank equals the dense model of U V; gradients reach U and V; tensor count flat', () => {
    const model = randomBert(shape, 3);
    const b = batch(1, shape.vocab);
    const full = factorized(model, shape.hidden);
    expect(maxDiff(logits(full, b), logits(model, b))).toBeLessThan(1e-4);
    const low = factorized(model, 3);
    const dense = denseFrom(low);
    expect(maxDiff(logits(low, b), logits(dense, b))).toBeLessThan(1e-5);
    expect(maxDiff(logits(low, b), logits(model, b))).toBeGreaterThan(1e-4);
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const { grads } = tf.variableGrads(() => tf.sum(low.forward(b, { training: true }).logits!) as tf.Scalar, [...low.params.values()]);
      for (const s of ['u', 'v']) expect(tf.sum(tf.abs(grads[low.param(`${WORD_EMBEDDINGS}.weight_${s}`).name]!)).dataSync()[0]).toBeGreaterThan(0);
    });
    logits(low, b);
    expect(tf.memory().numTensors).toBe(before);
    expect(low.params.has(`${WORD_EMBEDDINGS}.weight`)).toBe(false);
    for (const m of [model, full, low, dense]) m.dispose();
  });

  it('counts parameters r (vocab + hidden); compaction of hidden dimensions takes columns of V and keeps the function', () => {
    const model = randomBert(shape, 4);
    const r = 3;
    const low = factorized(model, r);
    const { vocab, hidden: H } = shape;
    expect(wordEmbeddingParams(model.config)).toBe(model.param(`${WORD_EMBEDDINGS}.weight`).size);
    expect(wordEmbeddingParams(low.config)).toBe(low.param(`${WORD_EMBEDDINGS}.weight_u`).size + low.param(`${WORD_EMBEDDINGS}.weight_v`).size);
    expect(paramCount(model) - paramCount(low)).toBe(vocab * H - r * (vocab + H));
    expect(compactedParamCount(low, MaskSet.ones(low))).toBe(paramCount(low));
    expect(sparsityOf(low, MaskSet.ones(low)).totalSparsity).toBeCloseTo(0, 10);
    const masks = MaskSet.ones(low);
    masks.hiddenMask[2] = 0;
    masks.hiddenMask[5] = 0;
    const b = batch(2, vocab);
    const want = tf.tidy(() => low.forward(b, masks.toTensors()).logits!.arraySync());
    const small = compact(low, masks);
    expect(small.config.embeddingRank).toBe(r);
    expect(small.param(`${WORD_EMBEDDINGS}.weight_u`).shape).toEqual([vocab, r]);
    expect(small.param(`${WORD_EMBEDDINGS}.weight_v`).shape).toEqual([r, H - 2]);
    expect(maxDiff(logits(small, b), want)).toBeLessThan(1e-5);
    expect(compactedParamCount(low, masks)).toBe(paramCount(small));
    for (const m of [model, low, small]) m.dispose();
  });

  it('saves weight_u [vocab, E] / weight_v [E, hidden] with topiary_embedding_rank, reloads the same function, checks shapes and the config field', async () => {
    const model = randomBert(shape, 5);
    const low = factorized(model, 4);
    const dir = path.join(mkdtempSync(path.join(tmpdir(), 'topiary-embrank-')), 'model');
    await saveBert(low, dir);
    const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    expect(config.topiary_embedding_rank).toBe(4);
    const buf = readFileSync(path.join(dir, 'model.safetensors'));
    const header = JSON.parse(buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString('utf8'));
    expect(header[`${WORD_EMBEDDINGS}.weight_u`].shape).toEqual([shape.vocab, 4]);
    expect(header[`${WORD_EMBEDDINGS}.weight_v`].shape).toEqual([4, shape.hidden]);
    expect(header[`${WORD_EMBEDDINGS}.weight`]).toBeUndefined();
    const back = await loadBert(dir);
    const b = batch(3, shape.vocab);
    expect(maxDiff(logits(back, b), logits(low, b))).toBe(0);
    // A V of the wrong width, a table next to the factors, a bad rank in config.json: errors naming them.
    const params = new Map<string, Tensor>([...low.params].map(([n, p]) => [n, p]));
    const badV = tf.zeros([4, shape.hidden + 1]);
    params.set(`${WORD_EMBEDDINGS}.weight_v`, badV);
    expect(() => new BertModel(low.config, params)).toThrow(/word_embeddings\.weight_v/);
    params.set(`${WORD_EMBEDDINGS}.weight_v`, low.param(`${WORD_EMBEDDINGS}.weight_v`));
    params.set(`${WORD_EMBEDDINGS}.weight`, model.param(`${WORD_EMBEDDINGS}.weight`));
    expect(() => new BertModel(low.config, params)).toThrow(/topiary_embedding_rank/);
    badV.dispose();
    expect(() => parseBertConfig({ ...config, topiary_embedding_rank: 0 }, 'x/config.json')).toThrow(/x\/config\.json: field 'topiary_embedding_rank'/);
    for (const m of [model, low, back]) m.dispose();
  });

  it('declares its options: rank required, unknown option named', () => {
    expect(EMBEDDING_SVD_OPTIONS.safeParse({ rank: 64 }).success).toBe(true);
    expect(EMBEDDING_SVD_OPTIONS.safeParse({}).success).toBe(false);
    const bad = EMBEDDING_SVD_OPTIONS.safeParse({ rank: 64, rnak: 3 });
    expect(bad.success).toBe(false);
    expect(JSON.stringify(bad.error?.issues)).toContain('rnak');
  });
});
