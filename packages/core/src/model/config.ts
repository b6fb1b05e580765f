/**
 * The model configuration, read from and written to a Hugging Face `config.json`.
 *
 * A compacted model may have a different number of heads and FFN neurons in every layer (0 when the
 * whole block is gone); Hugging Face records removed heads as `pruned_heads`, and we also record the
 * per-layer sizes explicitly (`topiary_layer_heads`, `topiary_layer_intermediate`) so a reload needs no
 * arithmetic.
 */
export interface BertConfig {
  vocabSize: number;
  hiddenSize: number;
  numHiddenLayers: number;
  /** Heads per layer in the original (unpruned) architecture. */
  numAttentionHeads: number;
  /** Size of one head; stays fixed when heads are removed. */
  attentionHeadSize: number;
  /** Heads that remain, per layer. */
  layerHeads: number[];
  /** FFN width per layer (0 when the FFN block is removed). */
  layerIntermediate: number[];
  intermediateSize: number;
  maxPositionEmbeddings: number;
  typeVocabSize: number;
  layerNormEps: number;
  hiddenDropoutProb: number;
  attentionProbsDropoutProb: number;
  classifierDropout: number | null;
  /** Labels of the classification head, index = class id; empty when there is no head. */
  id2label: string[];
  architecture: 'BertForSequenceClassification' | 'BertForMaskedLM' | 'BertModel';
  /** Indices (in the original numbering) of the heads removed from each layer. */
  prunedHeads: Record<string, number[]>;
  /** The raw config.json, so fields we do not model survive a round trip. */
  raw: Record<string, unknown>;
  /** The checkpoint's family (`model_type`); its adapter maps names and config fields (`model/families`). */
  modelType: string;
  /** Width of the embedding tables (ELECTRA, ALBERT factorize them; else `hiddenSize`). */
  embeddingSize: number;
  /** `pad_token_id` (RoBERTa's position ids count from it). */
  padTokenId: number;
  /** What the family's embeddings, activation and head compute (declarative: exporters switch on it). */
  arch: EncoderArchitecture;
  /**
   * Low-rank linear layers: module name (`bert.encoder.layer.0.intermediate.dense`) -> rank r. Such a
   * layer holds `weight_u` / `weight_v` instead of `weight` (see `BertModel`); `topiary_low_rank` in config.json.
   */
  lowRank?: Record<string, number>;
  /**
   * Factorized word embeddings (ALBERT's factorization, applied after training): rank E. The table is
   * stored as `<prefix>embeddings.word_embeddings.weight_u` `[vocab, E]` and `.weight_v`
   * `[E, embeddingSize]` instead of `.weight`; a token's embedding is `U[id] V`. `topiary_embedding_rank` in config.json.
   */
  embeddingRank?: number;
}

/**
 * The parts of an encoder that differ between families, as data. One encoder implementation
 * (`BertModel`) reads it; an exporter (ONNX) can switch on it the same way.
 */
export interface EncoderArchitecture {
  /**
   * `absolute`: position ids 0..T-1 (BERT). `padding-offset`: RoBERTa's, `padTokenId + 1 + i` counting
   * only non-padding tokens, `padTokenId` on padding.
   */
  positions: 'absolute' | 'padding-offset';
  /** Whether token type ids are read; when not, type 0's row is added if the table exists. */
  tokenTypes: boolean;
  /** A linear map `embeddingSize -> hiddenSize` after the embedding LayerNorm (`bert.embeddings_project`). */
  embeddingProjection: boolean;
  /** The FFN activation: exact erf GELU, or the tanh approximation (`gelu_new`, ALBERT). */
  hiddenAct: 'gelu' | 'gelu_new';
  /**
   * The classification head on the first token: `dense -> activation -> classifier`, with the dense
   * layer at `bert.pooler.dense` (BERT's pooler, RoBERTa's `classifier.dense`, DistilBERT's
   * `pre_classifier`) and the last at `classifier`. `dropoutBeforeDense`: dropout on the first token too.
   */
  head: { activation: 'tanh' | 'gelu' | 'relu'; dropoutBeforeDense: boolean };
  /** ALBERT: the checkpoint's layers share `groups` sets of weights (unshared at load, see README). */
  sharedLayerGroups?: number;
}

