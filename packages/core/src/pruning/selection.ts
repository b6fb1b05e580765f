/**
 * Which heads and FFN neurons to remove, given importances: the selection rules of Michel et al. 2019
 * as ContrastivePruning's structured pruning applies them (a global ranking across layers; pruned
 * units stay pruned; at least `minHeadsPerLayer` heads survive in every layer).
 */

export interface PruningSequence {
  /** Heads to remove at each level (on top of the previous levels). */
  heads: number[];
  /** FFN neurons to remove at each level. */
  neurons: number[];
}

/**
 * How many heads and neurons each level removes, for cumulative percentages `percents` of all heads
 * and all neurons (the same ratio for both, as the reference does).
 */
export function determinePruningSequence(
  percents: number[],
  totalHeads: number,
  totalNeurons: number,
  opts: { layers?: number; minHeadsPerLayer?: number } = {},
): PruningSequence {
  const minHeads = opts.minHeadsPerLayer ?? 1;
  const layers = opts.layers ?? 0;
  const cumulative = (total: number) => percents.map((p) => Math.trunc((total * p) / 100));
  const heads = cumulative(totalHeads).sort((a, b) => a - b);
  if (minHeads > 0 && layers > 0 && heads[heads.length - 1]! > totalHeads - minHeads * layers) {
    throw new Error(
      `pruning ${heads[heads.length - 1]} of ${totalHeads} heads would leave fewer than ${minHeads} head(s) in some of the ${layers} layers: lower targetSparsity or minHeadsPerLayer`,
    );
  }
  const neurons = cumulative(totalNeurons);
  const steps = (c: number[]) => c.map((v, i) => (i === 0 ? v : v - c[i - 1]!));
  return { heads: steps(heads), neurons: steps(neurons) };
}

interface Ranked {
  layer: number;
  index: number;
  score: number;
}

/** Units of every layer sorted by ascending score; ties keep layer-major order (a stable sort). */
function rank(importance: ArrayLike<number>[]): Ranked[] {
  const all: Ranked[] = [];
  importance.forEach((row, layer) => {
    for (let index = 0; index < row.length; index++) all.push({ layer, index, score: row[index]! });
  });
  return all.sort((a, b) => a.score - b.score);
}

function checkShapes(what: string, importance: ArrayLike<number>[], mask: ArrayLike<number>[]): void {
  if (importance.length !== mask.length) throw new Error(`${what}: importance has ${importance.length} layers, mask has ${mask.length}`);
  importance.forEach((row, l) => {
    if (row.length !== mask[l]!.length) throw new Error(`${what}: layer ${l} importance has ${row.length} entries, mask has ${mask[l]!.length}`);
  });
}

/**
 * Removes the `count` lowest-scoring heads still alive, never touching the `minHeadsPerLayer`
 * highest-scoring live heads of any layer. (The reference protects the top heads counting heads
 * already pruned, which can empty a layer when a pruned head still scores high; here only live
 * heads are protected. The two agree whenever that cannot happen, as on the goldens.)
 */
export function pruneHeadMask(
  importance: ArrayLike<number>[],
  oldMask: Float32Array[],
  count: number,
  minHeadsPerLayer = 1,
): Float32Array[] {
  checkShapes('pruneHeadMask', importance, oldMask);
  const alive = rank(importance).filter((u) => oldMask[u.layer]![u.index] !== 0);
  const protectedCount = new Map<number, number>();
  const candidates: Ranked[] = [];
  for (let i = alive.length - 1; i >= 0; i--) {
    const u = alive[i]!;
    const n = protectedCount.get(u.layer) ?? 0;
    if (n < minHeadsPerLayer) {
      protectedCount.set(u.layer, n + 1);
      continue;
    }
    candidates.push(u);
  }
  candidates.reverse();
  const mask = oldMask.map((m) => Float32Array.from(m));
  for (const u of candidates.slice(0, count)) mask[u.layer]![u.index] = 0;
  return mask;
}

