/**
 * @topiary/retraining-free: pruning without retraining. `retraining-free` (Kwon et al. 2022): Fisher
 * mask search under a MAC or latency constraint, mask rearrangement and least-squares mask tuning; `layer-drop`
 * (Sajjad et al. 2020): whole encoder layers by five strategies. Both optionally fine-tune briefly.
 */
import { provide, type TopiaryPlugin } from '@topiary/core';
import { RetrainingFreePruner, type RetrainingFreeOptions } from './pruner.js';
import { LayerDropPruner, type LayerDropOptions } from './layer-drop.js';
import { LAYER_DROP_OPTIONS, RETRAINING_FREE_OPTIONS } from './options.js';

export { RetrainingFreePruner } from './pruner.js';
export { LAYER_DROP_OPTIONS, RETRAINING_FREE_OPTIONS } from './options.js';
export type { RetrainingFreeOptions } from './pruner.js';
export { LAYER_DROP_STRATEGIES, LayerDropPruner, layerSimilarity, layersFor, layersToDrop } from './layer-drop.js';
export type { LayerDropOptions, LayerDropStrategy } from './layer-drop.js';
export { collectMaskGrads, fisherInformation } from './fisher.js';
export type { MaskGrads } from './fisher.js';
export { pruningSchedule, searchLatency, searchMac } from './search.js';
export type { LatencySearchInput, LatencySearchResult, MacSearchInput, MacSearchResult } from './search.js';
export { greedyRearrange, prunedGradNorm } from './rearrange.js';
export { rescaleMasks } from './rescale.js';
export type { BlockReport, RescaleInput } from './rescale.js';
export { dampedScaleSolve } from './linalg.js';
export { encoderMacs, macPerHead, macPerNeuron, maskMacs, modelMacs } from './mac.js';

/**
 * The plugin: registers the `retraining-free` and `layer-drop` pruners. `options` are defaults under
 * the run config's `options`, for both pruners by their own keys.
 */
export function retrainingFreePlugin(options: { retrainingFree?: RetrainingFreeOptions; layerDrop?: LayerDropOptions } = {}): TopiaryPlugin {
  return {
    name: '@topiary/retraining-free',
    version: '0.1.0',
    register(container) {
      provide(container, {
        kind: 'pruner',
        id: 'retraining-free',
        description: 'Kwon et al. 2022: Fisher mask search under a MAC or latency constraint, mask rearrangement, least-squares mask tuning; no retraining (optional short KD fine-tune)',
        options: RETRAINING_FREE_OPTIONS,
        create: (o) => new RetrainingFreePruner({ ...options.retrainingFree, ...(o as RetrainingFreeOptions) }),
      });
      provide(container, {
        kind: 'pruner',
        id: 'layer-drop',
        description: 'Sajjad et al. 2020: drop whole encoder layers (top, bottom, alternate, symmetric, contribution), optional KD fine-tune',
        options: LAYER_DROP_OPTIONS,
        create: (o) => new LayerDropPruner({ ...options.layerDrop, ...(o as LayerDropOptions) }),
      });
    },
  };
}

export default retrainingFreePlugin;
