import { componentRef, fractionOption, z } from '@topiary/core';
import { TARGETS } from './factorize.js';

/**
 * The pruners' options as declared schemas (a run config is checked against them before any model
 * loads); `parseOptions` keeps its own checks (exactly one of rank/paramRatio) for programmatic use.
 */
export const SVD_OPTIONS = z.strictObject({
  targets: z.array(z.enum([...TARGETS, 'attention', 'ffn'])).min(1).default(['ffn']).describe('linear layers to factorize: parts or the groups attention, ffn'),
  rank: z.number().int().positive().optional().describe('one rank for every chosen layer (or paramRatio)'),
  paramRatio: z.number().gt(0).lt(1).optional().describe('global budget: fraction of the chosen layers\' dense parameters the factors keep, ranks by retained energy'),
  fineTune: z.boolean().default(false).describe('fine-tune after factorizing (the run\'s training budget, KD when there is a teacher)'),
  fisherBatches: z.number().int().positive().default(8).describe('fisher-svd: batches the squared gradients are summed over'),
  losses: z.array(componentRef).optional().describe('loss terms of the fine-tune'),
  targetSparsity: fractionOption().optional().describe('the run\'s targetSparsity (unused)'),
});

export const CHAIN_OPTIONS = z.strictObject({
  stages: z.array(z.object({ method: z.string().min(1), options: z.record(z.string(), z.unknown()).optional() }).strict()).min(1).describe('stages in order: [{method, options}], each on the previous stage\'s compacted model'),
  targetSparsity: fractionOption().optional().describe('the run\'s targetSparsity (passed to each stage)'),
});

export const EMBEDDING_SVD_OPTIONS = z.strictObject({
  rank: z.number().int().positive().describe('rank E of the factorized word embeddings: [vocab, E] times [E, hidden]'),
  fineTune: z.boolean().default(false).describe('fine-tune after factorizing (the run\'s training budget, KD when there is a teacher)'),
  losses: z.array(componentRef).optional().describe('loss terms of the fine-tune'),
  targetSparsity: fractionOption().optional().describe('the run\'s targetSparsity (unused)'),
});
