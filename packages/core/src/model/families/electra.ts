import { ConfigError, parseEncoderConfig, serializeBertConfig, type BertConfig } from '../config.js';
import { layerParamNames } from '../bert.js';
import { architectureName, exportByRenaming, importByRenaming, type ModelFamily, type RenamingSpec } from './family.js';

const names: RenamingSpec = {
  basePrefix: 'electra.',
  module(n) {
    if (n === 'bert.pooler.dense') return 'classifier.dense';
    if (n === 'classifier') return 'classifier.out_proj';
    if (n === 'bert.embeddings_project') return 'electra.embeddings_project';
    return n.startsWith('bert.embeddings.') ? n.replace(/^bert\./, 'electra.') : undefined;
  },
  layer: (l, part) => layerParamNames(l)[part].replace(/^bert\./, 'electra.'),
};

/**
 * ELECTRA (the discriminator): BERT's layers under `electra.`, embeddings of `embedding_size` mapped to
 * the hidden size by `embeddings_project` when the two differ, and the head
 * `dropout -> classifier.dense -> gelu -> dropout -> classifier.out_proj` on `[CLS]`.
 */
export const electraFamily: ModelFamily = {
  id: 'electra',
  description: 'ELECTRA (ElectraModel, ElectraForSequenceClassification; discriminator)',
  parseConfig(raw, file) {
    if (raw['hidden_act'] !== undefined && raw['hidden_act'] !== 'gelu') {
      throw new ConfigError(`${file}: field 'hidden_act' must be "gelu" (exact erf GELU), got ${JSON.stringify(raw['hidden_act'])}`);
    }
    const c = parseEncoderConfig(raw, file);
    c.modelType = 'electra';
    // Hugging Face builds the projection only when the sizes differ; a compacted model whose hidden size
    // came down to the embedding size keeps it (Topiary's own flag).
    const projection = c.embeddingSize !== c.hiddenSize || raw['topiary_embeddings_project'] === true;
    c.arch = { positions: 'absolute', tokenTypes: true, embeddingProjection: projection, hiddenAct: 'gelu', head: { activation: 'gelu', dropoutBeforeDense: true } };
    return c;
  },
  serializeConfig(c: BertConfig) {
    const out: Record<string, unknown> = { ...serializeBertConfig(c), model_type: 'electra', architectures: [architectureName(c, 'Electra')], embedding_size: c.embeddingSize };
    if (c.arch.embeddingProjection && c.embeddingSize === c.hiddenSize) out['topiary_embeddings_project'] = true;
    else delete out['topiary_embeddings_project'];
    return out;
  },
  importTensors: (tensors, config, file) => importByRenaming(tensors, config, names, file),
  exportTensors: (tensors, config) => ({ tensors: exportByRenaming(tensors, config, names), config }),
};
