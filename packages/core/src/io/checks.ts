import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ConfigError, type BertConfig } from '../model/config.js';
import { layerParamNames } from '../model/bert.js';
import type { Tensor } from '../tf.js';
import type { TextTokenizer } from './tokenizer.js';
import { SafetensorsError } from './safetensors.js';

/**
 * Checks of what a user hands Topiary (checkpoint folders, their weights, labels and tokenizer), so
 * that a bad input is an error naming the file and what was expected, found when it loads, instead
 * of a raw ENOENT, a TypeError or a tfjs message later, or a silently wrong result.
 */

/** Reads and parses a JSON file; errors name the file. */
export async function readJsonFile(file: string, what = 'JSON'): Promise<unknown> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`${file}: ${code === 'ENOENT' ? 'not found' : `cannot read (${code})`}, expected ${what}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: not valid JSON (${(err as Error).message}), expected ${what}`);
  }
}

/** A checkpoint folder (`role`: model, teacher, pretrained) must exist and be a folder. */
export async function assertCheckpointFolder(dir: string, role = 'model'): Promise<void> {
  const stat = await fs.stat(dir).catch(() => undefined);
  if (!stat) throw new ConfigError(`${role} ${dir}: no such folder, expected a Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer files)`);
  if (!stat.isDirectory()) throw new ConfigError(`${role} ${dir}: is a file, expected a Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer files)`);
}

/** A weight with NaN or Inf makes every output NaN: refused at load, naming the tensor. */
export function assertFinite(name: string, data: Float32Array, file: string): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) {
      throw new SafetensorsError(`${file}: tensor '${name}' holds ${data[i]} at index ${i}, expected finite weights`);
    }
  }
}

/** `LABEL_0..LABEL_{n-1}`: Hugging Face's names when a config has no `id2label` (transformers 5 writes none for them). */
export const defaultLabels = (n: number): string[] => Array.from({ length: n }, (_, i) => `LABEL_${i}`);

/**
 * The labels of a classification head with `numLabels` outputs: the config's `id2label`, or
 * `LABEL_i` when it has none; a count that differs from the head's is an error naming the config.
 */
export function headLabels(config: BertConfig, numLabels: number, configFile: string): string[] {
  if (config.id2label.length === 0) return defaultLabels(numLabels);
  if (config.id2label.length !== numLabels) {
    throw new ConfigError(`${configFile}: field 'id2label' has ${config.id2label.length} labels, expected ${numLabels} (the classifier's outputs in model.safetensors)`);
  }
  return config.id2label;
}

/** Shape of one tensor from a safetensors header, reading only the header. */
export async function safetensorsShape(file: string, name: string): Promise<number[] | undefined> {
  const handle = await fs.open(file, 'r').catch(() => undefined);
  if (!handle) throw new ConfigError(`${file}: not found (only safetensors checkpoints are supported)`);
  try {
    const len = Buffer.alloc(8);
    await handle.read(len, 0, 8, 0);
    const n = Number(len.readBigUInt64LE(0));
    const stat = await handle.stat();
    if (!(n > 1 && n <= stat.size - 8)) throw new SafetensorsError(`${file}: header length ${n} does not fit in a ${stat.size}-byte file`);
    const header = Buffer.alloc(n);
    await handle.read(header, 0, n, 8);
    let json: Record<string, { shape?: unknown }>;
    try {
      json = JSON.parse(header.toString('utf8'));
    } catch (err) {
      throw new SafetensorsError(`${file}: header is not valid JSON (${(err as Error).message})`);
    }
    const shape = json?.[name]?.shape;
    return Array.isArray(shape) ? (shape as number[]) : undefined;
  } finally {
    await handle.close();
  }
}

/**
 * The labels a checkpoint's classification head predicts, index = class id (`LABEL_i` when its
 * config has no `id2label`), or undefined when it has no head.
 */
