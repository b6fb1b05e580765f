import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import {
  MaskSet,
  Rng,
  bindMasks,
  budgetSteps,
  componentRef,
  readSafetensors,
  resolveParts,
  stage,
  tensorState,
  tf,
  trainLoop,
  writeFileAtomic,
  writeSafetensors,
  z,
  type Batch,
  type BertModel,
  type ComponentSpec,
  type DistillationLoss,
  type LossInput,
  type Metrics,
  type NamedTensor,
  type PruneContext,
  type PruneResult,
  type Pruner,
  type Scalar,
  type StructuredMasks,
  type Tensor,
} from '@topiary/core';
import { L0Module, MASK_TYPES, disposeCoFiZ, toStructuredMasks, type CoFiZ, type MaskType, type NoiseInput, type ZValues } from './l0.js';
import { LayerTransformation, cofiDistillationLoss, defaultTeacherLayers, type LayerDistillOptions } from './distill.js';

/**
 * Options of the `cofi` pruner (the run config's `options`, plus `targetSparsity`). Reference names and
 * defaults are in the package README. Phase budgets: `<phase>Steps`, else `<phase>Epochs` (passes over
 * the training data), else `<phase>Fraction` of the run's budget; pruning gets what is left.
 */
export interface CoFiOptions {
  /** Expected encoder sparsity to reach, in (0, 1) (reference `target_sparsity`). */
  targetSparsity?: number;
  /** Mask granularities to learn (reference `pruning_type`): default all five. */
  types?: MaskType[];
  /** Learning rate of the log-alphas and, by ascent, of the Lagrange multipliers (reference `reg_learning_rate`, 0.01 in its run script). */
  maskLearningRate?: number;
  /**
   * Learning rate of the Lagrange multipliers' ascent; default `maskLearningRate` (the reference uses one
   * rate for both). Higher lets the multipliers catch a target far from where the masks are in a short
   * budget (log-alphas at their clamp barely feel a small multiplier).
   */
  lagrangianLearningRate?: number;
  /** Initial drop rate of FFN neurons (reference `droprate_init`, 0.5). */
  droprateInit?: number;
  /** Hard-concrete temperature (reference `temperature`, 2/3). */
  maskTemperature?: number;
  /** Steps over which the target rises linearly from the start sparsity (reference `lagrangian_warmup_epochs` x steps per epoch). */
  lagrangianWarmup?: number;
  /** The same as a fraction of the pruning phase, when `lagrangianWarmup` is not given (default 0.2). */
  lagrangianWarmupFraction?: number;
  /** Distillation before pruning (reference `prepruning_finetune_steps`, hard-coded 100); default none. */
  distillSteps?: number;
  distillEpochs?: number;
  distillFraction?: number;
  /** Fine-tuning with the masks frozen after pruning (the reference's second run, `pruning_type None`); default 0.2 of the budget. */
  finetuneSteps?: number;
  finetuneEpochs?: number;
  finetuneFraction?: number;
  /** Model learning rate of the fine-tuning phase (default: `training.learningRate`). */
  finetuneLearningRate?: number;
  /** Losses of the fine-tuning phase as core loss specs (default: CoFi's distillation, as the reference). */
  finetuneLosses?: ComponentSpec[];
  /** Weight of prediction distillation (reference `distill_ce_loss_alpha`, 0.1). */
  ceLossAlpha?: number;
  /** Weight of layer distillation (reference `distill_loss_alpha`, 0.9). */
  layerLossAlpha?: number;
  /** Temperature of prediction distillation (reference `distill_temp`: 2 in its run script). */
  distillTemperature?: number;
  /** Teacher layers to match; default `defaultTeacherLayers` ([2, 5, 8, 11] for 12 layers). */
  teacherLayers?: number[];
  /** How removed student layers restrict the matching (see `layerDistillationLoss`); default 'reference'. */
  removedLayerRule?: LayerDistillOptions['removedLayerRule'];
  /** The best model is kept only once the expected sparsity is within this of the target (reference `sparsity_epsilon`; 0.01 as its README recommends). */
  sparsityEpsilon?: number;
  /** Evaluate on dev every N steps in the pruning and fine-tuning phases (default: 10 times a phase). */
  evalEvery?: number;
  /**
   * Evaluate inside the phases on this many dev examples, evenly spaced over the dev file (default:
   * all); the run's final accuracy is always on the whole dev set.
   */
  evalExamples?: number;
  /** Keep the best evaluated model of each phase (reference behaviour); false keeps the last. */
  keepBest?: boolean;
  /**
   * Steer the deterministic (exported) masks to the target, not only the expectation (default true;
   * false is the reference). At each evaluation the Lagrangian's target is shifted by the gap between
   * expected and deterministic sparsity, and the best model is chosen among evaluations whose
   * deterministic sparsity is within `sparsityEpsilon` of the target (else the closest one). Rounding
   * the expected number of zeros per layer otherwise leaves the exported model up to half a head per
   * layer away from the target, several points on small models.
   */
  sizeCorrection?: boolean;
  /** A finished cofi run's output folder (or its `cofi/l0.safetensors`) to continue from its learned masks. */
  resumeMasks?: string;
  /** @deprecated alias of `resumeMasks`. */
  resumeFrom?: string;
}

