import { tf, type Tensor } from '../tf.js';
import { BertModel, EMBEDDINGS_PROJECT, clsOf, layerParamNames, lowRankOf, type Batch } from './bert.js';
import type { BertConfig } from './config.js';
import { addLayerNorm, attention, gelu, geluNew, linear } from './ops.js';

/**
 * Where a model's parameters, FLOPs and forward time go, module by module (the seeds' lecture profiles
 * BERT this way), and the latency table the latency-constrained retraining-free search reads (Kwon et
 * al. 2022 measure one layer's attention block with 1..A heads and FFN block with 1..I neurons, then
 * fit a piecewise-linear function of the units kept).
 *
 * FLOPs count 2 per multiply-add of the matrix products, as `encoderFlops` does (embeddings' gathers,
 * LayerNorm, softmax and activations are left out); times are wall-clock milliseconds of the module
 * alone on inputs of the profiled shape, the median of `repeats` after `warmup` runs. The wasm and cpu
 * backends run each kernel synchronously inside the call, so the wall time of the call is its time.
 */

export interface ModuleProfile {
  /** `embeddings`, `layer.3.attention.query`, ..., `pooler`, `classifier`. */
  name: string;
  /** `embeddings`, `attention`, `ffn`, `head` (pooler and classifier). */
  group: 'embeddings' | 'attention' | 'ffn' | 'head';
  layer?: number;
  params: number;
  flops: number;
  /** Median forward milliseconds, warm. */
  ms: number;
}

export interface ModelProfile {
  batch: number;
  seq: number;
  backend: string;
  modules: ModuleProfile[];
  /** Totals over the modules. */
  params: number;
  flops: number;
  moduleMs: number;
  /** Median milliseconds of the whole `forward` (what the modules' sum approximates). */
  forwardMs: number;
  /** tfjs's peak bytes allocated during one forward pass (weights not counted). */
  peakBytes: number;
}

export interface ProfileOptions {
  batch?: number;
  seq?: number;
  repeats?: number;
  warmup?: number;
}

/** Median wall milliseconds of `f` (its result disposed each time). */
export function timeMs(f: () => Tensor | Tensor[], repeats: number, warmup: number): number {
  const run = () => {
    const t0 = performance.now();
    const out = tf.tidy(f);
    // Asynchronous backends (webgl, node GPU) finish only when read; wasm and cpu are done already.
    const outs = Array.isArray(out) ? out : [out];
    if (!['wasm', 'cpu'].includes(tf.getBackend())) for (const o of outs) o.dataSync();
    const ms = performance.now() - t0;
    for (const o of outs) o.dispose();
    return ms;
  };
  for (let i = 0; i < warmup; i++) run();
  const times = Array.from({ length: Math.max(1, repeats) }, run).sort((a, b) => a - b);
  const m = times.length >> 1;
  return times.length % 2 ? times[m]! : (times[m - 1]! + times[m]!) / 2;
}

/** A batch of `batch` sequences of `seq` tokens (ids spread over the vocabulary, all attended, one token type). */
export function syntheticBatch(config: BertConfig, batch: number, seq: number): Batch {
  const n = batch * seq;
  const inputIds = new Int32Array(n);
  // Deterministic ids, away from the special tokens at the start of BERT vocabularies when it is large.
  const lo = config.vocabSize > 2000 ? 1000 : 0;
  for (let i = 0; i < n; i++) inputIds[i] = lo + ((i * 7919) % (config.vocabSize - lo));
  return { inputIds, attentionMask: new Int32Array(n).fill(1), tokenTypeIds: new Int32Array(n), batchSize: batch, seqLen: seq };
}

const size = (m: BertModel, name: string) => m.params.get(name)?.size ?? 0;

/** Parameters of linear module `name` (its weight or low-rank factors, and its bias). */
function linearParams(m: BertModel, name: string): number {
  return size(m, `${name}.weight`) + size(m, `${name}.weight_u`) + size(m, `${name}.weight_v`) + size(m, `${name}.bias`);
}

/** FLOPs of linear module `name` on `rows` input rows. */
function linearFlops(c: BertConfig, name: string, rows: number, inDim: number, outDim: number): number {
  const r = lowRankOf(c, name);
  return 2 * rows * (r === undefined ? inDim * outDim : r * (inDim + outDim));
}

/**
 * Profiles `model` module by module on a synthetic batch of `batch` x `seq` tokens: parameters, FLOPs
 * and warm median time of the embeddings, each layer's Q, K and V projections, attention core (the two
 * products and the softmax), output projection, attention LayerNorm (with the residual), FFN up (with
 * its activation), FFN down and output LayerNorm, then the pooler and classifier. Each module runs on
 * the input the real forward pass gives it.
 */
