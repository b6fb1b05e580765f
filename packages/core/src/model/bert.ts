import { tf, type Tensor, type Tensor1D, type Tensor2D, type Tensor3D } from '../tf.js';
import type { BertConfig } from './config.js';
import type { ModelFamily } from './families/family.js';
import { addLayerNorm, attention, dropout, expectShape, gelu, geluNew, layerNorm, linear, Rng } from './ops.js';

/**
 * A tokenized batch, padded to its longest sequence. Plain arrays (row-major `[batchSize, seqLen]`), so
 * building batches never allocates tensors; `toTensors` does that inside the step's `tf.tidy`.
 */
export interface Batch {
  inputIds: Int32Array;
  attentionMask: Int32Array;
  tokenTypeIds: Int32Array;
  batchSize: number;
  seqLen: number;
  /** Class ids, when the examples are labelled. */
  labels?: Int32Array;
  /** Index of each example in its dataset (representation banks are indexed by it). */
  exampleIds?: number[];
}

/**
 * Multiplicative masks over the model's structures (1 = keep), with the semantics of
 * `shared/goldens/README.md`: `headMask[l]` scales each head's context vector, `neuronMask[l]` the FFN
 * activations after GELU, `mhaMask[l]` / `ffnMask[l]` the attention / FFN block output before the
 * residual add, `hiddenMask` the embedding output and every block output, with LayerNorm over the kept
 * dimensions. `layerMask[l]` gates the whole layer: its output is `x + m (layer(x) - x)`, so 0 passes
 * the residual stream through unchanged (layer dropping) and 1 is the layer. Values may be fractional
 * and may carry gradients.
 */
export interface StructuredMasks {
  headMask?: Tensor[];
  neuronMask?: Tensor[];
  hiddenMask?: Tensor;
  mhaMask?: Tensor;
  ffnMask?: Tensor;
  layerMask?: Tensor;
}

/** Per-weight masks keyed by parameter name, in the stored `[in, out]` layout of linear weights. */
export type WeightMasks = Record<string, Tensor>;

export interface ForwardOptions {
  masks?: StructuredMasks;
  weightMasks?: WeightMasks;
  /** Training mode: dropout on. */
  training?: boolean;
  /** Source of dropout seeds in training mode. */
  rng?: Rng;
  /** Return the embedding output and every layer's output. */
  outputHiddenStates?: boolean;
}

export interface ForwardOutput {
  /** `[batch, labels]` when the model has a classification head. */
  logits?: Tensor2D;
  /** tanh(dense([CLS])) when the model has a pooler. */
  pooled?: Tensor2D;
  /** Last layer output `[batch, seq, hidden]`. */
  sequenceOutput: Tensor3D;
  /** Embedding output then each layer's output, when asked. */
  hiddenStates?: Tensor3D[];
}

const P = 'bert.';
/** Hugging Face names of one layer's parameters. */
export function layerParamNames(l: number) {
  const p = `${P}encoder.layer.${l}.`;
  return {
    query: `${p}attention.self.query`,
    key: `${p}attention.self.key`,
    value: `${p}attention.self.value`,
    attnOut: `${p}attention.output.dense`,
    attnLn: `${p}attention.output.LayerNorm`,
    inter: `${p}intermediate.dense`,
    out: `${p}output.dense`,
    outLn: `${p}output.LayerNorm`,
  };
}

/** Linear layers whose weights count as "encoder" parameters (attention + FFN), as CoFi and CAP count. */
export function encoderLinearNames(config: BertConfig): string[] {
  const names: string[] = [];
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const n = layerParamNames(l);
    names.push(n.query, n.key, n.value, n.attnOut, n.inter, n.out);
  }
  return names;
}

/** The linear map from the embedding size to the hidden size (ELECTRA's `embeddings_project`, ALBERT's `embedding_hidden_mapping_in`). */
export const EMBEDDINGS_PROJECT = `${P}embeddings_project`;

/** The word embedding table's module; `.weight` `[vocab, E]`, or `.weight_u` `[vocab, r]` and `.weight_v` `[r, E]` when factorized (`config.embeddingRank`). */
export const WORD_EMBEDDINGS = `${P}embeddings.word_embeddings`;

