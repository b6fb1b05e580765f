/**
 * @topiary/contrastive: CAP (Xu et al. 2022), contrastive losses against the pre-trained model, the
 * pruning snapshots and the fine-tuned model, as the `contrastive` loss any pruner can add.
 */
import { provide, z, type TopiaryPlugin } from '@topiary/core';
import { ContrastiveLoss, type ContrastiveOptions } from './contrastive.js';

export { ContrastiveLoss, computeBank, representationOf } from './contrastive.js';
export type { ContrastiveOptions, Representation } from './contrastive.js';
export { contrastiveLoss, meanPooled, normalizeRows } from './loss.js';
export type { ContrastiveInput } from './loss.js';

/** Options of `contrastive` (the defaults of `ContrastiveLoss`). */
export const CONTRASTIVE_OPTIONS = z.strictObject({
  preset: z.enum(['structured', 'unstructured']).default('structured').describe('reference weights for structured (CAP-f) or unstructured (CAP-m, CAP-soft) pruning'),
  temperature: z.number().positive().default(0.1).describe('temperature of the contrastive softmax'),
  extraExamples: z.number().int().min(0).default(4096).describe("extra bank examples per step, divided among a bank's representations"),
  representation: z.enum(['cls', 'pooled', 'mean']).default('cls').describe('[CLS] hidden state, pooler output or masked mean'),
  unsupervisedWeight: z.number().min(0).optional().describe('weight of the unsupervised term (default by preset: 0.3 structured, 0.1 unstructured)'),
  supervisedWeight: z.number().min(0).optional().describe('weight of the supervised term (default by preset: 3 structured, 10 unstructured)'),
  pretrained: z.boolean().default(true).describe('PrC: contrast with the pre-trained model'),
  snapshots: z.boolean().default(true).describe('SnC: contrast with the snapshots of earlier levels'),
  finetuned: z.boolean().default(true).describe('FiC: contrast with the fine-tuned model'),
  seed: z.number().int().default(0).describe('seed of the extra-example draw'),
  sampler: z.custom<(n: number, k: number) => number[]>((v) => typeof v === 'function').optional().describe('programmatic only: picks k distinct rows of n'),
});

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
        options: CONTRASTIVE_OPTIONS,
        create: (o) => new ContrastiveLoss(o as ContrastiveOptions),
      });
    },
  };
}

export default contrastivePlugin;
