import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Batch } from '../model/bert.js';
import type { TextTokenizer } from '../io/tokenizer.js';
import { Rng } from '../model/ops.js';

/** A labelled (or unlabelled) text example. */
export interface TextExample {
  text: string;
  pair?: string;
  /** Label name as it appears in the file. */
  label?: string;
  /** Line number in the source file (1-based), for error messages. */
  line: number;
}

export interface ReadOptions {
  /** Field (JSONL) or column (CSV/TSV) names; defaults `text`, `label`, no pair field. */
  textField?: string;
  pairField?: string;
  labelField?: string;
  /** Read at most this many examples (after the header). */
  limit?: number;
  /** Allow examples without labels (unlabelled corpora). */
  unlabelled?: boolean;
}

export class DataError extends Error {
  override name = 'DataError';
}

/** Splits one CSV/TSV line, honouring double quotes ("" inside quotes is a quote). */
function splitDelimited(line: string, sep: string): string[] {
  if (sep === '\t' && !line.includes('"')) return line.split('\t');
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cur += ch;
    } else if (ch === '"' && cur === '') quoted = true;
    else if (ch === sep) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

/**
 * Reads JSONL, CSV or TSV (GLUE layout: a header row naming the columns). Errors name the file, the
 * line and the field.
 */
export async function readExamples(file: string, opts: ReadOptions = {}): Promise<TextExample[]> {
  const textField = opts.textField ?? 'text';
  const labelField = opts.labelField ?? 'label';
  const pairField = opts.pairField;
  let content: string;
  try {
    content = await fs.readFile(file, 'utf8');
  } catch {
    throw new DataError(`${file}: cannot read the file`);
  }
  const lines = content.split(/\r?\n/);
  const ext = path.extname(file).toLowerCase();
  const out: TextExample[] = [];
  const limit = opts.limit ?? Infinity;
  const take = (rec: Record<string, unknown>, line: number) => {
    const text = rec[textField];
    if (typeof text !== 'string') throw new DataError(`${file}:${line}: field '${textField}' must be a string, got ${JSON.stringify(text)}`);
    const ex: TextExample = { text, line };
    if (pairField) {
      const pair = rec[pairField];
      ex.pair = Array.isArray(pair) ? pair.join(', ') : (pair as string);
      if (typeof ex.pair !== 'string') throw new DataError(`${file}:${line}: field '${pairField}' must be a string, got ${JSON.stringify(pair)}`);
    }
    const label = rec[labelField];
    if (label === undefined || label === null || label === '') {
      if (!opts.unlabelled) throw new DataError(`${file}:${line}: field '${labelField}' is missing`);
    } else ex.label = String(label);
    out.push(ex);
  };
  if (ext === '.jsonl' || ext === '.json') {
    for (let i = 0; i < lines.length && out.length < limit; i++) {
      const raw = lines[i]!.trim();
      if (!raw) continue;
      let rec: unknown;
      try {
        rec = JSON.parse(raw);
      } catch (err) {
        throw new DataError(`${file}:${i + 1}: not valid JSON (${(err as Error).message})`);
      }
      if (!rec || typeof rec !== 'object') throw new DataError(`${file}:${i + 1}: expected a JSON object`);
      take(rec as Record<string, unknown>, i + 1);
    }
  } else if (ext === '.csv' || ext === '.tsv') {
    const sep = ext === '.csv' ? ',' : '\t';
    const header = splitDelimited(lines[0] ?? '', sep).map((h) => h.trim());
    for (const f of [textField, ...(pairField ? [pairField] : []), ...(opts.unlabelled ? [] : [labelField])]) {
      if (!header.includes(f)) throw new DataError(`${file}:1: header has no column '${f}' (columns: ${header.join(', ')})`);
    }
    for (let i = 1; i < lines.length && out.length < limit; i++) {
      if (!lines[i]!.trim()) continue;
      const cells = splitDelimited(lines[i]!, sep);
      if (cells.length !== header.length) throw new DataError(`${file}:${i + 1}: ${cells.length} columns, the header has ${header.length}`);
      take(Object.fromEntries(header.map((h, j) => [h, cells[j]])), i + 1);
    }
  } else {
    throw new DataError(`${file}: unknown format '${ext}', expected .jsonl, .csv or .tsv`);
  }
  if (out.length === 0) throw new DataError(`${file}: no examples`);
  return out;
}

/** Reads a label list: a JSON array of names, or one name per line. */
export async function readLabels(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new DataError(`${file}: cannot read the labels file (${code === 'ENOENT' ? 'not found' : code === 'EISDIR' ? 'a folder' : (err as Error).message}), expected a JSON array of label names or one name per line`);
  }
  const trimmed = text.trim();
  if (trimmed.startsWith('[') || trimmed.startsWith('{')) {
    let arr: unknown;
    try {
      arr = JSON.parse(trimmed);
    } catch (err) {
      throw new DataError(`${file}: not valid JSON (${(err as Error).message}), expected a JSON array of label names or one name per line`);
    }
    if (!Array.isArray(arr) || !arr.every((x) => typeof x === 'string')) throw new DataError(`${file}: expected a JSON array of label names`);
    if (new Set(arr).size !== arr.length) throw new DataError(`${file}: a label appears twice, expected distinct label names`);
    return arr;
  }
  const labels = trimmed.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  if (labels.length === 0) throw new DataError(`${file}: no labels, expected a JSON array of label names or one name per line`);
  return labels;
}

