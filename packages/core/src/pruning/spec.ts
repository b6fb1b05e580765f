import type { DistillationLoss, ImportanceCriterion, MaskScheduler, PruneContext } from '../contracts.js';

/** A component named by id with its options, as a run config names them. */
export interface ComponentSpec {
  id: string;
  options?: Record<string, unknown>;
}

const asSpec = (v: unknown, field: string): ComponentSpec => {
  if (typeof v === 'string') return { id: v };
  if (v && typeof v === 'object' && typeof (v as ComponentSpec).id === 'string') return v as ComponentSpec;
  throw new Error(`pruner option '${field}' must be an id or { id, options }, got ${JSON.stringify(v)}`);
};

/** A scheduler's options as a pruner passes them: the run's `targetSparsity`, then the scheduler's own options. */
export function schedulerOptions(prunerOptions: Record<string, unknown>, own: Record<string, unknown> = {}): Record<string, unknown> {
  return { targetSparsity: prunerOptions['targetSparsity'], ...own };
}

/** The criterion, scheduler and losses a pruner's options name, resolved through the run's registry. */
export function resolveParts(ctx: PruneContext, defaults: { criterion?: string; scheduler?: string; losses?: ComponentSpec[] } = {}) {
  const o = ctx.options;
  const criterionSpec = o['criterion'] ?? defaults.criterion;
  const schedulerSpec = o['scheduler'] ?? defaults.scheduler;
  const lossSpecs = (o['losses'] as unknown[] | undefined) ?? defaults.losses ?? [{ id: 'ce' }];
  const criterion: ImportanceCriterion | undefined = criterionSpec === undefined ? undefined : (() => {
    const s = asSpec(criterionSpec, 'criterion');
    return ctx.resolve.criterion(s.id, s.options ?? {});
  })();
  const scheduler: MaskScheduler | undefined = schedulerSpec === undefined ? undefined : (() => {
    const s = asSpec(schedulerSpec, 'scheduler');
    return ctx.resolve.scheduler(s.id, schedulerOptions(o, s.options));
  })();
  const losses: DistillationLoss[] = lossSpecs.map((v, i) => {
    const s = asSpec(v, `losses[${i}]`);
    return ctx.resolve.loss(s.id, s.options ?? {});
  });
  return { criterion, scheduler, losses };
}
