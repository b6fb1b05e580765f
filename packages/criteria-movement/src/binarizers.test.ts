import { describe, expect, it } from 'vitest';
import { golden } from '../../core/src/test-support/shared.js';
import { magnitudeMask, scheduleThreshold, thresholdMask, topKMask } from './binarizers.js';

const G = golden('algorithms-golden.json').movement as {
  scores: number[][];
  weights: number[][];
  'topk_keep_0.3': number[][];
  'sigmoid_threshold_0.5': number[][];
  'sigmoid_threshold_0.999_min_rule': number[][];
  'threshold_raw_1.0': number[][];
  'magnitude_keep_0.25': number[][];
  schedule: { args: Record<string, number>; values: Record<string, [number, number]> };
};
const flat = (m: number[][]) => m.flat();

describe("movement pruning's binarizers (reference parity)", () => {
  it('top-k keeps the 30% highest scores', () => {
    expect(Array.from(topKMask(flat(G.scores), 0.3))).toEqual(flat(G['topk_keep_0.3']));
  });
  it('sigmoid threshold 0.5', () => {
    expect(Array.from(thresholdMask(flat(G.scores), 0.5, true))).toEqual(flat(G['sigmoid_threshold_0.5']));
  });
  it('sigmoid threshold 0.999 falls back to keeping at least 0.5% + 1', () => {
    const got = thresholdMask(flat(G.scores), 0.999, true);
    expect(Array.from(got)).toEqual(flat(G['sigmoid_threshold_0.999_min_rule']));
    expect(got.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  });
  it('raw threshold 1.0', () => {
    expect(Array.from(thresholdMask(flat(G.scores), 1.0, false))).toEqual(flat(G['threshold_raw_1.0']));
  });
  it('magnitude keeps the 25% largest |w|', () => {
    expect(Array.from(magnitudeMask(flat(G.weights), 0.25))).toEqual(flat(G['magnitude_keep_0.25']));
  });
  it('follows the cubic threshold and lambda schedule at every listed step', () => {
    const a = G.schedule.args;
    const s = {
      totalSteps: a['total_step']!,
      warmupSteps: a['warmup_steps']!,
      initialThreshold: a['initial_threshold']!,
      finalThreshold: a['final_threshold']!,
      initialWarmup: a['initial_warmup']!,
      finalWarmup: a['final_warmup']!,
      finalLambda: a['final_lambda']!,
    };
    for (const [step, [threshold, lambda]] of Object.entries(G.schedule.values)) {
      const got = scheduleThreshold(Number(step), s);
      expect(got.threshold).toBeCloseTo(threshold, 10);
      expect(got.lambda).toBeCloseTo(lambda, 7);
    }
  });
  it('top-k breaks ties deterministically and keeps exactly floor(k n)', () => {
    expect(Array.from(topKMask([1, 1, 1, 1], 0.5))).toEqual([1, 1, 0, 0]);
    expect(topKMask([3, 1, 2], 0.99).reduce((a, b) => a + b, 0)).toBe(2);
  });
});
