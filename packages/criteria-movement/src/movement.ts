import {
  bindMasks,
  budgetSteps,
  compactedParamCount,
  encoderLinearNames,
  registerParts,
  resolveParts,
  tensorState,
  structureFromWeightMasks,
  tf,
  trainLoop,
  type BertModel,
  type PruneContext,
  type PruneResult,
  type Pruner,
  type Scalar,
  type Tensor,
  type WeightMasks,
} from '@topiary/core';
import { magnitudeMask, scheduleThreshold, thresholdMask, topKMask, type ThresholdSchedule } from './binarizers.js';

export type MovementMode = 'topk' | 'soft' | 'magnitude';

export interface MovementOptions {
  /** `topk` (hard movement), `soft` (soft movement), `magnitude` (gradual magnitude on the same schedule). */
  mode?: MovementMode;
  /** Keep fraction (topk, magnitude) or sigmoid threshold (soft) at the start. */
  initialThreshold?: number;
  /** Keep fraction (topk, magnitude) or sigmoid threshold (soft) at the end. */
  finalThreshold?: number;
  /** Steps at the initial threshold, in units of `warmupSteps`. */
  initialWarmup?: number;
  /** Steps at the final threshold, in units of `warmupSteps`. */
  finalWarmup?: number;
  /** Schedule unit in steps (default: the run's learning-rate warm-up steps, or 10% of the budget). */
  warmupSteps?: number;
  /** Soft movement's L1 penalty weight at the final threshold. */
  finalLambda?: number;
  /** Learning rate of the scores (constant weight decay 0). */
  scoreLearningRate?: number;
  /**
   * Granularity, in Hugging Face's `[out, in]` orientation: `weight` (default), `row` (a whole output
   * unit), `column` (a whole input unit) or `[rows, cols]` blocks. FFN neurons and heads whose
   * weights end up masked whole are removed from the exported matrices.
   */
  granularity?: 'weight' | 'row' | 'column' | [number, number];
}

const DEFAULTS: Record<MovementMode, { initialThreshold: number; finalThreshold: number; finalLambda: number }> = {
  // The reference's GLUE/SQuAD scripts: top-k from keep-all to 10-15%, soft from sigmoid 0 to 0.1.
  topk: { initialThreshold: 1, finalThreshold: 0.1, finalLambda: 0 },
  soft: { initialThreshold: 0, finalThreshold: 0.1, finalLambda: 400 },
  magnitude: { initialThreshold: 1, finalThreshold: 0.1, finalLambda: 0 },
};

/** One prunable matrix: its parameter, block shape in our `[in, out]` layout, and score variable. */
interface Target {
  name: string;
  param: tf.Variable;
  /** Block size along `[in, out]`. */
  block: [number, number];
  /** Score grid `[in / block[0], out / block[1]]`. */
  grid: [number, number];
  scores?: tf.Variable;
}

/**
 * The straight-through estimator: the forward value is the binary `mask()` of the scores, the
 * gradient passes to the scores unchanged, so dL/dS = dL/dM = W * dL/dW' for W' = W * M.
 */
export function straightThrough(scores: Tensor, mask: () => Float32Array): Tensor {
  const f = (s: Tensor) => ({ value: tf.tensor(mask(), s.shape), gradFunc: (dy: Tensor) => dy });
  return tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0])(scores) as Tensor;
}

let scoreIds = 0;

/** Expands a block mask `[R, C]` to the weight's `[R * br, C * bc]`. */
function expand(mask: Tensor, t: Target): Tensor {
  const [br, bc] = t.block;
  if (br === 1 && bc === 1) return mask;
  const [R, C] = t.grid;
  // A broadcasting multiply, not tile (nor broadcastTo, which runs tile): tfjs differentiates tile with
  // one slice per repetition, br * bc of them per matrix and step (seconds per step for head-sized
  // blocks); the multiply's gradient is one sum.
  return tf.mul(mask.reshape([R, 1, C, 1]), tf.ones([1, br, 1, bc])).reshape([R * br, C * bc]);
}

/** Sum of |w| per block, for block-level magnitude pruning. */
function blockMagnitude(w: Float32Array, t: Target): Float32Array {
  const [br, bc] = t.block;
  const [R, C] = t.grid;
  const out = new Float32Array(R * C);
  const cols = C * bc;
  for (let i = 0; i < R * br; i++) for (let j = 0; j < cols; j++) out[Math.floor(i / br) * C + Math.floor(j / bc)]! += Math.abs(w[i * cols + j]!);
  return out;
}

/**
 * Movement pruning (Sanh, Wolf and Rush 2020) of every encoder linear weight, fine-tuning at once:
 * scores S next to the weights (initialised to 0, their own learning rate), a binary mask from S by
 * top-k (`topk`) or sigmoid threshold (`soft`) following the cubic schedule, and a straight-through
 * estimator so that dS accumulates -W dL/dW'. `soft` adds the L1 penalty on sigmoid(S) whose weight
 * follows the threshold; `magnitude` is gradual magnitude pruning on the same schedule. Embeddings
 * are frozen; the losses default to prediction distillation (`kd`).
 */
