import { createRequire } from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { corePlugin, type TopiaryPlugin } from '@topiary/core';
import { magnitudePlugin } from '@topiary/criteria-magnitude';
import { firstOrderPlugin } from '@topiary/criteria-firstorder';
import { movementPlugin } from '@topiary/criteria-movement';
import { contrastivePlugin } from '@topiary/contrastive';
import { cofiPlugin } from '@topiary/cofi';
import { factorizePlugin } from '@topiary/factorize';
import { UsageError } from './config.js';

/** Every plugin bundled with the CLI, registered into each run's container. */
export function builtinPlugins(): TopiaryPlugin[] {
  return [corePlugin(), magnitudePlugin(), firstOrderPlugin(), movementPlugin(), contrastivePlugin(), cofiPlugin(), factorizePlugin()];
}

function isPath(spec: string): boolean {
  return spec.startsWith('.') || path.isAbsolute(spec) || /\.[cm]?js$/.test(spec);
}

/**
 * Loads a third-party plugin by package name or path. The module may export a factory
 * `(options) => plugin` or a plugin object, as `default` or as `plugin`.
 */
export async function loadPluginModule(spec: string): Promise<TopiaryPlugin> {
  let url: string;
  if (isPath(spec)) url = pathToFileURL(path.resolve(spec)).href;
  else {
    // Resolve from the user's project first, then from the CLI's own dependencies.
    try {
      url = pathToFileURL(createRequire(path.join(process.cwd(), 'package.json')).resolve(spec)).href;
    } catch {
      url = spec;
    }
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(url);
  } catch (err) {
    throw new UsageError(`--plugin ${spec}: cannot load the module (${(err as Error).message})`);
  }
  const exported = mod['default'] ?? mod['plugin'];
  const plugin = typeof exported === 'function' ? (exported as (o?: unknown) => TopiaryPlugin)({}) : (exported as TopiaryPlugin | undefined);
  if (!plugin || typeof plugin.name !== 'string' || typeof plugin.register !== 'function') {
    throw new UsageError(`--plugin ${spec}: the module must export (as default or 'plugin') a factory or an object { name, register(container) }`);
  }
  return plugin;
}

export async function allPlugins(extra: string[]): Promise<TopiaryPlugin[]> {
  const loaded = [];
  for (const spec of extra) loaded.push(await loadPluginModule(spec));
  return [...builtinPlugins(), ...loaded];
}
