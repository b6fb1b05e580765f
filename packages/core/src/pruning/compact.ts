import { tf, type Tensor } from '../tf.js';
import { BertModel, EMBEDDINGS_PROJECT, WORD_EMBEDDINGS, layerParamNames } from '../model/bert.js';
import type { BertConfig } from '../model/config.js';
import type { MaskSet } from './masks.js';

const indicesOf = (mask: ArrayLike<number>): number[] => {
  const out: number[] = [];
  for (let i = 0; i < mask.length; i++) if (mask[i] !== 0) out.push(i);
  return out;
};

/** Original (unpruned) head indices of the current heads of layer `l`. */
function originalHeads(config: BertConfig, l: number): number[] {
  const pruned = new Set(config.prunedHeads[String(l)] ?? []);
  return Array.from({ length: config.numAttentionHeads }, (_, i) => i).filter((i) => !pruned.has(i));
}

/**
 * Parameters of `compact(model, masks)` (every entry of its tensors, zeros included), without building
 * it: what an export of these masks weighs.
 */
export function compactedParamCount(model: BertModel, masks: MaskSet): number {
  const c = model.config;
  const h = indicesOf(masks.hiddenMask).length;
  const d = c.attentionHeadSize;
  // Embedding tables and every LayerNorm keep the kept hidden dimensions; factorized embeddings keep
  // theirs whole and their projection loses output columns.
  const types = model.params.has('bert.embeddings.token_type_embeddings.weight') ? c.typeVocabSize : 0;
  const E = c.arch.embeddingProjection ? c.embeddingSize : h;
  // Factorized word embeddings (config.embeddingRank r) weigh r (vocab + E).
  const words = c.embeddingRank === undefined ? c.vocabSize * E : c.embeddingRank * (c.vocabSize + E);
  let n = words + (c.maxPositionEmbeddings + types) * E + 2 * E + 2 * h * 2 * c.numHiddenLayers;
  if (c.arch.embeddingProjection) n += E * h + h;
  for (let l = 0; l < c.numHiddenLayers; l++) {
    // A removed layer goes with its two LayerNorms.
    if (masks.layerMask[l] === 0) {
      n -= 2 * h * 2;
      continue;
    }
    const a = masks.mhaMask[l] === 0 ? 0 : indicesOf(masks.headMask[l]!).length * d;
    const i = masks.ffnMask[l] === 0 ? 0 : indicesOf(masks.neuronMask[l]!).length;
    // A low-rank layer weighs r (in + out) (its rank stays when rows or columns go).
    const ln = layerParamNames(l);
    const wgt = (module: string, inDim: number, outDim: number) => {
      const r = c.lowRank?.[module];
      return r === undefined ? inDim * outDim : r * (inDim + outDim);
    };
    n += wgt(ln.query, h, a) + wgt(ln.key, h, a) + wgt(ln.value, h, a) + 3 * a + wgt(ln.attnOut, a, h) + h + (wgt(ln.inter, h, i) + i) + wgt(ln.out, i, h) + h;
  }
  if (model.hasPooler) {
    const p = model.param('bert.pooler.dense.bias').size;
    n += h * p + p;
  }
  if (model.hasClassifier) n += model.param('classifier.weight').size + model.numLabels;
  return n;
}

/**
 * Turns a masked model into a physically smaller one with the same function: drops pruned heads,
 * FFN neurons and hidden dimensions, and folds fractional mask values into the weights that follow
 * them (head mask into the value projection, neuron mask into the FFN output rows, block and hidden
 * masks into output projections, embeddings and LayerNorm affine parameters). Per-weight masks are
 * multiplied in, so unstructured pruning leaves zeros in the weights. A layer whose attention or FFN
 * block is entirely gone keeps only its output bias (times its mask) and LayerNorm, which is exactly
 * what the masked model computes.
 */
export function compact(model: BertModel, masks: MaskSet): BertModel {
  // Layers the layer mask removes go whole (`dropLayers`), after the rest is compacted.
  const removed = indicesOf(Array.from(masks.layerMask, (v) => (v === 0 ? 1 : 0)));
  if (removed.length > 0) {
    const kept = compactKept(model, masks);
    try {
      return dropLayers(kept, removed);
    } finally {
      kept.dispose();
    }
  }
  return compactKept(model, masks);
}

