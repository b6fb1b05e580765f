import type { ModelFamily } from './model/families/family.js';
import type { tf, Scalar, Tensor } from './tf.js';
import type { Batch, BertModel, ForwardOutput, StructuredMasks } from './model/bert.js';
import type { MaskSet } from './pruning/masks.js';
import type { RunControl } from './events.js';
import type { Dataset } from './data/dataset.js';
import type { RunCheckpoints, Stateful } from './engine/checkpoint.js';

/**
 * What can be pruned, and at which granularity. A criterion scores the elements of a group; a
 * scheduler decides how many to drop when; masks and compaction remove them.
 */
export type GroupKind = 'weight' | 'head' | 'neuron' | 'hidden' | 'attention-block' | 'ffn-block' | 'layer';

export interface PrunableGroup {
  kind: GroupKind;
  /** Layer index for head, neuron, attention-block, ffn-block groups. */
  layer?: number;
  /** Parameter name for weight groups (Hugging Face name, stored `[in, out]` layout). */
  param?: string;
  /** Number of elements scored. */
  size: number;
}

/** Stable key of a group: `head:3`, `neuron:0`, `weight:bert.encoder.layer.0.attention.self.query.weight`. */
export function groupKey(g: Pick<PrunableGroup, 'kind' | 'layer' | 'param'>): string {
  return g.param !== undefined ? `${g.kind}:${g.param}` : g.layer !== undefined ? `${g.kind}:${g.layer}` : g.kind;
}

/** Importance per group element (higher = more important), keyed by `groupKey`. */
export type Scores = Map<string, Float32Array>;

/** What a criterion sees. */
export interface CriterionContext {
  model: BertModel;
  masks: MaskSet;
  /** Batches to score on (first-order criteria draw gradients from them). */
  batches: () => Iterable<Batch>;
  /** The loss to differentiate: task cross-entropy unless a distillation loss is configured. */
  loss?: (out: ForwardOutput, batch: Batch) => Scalar;
  teacher?: BertModel;
  control?: RunControl;
  /** Examples per forward/backward pass (`training.microBatchSize`): criteria that take gradients sum them over micro-batches of a batch. */
  microBatchSize?: number;
}

/**
 * "What is important." Stateless criteria only implement `score`; criteria that accumulate over
 * training (movement) also observe steps and gradients.
 */
export interface ImportanceCriterion {
  readonly id: string;
  /** Group kinds this criterion can score. */
  readonly kinds: readonly GroupKind[];
  onStepStart?(step: number, ctx: CriterionContext): void;
  /** Called with the gradients of the step's loss w.r.t. the named parameters. */
  onGradients?(grads: Record<string, Tensor>, ctx: CriterionContext): void;
  score(groups: PrunableGroup[], ctx: CriterionContext): Promise<Scores>;
  dispose?(): void;
  /** Criteria with state across levels (a generator) save and restore it for resume. */
  state?: Stateful['state'];
  restore?: Stateful['restore'];
}

/** One pruning level of a schedule: reach `sparsity`, then train `steps`. */
export interface ScheduleLevel {
  /** Target sparsity of the pruned groups after this level, 0..1. */
  sparsity: number;
  /** Steps of training (fine-tuning) after pruning to this level. */
  steps: number;
}

/** "How much and when." */
export interface MaskScheduler {
  readonly id: string;
  /** Discrete levels (one-shot: one; iterative: several). */
  levels(totalSteps: number): ScheduleLevel[];
  /** Continuous schedules (cubic, Lagrangian warm-up): the target at `step`. */
  sparsityAt?(step: number, totalSteps: number): number;
}

export interface LossInput {
  student: ForwardOutput;
  teacher?: ForwardOutput;
  batch: Batch;
  /** Labels as a tensor, when the batch has them. */
  labels?: Tensor;
  step: number;
  /**
   * Set when the engine splits the step's batch into micro-batches (`training.microBatchSize`): `batch`
   * is examples `[offset, offset + size)` of `whole`. The terms of a loss without `observe` are taken
   * as means over `batch` and weighted by `size / whole.batchSize`.
   */
  part?: { offset: number; size: number; whole: Batch };
}