const positive = () => z.number().positive();
const nonNegative = () => z.number().min(0);
/** Options of `cofi`, with the defaults `run` applies (the checks of `checkOptions`, before any model loads). */
export const COFI_OPTIONS = z
  .strictObject({
    targetSparsity: z.number().gt(0).lt(1).describe("expected encoder sparsity to reach (the run's top-level targetSparsity)"),
    types: z.array(z.enum(MASK_TYPES as unknown as [MaskType, ...MaskType[]])).min(1).optional().describe(`mask granularities to learn (default all: ${MASK_TYPES.join(', ')})`),
    maskLearningRate: positive().default(0.01).describe('learning rate of the log-alphas (reference reg_learning_rate)'),
    lagrangianLearningRate: positive().optional().describe("learning rate of the multipliers' ascent (default: maskLearningRate)"),
    droprateInit: z.number().min(0).lt(1).default(0.5).describe('initial drop rate of FFN neurons'),
    maskTemperature: positive().default(2 / 3).describe('hard-concrete temperature'),
    lagrangianWarmup: nonNegative().optional().describe('steps over which the target rises (default: lagrangianWarmupFraction of the pruning phase)'),
    lagrangianWarmupFraction: z.number().min(0).lt(1).default(0.2).describe('the same as a fraction of the pruning phase'),
    distillSteps: z.number().int().min(0).optional().describe('distillation before pruning, in steps (default none)'),
    distillEpochs: nonNegative().optional().describe('the same in epochs'),
    distillFraction: z.number().min(0).lt(1).optional().describe('the same as a fraction of the budget'),
    finetuneSteps: z.number().int().min(0).optional().describe('fine-tuning with frozen masks, in steps (default: finetuneFraction)'),
    finetuneEpochs: nonNegative().optional().describe('the same in epochs'),
    finetuneFraction: z.number().min(0).lt(1).default(0.2).describe('the same as a fraction of the budget'),
    finetuneLearningRate: positive().optional().describe('model learning rate of the fine-tuning phase (default: training.learningRate)'),
    finetuneLosses: z.array(componentRef).optional().describe("losses of the fine-tuning phase (default: CoFi's distillation)"),
    ceLossAlpha: nonNegative().default(0.1).describe('weight of prediction distillation'),
    layerLossAlpha: nonNegative().default(0.9).describe('weight of layer distillation'),
    distillTemperature: positive().default(2).describe('temperature of prediction distillation'),
    teacherLayers: z.array(z.number().int().min(0)).min(1).optional().describe('teacher layers to match (default: 4 evenly spaced, ending at the last)'),
    removedLayerRule: z.enum(['reference', 'layer']).default('reference').describe('how removed student layers restrict the matching'),
    sparsityEpsilon: nonNegative().default(0.01).describe('the best model is kept only within this of the target'),
    evalEvery: z.number().int().min(1).optional().describe('evaluate every N steps (default: 10 times a phase)'),
    evalExamples: z.number().int().min(1).optional().describe('evaluate inside the phases on this many evenly spaced dev examples (default: all)'),
    keepBest: z.boolean().default(true).describe('keep the best evaluated model of each phase'),
    sizeCorrection: z.boolean().default(true).describe('steer the deterministic (exported) masks to the target'),
    resumeMasks: z.string().min(1).optional().describe("a finished cofi run's folder (or its cofi/l0.safetensors) to continue from"),
    resumeFrom: z.string().min(1).optional().describe('deprecated alias of resumeMasks'),
  })
  .superRefine((o, ctx) => {
    if (o.resumeMasks !== undefined && o.resumeFrom !== undefined && o.resumeMasks !== o.resumeFrom) ctx.addIssue({ code: 'custom', path: ['resumeFrom'], message: "give 'resumeMasks' or its alias 'resumeFrom', not both" });
  });

const KNOWN: ReadonlySet<string> = new Set([
  'targetSparsity', 'types', 'maskLearningRate', 'lagrangianLearningRate', 'droprateInit', 'maskTemperature', 'lagrangianWarmup', 'lagrangianWarmupFraction',
  'distillSteps', 'distillEpochs', 'distillFraction', 'finetuneSteps', 'finetuneEpochs', 'finetuneFraction', 'finetuneLearningRate',
  'finetuneLosses', 'ceLossAlpha', 'layerLossAlpha', 'distillTemperature', 'teacherLayers', 'removedLayerRule', 'sparsityEpsilon',
  'evalEvery', 'evalExamples', 'keepBest', 'sizeCorrection', 'resumeMasks', 'resumeFrom',
]);

/** Where a run keeps its L0 state, under its output folder. */
export const L0_STATE_DIR = 'cofi';
export const L0_STATE_FILE = 'l0.safetensors';

