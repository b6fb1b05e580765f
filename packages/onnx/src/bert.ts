import { EMBEDDINGS_PROJECT, layerParamNames, lowRankOf, type BertConfig, type BertModel } from '@topiary/core';
import { DataType } from './proto.js';
import { GraphBuilder } from './graph.js';

/** The opset written: 17 has LayerNormalization; everything else used is older. */
export const OPSET = 17;

/** Dynamic axes of the inputs, as transformers.js and Optimum name them. */
const BATCH = 'batch_size';
const SEQ = 'sequence_length';

/** Values the encoder layers need from the embeddings: the residual stream and the additive attention mask. */
export interface EncoderInputs {
  /** `[batch, sequence, hidden]`. */
  hidden: string;
  /** `[batch, 1, 1, sequence]`: 0 where attended, -1e9 where padded (Topiary's additive mask). */
  attentionBias: string;
}

/** Reads a parameter's float32 values and shape (linear weights in Topiary's `[in, out]` layout, what MatMul takes). */
function param(model: BertModel, name: string): { dims: number[]; values: Float32Array } {
  const v = model.param(name);
  return { dims: [...v.shape], values: v.dataSync() as Float32Array };
}

/** A parameter as an initializer, once per graph (shared weights too, see `GraphBuilder.parameter`). */
function weight(g: GraphBuilder, model: BertModel, name: string): string {
  const p = param(model, name);
  return g.parameter(name, p.dims, p.values);
}

/**
 * `x W + b` with W stored `[in, out]`: MatMul then Add (ONNX Runtime fuses them). A low-rank layer
 * (`config.lowRank`) is `(x weight_v) weight_u + b`: two MatMuls through the rank-r intermediate.
 */
export function linear(g: GraphBuilder, model: BertModel, x: string, name: string): string {
  let y: string;
  if (lowRankOf(model.config, name) === undefined) {
    y = g.op('MatMul', [x, weight(g, model, `${name}.weight`)], `${name}.matmul`);
  } else {
    const h = g.op('MatMul', [x, weight(g, model, `${name}.weight_v`)], `${name}.weight_v.matmul`);
    y = g.op('MatMul', [h, weight(g, model, `${name}.weight_u`)], `${name}.weight_u.matmul`);
  }
  return g.op('Add', [y, weight(g, model, `${name}.bias`)], `${name}.out`);
}

function layerNorm(g: GraphBuilder, model: BertModel, x: string, name: string): string {
  return g.op('LayerNormalization', [x, weight(g, model, `${name}.weight`), weight(g, model, `${name}.bias`)], `${name}.out`, {
    axis: { int: -1 },
    epsilon: model.config.layerNormEps,
  });
}

/** Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), as Hugging Face's "gelu" and Topiary's. */
function gelu(g: GraphBuilder, x: string, name: string): string {
  const scaled = g.op('Mul', [x, g.float(`${name}.inv_sqrt2`, [], [Math.SQRT1_2])], `${name}.scaled`);
  const erf = g.op('Erf', [scaled], `${name}.erf`);
  const onePlus = g.op('Add', [erf, g.float(`${name}.one`, [], [1])], `${name}.one_plus`);
  const half = g.op('Mul', [x, g.float(`${name}.half`, [], [0.5])], `${name}.half_x`);
  return g.op('Mul', [half, onePlus], `${name}.out`);
}

/** Hugging Face's "gelu_new" (ALBERT): the tanh approximation 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))). */
function geluNew(g: GraphBuilder, x: string, name: string): string {
  const cube = g.op('Mul', [g.op('Mul', [x, x], `${name}.square`), x], `${name}.cube`);
  const inner = g.op('Add', [x, g.op('Mul', [cube, g.float(`${name}.coef`, [], [0.044715])], `${name}.cube_scaled`)], `${name}.inner`);
  const t = g.op('Tanh', [g.op('Mul', [inner, g.float(`${name}.sqrt_2_over_pi`, [], [Math.sqrt(2 / Math.PI)])], `${name}.tanh_in`)], `${name}.tanh`);
  const onePlus = g.op('Add', [t, g.float(`${name}.one`, [], [1])], `${name}.one_plus`);
  const half = g.op('Mul', [x, g.float(`${name}.half`, [], [0.5])], `${name}.half_x`);
  return g.op('Mul', [half, onePlus], `${name}.out`);
}

