import { componentRef, z } from '@topiary/core';
import { LAYER_DROP_STRATEGIES } from './layer-drop.js';

/**
 * Options of the two pruners as declared schemas (the run checks a config against them before any
 * model loads); the pruners' own checks stay for programmatic use. Defaults are those the code applies.
 */
const finetune = {
  finetuneSteps: z.number().int().min(0).default(0).describe('steps of fine-tuning after pruning (0: none)'),
  finetuneLearningRate: z.number().positive().optional().describe('peak learning rate of the fine-tune (default: the run\'s)'),
  losses: z.array(componentRef).optional().describe('loss terms of the fine-tune (default: KD from the teacher)'),
};

export const RETRAINING_FREE_OPTIONS = z.strictObject({
  macConstraint: z.number().gt(0).lt(1).optional().describe('fraction of the dense encoder\'s MACs to keep (this or latencyConstraint)'),
  latencyConstraint: z.number().gt(0).lt(1).optional().describe('fraction of the dense encoder\'s latency to keep, by latencyTable (this or macConstraint)'),
  latencyTable: z.string().min(1).optional().describe('latency table of `topiary profile MODEL --lut FILE` (with latencyConstraint)'),
  samples: z.number().int().min(1).default(2048).describe('training examples for the Fisher information and mask tuning'),
  sampleBatchSize: z.number().int().min(1).default(32).describe('batch size of the sample (one gradient per batch)'),
  seqLen: z.number().positive().optional().describe('sequence length MACs are counted at (default: the training texts\' mean)'),
  rearrange: z.boolean().default(true).describe('mask rearrangement within each layer'),
  rescale: z.boolean().default(true).describe('mask tuning by layerwise least squares'),
  teacherConstraint: z.number().gt(0).max(1).optional().describe('constraint of the masks mask tuning reconstructs (default sqrt(macConstraint))'),
  onFailure: z.enum(['stop', 'skip']).default('stop').describe('when a solve fails or a scale leaves [-maxScale, maxScale]: stop tuning (reference) or skip that block'),
  ffnTarget: z.enum(['masked', 'reference']).default('masked').describe('FFN reconstruction target (reference: the hook order of rescale.py)'),
  maxScale: z.number().positive().default(10).describe('largest tuned scale kept'),
  damp: z.number().min(0).default(1).describe('damping of the least-squares solve'),
  evalStages: z.boolean().default(false).describe('evaluate dev after search, rearrangement and tuning'),
  ...finetune,
}).superRefine((o, ctx) => {
  // Exactly one constraint; a latency constraint needs its table.
  if ((o.macConstraint === undefined) === (o.latencyConstraint === undefined)) {
    ctx.addIssue({ code: 'custom', path: [o.macConstraint === undefined ? 'macConstraint' : 'latencyConstraint'], message: 'give exactly one of macConstraint (a fraction of the dense MACs) and latencyConstraint (a fraction of the dense latency)' });
  }
  if (o.latencyConstraint !== undefined && o.latencyTable === undefined) ctx.addIssue({ code: 'custom', path: ['latencyTable'], message: 'latencyConstraint needs latencyTable, the file of `topiary profile MODEL --lut FILE`' });
  if (o.latencyTable !== undefined && o.latencyConstraint === undefined) ctx.addIssue({ code: 'custom', path: ['latencyTable'], message: 'latencyTable is read only with latencyConstraint' });
});

export const LAYER_DROP_OPTIONS = z.strictObject({
  strategy: z.enum(LAYER_DROP_STRATEGIES).default('top').describe('top, bottom, alternate, symmetric or contribution (Sajjad et al. 2020)'),
  drop: z.number().positive().describe('layers to drop: a count, or a fraction of the layers in (0, 1)'),
  samples: z.number().int().min(1).default(1024).describe('examples the contribution strategy measures on'),
  sampleBatchSize: z.number().int().min(1).default(32).describe('their batch size'),
  evalBeforeFinetune: z.boolean().optional().describe('evaluate dev before the fine-tune too (default: when fine-tuning)'),
  ...finetune,
});
