import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Observable } from 'rxjs';
import { BertModel } from '../model/bert.js';
import { loadBert, readConfig, saveBert } from '../io/checkpoint.js';
import type { ModelFamily } from '../model/families/family.js';
import { assertCheckpointFolder, assertTokenizerFits, checkpointLabels } from '../io/checks.js';
import { loadTokenizer, type TextTokenizer } from '../io/tokenizer.js';
import { loadDataset, type Dataset, type ReadOptions } from '../data/dataset.js';
import type { PruneContext, PruneResult, ResolvePlugin, TrainingOptions } from '../contracts.js';
import { RunAborted, createRun, type RunControl, type RunEvent } from '../events.js';
import { MaskSet, bindMasks } from '../pruning/masks.js';
import { compact } from '../pruning/compact.js';
import { loadMasks, saveMasks } from '../pruning/mask-io.js';
import { writeSafetensors } from '../io/safetensors.js';
import { ConfigError } from '../model/config.js';
import { RunCheckpoints, STATE_FILE, STATE_TENSORS_FILE, configDifferences, flattenConfig, readSavedState, type SavedState } from './checkpoint.js';
import { writeDirAtomic, writeFileAtomic } from '../io/atomic.js';
import { prepareOutput } from '../io/outputs.js';
import { activeBackend } from '../backend/backend.js';
import { evaluate } from './evaluate.js';
import { budgetSteps, trainLoop } from './train.js';
import { CrossEntropyLoss } from './losses.js';
import { MemoryMonitor, formatBytes, memoryFailure, planMicroBatch } from './micro.js';
import type { MemoryPlan } from '../events.js';

export interface DataSpec extends ReadOptions {
  train: string;
  dev: string;
  /** Label list file; default: the teacher's (or model's) `id2label`, else the train file's sorted labels. */
  labels?: string;
  trainLimit?: number;
  devLimit?: number;
}

export const DEFAULT_TRAINING: TrainingOptions = {
  batchSize: 32,
  learningRate: 5e-5,
  epochs: 1,
  warmupRatio: 0.1,
  weightDecay: 0.01,
  maxGradNorm: 1,
  maxLength: 64,
};

/** A pruning run, as a config file describes it (the CLI validates the file into this). */
export interface RunSpec {
  /** Pruner id (`structured`, `movement`, `cofi`...). */
  method: string;
  /** The checkpoint pruning starts from. */
  model: string;
  /** The fine-tuned teacher (distillation, teacher accuracy). */
  teacher?: string;
  /** The pre-trained (MLM) checkpoint, for methods that use it. */
  pretrained?: string;
  data: DataSpec;
  /** Target sparsity of the encoder, 0..1, when the method takes one. */
  targetSparsity?: number;
  /** Pruner options: criterion, scheduler, losses and method knobs, by id. */
  options: Record<string, unknown>;
  training: TrainingOptions;
  seed: number;
  /** Output folder: `report.json`, `model/` (compacted, Hugging Face layout), `checkpoint/`. */
  out: string;
  /** Save a checkpoint every N steps (0: only at the end of each phase). */
  checkpointEvery?: number;
  /** Write into an existing `out` that holds files Topiary did not write (only Topiary's entries are replaced). */
  force?: boolean;
}

export interface RunInputs {
  tokenizer: TextTokenizer;
  model: BertModel;
  teacher?: BertModel;
  pretrained?: BertModel;
  train: Dataset;
  dev: Dataset;
  labels: string[];
}

async function labelsFor(spec: { data: DataSpec; teacher?: string; model: string }, families?: readonly ModelFamily[]): Promise<string[] | undefined> {
  if (spec.data.labels) {
    const { readLabels } = await import('../data/dataset.js');
    return readLabels(spec.data.labels);
  }
  for (const dir of [spec.teacher, spec.model]) {
    if (!dir) continue;
    // A head without id2label predicts LABEL_i (never the data's sorted names, which may not match).
    const labels = await checkpointLabels(dir, await readConfig(dir, families));
    if (labels) return labels;
  }
  return undefined;
}

