import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import {
  MaskSet,
  Rng,
  bindMasks,
  budgetSteps,
  readSafetensors,
  resolveParts,
  tf,
  trainLoop,
  writeSafetensors,
  type DistillationLoss,
  type LossInput,
  type NamedTensor,
  type PruneContext,
  type PruneResult,
  type Pruner,
  type Scalar,
  type StructuredMasks,
  type Tensor,
} from '@topiary/core';
import { L0Module, MASK_TYPES, disposeCoFiZ, toStructuredMasks, type CoFiZ, type MaskType, type ZValues } from './l0.js';
import { LayerTransformation, cofiDistillationLoss, defaultTeacherLayers } from './distill.js';

export interface CoFiOptions {
  targetSparsity?: number;
  /** Mask granularities to learn (reference `pruning_type`): default all five. */
  types?: MaskType[];
  /** Learning rate of log-alphas and (by ascent) of the Lagrange multipliers (reference `reg_learning_rate`). */
  maskLearningRate?: number;
  /** Fraction of the pruning phase over which the target sparsity rises linearly from 0 (reference: 2 of 20 epochs). */
  lagrangianWarmupFraction?: number;
  /** Fractions of the training budget: pre-pruning distillation and the final fine-tuning with frozen masks. */
  distillFraction?: number;
  finetuneFraction?: number;
  /** Distillation weights and temperature (reference run script: 0.3 prediction, 0.7 layer, T 2). */
  ceLossAlpha?: number;
  layerLossAlpha?: number;
  temperature?: number;
  /** Teacher layers to match (indices of layer outputs); default `defaultTeacherLayers` ([2, 5, 8, 11] for 12 layers). */
  teacherLayers?: number[];
  /** Keep the best model only once the expected sparsity is within this of the target (reference 0.01 via `target - expected`). */
  sparsityEpsilon?: number;
  /** Evaluate every N pruning steps (default: 5 times over the phase). */
  evalEvery?: number;
  /** Initial drop rate of FFN neurons (reference 0.5). */
  droprateInit?: number;
  /** A finished CoFi run's folder (or its `cofi/l0.safetensors`) to continue from its learned masks. */
  resumeFrom?: string;
  /** Losses of the final fine-tuning (default: prediction distillation `kd`). */
  finetuneLosses?: unknown[];
}

const L0_FILE = 'l0.safetensors';

/** The L0 state (log-alphas, multipliers) to a safetensors file, so a run can continue to a higher target. */
async function saveL0(l0: L0Module, file: string): Promise<void> {
  const tensors = new Map<string, NamedTensor>();
  for (const t of l0.types) {
    const v = l0.logAlpha[t]!;
    tensors.set(`log_alpha.${t}`, { shape: v.shape, data: v.dataSync() as Float32Array });
  }
  tensors.set('lambda_1', { shape: [1], data: Float32Array.from(l0.lambda1.dataSync()) });
  tensors.set('lambda_2', { shape: [1], data: Float32Array.from(l0.lambda2.dataSync()) });
  await fs.mkdir(path.dirname(file), { recursive: true });
  await writeSafetensors(file, tensors);
}

