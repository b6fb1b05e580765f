/**
 * @topiary/criteria-firstorder: first-order (Taylor) importance, |dL/dm| of head and FFN-neuron masks
 * and |w * dL/dw| of weights (Molchanov et al. 2017; Michel et al. 2019; CAP-f's criterion).
 */
import { provide, z, type TopiaryPlugin } from '@topiary/core';
import { FirstOrderCriterion, type FirstOrderOptions } from './firstorder.js';

export { FirstOrderCriterion } from './firstorder.js';
export type { FirstOrderOptions } from './firstorder.js';

/** Options of `first-order` (the defaults of `FirstOrderCriterion`). */
export const FIRST_ORDER_OPTIONS = z.strictObject({
  normalize: z.boolean().default(true).describe("divide each layer's head and neuron scores by their L2 norm"),
  loss: z.enum(['ce', 'kd']).default('ce').describe('loss to differentiate: task cross-entropy or distillation from the teacher'),
  temperature: z.number().positive().default(2).describe("temperature of loss 'kd'"),
  maxBatches: z.number().int().min(1).optional().describe('batches to accumulate over (default: all the pruner passes)'),
});

/** The plugin: registers the `first-order` criterion. */
export function firstOrderPlugin(): TopiaryPlugin {
  return {
    name: '@topiary/criteria-firstorder',
    version: '0.1.0',
    register(container) {
      provide(container, {
        kind: 'criterion',
        id: 'first-order',
        description: 'Taylor importance |dL/dm| of head and FFN-neuron masks (normalized per layer), |w dL/dw| of weights',
        options: FIRST_ORDER_OPTIONS,
        create: (o) => new FirstOrderCriterion(o as FirstOrderOptions),
      });
    },
  };
}

export default firstOrderPlugin;
