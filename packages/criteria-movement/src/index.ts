/**
 * @topiary/criteria-movement: movement and soft-movement pruning (Sanh, Wolf and Rush 2020) and
 * gradual magnitude pruning on the same cubic schedule, as the `movement` pruner; the reference's
 * binarizers and threshold schedule as functions.
 */
import { provide, type TopiaryPlugin } from '@topiary/core';
import { MovementPruner, type MovementOptions } from './movement.js';

export { MovementPruner, straightThrough } from './movement.js';
export type { MovementMode, MovementOptions } from './movement.js';
export { kthSmallest, magnitudeMask, scheduleThreshold, thresholdMask, topKMask } from './binarizers.js';
export type { ThresholdSchedule } from './binarizers.js';

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
        create: (o) => new MovementPruner(o as MovementOptions),
      });
      provide(container, {
        kind: 'pruner',
        id: 'soft-movement',
        description: 'soft movement pruning: sigmoid(S) > tau with an L1 penalty following the threshold',
        create: (o) => new MovementPruner({ ...(o as MovementOptions), mode: 'soft' }),
      });
      provide(container, {
        kind: 'pruner',
        id: 'gradual-magnitude',
        description: 'gradual magnitude pruning on the movement cubic schedule (the baseline)',
        create: (o) => new MovementPruner({ ...(o as MovementOptions), mode: 'magnitude' }),
      });
    },
  };
}

export default movementPlugin;
