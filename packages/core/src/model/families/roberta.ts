import { ConfigError, parseEncoderConfig, serializeBertConfig, type BertConfig } from '../config.js';
import { layerParamNames } from '../bert.js';
import { architectureName, exportByRenaming, importByRenaming, type ModelFamily, type RenamingSpec } from './family.js';

const names: RenamingSpec = {
  basePrefix: 'roberta.',
  module(n) {
    if (n === 'bert.pooler.dense') return 'classifier.dense';
    if (n === 'classifier') return 'classifier.out_proj';
    return n.startsWith('bert.embeddings.') ? n.replace(/^bert\./, 'roberta.') : undefined;
  },
  layer: (l, part) => layerParamNames(l)[part].replace(/^bert\./, 'roberta.'),
};

/**
 * RoBERTa and XLM-R: BERT's layers under `roberta.`, position ids counted from `pad_token_id + 1` over
 * non-padding tokens, no token types (type_vocab_size 1: type 0's row is added), and the head
 * `dropout -> classifier.dense -> tanh -> dropout -> classifier.out_proj` on `<s>`.
 */
function robertaLike(id: string, classPrefix: string, description: string): ModelFamily {
  return {
    id,
    description,
    parseConfig(raw, file) {
      if (raw['hidden_act'] !== undefined && raw['hidden_act'] !== 'gelu') {
        throw new ConfigError(`${file}: field 'hidden_act' must be "gelu" (exact erf GELU), got ${JSON.stringify(raw['hidden_act'])}`);
      }
      const c = parseEncoderConfig(raw, file);
      c.modelType = id;
      c.padTokenId = Number.isInteger(raw['pad_token_id']) ? (raw['pad_token_id'] as number) : 1;
      c.typeVocabSize = Number.isInteger(raw['type_vocab_size']) ? (raw['type_vocab_size'] as number) : 1;
      c.arch = { positions: 'padding-offset', tokenTypes: false, embeddingProjection: false, hiddenAct: 'gelu', head: { activation: 'tanh', dropoutBeforeDense: true } };
      return c;
    },
    serializeConfig(c: BertConfig) {
      return { ...serializeBertConfig(c), model_type: id, architectures: [architectureName(c, classPrefix)], pad_token_id: c.padTokenId };
    },
    importTensors: (tensors, config, file) => importByRenaming(tensors, config, names, file),
    exportTensors: (tensors, config) => ({ tensors: exportByRenaming(tensors, config, names), config }),
  };
}

export const robertaFamily = robertaLike('roberta', 'Roberta', 'RoBERTa (RobertaModel, RobertaForSequenceClassification)');
export const xlmRobertaFamily = robertaLike('xlm-roberta', 'XLMRoberta', 'XLM-RoBERTa (XLMRobertaModel, XLMRobertaForSequenceClassification)');
