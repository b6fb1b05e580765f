// @topiary/cofi: the mathematical core of CoFi pruning (hard-concrete L0 masks with a Lagrangian
// sparsity constraint, and CoFi's layerwise + prediction distillation). The plugin factory and the
// Pruner that drive them in training are not here yet.
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
