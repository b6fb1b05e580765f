import { piecewiseAt, type PiecewiseLatency } from '@topiary/core';
import { macPerHead, macPerNeuron } from './mac.js';

export interface MacSearchInput {
  /** Importance of each head, per layer. */
  headImportance: ArrayLike<number>[];
  /** Importance of each FFN neuron, per layer. */
  neuronImportance: ArrayLike<number>[];
  /** Sequence length the MACs are counted at (the task's mean length). */
  seqLen: number;
  hiddenSize: number;
  headSize: number;
  /** Allowed MACs as a fraction of the dense encoder's (the MACs of every unit given). */
  constraint: number;
}

export interface MacSearchResult {
  headMask: Float32Array[];
  neuronMask: Float32Array[];
  /** Total importance of the kept units. */
  importance: number;
  /** MACs kept, as a fraction of the dense encoder's. */
  macFraction: number;
}

interface Ranked {
  layer: number;
  index: number;
  value: number;
}
const ranked = (imp: ArrayLike<number>[]): Ranked[] =>
  imp.flatMap((row, layer) => Array.from(row, (value, index) => ({ layer, index, value }))).sort((a, b) => b.value - a.value || a.layer - b.layer || a.index - b.index);

/**
 * The reference's `search_mac`: rank heads and neurons globally by importance; for every number of
 * heads kept, spend the rest of the MAC budget on the most important neurons, and keep the split with
 * the highest total importance. Every head costs the same and every neuron costs the same, so for a
 * given number of heads this is the best choice, and the search is exact for the sum of importances.
 * Two differences from the reference: a head count whose heads alone exceed the budget is skipped (the
 * reference would accept it), and zero heads is tried too.
 */
export function searchMac(o: MacSearchInput): MacSearchResult {
  if (!(o.constraint > 0 && o.constraint <= 1)) throw new Error(`retraining-free: the MAC constraint must be in (0, 1], got ${o.constraint}`);
  const heads = ranked(o.headImportance);
  const neurons = ranked(o.neuronImportance);
  const mh = macPerHead(o.seqLen, o.hiddenSize, o.headSize);
  const mn = macPerNeuron(o.seqLen, o.hiddenSize);
  const dense = heads.length * mh + neurons.length * mn;
  const budget = o.constraint * dense;
  const prefix = (r: Ranked[]) => {
    const p = new Float64Array(r.length + 1);
    r.forEach((u, i) => (p[i + 1] = p[i]! + u.value));
    return p;
  };
  const hp = prefix(heads);
  const np = prefix(neurons);
  let best = { h: 0, n: 0, importance: -Infinity };
  for (let h = 0; h <= heads.length; h++) {
    const left = budget - h * mh;
    if (left < 0) break;
    // A small relative tolerance so that an exact fit (e.g. constraint 1) is not lost to rounding.
    const n = Math.min(neurons.length, Math.floor(left / mn + 1e-9));
    const importance = hp[h]! + np[n]!;
    if (importance > best.importance) best = { h, n, importance };
  }
  const headMask = o.headImportance.map((r) => new Float32Array(r.length));
  const neuronMask = o.neuronImportance.map((r) => new Float32Array(r.length));
  for (const u of heads.slice(0, best.h)) headMask[u.layer]![u.index] = 1;
  for (const u of neurons.slice(0, best.n)) neuronMask[u.layer]![u.index] = 1;
  return { headMask, neuronMask, importance: best.importance, macFraction: (best.h * mh + best.n * mn) / dense };
}

/** The reference's `get_pruning_schedule(target, num_iter)`: geometric steps down to `target`. */
export function pruningSchedule(target: number, steps: number): number[] {
  const p = target ** (1 / steps);
  return [...Array.from({ length: steps - 1 }, (_, i) => p ** (i + 1)), target];
}

export interface LatencySearchInput {
  headImportance: ArrayLike<number>[];
  neuronImportance: ArrayLike<number>[];
  /** The table's fitted latency of one layer's attention block by heads kept, and FFN block by neurons kept. */
  mha: PiecewiseLatency;
  ffn: PiecewiseLatency;
  /** Allowed encoder latency as a fraction of the dense encoder's (by the same fit). */
  constraint: number;
}

export interface LatencySearchResult {
  headMask: Float32Array[];
  neuronMask: Float32Array[];
  importance: number;
  /** Predicted encoder milliseconds of the masks and of the dense encoder (the table's fit). */
  latencyMs: number;
  denseLatencyMs: number;
  /** latencyMs / denseLatencyMs. */
  latencyFraction: number;
}

/**
 * The reference's `search_latency`, written from its idea: under the piecewise-linear latency (a block
 * costs `c` for up to `threshold` units, then `slope` per unit, `zero` with none), a kept block always
 * keeps its `threshold` most important units (they are paid for by `c`), whole blocks are dropped in
 * order of their base units' importance (fewest-important first, separately for attention and FFN), and
 * the remaining budget buys units beyond the thresholds, heads and neurons ranked globally, at `slope`
 * each; every split of that budget between heads and neurons is tried and the most important kept.
 * Unlike the reference, the budget is reset for every number of dropped blocks (the reference subtracts
 * the fixed costs cumulatively), a block's cost with no units is `zero` rather than nothing, and zero
 * extra heads is tried too. The predicted latency never exceeds the constraint.
 */