/** An encoded example: token ids and, when labelled, the class id. */
export interface EncodedExample {
  id: number;
  inputIds: number[];
  tokenTypeIds: number[];
  label: number;
}

/** Tokenized examples with their label list; batches pad to the longest sequence in the batch. */
export class Dataset {
  constructor(
    public readonly examples: EncodedExample[],
    public readonly labels: string[],
    public readonly source = '<memory>',
    /** The tokenizer's padding id (RoBERTa's is 1: its position ids skip padding by id). */
    public readonly padId = 0,
  ) {}

  get size(): number {
    return this.examples.length;
  }

  static encode(
    raw: TextExample[],
    tokenizer: TextTokenizer,
    labels: string[],
    opts: { maxLength?: number; file?: string } = {},
  ): Dataset {
    const index = new Map(labels.map((l, i) => [l, i]));
    const file = opts.file ?? '<memory>';
    const examples = raw.map((ex, id) => {
      let label = -1;
      if (ex.label !== undefined) {
        const k = index.get(ex.label);
        if (k === undefined) {
          throw new DataError(`${file}:${ex.line}: label '${ex.label}' is not one of the ${labels.length} labels (${labels.slice(0, 5).join(', ')}${labels.length > 5 ? ', ...' : ''})`);
        }
        label = k;
      }
      const e = tokenizer.encode(ex.text, ex.pair, opts.maxLength ?? 128);
      return { id, inputIds: e.inputIds, tokenTypeIds: e.tokenTypeIds, label };
    });
    return new Dataset(examples, labels, file, tokenizer.padId);
  }

  /** A subset by example indices (ids are kept, so banks indexed by id still line up). */
  subset(indices: number[]): Dataset {
    return new Dataset(indices.map((i) => this.examples[i]!), this.labels, this.source, this.padId);
  }

  /**
   * `n` examples evenly spaced over the dataset (all of it when `n` is undefined or not smaller), so
   * that a subset of a label-sorted file still covers every class.
   */
  evenlySpaced(n: number | undefined): Dataset {
    if (n === undefined || n >= this.size) return this;
    return this.subset(Array.from({ length: n }, (_, i) => Math.floor((i * this.size) / n)));
  }

  /** Batches in order, or shuffled deterministically by `seed`. */
  *batches(batchSize: number, opts: { shuffleSeed?: number; padId?: number } = {}): Generator<Batch> {
    const order = this.examples.map((_, i) => i);
    if (opts.shuffleSeed !== undefined) new Rng(opts.shuffleSeed).shuffle(order);
    for (let s = 0; s < order.length; s += batchSize) {
      yield makeBatch(order.slice(s, s + batchSize).map((i) => this.examples[i]!), opts.padId ?? this.padId);
    }
  }

  batchCount(batchSize: number): number {
    return Math.ceil(this.examples.length / batchSize);
  }
}

/** Pads examples to the longest one. */
export function makeBatch(examples: EncodedExample[], padId = 0): Batch {
  const B = examples.length;
  const T = Math.max(...examples.map((e) => e.inputIds.length));
  const inputIds = new Int32Array(B * T).fill(padId);
  const attentionMask = new Int32Array(B * T);
  const tokenTypeIds = new Int32Array(B * T);
  const labels = new Int32Array(B);
  let labelled = true;
  examples.forEach((e, b) => {
    inputIds.set(e.inputIds, b * T);
    attentionMask.fill(1, b * T, b * T + e.inputIds.length);
    tokenTypeIds.set(e.tokenTypeIds, b * T);
    labels[b] = e.label;
    if (e.label < 0) labelled = false;
  });
  const batch: Batch = { inputIds, attentionMask, tokenTypeIds, batchSize: B, seqLen: T, exampleIds: examples.map((e) => e.id) };
  if (labelled) batch.labels = labels;
  return batch;
}

export interface LoadDataOptions extends ReadOptions {
  maxLength?: number;
  /** A label file; else the given list (the model's `id2label`); else the sorted labels of the file. */
  labelsFile?: string;
  labels?: string[];
}

/** Reads and tokenizes a data file in one go. */
export async function loadDataset(file: string, tokenizer: TextTokenizer, opts: LoadDataOptions = {}): Promise<Dataset> {
  const raw = await readExamples(file, opts);
  let labels = opts.labelsFile ? await readLabels(opts.labelsFile) : opts.labels;
  if (!labels || labels.length === 0) labels = [...new Set(raw.map((e) => e.label).filter((l): l is string => l !== undefined))].sort();
  const encodeOpts: { maxLength?: number; file: string } = { file };
  if (opts.maxLength !== undefined) encodeOpts.maxLength = opts.maxLength;
  return Dataset.encode(raw, tokenizer, labels, encodeOpts);
}