/** An activation of `EncoderArchitecture` (`hiddenAct`, `head.activation`). */
function activation(g: GraphBuilder, kind: 'gelu' | 'gelu_new' | 'tanh' | 'relu', x: string, name: string): string {
  if (kind === 'gelu') return gelu(g, x, `${name}.gelu`);
  if (kind === 'gelu_new') return geluNew(g, x, `${name}.gelu_new`);
  return g.op(kind === 'tanh' ? 'Tanh' : 'Relu', [x], `${name}.${kind}`);
}

const P = 'bert.embeddings';

/**
 * The word embedding rows of `ids`, `[batch, sequence, width]`: a Gather from the table, or, for a
 * factorized table (`config.embeddingRank` E: `word_embeddings.weight_u` `[vocab, E]` and `weight_v`
 * `[E, width]`), the Gather from U then a MatMul by V. Every family's embeddings call this one function.
 */
export function wordEmbeddings(g: GraphBuilder, model: BertModel, ids: string): string {
  const rank = (model.config as BertConfig & { embeddingRank?: number }).embeddingRank;
  const table = `${P}.word_embeddings`;
  if (rank === undefined) return g.op('Gather', [weight(g, model, `${table}.weight`), ids], `${table}.rows`, { axis: { int: 0 } });
  const u = model.param(`${table}.weight_u`).shape;
  const v = model.param(`${table}.weight_v`).shape;
  if (u.length !== 2 || v.length !== 2 || u[1] !== rank || v[0] !== rank) {
    throw new Error(`ONNX export: config embeddingRank ${rank} needs '${table}.weight_u' [vocab, ${rank}] and '${table}.weight_v' [${rank}, width], got [${u.join(', ')}] and [${v.join(', ')}]`);
  }
  const rows = g.op('Gather', [weight(g, model, `${table}.weight_u`), ids], `${table}.weight_u.rows`, { axis: { int: 0 } });
  return g.op('MatMul', [rows, weight(g, model, `${table}.weight_v`)], `${table}.rows`);
}

/**
 * The embeddings of every family, from `config.arch`: word rows (`wordEmbeddings`), positions (the
 * first `sequence_length` rows of the table, or RoBERTa's ids counted from `pad_token_id + 1` over the
 * non-padding tokens), token types (the `token_type_ids` input's rows; a family without them adds type
 * 0's row when it has a table, as RoBERTa's single-row one), LayerNorm, then the projection to the
 * hidden size when the family has one (ELECTRA's `embeddings_project`, ALBERT's mapping). Declares
 * the int64 `[batch, sequence]` inputs (`token_type_ids` only with token types) and builds the
 * additive attention mask.
 */
