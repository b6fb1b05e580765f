/**
 * @topiary/criteria-magnitude: "what is important" by weight magnitude (`magnitude`: |w| per weight,
 * L1/L2 norms for heads, FFN neurons and hidden dimensions) and the `random` control.
 */
import { provide, z, type TopiaryPlugin } from '@topiary/core';
import { MagnitudeCriterion, RandomCriterion, type MagnitudeOptions } from './magnitude.js';

export { MagnitudeCriterion, RandomCriterion, encoderWeightGroups } from './magnitude.js';
export type { MagnitudeOptions, Norm } from './magnitude.js';

/** Options of `magnitude` and `random`. */
export const MAGNITUDE_OPTIONS = z.strictObject({ norm: z.enum(['l1', 'l2']).default('l1').describe('norm of the weights a head, neuron or hidden dimension owns (weights score |w| either way)') });
export const RANDOM_OPTIONS = z.strictObject({ seed: z.number().int().default(0).describe('seed of the scores') });

/** The plugin: registers the `magnitude` and `random` criteria. */
export function magnitudePlugin(): TopiaryPlugin {
  return {
    name: '@topiary/criteria-magnitude',
    version: '0.1.0',
    register(container) {
      provide(container, {
        kind: 'criterion',
        id: 'magnitude',
        description: 'weight magnitude |w|; L1/L2 norm of the weights a head, neuron or hidden dimension owns',
        options: MAGNITUDE_OPTIONS,
        create: (o) => new MagnitudeCriterion(o as MagnitudeOptions),
      });
      provide(container, {
        kind: 'criterion',
        id: 'random',
        description: 'uniform random scores (seeded): the control baseline',
        options: RANDOM_OPTIONS,
        create: (o) => new RandomCriterion(o as { seed?: number }),
      });
    },
  };
}

export default magnitudePlugin;