/** True for parameters stored as `[in, out]` kernels (Hugging Face stores them `[out, in]`); low-rank factors too. */
export function isLinearWeight(name: string, shape: readonly number[]): boolean {
  return shape.length === 2 && (name.endsWith('.weight') || name.endsWith('.weight_u') || name.endsWith('.weight_v')) && !name.includes('embeddings.');
}

/**
 * Rank of linear module `name` when it is stored low-rank (`config.lowRank`), else undefined. A low-rank
 * layer holds `<name>.weight_v` `[in, r]` and `<name>.weight_u` `[r, out]` (so `W = weight_v weight_u`
 * in the `[in, out]` layout; in Hugging Face's `[out, in]` layout of the checkpoint, `weight_u` is
 * `[out, r]`, `weight_v` `[r, in]` and `W = weight_u weight_v`, the SVD's `U S^1/2` and `S^1/2 V^T`).
 */
export function lowRankOf(config: BertConfig, name: string): number | undefined {
  return config.lowRank?.[name];
}

/**
 * BERT in tfjs: `BertModel` plus an optional pooler and sequence-classification head. Parameters are
 * `tf.Variable`s keyed by Hugging Face tensor names (`bert.encoder.layer.0.attention.self.query.weight`);
 * linear weights are held transposed, `[in, out]`, so the forward pass multiplies without transposes.
 */
export class BertModel {
  readonly params = new Map<string, tf.Variable>();
  /**
   * The family adapter the model was loaded with (`model/families`), used to save it under the
   * family's names; when unset, the built-in family of `config.modelType`.
   */
  family?: ModelFamily;

  constructor(
    public config: BertConfig,
    params: Map<string, Tensor>,
  ) {
    for (const [name, t] of params) this.params.set(name, t instanceof tf.Variable ? t : tf.variable(t, true, `${name}_${variableSerial++}`));
    this.checkShapes();
  }

  get hasClassifier(): boolean {
    return this.params.has('classifier.weight');
  }
  get hasPooler(): boolean {
    return this.params.has(`${P}pooler.dense.weight`);
  }
  get numLabels(): number {
    return this.params.get('classifier.weight')?.shape[1] ?? 0;
  }

  /** The parameter `name`, or an error naming it and what is present. */
  param(name: string): tf.Variable {
    const p = this.params.get(name);
    if (!p) throw new Error(`model has no parameter '${name}'`);
    return p;
  }