export const BERT_ARCHITECTURE: EncoderArchitecture = {
  positions: 'absolute',
  tokenTypes: true,
  embeddingProjection: false,
  hiddenAct: 'gelu',
  head: { activation: 'tanh', dropoutBeforeDense: false },
};

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function need<T>(raw: Record<string, unknown>, field: string, file: string, check: (v: unknown) => v is T, expected: string): T {
  const v = raw[field];
  if (!check(v)) throw new ConfigError(`${file}: field '${field}' must be ${expected}, got ${JSON.stringify(v)}`);
  return v;
}
const isPosInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

export function parseBertConfig(raw: Record<string, unknown>, file = 'config.json'): BertConfig {
  const modelType = raw['model_type'];
  if (modelType !== undefined && modelType !== 'bert') {
    throw new ConfigError(`${file}: field 'model_type' must be "bert", got ${JSON.stringify(modelType)}`);
  }
  if (raw['hidden_act'] !== undefined && raw['hidden_act'] !== 'gelu') {
    throw new ConfigError(`${file}: field 'hidden_act' must be "gelu" (exact erf GELU), got ${JSON.stringify(raw['hidden_act'])}`);
  }
  const c = parseEncoderConfig(raw, file);
  c.embeddingSize = c.hiddenSize; // BERT does not factorize its embeddings
  return c;
}

/**
 * The encoder fields of a config in BERT's field names (`hidden_size`, `num_hidden_layers`...), for any
 * family: a family adapter renames its fields to these first. `architectures[0]` is read by its suffix
 * (`RobertaForSequenceClassification` is a sequence classifier).
 */
export function parseEncoderConfig(raw: Record<string, unknown>, file = 'config.json'): BertConfig {
  const hiddenSize = need(raw, 'hidden_size', file, isPosInt, 'a positive integer');
  const numHiddenLayers = need(raw, 'num_hidden_layers', file, isPosInt, 'a positive integer');
  const numAttentionHeads = need(raw, 'num_attention_heads', file, isPosInt, 'a positive integer');
  const intermediateSize = need(raw, 'intermediate_size', file, isPosInt, 'a positive integer');
  const attentionHeadSize = isPosInt(raw['attention_head_size'])
    ? (raw['attention_head_size'] as number)
    : hiddenSize / numAttentionHeads;
  if (!Number.isInteger(attentionHeadSize)) {
    throw new ConfigError(`${file}: hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numAttentionHeads}`);
  }
  const prunedHeads: Record<string, number[]> = {};
  const ph = raw['pruned_heads'];
  if (ph && typeof ph === 'object') {
    for (const [k, v] of Object.entries(ph as Record<string, unknown>)) {
      if (!Array.isArray(v)) throw new ConfigError(`${file}: field 'pruned_heads.${k}' must be a list of head indices`);
      prunedHeads[k] = v.map(Number);
    }
  }
  const perLayer = (field: string, fallback: (l: number) => number): number[] => {
    const v = raw[field];
    if (v === undefined) return Array.from({ length: numHiddenLayers }, (_, l) => fallback(l));
    if (!Array.isArray(v) || v.length !== numHiddenLayers || !v.every((x) => Number.isInteger(x) && x >= 0)) {
      throw new ConfigError(`${file}: field '${field}' must be a list of ${numHiddenLayers} non-negative integers`);
    }
    return v as number[];
  };
  const layerHeads = perLayer('topiary_layer_heads', (l) => numAttentionHeads - (prunedHeads[String(l)]?.length ?? 0));
  const layerIntermediate = perLayer('topiary_layer_intermediate', () => intermediateSize);
  let id2label: string[] = [];
  const i2l = raw['id2label'];
  const archName = Array.isArray(raw['architectures']) ? String((raw['architectures'] as unknown[])[0]) : 'BertModel';
  const arch = archName.endsWith('ForSequenceClassification') ? 'BertForSequenceClassification' : archName.endsWith('ForMaskedLM') ? 'BertForMaskedLM' : archName;
  if (i2l && typeof i2l === 'object' && arch === 'BertForSequenceClassification') {
    const entries = Object.entries(i2l as Record<string, string>);
    id2label = new Array<string>(entries.length);
    for (const [k, v] of entries) {
      const i = Number(k);
      if (!Number.isInteger(i) || i < 0 || i >= entries.length) {
        throw new ConfigError(`${file}: field 'id2label' has key ${JSON.stringify(k)}, expected ids 0..${entries.length - 1}`);
      }
      id2label[i] = String(v);
    }
  }
  const architecture =
    arch === 'BertForSequenceClassification' || arch === 'BertForMaskedLM' ? arch : ('BertModel' as const);
  const cd = raw['classifier_dropout'];
  let lowRank: Record<string, number> | undefined;
  const lr = raw['topiary_low_rank'];
  if (lr !== undefined && lr !== null) {
    if (typeof lr !== 'object' || Array.isArray(lr)) throw new ConfigError(`${file}: field 'topiary_low_rank' must be an object {"<linear module name>": rank}, got ${JSON.stringify(lr)}`);
    lowRank = {};
    for (const [k, v] of Object.entries(lr as Record<string, unknown>)) {
      if (!isPosInt(v)) throw new ConfigError(`${file}: field 'topiary_low_rank.${k}' must be a positive integer rank, got ${JSON.stringify(v)}`);
      lowRank[k] = v;
    }
  }
  const er = raw['topiary_embedding_rank'];
  if (er !== undefined && er !== null && !isPosInt(er)) throw new ConfigError(`${file}: field 'topiary_embedding_rank' must be a positive integer rank, got ${JSON.stringify(er)}`);
  return {
    vocabSize: need(raw, 'vocab_size', file, isPosInt, 'a positive integer'),
    hiddenSize,
    numHiddenLayers,
    numAttentionHeads,
    attentionHeadSize,
    layerHeads,
    layerIntermediate,
    intermediateSize,
    maxPositionEmbeddings: need(raw, 'max_position_embeddings', file, isPosInt, 'a positive integer'),
    typeVocabSize: isPosInt(raw['type_vocab_size']) ? (raw['type_vocab_size'] as number) : 2,
    layerNormEps: isNum(raw['layer_norm_eps']) ? (raw['layer_norm_eps'] as number) : 1e-12,
    hiddenDropoutProb: isNum(raw['hidden_dropout_prob']) ? (raw['hidden_dropout_prob'] as number) : 0.1,
    attentionProbsDropoutProb: isNum(raw['attention_probs_dropout_prob'])
      ? (raw['attention_probs_dropout_prob'] as number)
      : 0.1,
    classifierDropout: isNum(cd) ? cd : null,
    id2label,
    architecture,
    prunedHeads,
    raw,
    modelType: 'bert',
    embeddingSize: isPosInt(raw['embedding_size']) ? (raw['embedding_size'] as number) : hiddenSize,
    padTokenId: Number.isInteger(raw['pad_token_id']) ? (raw['pad_token_id'] as number) : 0,
    arch: structuredClone(BERT_ARCHITECTURE),
    ...(lowRank && Object.keys(lowRank).length > 0 ? { lowRank } : {}),
    ...(isPosInt(er) ? { embeddingRank: er as number } : {}),
  };
}

