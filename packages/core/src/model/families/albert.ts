import type { NamedTensor } from '../../io/safetensors.js';
import { ConfigError, parseEncoderConfig, serializeBertConfig, type BertConfig } from '../config.js';
import { layerParamNames } from '../bert.js';
import { architectureName, exportByRenaming, importByRenaming, renameFields, type LayerPart, type ModelFamily, type RenamingSpec } from './family.js';

const FIELDS: Record<string, string> = { classifier_dropout: 'classifier_dropout_prob' };

const LAYER: Record<LayerPart, string> = {
  query: 'attention.query',
  key: 'attention.key',
  value: 'attention.value',
  attnOut: 'attention.dense',
  attnLn: 'attention.LayerNorm',
  inter: 'ffn',
  out: 'ffn_output',
  outLn: 'full_layer_layer_norm',
};

/** Hugging Face's group of layer `l`: `int(l / (num_hidden_layers / num_hidden_groups))`. */
const groupOf = (l: number, layers: number, groups: number) => Math.floor(l / (layers / groups));

function names(c: BertConfig, groups: number): RenamingSpec {
  return {
    basePrefix: 'albert.',
    module(n) {
      if (n === 'bert.pooler.dense') return 'albert.pooler';
      if (n === 'classifier') return 'classifier';
      if (n === 'bert.embeddings_project') return 'albert.encoder.embedding_hidden_mapping_in';
      return n.startsWith('bert.embeddings.') ? n.replace(/^bert\./, 'albert.') : undefined;
    },
    layer: (l, part) => `albert.encoder.albert_layer_groups.${groupOf(l, c.numHiddenLayers, groups)}.albert_layers.0.${LAYER[part]}`,
  };
}

/** True when every layer has layer 0's parameters exactly (still one shared layer). */
function allLayersEqual(tensors: Map<string, NamedTensor>, c: BertConfig): boolean {
  const first = layerParamNames(0);
  for (let l = 1; l < c.numHiddenLayers; l++) {
    const n = layerParamNames(l);
    for (const part of Object.keys(first) as LayerPart[]) {
      for (const s of ['.weight', '.bias']) {
        const a = tensors.get(first[part] + s);
        const b = tensors.get(n[part] + s);
        if (!a || !b || a.shape.join() !== b.shape.join() || a.data.length !== b.data.length) return false;
        for (let i = 0; i < a.data.length; i++) if (a.data[i] !== b.data[i]) return false;
      }
    }
  }
  return true;
}

/**
 * ALBERT: factorized embeddings (`embedding_size`, then `embedding_hidden_mapping_in`), `num_hidden_groups`
 * layer groups of one layer each (`inner_group_num` 1) applied `num_hidden_layers` times, `gelu_new`,
 * BERT's pooler (`albert.pooler`) and classifier. Pruning rule: the shared layer is unshared at load
 * into one copy per use, so every method prunes each use on its own; a model saved while its layers are
 * still identical is written shared again (one group), else with one group per layer
 * (`num_hidden_groups` = `num_hidden_layers`, which Hugging Face loads as is).
 */
export const albertFamily: ModelFamily = {
  id: 'albert',
  description: 'ALBERT (AlbertModel, AlbertForSequenceClassification); shared layers unshared at load',
  parseConfig(raw, file) {
    const act = raw['hidden_act'] ?? 'gelu_new';
    if (act !== 'gelu_new' && act !== 'gelu') throw new ConfigError(`${file}: field 'hidden_act' must be "gelu_new" or "gelu", got ${JSON.stringify(act)}`);
    const inner = raw['inner_group_num'] ?? 1;
    if (inner !== 1) throw new ConfigError(`${file}: field 'inner_group_num' must be 1 (one layer per group), got ${JSON.stringify(inner)}`);
    const c = parseEncoderConfig(renameFields(raw, FIELDS, true), file);
    c.raw = raw;
    c.modelType = 'albert';
    const groups = raw['num_hidden_groups'] ?? 1;
    if (!Number.isInteger(groups) || (groups as number) < 1 || (groups as number) > c.numHiddenLayers) {
      throw new ConfigError(`${file}: field 'num_hidden_groups' must be an integer in 1..${c.numHiddenLayers}, got ${JSON.stringify(groups)}`);
    }
    if (!Number.isInteger(raw['embedding_size'])) c.embeddingSize = 128;
    c.arch = {
      positions: 'absolute',
      tokenTypes: true,
      embeddingProjection: true,
      hiddenAct: act,
      head: { activation: 'tanh', dropoutBeforeDense: false },
      sharedLayerGroups: groups as number,
    };
    return c;
  },
  serializeConfig(c: BertConfig) {
    const out = renameFields(serializeBertConfig(c), FIELDS, false);
    return {
      ...out,
      model_type: 'albert',
      architectures: [architectureName(c, 'Albert')],
      hidden_act: c.arch.hiddenAct,
      embedding_size: c.embeddingSize,
      num_hidden_groups: c.arch.sharedLayerGroups ?? c.numHiddenLayers,
      inner_group_num: 1,
    };
  },
  importTensors: (tensors, config, file) => importByRenaming(tensors, config, names(config, config.arch.sharedLayerGroups ?? config.numHiddenLayers), file),
  exportTensors(tensors, config) {
    const groups = allLayersEqual(tensors, config) ? 1 : config.numHiddenLayers;
    const c = structuredClone(config);
    c.arch.sharedLayerGroups = groups;
    return { tensors: exportByRenaming(tensors, c, names(c, groups)), config: c };
  },
};