/** Loads the tokenizer, models and datasets a run names. */
export async function loadRunInputs(
  spec: Pick<RunSpec, 'model' | 'teacher' | 'pretrained' | 'data' | 'seed'> & { training: Pick<TrainingOptions, 'maxLength'> },
  families?: readonly ModelFamily[],
): Promise<RunInputs> {
  for (const role of ['model', 'teacher', 'pretrained'] as const) if (spec[role]) await assertCheckpointFolder(spec[role], role);
  const tokenizer = await loadTokenizer(spec.model);
  let labels = await labelsFor(spec, families);
  const readOpts: ReadOptions = {};
  for (const k of ['textField', 'pairField', 'labelField'] as const) if (spec.data[k]) readOpts[k] = spec.data[k];
  const trainOpts = { ...readOpts, maxLength: spec.training.maxLength, ...(spec.data.trainLimit ? { limit: spec.data.trainLimit } : {}) };
  const train = await loadDataset(spec.data.train, tokenizer, { ...trainOpts, ...(labels ? { labels } : {}) });
  labels = train.labels;
  const dev = await loadDataset(spec.data.dev, tokenizer, { ...readOpts, maxLength: spec.training.maxLength, labels, ...(spec.data.devLimit ? { limit: spec.data.devLimit } : {}) });
  const fam = families ? { families } : {};
  const model = await loadBert(spec.model, { labels, seed: spec.seed, ...fam });
  const inputs: RunInputs = { tokenizer, model, train, dev, labels };
  try {
    if (spec.teacher) inputs.teacher = await loadBert(spec.teacher, { labels, ...fam });
    if (spec.pretrained) inputs.pretrained = await loadBert(spec.pretrained, fam);
    for (const [m, dir] of [[model, spec.model], [inputs.teacher, spec.teacher], [inputs.pretrained, spec.pretrained]] as const) {
      if (m && dir) assertTokenizerFits(tokenizer, m, dir, spec.model);
    }
  } catch (err) {
    disposeInputs(inputs);
    throw err;
  }
  return inputs;
}

export function disposeInputs(inputs: RunInputs): void {
  inputs.model.dispose();
  inputs.teacher?.dispose();
  inputs.pretrained?.dispose();
}

/**
 * Writes a checkpoint to `<out>/checkpoint` (atomically: a kill leaves the previous one): the model
 * (`model/`, a Hugging Face folder), its masks, and the run's resumable state (`state.json`,
 * `state.safetensors`: step, config, finished stages, optimizer moments, RNGs, pruner state).
 */
export async function saveRunCheckpoint(out: string, model: BertModel, masks: MaskSet, state: SavedState, tokenizerFrom: string, opts: { force?: boolean } = {}): Promise<string> {
  const dir = path.join(out, 'checkpoint');
  await writeDirAtomic(dir, async (tmp) => {
    await saveBert(model, path.join(tmp, 'model'), { tokenizerFrom });
    await saveMasks(masks, tmp);
    await writeState(tmp, state);
  }, { kind: 'checkpoint', ...(opts.force ? { force: true } : {}) });
  return dir;
}

/** Every file and folder a run reads: its output may not be, contain or be inside any of them. */
export function runInputPaths(spec: { model: string; teacher?: string; pretrained?: string; data: DataSpec; options?: Record<string, unknown> }): string[] {
  const optionFiles = ['resumeMasks', 'resumeFrom'].map((k) => spec.options?.[k]).filter((v): v is string => typeof v === 'string');
  return [spec.model, spec.teacher, spec.pretrained, spec.data.train, spec.data.dev, spec.data.labels, ...optionFiles].filter((p): p is string => Boolean(p));
}

async function writeState(dir: string, state: SavedState): Promise<void> {
  const { tensors, ...json } = state;
  await writeSafetensors(path.join(dir, STATE_TENSORS_FILE), tensors);
  await fs.writeFile(path.join(dir, STATE_FILE), `${JSON.stringify(json, null, 2)}\n`);
}

