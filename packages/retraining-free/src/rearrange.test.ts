import { describe, expect, it } from 'vitest';
import { greedyRearrange, prunedGradNorm } from './rearrange.js';

describe('mask rearrangement', () => {
  it('prunes units whose gradients cancel instead of the least informative one (hand example)', () => {
    // Batches x units: units 0 and 1 have the most information but cancel; unit 2 has the least.
    const grads = Float32Array.from([1, -1, 0.5, -1, 1, 0.5]);
    // The search kept unit 1 (pruned the two of least information, 2 and 0).
    const mask = [0, 1, 0];
    expect(Array.from(greedyRearrange(mask, grads, 2))).toEqual([0, 0, 1]);
    expect(prunedGradNorm([0, 0, 1], grads, 2)).toBe(0);
  });

  it('keeps the number of units and never raises the pruned units\' summed squared gradient', () => {
    let s = 5;
    const r = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
    for (let trial = 0; trial < 5; trial++) {
      const n = 40;
      const batches = 8;
      const grads = Float32Array.from({ length: n * batches }, () => r());
      const mask = Array.from({ length: n }, (_, i) => (i * 7 + trial) % 3 === 0 ? 0 : 1);
      const out = greedyRearrange(mask, grads, batches);
      expect(out.reduce((a, v) => a + v, 0)).toBe(mask.reduce((a, v) => a + v, 0));
      // The start of the greedy pass: the least-information units pruned.
      const info = Array.from({ length: n }, (_, i) => Array.from({ length: batches }, (_, b) => grads[b * n + i]! ** 2).reduce((a, v) => a + v, 0));
      const pruned = n - mask.reduce((a, v) => a + v, 0);
      const order = info.map((v, i) => [v, i] as const).sort((a, b) => a[0] - b[0]).map(([, i]) => i);
      const start = Array.from({ length: n }, (_, i) => (order.slice(0, pruned).includes(i) ? 0 : 1));
      expect(prunedGradNorm(out, grads, batches)).toBeLessThanOrEqual(prunedGradNorm(start, grads, batches) + 1e-9);
    }
    expect(Array.from(greedyRearrange([1, 1], Float32Array.from([1, 2]), 1))).toEqual([1, 1]);
  });
});
