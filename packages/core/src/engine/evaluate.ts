import { tf } from '../tf.js';
import type { BertModel, ForwardOptions } from '../model/bert.js';
import type { Dataset } from '../data/dataset.js';
import type { Metrics } from '../events.js';
import { crossEntropy } from './losses.js';

/** Accuracy and macro-F1 of class predictions. */
export function classificationMetrics(pred: ArrayLike<number>, gold: ArrayLike<number>, numLabels: number): Omit<Metrics, 'loss'> {
  const tp = new Float64Array(numLabels);
  const fp = new Float64Array(numLabels);
  const fn = new Float64Array(numLabels);
  let correct = 0;
  for (let i = 0; i < gold.length; i++) {
    const p = pred[i]!;
    const g = gold[i]!;
    if (p === g) {
      correct++;
      tp[g]!++;
    } else {
      fp[p]!++;
      fn[g]!++;
    }
  }
  let f1Sum = 0;
  let present = 0;
  for (let k = 0; k < numLabels; k++) {
    if (tp[k]! + fn[k]! + fp[k]! === 0) continue; // a class absent from gold and predictions does not count
    present++;
    const denom = 2 * tp[k]! + fp[k]! + fn[k]!;
    f1Sum += denom === 0 ? 0 : (2 * tp[k]!) / denom;
  }
  return { accuracy: gold.length ? correct / gold.length : 0, macroF1: present ? f1Sum / present : 0, examples: gold.length };
}

export interface EvaluateOptions {
  batchSize?: number;
  /** Masks etc. for the forward pass (built per batch inside a tidy). */
  forward?: () => Omit<ForwardOptions, 'training'>;
}

/** Dev-set metrics in inference mode (no dropout). */
export function evaluate(model: BertModel, data: Dataset, opts: EvaluateOptions = {}): Metrics & { predictions: Int32Array } {
  const predictions = new Int32Array(data.size);
  const gold = new Int32Array(data.size);
  let lossSum = 0;
  let i = 0;
  for (const batch of data.batches(opts.batchSize ?? 64)) {
    const [pred, loss] = tf.tidy(() => {
      const out = model.forward(batch, { ...(opts.forward?.() ?? {}), training: false });
      if (!out.logits) throw new Error('evaluate: the model has no classification head');
      const labels = batch.labels ? tf.tensor1d(batch.labels, 'int32') : undefined;
      const l = labels ? crossEntropy(out.logits, labels).dataSync()[0]! : NaN;
      return [tf.argMax(out.logits, -1).dataSync() as Int32Array, l] as const;
    });
    predictions.set(pred, i);
    if (batch.labels) gold.set(batch.labels, i);
    lossSum += loss * batch.batchSize;
    i += batch.batchSize;
  }
  const m = classificationMetrics(predictions, gold, model.numLabels);
  return { ...m, loss: lossSum / Math.max(1, data.size), predictions };
}
