/**
 * @topiary/cofi: CoFi pruning (Xia, Zhong and Chen 2022) as the `cofi` pruner: hard-concrete L0 masks
 * at five granularities with a Lagrangian sparsity constraint, CoFi's layerwise and prediction
 * distillation, and the final fine-tuning with frozen masks; the math is exported for reuse.
 */
import { provide, type TopiaryPlugin } from '@topiary/core';
import { COFI_OPTIONS, CoFiPruner, type CoFiOptions } from './pruner.js';

export { COFI_OPTIONS, CoFiDistillLoss, CoFiPruner, L0_STATE_DIR, L0_STATE_FILE } from './pruner.js';
export type { CoFiOptions } from './pruner.js';

/**
 * The plugin: registers the `cofi` pruner. `options` are defaults under the run config's `options`
 * (e.g. `cofiPlugin({ maskLearningRate: 0.05 })`).
 */
export function cofiPlugin(options: CoFiOptions = {}): TopiaryPlugin {
  return {
    name: '@topiary/cofi',
    version: '0.1.0',
    register(container) {
      provide(container, {
        kind: 'pruner',
        id: 'cofi',
        description: 'CoFi: L0 masks on attention/FFN blocks, heads, neurons and hidden dims with a Lagrangian to the target, layerwise distillation, final fine-tuning',
        options: COFI_OPTIONS,
        create: (o) => new CoFiPruner({ ...options, ...(o as CoFiOptions) }),
      });
    },
  };
}

export default cofiPlugin;

export {
  EPSILON,
  L0Module,
  LIMIT_A,
  LIMIT_B,
  LOG_ALPHA_MAX,
  LOG_ALPHA_MIN,
  MASK_TYPES,
  applyL0Gradients,
  cdfQz,
  cdfQzValue,
  disposeCoFiZ,
  roundHalfEven,
  toStructuredMasks,
} from './l0.js';
export type { CoFiZ, L0ModelConfig, L0Options, MaskType, ModelSizeReport, NoiseInput, ZValues } from './l0.js';
export {
  LayerTransformation,
  cofiDistillationLoss,
  defaultTeacherLayers,
  layerDistillationLoss,
  predictionDistillationLoss,
} from './distill.js';
export type {
  CoFiDistillInput,
  CoFiDistillOptions,
  CoFiDistillResult,
  LayerDistillOptions,
  LayerDistillResult,
} from './distill.js';
