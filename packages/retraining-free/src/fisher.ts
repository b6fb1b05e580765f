import { crossEntropy, splitBatch, tf, type Batch, type BertModel, type RunControl, type Tensor } from '@topiary/core';

/**
 * Gradients of the task loss with respect to all-ones head and neuron masks, one row per batch: per
 * layer, `heads[l]` is `[batches, heads]` and `neurons[l]` is `[batches, intermediate]`, row-major.
 */
export interface MaskGrads {
  batches: number;
  heads: Float32Array[];
  neurons: Float32Array[];
}

/** One batch's gradients: per layer, of the head mask and of the neuron mask. */
export interface MaskGradRow {
  heads: Float32Array[];
  neurons: Float32Array[];
}

/**
 * Gradients collected so far as checkpoint state (`Stateful`): an interrupted run saves the batches it
 * had finished, and a resumed one continues after them. Tensors `heads.{l}` `[batches, heads]` and
 * `neurons.{l}` `[batches, neurons]`.
 */
export function maskGradsState(rows: MaskGradRow[]) {
  return {
    state: () => {
      const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
      if (rows.length > 0) {
        const stack = (pick: (r: MaskGradRow) => Float32Array) => {
          const n = pick(rows[0]!).length;
          const data = new Float32Array(rows.length * n);
          rows.forEach((r, i) => data.set(pick(r), i * n));
          return { shape: [rows.length, n], data };
        };
        rows[0]!.heads.forEach((_, l) => {
          tensors.set(`heads.${l}`, stack((r) => r.heads[l]!));
          tensors.set(`neurons.${l}`, stack((r) => r.neurons[l]!));
        });
      }
      return { json: { batches: rows.length, layers: rows[0]?.heads.length ?? 0 }, tensors };
    },
    restore: (s: { json?: unknown; tensors?: Map<string, { shape: number[]; data: Float32Array }> }) => {
      const { batches, layers } = s.json as { batches: number; layers: number };
      rows.length = 0;
      for (let b = 0; b < batches; b++) {
        const row = (k: string, l: number) => {
          const t = s.tensors!.get(`${k}.${l}`)!;
          const n = t.shape[1]!;
          return t.data.slice(b * n, (b + 1) * n);
        };
        rows.push({ heads: Array.from({ length: layers }, (_, l) => row('heads', l)), neurons: Array.from({ length: layers }, (_, l) => row('neurons', l)) });
      }
    },
  };
}

/**
 * The reference's `collect_mask_grads`: for each batch, the gradient of the mean cross-entropy (model in
 * evaluation mode, no dropout) with respect to every layer's head mask and neuron mask at 1.
 */
export function collectMaskGrads(model: BertModel, batches: Iterable<Batch>, control?: RunControl, rows: MaskGradRow[] = [], microBatchSize?: number): MaskGrads {
  const c = model.config;
  const L = c.numHiddenLayers;
  // `rows` may hold the first batches' gradients already (a resumed run): those batches are skipped.
  const done = rows.length;
  let b = 0;
  for (const batch of batches) {
    if (b++ < done) continue;
    control?.checkpoint();
    if (!batch.labels) throw new Error('retraining-free: the sample batches need labels (the Fisher information is of the task loss)');
    // A batch's gradient, summed over its micro-batches by their share of the examples (the loss is a batch mean).
    const parts = splitBatch(batch, Math.min(microBatchSize ?? batch.batchSize, batch.batchSize));
    let grads: Float32Array[] | undefined;
    for (const { batch: part, size } of parts) {
      const g = tf.tidy(() => {
        const labels = tf.tensor1d(part.labels!, 'int32');
        const f = (...ms: Tensor[]) => {
          const out = model.forward(part, { masks: { headMask: ms.slice(0, L), neuronMask: ms.slice(L) } });
          return crossEntropy(out.logits!, labels);
        };
        const ones = [...c.layerHeads.map((a) => tf.ones([a])), ...c.layerIntermediate.map((i) => tf.ones([i]))];
        return tf.grads(f)(ones).map((g) => g.dataSync() as Float32Array);
      });
      if (parts.length === 1) grads = g;
      else {
        const k = size / batch.batchSize;
        grads ??= g.map((a) => new Float32Array(a.length));
        g.forEach((a, i) => {
          const into = grads![i]!;
          for (let j = 0; j < a.length; j++) into[j]! += k * a[j]!;
        });
      }
    }
    rows.push({ heads: grads!.slice(0, L), neurons: grads!.slice(L) });
  }
  const stack = (size: number, pick: (r: MaskGradRow) => Float32Array) => {
    const out = new Float32Array(rows.length * size);
    rows.forEach((r, b) => out.set(pick(r), b * size));
    return out;
  };
  return {
    batches: rows.length,
    heads: c.layerHeads.map((a, l) => stack(a, (r) => r.heads[l]!)),
    neurons: c.layerIntermediate.map((i, l) => stack(i, (r) => r.neurons[l]!)),
  };
}

/** Diagonal empirical Fisher information: the sum over batches of squared gradients, per unit. */
export function fisherInformation(grads: Float32Array, batches: number): Float64Array {
  const n = grads.length / batches;
  const out = new Float64Array(n);
  for (let b = 0; b < batches; b++) for (let i = 0; i < n; i++) out[i]! += grads[b * n + i]! ** 2;
  return out;
}
