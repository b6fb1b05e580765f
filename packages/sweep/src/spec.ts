import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError, z } from '@topiary/core';

/**
 * A sweep file: a base run config (inline, or `extends:` a run config file), a `grid` of field paths
 * to lists of values (every combination runs) and an explicit `runs:` list (each entry sets some
 * fields; the grid is crossed with every entry). Validated like run configs: errors name the file and
 * the field.
 */
export class SweepError extends ConfigError {
  override name = 'SweepError';
}

/** What the CLI knows about run configs: which fields are paths, and how a config is checked. */
export interface RunConfigRules {
  /** Dotted paths of the fields holding file or folder paths (resolved against the file that wrote them). */
  pathFields: readonly string[];
  /** Issues of one resolved run config (absolute paths), each naming its field as the config spells it. */
  validate(config: Record<string, unknown>): Promise<{ field: string; message: string }[]> | { field: string; message: string }[];
}

export interface SweepRun {
  /** Short stable hash of the resolved config (paths relative to the sweep file, without `out` and `checkpointEvery`). */
  id: string;
  /** The value of every axis for this run (axis path -> value; null when the run leaves the field unset). */
  values: Record<string, unknown>;
  /** The resolved run config: absolute paths, `out` = `<sweepOut>/runs/<id>`. */
  config: Record<string, unknown>;
  /** Where it came from, for messages: `runs[1] x grid targetSparsity=0.5`. */
  origin: string;
}

export interface SweepPlan {
  file: string;
  /** The sweep's output folder (absolute). */
  out: string;
  /** Field paths that vary: the grid's keys, then the keys the `runs:` entries set, in order of appearance. */
  axes: string[];
  runs: SweepRun[];
}

const SweepFileSchema = z
  .object({
    base: z.record(z.string(), z.unknown()).describe('a run config, or `extends: <run config file>` plus fields merged into it'),
    grid: z.record(z.string().min(1), z.array(z.unknown()).min(1)).optional().describe('field path -> values; every combination runs'),
    runs: z.array(z.record(z.string().min(1), z.unknown())).min(1).optional().describe('explicit runs: field path -> value, crossed with the grid'),
    out: z.string().min(1).optional().describe('the sweep folder (default runs/<sweep file name>)'),
  })
  .strict();

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const clone = <T>(v: T): T => structuredClone(v);

export function getPath(obj: Record<string, unknown>, p: string): unknown {
  let cur: unknown = obj;
  for (const k of p.split('.')) {
    if (!isObject(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}

/** Sets the field at a dotted path (creating objects on the way); `null` removes the field. */
export function setPath(obj: Record<string, unknown>, p: string, value: unknown): void {
  const keys = p.split('.');
  let cur = obj;
  for (const k of keys.slice(0, -1)) {
    if (!isObject(cur[k])) {
      if (value === null) return;
      cur[k] = {};
    }
    cur = cur[k] as Record<string, unknown>;
  }
  const last = keys[keys.length - 1]!;
  if (value === null) delete cur[last];
  else cur[last] = clone(value);
}

/** Objects merge key by key, everything else replaces; `null` removes the field. */
function deepMerge(into: Record<string, unknown>, from: Record<string, unknown>): Record<string, unknown> {
  for (const [k, v] of Object.entries(from)) {
    if (v === null) delete into[k];
    else if (isObject(v) && isObject(into[k])) deepMerge(into[k] as Record<string, unknown>, v);
    else into[k] = clone(v);
  }
  return into;
}

/** Resolves the path fields inside `value`, which is what the config holds at `at` ('' = the whole config). */
function resolvePaths(value: unknown, at: string, dir: string, rules: RunConfigRules): unknown {
  const v = clone(value);
  for (const field of rules.pathFields) {
    if (field === at) return typeof v === 'string' ? path.resolve(dir, v) : v;
    const prefix = at === '' ? '' : `${at}.`;
    if (!field.startsWith(prefix) || !isObject(v)) continue;
    const sub = field.slice(prefix.length);
    const s = getPath(v, sub);
    if (typeof s === 'string') setPath(v, sub, path.resolve(dir, s));
  }
  return v;
}

/** The same config with its path fields relative to `dir` (so ids do not depend on where the checkout is). */
function relativePaths(config: Record<string, unknown>, dir: string, rules: RunConfigRules): Record<string, unknown> {
  const c = clone(config);
  for (const field of rules.pathFields) {
    const s = getPath(c, field);
    if (typeof s === 'string') setPath(c, field, path.relative(dir, s).split(path.sep).join('/'));
  }
  return c;
}

/** JSON with object keys sorted, so equal configs hash equally. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (isObject(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`).join(',')}}`;
  return JSON.stringify(v);
}

/** The run id: 10 hex digits of the SHA-256 of the config without `out` and `checkpointEvery` (as resume compares configs). */
export function runId(config: Record<string, unknown>): string {
  const { out: _out, checkpointEvery: _every, ...rest } = config;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex').slice(0, 10);
}

const fmt = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));

async function readStructured(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    throw new SweepError(`${file}: cannot read the ${what}`);
  }
  try {
    return /\.json$/i.test(file) ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new SweepError(`${file}: not valid ${/\.json$/i.test(file) ? 'JSON' : 'YAML'}: ${(err as Error).message}`);
  }
}

