import type { MaskScheduler, ScheduleLevel } from '../contracts.js';
import { fractionOption, z } from '../plugins/options.js';

const target = (required: boolean) => (required ? fractionOption() : fractionOption().optional()).describe("the run's targetSparsity (set by the pruner from the config's top-level field)");

/** Options of `one-shot`, `iterative` and `cubic` (the pruner passes the run's `targetSparsity`). */
export const ONE_SHOT_OPTIONS = z.strictObject({ targetSparsity: target(true) });
export const ITERATIVE_OPTIONS = z
  .strictObject({
    levels: z.array(fractionOption()).min(1).optional().describe('increasing sparsity levels, e.g. [0.2, 0.4, 0.6, 0.8] (default: steps even levels up to targetSparsity)'),
    targetSparsity: target(false),
    steps: z.number().int().min(1).default(4).describe('number of even levels up to targetSparsity when levels are not given'),
  })
  .superRefine((o, ctx) => {
    if (o.levels === undefined && o.targetSparsity === undefined) ctx.addIssue({ code: 'custom', path: ['targetSparsity'], message: "iterative needs the run's targetSparsity or its own 'levels'" });
    o.levels?.forEach((v, i) => {
      if (i > 0 && v <= o.levels![i - 1]!) ctx.addIssue({ code: 'custom', path: ['levels', i], message: `levels must increase (${v} after ${o.levels![i - 1]})` });
    });
  });
export const CUBIC_OPTIONS = z.strictObject({
  targetSparsity: target(true),
  initialSparsity: fractionOption().default(0).describe('sparsity before the cubic starts'),
  initialWarmupSteps: z.number().int().min(0).default(0).describe('steps at initialSparsity'),
  finalWarmupSteps: z.number().int().min(0).default(0).describe('steps at targetSparsity at the end'),
});

const fraction = (v: unknown, what: string): number => {
  if (typeof v !== 'number' || !(v >= 0 && v < 1)) throw new Error(`${what} must be a number in [0, 1), got ${JSON.stringify(v)}`);
  return v;
};

/** `one-shot`: prune to the target at once, then fine-tune with the whole budget. */
export class OneShotScheduler implements MaskScheduler {
  readonly id = 'one-shot';
  readonly target: number;
  constructor(opts: { targetSparsity?: unknown } = {}) {
    this.target = fraction(opts.targetSparsity, "one-shot: option 'targetSparsity'");
  }
  levels(totalSteps: number): ScheduleLevel[] {
    return [{ sparsity: this.target, steps: totalSteps }];
  }
}

/**
 * `iterative`: a list of increasing sparsity levels (e.g. 0.2, 0.4, 0.6, 0.8); importance is recomputed
 * before each level and the budget is split evenly across levels for fine-tuning in between. Each
 * level's model is a snapshot (contrastive pruning reuses them).
 */
export class IterativeScheduler implements MaskScheduler {
  readonly id = 'iterative';
  readonly sparsities: number[];
  constructor(opts: { levels?: unknown; targetSparsity?: unknown; steps?: unknown } = {}) {
    if (Array.isArray(opts.levels)) {
      this.sparsities = opts.levels.map((v, i) => fraction(v, `iterative: option 'levels[${i}]'`));
    } else {
      const target = fraction(opts.targetSparsity, "iterative: option 'targetSparsity' (or 'levels')");
      const n = opts.steps === undefined ? 4 : Number(opts.steps);
      if (!Number.isInteger(n) || n < 1) throw new Error(`iterative: option 'steps' must be a positive integer, got ${JSON.stringify(opts.steps)}`);
      this.sparsities = Array.from({ length: n }, (_, i) => (target * (i + 1)) / n);
    }
    if (this.sparsities.length === 0) throw new Error("iterative: option 'levels' must list at least one sparsity");
    for (let i = 1; i < this.sparsities.length; i++) {
      if (this.sparsities[i]! <= this.sparsities[i - 1]!) throw new Error(`iterative: option 'levels' must increase, got ${JSON.stringify(this.sparsities)}`);
    }
  }
  levels(totalSteps: number): ScheduleLevel[] {
    const n = this.sparsities.length;
    return this.sparsities.map((sparsity, i) => ({ sparsity, steps: Math.floor(totalSteps / n) + (i < totalSteps % n ? 1 : 0) }));
  }
}

/**
 * `cubic`: gradual pruning (Zhu & Gupta 2017, movement pruning's schedule): the remaining fraction
 * falls from `1 - initialSparsity` to `1 - targetSparsity` along a cubic between the end of an
 * initial warm-up and the start of a final warm-up.
 */
export class CubicScheduler implements MaskScheduler {
  readonly id = 'cubic';
  constructor(
    private readonly opts: { targetSparsity: number; initialSparsity?: number; initialWarmupSteps?: number; finalWarmupSteps?: number },
  ) {
    fraction(opts.targetSparsity, "cubic: option 'targetSparsity'");
  }
  levels(totalSteps: number): ScheduleLevel[] {
    return [{ sparsity: this.opts.targetSparsity, steps: totalSteps }];
  }
  sparsityAt(step: number, totalSteps: number): number {
    const s0 = this.opts.initialSparsity ?? 0;
    const s1 = this.opts.targetSparsity;
    const a = this.opts.initialWarmupSteps ?? 0;
    const b = totalSteps - (this.opts.finalWarmupSteps ?? 0);
    if (step < a) return s0;
    if (step >= b) return s1;
    const progress = (step - a) / Math.max(1, b - a);
    return s1 + (s0 - s1) * (1 - progress) ** 3;
  }
}