export function bertEmbeddings(g: GraphBuilder, model: BertModel): EncoderInputs {
  const c = model.config;
  const arch = c.arch;
  const ids = g.input('input_ids', DataType.INT64, [BATCH, SEQ]);
  const mask = g.input('attention_mask', DataType.INT64, [BATCH, SEQ]);
  const types = arch.tokenTypes ? g.input('token_type_ids', DataType.INT64, [BATCH, SEQ]) : undefined;
  const words = wordEmbeddings(g, model, ids);
  const positionTable = weight(g, model, `${P}.position_embeddings.weight`);
  let positions: string;
  if (arch.positions === 'padding-offset') {
    // padTokenId + cumsum(not pad) on tokens, padTokenId on padding (Hugging Face's create_position_ids_from_input_ids).
    const pad = g.int64(`${P}.pad_token_id`, [c.padTokenId], []);
    const notPad = g.op('Cast', [g.op('Not', [g.op('Equal', [ids, pad], `${P}.is_pad`)], `${P}.not_pad`)], `${P}.not_pad_int`, { to: { int: DataType.INT64 } });
    const counted = g.op('CumSum', [notPad, g.int64(`${P}.seq_axis`, [1], [])], `${P}.token_index`);
    const positionIds = g.op('Add', [g.op('Mul', [counted, notPad], `${P}.token_index_masked`), pad], `${P}.position_ids`);
    positions = g.op('Gather', [positionTable, positionIds], `${P}.positions`, { axis: { int: 0 } });
  } else {
    // Positions 0..T-1 are the first T rows of the table.
    const seqLen = g.op('Shape', [ids], `${P}.seq_len`, { start: { int: 1 }, end: { int: 2 } });
    positions = g.op('Slice', [positionTable, g.int64(`${P}.zero`, [0]), seqLen, g.int64(`${P}.axis0`, [0])], `${P}.positions`);
  }
  let sum = g.op('Add', [words, positions], `${P}.words_positions`);
  const typeTable = `${P}.token_type_embeddings.weight`;
  if (types) {
    sum = g.op('Add', [sum, g.op('Gather', [weight(g, model, typeTable), types], `${P}.token_types`, { axis: { int: 0 } })], `${P}.sum`);
  } else if (model.params.has(typeTable)) {
    // Type 0's row, [1, width], broadcast over batch and sequence (a Slice: quantization leaves it float).
    const type0 = g.op('Slice', [weight(g, model, typeTable), g.int64(`${P}.type0_start`, [0]), g.int64(`${P}.type0_end`, [1]), g.int64(`${P}.type0_axis`, [0])], `${P}.token_type0`);
    sum = g.op('Add', [sum, type0], `${P}.sum`);
  }
  let hidden = layerNorm(g, model, sum, `${P}.LayerNorm`);
  if (arch.embeddingProjection) hidden = linear(g, model, hidden, EMBEDDINGS_PROJECT);

  const maskF = g.op('Cast', [mask], 'attention_mask.float', { to: { int: DataType.FLOAT } });
  const inverted = g.op('Sub', [g.float('attention_mask.one', [], [1]), maskF], 'attention_mask.inverted');
  const bias = g.op('Mul', [inverted, g.float('attention_mask.neg', [], [-1e9])], 'attention_mask.bias');
  const attentionBias = g.op('Unsqueeze', [bias, g.int64('attention_mask.axes', [1, 2])], 'attention_mask.bias4d');
  return { hidden, attentionBias };
}

/**
 * One encoder layer with its own shapes: `heads` heads of the model's head size and `inter` FFN
 * neurons. A block with nothing left is its output bias alone (what compaction keeps), added to the
 * residual before its LayerNorm.
 */
export function bertLayer(g: GraphBuilder, model: BertModel, x: string, attentionBias: string, l: number): string {
  const c = model.config;
  const n = layerParamNames(l);
  const heads = c.layerHeads[l]!;
  const inter = c.layerIntermediate[l]!;
  const d = c.attentionHeadSize;

  let attn: string;
  if (heads > 0) {
    // Per-layer Reshape constants: layers keep different numbers of heads.
    const split = g.int64(`${n.query}.split_shape`, [0, 0, heads, d]);
    const merge = g.int64(`${n.attnOut}.merge_shape`, [0, 0, heads * d]);
    const project = (name: string, perm: number[]) =>
      g.op('Transpose', [g.op('Reshape', [linear(g, model, x, name), split], `${name}.heads`)], `${name}.transposed`, { perm: { ints: perm } });
    const q = project(n.query, [0, 2, 1, 3]); // [B, heads, T, d]
    const kT = project(n.key, [0, 2, 3, 1]); // [B, heads, d, T]
    const v = project(n.value, [0, 2, 1, 3]);
    const scores = g.op('MatMul', [q, kT], `${n.query}.scores`);
    const scaled = g.op('Mul', [scores, g.float(`${n.query}.scale`, [], [1 / Math.sqrt(d)])], `${n.query}.scaled_scores`);
    const masked = g.op('Add', [scaled, attentionBias], `${n.query}.masked_scores`);
    const probs = g.op('Softmax', [masked], `${n.query}.probs`, { axis: { int: -1 } });
    const ctx = g.op('MatMul', [probs, v], `${n.value}.context`);
    const merged = g.op('Reshape', [g.op('Transpose', [ctx], `${n.value}.context_t`, { perm: { ints: [0, 2, 1, 3] } }), merge], `${n.value}.context_merged`);
    attn = linear(g, model, merged, n.attnOut);
  } else {
    attn = weight(g, model, `${n.attnOut}.bias`);
  }
  const mid = layerNorm(g, model, g.op('Add', [attn, x], `${n.attnLn}.residual`), n.attnLn);

  const ffn = inter > 0 ? linear(g, model, activation(g, c.arch.hiddenAct, linear(g, model, mid, n.inter), n.inter), n.out) : weight(g, model, `${n.out}.bias`);
  return layerNorm(g, model, g.op('Add', [ffn, mid], `${n.outLn}.residual`), n.outLn);
}