export async function profileModel(model: BertModel, opts: ProfileOptions = {}): Promise<ModelProfile> {
  const c = model.config;
  const B = opts.batch ?? 32;
  const T = opts.seq ?? 128;
  const repeats = opts.repeats ?? 20;
  const warmup = opts.warmup ?? 3;
  if (T > c.maxPositionEmbeddings) throw new Error(`profile: sequence length ${T} exceeds max_position_embeddings ${c.maxPositionEmbeddings}`);
  const H = c.hiddenSize;
  const E = c.embeddingSize;
  const d = c.attentionHeadSize;
  const p = (n: string) => model.param(n);
  const batch = syntheticBatch(c, B, T);
  const modules: ModuleProfile[] = [];
  const add = (m: ModuleProfile) => modules.push(m);
  const lin = (x: Tensor, name: string): Tensor =>
    lowRankOf(c, name) === undefined ? linear(x, p(`${name}.weight`), p(`${name}.bias`), name) : linear(linear(x, p(`${name}.weight_v`), undefined), p(`${name}.weight_u`), p(`${name}.bias`), name);
  const act = c.arch.hiddenAct === 'gelu_new' ? geluNew : gelu;

  // The embeddings' time: a forward of the same model without layers or head (the variables are shared, not copied).
  const embParams = [...model.params.keys()].filter((n) => n.startsWith('bert.embeddings.') || n.startsWith(`${EMBEDDINGS_PROJECT}.`));
  const bare = new BertModel({ ...c, numHiddenLayers: 0, layerHeads: [], layerIntermediate: [], lowRank: {} }, new Map(embParams.map((n) => [n, p(n)])));
  add({
    name: 'embeddings',
    group: 'embeddings',
    params: embParams.reduce((a, n) => a + size(model, n), 0),
    flops: c.arch.embeddingProjection ? linearFlops(c, EMBEDDINGS_PROJECT, B * T, E, H) : 0,
    ms: timeMs(() => bare.forward(batch).sequenceOutput, repeats, warmup),
  });

  const forwardMs = timeMs(() => {
    const out = model.forward(batch);
    return [out.sequenceOutput, ...(out.pooled ? [out.pooled] : []), ...(out.logits ? [out.logits] : [])];
  }, Math.max(3, repeats >> 2), 1);
  // tf.profile's peak is of the whole engine; the weights are already allocated, so subtract them.
  const before = tf.memory().numBytes;
  const prof = await tf.profile(() => tf.tidy(() => void model.forward(batch)));

  const states = tf.tidy(() => model.forward(batch, { outputHiddenStates: true }).hiddenStates!);
  const extMask = tf.zeros([B, T]);
  // Each layer in a tidy: what its modules' inputs allocate (low-rank intermediates too) goes with it.
  for (let l = 0; l < c.numHiddenLayers; l++) tf.tidy(() => {
    const n = layerParamNames(l);
    const x = states[l]!;
    const A = c.layerHeads[l]! * d;
    const I = c.layerIntermediate[l]!;
    const heads = c.layerHeads[l]!;
    const rows = B * T;
    const at = (what: string, params: number, flops: number, f: () => Tensor) =>
      add({ name: `layer.${l}.${what}`, group: what.startsWith('attention') ? 'attention' : 'ffn', layer: l, params, flops, ms: timeMs(f, repeats, warmup) });
    const biasOf = (name: string) => () => p(`${name}.bias`).reshape([1, 1, H]);
    const none = () => tf.zeros([1]);
    // Inputs of the later modules, computed once. A block without units keeps its output bias only.
    const [q, k, v] = A > 0 ? [lin(x, n.query), lin(x, n.key), lin(x, n.value)] : [];
    for (const [what, name] of [['query', n.query], ['key', n.key], ['value', n.value]] as const) {
      at(`attention.${what}`, linearParams(model, name), A > 0 ? linearFlops(c, name, rows, H, A) : 0, A > 0 ? () => lin(x, name) : none);
    }
    const core = () => attention(q!, k!, v!, heads, extMask);
    const context = A > 0 ? core() : undefined;
    at('attention.core', 0, 2 * 2 * B * T * T * A, A > 0 ? core : none);
    const attnOutF = A > 0 ? () => lin(context!, n.attnOut) : biasOf(n.attnOut);
    const attnOut = attnOutF();
    at('attention.output', linearParams(model, n.attnOut), A > 0 ? linearFlops(c, n.attnOut, rows, A, H) : 0, attnOutF);
    const lnParams = (name: string) => size(model, `${name}.weight`) + size(model, `${name}.bias`);
    const attnLnF = () => addLayerNorm(attnOut, x, p(`${n.attnLn}.weight`), p(`${n.attnLn}.bias`), c.layerNormEps);
    at('attention.LayerNorm', lnParams(n.attnLn), 0, attnLnF);
    const mid = attnLnF();
    const upF = () => tf.tidy(() => act(lin(mid, n.inter)));
    const up = I > 0 ? upF() : undefined;
    at('ffn.intermediate', linearParams(model, n.inter), I > 0 ? linearFlops(c, n.inter, rows, H, I) : 0, I > 0 ? upF : none);
    const downF = I > 0 ? () => lin(up!, n.out) : biasOf(n.out);
    const down = downF();
    at('ffn.output', linearParams(model, n.out), I > 0 ? linearFlops(c, n.out, rows, I, H) : 0, downF);
    at('ffn.LayerNorm', lnParams(n.outLn), 0, () => addLayerNorm(down, mid, p(`${n.outLn}.weight`), p(`${n.outLn}.bias`), c.layerNormEps));
  });

  if (model.hasPooler) {
    const last = states[c.numHiddenLayers]! as tf.Tensor3D;
    const pool = () => tf.tanh(linear(clsOf(last), p('bert.pooler.dense.weight'), p('bert.pooler.dense.bias')));
    add({ name: 'pooler', group: 'head', params: linearParams(model, 'bert.pooler.dense'), flops: 2 * B * H * H, ms: timeMs(pool, repeats, warmup) });
    if (model.hasClassifier) {
      const pooled = tf.tidy(pool);
      add({ name: 'classifier', group: 'head', params: linearParams(model, 'classifier'), flops: 2 * B * H * model.numLabels, ms: timeMs(() => linear(pooled, p('classifier.weight'), p('classifier.bias')), repeats, warmup) });
      pooled.dispose();
    }
  }
  for (const t of states) t.dispose();
  extMask.dispose();
  // `bare` shares the model's variables: drop its references without disposing them.
  bare.params.clear();
  const sum = (k: 'params' | 'flops' | 'ms') => modules.reduce((a, m) => a + m[k], 0);
  return { batch: B, seq: T, backend: tf.getBackend(), modules, params: sum('params'), flops: sum('flops'), moduleMs: sum('ms'), forwardMs, peakBytes: Math.max(0, prof.peakBytes - before) };
}