function zodIssues(file: string, error: z.ZodError): SweepError {
  const lines = error.issues.map((i) => `  field '${i.path.map((p, n) => (typeof p === 'number' ? `[${p}]` : `${n ? '.' : ''}${String(p)}`)).join('')}': ${i.message}`);
  return new SweepError(`${file}: invalid sweep file\n${lines.join('\n')}`);
}

/**
 * Reads a sweep file and expands it into runs, each validated as a run config (a SweepError naming
 * the sweep file, the run and the field otherwise). `out` overrides the file's `out`.
 */
export async function expandSweep(file: string, rules: RunConfigRules, overrides: { out?: string } = {}): Promise<SweepPlan> {
  const raw = await readStructured(file, 'sweep file');
  const parsed = SweepFileSchema.safeParse(raw);
  if (!parsed.success) throw zodIssues(file, parsed.error);
  const s = parsed.data;
  const dir = path.dirname(path.resolve(file));
  const out = overrides.out ? path.resolve(overrides.out) : s.out ? path.resolve(dir, s.out) : path.resolve('runs', path.basename(file).replace(/\.(ya?ml|json)$/i, ''));

  // The base: an extended run config (its paths relative to it), then the sweep's fields merged in.
  const { extends: ext, ...own } = s.base;
  let base: Record<string, unknown> = {};
  let extended: string | undefined;
  if (ext !== undefined) {
    if (typeof ext !== 'string' || ext === '') throw new SweepError(`${file}: field 'base.extends': expected the path of a run config file, got ${fmt(ext)}`);
    extended = path.resolve(dir, ext);
    const r = await readStructured(extended, `run config named by 'base.extends' in ${file}`);
    if (!isObject(r)) throw new SweepError(`${extended}: expected a run config (a mapping), named by 'base.extends' in ${file}`);
    base = resolvePaths(r, '', path.dirname(extended), rules) as Record<string, unknown>;
  }
  deepMerge(base, resolvePaths(own, '', dir, rules) as Record<string, unknown>);

  const grid = Object.entries(s.grid ?? {});
  const entries = s.runs ?? [{}];
  const axes = [...grid.map(([k]) => k)];
  for (const e of entries) for (const k of Object.keys(e)) if (!axes.includes(k)) axes.push(k);
  for (const a of axes) {
    const clash = axes.find((b) => b !== a && b.startsWith(`${a}.`));
    if (clash) throw new SweepError(`${file}: fields '${a}' and '${clash}' are both varied; one is inside the other (vary one of them)`);
  }

  // Every combination of the grid, crossed with every explicit run.
  let combos: { values: [string, unknown][]; where: string[] }[] = [{ values: [], where: [] }];
  for (const [k, vs] of grid) {
    combos = combos.flatMap((c) => vs.map((v, i) => ({ values: [...c.values, [k, v] as [string, unknown]], where: [...c.where, `grid.${k}[${i}]`] })));
  }

  const runs: SweepRun[] = [];
  const seen = new Map<string, string>();
  const problems: string[] = [];
  for (const [ei, entry] of entries.entries()) {
    for (const combo of combos) {
      const config = clone(base);
      const where = new Map<string, string>();
      for (const [k, v] of Object.entries(entry)) {
        setPath(config, k, resolvePaths(v, k, dir, rules));
        where.set(k, `runs[${ei}].${k}`);
      }
      for (const [n, [k, v]] of combo.values.entries()) {
        setPath(config, k, resolvePaths(v, k, dir, rules));
        where.set(k, combo.where[n]!);
      }
      const id = runId(relativePaths(config, dir, rules));
      config['out'] = path.join(out, 'runs', id);
      const origin = [...(s.runs ? [`runs[${ei}]`] : []), ...combo.values.map(([k, v]) => `${k}=${fmt(v)}`)].join(' x ') || 'base';
      const values = Object.fromEntries(axes.map((a) => [a, getPath(config, a) ?? null]));
      const issues = await rules.validate(config);
      for (const i of issues) {
        // Name the place in the sweep file that set the field: an axis, the base, or the extended file.
        const axis = [...where.keys()].find((a) => i.field === a || i.field.startsWith(`${a}.`) || i.field.startsWith(`${a}[`));
        // An unknown field that an axis created (`pruner` of `pruner.options.x`) is that axis's.
        const creator = [...where.keys()].find((a) => a.startsWith(`${i.field}.`));
        const loc = axis ? `field '${where.get(axis)}${i.field.slice(axis.length)}'` : creator ? `field '${where.get(creator)}'` : getPath(own, i.field.split('[')[0]!) !== undefined || !extended ? `field 'base.${i.field}'` : `field '${i.field}' of ${extended} (base.extends)`;
        problems.push(`  run ${origin}: ${loc}: ${i.message}`);
      }
      const dup = seen.get(id);
      if (dup !== undefined) problems.push(`  run ${origin}: resolves to the same config as run ${dup} (id ${id})`);
      seen.set(id, origin);
      runs.push({ id, values, config, origin });
    }
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 20);
    throw new SweepError(`${file}: invalid sweep\n${shown.join('\n')}${problems.length > shown.length ? `\n  ... ${problems.length - shown.length} more` : ''}`);
  }
  return { file: path.resolve(file), out, axes, runs };
}
