/**
 * CoFi's distillation objective (princeton-nlp/CoFiPruning `trainer/trainer.py`,
 * `calculate_distillation_loss` with `layer_distill_version` 4): layerwise MSE between chosen teacher
 * layers and the student layers they are matched to (after a learned linear map of the student), plus
 * the prediction-distillation KL term.
 */
import { tf, linear, type Scalar, type Tensor } from '@topiary/core';

let serial = 0;

/**
 * The learned map applied to every student layer output before the MSE (reference
 * `model.layer_transformation`, an `nn.Linear(H, H)` initialized to the identity with zero bias).
 * Topiary convention: `weight` is stored `[in, out]`, so y = x W + b; a Hugging Face / golden
 * `[out, in]` weight is transposed by `fromHuggingFace`.
 */
export class LayerTransformation {
  constructor(
    readonly weight: tf.Variable,
    readonly bias: tf.Variable,
  ) {
    if (weight.shape.length !== 2 || bias.shape.length !== 1 || bias.shape[0] !== weight.shape[1]) {
      throw new Error(`LayerTransformation: expected weight [in, out] and bias [out], got [${weight.shape}] and [${bias.shape}]`);
    }
  }

  /** Identity weight and zero bias (reference `initialize_layer_transformation`). */
  static identity(hiddenSize: number): LayerTransformation {
    const id = serial++;
    return new LayerTransformation(
      tf.tidy(() => tf.variable(tf.eye(hiddenSize), true, `cofi_layer_transformation_weight_${id}`)),
      tf.tidy(() => tf.variable(tf.zeros([hiddenSize]), true, `cofi_layer_transformation_bias_${id}`)),
    );
  }

  /** From Hugging Face layout: `weight[out][in]`, y = x W^T + b. */
  static fromHuggingFace(weight: number[][] | Tensor, bias: number[] | Tensor): LayerTransformation {
    const id = serial++;
    const w = tf.tidy(() => tf.transpose(weight instanceof tf.Tensor ? weight : tf.tensor2d(weight, undefined, 'float32')));
    const b = bias instanceof tf.Tensor ? tf.clone(bias) : tf.tensor1d(bias, 'float32');
    const lt = new LayerTransformation(
      tf.variable(w, true, `cofi_layer_transformation_weight_${id}`),
      tf.variable(b, true, `cofi_layer_transformation_bias_${id}`),
    );
    w.dispose();
    b.dispose();
    return lt;
  }

  apply(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias, 'layer_transformation');
  }

  variables(): tf.Variable[] {
    return [this.weight, this.bias];
  }

  dispose(): void {
    this.weight.dispose();
    this.bias.dispose();
  }
}

/**
 * Teacher layers to distil from. 12 layers: the reference's [2, 5, 8, 11]. Otherwise (our choice) the
 * same rule generalized: `count` layers evenly spaced ending at the last, ceil((k+1) L / count) - 1
 * for k = 0..count-1 (all layers when L <= count). L = 6 gives [1, 2, 4, 5]; L = 4 gives [0, 1, 2, 3].
 */
export function defaultTeacherLayers(numLayers: number, count = 4): number[] {
  if (!Number.isInteger(numLayers) || numLayers <= 0) throw new Error(`numLayers: expected a positive integer, got ${numLayers}`);
  const n = Math.min(count, numLayers);
  return Array.from({ length: n }, (_, k) => Math.ceil(((k + 1) * numLayers) / n) - 1);
}

