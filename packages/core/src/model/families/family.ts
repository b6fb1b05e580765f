import type { NamedTensor } from '../../io/safetensors.js';
import { layerParamNames } from '../bert.js';
import { ConfigError, type BertConfig } from '../config.js';

/**
 * A family of the BERT architecture (BERT, RoBERTa, DistilBERT...): how its checkpoints name tensors and
 * config fields, mapped to and from Topiary's one encoder. Inside Topiary every family uses the canonical
 * names of `layerParamNames` (`bert.encoder.layer.N...`) plus `bert.embeddings.*`,
 * `bert.embeddings_project`, `bert.pooler.dense` (the head's dense layer) and `classifier`, so criteria,
 * pruners and compaction never see family names. Registered like criteria (`provide(container,
 * { kind: 'family', ... })`), selected by `model_type` in config.json.
 */
export interface ModelFamily {
  /** The `model_type` it reads and writes. */
  readonly id: string;
  readonly description: string;
  /** config.json -> the encoder's config (`modelType` = `id`, `arch` filled in). */
  parseConfig(raw: Record<string, unknown>, file: string): BertConfig;
  /** The encoder's config -> the family's config.json (its own field names, `model_type`, `architectures`). */
  serializeConfig(config: BertConfig): Record<string, unknown>;
  /** Checkpoint tensors (family names, Hugging Face layout) -> canonical names. `file` names the checkpoint in errors. */
  importTensors(tensors: Map<string, NamedTensor>, config: BertConfig, file: string): Map<string, NamedTensor>;
  /** Canonical tensors -> the family's names, and the config to write with them (ALBERT regroups its layers). */
  exportTensors(tensors: Map<string, NamedTensor>, config: BertConfig): { tensors: Map<string, NamedTensor>; config: BertConfig };
}

/** Canonical names of a config's parameters, and whether a checkpoint must have each. */
export function canonicalParams(c: BertConfig): { name: string; required: boolean }[] {
  const out: { name: string; required: boolean }[] = [];
  const wb = (n: string, required: boolean) => out.push({ name: `${n}.weight`, required }, { name: `${n}.bias`, required });
  // Factorized word embeddings (config.embeddingRank) have their two factors instead of the table.
  if (c.embeddingRank === undefined) out.push({ name: 'bert.embeddings.word_embeddings.weight', required: true });
  else out.push({ name: 'bert.embeddings.word_embeddings.weight_u', required: true }, { name: 'bert.embeddings.word_embeddings.weight_v', required: true });
  out.push({ name: 'bert.embeddings.position_embeddings.weight', required: true });
  out.push({ name: 'bert.embeddings.token_type_embeddings.weight', required: c.arch.tokenTypes });
  wb('bert.embeddings.LayerNorm', true);
  if (c.arch.embeddingProjection) wb('bert.embeddings_project', true);
  for (let l = 0; l < c.numHiddenLayers; l++) {
    for (const n of Object.values(layerParamNames(l))) {
      // A low-rank layer (config.lowRank) has its two factors instead of the weight.
      if (c.lowRank?.[n] === undefined) wb(n, true);
      else out.push({ name: `${n}.weight_u`, required: true }, { name: `${n}.weight_v`, required: true }, { name: `${n}.bias`, required: true });
    }
  }
  wb('bert.pooler.dense', false);
  wb('classifier', false);
  return out;
}

export type LayerPart = keyof ReturnType<typeof layerParamNames>;

/** A family whose names are a renaming of the canonical ones (one Hugging Face tensor per canonical parameter). */
export interface RenamingSpec {
  /** Hugging Face name of a non-layer module (canonical module name without `.weight`/`.bias`), or undefined if the family has none. */
  module(canonical: string): string | undefined;
  /** Hugging Face module name of layer `l`'s part. */
  layer(l: number, part: LayerPart): string;
  /**
   * The base model's prefix (`roberta.`): a checkpoint saved from the bare model (`RobertaModel`) names
   * its tensors without it.
   */
  basePrefix?: string;
}

function renameTable(c: BertConfig, spec: RenamingSpec): Map<string, string> {
  const table = new Map<string, string>(); // canonical -> hf
  const parts = Object.keys(layerParamNames(0)) as LayerPart[];
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const n = layerParamNames(l);
    for (const part of parts) for (const s of ['weight', 'bias', 'weight_u', 'weight_v']) table.set(`${n[part]}.${s}`, `${spec.layer(l, part)}.${s}`);
  }
  for (const { name } of canonicalParams(c)) {
    if (table.has(name)) continue;
    const dot = name.lastIndexOf('.');
    const hf = spec.module(name.slice(0, dot));
    if (hf) table.set(name, `${hf}${name.slice(dot)}`);
  }
  return table;
}

/** Imports by renaming: every required canonical parameter must be present; tensors the encoder does not use (MLM heads, buffers) are skipped. */
export function importByRenaming(tensors: Map<string, NamedTensor>, c: BertConfig, spec: RenamingSpec, file: string): Map<string, NamedTensor> {
  const table = renameTable(c, spec);
  const out = new Map<string, NamedTensor>();
  for (const { name, required } of canonicalParams(c)) {
    const hf = table.get(name);
    const bare = hf !== undefined && spec.basePrefix && hf.startsWith(spec.basePrefix) ? hf.slice(spec.basePrefix.length) : undefined;
    const t = hf === undefined ? undefined : (tensors.get(hf) ?? (bare !== undefined ? tensors.get(bare) : undefined));
    if (t) out.set(name, t);
    else if (required) throw new ConfigError(`${file}: tensor '${hf ?? name}' is missing (a ${c.modelType} checkpoint with ${c.numHiddenLayers} layers has it)`);
  }
  return out;
}

export function exportByRenaming(tensors: Map<string, NamedTensor>, c: BertConfig, spec: RenamingSpec): Map<string, NamedTensor> {
  const table = renameTable(c, spec);
  const out = new Map<string, NamedTensor>();
  for (const [name, t] of tensors) {
    const hf = table.get(name);
    if (!hf) throw new Error(`${c.modelType}: no checkpoint name for parameter '${name}'`);
    out.set(hf, t);
  }
  return out;
}

/**
 * Renames config fields: `fields` maps BERT's names to the family's (`hidden_size` -> `dim`). `toBert`
 * reads the family's file in BERT's names; the other direction writes the family's.
 */
export function renameFields(raw: Record<string, unknown>, fields: Record<string, string>, toBert: boolean): Record<string, unknown> {
  const out = { ...raw };
  for (const [bert, fam] of Object.entries(fields)) {
    const [from, to] = toBert ? [fam, bert] : [bert, fam];
    if (from in out) {
      out[to] = out[from];
      delete out[from];
    }
  }
  return out;
}

/** `architectures` written for a config: the family's class for the head it has. */
export function architectureName(c: BertConfig, prefix: string): string {
  return c.architecture === 'BertForSequenceClassification' ? `${prefix}ForSequenceClassification` : c.architecture === 'BertForMaskedLM' ? `${prefix}ForMaskedLM` : `${prefix}Model`;
}

/** The family for `model_type` (BERT when absent), or an error naming the file, the field and the known families. */
export function familyFor(raw: Record<string, unknown>, families: readonly ModelFamily[], file: string): ModelFamily {
  const modelType = raw['model_type'] ?? 'bert';
  const f = families.find((x) => x.id === modelType);
  if (!f) {
    throw new ConfigError(`${file}: field 'model_type' is ${JSON.stringify(modelType)}, expected one of the known families: ${families.map((x) => JSON.stringify(x.id)).join(', ')}`);
  }
  return f;
}