/**
 * The sequence-classification head on the first token, as `config.arch.head` describes it:
 * `classifier(activation(dense(x[:, 0])))` with the dense layer at `bert.pooler.dense` (BERT's and
 * ALBERT's pooler with tanh, RoBERTa's `classifier.dense` with tanh, ELECTRA's with GELU,
 * DistilBERT's `pre_classifier` with ReLU); output `logits`.
 */
export function bertClassificationHead(g: GraphBuilder, model: BertModel, sequenceOutput: string): void {
  if (!model.hasPooler || !model.hasClassifier) {
    throw new Error(`ONNX export: the model has no ${model.hasPooler ? 'classification head' : 'pooler (the head\'s dense layer)'} (config 'architectures' is ${model.config.architecture}); only sequence classifiers export`);
  }
  const cls = g.op('Gather', [sequenceOutput, g.int64('cls_index', [0], [])], 'bert.cls', { axis: { int: 1 } });
  const pooled = activation(g, model.config.arch.head.activation, linear(g, model, cls, 'bert.pooler.dense'), 'bert.pooler');
  const logits = linear(g, model, pooled, 'classifier');
  g.nodes.push({ opType: 'Identity', name: g.fresh('Identity:logits'), inputs: [logits], outputs: [g.fresh('logits')], attributes: {} });
  g.output('logits', DataType.FLOAT, [BATCH, model.numLabels]);
}

export interface BertGraphOptions {
  /**
   * Also output `last_hidden_state` `[batch_size, sequence_length, hidden]`, the last layer's output
   * (for comparing runtimes layer by layer; transformers.js reads `logits` only).
   */
  lastHiddenState?: boolean;
}

/**
 * The graph of a sequence classifier of any family with its real (compacted) shapes: every layer as
 * many heads and FFN neurons as it kept, hidden size as compaction left it, low-rank layers as two
 * MatMuls. What differs between families comes from `config.arch` (embeddings, activation, head).
 * Unstructured zeros stay in the dense weights. Inputs `input_ids`, `attention_mask` and, when the
 * family has token types, `token_type_ids` (int64 `[batch_size, sequence_length]`), output `logits`
 * `[batch_size, labels]`.
 */
export function bertGraph(model: BertModel, opts: BertGraphOptions = {}): GraphBuilder {
  const g = new GraphBuilder(`topiary-${model.config.modelType}`);
  const { hidden, attentionBias } = bertEmbeddings(g, model);
  let x = hidden;
  for (let l = 0; l < model.config.numHiddenLayers; l++) x = bertLayer(g, model, x, attentionBias, l);
  bertClassificationHead(g, model, x);
  if (opts.lastHiddenState) {
    g.nodes.push({ opType: 'Identity', name: g.fresh('Identity:last_hidden_state'), inputs: [x], outputs: [g.fresh('last_hidden_state')], attributes: {} });
    g.output('last_hidden_state', DataType.FLOAT, [BATCH, SEQ, model.config.hiddenSize]);
  }
  return g;
}