/** Removes the `count` lowest-scoring FFN neurons still alive, ranked across all layers. */
export function pruneNeuronMask(importance: ArrayLike<number>[], oldMask: Float32Array[], count: number): Float32Array[] {
  checkShapes('pruneNeuronMask', importance, oldMask);
  const mask = oldMask.map((m) => Float32Array.from(m));
  const alive = rank(importance).filter((u) => oldMask[u.layer]![u.index] !== 0);
  for (const u of alive.slice(0, count)) mask[u.layer]![u.index] = 0;
  return mask;
}

/** Divides each layer's scores by their L2 norm (Michel et al.'s per-layer normalisation). */
export function normalizePerLayer(importance: Float32Array[]): Float32Array[] {
  return importance.map((row) => {
    let sq = 0;
    for (const v of row) sq += v * v;
    const norm = Math.sqrt(sq) + 1e-20;
    return row.map((v) => v / norm);
  });
}

/**
 * Keeps the `floor(keep * n)` highest scores of `scores` (1 = keep), as torch's `l1_unstructured`
 * and movement pruning's TopK/magnitude binarizers do. Entries with `already[i] === 0` stay pruned
 * and are ranked last.
 */
export function keepTopFraction(scores: ArrayLike<number>, keep: number, already?: ArrayLike<number>): Float32Array {
  if (!(keep >= 0 && keep <= 1)) throw new Error(`keepTopFraction: keep must be in [0, 1], got ${keep}`);
  const n = scores.length;
  const k = Math.floor(keep * n + 1e-9);
  const order = Array.from({ length: n }, (_, i) => i);
  const s = (i: number) => (already && already[i] === 0 ? -Infinity : scores[i]!);
  order.sort((a, b) => s(b) - s(a));
  const mask = new Float32Array(n);
  for (let j = 0; j < k; j++) mask[order[j]!] = 1;
  return mask;
}

/**
 * Weight masks keeping a `keep` fraction of each matrix (`scope: 'matrix'`) or of all the given
 * matrices ranked together (`scope: 'global'`, torch's `global_unstructured`).
 */
export function weightMasksTopFraction(
  scores: Map<string, Float32Array>,
  keep: number,
  scope: 'matrix' | 'global',
  already?: Map<string, Float32Array>,
): Map<string, Float32Array> {
  if (scope === 'matrix') {
    return new Map([...scores].map(([name, s]) => [name, keepTopFraction(s, keep, already?.get(name))]));
  }
  const names = [...scores.keys()];
  const total = names.reduce((a, n) => a + scores.get(n)!.length, 0);
  const flat = new Float32Array(total);
  const flatAlready = already ? new Float32Array(total).fill(1) : undefined;
  let o = 0;
  for (const n of names) {
    flat.set(scores.get(n)!, o);
    const a = already?.get(n);
    if (a) flatAlready!.set(a, o);
    o += scores.get(n)!.length;
  }
  const mask = keepTopFraction(flat, keep, flatAlready);
  o = 0;
  const out = new Map<string, Float32Array>();
  for (const n of names) {
    const len = scores.get(n)!.length;
    out.set(n, mask.slice(o, o + len));
    o += len;
  }
  return out;
}

/**
 * Removes the `count` lowest-scoring layers still in place (`layerMask` 0), keeping at least
 * `minLayers`; ties go to the later layer first (top-layer dropping did best in Sajjad et al. 2020).
 */
export function pruneLayerMask(importance: ArrayLike<number>, oldMask: Float32Array, count: number, minLayers = 1): Float32Array {
  if (importance.length !== oldMask.length) throw new Error(`pruneLayerMask: importance has ${importance.length} layers, mask has ${oldMask.length}`);
  const alive = Array.from({ length: oldMask.length }, (_, l) => l).filter((l) => oldMask[l] !== 0);
  if (alive.length - count < minLayers) throw new Error(`removing ${count} more of the ${alive.length} remaining layers would leave fewer than ${minLayers}: lower targetSparsity`);
  const mask = Float32Array.from(oldMask);
  for (const l of alive.sort((a, b) => importance[a]! - importance[b]! || b - a).slice(0, count)) mask[l] = 0;
  return mask;
}