export async function checkpointLabels(dir: string, config: BertConfig): Promise<string[] | undefined> {
  if (config.architecture !== 'BertForSequenceClassification') return undefined;
  const file = path.join(dir, 'model.safetensors');
  // The head's last layer: BERT, DistilBERT, ALBERT name it `classifier`, RoBERTa/XLM-R/ELECTRA `classifier.out_proj`.
  const shape = (await safetensorsShape(file, 'classifier.weight')) ?? (await safetensorsShape(file, 'classifier.out_proj.weight'));
  if (!shape) return config.id2label.length ? config.id2label : undefined;
  return headLabels(config, shape[0]!, path.join(dir, 'config.json'));
}

/** Token ids index the embedding matrix: a tokenizer with more tokens than its rows would fail deep in tfjs. */
export function assertTokenizerFits(tokenizer: TextTokenizer, model: { config: BertConfig }, dir: string, tokenizerDir = dir): void {
  const rows = model.config.vocabSize;
  if (tokenizer.vocabSize > rows) {
    throw new ConfigError(
      `${tokenizerDir}: the tokenizer has ${tokenizer.vocabSize} tokens, expected at most ${rows} (the rows of 'bert.embeddings.word_embeddings.weight' in ${path.join(dir, 'model.safetensors')})`,
    );
  }
}

/**
 * The tensors every BERT layer needs whatever was pruned, beyond those `BertModel` checks itself
 * (output biases, LayerNorms, pooler and head pairs): a missing one would fail only in the forward pass.
 */
export function assertBertTensors(tensors: Map<string, Tensor>, config: BertConfig): void {
  const H = config.hiddenSize;
  const want = (name: string, shape: number[]) => {
    const t = tensors.get(name);
    if (!t) throw new ConfigError(`tensor '${name}' is missing`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new ConfigError(`tensor '${name}': expected shape [${shape.join(', ')}], got [${t.shape.join(', ')}]`);
    }
  };
  // With an embedding projection (ELECTRA, ALBERT) the embedding LayerNorm is over the embedding size.
  const E = config.arch.embeddingProjection ? config.embeddingSize : H;
  want('bert.embeddings.LayerNorm.weight', [E]);
  want('bert.embeddings.LayerNorm.bias', [E]);
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const n = layerParamNames(l);
    for (const name of [`${n.attnOut}.bias`, `${n.out}.bias`, `${n.attnLn}.weight`, `${n.attnLn}.bias`, `${n.outLn}.weight`, `${n.outLn}.bias`]) want(name, [H]);
  }
  // The pooler reads the (possibly compacted) hidden size; its output width is its own.
  let pooled = H;
  if (tensors.has('bert.pooler.dense.weight') || tensors.has('bert.pooler.dense.bias')) {
    pooled = tensors.get('bert.pooler.dense.weight')?.shape[1] ?? H;
    want('bert.pooler.dense.weight', [H, pooled]);
    want('bert.pooler.dense.bias', [pooled]);
  }
  const head = tensors.get('classifier.weight') ?? tensors.get('classifier.bias');
  if (head) {
    const K = tensors.get('classifier.weight')?.shape[1] ?? head.shape[0]!;
    want('classifier.weight', [pooled, K]);
    want('classifier.bias', [K]);
  }
}

/** Shape and presence errors of a model being built from a file get the file's name (and say "tensor"). */
export function inFile<T>(file: string, build: () => T): T {
  try {
    return build();
  } catch (err) {
    if (err instanceof SafetensorsError) throw err;
    const msg = (err as Error).message
      .replace(/^model has no parameter '(.+)'$/, "tensor '$1' is missing")
      .replace(/^parameter '(.+)': expected shape/, "tensor '$1': expected shape")
      .replace(/(\.weight': expected shape .*)$/, (m) => (/embeddings\./.test(m) ? m : `${m} (linear weights as [in, out], the file's transposed)`));
    throw new ConfigError(`${file}: ${msg}`);
  }
}