export class MovementPruner implements Pruner {
  readonly id = 'movement';
  constructor(private readonly defaults: MovementOptions = {}) {}

  /** Per encoder weight: its score, the score's gradient, the step's mask and the masked weight (16 bytes). */
  memory(model: BertModel): { fixedBytes: number } {
    const weights = encoderLinearNames(model.config).reduce((a, n) => a + (model.params.get(`${n}.weight`)?.size ?? 0), 0);
    return { fixedBytes: 16 * weights };
  }

  async run(ctx: PruneContext): Promise<PruneResult> {
    const o = { ...this.defaults, ...(ctx.options as MovementOptions) };
    const mode = o.mode ?? 'topk';
    if (!(mode in DEFAULTS)) throw new Error(`movement: option 'mode' must be topk, soft or magnitude, got ${JSON.stringify(mode)}`);
    const d = DEFAULTS[mode];
    const { model, masks, control } = ctx;
    bindMasks(masks, model);
    const { losses } = resolveParts({ ...ctx, options: { ...ctx.options } }, { losses: [{ id: 'kd' }] });
    const total = budgetSteps(ctx.training, ctx.train.size);
    const warmupSteps = o.warmupSteps ?? Math.max(1, Math.round((ctx.training.warmupRatio || 0.1) * total));
    const schedule: ThresholdSchedule = {
      totalSteps: total,
      warmupSteps,
      initialThreshold: o.initialThreshold ?? d.initialThreshold,
      finalThreshold: o.finalThreshold ?? d.finalThreshold,
      initialWarmup: o.initialWarmup ?? 1,
      finalWarmup: o.finalWarmup ?? 2,
      finalLambda: o.finalLambda ?? d.finalLambda,
    };
    if (mode !== 'soft' && !(schedule.finalThreshold > 0 && schedule.finalThreshold <= 1)) {
      throw new Error(`movement: option 'finalThreshold' is the fraction of weights kept in '${mode}' mode and must be in (0, 1], got ${schedule.finalThreshold}`);
    }
    const targets = makeTargets(model, o.granularity ?? 'weight', mode !== 'magnitude');
    const binarize = (t: Target, threshold: number): Float32Array => {
      if (mode === 'magnitude') {
        const w = t.param.dataSync() as Float32Array;
        return t.block[0] * t.block[1] === 1 ? magnitudeMask(w, threshold) : topKMask(blockMagnitude(w, t), threshold);
      }
      const s = t.scores!.dataSync();
      return mode === 'topk' ? topKMask(s, threshold) : thresholdMask(s, threshold, true);
    };
    // The masks of a step, once: its micro-batches (and an evaluation before it) see the same scores and weights.
    let cached: { step: number; masks: Map<Target, Float32Array> } | undefined;
    const binarizeAt = (t: Target, threshold: number, step: number): Float32Array => {
      if (cached?.step !== step) cached = { step, masks: new Map() };
      let m = cached.masks.get(t);
      if (!m) cached.masks.set(t, (m = binarize(t, threshold)));
      return m;
    };
    const ste = (t: Target, threshold: number, step: number): Tensor => straightThrough(t.scores!, () => binarizeAt(t, threshold, step));
    const weightMasksAt = (step: number): WeightMasks => {
      const { threshold } = scheduleThreshold(step, schedule);
      const out: WeightMasks = {};
      for (const t of targets) {
        const m = mode === 'magnitude' ? tf.tensor2d(binarizeAt(t, threshold, step), t.grid) : ste(t, threshold, step);
        out[`${t.name}`] = expand(m, t);
      }
      return out;
    };
    /** The binary mask of a matrix at `threshold`, in the weight's stored [in, out] layout. */
    const finalMask = (t: Target, threshold: number): Float32Array => tf.tidy(() => expand(tf.tensor2d(binarize(t, threshold), t.grid), t).dataSync() as Float32Array);
    const scoreVars = targets.flatMap((t) => (t.scores ? [t.scores] : []));
    for (const loss of losses) await loss.onRunStart?.(ctx);
    // The scores (and, through the loop, their optimizer moments) go into every checkpoint.
    ctx.checkpoints?.register('movement', {
      state: () => ({ tensors: new Map(targets.flatMap((t) => (t.scores ? [[t.name, tensorState(t.scores)] as const] : []))) }),
      restore: (s) => {
        for (const t of targets) {
          if (!t.scores) continue;
          const saved = s.tensors?.get(t.name);
          if (!saved || saved.data.length !== t.scores.size) throw new Error(`movement: the checkpoint has no scores for ${t.name}, or not ${t.scores.size} of them`);
          tf.tidy(() => t.scores!.assign(tf.tensor(saved.data, t.scores!.shape)));
        }
      },
    });
    registerParts(ctx.checkpoints, { losses });
    const res = await trainLoop({
      model,
      train: ctx.train,
      dev: ctx.dev,
      ...(ctx.teacher ? { teacher: ctx.teacher } : {}),
      losses,
      training: ctx.training,
      seed: ctx.seed,
      control,
      trainable: (n) => !n.startsWith('bert.embeddings.'),
      forwardMasks: (step) => ({ weightMasks: weightMasksAt(step) }),
      ...(scoreVars.length ? { extraGroups: [{ variables: scoreVars, learningRate: o.scoreLearningRate ?? 1e-2, weightDecay: 0 }] } : {}),
      ...(mode === 'soft'
        ? {
            extraLoss: (step: number) => {
              // Mean over matrices of mean(sigmoid(S)), weighted by a lambda that follows the threshold.
              const { lambda } = scheduleThreshold(step, schedule);
              const l1 = tf.addN(scoreVars.map((s) => tf.mean(tf.sigmoid(s)))).div(scoreVars.length);
              return { l1: tf.mul(l1, lambda) as Scalar };
            },
          }
        : {}),
      phase: `movement (${mode})`,
      ...(ctx.checkpoints ? { checkpoints: ctx.checkpoints } : {}),
      // Losses with snapshots (contrastive) take one of the masked model after every epoch.
      onEpochEnd: async (epoch) => {
        if (!losses.some((l) => l.onLevelEnd)) return;
        const { threshold: t } = scheduleThreshold((epoch + 1) * Math.ceil(ctx.train.size / ctx.training.batchSize), schedule);
        for (const target of targets) masks.weightMasks.set(target.name, finalMask(target, t));
        for (const loss of losses) await loss.onLevelEnd?.(ctx, epoch);
      },
    });
    // Final binary masks at the end of the schedule, in the weights' stored [in, out] layout.
    const { threshold } = scheduleThreshold(total, schedule);
    let zeros = 0;
    let weights = 0;
    for (const t of targets) {
      const full = finalMask(t, threshold);
      masks.weightMasks.set(t.name, full);
      weights += full.length;
      for (const v of full) if (v === 0) zeros++;
    }
    for (const s of scoreVars) s.dispose();
    for (const loss of losses) loss.dispose?.();
    // Heads and neurons whose weights are masked whole become structured removals, so the export is
    // smaller matrices rather than zeros. Checked at every granularity, not only rows, columns and
    // blocks: it is exact and cheap, and a whole row can go under weight-level masks too.
    const structure = structureFromWeightMasks(model, masks);
    const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
    control.emit({ type: 'masks-updated', step: res.steps, sparsity: masks.sparsity(model) });
    return {
      model,
      masks,
      report: {
        mode,
        finalThreshold: threshold,
        reachedWeightSparsity: zeros / weights,
        remainingWeightFraction: 1 - zeros / weights,
        removedHeads: sum(structure.heads),
        removedNeurons: sum(structure.neurons),
        foldedHeads: structure.foldedHeads,
        foldedNeurons: structure.foldedNeurons,
        exportedParams: compactedParamCount(model, masks),
        schedule,
        ...(res.metrics ? { maskedAccuracy: res.metrics.accuracy } : {}),
      },
    };
  }
}

