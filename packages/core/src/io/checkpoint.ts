import { promises as fs, existsSync } from 'node:fs';
import * as path from 'node:path';
import { tf, type Tensor } from '../tf.js';
import { BertModel, isLinearWeight } from '../model/bert.js';
import { ConfigError, type BertConfig } from '../model/config.js';
import { BUILTIN_FAMILIES, familyFor, type ModelFamily } from '../model/families/index.js';
import { Rng } from '../model/ops.js';
import { readSafetensors, type NamedTensor } from './safetensors.js';
import { writeDirAtomic, writeFileAtomic } from './atomic.js';
import { serializeSafetensors } from './safetensors.js';
import { assertBertTensors, assertCheckpointFolder, assertFinite, headLabels, inFile } from './checks.js';

export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'vocab.txt', 'special_tokens_map.json'];

export interface LoadOptions {
  /**
   * Labels for a classification head. A checkpoint without a head (MLM-pretrained) gets a fresh one
   * of this size, initialised like Hugging Face (normal(0, 0.02), zero bias); a checkpoint whose head
   * has other labels is an error.
   */
  labels?: string[];
  /** Seed of the fresh head's initialisation. */
  seed?: number;
  /** The families `model_type` selects from (default: core's; a run passes its registry's). */
  families?: readonly ModelFamily[];
}

/** Reads `config.json` of a checkpoint folder. */
export async function readConfig(dir: string, families: readonly ModelFamily[] = BUILTIN_FAMILIES): Promise<BertConfig> {
  return (await readCheckpointConfig(dir, families)).config;
}

/** Reads `config.json` of a checkpoint folder with the family its `model_type` names. */
export async function readCheckpointConfig(dir: string, families: readonly ModelFamily[] = BUILTIN_FAMILIES): Promise<{ config: BertConfig; family: ModelFamily }> {
  await assertCheckpointFolder(dir);
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    throw new ConfigError(`${file}: not found (expected a Hugging Face checkpoint folder)`);
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: not valid JSON (${(err as Error).message})`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`${file}: expected a JSON object (a Hugging Face model config), got ${JSON.stringify(raw)}`);
  const family = familyFor(raw, families, file);
  return { config: family.parseConfig(raw, file), family };
}

/** The family adapter of a model: the one it was loaded with, else the built-in one of its `model_type`. */
export function familyOf(model: BertModel, families: readonly ModelFamily[] = BUILTIN_FAMILIES): ModelFamily {
  return model.family ?? familyFor({ model_type: model.config.modelType }, families, 'model config');
}

function normal(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(rng.next(), 1e-12);
    const v = rng.next();
    const r = Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v) * std;
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v) * std;
  }
  return out;
}

/**
 * Loads a Hugging Face checkpoint folder (config.json + model.safetensors) of any registered family into
 * a `BertModel` under canonical parameter names (the family adapter maps them).
 */
export async function loadBert(dir: string, opts: LoadOptions = {}): Promise<BertModel> {
  const { config, family } = await readCheckpointConfig(dir, opts.families);
  const file = path.join(dir, 'model.safetensors');
  if (!existsSync(file)) throw new ConfigError(`${file}: not found (only safetensors checkpoints are supported)`);
  // Integer buffers (position_ids, token_type_ids) are not weights: skipped.
  const stored = await readSafetensors(file, { onSkipped: () => {} });
  for (const [name, t] of stored) assertFinite(name, t.data, file);
  const raw = family.importTensors(stored, config, file);
  const tensors = new Map<string, Tensor>();
  const rng = new Rng(opts.seed ?? 42);
  try {
    for (const [n, t] of raw) {
      const hf = tf.tensor(t.data, t.shape, 'float32');
      // Hugging Face stores linear weights [out, in]; we hold [in, out].
      tensors.set(n, isLinearWeight(n, t.shape) ? tf.transpose(hf) : hf);
      if (isLinearWeight(n, t.shape)) hf.dispose();
    }
    const H = config.hiddenSize;
    const head = tensors.get('classifier.weight');
    if (head) config.id2label = headLabels(config, head.shape[1]!, path.join(dir, 'config.json'));
    if (!tensors.has('bert.pooler.dense.weight') && opts.labels) {
      // MLM checkpoints carry no pooler: a fresh one, as Hugging Face initialises it.
      tensors.set('bert.pooler.dense.weight', tf.tensor2d(normal(rng, H * H, 0.02), [H, H]));
      tensors.set('bert.pooler.dense.bias', tf.zeros([H]));
    }
    if (opts.labels) {
      const existing = config.id2label;
      const hasHead = tensors.has('classifier.weight');
      if (hasHead && existing.length > 0 && existing.join('\n') !== opts.labels.join('\n')) {
        throw new ConfigError(
          `${path.join(dir, 'config.json')}: field 'id2label' has ${existing.length} labels [${existing.slice(0, 3).join(', ')}, ...], ` +
            `expected the task's ${opts.labels.length} labels [${opts.labels.slice(0, 3).join(', ')}, ...]`,
        );
      }
      if (!hasHead) {
        const K = opts.labels.length;
        tensors.set('classifier.weight', tf.tensor2d(normal(rng, H * K, 0.02), [H, K]));
        tensors.set('classifier.bias', tf.zeros([K]));
      }
      config.id2label = [...opts.labels];
      config.architecture = 'BertForSequenceClassification';
    }
    return inFile(file, () => {
      assertBertTensors(tensors, config);
      const model = new BertModel(config, tensors);
      model.family = family;
      return model;
    });
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}

/** The model's parameters in Hugging Face layout (`[out, in]` linear weights), as float32 arrays. */
export function exportTensors(model: BertModel): Map<string, NamedTensor> {
  const out = new Map<string, NamedTensor>();
  for (const [name, v] of model.params) {
    const data = tf.tidy(() => (isLinearWeight(name, v.shape) ? tf.transpose(v) : v.clone()));
    out.set(name, { shape: data.shape, data: data.dataSync() as Float32Array });
    data.dispose();
  }
  return out;
}

/**
 * Writes the model as a Hugging Face-style folder: config.json, model.safetensors and the tokenizer
 * files copied from `tokenizerFrom`. The folder is filled under a temporary name and renamed.
 */
export async function saveBert(model: BertModel, dir: string, opts: { tokenizerFrom?: string; extra?: Record<string, string>; family?: ModelFamily; force?: boolean } = {}): Promise<void> {
  // The family's own tensor names and config (model_type, architectures), so transformers reloads it.
  const family = opts.family ?? familyOf(model);
  const { tensors, config } = family.exportTensors(exportTensors(model), model.config);
  await writeDirAtomic(dir, async (tmp) => {
    await fs.writeFile(path.join(tmp, 'config.json'), `${JSON.stringify(family.serializeConfig(config), null, 2)}\n`);
    const chunks = serializeSafetensors(tensors);
    await writeFileAtomic(path.join(tmp, 'model.safetensors'), chunks);
    if (opts.tokenizerFrom) {
      for (const f of TOKENIZER_FILES) {
        const src = path.join(opts.tokenizerFrom, f);
        if (existsSync(src)) await fs.copyFile(src, path.join(tmp, f));
      }
    }
    for (const [f, text] of Object.entries(opts.extra ?? {})) await fs.writeFile(path.join(tmp, f), text);
  }, { kind: 'model', ...(opts.force ? { force: true } : {}) });
}
