import { ConfigError, readJsonFile, z } from '@topiary/core';
import { paretoFront, type TradeoffPoint } from './data.js';

const num = z.number().nullable();
const value = z.union([z.string(), z.number(), z.boolean(), z.null()]);

/** `sweep.json`, as `topiary sweep` writes it. */
export const SweepFileSchema = z.object({
  sweep: z.object({
    file: z.string(),
    axes: z.array(z.string()),
    executor: z.enum(['local', 'bullmq']),
    created: z.string(),
  }),
  runs: z.array(
    z.object({
      id: z.string(),
      values: z.record(z.string(), z.union([value, z.array(value)])),
      status: z.enum(['completed', 'failed', 'pending']),
      method: z.string(),
      out: z.string(),
      encoderSparsity: num,
      accuracy: num,
      teacherAccuracy: num,
      params: num,
      exportedParams: num,
      speedup: num,
      wallSeconds: num,
      host: z.string().nullable(),
      error: z.string().nullable(),
    }),
  ),
});

export type SweepFile = z.infer<typeof SweepFileSchema>;
export type SweepRun = SweepFile['runs'][number];

/** Reads and checks a sweep.json; errors name the file and the field (`runs[2].accuracy`). */
export async function readSweep(file: string): Promise<SweepFile> {
  const raw = await readJsonFile(file, 'a sweep.json ({"sweep": {...}, "runs": [...]})');
  const parsed = SweepFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i > 0 ? '.' : ''}${String(p)}`)).join('') || '(root)';
    throw new ConfigError(`${file}: field '${field}': ${issue.message}`);
  }
  return parsed.data;
}

/** Completed runs with an accuracy and the given coordinate, as plot points. */
export function tradeoffPoints(runs: readonly SweepRun[], x: 'encoderSparsity' | 'speedup'): TradeoffPoint[] {
  return runs
    .filter((r) => r.status === 'completed' && r.accuracy !== null && r[x] !== null)
    .map((r) => ({ id: r.id, method: r.method, x: r[x]!, accuracy: r.accuracy! }));
}

/** Each point, with whether it is on the Pareto front of all runs and on its method's own front. */
export function markFronts(points: readonly TradeoffPoint[]): (TradeoffPoint & { front: boolean; methodFront: boolean })[] {
  const all = new Set(paretoFront(points));
  const byMethod = new Set<TradeoffPoint>();
  for (const m of new Set(points.map((p) => p.method))) for (const p of paretoFront(points.filter((q) => q.method === m))) byMethod.add(p);
  return points.map((p) => ({ ...p, front: all.has(p), methodFront: byMethod.has(p) }));
}

/**
 * The sparsity level a run belongs to: the value of its sweep axis that sets the target sparsity
 * (`targetSparsity`, `pruner.options.targetSparsity`...), else its measured encoder sparsity to the
 * nearest 0.01.
 */
export function sparsityLevel(run: SweepRun): number | null {
  const key = Object.keys(run.values).find((k) => /(^|\.)targetSparsity$/.test(k));
  const v = key !== undefined ? run.values[key] : undefined;
  if (typeof v === 'number') return v;
  return run.encoderSparsity === null ? null : Math.round(run.encoderSparsity * 100) / 100;
}

export interface BestAtLevel {
  level: number;
  run: SweepRun;
  /** Completed runs at this level. */
  candidates: number;
}

/** The most accurate completed run per sparsity level (ties: the faster, then the smaller), by level. */
export function bestPerSparsity(runs: readonly SweepRun[]): BestAtLevel[] {
  const groups = new Map<number, SweepRun[]>();
  for (const r of runs) {
    const level = sparsityLevel(r);
    if (r.status !== 'completed' || r.accuracy === null || level === null) continue;
    groups.set(level, [...(groups.get(level) ?? []), r]);
  }
  const better = (a: SweepRun, b: SweepRun) =>
    a.accuracy! - b.accuracy! || (a.speedup ?? -Infinity) - (b.speedup ?? -Infinity) || (b.exportedParams ?? Infinity) - (a.exportedParams ?? Infinity);
  return [...groups.entries()]
    .sort(([a], [b]) => a - b)
    .map(([level, rs]) => ({ level, run: rs.reduce((best, r) => (better(r, best) > 0 ? r : best)), candidates: rs.length }));
}