function checkOptions(o: CoFiOptions): void {
  for (const k of Object.keys(o)) {
    if (!KNOWN.has(k)) {
      const hint = k === 'temperature' ? " (the distillation temperature is 'distillTemperature', the hard-concrete one 'maskTemperature')" : k === 'losses' ? " (cofi's losses are fixed in pruning; use 'finetuneLosses' for the fine-tuning phase)" : '';
      throw new Error(`cofi: unknown option '${k}'${hint}; expected one of ${[...KNOWN].join(', ')}`);
    }
  }
  const num = (k: keyof CoFiOptions, ok: (v: number) => boolean, want: string) => {
    const v = o[k];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && ok(v))) throw new Error(`cofi: option '${k}' must be ${want}, got ${JSON.stringify(v)}`);
  };
  const t = o.targetSparsity;
  if (typeof t !== 'number' || !(t > 0 && t < 1)) throw new Error(`cofi: option 'targetSparsity' must be in (0, 1), got ${JSON.stringify(t)}`);
  for (const k of ['maskLearningRate', 'lagrangianLearningRate', 'maskTemperature', 'finetuneLearningRate', 'distillTemperature'] as const) num(k, (v) => v > 0, 'a positive number');
  for (const k of ['ceLossAlpha', 'layerLossAlpha', 'sparsityEpsilon', 'lagrangianWarmup', 'distillEpochs', 'finetuneEpochs'] as const) num(k, (v) => v >= 0, 'a non-negative number');
  for (const k of ['distillSteps', 'finetuneSteps', 'evalEvery', 'evalExamples'] as const) num(k, (v) => Number.isInteger(v) && v >= (k === 'evalEvery' || k === 'evalExamples' ? 1 : 0), k === 'evalEvery' || k === 'evalExamples' ? 'a positive integer' : 'a non-negative integer');
  for (const k of ['lagrangianWarmupFraction', 'distillFraction', 'finetuneFraction'] as const) num(k, (v) => v >= 0 && v < 1, 'in [0, 1)');
  num('droprateInit', (v) => v >= 0 && v < 1, 'in [0, 1)');
  if (o.types !== undefined && !(Array.isArray(o.types) && o.types.length > 0 && o.types.every((x) => (MASK_TYPES as readonly string[]).includes(x)))) {
    throw new Error(`cofi: option 'types' must be a non-empty list of ${MASK_TYPES.join(', ')}, got ${JSON.stringify(o.types)}`);
  }
  if (o.teacherLayers !== undefined && !(Array.isArray(o.teacherLayers) && o.teacherLayers.length > 0 && o.teacherLayers.every((x) => Number.isInteger(x) && x >= 0))) {
    throw new Error(`cofi: option 'teacherLayers' must be a non-empty list of layer indices, got ${JSON.stringify(o.teacherLayers)}`);
  }
  if (o.removedLayerRule !== undefined && !['reference', 'layer'].includes(o.removedLayerRule)) throw new Error(`cofi: option 'removedLayerRule' must be 'reference' or 'layer', got ${JSON.stringify(o.removedLayerRule)}`);
  for (const k of ['keepBest', 'sizeCorrection'] as const) if (o[k] !== undefined && typeof o[k] !== 'boolean') throw new Error(`cofi: option '${k}' must be true or false, got ${JSON.stringify(o[k])}`);
  if (o.resumeMasks !== undefined && o.resumeFrom !== undefined && o.resumeMasks !== o.resumeFrom) throw new Error("cofi: give 'resumeMasks' or its alias 'resumeFrom', not both");
  for (const k of ['resumeMasks', 'resumeFrom'] as const) if (o[k] !== undefined && (typeof o[k] !== 'string' || o[k] === '')) throw new Error(`cofi: option '${k}' must be a path, got ${JSON.stringify(o[k])}`);
}

/** The L0 state (log-alphas, multipliers, the layer map) as safetensors, so a run can continue to a higher target. */
async function saveL0(l0: L0Module, transform: LayerTransformation, dir: string, info: Record<string, unknown>): Promise<string> {
  const tensors = new Map<string, NamedTensor>();
  const put = (name: string, v: Tensor) => tensors.set(name, { shape: v.shape, data: Float32Array.from(v.dataSync() as Float32Array) });
  for (const t of l0.types) put(`log_alpha.${t}`, l0.logAlpha[t]!);
  put('lambda_1', l0.lambda1);
  put('lambda_2', l0.lambda2);
  put('layer_transformation.weight', transform.weight);
  put('layer_transformation.bias', transform.bias);
  await fs.mkdir(dir, { recursive: true });
  const file = path.join(dir, L0_STATE_FILE);
  await writeSafetensors(file, tensors);
  await writeFileAtomic(path.join(dir, 'l0.json'), `${JSON.stringify({ types: l0.types, ...info }, null, 2)}\n`);
  return file;
}

/** Loads log-alphas and the layer map of a previous run (the multipliers restart at 0, as for a new run). */
async function loadL0(l0: L0Module, transform: LayerTransformation, source: string): Promise<string> {
  const file = source.endsWith('.safetensors') ? source : path.join(source, L0_STATE_DIR, L0_STATE_FILE);
  if (!existsSync(file)) throw new Error(`cofi: option 'resumeMasks': no L0 state at ${file} (a finished cofi run writes <out>/${L0_STATE_DIR}/${L0_STATE_FILE})`);
  const tensors = await readSafetensors(file);
  const take = (name: string, into: tf.Variable, required: boolean) => {
    const saved = tensors.get(name);
    if (!saved) {
      if (required) throw new Error(`cofi: option 'resumeMasks': ${file} has no '${name}' (that run learned other mask types; set 'types' as it did)`);
      return;
    }
    if (saved.data.length !== into.size) {
      throw new Error(`cofi: option 'resumeMasks': '${name}' in ${file} has ${saved.data.length} values, this model needs ${into.size} (start from that run's full-size <out>/checkpoint/model, not its compacted model)`);
    }
    tf.tidy(() => into.assign(tf.tensor(saved.data, into.shape)));
  };
  for (const t of l0.types) take(`log_alpha.${t}`, l0.logAlpha[t]!, true);
  take('layer_transformation.weight', transform.weight, false);
  take('layer_transformation.bias', transform.bias, false);
  return file;
}

