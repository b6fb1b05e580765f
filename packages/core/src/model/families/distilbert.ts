import { ConfigError, parseEncoderConfig, serializeBertConfig, type BertConfig } from '../config.js';
import { architectureName, exportByRenaming, importByRenaming, renameFields, type LayerPart, type ModelFamily, type RenamingSpec } from './family.js';

/** BERT's config fields -> DistilBERT's. */
const FIELDS: Record<string, string> = {
  hidden_size: 'dim',
  num_hidden_layers: 'n_layers',
  num_attention_heads: 'n_heads',
  intermediate_size: 'hidden_dim',
  hidden_act: 'activation',
  hidden_dropout_prob: 'dropout',
  attention_probs_dropout_prob: 'attention_dropout',
  classifier_dropout: 'seq_classif_dropout',
};

const LAYER: Record<LayerPart, string> = {
  query: 'attention.q_lin',
  key: 'attention.k_lin',
  value: 'attention.v_lin',
  attnOut: 'attention.out_lin',
  attnLn: 'sa_layer_norm',
  inter: 'ffn.lin1',
  out: 'ffn.lin2',
  outLn: 'output_layer_norm',
};

const names: RenamingSpec = {
  basePrefix: 'distilbert.',
  module(n) {
    if (n === 'bert.pooler.dense') return 'pre_classifier';
    if (n === 'classifier') return 'classifier';
    if (n === 'bert.embeddings.token_type_embeddings') return undefined;
    return n.startsWith('bert.embeddings.') ? n.replace(/^bert\./, 'distilbert.') : undefined;
  },
  layer: (l, part) => `distilbert.transformer.layer.${l}.${LAYER[part]}`,
};

/**
 * DistilBERT: BERT's post-LayerNorm layers with other names (`q_lin`..., `ffn.lin1/lin2`,
 * `sa_layer_norm`/`output_layer_norm`), no token types, no pooler, and the head
 * `pre_classifier -> ReLU -> dropout -> classifier` on `[CLS]`. LayerNorm eps is fixed at 1e-12.
 */
export const distilbertFamily: ModelFamily = {
  id: 'distilbert',
  description: 'DistilBERT (DistilBertModel, DistilBertForSequenceClassification)',
  parseConfig(raw, file) {
    if (raw['sinusoidal_pos_embds'] === true) throw new ConfigError(`${file}: field 'sinusoidal_pos_embds' must be false (learned position embeddings), got true`);
    if (raw['activation'] !== undefined && raw['activation'] !== 'gelu') {
      throw new ConfigError(`${file}: field 'activation' must be "gelu" (exact erf GELU), got ${JSON.stringify(raw['activation'])}`);
    }
    const c = parseEncoderConfig(renameFields(raw, FIELDS, true), file);
    c.raw = raw;
    c.modelType = 'distilbert';
    c.typeVocabSize = 0;
    c.layerNormEps = 1e-12;
    c.arch = { positions: 'absolute', tokenTypes: false, embeddingProjection: false, hiddenAct: 'gelu', head: { activation: 'relu', dropoutBeforeDense: false } };
    return c;
  },
  serializeConfig(c: BertConfig) {
    const bert = serializeBertConfig(c);
    delete bert['type_vocab_size'];
    delete bert['layer_norm_eps'];
    return { ...renameFields(bert, FIELDS, false), model_type: 'distilbert', architectures: [architectureName(c, 'DistilBert')] };
  },
  importTensors: (tensors, config, file) => importByRenaming(tensors, config, names, file),
  exportTensors: (tensors, config) => ({ tensors: exportByRenaming(tensors, config, names), config }),
};