/** Options of a run beyond its spec. */
export interface RunOptions {
  /** Continue from the last checkpoint in `<out>/checkpoint` (an error when there is none or it belongs to another config). */
  resume?: boolean;
}

/** The fields a checkpoint must agree on to be resumed (everything but where it goes, how often it saves, and --force). */
function configOf(spec: object): Record<string, unknown> {
  const { out: _out, checkpointEvery: _every, force: _force, ...rest } = spec as Record<string, unknown>;
  return flattenConfig(rest);
}

/** Reads the checkpoint to resume from and checks it belongs to this config (before anything loads). */
async function resumable(spec: { out: string }, config: Record<string, unknown>, dir = path.join(spec.out, 'checkpoint')): Promise<{ dir: string; state: SavedState }> {
  const state = await readSavedState(dir, spec.out);
  const diff = configDifferences(state.config, config);
  if (diff.length > 0) {
    throw new ConfigError(`${path.join(dir, STATE_FILE)}: the checkpoint belongs to another configuration; resuming needs the same one (differing fields: ${diff.join('; ')})`);
  }
  return { dir, state };
}

/** Sets `model`'s parameters to those saved in a checkpoint's model folder (same shapes, bit for bit). */
async function restoreModel(model: BertModel, dir: string): Promise<void> {
  const saved = await loadBert(dir);
  try {
    for (const [name, v] of model.params) {
      const s = saved.params.get(name);
      if (!s || s.size !== v.size) throw new ConfigError(`${dir}: parameter '${name}' is missing or misshapen (expected [${v.shape}])`);
      v.assign(s);
    }
  } finally {
    saved.dispose();
  }
}

/** Says where an aborted run stopped, then lets the abort end the run. */
function interrupted(err: unknown, control: RunControl, checkpoints: RunCheckpoints): never {
  if (err instanceof RunAborted) {
    const reason = control.signal.reason;
    control.emit({ type: 'run-interrupted', step: checkpoints.last?.step ?? null, checkpoint: checkpoints.last?.path ?? null, reason: typeof reason === 'string' ? reason : 'aborted' });
  }
  throw err;
}

/**
 * A pruning run as a cold Observable of events: loads everything, evaluates the teacher, runs the
 * pruner, compacts and exports the model to `<out>/model`, evaluates the exported model (the accuracy
 * reported is the exported model's), and writes `<out>/report.json`. Checkpoints go to
 * `<out>/checkpoint` every `checkpointEvery` steps, at the end of each training phase and when the run
 * is aborted; `resume` continues from the last one.
 */
