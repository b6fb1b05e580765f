import { tf, type Scalar, type Tensor } from '../tf.js';
import type { Batch, BertModel, ForwardOptions, ForwardOutput, StructuredMasks, WeightMasks } from '../model/bert.js';
import type { Dataset } from '../data/dataset.js';
import type { DistillationLoss, TrainingOptions } from '../contracts.js';
import type { LossTerms, Metrics, RunControl } from '../events.js';
import { Rng } from '../model/ops.js';
import { AdamW, clipByGlobalNorm, decays, linearSchedule, type ParamGroup } from './optimizer.js';
import { evaluate } from './evaluate.js';
import type { RunCheckpoints } from './checkpoint.js';
import { splitBatch, type BatchPart } from './micro.js';

export interface TrainLoopOptions {
  model: BertModel;
  train: Dataset;
  dev?: Dataset;
  teacher?: BertModel;
  /** Loss terms, summed. */
  losses: DistillationLoss[];
  training: TrainingOptions;
  seed: number;
  control: RunControl;
  /**
   * Masks for the student's forward pass at `step` (may depend on trainable mask variables). Called
   * once per micro-batch: it must give a step's micro-batches the same masks (draw any noise once a step).
   */
  forwardMasks?: (step: number, training: boolean) => { masks?: StructuredMasks; weightMasks?: WeightMasks };
  /** Extra trainable groups (mask scores, log-alphas, Lagrange multipliers) with their own rates. */
  extraGroups?: ParamGroup[];
  /** Extra loss terms at `step` (regularizers, Lagrangian): added once a step, with the first micro-batch. */
  extraLoss?: (step: number) => Record<string, Scalar>;
  /** Which model parameters train (default: all). */
  trainable?: (name: string) => boolean;
  /** Called with each step's gradients by parameter name (movement criteria accumulate from them). */
  onGradients?: (grads: Map<string, Tensor>, step: number) => void;
  /** Called after each pass over the training data (per-epoch snapshots). */
  onEpochEnd?: (epoch: number) => Promise<void> | void;
  /** Called after each optimizer update (clamping, mask updates). */
  afterStep?: (step: number) => void;
  /** Evaluate on `dev` every N steps (and at the end). */
  evalEvery?: number;
  /** Masks for evaluation (default: the training masks at the current step, in eval mode). */
  evalForward?: () => Omit<ForwardOptions, 'training'>;
  /** Called after each evaluation (e.g. to keep the best model once a constraint holds). */
  onEvaluated?: (metrics: Metrics, step: number) => void | Promise<void>;
  /**
   * The run's checkpoints (`PruneContext.checkpoints`): the loop writes one every `checkpoints.every`
   * global steps, at its end and when the run is aborted, with its own state (optimizer moments, step,
   * epoch and batch position, dropout RNG, last metrics); on resume it continues at the saved step, or
   * returns at once when the checkpoint was written after it had finished.
   */
  checkpoints?: RunCheckpoints;
  /** Label of this phase in events (`finetune`, `prune`, `level 2`...). */
  phase?: string;
  /** Step number the first step of this loop reports (phases continue the count). */
  stepOffset?: number;
}

export interface TrainLoopResult {
  steps: number;
  metrics?: Metrics;
}

/** Steps of a training budget: `maxSteps` when set, else `epochs` over the data. */
export function budgetSteps(training: TrainingOptions, examples: number): number {
  if (training.maxSteps !== undefined) return training.maxSteps;
  return Math.ceil(examples / training.batchSize) * (training.epochs ?? 1);
}

/**
 * The training loop every method shares: batches shuffled by seed, forward (dropout on), the summed
 * loss terms, gradients of the model's trainable parameters and any extra groups, global-norm
 * clipping, AdamW with linear warm-up/decay, then hooks. With `training.microBatchSize` each batch is
 * split and its gradients summed over the micro-batches (the whole batch's update; see
 * `DistillationLoss.observe`). Each micro-batch and the update are one `tf.tidy` each; the loop stops
 * at a step boundary when the run is aborted.
 */
