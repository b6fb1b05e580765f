import { readFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Batch } from '../model/bert.js';

/** `../shared` beside the repository (read-only material every developer and CI run has). */
export const SHARED = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../../shared');
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
export const modelDir = (name: string) => path.join(SHARED, 'models', name);
export const hasShared = existsSync(path.join(SHARED, 'goldens'));

const cache = new Map<string, unknown>();
export function golden<T = any>(file: string): T {
  if (!cache.has(file)) cache.set(file, JSON.parse(readFileSync(path.join(SHARED, 'goldens', file), 'utf8')));
  return cache.get(file) as T;
}

/** Largest |a - b| over nested number arrays of the same shape. */
export function maxAbsDiff(a: unknown, b: unknown): number {
  if (typeof a === 'number' && typeof b === 'number') return Math.abs(a - b);
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return Infinity;
    let m = 0;
    for (let i = 0; i < a.length; i++) m = Math.max(m, maxAbsDiff(a[i], b[i]));
    return m;
  }
  if (ArrayBuffer.isView(a) && Array.isArray(b)) return maxAbsDiff(Array.from(a as Float32Array), b);
  return Infinity;
}

/** A golden's tokenized side (`single` or `pair`) as a batch; no token types (RoBERTa, DistilBERT) are zeros. */
export function goldenBatch(side: { input_ids: number[][]; attention_mask: number[][]; token_type_ids?: number[][] }, labels?: number[]): Batch {
  const B = side.input_ids.length;
  const T = side.input_ids[0]!.length;
  return {
    batchSize: B,
    seqLen: T,
    inputIds: Int32Array.from(side.input_ids.flat()),
    attentionMask: Int32Array.from(side.attention_mask.flat()),
    tokenTypeIds: side.token_type_ids ? Int32Array.from(side.token_type_ids.flat()) : new Int32Array(B * T),
    ...(labels ? { labels: Int32Array.from(labels) } : {}),
  };
}