/** A loss term from student outputs, teacher outputs and the loss's own state (KD, layerwise, contrastive). */
export interface DistillationLoss {
  readonly id: string;
  /** Which teacher outputs it needs (hidden states cost memory). */
  readonly needs?: { teacher?: boolean; hiddenStates?: boolean };
  /** Named terms; the engine sums them (each already weighted). */
  compute(input: LossInput): Record<string, Scalar>;
  /**
   * For losses that are not a mean over their examples (a layer matching chosen on the whole batch,
   * in-batch negatives): when a batch is split, the engine calls `observe` on every micro-batch without
   * a tape before the step's gradient passes, and `compute` then returns the micro-batch's share of the
   * whole batch's terms (the engine sums them unweighted). Not called when the batch is whole.
   */
  observe?(input: LossInput): void;
  /** Hooks for losses with state across levels (contrastive snapshots). */
  onLevelEnd?(ctx: PruneContext, level: number): Promise<void>;
  onRunStart?(ctx: PruneContext): Promise<void>;
  dispose?(): void;
  /** Losses with state (banks, snapshots, samplers) save and restore it for resume; restored after `onRunStart`. */
  state?: Stateful['state'];
  restore?: Stateful['restore'];
}

export interface PruneContext {
  model: BertModel;
  masks: MaskSet;
  teacher?: BertModel;
  /** The pre-trained (MLM) model, for losses that need it. */
  pretrained?: BertModel;
  train: Dataset;
  dev: Dataset;
  control: RunControl;
  /** Resolves other plugins by id (criteria, schedulers, losses). */
  resolve: ResolvePlugin;
  options: Record<string, unknown>;
  seed: number;
  /** Training budget and optimizer settings from the run config. */
  training: TrainingOptions;
  /** The run's output folder, where a pruner may write its own artifacts (per-level models, mask state). */
  out?: string;
  /** The checkpoint the student was loaded from (its tokenizer files go with every exported model). */
  modelDir?: string;
  /**
   * The run's checkpoints (`checkpointEvery`, resume). Pass it to `trainLoop`, which saves and resumes
   * itself; register stateful components (`registerParts` for criteria and losses) and wrap work
   * between training loops in `checkpoints.stage(key, fn)` so a resumed run skips what had finished.
   */
  checkpoints?: RunCheckpoints;
}

export interface TrainingOptions {
  batchSize: number;
  learningRate: number;
  epochs?: number;
  maxSteps?: number;
  warmupRatio: number;
  weightDecay: number;
  maxGradNorm: number;
  maxLength: number;
  evalEvery?: number;
  /**
   * Examples per forward/backward pass: each batch is split into micro-batches of this size (the last
   * takes the remainder) whose gradients are summed before the optimizer step, the same update as the
   * whole batch. Unset: the whole batch (`runPruning`/`runFinetune` choose one that fits the backend's memory).
   */
  microBatchSize?: number;
}

export interface PruneResult {
  model: BertModel;
  masks: MaskSet;
  /** Extra report fields (levels, reached sparsity...). */
  report?: Record<string, unknown>;
}

/** "A complete procedure": owns training-time mask learning where the method needs it. */
export interface Pruner {
  readonly id: string;
  run(ctx: PruneContext): Promise<PruneResult>;
  /**
   * Heap the method needs beyond a fine-tuning step of the same model (snapshots, mask scores, layer
   * distillation), so that the automatic micro-batch leaves room for it: `fixedBytes` once, and
   * `perExampleBytes` per example of a micro-batch at `seqLen` tokens.
   */
  memory?(model: BertModel, seqLen: number): { fixedBytes?: number; perExampleBytes?: number };
}

export interface ResolvePlugin {
  criterion(id: string, options?: Record<string, unknown>): ImportanceCriterion;
  scheduler(id: string, options?: Record<string, unknown>): MaskScheduler;
  loss(id: string, options?: Record<string, unknown>): DistillationLoss;
  pruner(id: string, options?: Record<string, unknown>): Pruner;
  /** The registered model families (`model_type` adapters); core's built-ins when absent. */
  families?(): readonly ModelFamily[];
}

export type { StructuredMasks, tf };
