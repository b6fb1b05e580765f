/**
 * The reference's `greedy_rearrange` for one layer: with `grads` `[batches, n]` (per-batch mask
 * gradients), the pruned set starts as the `n - kept` units of least Fisher information; each kept
 * unit in increasing order of information joins it, and the unit whose removal leaves the smallest
 * squared norm of the summed gradient of the pruned set (the Fisher-based estimate of the loss of
 * pruning them together, correlations included) leaves it. The number kept does not change, and the
 * objective never increases (removing the unit that just joined restores the previous set).
 */
export function greedyRearrange(mask: ArrayLike<number>, grads: Float32Array, batches: number): Float32Array {
  const n = mask.length;
  if (grads.length !== batches * n) throw new Error(`greedyRearrange: ${grads.length} gradients for ${batches} batches of ${n} units`);
  const kept = Array.from(mask).filter((v) => v !== 0).length;
  const pruned = n - kept;
  if (kept === 0 || pruned === 0) return Float32Array.from(mask);
  // Unit-major copy: g[i] is unit i's gradient over batches.
  const g = Array.from({ length: n }, (_, i) => Float64Array.from({ length: batches }, (_, b) => grads[b * n + i]!));
  const info = g.map((v) => v.reduce((s, x) => s + x * x, 0));
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => info[a]! - info[b]! || a - b);
  const set = order.slice(0, pruned);
  const sum = new Float64Array(batches);
  for (const i of set) for (let b = 0; b < batches; b++) sum[b]! += g[i]![b]!;
  for (const index of order.slice(pruned)) {
    set.push(index);
    for (let b = 0; b < batches; b++) sum[b]! += g[index]![b]!;
    let removed = 0;
    let bestLen = Infinity;
    set.forEach((i, k) => {
      let len = 0;
      for (let b = 0; b < batches; b++) len += (sum[b]! - g[i]![b]!) ** 2;
      if (len < bestLen) {
        bestLen = len;
        removed = k;
      }
    });
    const out = set[removed]!;
    for (let b = 0; b < batches; b++) sum[b]! -= g[out]![b]!;
    set.splice(removed, 1);
  }
  const result = new Float32Array(n).fill(1);
  for (const i of set) result[i] = 0;
  return result;
}

/** `||sum of the pruned units' gradients||^2`: what `greedyRearrange` lowers. */
export function prunedGradNorm(mask: ArrayLike<number>, grads: Float32Array, batches: number): number {
  const n = mask.length;
  let total = 0;
  for (let b = 0; b < batches; b++) {
    let s = 0;
    for (let i = 0; i < n; i++) if (mask[i] === 0) s += grads[b * n + i]!;
    total += s * s;
  }
  return total;
}
