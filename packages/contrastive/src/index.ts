/**
 * @topiary/contrastive: CAP (Xu et al. 2022), contrastive losses against the pre-trained model, the
 * pruning snapshots and the fine-tuned model, as the `contrastive` loss any pruner can add.
 */
import { provide, type TopiaryPlugin } from '@topiary/core';
import { ContrastiveLoss, type ContrastiveOptions } from './contrastive.js';

export { ContrastiveLoss, computeBank, representationOf } from './contrastive.js';
export type { ContrastiveOptions, Representation } from './contrastive.js';
export { contrastiveLoss, meanPooled, normalizeRows } from './loss.js';
export type { ContrastiveInput } from './loss.js';

/** The plugin: registers the `contrastive` loss. */
export function contrastivePlugin(): TopiaryPlugin {
  return {
    name: '@topiary/contrastive',
    version: '0.1.0',
    register(container) {
      provide(container, {
        kind: 'loss',
        id: 'contrastive',
        description: 'CAP: contrastive losses against the pre-trained model (PrC), pruning snapshots (SnC) and the fine-tuned model (FiC)',
        create: (o) => new ContrastiveLoss(o as ContrastiveOptions),
      });
    },
  };
}

export default contrastivePlugin;