export interface LayerDistillOptions {
  /** Indices into the teacher's layer outputs (hidden_states[t + 1]); default `defaultTeacherLayers`. */
  teacherLayers?: number[];
  /** Student layer gates (`head_layer_z`); a layer whose value is exactly 0 is "removed". */
  headLayerZ?: ArrayLike<number> | Tensor;
  /**
   * How `headLayerZ` restricts the matching.
   * - `'reference'` (default, what CoFiPruning computes and the golden holds): the reference indexes the
   *   loss-SORTED candidate list with the per-LAYER existence mask (`indexes[(indexes < last) & existing]`),
   *   so the candidate of rank r is allowed when student layer r exists. It does not exclude removed layers
   *   (a removed layer can still be matched, and the best candidate is skipped when layer 0 is removed).
   * - `'layer'`: what the paper describes: removed student layers are never matched.
   */
  removedLayerRule?: 'reference' | 'layer';
  /**
   * The `[teacherLayers][studentLayers]` MSEs to choose the matching on, when they are not this batch's:
   * a micro-batch of a split batch is matched as the whole batch was (`layerwiseLosses` summed over it).
   */
  matchOn?: number[][];
}

export interface LayerDistillResult {
  /** Sum over teacher layers of the MSE to their matched student layer. */
  loss: Scalar;
  /** The student layer matched to each teacher layer (same order as teacherLayers). */
  alignment: number[];
  /** MSE of every (teacher layer, student layer) pair, `[teacherLayers][studentLayers]`. */
  layerwiseLoss: number[][];
}

/**
 * Layer distillation, version 4 (ordered minimum-distance matching). `teacherHiddenStates` and
 * `studentHiddenStates` are the embedding output then every layer's output (`ForwardOutput.hiddenStates`),
 * each `[batch, seq, hidden]`. Every student layer output goes through `transform`; the MSE is the mean
 * over ALL elements, padding positions included (as the reference). Teacher layers are matched from
 * last to first: each takes the student layer of smallest MSE among those with a lower index than the
 * previous choice (the first: below the student's layer count), subject to `removedLayerRule` when
 * `headLayerZ` is given; when none is left it reuses the previous choice (so the alignment is
 * non-decreasing, not strictly increasing: [0, 0, 0, 0] is possible).
 */
export function layerDistillationLoss(
  teacherHiddenStates: Tensor[],
  studentHiddenStates: Tensor[],
  transform: LayerTransformation,
  options: LayerDistillOptions = {},
): LayerDistillResult {
  const teacherOut = teacherHiddenStates.slice(1);
  const studentOut = studentHiddenStates.slice(1);
  if (teacherOut.length === 0) throw new Error('teacherHiddenStates: expected the embedding output and at least one layer output');
  if (studentOut.length === 0) throw new Error('studentHiddenStates: expected the embedding output and at least one layer output');
  const teacherLayers = options.teacherLayers ?? defaultTeacherLayers(teacherOut.length);
  for (const t of teacherLayers) {
    if (!Number.isInteger(t) || t < 0 || t >= teacherOut.length) {
      throw new Error(`teacherLayers: ${t} is not a teacher layer index in 0..${teacherOut.length - 1}`);
    }
  }
  const S = studentOut.length;
  let existing: boolean[] | undefined;
  if (options.headLayerZ !== undefined) {
    const z = options.headLayerZ instanceof tf.Tensor ? Array.from(options.headLayerZ.dataSync()) : Array.from(options.headLayerZ);
    if (z.length !== S) throw new Error(`headLayerZ: expected ${S} values (one per student layer), got ${z.length}`);
    existing = z.map((v) => v !== 0);
  }
  const byLayer = options.removedLayerRule === 'layer';
  if (options.removedLayerRule !== undefined && !['reference', 'layer'].includes(options.removedLayerRule)) {
    throw new Error(`removedLayerRule: expected 'reference' or 'layer', got '${options.removedLayerRule}'`);
  }

  let alignment: number[] = [];
  let layerwiseLoss: number[][] = [];
  const loss = tf.tidy(() => {
    const transformed = studentOut.map((s) => transform.apply(s));
    // [teacherLayers * S] MSEs, differentiable; the matching reads their values.
    const pairs: Tensor[] = [];
    for (const t of teacherLayers) for (const s of transformed) pairs.push(tf.mean(tf.squaredDifference(teacherOut[t]!, s)));
    const all = tf.stack(pairs);
    const values = all.dataSync();
    layerwiseLoss = teacherLayers.map((_, i) => Array.from(values.subarray(i * S, (i + 1) * S)));
    const matchOn = options.matchOn ?? layerwiseLoss;

    alignment = [];
    let last = S;
    for (let i = teacherLayers.length - 1; i >= 0; i--) {
      const row = matchOn[i]!;
      // Student layers by ascending loss (ties by index); the first allowed one below `last` wins.
      const ranked = row.map((_, s) => s).sort((a, b) => row[a]! - row[b]! || a - b);
      const allowed = (s: number, rank: number) =>
        s < last && (!existing || (byLayer ? existing[s]! : existing[rank]!));
      let best = ranked.find((s, rank) => allowed(s, rank)) ?? -1;
      if (best < 0) {
        if (last >= S) throw new Error('headLayerZ: every student layer is removed, nothing to distil into');
        best = last;
      }
      alignment.unshift(best);
      last = best;
    }
    // addN of the picked pair losses, not a gather (its gradient kernel is missing on wasm).
    return tf.addN(alignment.map((s, i) => pairs[i * S + s]!)) as Scalar;
  });
  return { loss, alignment, layerwiseLoss };
}