function compactKept(model: BertModel, masks: MaskSet): BertModel {
  const c = model.config;
  const H = c.hiddenSize;
  const d = c.attentionHeadSize;
  const hidden = masks.hiddenMask;
  const hKeep = indicesOf(hidden);
  if (hKeep.length === 0) throw new Error('compact: the hidden mask removes every dimension');
  const out = new Map<string, Tensor>();
  const config: BertConfig = structuredClone(c);
  config.hiddenSize = hKeep.length;
  // Unfactorized embeddings are as wide as the hidden size.
  if (!c.arch.embeddingProjection) config.embeddingSize = hKeep.length;
  const newHeads: number[] = [];
  const newInter: number[] = [];
  const data = (n: string): Float32Array => {
    const w = model.param(n);
    const v = w.dataSync() as Float32Array;
    const m = masks.weightMasks.get(n);
    return m ? v.map((x, i) => x * m[i]!) : v;
  };
  const shape = (n: string) => model.param(n).shape;
  /** Rows and columns of a `[R, C]` (or `[C]`) array, each kept column scaled by `colScale`, each row by `rowScale`. */
  const take = (src: Float32Array, dims: number[], rows: number[] | null, cols: number[], colScale?: number[], rowScale?: number[]): Tensor => {
    const C = dims[dims.length - 1]!;
    if (dims.length === 1) return tf.tensor1d(cols.map((j, k) => src[j]! * (colScale?.[k] ?? 1)));
    const R = rows ?? Array.from({ length: dims[0]! }, (_, i) => i);
    const outArr = new Float32Array(R.length * cols.length);
    R.forEach((i, r) => {
      const rs = rowScale?.[r] ?? 1;
      cols.forEach((j, k) => (outArr[r * cols.length + k] = src[i * C + j]! * rs * (colScale?.[k] ?? 1)));
    });
    return tf.tensor2d(outArr, [R.length, cols.length]);
  };
  const hScale = hKeep.map((i) => hidden[i]!);
  const put = (n: string, t: Tensor) => out.set(n, t);
  const all = (k: number) => Array.from({ length: k }, (_, i) => i);
  /**
   * Linear weight `[in, out]` of `module`, rows/cols kept and scaled. A low-rank layer keeps its rank:
   * rows (inputs) come out of `weight_v` `[in, r]`, columns (outputs) out of `weight_u` `[r, out]`.
   */
  const putLinear = (module: string, rows: number[] | null, cols: number[], colScale?: number[], rowScale?: number[]) => {
    const r = c.lowRank?.[module];
    if (r === undefined) return put(`${module}.weight`, take(data(`${module}.weight`), shape(`${module}.weight`), rows, cols, colScale, rowScale));
    if (masks.weightMasks.has(`${module}.weight`)) throw new Error(`compact: weight mask on '${module}.weight', which is low-rank (topiary_low_rank): weight masks apply to dense layers only`);
    put(`${module}.weight_v`, take(data(`${module}.weight_v`), shape(`${module}.weight_v`), rows, all(r), undefined, rowScale));
    put(`${module}.weight_u`, take(data(`${module}.weight_u`), shape(`${module}.weight_u`), null, cols, colScale));
  };

  // LayerNorm outputs are scaled by the hidden mask afterwards: fold into gamma and beta.
  const lnFold = (name: string) => {
    for (const part of ['weight', 'bias']) put(`${name}.${part}`, take(data(`${name}.${part}`), [H], null, hKeep, hScale));
  };
  // Factorized word embeddings: U [vocab, r] stays whole, V [r, E] is the table's columns.
  const factors = c.embeddingRank === undefined ? [] : [`${WORD_EMBEDDINGS}.weight_u`, `${WORD_EMBEDDINGS}.weight_v`];
  const tables = ['word_embeddings', 'position_embeddings', 'token_type_embeddings'].map((e) => `bert.embeddings.${e}.weight`).filter((n) => model.params.has(n));
  if (c.arch.embeddingProjection) {
    // Factorized embeddings: tables and LayerNorm stay; the projection's output is the hidden dimension.
    for (const n of [...tables, ...factors, 'bert.embeddings.LayerNorm.weight', 'bert.embeddings.LayerNorm.bias']) put(n, model.param(n).clone());
    const pw = `${EMBEDDINGS_PROJECT}.weight`;
    put(pw, take(data(pw), shape(pw), null, hKeep, hScale));
    put(`${EMBEDDINGS_PROJECT}.bias`, take(data(`${EMBEDDINGS_PROJECT}.bias`), [H], null, hKeep, hScale));
  } else {
    // Embeddings: the kept dimensions of the tables (the hidden mask scales the LayerNorm output, folded below).
    for (const n of tables) put(n, take(data(n), shape(n), null, hKeep));
    if (factors.length > 0) {
      put(factors[0]!, model.param(factors[0]!).clone());
      put(factors[1]!, take(data(factors[1]!), shape(factors[1]!), null, hKeep));
    }
    lnFold('bert.embeddings.LayerNorm');
  }

  for (let l = 0; l < c.numHiddenLayers; l++) {
    const n = layerParamNames(l);
    const mha = masks.mhaMask[l]!;
    const ffn = masks.ffnMask[l]!;
    const headMask = masks.headMask[l]!;
    const heads = mha === 0 ? [] : indicesOf(headMask);
    newHeads.push(heads.length);
    const orig = originalHeads(c, l);
    const removed = orig.filter((_, i) => !heads.includes(i));
    if (removed.length > 0) config.prunedHeads[String(l)] = [...new Set([...(c.prunedHeads[String(l)] ?? []), ...removed])].sort((a, b) => a - b);
    const cols = heads.flatMap((h) => Array.from({ length: d }, (_, j) => h * d + j));
    const colScale = heads.flatMap((h) => Array.from({ length: d }, () => headMask[h]!));
    for (const proj of [n.query, n.key, n.value]) {
      // The head mask scales the context, i.e. (probs @ V) * m = probs @ (V * m).
      const scale = proj === n.value ? colScale : undefined;
      putLinear(proj, hKeep, cols, scale);
      put(`${proj}.bias`, take(data(`${proj}.bias`), shape(`${proj}.bias`), null, cols, scale));
    }
    const outScale = hScale.map((h) => h * mha);
    putLinear(n.attnOut, cols, hKeep, outScale);
    put(`${n.attnOut}.bias`, take(data(`${n.attnOut}.bias`), [H], null, hKeep, outScale));
    lnFold(n.attnLn);

    const neuronMask = masks.neuronMask[l]!;
    const neurons = ffn === 0 ? [] : indicesOf(neuronMask);
    newInter.push(neurons.length);
    putLinear(n.inter, hKeep, neurons);
    put(`${n.inter}.bias`, take(data(`${n.inter}.bias`), shape(`${n.inter}.bias`), null, neurons));
    const ffnScale = hScale.map((h) => h * ffn);
    // The neuron mask scales activations, i.e. rows of the output projection.
    putLinear(n.out, neurons, hKeep, ffnScale, neurons.map((i) => neuronMask[i]!));
    put(`${n.out}.bias`, take(data(`${n.out}.bias`), [H], null, hKeep, ffnScale));
    lnFold(n.outLn);
  }
  if (model.hasPooler) {
    // The pooler reads the (masked) [CLS] vector; its output width is not a hidden dimension.
    const w = 'bert.pooler.dense.weight';
    put(w, take(data(w), shape(w), hKeep, all(shape(w)[1]!)));
    put('bert.pooler.dense.bias', model.param('bert.pooler.dense.bias').clone());
  }
  if (model.hasClassifier) {
    put('classifier.weight', take(data('classifier.weight'), shape('classifier.weight'), null, all(model.numLabels)));
    put('classifier.bias', model.param('classifier.bias').clone());
  }
  config.layerHeads = newHeads;
  config.layerIntermediate = newInter;
  // Hugging Face derives the head size from hidden_size / num_attention_heads; keep it explicit.
  config.attentionHeadSize = d;
  try {
    const small = new BertModel(config, out);
    small.family = model.family;
    return small;
  } finally {
    for (const t of out.values()) t.dispose();
  }
}

