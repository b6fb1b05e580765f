import { tf, type Scalar, type Tensor, type Tensor2D, type Tensor3D } from '@topiary/core';

export interface ContrastiveInput {
  /** The batch's current representations, L2-normalised, `[bsz, hidden]` (gradients flow through them). */
  current: Tensor2D;
  /** A representation bank `[examples, reps, hidden]` (normalised rows, no gradients). */
  bank: Tensor3D;
  /** Bank rows of the batch's examples (of the whole batch when `whole` is given). */
  idx: number[];
  /** Bank rows of the extra sampled examples. */
  extraIdx: number[];
  /** Class ids of the batch (the whole batch with `whole`) and of every bank row (for the supervised term). */
  labels?: ArrayLike<number>;
  bankLabels?: ArrayLike<number>;
  temperature: number;
  unsupervisedWeight: number;
  supervisedWeight: number;
  /**
   * A micro-batch of a split batch: `current` holds rows `[offset, offset + current rows)` of the whole
   * batch, whose representations (`reps`, `[batch, hidden]`, constants) are the in-batch columns. The
   * loss is then this micro-batch's share of the whole batch's (the sum over the micro-batches is it).
   */
  whole?: { reps: Tensor2D; offset: number };
}

/** Identity forward, zero gradient: the batch's own representations enter as constants (`detach`). */
function stopGradient<T extends Tensor>(x: T): T {
  const f = (t: Tensor) => ({ value: t.clone(), gradFunc: (dy: Tensor) => tf.zerosLike(dy) });
  return tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0])(x) as T;
}

/** `[bsz, hidden]` mean over the tokens the attention mask keeps, then L2-normalised. */
export function meanPooled(sequenceOutput: Tensor3D, attentionMask: Tensor2D): Tensor2D {
  return tf.tidy(() => {
    const m = attentionMask.cast('float32').expandDims(2);
    const mean = tf.sum(tf.mul(sequenceOutput, m), 1).div(tf.sum(m, 1));
    return normalizeRows(mean as Tensor2D);
  });
}

/** Rows divided by their L2 norm (torch's `normalize`, eps 1e-12). */
export function normalizeRows(x: Tensor2D): Tensor2D {
  return tf.tidy(() => tf.div(x, tf.maximum(tf.norm(x, 2, -1, true), 1e-12)) as Tensor2D);
}

/**
 * CAP's contrastive loss against one bank (Xu et al. 2022, the reference's
 * `calculate_contrastive_loss`): each example's representation is scored against the batch's own
 * (detached) representations, the bank rows of the batch and of the extra examples, divided by the
 * temperature, itself masked out, log-softmax; the loss is minus the mean log-likelihood of the
 * positives: the same example (unsupervised) and examples of the same class (supervised), each term
 * normalised as the reference does and weighted.
 */
export function contrastiveLoss(i: ContrastiveInput): Scalar {
  return tf.tidy(() => {
    const [rows, hidden] = i.current.shape;
    const bsz = i.idx.length;
    const off = i.whole?.offset ?? 0;
    const reps = i.bank.shape[1];
    if (!i.whole && rows !== bsz) throw new Error(`contrastiveLoss: idx has ${i.idx.length} entries, the batch ${rows}`);
    if (i.whole && (i.whole.reps.shape[0] !== bsz || off + rows > bsz)) throw new Error(`contrastiveLoss: rows ${off}..${off + rows} of a whole batch of ${i.whole.reps.shape[0]} representations and ${bsz} bank rows`);
    if (i.bank.shape[2] !== hidden) throw new Error(`contrastiveLoss: bank rows are ${i.bank.shape[2]} wide, representations ${hidden}`);
    // Columns: for each batch example, its current representation then its `reps` bank rows; then `reps` rows per extra example.
    const own = tf.gather(i.bank, i.idx); // [bsz, reps, hidden]
    const batchReps = i.whole ? i.whole.reps : stopGradient(i.current);
    const batchCols = tf.concat([batchReps.expandDims(1), own], 1).reshape([bsz * (reps + 1), hidden]);
    const extraCols = i.extraIdx.length ? tf.gather(i.bank, i.extraIdx).reshape([i.extraIdx.length * reps, hidden]) : tf.zeros([0, hidden]);
    const cols = tf.concat([batchCols, extraCols], 0);
    const C = cols.shape[0]!;
    const colIdx: number[] = [];
    for (const id of i.idx) for (let r = 0; r <= reps; r++) colIdx.push(id);
    for (const id of i.extraIdx) for (let r = 0; r < reps; r++) colIdx.push(id);
    // Each row's own column (its current representation), for the whole batch's rows.
    const selfCol = (b: number) => b * (reps + 1);
    const self = new Float32Array(rows * C);
    for (let b = 0; b < rows; b++) self[b * C + selfCol(off + b)] = 1;
    const selfT = tf.tensor2d(self, [rows, C]);
    let score = tf.matMul(i.current, cols, false, true).div(i.temperature);
    score = tf.add(tf.mul(score, tf.sub(1, selfT)), tf.mul(selfT, -1e6));
    const logProb = tf.logSoftmax(score, -1);

    const term = (rowKey: (b: number) => number, colKey: (c: number) => number, weight: number): Tensor => {
      if (weight === 0) return tf.scalar(0);
      // Positives of every row of the whole batch: the normalisation counts them all.
      const pos = new Float32Array(rows * C);
      const posNum = new Float32Array(rows);
      let count = 0;
      for (let b = 0; b < bsz; b++) {
        const key = rowKey(b);
        const mine = b >= off && b < off + rows;
        let n = 0;
        for (let c = 0; c < C; c++) {
          if (colKey(c) !== key) continue;
          n++;
          if (c === selfCol(b)) continue;
          count++;
          if (mine) pos[(b - off) * C + c] = 1;
        }
        if (mine) posNum[b - off] = n - 1; // positives other than itself
      }
      const masked = tf.mul(logProb, tf.tensor2d(pos, [rows, C]));
      // The reference divides by the count of non-zero masked entries: the positives (a log-probability
      // is never exactly 0 with more than one column), counted here outside the tape.
      const perRow = tf.div(masked, tf.tensor2d(posNum, [rows, 1]));
      return tf.mul(tf.div(tf.sum(perRow), count), -weight);
    };
    const unsup = term((b) => i.idx[b]!, (c) => colIdx[c]!, i.unsupervisedWeight);
    let sup: Tensor = tf.scalar(0);
    if (i.supervisedWeight !== 0) {
      if (!i.labels || !i.bankLabels) throw new Error('contrastiveLoss: the supervised term needs labels and bankLabels');
      const colLabel: number[] = [];
      for (let b = 0; b < bsz; b++) for (let r = 0; r <= reps; r++) colLabel.push(i.labels[b]!);
      for (const id of i.extraIdx) for (let r = 0; r < reps; r++) colLabel.push(i.bankLabels[id]!);
      sup = term((b) => i.labels![b]!, (c) => colLabel[c]!, i.supervisedWeight);
    }
    return tf.add(unsup, sup) as Scalar;
  });
}
