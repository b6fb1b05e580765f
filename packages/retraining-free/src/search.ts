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