/** Deterministic masks as a core MaskSet (fractional values are folded into the weights at compaction). */
function maskSetOf(z: ZValues, base: MaskSet): MaskSet {
  const m = base.clone();
  if (z.head) m.headMask = z.head.map((r) => Float32Array.from(r));
  if (z.intermediate) m.neuronMask = z.intermediate.map((r) => Float32Array.from(r));
  if (z.hidden) m.hiddenMask = Float32Array.from(z.hidden);
  if (z.head_layer) m.mhaMask = Float32Array.from(z.head_layer);
  if (z.mlp) m.ffnMask = Float32Array.from(z.mlp);
  return m;
}

/**
 * CoFi's distillation as a loss term (reference `calculate_distillation_loss`): prediction KD and
 * layer matching through the learned map, each weighted. `headLayerZ` gives the current step's
 * attention-layer gates (the sampled `head_layer_z` while pruning; none once the masks are frozen, as
 * in the reference's fine-tuning run, which has no L0 module).
 */
export class CoFiDistillLoss implements DistillationLoss {
  readonly id = 'cofi-distill';
  readonly needs = { teacher: true, hiddenStates: true };
  constructor(
    private readonly transform: LayerTransformation,
    private readonly opts: { ceLossAlpha: number; layerLossAlpha: number; temperature: number; teacherLayers: number[]; removedLayerRule?: LayerDistillOptions['removedLayerRule'] },
    private readonly headLayerZ: () => Tensor | undefined = () => undefined,
  ) {}
  /** The whole batch's layer MSEs of a split step, summed over its micro-batches by share of examples. */
  private whole: { batch: Batch; mse: number[][] } | undefined;

  /** A split batch is matched on the whole batch's MSEs (the matching is not a mean over examples). */
  observe({ student, teacher, part }: LossInput): void {
    if (!part || !teacher?.hiddenStates || !student.hiddenStates) return;
    if (this.whole?.batch !== part.whole) this.whole = { batch: part.whole, mse: [] };
    const w = part.size / part.whole.batchSize;
    const teacherOut = teacher.hiddenStates.slice(1);
    const values = tf.tidy(() => {
      const transformed = student.hiddenStates!.slice(1).map((s) => this.transform.apply(s));
      return this.opts.teacherLayers.map((t) => Array.from(tf.stack(transformed.map((s) => tf.mean(tf.squaredDifference(teacherOut[t]!, s)))).dataSync()));
    });
    values.forEach((row, i) => {
      const acc = (this.whole!.mse[i] ??= row.map(() => 0));
      row.forEach((v, j) => (acc[j]! += w * v));
    });
  }

  compute({ student, teacher, part }: LossInput): Record<string, Scalar> {
    if (!teacher?.hiddenStates || !student.hiddenStates || !teacher.logits || !student.logits) throw new Error('cofi: distillation needs teacher and student hidden states and logits');
    const z = this.headLayerZ();
    const matchOn = part && this.whole?.batch === part.whole ? this.whole.mse : undefined;
    const r = cofiDistillationLoss(
      { teacherHiddenStates: teacher.hiddenStates, studentHiddenStates: student.hiddenStates, teacherLogits: teacher.logits, studentLogits: student.logits },
      this.transform,
      { ...this.opts, ...(z ? { headLayerZ: z } : {}), ...(matchOn ? { matchOn } : {}) },
    );
    // Both terms are means over the examples (the MSE's elements are per example: micro-batches keep the padded length).
    const w = part ? part.size / part.whole.batchSize : 1;
    return { kd: tf.mul(r.kdLoss, this.opts.ceLossAlpha * w) as Scalar, layer: tf.mul(r.layerLoss, this.opts.layerLossAlpha * w) as Scalar };
  }
}

/** A copy of the model's parameters (and any other variables) to restore the best evaluated state. */
class Snapshot {
  private readonly saved: [tf.Variable, Tensor][];
  constructor(vars: tf.Variable[], readonly step: number, readonly accuracy: number, readonly expectedSparsity?: number, readonly reachedSparsity?: number, values?: NamedTensor[]) {
    this.saved = vars.map((v, i) => [v, values ? tf.tensor(values[i]!.data, v.shape) : tf.keep(v.clone())]);
  }
  /** What a checkpoint keeps of it: the figures as JSON, the values as tensors `{prefix}.{i}`. */
  state(prefix: string, tensors: Map<string, NamedTensor>): Record<string, unknown> {
    this.saved.forEach(([, t], i) => tensors.set(`${prefix}.${i}`, tensorState(t)));
    return { step: this.step, accuracy: this.accuracy, expectedSparsity: this.expectedSparsity ?? null, reachedSparsity: this.reachedSparsity ?? null, count: this.saved.length };
  }
  static fromState(vars: tf.Variable[], json: { step: number; accuracy: number; expectedSparsity: number | null; reachedSparsity: number | null; count: number }, prefix: string, tensors: Map<string, NamedTensor>): Snapshot {
    if (json.count !== vars.length) throw new Error(`cofi: the checkpoint's ${prefix} snapshot has ${json.count} tensors, this run ${vars.length}`);
    const values = vars.map((v, i) => {
      const t = tensors.get(`${prefix}.${i}`);
      if (!t || t.data.length !== v.size) throw new Error(`cofi: the checkpoint's ${prefix} snapshot misses tensor ${i} or it has the wrong size`);
      return t;
    });
    return new Snapshot(vars, json.step, json.accuracy, json.expectedSparsity ?? undefined, json.reachedSparsity ?? undefined, values);
  }
  restore(): void {
    for (const [v, t] of this.saved) v.assign(t);
  }
  dispose(): void {
    for (const [, t] of this.saved) t.dispose();
  }
}