  private checkShapes(): void {
    const c = this.config;
    const H = c.hiddenSize;
    const d = c.attentionHeadSize;
    const want = (name: string, shape: number[]) => expectShape(`parameter '${name}'`, this.param(name), shape);
    const encoderLinears = new Set(encoderLinearNames(c));
    for (const [name, r] of Object.entries(c.lowRank ?? {})) {
      if (!encoderLinears.has(name)) throw new Error(`config: topiary_low_rank names '${name}', expected an encoder linear layer (${[...encoderLinears][0]}, ...)`);
      if (!Number.isInteger(r) || r < 1) throw new Error(`config: topiary_low_rank.${name} must be a positive integer, got ${r}`);
    }
    // A linear weight [in, out], or its two factors when the layer is low-rank.
    const wantLinear = (module: string, shape: [number, number]) => {
      const r = lowRankOf(c, module);
      if (r === undefined) return want(`${module}.weight`, shape);
      want(`${module}.weight_v`, [shape[0], r]);
      want(`${module}.weight_u`, [r, shape[1]]);
    };
    const E = c.embeddingSize;
    const er = c.embeddingRank;
    if (er === undefined) want(`${WORD_EMBEDDINGS}.weight`, [c.vocabSize, E]);
    else {
      if (!Number.isInteger(er) || er < 1) throw new Error(`config: topiary_embedding_rank must be a positive integer, got ${er}`);
      if (this.params.has(`${WORD_EMBEDDINGS}.weight`)) throw new Error(`parameter '${WORD_EMBEDDINGS}.weight': the config has topiary_embedding_rank ${er}, expected the factors '${WORD_EMBEDDINGS}.weight_u' and '.weight_v' instead`);
      want(`${WORD_EMBEDDINGS}.weight_u`, [c.vocabSize, er]);
      want(`${WORD_EMBEDDINGS}.weight_v`, [er, E]);
    }
    want(`${P}embeddings.position_embeddings.weight`, [c.maxPositionEmbeddings, E]);
    if (c.arch.tokenTypes || this.params.has(`${P}embeddings.token_type_embeddings.weight`)) want(`${P}embeddings.token_type_embeddings.weight`, [c.typeVocabSize, E]);
    want(`${P}embeddings.LayerNorm.weight`, [E]);
    if (c.arch.embeddingProjection) want(`${EMBEDDINGS_PROJECT}.weight`, [E, H]);
    else if (E !== H) throw new Error(`config: embedding size ${E} differs from hidden size ${H} without an embedding projection`);
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const n = layerParamNames(l);
      const A = c.layerHeads[l]! * d;
      const I = c.layerIntermediate[l]!;
      for (const qkv of [n.query, n.key, n.value]) {
        wantLinear(qkv, [H, A]);
        want(`${qkv}.bias`, [A]);
      }
      wantLinear(n.attnOut, [A, H]);
      wantLinear(n.inter, [H, I]);
      want(`${n.inter}.bias`, [I]);
      wantLinear(n.out, [I, H]);
    }
  }

  /** Inputs as tensors (call inside a tidy). */
  static toTensors(batch: Batch) {
    const shape: [number, number] = [batch.batchSize, batch.seqLen];
    return {
      inputIds: tf.tensor2d(batch.inputIds, shape, 'int32'),
      attentionMask: tf.tensor2d(batch.attentionMask, shape, 'int32'),
      tokenTypeIds: tf.tensor2d(batch.tokenTypeIds, shape, 'int32'),
    };
  }

  forward(batch: Batch, opts: ForwardOptions = {}): ForwardOutput {
    const c = this.config;
    const { masks = {}, weightMasks = {}, training = false, outputHiddenStates = false } = opts;
    const rng = opts.rng ?? new Rng(1);
    const p = (name: string) => this.param(name);
    const w = (name: string): Tensor => {
      const m = weightMasks[`${name}.weight`];
      const v = p(`${name}.weight`);
      if (!m) return v;
      expectShape(`weightMasks['${name}.weight']`, m, v.shape);
      return tf.mul(v, m);
    };
    // y = x W + b, or (x V) U + b for a low-rank layer: two GEMMs, the bias in the second. Weight masks
    // address entries of a dense W, which a factorized layer does not have: refused.
    const lin = (x: Tensor, name: string): Tensor => {
      if (lowRankOf(c, name) === undefined) return linear(x, w(name), p(`${name}.bias`), name);
      if (weightMasks[`${name}.weight`] || weightMasks[`${name}.weight_u`] || weightMasks[`${name}.weight_v`]) {
        throw new Error(`weightMasks['${name}.weight']: '${name}' is low-rank (topiary_low_rank), weight masks apply to dense linear layers only`);
      }
      const h = linear(x, p(`${name}.weight_v`), undefined, `${name}.weight_v`);
      const y = linear(h, p(`${name}.weight_u`), p(`${name}.bias`), `${name}.weight_u`);
      release(h);
      return y;
    };
    const drop = (x: Tensor, rate: number) => (training && rate > 0 ? dropout(x, rate, rng.int()) : x);
    const L = c.numHiddenLayers;
    const H = c.hiddenSize;
    const d = c.attentionHeadSize;
    const { inputIds, attentionMask, tokenTypeIds } = BertModel.toTensors(batch);
    const [B, T] = [batch.batchSize, batch.seqLen];
    const E = c.embeddingSize;
    const arch = c.arch;
    const project = arch.embeddingProjection;
    // RoBERTa's position ids: padTokenId + 1 + (index among the non-padding tokens), padTokenId on padding.
    let positionIds: Int32Array | undefined;
    if (arch.positions === 'padding-offset') {
      positionIds = new Int32Array(B * T);
      let maxId = 0;
      for (let b = 0; b < B; b++) {
        let n = 0;
        for (let t = 0; t < T; t++) {
          const i = b * T + t;
          positionIds[i] = batch.inputIds[i] === c.padTokenId ? c.padTokenId : c.padTokenId + ++n;
          if (positionIds[i]! > maxId) maxId = positionIds[i]!;
        }
      }
      if (maxId >= c.maxPositionEmbeddings) throw new Error(`batch: position id ${maxId} (sequence length ${T} after pad_token_id ${c.padTokenId}) exceeds max_position_embeddings ${c.maxPositionEmbeddings}`);
    } else if (T > c.maxPositionEmbeddings) throw new Error(`batch: sequence length ${T} exceeds max_position_embeddings ${c.maxPositionEmbeddings}`);
    const act = arch.hiddenAct === 'gelu_new' ? geluNew : gelu;
    // A block with no units left outputs its bias alone. Without dropout, the residual add broadcasts it
    // for free; tf.broadcastTo is a Tile, which took half the forward time of a compacted model on wasm.
    const biasOnly = (name: string): Tensor =>
      training && c.hiddenDropoutProb > 0 ? tf.broadcastTo(p(name), [B, T, H]) : p(name).reshape([1, 1, H]);

    if (masks.hiddenMask) expectShape('masks.hiddenMask', masks.hiddenMask, [H]);
    if (masks.mhaMask) expectShape('masks.mhaMask', masks.mhaMask, [L]);
    if (masks.ffnMask) expectShape('masks.ffnMask', masks.ffnMask, [L]);
    if (masks.layerMask) expectShape('masks.layerMask', masks.layerMask, [L]);
    const hidden = masks.hiddenMask;
    // LayerNorm runs over the dimensions whose hidden mask is non-zero.
    // step(|h|) rather than notEqual(h, 0): the same 0/1 pattern, with a (zero) gradient when the mask is learned (CoFi).
    const keep = hidden ? tf.step(tf.abs(hidden), 0) : undefined;
    const keptCount = keep ? (tf.sum(keep).dataSync()[0] as number) : undefined;
    const ln = (x: Tensor, name: string) => {
      const y = layerNorm(x, p(`${name}.weight`), p(`${name}.bias`), c.layerNormEps, keep, keptCount);
      return hidden ? tf.mul(y, hidden) : y;
    };
    const scaleHidden = (x: Tensor) => (hidden ? tf.mul(x, hidden) : x);
    // LayerNorm of a block output plus the residual (one fused kernel without a hidden mask).
    // A bias-only block ([1, 1, H]) takes addLayerNorm's unfused path: a broadcast add (the native Add
    // handles that layout), then LayerNorm.
    const lnResidual = (out: Tensor, residual: Tensor, name: string) =>
      hidden ? ln(tf.add(out, residual), name) : addLayerNorm(out, residual, p(`${name}.weight`), p(`${name}.bias`), c.layerNormEps);

    // Without a gradient tape (inference), an intermediate is freed as soon as its consumer has run, so
    // the next output reuses memory that is still in cache: elementwise kernels writing to fresh heap
    // ran 2x slower. With a tape, tfjs keeps its own references to what the backward pass needs.
    const tapeOn = tf.engine().isTapeOn();
    const release = (...ts: Tensor[]) => {
      if (!tapeOn) for (const t of ts) t.dispose();
    };
    const consume = (t: Tensor, f: (t: Tensor) => Tensor): Tensor => {
      const out = f(t);
      if (out !== t) release(t);
      return out;
    };

    // Embeddings (in a tidy: the gathers' reshaped sources go with it).
    let x: Tensor = tf.tidy(() => {
      const words = this.embedWords(inputIds.reshape([-1])).reshape([B, T, E]);
      const positionTable = p(`${P}embeddings.position_embeddings.weight`);
      const positions = positionIds
        ? tf.gather(positionTable, tf.tensor1d(positionIds, 'int32')).reshape([B, T, E])
        : tf.slice(positionTable, [0, 0], [T, E]);
      // One token type in the whole batch (single-sentence tasks): its row is added to the positions,
      // [T, H], instead of gathering a [B, T, H] copy of it. Families without token types add type 0's
      // row when they have a table (RoBERTa's type_vocab_size 1), nothing when they have none (DistilBERT).
      const typeTable = this.params.get(`${P}embeddings.token_type_embeddings.weight`);
      const type0 = arch.tokenTypes ? (batch.tokenTypeIds[0] ?? 0) : 0;
      const oneType = !arch.tokenTypes || batch.tokenTypeIds.every((t) => t === type0);
      if (typeTable && oneType && !(type0 >= 0 && type0 < c.typeVocabSize)) throw new Error(`batch.tokenTypeIds: ${type0} is not in [0, ${c.typeVocabSize - 1}] (type_vocab_size ${c.typeVocabSize})`);
      const types = !typeTable ? undefined : oneType ? tf.slice(typeTable, [type0, 0], [1, E]) : tf.gather(typeTable, tokenTypeIds.reshape([-1])).reshape([B, T, E]);
      const positionsAndTypes = types ? tf.add(positions, types) : positions;
      // As CoFi: LayerNorm over the kept dimensions, then the hidden mask (once; the same for a 0/1 mask
      // however often it is applied, but a learned fractional mask must be applied exactly once to fold).
      const summed = tf.add(words, positionsAndTypes);
      release(words, positions, ...(types ? [types, positionsAndTypes] : []));
      if (!project) return drop(consume(summed, (t) => ln(t, `${P}embeddings.LayerNorm`)), c.hiddenDropoutProb);
      // Factorized embeddings: LayerNorm over the embedding size, then the projection to the hidden size,
      // whose output is what the hidden mask scales.
      const normed = drop(consume(summed, (t) => layerNorm(t, p(`${P}embeddings.LayerNorm.weight`), p(`${P}embeddings.LayerNorm.bias`), c.layerNormEps)), c.hiddenDropoutProb);
      return scaleHidden(consume(normed, (t) => linear(t, w(EMBEDDINGS_PROJECT), p(`${EMBEDDINGS_PROJECT}.bias`), EMBEDDINGS_PROJECT)));
    });
    const hiddenStates: Tensor3D[] = outputHiddenStates ? [x as Tensor3D] : [];

    // Additive attention mask: 0 where attended, a large negative where padded.
    const extMask = tf.mul(tf.sub(1, tf.cast(attentionMask, 'float32')), -1e9); // [B, T]

    // One encoder layer; x is the residual stream (the caller frees it).
    const layer = (l: number, x: Tensor): Tensor => {
      const n = layerParamNames(l);
      const heads = c.layerHeads[l]!;
      const inter = c.layerIntermediate[l]!;
      // Attention block. With zero heads only the output bias remains (the block's weights are gone).
      let attn: Tensor;
      if (heads > 0) {
        const q = lin(x, n.query);
        const k = lin(x, n.key);
        const v = lin(x, n.value);
        const rate = training ? c.attentionProbsDropoutProb : 0;
        let ctx = attention(q, k, v, heads, extMask, rate > 0 ? { rate, seed: rng.int() } : undefined); // [B, T, heads * d]
        release(q, k, v);
        const hm = masks.headMask?.[l];
        if (hm) {
          expectShape(`masks.headMask[${l}]`, hm, [heads]);
          ctx = consume(ctx, (t) => tf.mul(t.reshape([B, T, heads, d]), hm.reshape([1, 1, heads, 1])).reshape([B, T, heads * d]));
        }
        attn = consume(ctx, (t) => lin(t, n.attnOut));
      } else {
        attn = biasOnly(`${n.attnOut}.bias`);
      }
      if (masks.mhaMask) attn = consume(attn, (t) => tf.mul(t, tf.slice(masks.mhaMask!, [l], [1])));
      attn = consume(attn, (t) => drop(scaleHidden(t), c.hiddenDropoutProb));
      const mid = consume(attn, (t) => lnResidual(t, x, n.attnLn));

      // FFN block.
      let ffn: Tensor;
      if (inter > 0) {
        let a = consume(lin(mid, n.inter), act);
        const nm = masks.neuronMask?.[l];
        if (nm) {
          expectShape(`masks.neuronMask[${l}]`, nm, [inter]);
          a = consume(a, (t) => tf.mul(t, nm));
        }
        ffn = consume(a, (t) => lin(t, n.out));
      } else {
        ffn = biasOnly(`${n.out}.bias`);
      }
      if (masks.ffnMask) ffn = consume(ffn, (t) => tf.mul(t, tf.slice(masks.ffnMask!, [l], [1])));
      ffn = consume(ffn, (t) => drop(scaleHidden(t), c.hiddenDropoutProb));
      const out = lnResidual(ffn, mid, n.outLn);
      release(ffn, mid);
      return out;
    };
    // Each layer in its own tidy; without a tape the residual stream is freed once the next layer has
    // consumed it (unless the caller asked for every layer's output).
    const freeEarly = !outputHiddenStates && !tapeOn;
    for (let l = 0; l < L; l++) {
      const prev = x;
      const gate = masks.layerMask;
      x = tf.tidy(() => (gate ? tf.add(prev, tf.mul(tf.slice(gate, [l], [1]), tf.sub(layer(l, prev), prev))) : layer(l, prev)));
      if (outputHiddenStates) hiddenStates.push(x as Tensor3D);
      if (freeEarly) prev.dispose();
    }

    const out: ForwardOutput = { sequenceOutput: x as Tensor3D };
    if (outputHiddenStates) out.hiddenStates = hiddenStates;
    if (this.hasPooler) {
      // The head's dense layer on the first token (BERT's pooler; RoBERTa's and ELECTRA's classifier.dense
      // after a dropout; DistilBERT's pre_classifier), its activation, dropout, then the classifier.
      const rate = c.classifierDropout ?? c.hiddenDropoutProb;
      const first = arch.head.dropoutBeforeDense ? drop(clsOf(x as Tensor3D), rate) : clsOf(x as Tensor3D);
      const dense = linear(first, w(`${P}pooler.dense`), p(`${P}pooler.dense.bias`), 'pooler');
      const headAct = arch.head.activation;
      out.pooled = (headAct === 'tanh' ? tf.tanh(dense) : headAct === 'relu' ? tf.relu(dense) : gelu(dense)) as Tensor2D;
      if (this.hasClassifier) {
        out.logits = linear(drop(out.pooled, rate), w('classifier'), p('classifier.bias'), 'classifier') as Tensor2D;
      }
    }
    return out;
  }

  /** The `[in, out]` weight of linear module `name`: the parameter, or a new tensor `weight_v weight_u` for a low-rank layer (the caller disposes it then). */
  denseWeight(name: string): Tensor2D {
    if (lowRankOf(this.config, name) === undefined) return this.param(`${name}.weight`) as unknown as Tensor2D;
    return tf.matMul(this.param(`${name}.weight_v`) as unknown as Tensor2D, this.param(`${name}.weight_u`) as unknown as Tensor2D);
  }

  /**
   * Word embeddings of token `ids` (1-D int32), `[N, embeddingSize]`: rows of the table, or for factorized
   * embeddings `gather(U, ids) V` (the gather first: N r + N r E work instead of a vocab-sized product).
   */
  embedWords(ids: Tensor): Tensor2D {
    if (this.config.embeddingRank === undefined) return tf.gather(this.param(`${WORD_EMBEDDINGS}.weight`), ids) as Tensor2D;
    return tf.tidy(() => tf.matMul(tf.gather(this.param(`${WORD_EMBEDDINGS}.weight_u`), ids) as Tensor2D, this.param(`${WORD_EMBEDDINGS}.weight_v`) as unknown as Tensor2D));
  }

  /** The `[vocab, embeddingSize]` word embedding table: the parameter, or a new tensor `U V` when factorized (the caller disposes it then). */
  denseWordEmbeddings(): Tensor2D {
    if (this.config.embeddingRank === undefined) return this.param(`${WORD_EMBEDDINGS}.weight`) as unknown as Tensor2D;
    return tf.matMul(this.param(`${WORD_EMBEDDINGS}.weight_u`) as unknown as Tensor2D, this.param(`${WORD_EMBEDDINGS}.weight_v`) as unknown as Tensor2D);
  }

  /** Parameters that `filter` accepts, for an optimizer's var list. */
  trainableVariables(filter: (name: string) => boolean = () => true): tf.Variable[] {
    return [...this.params].filter(([n]) => filter(n)).map(([, v]) => v);
  }

  /** A deep copy with its own variables (a teacher, a snapshot). */
  clone(): BertModel {
    const copy = new Map<string, Tensor>();
    for (const [n, v] of this.params) copy.set(n, tf.clone(v));
    const m = new BertModel(structuredClone(this.config), copy);
    m.family = this.family;
    for (const t of copy.values()) t.dispose();
    return m;
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
    this.params.clear();
  }
}

let variableSerial = 0;

/** A [CLS] vector per example: `[batch, hidden]` from a `[batch, seq, hidden]` output. */
export function clsOf(x: Tensor3D): Tensor2D {
  const [B, T, H] = x.shape;
  // A row gather (Topiary's fast GatherV2 on wasm) rather than a strided slice, wasm's slow path.
  return tf.tidy(() => tf.gather(x.reshape([B * T, H]), tf.range(0, B * T, T, 'int32')) as Tensor2D);
}

export type { Tensor1D };