export function searchLatency(o: LatencySearchInput): LatencySearchResult {
  if (!(o.constraint > 0 && o.constraint <= 1)) throw new Error(`retraining-free: the latency constraint must be in (0, 1], got ${o.constraint}`);
  const L = o.headImportance.length;
  const dense = o.headImportance.reduce<number>((a, h, l) => a + piecewiseAt(o.mha, h.length) + piecewiseAt(o.ffn, o.neuronImportance[l]!.length), 0);
  const budget = o.constraint * dense;
  // Per layer, units by descending importance; the first `threshold` are a kept block's base.
  const perLayer = (imp: ArrayLike<number>[], threshold: number) =>
    imp.map((row, layer) => {
      const order = Array.from({ length: row.length }, (_, i) => i).sort((a, b) => row[b]! - row[a]! || a - b);
      const base = order.slice(0, Math.min(threshold, row.length));
      return {
        base,
        baseImportance: base.reduce((s, i) => s + row[i]!, 0),
        extra: order.slice(base.length).map((index) => ({ layer, index, value: row[index]! })),
      };
    });
  const heads = perLayer(o.headImportance, o.mha.threshold);
  const neurons = perLayer(o.neuronImportance, o.ffn.threshold);
  // Blocks dropped in ascending order of their base importance.
  const dropOrder = (units: typeof heads) => Array.from({ length: L }, (_, l) => l).sort((a, b) => units[a]!.baseImportance - units[b]!.baseImportance || b - a);
  // For k blocks dropped: the kept layers, their fixed cost and base importance, and the extra units ranked.
  const options = (units: typeof heads, f: PiecewiseLatency) => {
    const order = dropOrder(units);
    return Array.from({ length: L + 1 }, (_, k) => {
      const dropped = new Set(order.slice(0, k));
      const kept = Array.from({ length: L }, (_, l) => l).filter((l) => !dropped.has(l) && units[l]!.base.length > 0);
      const extra = kept.flatMap((l) => units[l]!.extra).sort((a, b) => b.value - a.value || a.layer - b.layer || a.index - b.index);
      const prefix = new Float64Array(extra.length + 1);
      extra.forEach((u, i) => (prefix[i + 1] = prefix[i]! + u.value));
      const fixed = Array.from({ length: L }, (_, l) => (kept.includes(l) ? f.c : f.zero)).reduce((a, b) => a + b, 0);
      return { kept, extra, prefix, fixed, base: kept.reduce((s, l) => s + units[l]!.baseImportance, 0) };
    });
  };
  const mhaOptions = options(heads, o.mha);
  const ffnOptions = options(neurons, o.ffn);
  let best: { dm: number; df: number; h: number; n: number; importance: number } | undefined;
  for (const [dm, hm] of mhaOptions.entries()) {
    for (const [df, fm] of ffnOptions.entries()) {
      const left = budget - hm.fixed - fm.fixed;
      if (left < -1e-12 * dense) continue;
      for (let h = 0; h <= hm.extra.length; h++) {
        const rest = left - o.mha.slope * h;
        if (rest < -1e-12 * dense) break;
        const n = o.ffn.slope > 0 ? Math.min(fm.extra.length, Math.floor(rest / o.ffn.slope + 1e-9)) : fm.extra.length;
        const importance = hm.base + fm.base + hm.prefix[h]! + fm.prefix[n]!;
        if (!best || importance > best.importance) best = { dm, df, h, n, importance };
        if (o.mha.slope === 0) break;
      }
    }
  }
  if (!best) throw new Error(`retraining-free: no masks fit a latency constraint of ${o.constraint} (${budget.toFixed(3)} ms of the dense ${dense.toFixed(3)} ms; every block emptied still costs ${(L * (o.mha.zero + o.ffn.zero)).toFixed(3)} ms)`);
  const headMask = o.headImportance.map((r) => new Float32Array(r.length));
  const neuronMask = o.neuronImportance.map((r) => new Float32Array(r.length));
  const fill = (masks: Float32Array[], units: typeof heads, opt: (typeof mhaOptions)[number], extra: number) => {
    for (const l of opt.kept) for (const i of units[l]!.base) masks[l]![i] = 1;
    for (const u of opt.extra.slice(0, extra)) masks[u.layer]![u.index] = 1;
  };
  fill(headMask, heads, mhaOptions[best.dm]!, best.h);
  fill(neuronMask, neurons, ffnOptions[best.df]!, best.n);
  const kept = (m: Float32Array) => m.reduce((a, v) => a + (v !== 0 ? 1 : 0), 0);
  const latencyMs = headMask.reduce((a, m, l) => a + piecewiseAt(o.mha, kept(m)) + piecewiseAt(o.ffn, kept(neuronMask[l]!)), 0);
  return { headMask, neuronMask, importance: best.importance, latencyMs, denseLatencyMs: dense, latencyFraction: latencyMs / dense };
}
