/**
 * Movement pruning's binarizers and threshold schedule (Sanh, Wolf and Rush 2020), as pure functions
 * on flat score arrays: each returns a 0/1 mask (1 = keep).
 */

/** k-th smallest value (1-based) of `values`, by quickselect on a copy. */
export function kthSmallest(values: ArrayLike<number>, k: number): number {
  if (!(k >= 1 && k <= values.length)) throw new Error(`kthSmallest: k must be in [1, ${values.length}], got ${k}`);
  const a = Float64Array.from(values as ArrayLike<number>);
  let lo = 0;
  let hi = a.length - 1;
  const target = k - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target]!;
  }
  return a[target]!;
}

/**
 * Top-k: keeps the `floor(keep * n)` highest scores. Ties at the cut are broken by position (the
 * reference's sort leaves them unspecified).
 */
export function topKMask(scores: ArrayLike<number>, keep: number): Float32Array {
  const n = scores.length;
  const k = Math.trunc(keep * n);
  const mask = new Float32Array(n);
  if (k <= 0) return mask;
  if (k >= n) return mask.fill(1);
  const cut = kthSmallest(scores, n - k + 1); // the k-th largest
  let above = 0;
  for (let i = 0; i < n; i++) if (scores[i]! > cut) above++;
  let ties = k - above;
  for (let i = 0; i < n; i++) {
    const s = scores[i]!;
    if (s > cut) mask[i] = 1;
    else if (s === cut && ties > 0) {
      mask[i] = 1;
      ties--;
    }
  }
  return mask;
}

/**
 * Threshold: keeps scores above `threshold` (after a sigmoid when `sigmoid`), but never fewer than
 * `floor(0.005 n) + 1` (then it keeps the scores above the `(n - nbMin)`-th smallest), as the reference does.
 */
export function thresholdMask(scores: ArrayLike<number>, threshold: number, sigmoid: boolean): Float32Array {
  const n = scores.length;
  const nbMin = Math.trunc(0.005 * n) + 1;
  const mask = new Float32Array(n);
  let kept = 0;
  for (let i = 0; i < n; i++) {
    const s = scores[i]!;
    const v = sigmoid ? 1 / (1 + Math.exp(-s)) : s;
    if (v > threshold) {
      mask[i] = 1;
      kept++;
    }
  }
  if (kept < nbMin) {
    const cut = kthSmallest(scores, Math.max(n - nbMin, 1));
    for (let i = 0; i < n; i++) mask[i] = scores[i]! > cut ? 1 : 0;
  }
  return mask;
}

/** Magnitude: top-k on |w|. */
export function magnitudeMask(weights: ArrayLike<number>, keep: number): Float32Array {
  return topKMask(Float64Array.from(weights as ArrayLike<number>, Math.abs), keep);
}

export interface ThresholdSchedule {
  totalSteps: number;
  warmupSteps: number;
  initialThreshold: number;
  finalThreshold: number;
  /** Steps at `initialThreshold`, in units of `warmupSteps`. */
  initialWarmup: number;
  /** Steps at `finalThreshold` before the end, in units of `warmupSteps`. */
  finalWarmup: number;
  /** Final weight of the soft-movement L1 penalty. */
  finalLambda: number;
}

/**
 * The cubic schedule: `initialThreshold` for `initialWarmup * warmupSteps` steps, then a cubic
 * approach to `finalThreshold`, held for the last `finalWarmup * warmupSteps` steps; the penalty
 * weight follows the threshold, `finalLambda * threshold / finalThreshold`.
 */
export function scheduleThreshold(step: number, s: ThresholdSchedule): { threshold: number; lambda: number } {
  const start = s.initialWarmup * s.warmupSteps;
  const end = s.totalSteps - s.finalWarmup * s.warmupSteps;
  let threshold: number;
  if (step <= start) threshold = s.initialThreshold;
  else if (step > end) threshold = s.finalThreshold;
  else {
    const mul = 1 - (step - start) / (s.totalSteps - (s.finalWarmup + s.initialWarmup) * s.warmupSteps);
    threshold = s.finalThreshold + (s.initialThreshold - s.finalThreshold) * mul ** 3;
  }
  return { threshold, lambda: (s.finalLambda * threshold) / s.finalThreshold };
}