async function loadL0(l0: L0Module, source: string): Promise<void> {
  const file = source.endsWith('.safetensors') ? source : path.join(source, 'cofi', L0_FILE);
  if (!existsSync(file)) throw new Error(`cofi: option 'resumeFrom': no L0 state at ${file} (a finished cofi run writes <out>/cofi/${L0_FILE})`);
  const tensors = await readSafetensors(file);
  for (const t of l0.types) {
    const saved = tensors.get(`log_alpha.${t}`);
    if (!saved) throw new Error(`${file}: no 'log_alpha.${t}' (the run learned other mask types)`);
    if (saved.data.length !== l0.logAlpha[t]!.size) {
      throw new Error(`${file}: 'log_alpha.${t}' has ${saved.data.length} values, this model needs ${l0.logAlpha[t]!.size} (resume from the run's checkpoint/model, not its compacted model)`);
    }
    tf.tidy(() => l0.logAlpha[t]!.assign(tf.tensor1d(saved.data)));
  }
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

/** CoFi's distillation as a loss term: 0.3 prediction KD + 0.7 layer matching through a learned map. */
class CoFiDistillLoss implements DistillationLoss {
  readonly id = 'cofi-distill';
  readonly needs = { teacher: true, hiddenStates: true };
  constructor(
    private readonly transform: LayerTransformation,
    private readonly opts: { ceLossAlpha: number; layerLossAlpha: number; temperature: number; teacherLayers: number[] },
    private readonly headLayerZ: () => Tensor | undefined,
  ) {}
  compute({ student, teacher }: LossInput): Record<string, Scalar> {
    if (!teacher?.hiddenStates || !student.hiddenStates || !teacher.logits || !student.logits) throw new Error('cofi: distillation needs teacher and student hidden states and logits');
    const z = this.headLayerZ();
    const r = cofiDistillationLoss(
      { teacherHiddenStates: teacher.hiddenStates, studentHiddenStates: student.hiddenStates, teacherLogits: teacher.logits, studentLogits: student.logits },
      this.transform,
      { ...this.opts, ...(z ? { headLayerZ: z } : {}) },
    );
    return { kd: tf.mul(r.kdLoss, this.opts.ceLossAlpha) as Scalar, layer: tf.mul(r.layerLoss, this.opts.layerLossAlpha) as Scalar };
  }
}

/**
 * CoFi pruning (Xia, Zhong and Chen 2022): hard-concrete L0 masks on attention blocks, heads, FFN
 * blocks, FFN neurons and hidden dimensions, learned jointly with the weights under a Lagrangian
 * that drives the expected sparsity to the target, with CoFi's layerwise and prediction distillation;
 * then a fine-tuning phase with the masks frozen. Embeddings are frozen throughout; log-alphas are
 * clamped after each step; multipliers start at 0 and are trained by gradient ascent.
 */
export class CoFiPruner implements Pruner {
  readonly id = 'cofi';
  constructor(private readonly defaults: CoFiOptions = {}) {}

  async run(ctx: PruneContext): Promise<PruneResult> {
    const o: CoFiOptions = { ...this.defaults, ...(ctx.options as CoFiOptions) };
    const target = o.targetSparsity;
    if (typeof target !== 'number' || !(target > 0 && target < 1)) throw new Error(`cofi: option 'targetSparsity' must be in (0, 1), got ${JSON.stringify(target)}`);
    if (!ctx.teacher) throw new Error('cofi: needs a teacher (the unpruned fine-tuned model) for distillation');
    const { model, control } = ctx;
    const c = model.config;
    const total = budgetSteps(ctx.training, ctx.train.size);
    const distillSteps = Math.round((o.distillFraction ?? 0) * total);
    const finetuneSteps = Math.round((o.finetuneFraction ?? 0.2) * total);
    const pruneSteps = total - distillSteps - finetuneSteps;
    if (pruneSteps <= 0) throw new Error(`cofi: options 'distillFraction' + 'finetuneFraction' leave no pruning steps of ${total}`);
    const warmup = Math.round((o.lagrangianWarmupFraction ?? 0.3) * pruneSteps);
    const maskLr = o.maskLearningRate ?? 0.01;
    const eps = o.sparsityEpsilon ?? 0.01;
    const l0 = new L0Module(
      { hiddenSize: c.hiddenSize, numHiddenLayers: c.numHiddenLayers, numAttentionHeads: c.numAttentionHeads, intermediateSize: c.intermediateSize, attentionHeadSize: c.attentionHeadSize, layerHeads: c.layerHeads, layerIntermediate: c.layerIntermediate },
      { types: o.types ?? [...MASK_TYPES], targetSparsity: target, lagrangianWarmup: warmup, droprateInit: o.droprateInit ?? 0.5, seed: ctx.seed },
    );
    if (o.resumeFrom) await loadL0(l0, o.resumeFrom);
    const transform = LayerTransformation.identity(c.hiddenSize);
    const distillOpts = {
      ceLossAlpha: o.ceLossAlpha ?? 0.3,
      layerLossAlpha: o.layerLossAlpha ?? 0.7,
      temperature: o.temperature ?? 2,
      teacherLayers: o.teacherLayers ?? defaultTeacherLayers(ctx.teacher.config.numHiddenLayers),
    };
    let lastZ: CoFiZ | undefined;
    const distill = new CoFiDistillLoss(transform, distillOpts, () => lastZ?.headLayerZ);
    const frozen = (n: string) => !n.startsWith('bert.embeddings.');
    const rng = new Rng(ctx.seed + 17);
    const phases: Record<string, number> = {};
    let offset = 0;
    const common = { model, train: ctx.train, teacher: ctx.teacher, control, trainable: frozen } as const;
    try {
      // 1. Optional distillation before pruning (the reference's `prepruning_finetune`).
      if (distillSteps > 0) {
        const r = await trainLoop({ ...common, losses: [distill], training: { ...ctx.training, maxSteps: distillSteps }, seed: ctx.seed, extraGroups: [{ variables: [transform.weight, transform.bias], learningRate: ctx.training.learningRate, weightDecay: 0 }], phase: 'distill', stepOffset: offset });
        offset += r.steps;
        phases['distill'] = r.steps;
      }
      // 2. Pruning: sampled masks in training, deterministic in evaluation, Lagrangian to the target.
      const pruneStart = offset;
      let best: { accuracy: number; params: Map<string, Tensor>; logAlpha: Map<MaskType, Tensor>; step: number; expected: number } | undefined;
      let lastExpected = 0;
      const r = await trainLoop({
        ...common,
        dev: ctx.dev,
        losses: [distill],
        training: { ...ctx.training, maxSteps: pruneSteps },
        seed: ctx.seed + 1,
        phase: 'prune',
        stepOffset: offset,
        forwardMasks: (_step, training): { masks: StructuredMasks } => {
          lastZ = training ? l0.sampleZ(rng) : l0.deterministicZ();
          return { masks: toStructuredMasks(lastZ) };
        },
        extraLoss: (step) => {
          const reg = l0.lagrangianRegularization(step - pruneStart);
          lastExpected = reg.expectedSparsity.dataSync()[0]!;
          return { lagrangian: reg.lagrangianLoss };
        },
        extraGroups: [
          { variables: l0.logAlphaVariables(), learningRate: maskLr, weightDecay: 0, constantRate: true },
          { variables: l0.lagrangianVariables(), learningRate: maskLr, weightDecay: 0, ascent: true, constantRate: true },
          { variables: [transform.weight, transform.bias], learningRate: ctx.training.learningRate, weightDecay: 0 },
        ],
        afterStep: () => l0.constrainParameters(),
        evalEvery: o.evalEvery ?? Math.max(1, Math.floor(pruneSteps / 5)),
        onEvaluated: (metrics, step) => {
          // The reference keeps a best model only once the expected sparsity has reached the target.
          const expected = tf.tidy(() => l0.expectedSparsity().dataSync()[0]!);
          if (target - expected > eps || (best && metrics.accuracy <= best.accuracy)) return;
          if (best) tf.dispose([...best.params.values(), ...best.logAlpha.values()]);
          best = {
            accuracy: metrics.accuracy,
            step,
            expected,
            params: new Map([...model.params].map(([n, v]) => [n, tf.keep(v.clone())])),
            logAlpha: new Map(l0.types.map((t) => [t, tf.keep(l0.logAlpha[t]!.clone())])),
          };
        },
      });
      offset += r.steps;
      phases['prune'] = r.steps;
      if (best) {
        for (const [n, v] of best.params) model.params.get(n)!.assign(v);
        for (const [t, v] of best.logAlpha) l0.logAlpha[t]!.assign(v);
        tf.dispose([...best.params.values(), ...best.logAlpha.values()]);
        control.emit({ type: 'log', message: `cofi: best pruned model at step ${best.step} (dev accuracy ${(100 * best.accuracy).toFixed(2)}%, expected sparsity ${(100 * best.expected).toFixed(2)}%)` });
      } else {
        control.emit({ type: 'warning', message: `cofi: the expected sparsity never came within ${eps} of the target ${target}; keeping the last model (expected ${(100 * lastExpected).toFixed(2)}%)` });
      }
      if (ctx.out) await saveL0(l0, path.join(ctx.out, 'cofi', L0_FILE));
      // 3. Fine-tuning with the deterministic masks frozen.
      const zValues = l0.deterministicZValues();
      const masks = maskSetOf(zValues, ctx.masks);
      bindMasks(masks, model);
      const expectedSparsity = tf.tidy(() => l0.expectedSparsity().dataSync()[0]!);
      control.emit({ type: 'masks-updated', step: offset, sparsity: masks.sparsity(model), target });
      let finetuneAccuracy: number | undefined;
      if (finetuneSteps > 0) {
        const { losses } = resolveParts({ ...ctx, options: { losses: o.finetuneLosses ?? [{ id: 'kd' }] } });
        const f = await trainLoop({ ...common, dev: ctx.dev, losses, training: { ...ctx.training, maxSteps: finetuneSteps }, seed: ctx.seed + 2, forwardMasks: () => masks.toTensors(), phase: 'finetune', stepOffset: offset });
        offset += f.steps;
        phases['finetune'] = f.steps;
        finetuneAccuracy = f.metrics?.accuracy;
        for (const loss of losses) loss.dispose?.();
      }
      const size = l0.calculateModelSize(zValues);
      return {
        model,
        masks,
        report: {
          expectedSparsity,
          cofiRemainingParams: size.remaining_params,
          cofiPrunedModelSparsity: size.pruned_model_sparsity,
          cofiPrunableParams: l0.prunableModelSize,
          phases,
          lagrangianWarmupSteps: warmup,
          teacherLayers: distillOpts.teacherLayers,
          ...(best ? { bestPruneStep: best.step, bestPruneAccuracy: best.accuracy } : {}),
          ...(finetuneAccuracy !== undefined ? { finetuneAccuracy } : {}),
          ...(o.resumeFrom ? { resumedFrom: o.resumeFrom } : {}),
        },
      };
    } finally {
      // The last masks were made inside a step's tidy and are already released; this is a no-op then.
      if (lastZ) disposeCoFiZ(lastZ);
      lastZ = undefined;
      l0.dispose();
      transform.dispose();
    }
  }
}
