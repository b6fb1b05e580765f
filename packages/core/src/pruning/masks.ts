import { tf } from '../tf.js';
import type { BertModel, StructuredMasks, WeightMasks } from '../model/bert.js';
import { layerParamNames } from '../model/bert.js';
import type { SparsityReport } from '../events.js';

/**
 * The masks a model carries between steps, as plain arrays (1 = keep, fractional allowed). `toTensors`
 * turns them into forward-pass masks inside a step's tidy; `sparsity` says how much is pruned.
 * Weight masks use the stored `[in, out]` layout of linear weights.
 */
export class MaskSet {
  constructor(
    public headMask: Float32Array[],
    public neuronMask: Float32Array[],
    public hiddenMask: Float32Array,
    public mhaMask: Float32Array,
    public ffnMask: Float32Array,
    public weightMasks = new Map<string, Float32Array>(),
    /** Per layer: 0 removes the whole layer (the residual stream passes through), as `StructuredMasks.layerMask`. */
    public layerMask: Float32Array = new Float32Array(mhaMask.length).fill(1),
  ) {}

  /** All-ones masks for `model`'s current shapes. */
  static ones(model: BertModel): MaskSet {
    const c = model.config;
    const L = c.numHiddenLayers;
    return new MaskSet(
      c.layerHeads.map((a) => new Float32Array(a).fill(1)),
      c.layerIntermediate.map((i) => new Float32Array(i).fill(1)),
      new Float32Array(c.hiddenSize).fill(1),
      new Float32Array(L).fill(1),
      new Float32Array(L).fill(1),
    );
  }

  clone(): MaskSet {
    return new MaskSet(
      this.headMask.map((m) => m.slice()),
      this.neuronMask.map((m) => m.slice()),
      this.hiddenMask.slice(),
      this.mhaMask.slice(),
      this.ffnMask.slice(),
      new Map([...this.weightMasks].map(([k, v]) => [k, v.slice()])),
      this.layerMask.slice(),
    );
  }

  /** Forward-pass tensors; masks that keep everything are left out (cheaper, and exact). */
  toTensors(): { masks: StructuredMasks; weightMasks: WeightMasks } {
    const allOnes = (a: Float32Array) => a.every((v) => v === 1);
    const masks: StructuredMasks = {};
    if (!this.headMask.every(allOnes)) masks.headMask = this.headMask.map((m) => tf.tensor1d(m));
    if (!this.neuronMask.every(allOnes)) masks.neuronMask = this.neuronMask.map((m) => tf.tensor1d(m));
    if (!allOnes(this.hiddenMask)) masks.hiddenMask = tf.tensor1d(this.hiddenMask);
    if (!allOnes(this.mhaMask)) masks.mhaMask = tf.tensor1d(this.mhaMask);
    if (!allOnes(this.ffnMask)) masks.ffnMask = tf.tensor1d(this.ffnMask);
    if (!allOnes(this.layerMask)) masks.layerMask = tf.tensor1d(this.layerMask);
    const weightMasks: WeightMasks = {};
    for (const [name, m] of this.weightMasks) {
      const shape = paramShape(name, m.length, this);
      weightMasks[name] = tf.tensor(m, shape);
    }
    return { masks, weightMasks };
  }

  /** How much of `model` these masks remove (see `sparsityOf`). */
  sparsity(model: BertModel): SparsityReport {
    return sparsityOf(model, this);
  }
}

const shapeCache = new WeakMap<MaskSet, BertModel>();
/** Binds a mask set to its model so weight-mask shapes can be looked up. */
export function bindMasks(masks: MaskSet, model: BertModel): MaskSet {
  shapeCache.set(masks, model);
  return masks;
}
function paramShape(name: string, size: number, masks: MaskSet): number[] {
  const model = shapeCache.get(masks);
  const shape = model?.params.get(name)?.shape;
  if (!shape) throw new Error(`weight mask '${name}': call bindMasks(masks, model) first, or no such parameter`);
  if (shape.reduce((a, b) => a * b, 1) !== size) throw new Error(`weight mask '${name}': ${size} values for a [${shape}] weight`);
  return shape;
}

const nz = (a: Float32Array | undefined, n: number): Uint8Array => {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = a === undefined || a[i] !== 0 ? 1 : 0;
  return out;
};
const count = (a: Uint8Array) => a.reduce((s, v) => s + v, 0);