/** KL(teacher || student) of temperature-softened predictions, summed and divided by the batch size, times T^2. */
export function predictionDistillationLoss(teacherLogits: Tensor, studentLogits: Tensor, temperature = 2): Scalar {
  if (teacherLogits.shape.join() !== studentLogits.shape.join()) {
    throw new Error(`studentLogits: expected shape [${teacherLogits.shape}] like teacherLogits, got [${studentLogits.shape}]`);
  }
  return tf.tidy(() => {
    const logPt = tf.logSoftmax(tf.div(teacherLogits, temperature), -1);
    const logPs = tf.logSoftmax(tf.div(studentLogits, temperature), -1);
    const kl = tf.sum(tf.mul(tf.exp(logPt), tf.sub(logPt, logPs)));
    return tf.mul(tf.div(kl, teacherLogits.shape[0]!), temperature * temperature) as Scalar;
  });
}

export interface CoFiDistillOptions extends LayerDistillOptions {
  /** Softmax temperature of the prediction term (reference run script: 2). */
  temperature?: number;
  /** Weight of the prediction (KL) term, `distill_ce_loss_alpha` (reference default and README example: 0.1). */
  ceLossAlpha?: number;
  /** Weight of the layer term, `distill_loss_alpha` (reference default and README example: 0.9). */
  layerLossAlpha?: number;
}

export interface CoFiDistillInput {
  teacherHiddenStates: Tensor[];
  studentHiddenStates: Tensor[];
  teacherLogits: Tensor;
  studentLogits: Tensor;
}

export interface CoFiDistillResult {
  layerLoss: Scalar;
  kdLoss: Scalar;
  /** ceLossAlpha * kdLoss + layerLossAlpha * layerLoss. */
  loss: Scalar;
  alignment: number[];
}

/** Reference `calculate_distillation_loss` (layer distillation on, version 4). The caller disposes the scalars. */
export function cofiDistillationLoss(
  input: CoFiDistillInput,
  transform: LayerTransformation,
  options: CoFiDistillOptions = {},
): CoFiDistillResult {
  const { temperature = 2, ceLossAlpha = 0.1, layerLossAlpha = 0.9 } = options;
  const layer = layerDistillationLoss(input.teacherHiddenStates, input.studentHiddenStates, transform, options);
  const kdLoss = predictionDistillationLoss(input.teacherLogits, input.studentLogits, temperature);
  const loss = tf.tidy(() => tf.add(tf.mul(kdLoss, ceLossAlpha), tf.mul(layer.loss, layerLossAlpha)) as Scalar);
  return { layerLoss: layer.loss, kdLoss, loss, alignment: layer.alignment };
}
