import type { DependencyContainer } from 'tsyringe';
import { provide, type TopiaryPlugin } from './plugin.js';
import { CUBIC_OPTIONS, CubicScheduler, ITERATIVE_OPTIONS, IterativeScheduler, ONE_SHOT_OPTIONS, OneShotScheduler } from '../pruning/schedulers.js';
import { CE_OPTIONS, CrossEntropyLoss, KD_OPTIONS, KdLoss, type KdOptions } from '../engine/losses.js';
import { STRUCTURED_OPTIONS, StructuredPruner, UnstructuredPruner } from '../pruning/structured.js';
import { z } from './options.js';
import { BUILTIN_FAMILIES } from '../model/families/index.js';

/** Core's own components, registered into every run's container like any plugin. */
export function corePlugin(): TopiaryPlugin {
  return {
    name: '@topiary/core',
    version: '0.1.0',
    register(container: DependencyContainer) {
      provide(container, { kind: 'scheduler', id: 'one-shot', description: 'prune to the target at once, then fine-tune', options: ONE_SHOT_OPTIONS, create: (o) => new OneShotScheduler(o) });
      provide(container, { kind: 'scheduler', id: 'iterative', description: 'prune in increasing levels, re-scoring and fine-tuning between them', options: ITERATIVE_OPTIONS, create: (o) => new IterativeScheduler(o) });
      provide(container, {
        kind: 'scheduler',
        id: 'cubic',
        description: 'gradual cubic sparsity schedule (Zhu & Gupta; movement pruning)',
        options: CUBIC_OPTIONS,
        create: (o) => new CubicScheduler(o as never),
      });
      provide(container, { kind: 'loss', id: 'kd', description: 'prediction distillation: KL(teacher_T || student_T) T^2 mixed with cross-entropy', options: KD_OPTIONS, create: (o) => new KdLoss(o as KdOptions) });
      provide(container, { kind: 'loss', id: 'ce', description: 'task cross-entropy', options: CE_OPTIONS, create: (o) => new CrossEntropyLoss((o['weight'] as number | undefined) ?? 1) });
      provide(container, {
        kind: 'pruner',
        id: 'structured',
        description: 'structured head and FFN-neuron pruning by any criterion, one-shot or iterative, with fine-tuning',
        options: STRUCTURED_OPTIONS,
        create: (o) => new StructuredPruner(o),
      });
      provide(container, {
        kind: 'pruner',
        id: 'unstructured',
        description: 'unstructured pruning of encoder weights by any weight criterion, per matrix or global, one-shot or iterative, with fine-tuning',
        options: STRUCTURED_OPTIONS,
        create: (o) => new UnstructuredPruner(o),
      });
      // Families take no options: model_type selects one, its config.json configures it.
      for (const f of BUILTIN_FAMILIES) provide(container, { kind: 'family', id: f.id, description: f.description, options: z.strictObject({}), create: () => f });
    },
  };
}