export async function trainLoop(o: TrainLoopOptions): Promise<TrainLoopResult> {
  const { model, train, training, control } = o;
  const cp = o.checkpoints;
  const offset = o.stepOffset ?? 0;
  // Loops are told apart by phase and first step (deterministic for a config, so resume finds them again).
  const key = `train ${o.phase ?? ''}@${offset}`;
  const finished = cp?.completed(key);
  if (finished) {
    cp!.finish(key, finished.result);
    return finished.result as TrainLoopResult;
  }
  const total = budgetSteps(training, train.size);
  const warmup = Math.round(training.warmupRatio * total);
  const trainable = o.trainable ?? (() => true);
  const names = [...model.params.keys()].filter(trainable);
  const nameOf = new Map<tf.Variable, string>(names.map((n) => [model.params.get(n)!, n]));
  const modelGroups: ParamGroup[] = [
    { variables: names.filter(decays).map((n) => model.params.get(n)!), learningRate: training.learningRate, weightDecay: training.weightDecay },
    { variables: names.filter((n) => !decays(n)).map((n) => model.params.get(n)!), learningRate: training.learningRate, weightDecay: 0 },
  ];
  const optimizer = new AdamW([...modelGroups, ...(o.extraGroups ?? [])].filter((g) => g.variables.length > 0));
  const varList = optimizer.variables;
  const rng = new Rng(o.seed);
  const needsTeacher = o.teacher !== undefined && o.losses.some((l) => l.needs?.teacher);
  const teacherHidden = o.losses.some((l) => l.needs?.hiddenStates);
  // Examples per forward/backward pass; each batch's gradients are summed over its micro-batches.
  const micro = training.microBatchSize;
  let step = 0;
  let epoch = 0;
  /** Batches of the current epoch already trained on (resume skips them: same data order). */
  let batchInEpoch = 0;
  let metrics: Metrics | undefined;
  let savedAt = -1;
  const save = async () => {
    if (!cp || savedAt === offset + step) return;
    const path = await cp.save(offset + step);
    savedAt = offset + step;
    control.emit({ type: 'checkpoint-saved', step: offset + step, path });
  };
  if (cp) {
    const restored = cp.register('loop', {
      state: () => {
        const opt = optimizer.state();
        return { json: { key, step, epoch, batchInEpoch, rng: rng.position, optimizer: opt.json, ...(metrics ? { metrics } : {}) }, tensors: opt.tensors };
      },
      restore: (s) => {
        const j = s.json as { key: string; step: number; epoch: number; batchInEpoch: number; rng: number; optimizer: unknown; metrics?: Metrics };
        if (j.key !== key) throw new Error(`resume: the checkpoint was written in training loop '${j.key}', but the run reached '${key}' first (the pruner's stages changed?)`);
        step = j.step;
        epoch = j.epoch;
        batchInEpoch = j.batchInEpoch;
        rng.position = j.rng;
        metrics = j.metrics;
        optimizer.restore({ json: j.optimizer, ...(s.tensors ? { tensors: s.tensors } : {}) });
      },
    });
    if (restored) {
      savedAt = offset + step;
      control.emit({ type: 'log', message: `resumed ${o.phase ?? 'training'} at step ${offset + step} (epoch ${epoch}, batch ${batchInEpoch})` });
    }
  }
  /** At a step boundary: an aborted run saves where it is, then stops. */
  const boundary = async () => {
    if (!control.signal.aborted) return;
    await save();
    control.checkpoint();
  };
  const evalNow = async () => {
    if (!o.dev) return;
    const ev = evaluate(model, o.dev, {
      batchSize: Math.max(64, training.batchSize),
      forward: o.evalForward ?? (() => o.forwardMasks?.(offset + step, false) ?? {}),
    });
    metrics = { accuracy: ev.accuracy, macroF1: ev.macroF1, loss: ev.loss!, examples: ev.examples };
    control.emit({ type: 'evaluated', step: offset + step, metrics, ...(o.phase ? { phase: o.phase } : {}) });
    await o.onEvaluated?.(metrics, offset + step);
  };
  let result: TrainLoopResult;
  try {
    while (step < total) {
      control.emit({ type: 'epoch-started', epoch, ...(o.phase ? { phase: o.phase } : {}) });
      let index = 0;
      for (const batch of train.batches(training.batchSize, { shuffleSeed: o.seed * 1000 + epoch })) {
        if (index++ < batchInEpoch) continue;
        if (step >= total) break;
        await boundary();
        const globalStep = offset + step;
        const scale = linearSchedule(step, warmup, total);
        const terms: Record<string, number> = {};
        const parts = splitBatch(batch, Math.min(micro ?? batch.batchSize, batch.batchSize));
        const split = parts.length > 1;
        const partOf = (p: BatchPart) => (split ? { part: { offset: p.offset, size: p.size, whole: p.whole } } : {});
        const labelsOf = (b: Batch) => (b.labels ? tf.tensor1d(b.labels, 'int32') : undefined);
        // Losses that see the whole batch (a matching or negatives chosen on it) observe every
        // micro-batch first, without a tape; the dropout draws are replayed for the gradient passes.
        const observers = split ? o.losses.filter((l) => l.observe) : [];
        if (observers.length > 0) {
          const position = rng.position;
          for (const p of parts) {
            tf.tidy(() => {
              const labels = labelsOf(p.batch);
              const teacherOut = needsTeacher ? o.teacher!.forward(p.batch, { outputHiddenStates: teacherHidden }) : undefined;
              const fm = o.forwardMasks?.(globalStep, true) ?? {};
              const student = model.forward(p.batch, { ...fm, training: true, rng, outputHiddenStates: teacherHidden });
              for (const l of observers) l.observe!({ student, ...(teacherOut ? { teacher: teacherOut } : {}), batch: p.batch, ...(labels ? { labels } : {}), step: globalStep, ...partOf(p) });
            });
          }
          rng.position = position;
        }
        // Gradients summed over the micro-batches (one when the batch is not split), kept across their tidies.
        const summed = new Map<tf.Variable, Tensor>();
        let lossValue = 0;
        try {
          for (const [i, p] of parts.entries()) {
            tf.tidy(() => {
              const labels = labelsOf(p.batch);
              // The teacher's outputs live for one micro-batch.
              const teacherOut: ForwardOutput | undefined = needsTeacher ? o.teacher!.forward(p.batch, { outputHiddenStates: teacherHidden }) : undefined;
              const kept: Record<string, Scalar> = {};
              const { value, grads } = tf.variableGrads(() => {
                const fm = o.forwardMasks?.(globalStep, true) ?? {};
                const student = model.forward(p.batch, { ...fm, training: true, rng, outputHiddenStates: teacherHidden });
                const terms: Record<string, Scalar> = {};
                for (const loss of o.losses) {
                  const out = loss.compute({ student, ...(teacherOut ? { teacher: teacherOut } : {}), batch: p.batch, ...(labels ? { labels } : {}), step: globalStep, ...partOf(p) });
                  // Terms are means over the batch: a micro-batch's counts by its share of the examples,
                  // except for losses that observed the whole batch (they return their share themselves).
                  for (const [k, v] of Object.entries(out)) terms[k] = split && !loss.observe ? (tf.mul(v, p.size / batch.batchSize) as Scalar) : v;
                }
                // Regularizers (CoFi's Lagrangian, soft movement's L1) belong to the step, not to a micro-batch.
                if (i === 0) Object.assign(terms, o.extraLoss?.(globalStep) ?? {});
                const list = Object.values(terms);
                if (list.length === 0) throw new Error('training: no loss terms (configure at least one loss)');
                for (const [k, v] of Object.entries(terms)) kept[k] = tf.keep(v);
                return tf.addN(list) as Scalar;
              }, varList);
              lossValue += value.dataSync()[0]!;
              for (const v of varList) {
                const g = grads[v.name];
                if (!g) continue;
                const prev = summed.get(v);
                summed.set(v, tf.keep(prev ? tf.add(prev, g) : g));
                prev?.dispose();
              }
              for (const [k, v] of Object.entries(kept)) {
                terms[k] = (terms[k] ?? 0) + v.dataSync()[0]!;
                v.dispose();
              }
            });
          }
          if (!Number.isFinite(lossValue)) throw new Error(`training: loss is ${lossValue} at step ${globalStep}`);
          tf.tidy(() => {
            const byVar = summed;
            if (o.onGradients) {
              const named = new Map<string, Tensor>();
              for (const [v, g] of byVar) {
                const n = nameOf.get(v);
                if (n) named.set(n, g);
              }
              o.onGradients(named, globalStep);
            }
            // Only the model's parameters are clipped; mask and multiplier groups keep their raw gradients.
            const modelVars = new Map([...byVar].filter(([v]) => nameOf.has(v)));
            const { grads: clipped } = clipByGlobalNorm(modelVars, training.maxGradNorm);
            const update = new Map(byVar);
            for (const [v, g] of clipped) update.set(v, g);
            optimizer.apply(update, scale);
          });
        } finally {
          for (const g of summed.values()) g.dispose();
        }
        terms['total'] = lossValue;
        o.afterStep?.(globalStep);
        step++;
        batchInEpoch++;
        control.emit({
          type: 'step',
          step: offset + step,
          totalSteps: offset + total,
          epoch,
          loss: terms as LossTerms,
          learningRate: training.learningRate * scale,
          ...(o.phase ? { phase: o.phase } : {}),
        });
        if (o.evalEvery && step % o.evalEvery === 0 && step < total) await evalNow();
        // Periodic checkpoints count the run's global steps, so `checkpointEvery` spans phases.
        if (cp?.every && (offset + step) % cp.every === 0 && step < total) await save();
        // Let the event loop breathe (progress rendering, abort signals) between steps.
        await new Promise<void>((r) => setImmediate(r));
      }
      await o.onEpochEnd?.(epoch);
      epoch++;
      batchInEpoch = 0;
    }
    await boundary();
    await evalNow();
    result = metrics ? { steps: step, metrics } : { steps: step };
    if (cp) {
      // The loop is over: later checkpoints record its result instead of its state.
      cp.unregister('loop');
      cp.finish(key, result);
      savedAt = -1;
      await save();
    }
  } finally {
    cp?.unregister('loop');
    optimizer.dispose();
  }
  return result;
}
