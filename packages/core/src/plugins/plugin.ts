import type { DependencyContainer, InjectionToken } from 'tsyringe';
import { TOKENS, type ComponentDefinition, type ComponentKind } from './tokens.js';

/**
 * A plugin, as Rollup shapes them: a package exports a factory `(options) => plugin`, and the plugin's
 * `register` hook adds its components to the run's container.
 */
export interface TopiaryPlugin {
  name: string;
  version?: string;
  register(container: DependencyContainer): void | Promise<void>;
}

export type PluginFactory<O = Record<string, unknown>> = (options?: O) => TopiaryPlugin;

/** Registers one component under its kind's token (what a plugin's `register` calls). */
export function provide<K extends ComponentKind>(container: DependencyContainer, def: ComponentDefinition<K>): void {
  container.register(TOKENS[def.kind] as never, { useValue: def });
}

export class PluginError extends Error {
  override name = 'PluginError';
  constructor(
    message: string,
    public readonly plugin: string,
    public readonly hook: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Which plugin registered each definition (set by the driver). */
const ownerOf = new WeakMap<object, string>();
export function pluginOf(def: object): string | undefined {
  return ownerOf.get(def);
}

function definitions(container: DependencyContainer, kind: ComponentKind): ComponentDefinition[] {
  const token = TOKENS[kind] as InjectionToken<ComponentDefinition>;
  return container.isRegistered(token, false) ? container.resolveAll(token) : [];
}

/**
 * The plugin driver: calls each plugin's `register` hook, rethrowing any error tagged with the plugin
 * and hook name, attributes new definitions to their plugin, and refuses two components of one kind
 * with the same id, naming both plugins.
 */
export async function registerPlugins(container: DependencyContainer, plugins: TopiaryPlugin[]): Promise<void> {
  for (const plugin of plugins) {
    if (!plugin || typeof plugin.name !== 'string' || typeof plugin.register !== 'function') {
      throw new PluginError(`not a Topiary plugin: expected { name, register(container) }, got ${JSON.stringify(plugin)?.slice(0, 80)}`, String(plugin?.name ?? '?'), 'register');
    }
    try {
      await plugin.register(container);
    } catch (err) {
      throw new PluginError(`[plugin ${plugin.name}, hook register] ${(err as Error)?.message ?? String(err)}`, plugin.name, 'register', { cause: err });
    }
    for (const kind of Object.keys(TOKENS).filter((k) => k !== 'registry') as ComponentKind[]) {
      const seen = new Map<string, string>();
      for (const def of definitions(container, kind)) {
        if (!ownerOf.has(def)) ownerOf.set(def, plugin.name);
        const owner = ownerOf.get(def)!;
        const prev = seen.get(def.id);
        if (prev !== undefined) {
          throw new PluginError(`duplicate ${kind} id '${def.id}': registered by ${prev} and by ${owner}`, plugin.name, 'register');
        }
        seen.set(def.id, owner);
      }
    }
  }
}

export { definitions as componentDefinitions };
