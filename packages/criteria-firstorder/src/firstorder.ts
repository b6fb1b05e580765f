import {
  crossEntropy,
  groupKey,
  kdLoss,
  normalizePerLayer,
  splitBatch,
  tf,
  type Batch,
  type CriterionContext,
  type ForwardOutput,
  type GroupKind,
  type ImportanceCriterion,
  type PrunableGroup,
  type Scalar,
  type Scores,
  type Tensor,
} from '@topiary/core';

export interface FirstOrderOptions {
  /** Divide each layer's head and neuron scores by their L2 norm (Michel et al.; the reference default). */
  normalize?: boolean;
  /** Loss to differentiate: `ce` (task cross-entropy, default) or `kd` (distillation from the teacher, temperature `temperature`). */
  loss?: 'ce' | 'kd';
  temperature?: number;
  /** Batches to accumulate over (the pruner may also limit the batches it passes). */
  maxBatches?: number;
}

/**
 * `first-order`: the Taylor importance of mask variables (Molchanov et al. 2017; Michel et al. 2019;
 * CAP-f): |dL/dm| for every head and FFN-neuron mask at the current masks, accumulated over batches
 * (the absolute value is taken per batch, then summed, as the reference does), with the model in
 * evaluation mode; for weights, |w * dL/dw| accumulated the same way; for whole layers (`layer`
 * groups), |dL/dm| of each layer's gate, not normalised (one score per layer).
 */
export class FirstOrderCriterion implements ImportanceCriterion {
  readonly id = 'first-order';
  readonly kinds: readonly GroupKind[] = ['head', 'neuron', 'weight', 'layer'];
  private readonly normalize: boolean;
  private readonly lossKind: 'ce' | 'kd';
  private readonly temperature: number;
  private readonly maxBatches: number;

  constructor(opts: FirstOrderOptions = {}) {
    this.normalize = opts.normalize ?? true;
    this.lossKind = opts.loss ?? 'ce';
    if (this.lossKind !== 'ce' && this.lossKind !== 'kd') throw new Error(`first-order: option 'loss' must be 'ce' or 'kd', got ${JSON.stringify(opts.loss)}`);
    this.temperature = opts.temperature ?? 2;
    this.maxBatches = opts.maxBatches ?? Infinity;
  }

  private lossOf(ctx: CriterionContext, out: ForwardOutput, batch: Batch): Scalar {
    if (ctx.loss) return ctx.loss(out, batch);
    if (this.lossKind === 'kd') {
      if (!ctx.teacher) throw new Error("first-order: option loss 'kd' needs a teacher model");
      const t = ctx.teacher.forward(batch).logits!;
      return kdLoss(out.logits!, t, this.temperature);
    }
    if (!batch.labels) throw new Error('first-order: the scoring batches have no labels (task cross-entropy needs them)');
    return crossEntropy(out.logits!, tf.tensor1d(batch.labels, 'int32'));
  }

