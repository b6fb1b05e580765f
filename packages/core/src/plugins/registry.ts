import { container as rootContainer, injectAll, injectable, type DependencyContainer } from 'tsyringe';
import type { ResolvePlugin } from '../contracts.js';
import type { ModelFamily } from '../model/families/family.js';
import { pluginOf, registerPlugins, type TopiaryPlugin } from './plugin.js';
import { COMPONENT_KINDS, TOKENS, type ComponentDefinition, type ComponentInstance, type ComponentKind } from './tokens.js';
import { describeOptions, isOptionsSchema, type OptionListing } from './options.js';

export interface ComponentListing {
  id: string;
  kind: ComponentKind;
  plugin: string;
  description: string;
  /** Its declared options (name, type, default, description); absent when the component declares none. */
  options?: OptionListing[];
}

/** Resolves components by id across every registered plugin; built by the run's container. */
@injectable()
export class PluginRegistry implements ResolvePlugin {
  private readonly byKind: Record<ComponentKind, ComponentDefinition[]>;

  constructor(
    @injectAll(TOKENS.criterion, { isOptional: true }) criteria: ComponentDefinition<'criterion'>[],
    @injectAll(TOKENS.scheduler, { isOptional: true }) schedulers: ComponentDefinition<'scheduler'>[],
    @injectAll(TOKENS.loss, { isOptional: true }) losses: ComponentDefinition<'loss'>[],
    @injectAll(TOKENS.pruner, { isOptional: true }) pruners: ComponentDefinition<'pruner'>[],
    @injectAll(TOKENS.family, { isOptional: true }) families: ComponentDefinition<'family'>[],
  ) {
    this.byKind = { criterion: criteria ?? [], scheduler: schedulers ?? [], loss: losses ?? [], pruner: pruners ?? [], family: families ?? [] };
  }

  list(): ComponentListing[] {
    return COMPONENT_KINDS.flatMap((kind) =>
      this.byKind[kind].map((d) => ({ id: d.id, kind, plugin: pluginOf(d) ?? 'unknown', description: d.description, ...(isOptionsSchema(d.options) ? { options: describeOptions(d.options) } : {}) })),
    );
  }

  /** The registration of a component, or undefined. */
  definition<K extends ComponentKind>(kind: K, id: string): ComponentDefinition<K> | undefined {
    return this.byKind[kind].find((d) => d.id === id) as ComponentDefinition<K> | undefined;
  }

  ids(kind: ComponentKind): string[] {
    return this.byKind[kind].map((d) => d.id);
  }

  has(kind: ComponentKind, id: string): boolean {
    return this.byKind[kind].some((d) => d.id === id);
  }

  create<K extends ComponentKind>(kind: K, id: string, options: Record<string, unknown> = {}): ComponentInstance[K] {
    const def = this.byKind[kind].find((d) => d.id === id);
    if (!def) {
      const known = this.byKind[kind].map((d) => d.id).join(', ') || 'none';
      throw new Error(`no ${kind} with id '${id}' is registered (known: ${known}); load the plugin that provides it with --plugin`);
    }
    try {
      return def.create(options) as ComponentInstance[K];
    } catch (err) {
      throw new Error(`[plugin ${pluginOf(def) ?? 'unknown'}, ${kind} '${id}'] ${(err as Error).message}`, { cause: err });
    }
  }

  criterion(id: string, options?: Record<string, unknown>) {
    return this.create('criterion', id, options);
  }
  scheduler(id: string, options?: Record<string, unknown>) {
    return this.create('scheduler', id, options);
  }
  loss(id: string, options?: Record<string, unknown>) {
    return this.create('loss', id, options);
  }
  pruner(id: string, options?: Record<string, unknown>) {
    return this.create('pruner', id, options);
  }
  /** Every registered family adapter (what `loadBert` selects from by `model_type`). */
  families(): ModelFamily[] {
    return this.byKind.family.map((d) => this.create('family', d.id));
  }
}

/**
 * A run's own container: a child of tsyringe's root with nothing registered in the root, so
 * `resolveAll` sees exactly the built-ins and plugins registered here.
 */
export async function createRunContainer(plugins: TopiaryPlugin[]): Promise<{ container: DependencyContainer; registry: PluginRegistry }> {
  const container = rootContainer.createChildContainer();
  await registerPlugins(container, plugins);
  const registry = container.resolve(PluginRegistry);
  return { container, registry };
}
