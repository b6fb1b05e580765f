import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { corePlugin, type TopiaryPlugin } from '@topiary/core';
import { magnitudePlugin } from '@topiary/criteria-magnitude';
import { firstOrderPlugin } from '@topiary/criteria-firstorder';
import { movementPlugin } from '@topiary/criteria-movement';
import { contrastivePlugin } from '@topiary/contrastive';
import { cofiPlugin } from '@topiary/cofi';
import { retrainingFreePlugin } from '@topiary/retraining-free';
import { factorizePlugin } from '@topiary/factorize';
import { UsageError } from './config.js';

/** Every plugin bundled with the CLI, registered into each run's container. */
export function builtinPlugins(): TopiaryPlugin[] {
  return [corePlugin(), magnitudePlugin(), firstOrderPlugin(), movementPlugin(), contrastivePlugin(), cofiPlugin(), retrainingFreePlugin(), factorizePlugin()];
}

function isPath(spec: string): boolean {
  return spec.startsWith('.') || path.isAbsolute(spec) || /\.[cm]?js$/.test(spec);
}

/** The `import` entry of a package.json `exports` value for the package root (string, `.` or conditions). */
function rootExport(exp: unknown): string | undefined {
  if (typeof exp === 'string') return exp;
  if (Array.isArray(exp)) return exp.map(rootExport).find(Boolean);
  if (!exp || typeof exp !== 'object') return undefined;
  const e = exp as Record<string, unknown>;
  if ('.' in e) return rootExport(e['.']);
  for (const cond of ['import', 'node', 'default']) if (cond in e) return rootExport(e[cond]);
  return undefined;
}

/**
 * The module a plugin path names: a file as is; a package folder through its package.json (`exports`
 * for the root, else `main`, else index.js), as Node resolves a package by name.
 */
export function resolvePluginPath(spec: string): string {
  const abs = path.resolve(spec);
  if (!existsSync(abs)) throw new UsageError(`--plugin ${spec}: cannot load the module (${abs} not found, expected a module file or a package folder)`);
  if (!statSync(abs).isDirectory()) return abs;
  const pkgFile = path.join(abs, 'package.json');
  let entry = 'index.js';
  if (existsSync(pkgFile)) {
    let pkg: Record<string, unknown>;
    try {
      pkg = JSON.parse(readFileSync(pkgFile, 'utf8'));
    } catch (err) {
      throw new UsageError(`--plugin ${spec}: ${pkgFile} is not valid JSON (${(err as Error).message})`);
    }
    const fromExports = pkg['exports'] !== undefined ? rootExport(pkg['exports']) : undefined;
    if (pkg['exports'] !== undefined && !fromExports) throw new UsageError(`--plugin ${spec}: ${pkgFile} field 'exports' has no entry for the package root ('.' with 'import' or 'default')`);
    entry = fromExports ?? (typeof pkg['main'] === 'string' ? pkg['main'] : 'index.js');
  }
  const file = path.resolve(abs, entry);
  if (!existsSync(file) || statSync(file).isDirectory()) {
    throw new UsageError(`--plugin ${spec}: the package's entry ${file} not found, expected the module named by ${existsSync(pkgFile) ? `${pkgFile} ('exports' or 'main')` : 'index.js'}`);
  }
  return file;
}

/**
 * Loads a third-party plugin by package name or path. The module may export a factory
 * `(options) => plugin` or a plugin object, as `default` or as `plugin`.
 */
export async function loadPluginModule(spec: string): Promise<TopiaryPlugin> {
  let url: string;
  if (isPath(spec)) url = pathToFileURL(resolvePluginPath(spec)).href;
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