// ---------------------------------------------------------------------------------------------------
// Latency table

/** The reference's piecewise-linear latency: `c` up to `threshold` units, then `c + slope (n - threshold)`; `zero` at 0 units. */
export interface PiecewiseLatency {
  threshold: number;
  c: number;
  slope: number;
  /** Milliseconds of the block with no units (its output bias and LayerNorm remain). */
  zero: number;
}

export interface LatencyCurve {
  /** Units kept (heads or neurons) at each measured point, ascending; 0 first. */
  units: number[];
  /** Median milliseconds of one block at each point. */
  ms: number[];
  fit: PiecewiseLatency;
}

/** What `topiary profile --lut` writes and the latency-constrained search reads. */
export interface LatencyTable {
  format: 'topiary-latency-lut';
  version: 1;
  backend: string;
  threads?: number;
  batch: number;
  seq: number;
  hiddenSize: number;
  attentionHeadSize: number;
  /** Units of the dense layer: heads and FFN neurons. */
  heads: number;
  intermediate: number;
  hiddenAct: string;
  /** One layer's attention block (Q, K, V, attention, output projection, residual LayerNorm) by heads kept. */
  mha: LatencyCurve;
  /** One layer's FFN block (up, activation, down, residual LayerNorm) by neurons kept. */
  ffn: LatencyCurve;
}

/** The piecewise model's milliseconds at `n` units. */
export function piecewiseAt(f: PiecewiseLatency, n: number): number {
  return n <= 0 ? f.zero : n <= f.threshold ? f.c : f.c + f.slope * (n - f.threshold);
}

/**
 * The reference's `fit_latency_fn` on measured points (units > 0, ascending): for each candidate
 * threshold t among the measured unit counts, `c` is the mean time of the points at or below t and
 * `slope` the least-squares slope (through `c` at t, clipped at 0) of the points above it; the
 * threshold with the least squared error wins.
 */
