import type { InjectionToken } from 'tsyringe';
import type { DistillationLoss, ImportanceCriterion, MaskScheduler, Pruner } from '../contracts.js';
import type { ModelFamily } from '../model/families/family.js';
import type { OptionsSchema } from './options.js';

/** The kinds of component a plugin contributes, each resolved by string id. */
export type ComponentKind = 'criterion' | 'scheduler' | 'loss' | 'pruner' | 'family';

export interface ComponentInstance {
  criterion: ImportanceCriterion;
  scheduler: MaskScheduler;
  loss: DistillationLoss;
  pruner: Pruner;
  /** An architecture of the BERT family (`model_type`): its adapter to the one encoder. */
  family: ModelFamily;
}

/** A registration: an id, a description and a factory from options to the component. */
export interface ComponentDefinition<K extends ComponentKind = ComponentKind> {
  kind: K;
  id: string;
  description: string;
  /**
   * The options `create` takes, as a zod object schema (`z` from core; `z.strictObject` so unknown keys
   * are errors). Run configs are checked against it before any model loads, and `topiary plugins
   * --json` lists it. A pruner's `criterion` and `scheduler` options and its `losses` / `finetuneLosses`
   * lists name components (`componentRef`), whose own options are checked against their schemas.
   * Without it, options are passed unchecked.
   */
  options?: OptionsSchema;
  create(options: Record<string, unknown>): ComponentInstance[K];
}

/** Container tokens. Registrations are values (`useValue`); core resolves them all with `injectAll`. */
export const TOKENS = {
  criterion: Symbol.for('topiary.criterion') as InjectionToken<ComponentDefinition<'criterion'>>,
  scheduler: Symbol.for('topiary.scheduler') as InjectionToken<ComponentDefinition<'scheduler'>>,
  loss: Symbol.for('topiary.loss') as InjectionToken<ComponentDefinition<'loss'>>,
  pruner: Symbol.for('topiary.pruner') as InjectionToken<ComponentDefinition<'pruner'>>,
  family: Symbol.for('topiary.family') as InjectionToken<ComponentDefinition<'family'>>,
  /** The registry built from everything above (see `PluginRegistry`). */
  registry: Symbol.for('topiary.registry') as InjectionToken<unknown>,
} as const;

export const COMPONENT_KINDS: readonly ComponentKind[] = ['criterion', 'scheduler', 'loss', 'pruner', 'family'];
