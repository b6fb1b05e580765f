import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DEFAULT_TRAINING, validateRunOptions, type PluginRegistry, type RunSpec } from '@topiary/core';
import type { RunExport } from './formats.js';

/** A usage or configuration error: exit code 2, message names the field. */
export class UsageError extends Error {
  override name = 'UsageError';
}

const component = z.union([z.string().min(1), z.object({ id: z.string().min(1), options: z.record(z.string(), z.unknown()).optional() })]);
const fraction = z.number().min(0).max(0.999);

export const RunConfigSchema = z
  .object({
    method: z.string().min(1).describe('pruner id, e.g. structured, movement, cofi'),
    model: z.string().min(1),
    teacher: z.string().min(1).optional(),
    pretrained: z.string().min(1).optional(),
    data: z
      .object({
        train: z.string().min(1),
        dev: z.string().min(1),
        labels: z.string().min(1).optional(),
        textField: z.string().min(1).optional(),
        pairField: z.string().min(1).optional(),
        labelField: z.string().min(1).optional(),
        trainLimit: z.number().int().positive().optional(),
        devLimit: z.number().int().positive().optional(),
      })
      .strict(),
    targetSparsity: fraction.optional(),
    criterion: component.optional(),
    scheduler: component.optional(),
    losses: z.array(component).optional(),
    options: z.record(z.string(), z.unknown()).default({}),
    training: z
      .object({
        batchSize: z.number().int().positive().default(DEFAULT_TRAINING.batchSize),
        learningRate: z.number().positive().default(DEFAULT_TRAINING.learningRate),
        epochs: z.number().positive().optional(),
        maxSteps: z.number().int().nonnegative().optional(),
        warmupRatio: z.number().min(0).max(1).default(DEFAULT_TRAINING.warmupRatio),
        weightDecay: z.number().min(0).default(DEFAULT_TRAINING.weightDecay),
        maxGradNorm: z.number().min(0).default(DEFAULT_TRAINING.maxGradNorm),
        maxLength: z.number().int().min(8).max(512).default(DEFAULT_TRAINING.maxLength),
        /** Examples per forward/backward pass (gradients summed over a batch's micro-batches); default: the largest that fits the backend's memory. */
        microBatchSize: z.number().int().positive().optional(),
      })
      .strict()
      .default({} as never),
    seed: z.number().int().default(42),
    out: z.string().min(1).default('runs/latest'),
    checkpointEvery: z.number().int().nonnegative().optional(),
    /** Exit 1 when the exported model keeps less than this fraction of the teacher's accuracy. */
    minAccuracyRetention: z.number().min(0).max(1).optional(),
    /** Also write `<out>/onnx-model` (onnx: the transformers.js folder; all: with model.safetensors too). */
    export: z
      .object({ format: z.enum(['safetensors', 'onnx', 'all']).default('onnx'), quantize: z.enum(['int8']).optional() })
      .strict()
      .optional(),
  })
  .strict();

export type RunConfig = z.infer<typeof RunConfigSchema>;

/** Reads a YAML or JSON run config; relative paths resolve against the config file's folder. */
export type ReadRunConfig = RunSpec & { minAccuracyRetention?: number; export?: RunExport; /** Where the config wrote each pruner option that is not under `options`. */ fields?: Record<string, string> };

/** The fields of a run config that hold paths (resolved against the config file's folder). */
export const RUN_CONFIG_PATH_FIELDS = ['model', 'teacher', 'pretrained', 'data.train', 'data.dev', 'data.labels', 'options.resumeMasks', 'options.resumeFrom'] as const;

export async function readRunConfig(file: string, overrides: { out?: string } = {}): Promise<ReadRunConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    throw new UsageError(`${file}: cannot read the config file`);
  }
  let raw: unknown;
  try {
    raw = /\.json$/i.test(file) ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new UsageError(`${file}: not valid ${/\.json$/i.test(file) ? 'JSON' : 'YAML'}: ${(err as Error).message}`);
  }
  const parsed = RunConfigSchema.safeParse(raw);
  if (!parsed.success) throw new UsageError(`${file}: invalid config\n${z.prettifyError(parsed.error)}`);
  const c = parsed.data;
  if (c.export?.quantize && c.export.format === 'safetensors') throw new UsageError(`${file}: field 'export.quantize' needs 'export.format' onnx or all (the int8 model is an ONNX graph)`);
  return specOf(file, c, overrides);
}