  async score(groups: PrunableGroup[], ctx: CriterionContext): Promise<Scores> {
    for (const g of groups) {
      if (!this.kinds.includes(g.kind)) throw new Error(`first-order: cannot score '${g.kind}' groups (it scores ${this.kinds.join(', ')})`);
    }
    const { model, masks } = ctx;
    const L = model.config.numHiddenLayers;
    const head = masks.headMask.map((m) => new Float64Array(m.length));
    const neuron = masks.neuronMask.map((m) => new Float64Array(m.length));
    const weightNames = groups.filter((g) => g.kind === 'weight').map((g) => g.param!);
    const weight = new Map(weightNames.map((n) => [n, new Float64Array(model.params.get(n)!.size)]));
    const wantStructures = groups.some((g) => g.kind === 'head' || g.kind === 'neuron');
    // Whole layers: |dL/dm| of each layer's gate (`StructuredMasks.layerMask`, out = x + m (layer(x) - x)),
    // the first-order estimate of the loss change when the layer is removed.
    const wantLayers = groups.some((g) => g.kind === 'layer');
    const layer = new Float64Array(L);
    let n = 0;
    for (const batch of ctx.batches()) {
      if (n++ >= this.maxBatches) break;
      ctx.control?.checkpoint();
      // A batch's gradient, summed over its micro-batches by their share of the examples (the loss is a
      // batch mean), then its absolute value: the same score as the whole batch.
      const parts = splitBatch(batch, Math.min(ctx.microBatchSize ?? batch.batchSize, batch.batchSize));
      const w = (size: number) => (parts.length > 1 ? size / batch.batchSize : 1);
      const headG = head.map((a) => new Float64Array(a.length));
      const neuronG = neuron.map((a) => new Float64Array(a.length));
      const layerG = new Float64Array(L);
      const weightG = new Map(weightNames.map((nm) => [nm, new Float64Array(weight.get(nm)!.length)]));
      const add = (into: Float64Array, v: ArrayLike<number>, k: number) => {
        for (let j = 0; j < v.length; j++) into[j]! += k * v[j]!;
      };
      for (const { batch: part, size } of parts) {
        tf.tidy(() => {
          const { masks: fixed, weightMasks } = masks.toTensors();
          if (wantStructures || wantLayers) {
            const headT = wantStructures ? masks.headMask.map((m) => tf.tensor1d(m)) : [];
            const neuronT = wantStructures ? masks.neuronMask.map((m) => tf.tensor1d(m)) : [];
            const layerT = wantLayers ? [tf.tensor1d(masks.layerMask)] : [];
            const f = (...xs: Tensor[]) => {
              const m = { ...fixed, ...(wantStructures ? { headMask: xs.slice(0, L), neuronMask: xs.slice(L, 2 * L) } : {}), ...(wantLayers ? { layerMask: xs[xs.length - 1]! } : {}) };
              return this.lossOf(ctx, model.forward(part, { masks: m, weightMasks }), part);
            };
            const grads = tf.grads(f)([...headT, ...neuronT, ...layerT]);
            grads.forEach((g, i) => add(!wantStructures || i >= 2 * L ? layerG : i < L ? headG[i]! : neuronG[i - L]!, g.dataSync(), w(size)));
          }
          if (weightNames.length > 0) {
            const vars = weightNames.map((nm) => model.params.get(nm)!);
            const { grads } = tf.variableGrads(() => this.lossOf(ctx, model.forward(part, { masks: fixed, weightMasks }), part), vars);
            for (const nm of weightNames) add(weightG.get(nm)!, grads[model.params.get(nm)!.name]!.mul(model.params.get(nm)!).dataSync(), w(size));
          }
        });
      }
      const addAbs = (into: Float64Array, g: Float64Array) => {
        for (let j = 0; j < g.length; j++) into[j]! += Math.abs(g[j]!);
      };
      headG.forEach((g, l) => addAbs(head[l]!, g));
      neuronG.forEach((g, l) => addAbs(neuron[l]!, g));
      addAbs(layer, layerG);
      for (const nm of weightNames) addAbs(weight.get(nm)!, weightG.get(nm)!);
    }
    if (n === 0) throw new Error('first-order: no batches to score on');
    let headScores: Float32Array[] = head.map((a) => Float32Array.from(a));
    let neuronScores: Float32Array[] = neuron.map((a) => Float32Array.from(a));
    if (this.normalize) {
      headScores = normalizePerLayer(headScores);
      neuronScores = normalizePerLayer(neuronScores);
    }
    const scores: Scores = new Map();
    for (const g of groups) {
      if (g.kind === 'head') scores.set(groupKey(g), headScores[g.layer!]!);
      else if (g.kind === 'neuron') scores.set(groupKey(g), neuronScores[g.layer!]!);
      else if (g.kind === 'layer') scores.set(groupKey(g), Float32Array.from(layer));
      else scores.set(groupKey(g), Float32Array.from(weight.get(g.param!)!));
    }
    return scores;
  }
}
