import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '@topiary/core';
import type { SweepPlan } from './spec.js';

export type Executor = 'local' | 'bullmq';
export type RunStatus = 'completed' | 'failed' | 'pending';

/** One row of sweep.json (the report command reads this schema). */
export interface SweepRow {
  id: string;
  values: Record<string, unknown>;
  status: RunStatus;
  method: string;
  /** The run folder, relative to sweep.json. */
  out: string;
  encoderSparsity: number | null;
  accuracy: number | null;
  teacherAccuracy: number | null;
  params: number | null;
  exportedParams: number | null;
  /** Dense / pruned inference time on dev batches, measured side by side (see speedup.ts). */
  speedup: number | null;
  wallSeconds: number | null;
  host: string | null;
  error: string | null;
}

export interface SweepResults {
  sweep: { file: string; axes: string[]; executor: Executor; created: string };
  runs: SweepRow[];
}

/** What a finished run sends back (through the queue with BullMQ): its report and where it ran. */
export interface RunResult {
  id: string;
  /** report.json's content. */
  report: Record<string, unknown>;
  host: string;
  speedup: SpeedupMeasure | null;
}

export interface SpeedupMeasure {
  speedup: number;
  denseMs: number;
  prunedMs: number;
  batches: number;
  batchSize: number;
  rounds: number;
  backend: string;
}

/** Written into a run folder once the run and its speedup measurement are done: a run is complete when it is there. */
export const RUN_RESULT_FILE = 'sweep-run.json';

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export function rowOf(plan: SweepPlan, run: SweepPlan['runs'][number], state: { status: RunStatus; result?: RunResult; error?: string }): SweepRow {
  const r = state.result?.report ?? {};
  return {
    id: run.id,
    values: run.values,
    status: state.status,
    method: typeof r['method'] === 'string' ? (r['method'] as string) : String(run.config['method']),
    out: path.relative(plan.out, String(run.config['out'])).split(path.sep).join('/'),
    encoderSparsity: num(r['encoderSparsity']),
    accuracy: num(r['accuracy']),
    teacherAccuracy: num(r['teacherAccuracy']),
    params: num(r['params']),
    exportedParams: num(r['exportedParams']),
    speedup: state.result?.speedup?.speedup ?? null,
    wallSeconds: num(r['wallSeconds']),
    host: state.result?.host ?? null,
    error: state.error ?? null,
  };
}

/** Reads a finished run's result from its folder (report.json + sweep-run.json), or undefined. */
export async function readRunResult(runDir: string): Promise<RunResult | undefined> {
  try {
    const saved = JSON.parse(await fs.readFile(path.join(runDir, RUN_RESULT_FILE), 'utf8')) as Omit<RunResult, 'report'>;
    const report = JSON.parse(await fs.readFile(path.join(runDir, 'report.json'), 'utf8')) as Record<string, unknown>;
    return { ...saved, report };
  } catch {
    return undefined;
  }
}

const csvCell = (v: unknown): string => {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

export function toCsv(results: SweepResults): string {
  const fixed = ['id', 'status', 'method', 'encoderSparsity', 'accuracy', 'teacherAccuracy', 'params', 'exportedParams', 'speedup', 'wallSeconds', 'host', 'out', 'error'] as const;
  // An axis named like a column (`method`) is that column once.
  const cols = fixed.slice(1).filter((k) => !results.sweep.axes.includes(k));
  const header = ['id', ...results.sweep.axes, ...cols];
  const lines = results.runs.map((r) => [r.id, ...results.sweep.axes.map((a) => r.values[a]), ...cols.map((k) => r[k])].map(csvCell).join(','));
  return `${[header.map(csvCell).join(','), ...lines].join('\n')}\n`;
}

/** Writes sweep.json and sweep.csv into the sweep folder (each atomically). */
export async function writeResults(out: string, results: SweepResults): Promise<void> {
  await writeFileAtomic(path.join(out, 'sweep.json'), `${JSON.stringify(results, null, 2)}\n`);
  await writeFileAtomic(path.join(out, 'sweep.csv'), toCsv(results));
}
