import { describe, expect, it } from 'vitest';
import { encoderMacs, macPerHead, macPerNeuron } from './mac.js';
import { pruningSchedule, searchMac } from './search.js';

const rng = (seed: number) => {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
};

describe('MAC-constrained mask search', () => {
  it('counts MACs as the reference does', () => {
    // efficiency/mac.py: 3 T H d + 2 T^2 d + T d H per head, 2 T H per neuron.
    expect(macPerHead(128, 768, 64)).toBe(3 * 128 * 768 * 64 + 2 * 128 * 128 * 64 + 128 * 64 * 768);
    expect(macPerNeuron(128, 768)).toBe(2 * 128 * 768);
    expect(encoderMacs([12, 0], [3072, 10], 19, 768, 64)).toBe(12 * macPerHead(19, 768, 64) + 3082 * macPerNeuron(19, 768));
    const [first, last] = pruningSchedule(0.6, 2);
    expect(first).toBeCloseTo(Math.sqrt(0.6), 12);
    expect(last).toBe(0.6);
  });

  it('finds the most important set within the budget (brute force over every subset of 10 units)', () => {
    const r = rng(7);
    // 2 layers x 2 heads and 2 layers x 3 neurons; T=4, H=8, d=4: a head costs 640 MACs, a neuron 64.
    const T = 4;
    const H = 8;
    const d = 4;
    const mh = macPerHead(T, H, d);
    const mn = macPerNeuron(T, H);
    for (let trial = 0; trial < 6; trial++) {
      const headImportance = [0, 1].map(() => Array.from({ length: 2 }, () => r()));
      const neuronImportance = [0, 1].map(() => Array.from({ length: 3 }, () => r() * (trial % 2 ? 0.05 : 1)));
      const units = [...headImportance.flat().map((v) => ({ v, c: mh })), ...neuronImportance.flat().map((v) => ({ v, c: mn }))];
      const dense = units.reduce((s, u) => s + u.c, 0);
      for (const constraint of [0.1, 0.25, 0.4, 0.6, 0.8, 0.95]) {
        let best = 0;
        for (let set = 0; set < 1 << units.length; set++) {
          let cost = 0;
          let imp = 0;
          units.forEach((u, i) => {
            if (set & (1 << i)) {
              cost += u.c;
              imp += u.v;
            }
          });
          if (cost <= constraint * dense && imp > best) best = imp;
        }
        const res = searchMac({ headImportance, neuronImportance, seqLen: T, hiddenSize: H, headSize: d, constraint });
        expect(res.headMask.map((m) => m.length)).toEqual([2, 2]);
        const cost = res.headMask.reduce((s, m) => s + m.reduce((a, v) => a + v, 0), 0) * mh + res.neuronMask.reduce((s, m) => s + m.reduce((a, v) => a + v, 0), 0) * mn;
        expect(cost).toBeLessThanOrEqual(constraint * dense);
        expect(res.macFraction).toBeCloseTo(cost / dense, 12);
        expect(res.importance).toBeCloseTo(best, 9);
      }
    }
  });

  it('never exceeds the constraint on bert-mini shapes', () => {
    const r = rng(11);
    const headImportance = Array.from({ length: 4 }, () => Array.from({ length: 4 }, () => r() ** 3));
    const neuronImportance = Array.from({ length: 4 }, () => Array.from({ length: 1024 }, () => r() ** 3 * 0.01));
    for (const constraint of [0.05, 0.2, 0.4, 0.6, 0.8, 0.99]) {
      const res = searchMac({ headImportance, neuronImportance, seqLen: 19, hiddenSize: 256, headSize: 64, constraint });
      const macs = encoderMacs(res.headMask.map((m) => m.reduce((a, v) => a + v, 0)), res.neuronMask.map((m) => m.reduce((a, v) => a + v, 0)), 19, 256, 64);
      expect(macs).toBeLessThanOrEqual(constraint * encoderMacs([4, 4, 4, 4], [1024, 1024, 1024, 1024], 19, 256, 64));
      // Within one neuron of the budget: the search fills what the heads leave.
      expect(constraint - res.macFraction).toBeLessThan(macPerNeuron(19, 256) / encoderMacs([4, 4, 4, 4], [1024, 1024, 1024, 1024], 19, 256, 64) + 1e-12);
    }
    expect(() => searchMac({ headImportance, neuronImportance, seqLen: 19, hiddenSize: 256, headSize: 64, constraint: 1.5 })).toThrow(/constraint/);
  });
});