/** Serializes a config the way Hugging Face writes it, plus Topiary's per-layer sizes. */
export function serializeBertConfig(c: BertConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { ...c.raw };
  Object.assign(out, {
    architectures: [c.architecture],
    model_type: 'bert',
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    num_hidden_layers: c.numHiddenLayers,
    num_attention_heads: c.numAttentionHeads,
    intermediate_size: c.intermediateSize,
    hidden_act: 'gelu',
    max_position_embeddings: c.maxPositionEmbeddings,
    type_vocab_size: c.typeVocabSize,
    layer_norm_eps: c.layerNormEps,
    hidden_dropout_prob: c.hiddenDropoutProb,
    attention_probs_dropout_prob: c.attentionProbsDropoutProb,
    classifier_dropout: c.classifierDropout,
    pruned_heads: c.prunedHeads,
    topiary_layer_heads: c.layerHeads,
    topiary_layer_intermediate: c.layerIntermediate,
  });
  if (c.lowRank && Object.keys(c.lowRank).length > 0) out['topiary_low_rank'] = { ...c.lowRank };
  else delete out['topiary_low_rank'];
  if (c.embeddingRank !== undefined) out['topiary_embedding_rank'] = c.embeddingRank;
  else delete out['topiary_embedding_rank'];
  if (c.attentionHeadSize * c.numAttentionHeads !== c.hiddenSize) out['attention_head_size'] = c.attentionHeadSize;
  else delete out['attention_head_size'];
  if (c.id2label.length > 0) {
    out['id2label'] = Object.fromEntries(c.id2label.map((l, i) => [String(i), l]));
    out['label2id'] = Object.fromEntries(c.id2label.map((l, i) => [l, i]));
  }
  return out;
}