export function fitPiecewiseLatency(units: number[], ms: number[], zero = 0): PiecewiseLatency {
  const pts = units.map((u, i) => [u, ms[i]!] as const).filter(([u]) => u > 0);
  if (!pts.length) throw new Error('fitPiecewiseLatency: no measured point with units > 0');
  let best: PiecewiseLatency = { threshold: pts[0]![0], c: pts[0]![1], slope: 0, zero };
  let bestErr = Infinity;
  for (let t = 0; t < pts.length; t++) {
    const threshold = pts[t]![0];
    const below = pts.slice(0, t + 1);
    const above = pts.slice(t + 1);
    const c = below.reduce((a, [, y]) => a + y, 0) / below.length;
    let xy = 0;
    let xx = 0;
    for (const [u, y] of above) {
      xy += (u - threshold) * (y - c);
      xx += (u - threshold) ** 2;
    }
    const slope = xx > 0 ? Math.max(0, xy / xx) : 0;
    const f = { threshold, c, slope, zero };
    const err = pts.reduce((a, [u, y]) => a + (y - piecewiseAt(f, u)) ** 2, 0);
    if (err < bestErr) {
      bestErr = err;
      best = f;
    }
  }
  return best;
}

export interface LatencyTableOptions {
  batch?: number;
  seq?: number;
  repeats?: number;
  warmup?: number;
  /** Neuron counts measured besides 0, 1, 2, 4, ...: `neuronPoints` evenly spaced up to I (default 32). */
  neuronPoints?: number;
  threads?: number;
}

/**
 * Measures one layer's attention block with 0..A heads and FFN block at 0, powers of two and
 * `neuronPoints` evenly spaced neuron counts up to I, with random weights of the model's sizes, on a
 * `[batch, seq, hidden]` input; the blocks run the same kernels as the model's forward pass. Each point
 * is the median of `repeats` rounds that time every point once.
 */
export function measureLatencyTable(config: BertConfig, opts: LatencyTableOptions = {}): LatencyTable {
  const B = opts.batch ?? 32;
  const T = opts.seq ?? 128;
  const repeats = opts.repeats ?? 15;
  const warmup = opts.warmup ?? 3;
  const H = config.hiddenSize;
  const d = config.attentionHeadSize;
  const A = Math.max(...config.layerHeads);
  const I = Math.max(...config.layerIntermediate);
  const act = config.arch.hiddenAct === 'gelu_new' ? geluNew : gelu;
  const eps = config.layerNormEps;
  const x = tf.randomNormal([B, T, H], 0, 1, 'float32', 1);
  const gamma = tf.ones([H]);
  const beta = tf.zeros([H]);
  const extMask = tf.zeros([B, T]);
  const w = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 0.02, 'float32', seed);
  // All blocks of both curves are built first and timed round-robin, one run each per round: load from
  // other processes then falls on every point of both curves alike instead of bending one curve or
  // shifting attention against FFN. The median over rounds is kept.
  type Block = { weights: Tensor[]; run: () => Tensor };
  const timeAll = (blocks: Block[]): number[] => {
    for (const b of blocks) for (let i = 0; i < warmup; i++) tf.tidy(b.run).dispose();
    const times = blocks.map(() => [] as number[]);
    for (let r = 0; r < Math.max(1, repeats); r++) blocks.forEach((b, i) => times[i]!.push(timeMs(b.run, 1, 0)));
    for (const b of blocks) for (const v of b.weights) v.dispose();
    return times.map((t) => {
      const s = t.sort((x, y) => x - y);
      const m = s.length >> 1;
      return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
    });
  };
  const mhaUnits = Array.from({ length: A + 1 }, (_, i) => i);
  const mhaBlock = (n: number): Block => {
    const ws = n > 0 ? [w([H, n * d], 2), w([n * d], 3), w([H, n * d], 4), w([n * d], 5), w([H, n * d], 6), w([n * d], 7), w([n * d, H], 8)] : [];
    const bias = w([H], 9);
    return {
      weights: [...ws, bias],
      run: () =>
        tf.tidy(() => {
          if (n === 0) return addLayerNorm(bias.reshape([1, 1, H]), x, gamma, beta, eps);
          const [wq, bq, wk, bk, wv, bv, wo] = ws;
          const ctx = attention(linear(x, wq!, bq), linear(x, wk!, bk), linear(x, wv!, bv), n, extMask);
          return addLayerNorm(linear(ctx, wo!, bias), x, gamma, beta, eps);
        }),
    };
  };
  const points = new Set<number>([0]);
  for (let n = 1; n < I; n *= 2) points.add(n);
  const k = opts.neuronPoints ?? 32;
  for (let i = 1; i <= k; i++) points.add(Math.max(1, Math.round((i * I) / k)));
  const ffnUnits = [...points].sort((a, b) => a - b);
  const ffnBlock = (n: number): Block => {
    const ws = n > 0 ? [w([H, n], 12), w([n], 13), w([n, H], 14)] : [];
    const bias = w([H], 15);
    return {
      weights: [...ws, bias],
      run: () =>
        tf.tidy(() => {
          if (n === 0) return addLayerNorm(bias.reshape([1, 1, H]), x, gamma, beta, eps);
          const [wi, bi, wo] = ws;
          return addLayerNorm(linear(act(linear(x, wi!, bi)), wo!, bias), x, gamma, beta, eps);
        }),
    };
  };
  const ms = timeAll([...mhaUnits.map(mhaBlock), ...ffnUnits.map(ffnBlock)]);
  const curve = (units: number[], t: number[]): LatencyCurve => ({ units, ms: t, fit: fitPiecewiseLatency(units, t, t[0]) });
  const mha = curve(mhaUnits, ms.slice(0, mhaUnits.length));
  const ffn = curve(ffnUnits, ms.slice(mhaUnits.length));
  for (const t of [x, gamma, beta, extMask]) t.dispose();
  return {
    format: 'topiary-latency-lut',
    version: 1,
    backend: tf.getBackend(),
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
    batch: B,
    seq: T,
    hiddenSize: H,
    attentionHeadSize: d,
    heads: A,
    intermediate: I,
    hiddenAct: config.arch.hiddenAct,
    mha,
    ffn,
  };
}