/**
 * Parameters that remain once `masks` are applied, counted the way compaction will remove them: a
 * linear weight entry survives when its input and output dimensions are kept and its weight-mask
 * entry is non-zero. Encoder parameters are the attention (Q, K, V, output) and FFN (intermediate,
 * output) weights and biases, as CoFi and CAP count sparsity; `totalSparsity` counts every parameter.
 */
export function sparsityOf(model: BertModel, masks: MaskSet): SparsityReport {
  const c = model.config;
  const H = c.hiddenSize;
  const d = c.attentionHeadSize;
  const hKeep = nz(masks.hiddenMask, H);
  const hKept = count(hKeep);
  let encoder = 0;
  let encoderKept = 0;
  const linearKept = (name: string, rows: Uint8Array, cols: Uint8Array): number => {
    const wm = masks.weightMasks.get(`${name}.weight`);
    const R = rows.length;
    const C = cols.length;
    // A low-rank layer keeps r (rows + cols) entries (weight masks are refused on it).
    const r = c.lowRank?.[name];
    if (r !== undefined) return r * (count(rows) + count(cols)) + count(cols);
    let kept = 0;
    if (!wm) kept = count(rows) * count(cols);
    else {
      for (let i = 0; i < R; i++) {
        if (!rows[i]) continue;
        for (let j = 0; j < C; j++) if (cols[j] && wm[i * C + j] !== 0) kept++;
      }
    }
    return kept + count(cols); // + bias
  };
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const n = layerParamNames(l);
    const A = c.layerHeads[l]!;
    const I = c.layerIntermediate[l]!;
    // A removed layer takes its attention and FFN blocks with it.
    const on = masks.layerMask[l] !== 0;
    const mha = on && masks.mhaMask[l] !== 0;
    const ffn = on && masks.ffnMask[l] !== 0;
    const headCols = new Uint8Array(A * d);
    for (let a = 0; a < A; a++) if (mha && masks.headMask[l]![a] !== 0) headCols.fill(1, a * d, (a + 1) * d);
    const neurons = nz(masks.neuronMask[l], I).map((v) => (ffn ? v : 0));
    encoder += 3 * (H * A * d + A * d) + (A * d * H + H) + (H * I + I) + (I * H + H);
    for (const qkv of [n.query, n.key, n.value]) encoderKept += linearKept(qkv, hKeep, headCols);
    // Output projections keep their bias only while the block is there.
    encoderKept += linearKept(n.attnOut, headCols, mha ? hKeep : new Uint8Array(H));
    encoderKept += linearKept(n.inter, hKeep, neurons);
    encoderKept += linearKept(n.out, neurons, ffn ? hKeep : new Uint8Array(H));
  }
  let total = 0;
  for (const v of model.params.values()) total += v.size;
  // Non-encoder parameters shrink with the hidden dimension (embeddings, LayerNorms, pooler, classifier).
  let otherKept = 0;
  for (const [name, v] of model.params) {
    if (/encoder\.layer\.\d+\.(attention\.(self|output\.dense)|intermediate|output\.dense)/.test(name)) continue;
    // A removed layer's LayerNorms go with it.
    const layerOf = /^bert\.encoder\.layer\.(\d+)\./.exec(name);
    if (layerOf && masks.layerMask[Number(layerOf[1])] === 0) continue;
    // Factorized embeddings (ELECTRA, ALBERT) keep their tables whole: only the projection shrinks.
    // U [vocab, r] of factorized word embeddings (config.embeddingRank) keeps its width too, even when r = H.
    const factorized = (c.arch.embeddingProjection && name.startsWith('bert.embeddings.')) || name === 'bert.embeddings.word_embeddings.weight_u';
    const hDims = factorized ? 0 : name === 'bert.pooler.dense.weight' ? 2 : name === 'classifier.weight' || v.shape[v.shape.length - 1] === H ? 1 : 0;
    otherKept += hDims === 0 ? v.size : (v.size / H ** hDims) * hKept ** hDims;
  }
  const remainingTotal = encoderKept + otherKept;
  return {
    encoderSparsity: encoder === 0 ? 0 : 1 - encoderKept / encoder,
    totalSparsity: 1 - remainingTotal / total,
    encoderParams: encoder,
    remainingEncoderParams: encoderKept,
  };
}
