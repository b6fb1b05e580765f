import { layerParamNames, type BertModel } from '@topiary/core';
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

function weight(g: GraphBuilder, model: BertModel, name: string): string {
  const p = param(model, name);
  return g.float(name, p.dims, p.values);
}

/** `x W + b` with W stored `[in, out]`: MatMul then Add (ONNX Runtime fuses them). */
export function linear(g: GraphBuilder, model: BertModel, x: string, name: string): string {
  const y = g.op('MatMul', [x, weight(g, model, `${name}.weight`)], `${name}.matmul`);
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

/**
 * BERT's embeddings (`bert.embeddings.*`): word + position + token type lookups, then LayerNorm over
 * the (kept) hidden dimensions; declares the three int64 `[batch, sequence]` inputs and builds the
 * additive attention mask. Other families plug in their own function of this shape.
 */
export function bertEmbeddings(g: GraphBuilder, model: BertModel): EncoderInputs {
  const ids = g.input('input_ids', DataType.INT64, [BATCH, SEQ]);
  const mask = g.input('attention_mask', DataType.INT64, [BATCH, SEQ]);
  const types = g.input('token_type_ids', DataType.INT64, [BATCH, SEQ]);
  const P = 'bert.embeddings';
  const words = g.op('Gather', [weight(g, model, `${P}.word_embeddings.weight`), ids], `${P}.words`, { axis: { int: 0 } });
  // Positions 0..T-1 are the first T rows of the table.
  const seqLen = g.op('Shape', [ids], `${P}.seq_len`, { start: { int: 1 }, end: { int: 2 } });
  const positions = g.op('Slice', [weight(g, model, `${P}.position_embeddings.weight`), g.int64(`${P}.zero`, [0]), seqLen, g.int64(`${P}.axis0`, [0])], `${P}.positions`);
  const typeRows = g.op('Gather', [weight(g, model, `${P}.token_type_embeddings.weight`), types], `${P}.token_types`, { axis: { int: 0 } });
  const sum = g.op('Add', [g.op('Add', [words, positions], `${P}.words_positions`), typeRows], `${P}.sum`);
  const hidden = layerNorm(g, model, sum, `${P}.LayerNorm`);

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

  const ffn = inter > 0 ? linear(g, model, gelu(g, linear(g, model, mid, n.inter), `${n.inter}.gelu`), n.out) : weight(g, model, `${n.out}.bias`);
  return layerNorm(g, model, g.op('Add', [ffn, mid], `${n.outLn}.residual`), n.outLn);
}

/** BERT's pooler and sequence-classification head: tanh(dense([CLS])) then the classifier; output `logits`. */
export function bertClassificationHead(g: GraphBuilder, model: BertModel, sequenceOutput: string): void {
  if (!model.hasPooler || !model.hasClassifier) {
    throw new Error(`ONNX export: the model has no ${model.hasPooler ? 'classification head' : 'pooler'} (config 'architectures' is ${model.config.architecture}); only BertForSequenceClassification exports`);
  }
  const cls = g.op('Gather', [sequenceOutput, g.int64('cls_index', [0], [])], 'bert.cls', { axis: { int: 1 } });
  const pooled = g.op('Tanh', [linear(g, model, cls, 'bert.pooler.dense')], 'bert.pooler.out');
  const logits = linear(g, model, pooled, 'classifier');
  g.nodes.push({ opType: 'Identity', name: g.fresh('Identity:logits'), inputs: [logits], outputs: [g.fresh('logits')], attributes: {} });
  g.output('logits', DataType.FLOAT, [BATCH, model.numLabels]);
}

/**
 * The graph of a `BertForSequenceClassification` with its real (compacted) shapes: every layer as
 * many heads and FFN neurons as it kept, hidden size as compaction left it. Unstructured zeros stay
 * in the dense weights. Inputs `input_ids`, `attention_mask`, `token_type_ids` (int64
 * `[batch_size, sequence_length]`), output `logits` `[batch_size, labels]`.
 */
export function bertGraph(model: BertModel): GraphBuilder {
  // The graph is BERT's embeddings and head; the other families' (position ids, projections, heads) are not written yet.
  if (model.config.modelType !== 'bert') {
    throw new Error(`ONNX export supports model_type "bert" only for now, got ${JSON.stringify(model.config.modelType)} (export it with --format safetensors)`);
  }
  const lowRank = Object.keys(model.config.lowRank ?? {});
  if (lowRank.length > 0) {
    throw new Error(`ONNX export of low-rank (factorized) layers is not written yet: ${lowRank.join(', ')} (export it with --format safetensors)`);
  }
  const g = new GraphBuilder('topiary-bert');
  const { hidden, attentionBias } = bertEmbeddings(g, model);
  let x = hidden;
  for (let l = 0; l < model.config.numHiddenLayers; l++) x = bertLayer(g, model, x, attentionBias, l);
  bertClassificationHead(g, model, x);
  return g;
}