/**
 * Checks a parsed latency table (`file` names it in errors) and that it was measured for `config`'s
 * sizes: hidden size, head size, and at least the heads and neurons of its widest layer.
 */
export function checkLatencyTable(t: unknown, file: string, config?: BertConfig): LatencyTable {
  const bad = (field: string, want: string, got: unknown): never => {
    throw new Error(`${file}: field '${field}' must be ${want}, got ${JSON.stringify(got)}`);
  };
  if (!t || typeof t !== 'object') bad('(root)', 'an object (a latency table written by `topiary profile --lut`)', t);
  const o = t as Record<string, unknown>;
  if (o['format'] !== 'topiary-latency-lut') bad('format', "'topiary-latency-lut'", o['format']);
  if (o['version'] !== 1) bad('version', '1', o['version']);
  for (const k of ['batch', 'seq', 'hiddenSize', 'attentionHeadSize', 'heads', 'intermediate']) {
    if (!Number.isInteger(o[k]) || (o[k] as number) < 1) bad(k, 'a positive integer', o[k]);
  }
  for (const k of ['mha', 'ffn'] as const) {
    const cv = o[k] as LatencyCurve | undefined;
    if (!cv || !Array.isArray(cv.units) || !Array.isArray(cv.ms) || cv.units.length !== cv.ms.length || cv.units.length < 2) bad(`${k}.units`, 'an array of unit counts as long as ms (2 or more)', cv?.units);
    if (cv!.units.some((u, i) => !Number.isInteger(u) || u < 0 || (i > 0 && u <= cv!.units[i - 1]!))) bad(`${k}.units`, 'ascending non-negative integers', cv!.units);
    if (cv!.ms.some((m) => typeof m !== 'number' || !Number.isFinite(m) || m < 0)) bad(`${k}.ms`, 'non-negative milliseconds', cv!.ms);
    const f = cv!.fit as PiecewiseLatency | undefined;
    for (const fk of ['threshold', 'c', 'slope', 'zero'] as const) {
      if (typeof f?.[fk] !== 'number' || !Number.isFinite(f[fk]) || f[fk] < 0) bad(`${k}.fit.${fk}`, 'a non-negative number', f?.[fk]);
    }
  }
  const table = o as unknown as LatencyTable;
  if (config) {
    if (table.hiddenSize !== config.hiddenSize) bad('hiddenSize', `${config.hiddenSize} (the model's hidden_size)`, table.hiddenSize);
    if (table.attentionHeadSize !== config.attentionHeadSize) bad('attentionHeadSize', `${config.attentionHeadSize} (the model's head size)`, table.attentionHeadSize);
    const A = Math.max(...config.layerHeads);
    const I = Math.max(...config.layerIntermediate);
    if (table.heads < A) bad('heads', `at least ${A} (the model's heads per layer)`, table.heads);
    if (table.intermediate < I) bad('intermediate', `at least ${I} (the model's intermediate_size)`, table.intermediate);
  }
  return table;
}

/** Encoder latency the table's fit predicts for `heads[l]` heads and `neurons[l]` neurons per layer. */
export function tableLatency(table: LatencyTable, heads: number[], neurons: number[]): number {
  return heads.reduce((a, h, l) => a + piecewiseAt(table.mha.fit, h) + piecewiseAt(table.ffn.fit, neurons[l]!), 0);
}
