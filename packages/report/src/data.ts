import type { BertConfig, RunEvent } from '@topiary/core';

/** One loss term at one training step (`total`, `kd`, `ce`...). */
export interface LossPoint {
  step: number;
  term: string;
  value: number;
  phase: string | null;
}

/** A dev evaluation during the run (the exported model's final one has no step). */
export interface AccuracyPoint {
  step: number;
  accuracy: number;
  macroF1: number;
  phase: string | null;
}

/** Sparsity after each mask update. */
export interface SparsityPoint {
  step: number;
  encoderSparsity: number;
  totalSparsity: number;
  target: number | null;
  level: number | null;
}

export interface RunCurves {
  loss: LossPoint[];
  accuracy: AccuracyPoint[];
  sparsity: SparsityPoint[];
  /** The exported model's dev accuracy (the `evaluated` event after compaction), when the run finished. */
  exportedAccuracy: number | null;
}

/**
 * The curves of a run from its event log. A resumed run appends to the log and redoes the steps after
 * its checkpoint: each `run-started` begins a segment whose points replace those of earlier segments
 * from its first step on, so every step appears once, with the values of the run that kept it.
 */
export function runCurves(events: readonly RunEvent[]): RunCurves {
  const segments: RunEvent[][] = [];
  for (const e of events) {
    if (e.type === 'run-started' || segments.length === 0) segments.push([]);
    segments[segments.length - 1]!.push(e);
  }
  const out: RunCurves = { loss: [], accuracy: [], sparsity: [], exportedAccuracy: null };
  for (const seg of segments) {
    const loss: LossPoint[] = [];
    const accuracy: AccuracyPoint[] = [];
    const sparsity: SparsityPoint[] = [];
    for (const e of seg) {
      if (e.type === 'step') {
        for (const [term, value] of Object.entries(e.loss)) {
          if (Number.isFinite(value)) loss.push({ step: e.step, term, value, phase: e.phase ?? null });
        }
      } else if (e.type === 'evaluated') {
        if (e.step < 0) {
          if (e.label === 'exported model') out.exportedAccuracy = e.metrics.accuracy;
        } else accuracy.push({ step: e.step, accuracy: e.metrics.accuracy, macroF1: e.metrics.macroF1, phase: e.phase ?? null });
      } else if (e.type === 'masks-updated') {
        sparsity.push({ step: e.step, encoderSparsity: e.sparsity.encoderSparsity, totalSparsity: e.sparsity.totalSparsity, target: e.target ?? null, level: e.level ?? null });
      }
    }
    // Where this segment starts: a step event counts the step it ends, an evaluation or a mask update
    // at step s comes after s steps. Earlier points at that boundary stay unless this segment redid them.
    const cut = Math.min(...loss.map((p) => p.step - 1), ...accuracy.map((p) => p.step), ...sparsity.map((p) => p.step));
    out.loss = merge(out.loss, loss, cut, (p) => `${p.step}|${p.term}`);
    out.accuracy = merge(out.accuracy, accuracy, cut, (p) => String(p.step));
    out.sparsity = merge(out.sparsity, sparsity, cut, (p) => String(p.step));
  }
  return out;
}

function merge<T extends { step: number }>(old: T[], next: T[], cut: number, key: (p: T) => string): T[] {
  const redone = new Set(next.map(key));
  return [...old.filter((p) => p.step < cut || (p.step === cut && !redone.has(key(p)))), ...next];
}

/** Heads or FFN neurons kept in one layer, against the dense model's count. */
export interface KeptCell {
  layer: number;
  kind: 'heads' | 'FFN neurons';
  kept: number;
  total: number;
  fraction: number;
}

/**
 * Heads and FFN neurons kept per layer of an exported model, from its config (the per-layer sizes
 * Topiary writes, `topiary_layer_heads` / `topiary_layer_intermediate`) against the dense sizes
 * (`num_attention_heads`, `intermediate_size`, which compaction keeps), or against `dense`'s when given.
 */
export function keptPerLayer(config: BertConfig, dense?: Pick<BertConfig, 'numAttentionHeads' | 'intermediateSize'>): KeptCell[] {
  const heads = dense?.numAttentionHeads ?? config.numAttentionHeads;
  const neurons = dense?.intermediateSize ?? config.intermediateSize;
  return config.layerHeads.flatMap((h, layer) => {
    const ffn = config.layerIntermediate[layer]!;
    return [
      { layer, kind: 'heads' as const, kept: h, total: heads, fraction: heads > 0 ? h / heads : 0 },
      { layer, kind: 'FFN neurons' as const, kept: ffn, total: neurons, fraction: neurons > 0 ? ffn / neurons : 0 },
    ];
  });
}

/**
 * The same from a checkpoint's masks (a run that has not exported its model yet): a head or neuron
 * is kept when its mask is non-zero and its block's (`mha_mask`, `ffn_mask`) is too; the checkpoint's
 * model is the dense one.
 */
export function keptFromMasks(masks: ReadonlyMap<string, { data: Float32Array }>, config: BertConfig): KeptCell[] {
  const nonZero = (name: string, size: number) => {
    const m = masks.get(name)?.data;
    return m ? m.reduce((n, v) => n + (v !== 0 ? 1 : 0), 0) : size;
  };
  const block = (name: string, layer: number) => (masks.get(name)?.data[layer] ?? 1) !== 0;
  return keptPerLayer({
    ...config,
    layerHeads: config.layerHeads.map((h, l) => (block('mha_mask', l) ? nonZero(`head_mask.${l}`, h) : 0)),
    layerIntermediate: config.layerIntermediate.map((n, l) => (block('ffn_mask', l) ? nonZero(`neuron_mask.${l}`, n) : 0)),
  });
}

/** A point of a sweep plot: a completed run with both coordinates. */
export interface TradeoffPoint {
  id: string;
  method: string;
  x: number;
  accuracy: number;
}

/**
 * The Pareto front of points where more `x` (sparsity, speedup) and more accuracy are both better:
 * the points no other point matches or beats on both with one strictly better. Sorted by x.
 */
export function paretoFront<T extends TradeoffPoint>(points: readonly T[]): T[] {
  const front = points.filter((p) => !points.some((q) => q !== p && q.x >= p.x && q.accuracy >= p.accuracy && (q.x > p.x || q.accuracy > p.accuracy)));
  // Exact duplicates are both on the front: keep the first.
  const seen = new Set<string>();
  return front
    .filter((p) => {
      const key = `${p.x}|${p.accuracy}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    })
    .sort((a, b) => a.x - b.x || a.accuracy - b.accuracy);
}
