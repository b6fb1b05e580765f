/**
 * @topiary/criteria-movement: movement and soft-movement pruning (Sanh, Wolf and Rush 2020) and
 * gradual magnitude pruning on the same cubic schedule, as the `movement` pruner; the reference's
 * binarizers and threshold schedule as functions.
 */
import { componentRef, provide, z, type TopiaryPlugin } from '@topiary/core';
import { MovementPruner, type MovementMode, type MovementOptions } from './movement.js';

export { MovementPruner, straightThrough } from './movement.js';
export type { MovementMode, MovementOptions } from './movement.js';
export { kthSmallest, magnitudeMask, scheduleThreshold, thresholdMask, topKMask } from './binarizers.js';
export type { ThresholdSchedule } from './binarizers.js';

const threshold = z.number().min(0).max(1);
/**
 * Options of `movement` (with `mode`) and of its presets `soft-movement` and `gradual-magnitude` (mode
 * fixed): the defaults of `MovementPruner`.
 */
export function movementOptions(fixedMode?: MovementMode) {
  const by = (what: string, v: Record<MovementMode, number>) => (fixedMode ? `${what} (default ${v[fixedMode]})` : `${what} (default by mode: topk ${v.topk}, soft ${v.soft}, magnitude ${v.magnitude})`);
  return z
    .strictObject({
      ...(fixedMode ? {} : { mode: z.enum(['topk', 'soft', 'magnitude']).default('topk').describe('hard movement (top-k), soft movement, or gradual magnitude on the same schedule') }),
      initialThreshold: threshold.optional().describe(by('keep fraction (topk, magnitude) or sigmoid threshold (soft) at the start', { topk: 1, soft: 0, magnitude: 1 })),
      finalThreshold: threshold.optional().describe(by('keep fraction (topk, magnitude) or sigmoid threshold (soft) at the end', { topk: 0.1, soft: 0.1, magnitude: 0.1 })),
      initialWarmup: z.number().min(0).default(1).describe('steps at the initial threshold, in units of warmupSteps'),
      finalWarmup: z.number().min(0).default(2).describe('steps at the final threshold, in units of warmupSteps'),
      warmupSteps: z.number().int().min(1).optional().describe("schedule unit in steps (default: the run's learning-rate warm-up, or 10% of the budget)"),
      finalLambda: z.number().min(0).optional().describe(by("soft movement's L1 penalty weight at the final threshold", { topk: 0, soft: 400, magnitude: 0 })),
      scoreLearningRate: z.number().positive().default(0.01).describe('learning rate of the scores'),
      granularity: z
        .union([z.enum(['weight', 'row', 'column']), z.tuple([z.number().int().min(1), z.number().int().min(1)])])
        .default('weight')
        .describe("in Hugging Face's [out, in] orientation: weight, row, column or [rows, cols] blocks"),
      losses: z.array(componentRef).default([{ id: 'kd' }]).describe('loss terms'),
    })
    .superRefine((o, ctx) => {
      const mode = fixedMode ?? (o as { mode?: MovementMode }).mode ?? 'topk';
      if (mode !== 'soft' && o.finalThreshold === 0) ctx.addIssue({ code: 'custom', path: ['finalThreshold'], message: `the fraction of weights kept in '${mode}' mode must be in (0, 1]` });
    });
}

/** The plugin: registers the `movement` pruner and its `soft-movement` / `gradual-magnitude` presets. */
export function movementPlugin(): TopiaryPlugin {
  return {
    name: '@topiary/criteria-movement',
    version: '0.1.0',
    register(container) {
      provide(container, {
        kind: 'pruner',
        id: 'movement',
        description: 'movement pruning: learned scores, straight-through masks, cubic schedule (mode topk | soft | magnitude)',
        options: movementOptions(),
        create: (o) => new MovementPruner(o as MovementOptions),
      });
      provide(container, {
        kind: 'pruner',
        id: 'soft-movement',
        description: 'soft movement pruning: sigmoid(S) > tau with an L1 penalty following the threshold',
        options: movementOptions('soft'),
        create: (o) => new MovementPruner({ ...(o as MovementOptions), mode: 'soft' }),
      });
      provide(container, {
        kind: 'pruner',
        id: 'gradual-magnitude',
        description: 'gradual magnitude pruning on the movement cubic schedule (the baseline)',
        options: movementOptions('magnitude'),
        create: (o) => new MovementPruner({ ...(o as MovementOptions), mode: 'magnitude' }),
      });
    },
  };
}

export default movementPlugin;
