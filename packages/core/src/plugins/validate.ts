import { schedulerOptions } from '../pruning/spec.js';
import { checkOptions, isOptionsSchema } from './options.js';
import type { PluginRegistry } from './registry.js';
import type { ComponentKind } from './tokens.js';

export interface RunOptionIssue {
  /** The field as the config spells it: `criterion.options.normalize`, `options.levels[2]`, `losses[1].id`. */
  field: string;
  message: string;
}

const fieldPath = (base: string, rest: (string | number)[]) => rest.reduce<string>((p, k) => (typeof k === 'number' ? `${p}[${k}]` : p ? `${p}.${k}` : k), base);

/**
 * Checks a run's pruner id and options, and every component they name (criterion, scheduler, losses,
 * finetuneLosses) with its options, against the registered schemas: what a run would otherwise find
 * only after loading its models. `fieldOf` maps a pruner option to where the config wrote it (default
 * `options.<key>`).
 */
export function validateRunOptions(
  registry: PluginRegistry,
  method: string,
  options: Record<string, unknown>,
  fieldOf: (key: string) => string = (k) => `options.${k}`,
): RunOptionIssue[] {
  const issues: RunOptionIssue[] = [];
  const pruner = registry.definition('pruner', method);
  if (!pruner) {
    return [{ field: 'method', message: `no pruner '${method}' is registered (known: ${registry.ids('pruner').join(', ')}); load the plugin that provides it with --plugin` }];
  }
  const top = (path: (string | number)[]) => fieldPath(fieldOf(String(path[0])), path.slice(1));
  let effective = options;
  if (isOptionsSchema(pruner.options)) {
    const r = checkOptions(pruner.options, options);
    for (const i of r.issues) issues.push({ field: i.path.length ? top(i.path) : 'options', message: `${i.message} (pruner '${method}')` });
    // With the schema's defaults: a default criterion or scheduler is checked too (e.g. `iterative` without a target).
    if (r.parsed) effective = r.parsed;
  }
  const component = (kind: ComponentKind, ref: unknown, field: string, injected: Record<string, unknown> = {}, injectedField?: (key: string) => string) => {
    const isId = typeof ref === 'string';
    if (!isId && !(ref && typeof ref === 'object' && typeof (ref as { id?: unknown }).id === 'string')) {
      issues.push({ field, message: `expected a ${kind} id or { id, options }, got ${JSON.stringify(ref)}` });
      return;
    }
    const id = isId ? ref : (ref as { id: string }).id;
    const own = isId ? {} : (((ref as { options?: Record<string, unknown> }).options ?? {}) as Record<string, unknown>);
    const def = registry.definition(kind, id);
    if (!def) {
      issues.push({ field: isId ? field : `${field}.id`, message: `no ${kind} '${id}' is registered (known: ${registry.ids(kind).join(', ') || 'none'}); load the plugin that provides it with --plugin` });
      return;
    }
    if (!isOptionsSchema(def.options)) return;
    const r = checkOptions(def.options, { ...injected, ...own });
    for (const i of r.issues) {
      const key = String(i.path[0] ?? '');
      const fromPruner = injectedField && key in injected && !(key in own);
      const f: string = fromPruner ? fieldPath(injectedField(key), i.path.slice(1)) : fieldPath(`${field}.options`, i.path);
      issues.push({ field: i.path.length ? f : `${field}.options`, message: `${i.message} (${kind} '${id}')` });
    }
  };
  if (effective['criterion'] !== undefined) component('criterion', effective['criterion'], fieldOf('criterion'));
  // The pruner hands the scheduler the run's targetSparsity (resolveParts): an issue with it is the run's field.
  if (effective['scheduler'] !== undefined) component('scheduler', effective['scheduler'], fieldOf('scheduler'), schedulerOptions(effective), fieldOf);
  for (const key of ['losses', 'finetuneLosses']) {
    const list = effective[key];
    if (list === undefined) continue;
    if (!Array.isArray(list)) {
      if (!isOptionsSchema(pruner.options)) issues.push({ field: fieldOf(key), message: `expected a list of losses, got ${JSON.stringify(list)}` });
      continue;
    }
    list.forEach((ref, i) => component('loss', ref, `${fieldOf(key)}[${i}]`));
  }
  return issues;
}
