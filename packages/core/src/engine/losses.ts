import { tf, type Scalar, type Tensor } from '../tf.js';
import type { DistillationLoss, LossInput } from '../contracts.js';
import { z } from '../plugins/options.js';

/** Options of `kd` and `ce`. */
export const KD_OPTIONS = z.strictObject({
  temperature: z.number().positive().default(2).describe('softening temperature T'),
  alpha: z.number().min(0).default(0.9).describe('weight of the KD term'),
  ceWeight: z.number().min(0).default(0.1).describe('weight of the hard-label cross-entropy (0 drops it)'),
});
export const CE_OPTIONS = z.strictObject({ weight: z.number().min(0).default(1).describe('weight of the cross-entropy') });

/** Mean softmax cross-entropy of `logits` [B, K] against integer `labels` [B]. */
export function crossEntropy(logits: Tensor, labels: Tensor): Scalar {
  const K = logits.shape[1]!;
  return tf.losses.softmaxCrossEntropy(tf.oneHot(tf.cast(labels, 'int32'), K), logits) as Scalar;
}

/**
 * KL(teacher_T || student_T) * T^2 with T-softened distributions, averaged over the batch
 * (`batchmean`), as Hinton et al. and the CoFi/CAP reference code compute it.
 */
export function kdLoss(studentLogits: Tensor, teacherLogits: Tensor, temperature: number): Scalar {
  const logP = tf.logSoftmax(tf.div(studentLogits, temperature));
  const logQ = tf.logSoftmax(tf.div(teacherLogits, temperature));
  const kl = tf.sum(tf.mul(tf.exp(logQ), tf.sub(logQ, logP)));
  return tf.mul(tf.div(kl, studentLogits.shape[0]!), temperature * temperature) as Scalar;
}

export interface KdOptions {
  /** Softening temperature T. */
  temperature?: number;
  /** Weight of the KD term. */
  alpha?: number;
  /** Weight of the hard-label cross-entropy term (0 drops it). */
  ceWeight?: number;
}

/** Prediction distillation (id `kd`): `alpha * KD_T + ceWeight * CE`. */
export class KdLoss implements DistillationLoss {
  readonly id = 'kd';
  readonly needs = { teacher: true };
  readonly temperature: number;
  readonly alpha: number;
  readonly ceWeight: number;
  constructor(opts: KdOptions = {}) {
    this.temperature = opts.temperature ?? 2;
    this.alpha = opts.alpha ?? 0.9;
    this.ceWeight = opts.ceWeight ?? 0.1;
    for (const [k, v] of Object.entries({ temperature: this.temperature, alpha: this.alpha, ceWeight: this.ceWeight })) {
      if (!(typeof v === 'number' && v >= 0 && Number.isFinite(v))) throw new Error(`kd: option '${k}' must be a non-negative number, got ${JSON.stringify(v)}`);
    }
  }
  compute({ student, teacher, labels }: LossInput): Record<string, Scalar> {
    const out: Record<string, Scalar> = {};
    if (!student.logits) throw new Error('kd: the student has no classification head');
    if (this.alpha > 0) {
      if (!teacher?.logits) throw new Error('kd: no teacher logits (configure a teacher model)');
      out['kd'] = tf.mul(kdLoss(student.logits, teacher.logits, this.temperature), this.alpha) as Scalar;
    }
    if (this.ceWeight > 0 && labels) out['ce'] = tf.mul(crossEntropy(student.logits, labels), this.ceWeight) as Scalar;
    return out;
  }
}

/** Plain task loss (id `ce`). */
export class CrossEntropyLoss implements DistillationLoss {
  readonly id = 'ce';
  constructor(private readonly weight = 1) {}
  compute({ student, labels }: LossInput): Record<string, Scalar> {
    if (!student.logits || !labels) throw new Error('ce: needs logits and labels');
    return { ce: tf.mul(crossEntropy(student.logits, labels), this.weight) as Scalar };
  }
}