export function runPruning(spec: RunSpec, resolve: ResolvePlugin, signal?: AbortSignal, opts: RunOptions = {}): Observable<RunEvent> {
  return createRun(async (control) => {
    const monitor = new MemoryMonitor();
    let plan: MemoryPlan | undefined;
    let student: BertModel | undefined;
    try {
      await pruneRun(control, (p, m) => ((plan = p), (student = m)), monitor);
    } catch (err) {
      throw memoryFailure(err, student, plan);
    } finally {
      monitor.stop();
    }
  }, signal);

  async function pruneRun(control: RunControl, planned: (plan: MemoryPlan, model: BertModel) => void, monitor: MemoryMonitor): Promise<void> {
    const started = Date.now();
    const backend = activeBackend()?.name ?? 'unknown';
    const pruner = resolve.pruner(spec.method, {});
    // --resume without a checkpoint (or of another config) fails before anything is created.
    const config = configOf(spec);
    const resumed = opts.resume ? await resumable(spec, config) : undefined;
    // Before any model loads: a bad output fails now, not after the training.
    await prepareOutput(spec.out, { kind: 'run', inputs: runInputPaths(spec), ...(spec.force ? { force: true } : {}), what: 'out' });
    const inputs = await loadRunInputs(spec, resolve.families?.());
    try {
      const { model, teacher, train, dev } = inputs;
      const total = budgetSteps(spec.training, train.size);
      const plan = planMicroBatch({ model, ...(teacher ? { teacher } : {}), train, training: spec.training, ...(pruner.memory ? { extra: (seqLen: number) => pruner.memory!(model, seqLen) } : {}) });
      planned(plan, model);
      control.emit({ type: 'run-started', method: spec.method, backend, kernels: activeBackend()?.accelerated ?? [], totalSteps: total, time: new Date(started).toISOString(), memory: plan });
      emitPlan(control, plan);
      const teacherAccuracy = teacher ? evaluate(teacher, dev, { batchSize: 128 }).accuracy : undefined;
      if (teacherAccuracy !== undefined) control.emit({ type: 'log', message: `teacher dev accuracy ${(100 * teacherAccuracy).toFixed(2)}%` });
      await fs.mkdir(spec.out, { recursive: true });
      const masks = resumed ? await loadMasks(resumed.dir, model) : bindMasks(MaskSet.ones(model), model);
      if (resumed) {
        await restoreModel(model, path.join(resumed.dir, 'model'));
        control.emit({ type: 'log', message: `resuming from ${resumed.dir} (step ${resumed.state.step})` });
      }
      const checkpoints = new RunCheckpoints({
        ...(spec.checkpointEvery ? { every: spec.checkpointEvery } : {}),
        config,
        write: (state) => saveRunCheckpoint(spec.out, model, masks, state, spec.model, spec.force ? { force: true } : {}),
        ...(resumed ? { resumed: resumed.state, resumedPath: resumed.dir } : {}),
      });
      const ctx: PruneContext = {
        model,
        masks,
        ...(teacher ? { teacher } : {}),
        ...(inputs.pretrained ? { pretrained: inputs.pretrained } : {}),
        train,
        dev,
        control,
        resolve,
        options: { ...spec.options, ...(spec.targetSparsity !== undefined ? { targetSparsity: spec.targetSparsity } : {}) },
        seed: spec.seed,
        // The chosen micro-batch goes to the pruner, not into the config a checkpoint records.
        training: { ...spec.training, microBatchSize: plan.microBatchSize },
        out: spec.out,
        modelDir: spec.model,
        checkpoints,
      };
      let result: PruneResult;
      const finished = checkpoints.completed('pruner');
      if (finished) result = { model, masks, report: finished.result as Record<string, unknown> };
      else {
        try {
          result = await pruner.run(ctx);
        } catch (err) {
          interrupted(err, control, checkpoints);
        }
        // A pruner that returns a new mask set: the run's one takes its values, so the checkpoint holds them.
        // One that changes the architecture (layer-drop, svd, chain) returns another model: the run
        // goes on with it, and only the exported model holds it (a resume restarts such a pruner).
        if (result.model === model) {
          if (result.masks !== masks) Object.assign(masks, result.masks.clone());
          result = { ...result, masks };
        }
      }
      const reshaped = result.model !== model;
      checkpoints.unregisterAll();
      if (!reshaped) checkpoints.finish('pruner', result.report ?? {});
      // A pruner that returns another model (svd, chain) is measured against the run's input model:
      // its own masks are all ones, so sparsity against itself would be 0.
      const own = result.masks.sparsity(result.model);
      const sparsity = !reshaped ? own : againstInput(own, masks.sparsity(model), result.model, model);
      if (!reshaped) await checkpoints.save(total);
      const small = compact(result.model, result.masks);
      try {
        const exported = path.join(spec.out, 'model');
        await saveBert(small, exported, { tokenizerFrom: spec.model, ...(spec.force ? { force: true } : {}) });
        control.emit({ type: 'checkpoint-saved', step: -1, path: exported });
        const final = evaluate(small, dev, { batchSize: 128 });
        control.emit({ type: 'evaluated', step: -1, metrics: { accuracy: final.accuracy, macroF1: final.macroF1, loss: final.loss!, examples: final.examples }, label: 'exported model' });
        const params = (m: BertModel) => [...m.params.values()].reduce((a, v) => a + v.size, 0);
        const report = {
          method: spec.method,
          targetSparsity: spec.targetSparsity ?? null,
          encoderSparsity: sparsity.encoderSparsity,
          totalSparsity: sparsity.totalSparsity,
          teacherAccuracy: teacherAccuracy ?? null,
          accuracy: final.accuracy,
          macroF1: final.macroF1,
          levels: result.report?.['levels'] ?? [],
          ...Object.fromEntries(Object.entries(result.report ?? {}).filter(([k]) => k !== 'levels')),
          encoderParams: sparsity.encoderParams,
          remainingEncoderParams: sparsity.remainingEncoderParams,
          params: params(model),
          exportedParams: params(small),
          training: spec.training,
          seed: spec.seed,
          trainExamples: train.size,
          devExamples: dev.size,
          wallSeconds: (Date.now() - started) / 1000,
          backend,
          kernels: activeBackend()?.accelerated ?? [],
          memory: memoryReport(plan, monitor),
        };
        await writeFileAtomic(path.join(spec.out, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
        control.emit({ type: 'run-completed', metrics: report, wallSeconds: report.wallSeconds });
      } finally {
        small.dispose();
        if (reshaped) result.model.dispose();
      }
    } finally {
      disposeInputs(inputs);
    }
  }
}

/** Says which micro-batch the run trains with and why (the CLI shows it). */
function emitPlan(control: RunControl, plan: MemoryPlan): void {
  const est = plan.estimatedStepBytes !== null && plan.limitBytes !== null ? ` (estimated step peak ${formatBytes(plan.estimatedStepBytes)} of the ${formatBytes(plan.limitBytes)} heap)` : '';
  const how = plan.source === 'config' ? 'as configured' : plan.source === 'auto' ? (plan.microBatchSize < plan.batchSize ? 'chosen to fit the heap' : 'the whole batch fits') : 'no memory limit known';
  control.emit({ type: 'log', message: `micro-batch ${plan.microBatchSize} of batch ${plan.batchSize} x ${plan.seqLen} tokens, ${how}${est}` });
  if (plan.source === 'config' && plan.estimatedStepBytes !== null && plan.limitBytes !== null && plan.estimatedStepBytes > plan.limitBytes) {
    control.emit({ type: 'warning', message: `micro-batch ${plan.microBatchSize} may not fit: a step is estimated at ${formatBytes(plan.estimatedStepBytes)}, the heap holds ${formatBytes(plan.limitBytes)} (leave --micro-batch-size unset to size it automatically)` });
  }
}

/** Memory figures of a run (report.json, run-completed): the micro-batch and the sampled peaks. */
function memoryReport(plan: MemoryPlan, monitor: MemoryMonitor): Record<string, unknown> {
  monitor.sample();
  return {
    microBatchSize: plan.microBatchSize,
    microBatchSource: plan.source,
    estimatedStepBytes: plan.estimatedStepBytes,
    limitBytes: plan.limitBytes,
    peakHeapBytes: plan.limitBytes === null ? null : monitor.peakHeapBytes,
    peakRssBytes: monitor.peakRssBytes,
  };
}

export interface FinetuneSpec {
  model: string;
  data: DataSpec;
  training: TrainingOptions;
  seed: number;
  out: string;
  checkpointEvery?: number;
  evalEvery?: number;
  /** Write into an existing `out` that holds files Topiary did not write (only Topiary's entries are replaced). */
  force?: boolean;
}

/**
 * Fine-tunes a checkpoint on a task (a pretrained encoder gets a fresh head sized from the labels)
 * and saves it to `out` as a Hugging Face folder that `eval` loads. While it trains, `out` is its
 * checkpoint (every `checkpointEvery` steps and when aborted): a loadable model folder with the run's
 * `state.json` and `state.safetensors` next to it, which `resume` continues from. The finished model
 * replaces it.
 */
export function runFinetune(spec: FinetuneSpec, signal?: AbortSignal, opts: RunOptions = {}): Observable<RunEvent> {
  return createRun(async (control) => {
    const monitor = new MemoryMonitor();
    let plan: MemoryPlan | undefined;
    let student: BertModel | undefined;
    try {
      await finetuneRun(control, (p, m) => ((plan = p), (student = m)), monitor);
    } catch (err) {
      throw memoryFailure(err, student, plan);
    } finally {
      monitor.stop();
    }
  }, signal);

  async function finetuneRun(control: RunControl, planned: (plan: MemoryPlan, model: BertModel) => void, monitor: MemoryMonitor): Promise<void> {
    const started = Date.now();
    const config = configOf(spec);
    const resumed = opts.resume ? await resumable(spec, config, spec.out) : undefined;
    await prepareOutput(spec.out, { kind: 'model', inputs: runInputPaths(spec), ...(spec.force ? { force: true } : {}), what: 'out' });
    const inputs = await loadRunInputs(spec);
    try {
      const { model, train, dev } = inputs;
      const plan = planMicroBatch({ model, train, training: spec.training });
      planned(plan, model);
      control.emit({ type: 'run-started', method: 'finetune', backend: activeBackend()?.name ?? 'unknown', kernels: activeBackend()?.accelerated ?? [], totalSteps: budgetSteps(spec.training, train.size), time: new Date(started).toISOString(), memory: plan });
      emitPlan(control, plan);
      if (resumed) {
        await restoreModel(model, resumed.dir);
        control.emit({ type: 'log', message: `resuming from ${resumed.dir} (step ${resumed.state.step})` });
      }
      const checkpoints = new RunCheckpoints({
        ...(spec.checkpointEvery ? { every: spec.checkpointEvery } : {}),
        config,
        write: async (state) => {
          // The model folder (saveBert fills the temporary folder in place), then the state beside it, renamed at once.
          await writeDirAtomic(spec.out, async (tmp) => {
            await saveBert(model, tmp, { tokenizerFrom: spec.model });
            await writeState(tmp, state);
          }, { kind: 'model', ...(spec.force ? { force: true } : {}) });
          return spec.out;
        },
        ...(resumed ? { resumed: resumed.state, resumedPath: resumed.dir } : {}),
      });
      let res: Awaited<ReturnType<typeof trainLoop>>;
      try {
        res = await trainLoop({
          model,
          train,
          dev,
          losses: [new CrossEntropyLoss()],
          training: { ...spec.training, microBatchSize: plan.microBatchSize },
          seed: spec.seed,
          control,
          ...(spec.evalEvery ? { evalEvery: spec.evalEvery } : {}),
          phase: 'finetune',
          checkpoints,
        });
      } catch (err) {
        interrupted(err, control, checkpoints);
      }
      // The model alone replaces the checkpoint (a finished run has nothing to resume).
      await saveBert(model, spec.out, { tokenizerFrom: spec.model, ...(spec.force ? { force: true } : {}) });
      control.emit({ type: 'checkpoint-saved', step: res.steps, path: spec.out });
      const wallSeconds = (Date.now() - started) / 1000;
      const metrics = { accuracy: res.metrics?.accuracy ?? null, macroF1: res.metrics?.macroF1 ?? null, steps: res.steps, trainExamples: train.size, wallSeconds, memory: memoryReport(plan, monitor) };
      control.emit({ type: 'run-completed', metrics, wallSeconds });
    } finally {
      disposeInputs(inputs);
    }
  }
}

/** Sparsity of a reshaped result (`result` with its masks, `own`) against the run's input model (`input`, `base`). */
function againstInput(own: ReturnType<MaskSet['sparsity']>, base: ReturnType<MaskSet['sparsity']>, result: BertModel, input: BertModel): ReturnType<MaskSet['sparsity']> {
  const total = (m: BertModel) => [...m.params.values()].reduce((a, v) => a + v.size, 0);
  const kept = (1 - own.totalSparsity) * total(result);
  return {
    ...own,
    encoderSparsity: base.encoderParams === 0 ? 0 : 1 - own.remainingEncoderParams / base.encoderParams,
    totalSparsity: 1 - kept / total(input),
    encoderParams: base.encoderParams,
  };
}