const expectedOf = (l0: L0Module): number => tf.tidy(() => l0.expectedSparsity().dataSync()[0]!);

/**
 * CoFi pruning (Xia, Zhong and Chen 2022): hard-concrete L0 masks on attention blocks, heads, FFN
 * blocks, FFN neurons and hidden dimensions, learned jointly with the weights under a Lagrangian that
 * drives the expected sparsity to the target, with CoFi's layerwise and prediction distillation; then
 * fine-tuning with the masks frozen. Embeddings are frozen throughout; log-alphas are clamped after
 * each step; multipliers start at 0 and are trained by gradient ascent at the mask learning rate.
 */
export class CoFiPruner implements Pruner {
  readonly id = 'cofi';
  constructor(private readonly defaults: CoFiOptions = {}) {}

  /**
   * Two copies of the trained parameters (the best and the closest evaluated model), and per example
   * the layer distillation's tensors (every student layer transformed, its distance to each teacher
   * layer and their gradients) and the hidden-dimension masks on every layer output.
   */
  memory(model: BertModel, seqLen: number): { fixedBytes: number; perExampleBytes: number } {
    const c = model.config;
    const params = [...model.params.values()].reduce((a, v) => a + v.size, 0);
    const teacherLayers = Math.min(4, c.numHiddenLayers);
    return { fixedBytes: 2 * 4 * params, perExampleBytes: 4 * seqLen * c.hiddenSize * c.numHiddenLayers * (3 * teacherLayers + 6) };
  }