/**
 * `model` without the encoder layers `drop` (whole layers: attention, FFN and both LayerNorms, so the
 * residual stream passes unchanged, as in layer dropping): the other layers are renumbered in order and
 * `num_hidden_layers`, the per-layer sizes and `pruned_heads` follow. Masks cannot express this (a layer
 * whose attention and FFN blocks are both masked still applies its LayerNorms), so it is a separate step.
 */
export function dropLayers(model: BertModel, drop: readonly number[]): BertModel {
  const c = model.config;
  const L = c.numHiddenLayers;
  const gone = new Set(drop);
  for (const l of gone) if (!(Number.isInteger(l) && l >= 0 && l < L)) throw new Error(`dropLayers: layer ${l} is not in [0, ${L - 1}]`);
  const keep = Array.from({ length: L }, (_, l) => l).filter((l) => !gone.has(l));
  if (keep.length === 0) throw new Error(`dropLayers: dropping all ${L} layers leaves no encoder`);
  const out = new Map<string, Tensor>();
  for (const [name, v] of model.params) {
    const m = /^bert\.encoder\.layer\.(\d+)\.(.*)$/.exec(name);
    if (!m) out.set(name, tf.clone(v));
    else if (!gone.has(Number(m[1]))) out.set(`bert.encoder.layer.${keep.indexOf(Number(m[1]))}.${m[2]}`, tf.clone(v));
  }
  const config: BertConfig = structuredClone(c);
  config.numHiddenLayers = keep.length;
  config.layerHeads = keep.map((l) => c.layerHeads[l]!);
  config.layerIntermediate = keep.map((l) => c.layerIntermediate[l]!);
  config.prunedHeads = Object.fromEntries(keep.flatMap((l, i) => (c.prunedHeads[String(l)] ? [[String(i), [...c.prunedHeads[String(l)]!]]] : [])));
  // Low-rank layers are named by layer index too.
  if (c.lowRank) {
    config.lowRank = {};
    for (const [name, r] of Object.entries(c.lowRank)) {
      const m = /^bert\.encoder\.layer\.(\d+)\.(.*)$/.exec(name);
      if (!m) config.lowRank[name] = r;
      else if (!gone.has(Number(m[1]))) config.lowRank[`bert.encoder.layer.${keep.indexOf(Number(m[1]))}.${m[2]}`] = r;
    }
  }
  try {
    const small = new BertModel(config, out);
    small.family = model.family;
    return small;
  } finally {
    for (const t of out.values()) t.dispose();
  }
}
