import { describe, expect, it } from 'vitest';
import { piecewiseAt, type PiecewiseLatency } from '@topiary/core';
import { searchLatency, searchMac } from './search.js';
import { macPerHead, macPerNeuron } from './mac.js';

const rng = (seed: number) => {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
};
const kept = (m: Float32Array) => m.reduce((a, v) => a + (v !== 0 ? 1 : 0), 0);
const latencyOf = (heads: Float32Array[], neurons: Float32Array[], mha: PiecewiseLatency, ffn: PiecewiseLatency) =>
  heads.reduce((a, m, l) => a + piecewiseAt(mha, kept(m)) + piecewiseAt(ffn, kept(neurons[l]!)), 0);

describe('latency-constrained mask search', () => {
  it('is the MAC search when latency is linear in the units kept (threshold 1, c = slope, nothing at 0)', () => {
    const r = rng(3);
    const T = 4;
    const H = 8;
    const d = 4;
    const mha = { threshold: 1, c: macPerHead(T, H, d), slope: macPerHead(T, H, d), zero: 0 };
    const ffn = { threshold: 1, c: macPerNeuron(T, H), slope: macPerNeuron(T, H), zero: 0 };
    for (let trial = 0; trial < 8; trial++) {
      const headImportance = [0, 1, 2].map(() => Array.from({ length: 3 }, () => r()));
      const neuronImportance = [0, 1, 2].map(() => Array.from({ length: 6 }, () => r() * (trial % 2 ? 0.05 : 1)));
      for (const constraint of [0.1, 0.3, 0.5, 0.7, 0.9]) {
        const lat = searchLatency({ headImportance, neuronImportance, mha, ffn, constraint });
        const mac = searchMac({ headImportance, neuronImportance, seqLen: T, hiddenSize: H, headSize: d, constraint });
        expect(lat.importance).toBeCloseTo(mac.importance, 9);
        expect(lat.latencyFraction).toBeLessThanOrEqual(constraint + 1e-12);
      }
    }
  });

  it('stays within the constraint and never beats the best subset under piecewise latency (brute force)', () => {
    const r = rng(5);
    // 2 layers x 2 heads, 2 layers x 3 neurons: 10 units, every subset enumerable.
    const mha = { threshold: 1, c: 3, slope: 1, zero: 0.2 };
    const ffn = { threshold: 2, c: 2, slope: 0.5, zero: 0.1 };
    for (let trial = 0; trial < 6; trial++) {
      const headImportance = [0, 1].map(() => Array.from({ length: 2 }, () => r()));
      const neuronImportance = [0, 1].map(() => Array.from({ length: 3 }, () => r()));
      const dense = 2 * (piecewiseAt(mha, 2) + piecewiseAt(ffn, 3));
      for (const constraint of [0.2, 0.4, 0.6, 0.8, 0.95]) {
        let best = -Infinity;
        for (let set = 0; set < 1 << 10; set++) {
          const bit = (i: number) => (set >> i) & 1;
          const hm = [0, 1].map((l) => Float32Array.from([bit(2 * l), bit(2 * l + 1)]));
          const nm = [0, 1].map((l) => Float32Array.from([bit(4 + 3 * l), bit(5 + 3 * l), bit(6 + 3 * l)]));
          if (latencyOf(hm, nm, mha, ffn) > constraint * dense) continue;
          const imp = hm.reduce((a, m, l) => a + m.reduce((s, v, i) => s + v * headImportance[l]![i]!, 0), 0) + nm.reduce((a, m, l) => a + m.reduce((s, v, i) => s + v * neuronImportance[l]![i]!, 0), 0);
          best = Math.max(best, imp);
        }
        const res = searchLatency({ headImportance, neuronImportance, mha, ffn, constraint });
        const lat = latencyOf(res.headMask, res.neuronMask, mha, ffn);
        expect(lat).toBeLessThanOrEqual(constraint * dense + 1e-12);
        expect(res.latencyMs).toBeCloseTo(lat, 12);
        expect(res.denseLatencyMs).toBeCloseTo(dense, 12);
        const imp = res.headMask.reduce((a, m, l) => a + m.reduce((s, v, i) => s + v * headImportance[l]![i]!, 0), 0) + res.neuronMask.reduce((a, m, l) => a + m.reduce((s, v, i) => s + v * neuronImportance[l]![i]!, 0), 0);
        expect(res.importance).toBeCloseTo(imp, 12);
        expect(imp).toBeLessThanOrEqual(best + 1e-12);
      }
    }
  });

  it('drops a whole block when its fixed cost buys more elsewhere, and says when nothing fits', () => {
    // Layer 1's heads matter little: at a tight budget its attention block goes (0 heads) while layer 0 keeps its heads.
    const mha = { threshold: 2, c: 4, slope: 1, zero: 0 };
    const ffn = { threshold: 1, c: 1, slope: 1, zero: 0 };
    const res = searchLatency({ headImportance: [[5, 4, 3], [0.01, 0.01, 0.01]], neuronImportance: [[1], [1]], mha, ffn, constraint: 0.5 });
    expect(kept(res.headMask[1]!)).toBe(0);
    expect(kept(res.headMask[0]!)).toBeGreaterThan(0);
    expect(res.latencyFraction).toBeLessThanOrEqual(0.5);
    expect(() => searchLatency({ headImportance: [[1]], neuronImportance: [[1]], mha: { ...mha, zero: 3 }, ffn: { ...ffn, zero: 3 }, constraint: 0.5 })).toThrow(/no masks fit/);
  });
});
