/**
 * @topiary/criteria-firstorder: first-order (Taylor) importance, |dL/dm| of head and FFN-neuron masks
 * and |w * dL/dw| of weights (Molchanov et al. 2017; Michel et al. 2019; CAP-f's criterion).
 */
import { provide, type TopiaryPlugin } from '@topiary/core';
import { FirstOrderCriterion, type FirstOrderOptions } from './firstorder.js';

export { FirstOrderCriterion } from './firstorder.js';
export type { FirstOrderOptions } from './firstorder.js';

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
        create: (o) => new FirstOrderCriterion(o as FirstOrderOptions),
      });
    },
  };
}

export default firstOrderPlugin;