  async run(ctx: PruneContext): Promise<PruneResult> {
    const o: CoFiOptions = { ...this.defaults, ...(ctx.options as CoFiOptions) };
    checkOptions(o);
    const target = o.targetSparsity!;
    if (!ctx.teacher) throw new Error('cofi: needs a teacher (the unpruned fine-tuned model) for distillation: set `teacher` in the run config');
    const { model, control, teacher } = ctx;
    const c = model.config;

    // Budget: the run's steps split into phases; pruning takes the rest.
    const total = budgetSteps(ctx.training, ctx.train.size);
    const perEpoch = Math.ceil(ctx.train.size / ctx.training.batchSize);
    const phaseSteps = (steps: number | undefined, epochs: number | undefined, fraction: number | undefined, dflt: number) =>
      steps ?? (epochs !== undefined ? Math.round(epochs * perEpoch) : Math.round((fraction ?? dflt) * total));
    const distillSteps = phaseSteps(o.distillSteps, o.distillEpochs, o.distillFraction, 0);
    const finetuneSteps = phaseSteps(o.finetuneSteps, o.finetuneEpochs, o.finetuneFraction, 0.2);
    const pruneSteps = total - distillSteps - finetuneSteps;
    if (pruneSteps <= 0) throw new Error(`cofi: the distillation (${distillSteps}) and fine-tuning (${finetuneSteps}) phases leave no pruning steps of the ${total} in the budget (training.epochs / maxSteps); lower 'distill*' / 'finetune*'`);
    const warmup = o.lagrangianWarmup !== undefined ? Math.round(o.lagrangianWarmup) : Math.round((o.lagrangianWarmupFraction ?? 0.2) * pruneSteps);
    const maskLr = o.maskLearningRate ?? 0.01;
    const lagrangianLr = o.lagrangianLearningRate ?? maskLr;
    const eps = o.sparsityEpsilon ?? 0.01;
    const keepBest = o.keepBest ?? true;
    const sizeCorrection = o.sizeCorrection ?? true;
    const evalEvery = (steps: number) => o.evalEvery ?? ctx.training.evalEvery ?? Math.max(1, Math.floor(steps / 10));
    const resume = o.resumeMasks ?? o.resumeFrom;
    const phaseDev = ctx.dev.evenlySpaced(o.evalExamples);

    const teacherLayers = o.teacherLayers ?? defaultTeacherLayers(teacher.config.numHiddenLayers);
    const badLayer = teacherLayers.find((t) => t >= teacher.config.numHiddenLayers);
    if (badLayer !== undefined) throw new Error(`cofi: option 'teacherLayers': ${badLayer} is not a layer of the ${teacher.config.numHiddenLayers}-layer teacher (0..${teacher.config.numHiddenLayers - 1})`);

    const l0 = new L0Module(
      { hiddenSize: c.hiddenSize, numHiddenLayers: c.numHiddenLayers, numAttentionHeads: c.numAttentionHeads, intermediateSize: c.intermediateSize, attentionHeadSize: c.attentionHeadSize, layerHeads: c.layerHeads, layerIntermediate: c.layerIntermediate },
      { types: o.types ?? [...MASK_TYPES], targetSparsity: target, lagrangianWarmup: warmup, droprateInit: o.droprateInit ?? 0.5, ...(o.maskTemperature !== undefined ? { temperature: o.maskTemperature } : {}), seed: ctx.seed },
    );
    const transform = LayerTransformation.identity(c.hiddenSize);
    const distillOpts = {
      ceLossAlpha: o.ceLossAlpha ?? 0.1,
      layerLossAlpha: o.layerLossAlpha ?? 0.9,
      temperature: o.distillTemperature ?? 2,
      teacherLayers,
      ...(o.removedLayerRule ? { removedLayerRule: o.removedLayerRule } : {}),
    };
    let lastZ: CoFiZ | undefined;
    const pruneLoss = new CoFiDistillLoss(transform, distillOpts, () => lastZ?.headLayerZ);
    const frozenMaskLoss = new CoFiDistillLoss(transform, distillOpts);
    // Reference: every parameter whose name contains `embeddings` is left out of the optimizer, in every phase.
    const trainable = (n: string) => !n.startsWith('bert.embeddings.');
    const snapshotVars = () => [...model.trainableVariables(trainable), ...transform.variables()];
    const rng = new Rng(ctx.seed + 17);
    let noise: NoiseInput | undefined;
    let noiseStep = -1;
    const phases: Record<string, number> = {};
    let offset = 0;
    const common = { model, train: ctx.train, teacher, control, trainable, ...(ctx.checkpoints ? { checkpoints: ctx.checkpoints } : {}) } as const;
    const transformGroup = { variables: transform.variables(), learningRate: ctx.training.learningRate, weightDecay: 0 };
    let best: Snapshot | undefined;
    // With sizeCorrection, while no evaluation is within epsilon: the one closest to the target.
    let closest: Snapshot | undefined;
    // Read through a function: TypeScript does not see the assignments made in the evaluation hooks.
    const currentBest = (): Snapshot | undefined => best;
    const currentClosest = (): Snapshot | undefined => closest;
    const cp = ctx.checkpoints;
    let saving = false;
    let lastExpected = 0;
    // Which snapshots the state holds: the pruning phase's, then the fine-tuning phase's.
    const snapshotVarsOf = (phase: 'prune' | 'finetune') => (phase === 'prune' ? [...snapshotVars(), ...l0.logAlphaVariables()] : snapshotVars());
    let snapshotPhase: 'prune' | 'finetune' = 'prune';
    try {
      // Everything the learned masks and the best-model logic hold between steps, for resume.
      cp?.register('cofi', {
        state: () => {
          const tensors = new Map<string, NamedTensor>();
          for (const t of l0.types) tensors.set(`log_alpha.${t}`, tensorState(l0.logAlpha[t]!));
          tensors.set('lambda_1', tensorState(l0.lambda1));
          tensors.set('lambda_2', tensorState(l0.lambda2));
          tensors.set('layer_transformation.weight', tensorState(transform.weight));
          tensors.set('layer_transformation.bias', tensorState(transform.bias));
          const b = currentBest();
          const cl = currentClosest();
          const json = {
            rng: rng.position,
            startSparsity: l0.startSparsity,
            targetCorrection: l0.targetCorrection,
            saving,
            lastExpected,
            snapshotPhase,
            best: b ? b.state('best', tensors) : null,
            closest: cl ? cl.state('closest', tensors) : null,
          };
          return { json, tensors };
        },
        restore: (s) => {
          const j = s.json as { rng: number; startSparsity: number; targetCorrection: number; saving: boolean; lastExpected: number; snapshotPhase: 'prune' | 'finetune'; best: Parameters<typeof Snapshot.fromState>[1] | null; closest: Parameters<typeof Snapshot.fromState>[1] | null };
          const tensors = s.tensors ?? new Map<string, NamedTensor>();
          const take = (name: string, into: tf.Variable) => {
            const saved = tensors.get(name);
            if (!saved || saved.data.length !== into.size) throw new Error(`cofi: the checkpoint has no '${name}' of ${into.size} values`);
            tf.tidy(() => into.assign(tf.tensor(saved.data, into.shape)));
          };
          for (const t of l0.types) take(`log_alpha.${t}`, l0.logAlpha[t]!);
          take('lambda_1', l0.lambda1);
          take('lambda_2', l0.lambda2);
          take('layer_transformation.weight', transform.weight);
          take('layer_transformation.bias', transform.bias);
          rng.position = j.rng;
          l0.startSparsity = j.startSparsity;
          l0.targetCorrection = j.targetCorrection;
          saving = j.saving;
          lastExpected = j.lastExpected;
          snapshotPhase = j.snapshotPhase;
          if (j.best) best = Snapshot.fromState(snapshotVarsOf(snapshotPhase), j.best, 'best', tensors);
          if (j.closest) closest = Snapshot.fromState(snapshotVarsOf(snapshotPhase), j.closest, 'closest', tensors);
        },
      });
      const start = await stage(cp, 'cofi: start', async () => {
        let resumedFrom: string | undefined;
        if (resume) {
          resumedFrom = await loadL0(l0, transform, resume);
          // Continue from where the masks are: the target rises from their expected sparsity to the new one.
          l0.startSparsity = expectedOf(l0);
          control.emit({ type: 'log', message: `cofi: resumed masks from ${resumedFrom} (expected sparsity ${(100 * l0.startSparsity).toFixed(2)}%, new target ${(100 * target).toFixed(2)}%)` });
        }
        return { expectedStart: expectedOf(l0), ...(resumedFrom ? { resumedFrom } : {}) };
      });
      const expectedStart = start.expectedStart;
      const resumedFrom = start.resumedFrom;
      lastExpected ||= expectedStart;

      // 1. Optional distillation before pruning (reference `prepruning_finetune_steps`).
      if (distillSteps > 0) {
        const r = await trainLoop({ ...common, losses: [frozenMaskLoss], training: { ...ctx.training, maxSteps: distillSteps }, seed: ctx.seed, extraGroups: [transformGroup], phase: 'distill', stepOffset: offset });
        offset += r.steps;
        phases['distill'] = r.steps;
      }

      // 2. Pruning: sampled masks in training, deterministic in evaluation, Lagrangian to the target.
      const pruneStart = offset;
      const r = await trainLoop({
        ...common,
        dev: phaseDev,
        losses: [pruneLoss],
        training: { ...ctx.training, maxSteps: pruneSteps },
        seed: ctx.seed + 1,
        phase: 'prune',
        stepOffset: offset,
        forwardMasks: (step, training): { masks: StructuredMasks } => {
          // One draw per step: the micro-batches of a split batch share the masks, as the whole batch would.
          if (training && noiseStep !== step) {
            noise = l0.sampleNoise(rng);
            noiseStep = step;
          }
          lastZ = training ? l0.sampleZWithNoise(noise!) : l0.deterministicZ();
          return { masks: toStructuredMasks(lastZ) };
        },
        extraLoss: (step) => {
          const reg = l0.lagrangianRegularization(step - pruneStart);
          lastExpected = reg.expectedSparsity.dataSync()[0]!;
          return { lagrangian: reg.lagrangianLoss };
        },
        extraGroups: [
          { variables: l0.logAlphaVariables(), learningRate: maskLr, weightDecay: 0, constantRate: true },
          { variables: l0.lagrangianVariables(), learningRate: lagrangianLr, weightDecay: 0, ascent: true, constantRate: true },
          transformGroup,
        ],
        afterStep: () => l0.constrainParameters(),
        evalEvery: evalEvery(pruneSteps),
        onEvaluated: (metrics, step) => {
          const expected = expectedOf(l0);
          const reachedNow = l0.calculateModelSize(l0.deterministicZValues()).pruned_model_sparsity;
          const targetNow = l0.targetSparsityAt(step - pruneStart) + l0.targetCorrection;
          control.emit({ type: 'log', message: `cofi: step ${step}: expected sparsity ${(100 * expected).toFixed(2)}%, deterministic ${(100 * reachedNow).toFixed(2)}% (Lagrangian target now ${(100 * targetNow).toFixed(2)}%), dev accuracy ${(100 * metrics.accuracy).toFixed(2)}%` });
          const snapshot = () => new Snapshot(snapshotVarsOf('prune'), step, metrics.accuracy, expected, reachedNow);
          if (sizeCorrection) {
            // The gap is measured afresh each time (not accumulated), so this is a fixed-point
            // iteration: expected = target + gap(expected) makes the deterministic sparsity the target.
            l0.targetCorrection = Math.max(-0.1, Math.min(0.1, expected - reachedNow, 0.999 - target));
            if (!keepBest) return;
            const distance = Math.abs(reachedNow - target);
            if (distance <= eps) {
              if (best && metrics.accuracy <= best.accuracy) return;
              best?.dispose();
              best = snapshot();
            } else if (!best) {
              const c = currentClosest();
              if (c && Math.abs(c.reachedSparsity! - target) <= distance) return;
              c?.dispose();
              closest = snapshot();
            }
            return;
          }
          // Reference: once the expected sparsity has come within epsilon of the target, every later
          // evaluation may give the best model (the latch never resets).
          if (!saving && expected - target >= -eps) saving = true;
          if (!keepBest || !saving || (best && metrics.accuracy <= best.accuracy)) return;
          best?.dispose();
          best = snapshot();
        },
      });
      offset += r.steps;
      phases['prune'] = r.steps;
      // The best (or closest) pruned model replaces the last one; skipped on resume once it has.
      const afterPrune = await stage(cp, 'cofi: after pruning', async () => {
        const pruneBest = currentBest();
        const pruneClosest = currentClosest();
        if (pruneBest) {
          pruneBest.restore();
          control.emit({ type: 'log', message: `cofi: best pruned model at step ${pruneBest.step} (dev accuracy ${(100 * pruneBest.accuracy).toFixed(2)}%, expected sparsity ${(100 * pruneBest.expectedSparsity!).toFixed(2)}%, deterministic ${(100 * pruneBest.reachedSparsity!).toFixed(2)}%)` });
        } else if (pruneClosest) {
          pruneClosest.restore();
          control.emit({ type: 'warning', message: `cofi: no evaluated model's deterministic sparsity came within ${eps} of the target ${target}; keeping the closest, at step ${pruneClosest.step} (${(100 * pruneClosest.reachedSparsity!).toFixed(2)}%, dev accuracy ${(100 * pruneClosest.accuracy).toFixed(2)}%): give the pruning phase more steps or evaluate more often ('evalEvery')` });
        } else {
          control.emit({ type: 'warning', message: `cofi: the expected sparsity never came within ${eps} of the target ${target} at an evaluation; keeping the last model (expected ${(100 * lastExpected).toFixed(2)}%): give the pruning phase more steps, a longer budget or a higher 'maskLearningRate'` });
        }
        best?.dispose();
        best = undefined;
        pruneClosest?.dispose();
        closest = undefined;
        snapshotPhase = 'finetune';
        const expectedSparsity = expectedOf(l0);
        const size = l0.calculateModelSize(l0.deterministicZValues());
        let l0File: string | undefined;
        if (ctx.out) {
          l0File = await saveL0(l0, transform, path.join(ctx.out, L0_STATE_DIR), { targetSparsity: target, expectedSparsity, prunedModelSparsity: size.pruned_model_sparsity, ...(resumedFrom ? { resumedFrom } : {}) });
        }
        return { targetCorrection: l0.targetCorrection, expectedSparsity, ...(pruneBest ? { pruneBest: { step: pruneBest.step, accuracy: pruneBest.accuracy } } : {}), ...(l0File ? { l0File } : {}) };
      });
      const { targetCorrection, expectedSparsity, l0File } = afterPrune;
      const pruneBest = afterPrune.pruneBest;
      const zValues = l0.deterministicZValues();
      const size = l0.calculateModelSize(zValues);

      // 3. Fine-tuning with the deterministic masks frozen.
      // The run's own mask set, changed in place, so that checkpoints and the export hold these masks.
      const masks = ctx.masks;
      const frozen = maskSetOf(zValues, ctx.masks);
      masks.headMask = frozen.headMask;
      masks.neuronMask = frozen.neuronMask;
      masks.hiddenMask = frozen.hiddenMask;
      masks.mhaMask = frozen.mhaMask;
      masks.ffnMask = frozen.ffnMask;
      bindMasks(masks, model);
      control.emit({ type: 'masks-updated', step: offset, sparsity: masks.sparsity(model), target });
      let finetuneAccuracy: number | undefined;
      let finetuneBest: { step: number; accuracy: number } | undefined;
      if (finetuneSteps > 0) {
        const custom = o.finetuneLosses ? resolveParts({ ...ctx, options: { losses: o.finetuneLosses } }).losses : undefined;
        const losses = custom ?? [frozenMaskLoss];
        try {
          const f = await trainLoop({
            ...common,
            dev: phaseDev,
            losses,
            training: { ...ctx.training, maxSteps: finetuneSteps, learningRate: o.finetuneLearningRate ?? ctx.training.learningRate },
            seed: ctx.seed + 2,
            forwardMasks: () => masks.toTensors(),
            ...(custom ? {} : { extraGroups: [{ ...transformGroup, learningRate: o.finetuneLearningRate ?? ctx.training.learningRate }] }),
            evalEvery: evalEvery(finetuneSteps),
            onEvaluated: (metrics: Metrics, step: number) => {
              if (!keepBest || (best && metrics.accuracy <= best.accuracy)) return;
              best?.dispose();
              best = new Snapshot(snapshotVars(), step, metrics.accuracy);
            },
            phase: 'finetune',
            stepOffset: offset,
          });
          offset += f.steps;
          phases['finetune'] = f.steps;
          finetuneAccuracy = f.metrics?.accuracy;
        } finally {
          for (const loss of custom ?? []) loss.dispose?.();
        }
        finetuneBest = await stage(cp, 'cofi: after fine-tuning', async () => {
          const ftBest = currentBest();
          if (!ftBest) return undefined;
          ftBest.restore();
          control.emit({ type: 'log', message: `cofi: best fine-tuned model at step ${ftBest.step} (dev accuracy ${(100 * ftBest.accuracy).toFixed(2)}%)` });
          return { step: ftBest.step, accuracy: ftBest.accuracy };
        }) ?? undefined;
      }
      const reached = masks.sparsity(model);
      return {
        model,
        masks,
        report: {
          expectedSparsityStart: expectedStart,
          expectedSparsity,
          reachedEncoderSparsity: reached.encoderSparsity,
          cofiRemainingParams: size.remaining_params,
          cofiPrunedModelSparsity: size.pruned_model_sparsity,
          cofiPrunableParams: l0.prunableModelSize,
          headsPerLayer: size.head_nums.map((n, l) => n * size.head_layers[l]!),
          intermediatePerLayer: size.intermediate_dims.map((n, l) => n * size.mlp_layers[l]!),
          hiddenDims: size.hidden_dims,
          phases,
          lagrangianWarmupSteps: warmup,
          // Final multipliers: how hard the Lagrangian was pulling when the pruning phase ended.
          lambda1: l0.lambda1.dataSync()[0]!,
          lambda2: l0.lambda2.dataSync()[0]!,
          ...(sizeCorrection ? { targetCorrection } : {}),
          teacherLayers,
          ...(pruneBest ? { bestPruneStep: pruneBest.step, bestPruneAccuracy: pruneBest.accuracy } : {}),
          ...(finetuneAccuracy !== undefined ? { finetuneAccuracy } : {}),
          ...(finetuneBest ? { bestFinetuneStep: finetuneBest.step, bestFinetuneAccuracy: finetuneBest.accuracy } : {}),
          ...(l0File ? { l0State: l0File } : {}),
          ...(resumedFrom ? { resumedFrom } : {}),
        },
      };
    } finally {
      best?.dispose();
      closest?.dispose();
      // The last masks were made inside a step's tidy and are already released; this is a no-op then.
      if (lastZ) disposeCoFiZ(lastZ);
      lastZ = undefined;
      l0.dispose();
      transform.dispose();
    }
  }
}
