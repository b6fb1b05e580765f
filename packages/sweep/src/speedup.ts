import { Dataset, loadBert, loadTokenizer, readExamples, tf, useBackend, type BackendName } from '@topiary/core';
import type { SpeedupMeasure } from './results.js';

export interface SpeedupOptions {
  /** The run's dev file and its fields. */
  dev: string;
  textField?: string;
  pairField?: string;
  labelField?: string;
  maxLength?: number;
  batches?: number;
  batchSize?: number;
  /** Timed rounds over the batches, after one warm-up round. */
  rounds?: number;
  backend?: BackendName | 'auto';
}

/**
 * Inference speedup of a pruned model over the dense one it started from, measured side by side in
 * one process: a few dev batches (evenly spaced over the file, which is sorted by label), both models
 * loaded, one warm-up round, then `rounds` rounds in which each batch runs through the dense and the
 * pruned model back to back. Speedup = the median over those pairs of dense time / pruned time.
 */
export async function measureSpeedup(denseDir: string, prunedDir: string, o: SpeedupOptions): Promise<SpeedupMeasure> {
  const info = await useBackend(o.backend ?? 'wasm');
  const batchSize = o.batchSize ?? 32;
  const nBatches = o.batches ?? 4;
  const rounds = o.rounds ?? 6;
  const tok = await loadTokenizer(prunedDir);
  const raw = await readExamples(o.dev, { ...(o.textField ? { textField: o.textField } : {}), ...(o.pairField ? { pairField: o.pairField } : {}), ...(o.labelField ? { labelField: o.labelField } : {}), unlabelled: true });
  // Labels play no part in timing: encode without them.
  const data = Dataset.encode(raw.map(({ label: _label, ...e }) => e), tok, [], { maxLength: o.maxLength ?? 64 }).evenlySpaced(nBatches * batchSize);
  const batches = [...data.batches(batchSize)];
  const dense = await loadBert(denseDir);
  const pruned = await loadBert(prunedDir);
  try {
    const time = (m: typeof dense, b: (typeof batches)[number]) => {
      const t0 = performance.now();
      tf.tidy(() => m.forward(b, { training: false }).logits?.dataSync());
      return performance.now() - t0;
    };
    for (const b of batches) {
      time(dense, b);
      time(pruned, b);
    }
    // Each batch through both models back to back (alternating which goes first), so a burst of load
    // from other processes hits both; the median of the pairs' ratios discards the pairs it split.
    const ratios: number[] = [];
    let denseMs = 0;
    let prunedMs = 0;
    for (let r = 0; r < rounds; r++) {
      for (const b of batches) {
        const first = r % 2 === 0;
        const p1 = first ? time(pruned, b) : 0;
        const d = time(dense, b);
        const p = first ? p1 : time(pruned, b);
        denseMs += d;
        prunedMs += p;
        ratios.push(d / p);
      }
    }
    ratios.sort((a, b) => a - b);
    const mid = ratios.length >> 1;
    const speedup = ratios.length % 2 ? ratios[mid]! : (ratios[mid - 1]! + ratios[mid]!) / 2;
    const n = rounds * batches.length;
    return { speedup, denseMs: denseMs / n, prunedMs: prunedMs / n, batches: batches.length, batchSize, rounds, backend: info.name };
  } finally {
    dense.dispose();
    pruned.dispose();
  }
}
