import type { DependencyContainer } from 'tsyringe';
import { provide, type TopiaryPlugin } from './plugin.js';
import { CubicScheduler, IterativeScheduler, OneShotScheduler } from '../pruning/schedulers.js';
import { CrossEntropyLoss, KdLoss, type KdOptions } from '../engine/losses.js';
import { StructuredPruner, UnstructuredPruner } from '../pruning/structured.js';
import { BUILTIN_FAMILIES } from '../model/families/index.js';

/** Core's own components, registered into every run's container like any plugin. */
export function corePlugin(): TopiaryPlugin {
  return {
    name: '@topiary/core',
    version: '0.1.0',
    register(container: DependencyContainer) {
      provide(container, { kind: 'scheduler', id: 'one-shot', description: 'prune to the target at once, then fine-tune', create: (o) => new OneShotScheduler(o) });
      provide(container, { kind: 'scheduler', id: 'iterative', description: 'prune in increasing levels, re-scoring and fine-tuning between them', create: (o) => new IterativeScheduler(o) });
      provide(container, {
        kind: 'scheduler',
        id: 'cubic',
        description: 'gradual cubic sparsity schedule (Zhu & Gupta; movement pruning)',
        create: (o) => new CubicScheduler(o as never),
      });
      provide(container, { kind: 'loss', id: 'kd', description: 'prediction distillation: KL(teacher_T || student_T) T^2 mixed with cross-entropy', create: (o) => new KdLoss(o as KdOptions) });
      provide(container, { kind: 'loss', id: 'ce', description: 'task cross-entropy', create: (o) => new CrossEntropyLoss((o['weight'] as number | undefined) ?? 1) });
      provide(container, {
        kind: 'pruner',
        id: 'structured',
        description: 'structured head and FFN-neuron pruning by any criterion, one-shot or iterative, with fine-tuning',
        create: (o) => new StructuredPruner(o),
      });
      provide(container, {
        kind: 'pruner',
        id: 'unstructured',
        description: 'unstructured pruning of encoder weights by any weight criterion, per matrix or global, one-shot or iterative, with fine-tuning',
        create: (o) => new UnstructuredPruner(o),
      });
      // Families take no options: model_type selects one, its config.json configures it.
      for (const f of BUILTIN_FAMILIES) provide(container, { kind: 'family', id: f.id, description: f.description, create: () => f });
    },
  };
}