function makeTargets(model: BertModel, granularity: MovementOptions['granularity'], withScores: boolean): Target[] {
  return encoderLinearNames(model.config).map((n) => {
    const name = `${n}.weight`;
    const param = model.params.get(name)!;
    const [inDim, outDim] = param.shape as [number, number];
    // Hugging Face's [out, in] block -> our [in, out] block.
    let block: [number, number];
    if (granularity === undefined || granularity === 'weight') block = [1, 1];
    else if (granularity === 'row') block = [inDim, 1];
    else if (granularity === 'column') block = [1, outDim];
    else if (Array.isArray(granularity) && granularity.length === 2 && granularity.every((v) => Number.isInteger(v) && v > 0)) block = [granularity[1], granularity[0]];
    else throw new Error(`movement: option 'granularity' must be 'weight', 'row', 'column' or [rows, cols], got ${JSON.stringify(granularity)}`);
    if (inDim % block[0] !== 0 || outDim % block[1] !== 0) {
      throw new Error(`movement: option 'granularity' ${JSON.stringify(granularity)} does not divide ${name} ([out, in] = [${outDim}, ${inDim}])`);
    }
    const grid: [number, number] = [inDim / block[0], outDim / block[1]];
    return { name, param, block, grid, ...(withScores ? { scores: tf.tidy(() => tf.variable(tf.zeros(grid), true, `movement-scores-${++scoreIds}/${name}`)) } : {}) };
  });
}