function specOf(file: string, c: RunConfig, overrides: { out?: string }): ReadRunConfig {
  const base = path.dirname(path.resolve(file));
  const abs = (p: string) => path.resolve(base, p);
  const options: Record<string, unknown> = { ...c.options };
  // Options that name files (cofi's `resumeMasks`, retraining-free's `latencyTable`) resolve against the config's folder like every other path.
  for (const k of ['resumeMasks', 'resumeFrom', 'latencyTable']) if (typeof options[k] === 'string') options[k] = abs(options[k] as string);
  const fields: Record<string, string> = {};
  for (const k of ['criterion', 'scheduler', 'losses'] as const) {
    if (c[k] === undefined) continue;
    options[k] = c[k];
    fields[k] = k;
  }
  if (c.targetSparsity !== undefined) fields['targetSparsity'] = 'targetSparsity';
  const spec: ReadRunConfig = {
    method: c.method,
    model: abs(c.model),
    data: {
      ...c.data,
      train: abs(c.data.train),
      dev: abs(c.data.dev),
      ...(c.data.labels ? { labels: abs(c.data.labels) } : {}),
    },
    options,
    training: c.training as RunSpec['training'],
    seed: c.seed,
    out: overrides.out ? path.resolve(overrides.out) : abs(c.out),
  };
  if (c.teacher) spec.teacher = abs(c.teacher);
  if (c.pretrained) spec.pretrained = abs(c.pretrained);
  if (c.targetSparsity !== undefined) spec.targetSparsity = c.targetSparsity;
  if (c.checkpointEvery !== undefined) spec.checkpointEvery = c.checkpointEvery;
  if (c.minAccuracyRetention !== undefined) spec.minAccuracyRetention = c.minAccuracyRetention;
  if (c.export !== undefined) spec.export = { format: c.export.format, ...(c.export.quantize ? { quantize: c.export.quantize } : {}) };
  spec.fields = fields;
  return spec;
}

/**
 * Checks the pruner id, its options and every component a config names (ids and options) against
 * the registered schemas, before anything loads: a UsageError naming the config file and each field
 * (`criterion.options.normalize`, `options.levels[2]`, `losses[1].id`) otherwise.
 */
export function assertValidRunConfig(file: string, spec: ReadRunConfig, registry: PluginRegistry): void {
  const issues = componentIssues(spec, registry);
  if (issues.length > 0) throw new UsageError(`${file}: invalid config\n${issues.map((i) => `  ${i.field}: ${i.message}`).join('\n')}`);
}

function componentIssues(spec: ReadRunConfig, registry: PluginRegistry): { field: string; message: string }[] {
  // The pruner sees the run's targetSparsity among its options (runPruning).
  const options = { ...spec.options, ...(spec.targetSparsity !== undefined ? { targetSparsity: spec.targetSparsity } : {}) };
  const fields = spec.fields ?? {};
  return validateRunOptions(registry, spec.method, options, (k) => fields[k] ?? (k === 'targetSparsity' ? 'targetSparsity' : `options.${k}`));
}

/**
 * Every problem of a run config given as an object (a sweep's expanded run, paths absolute): the
 * schema's, then the components' ids and options, each with the field as the config spells it.
 */
export function runConfigIssues(raw: unknown, registry: PluginRegistry): { field: string; message: string }[] {
  const parsed = RunConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const dotted = (ps: PropertyKey[]) => ps.map((p, n) => (typeof p === 'number' ? `[${p}]` : `${n ? '.' : ''}${String(p)}`)).join('');
    // An unknown key is the field itself, so a sweep can say which of its axes or base fields wrote it.
    return parsed.error.issues.flatMap((i) => (i.code === 'unrecognized_keys' ? i.keys.map((k) => ({ field: dotted([...i.path, k]), message: 'unknown field' })) : [{ field: dotted(i.path) || '(config)', message: i.message }]));
  }
  const c = parsed.data;
  if (c.export?.quantize && c.export.format === 'safetensors') return [{ field: 'export.quantize', message: "needs 'export.format' onnx or all (the int8 model is an ONNX graph)" }];
  return componentIssues(specOf('<sweep run>', c, {}), registry);
}
