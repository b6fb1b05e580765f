import { z } from 'zod';

/**
 * Component options are declared with zod schemas (a `z.strictObject`, so an unknown key is an error):
 * the validator the CLI already uses for run configs, with error paths, defaults and JSON Schema out
 * of the box. Core re-exports its `z`, so a plugin declares options with the same instance and needs no
 * dependency but core. The schema checks; components still apply their own defaults (some depend on
 * other options, e.g. CAP's weights on `preset`), so a `default` in a schema documents the value.
 */
export { z };

/** A component as configs name one: its id, or `{ id, options }`. */
export const componentRef = z
  .union([z.string().min(1), z.strictObject({ id: z.string().min(1), options: z.record(z.string(), z.unknown()).optional() })])
  .describe('a component id, or { id, options }');

export const fractionOption = () => z.number().min(0).lt(1);

/** An options schema: an object of named options. */
export type OptionsSchema = z.ZodObject<z.ZodRawShape>;

export interface OptionListing {
  name: string;
  type: string;
  default?: unknown;
  description: string;
}

export interface OptionIssue {
  /** Path inside the options (`['levels', 2]`). */
  path: (string | number)[];
  message: string;
}

type Json = Record<string, unknown>;

/** A short type for listings: `number (>= 0, < 1)`, `'ce' | 'kd'`, `number[]`, `string | { id, options }`. */
function typeOf(js: Json): string {
  if (Array.isArray(js['enum'])) return (js['enum'] as unknown[]).map((v) => JSON.stringify(v)).join(' | ');
  if (Array.isArray(js['anyOf'])) return (js['anyOf'] as Json[]).map(typeOf).join(' | ');
  const t = js['type'];
  if (t === 'array') {
    if (Array.isArray(js['prefixItems'])) return `[${(js['prefixItems'] as Json[]).map(typeOf).join(', ')}]`;
    const items = js['items'] as Json | undefined;
    return `${items ? (items['anyOf'] ? `(${typeOf(items)})` : typeOf(items)) : 'unknown'}[]`;
  }
  if (t === 'object') {
    const props = js['properties'] as Json | undefined;
    return props ? `{ ${Object.keys(props).join(', ')} }` : 'object';
  }
  if (t === 'number' || t === 'integer') {
    const bounds: string[] = [];
    const big = (v: unknown) => typeof v === 'number' && Math.abs(v) >= Number.MAX_SAFE_INTEGER;
    if (js['minimum'] !== undefined && !big(js['minimum'])) bounds.push(`>= ${js['minimum']}`);
    if (js['exclusiveMinimum'] !== undefined) bounds.push(`> ${js['exclusiveMinimum']}`);
    if (js['maximum'] !== undefined && !big(js['maximum'])) bounds.push(`<= ${js['maximum']}`);
    if (js['exclusiveMaximum'] !== undefined) bounds.push(`< ${js['exclusiveMaximum']}`);
    return bounds.length ? `${t} (${bounds.join(', ')})` : String(t);
  }
  return typeof t === 'string' ? t : 'any';
}

/** Each option of a schema: name, type, default and description (what `topiary plugins --json` lists). */
export function describeOptions(schema: OptionsSchema): OptionListing[] {
  return Object.entries(schema.shape).map(([name, field]) => {
    const f = field as z.ZodType;
    let js: Json = {};
    try {
      js = z.toJSONSchema(f, { io: 'input', unrepresentable: 'any' }) as Json;
    } catch {
      // A schema JSON Schema cannot express (a transform): listed without a type.
    }
    return {
      name,
      type: typeOf(js),
      ...(js['default'] !== undefined ? { default: js['default'] } : {}),
      description: f.description ?? (js['description'] as string | undefined) ?? '',
    };
  });
}

/** True for a zod-like schema (a plugin built against another copy of zod still works). */
export function isOptionsSchema(v: unknown): v is OptionsSchema {
  return !!v && typeof (v as { safeParse?: unknown }).safeParse === 'function';
}

/** Checks `options` against `schema`: the issues (empty when valid) and, when valid, the options with the schema's defaults. */
export function checkOptions(schema: OptionsSchema, options: Record<string, unknown>): { issues: OptionIssue[]; parsed?: Record<string, unknown> } {
  const r = schema.safeParse(options);
  if (r.success) return { issues: [], parsed: r.data as Record<string, unknown> };
  const known = Object.keys(schema.shape ?? {});
  const issues: OptionIssue[] = [];
  for (const i of r.error.issues) {
    const path = i.path.filter((p): p is string | number => typeof p !== 'symbol');
    if (i.code === 'unrecognized_keys') {
      for (const k of i.keys) issues.push({ path: [...path, k], message: path.length === 0 ? `unknown option; expected one of ${known.join(', ')}` : 'unknown key' });
      continue;
    }
    let value: unknown = options;
    for (const p of path) value = value === null || typeof value !== 'object' ? undefined : (value as Record<string | number, unknown>)[p];
    const got = value === undefined ? '' : ` (got ${JSON.stringify(value)})`;
    issues.push({ path, message: `${i.message}${got}` });
  }
  return { issues };
}
