import { tf, type Tensor } from '../tf.js';

/**
 * Fused operations: one kernel forward and one backward (through `tf.customGrad`) instead of the
 * chains of small elementwise kernels tfjs would run. Each returns undefined when its kernels are not
 * registered on the active backend (no native addon, another backend, `TOPIARY_NATIVE=0`); callers
 * then compute the same function with plain tfjs ops (see `model/ops.ts`).
 */

const engine = () => tf.engine();
function available(...kernels: string[]): boolean {
  const backend = tf.getBackend();
  return kernels.every((k) => tf.getKernel(k, backend) !== undefined);
}
const run = (name: string, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap = {}) =>
  engine().runKernel(name, inputs, attrs) as unknown as Tensor | Tensor[];

const geluOp = tf.customGrad(((x: Tensor, save: tf.GradSaveFunc) => {
  save([x]);
  return {
    value: run('TopiaryGelu', { x }) as Tensor,
    gradFunc: (dy: Tensor, saved: Tensor[]) => run('TopiaryGeluGrad', { x: saved[0]!, dy }) as Tensor,
  };
}) as unknown as (...args: Array<Tensor | tf.GradSaveFunc>) => { value: Tensor; gradFunc: (dy: Tensor, saved: Tensor[]) => Tensor | Tensor[] });

/**
 * A linear layer `x w + b` (x `[rows, in]`, w `[in, out]`, b `[out]`) with the bias added in the
 * GEMM's store instead of another pass; the backward pass is two products and a column sum.
 */
export function fusedLinear(x: Tensor, w: Tensor, b: Tensor): Tensor | undefined {
  if (x.rank !== 2 || w.rank !== 2 || b.rank !== 1 || x.shape[1] !== w.shape[0] || b.shape[0] !== w.shape[1]) return undefined;
  if ([x, w, b].some((t) => t.dtype !== 'float32') || !available('TopiaryLinear')) return undefined;
  const op = tf.customGrad(((xx: Tensor, ww: Tensor, bb: Tensor, save: tf.GradSaveFunc) => {
    save([xx, ww]);
    return {
      value: run('TopiaryLinear', { x: xx, w: ww, b: bb }) as Tensor,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sx, sw] = saved as [tf.Tensor2D, tf.Tensor2D];
        const g = dy as tf.Tensor2D;
        return [tf.matMul(g, sw, false, true), tf.matMul(sx, g, true, false), tf.sum(g, 0)];
      },
    };
  }) as unknown as (...args: Array<Tensor | tf.GradSaveFunc>) => { value: Tensor; gradFunc: (dy: Tensor, saved: Tensor[]) => Tensor[] });
  return op(x, w, b);
}

/** Exact GELU, x Phi(x), in one kernel each way. */
export function fusedGelu(x: Tensor): Tensor | undefined {
  if (x.dtype !== 'float32' || !available('TopiaryGelu', 'TopiaryGeluGrad')) return undefined;
  return geluOp(x);
}

/**
 * LayerNorm over the last axis, `(x - mean) / sqrt(var + eps) * gamma + beta`, in one kernel each
 * way; with `res`, of `x + res` (a residual add folded in: the sum is never stored).
 */
export function fusedLayerNorm(x: Tensor, gamma: Tensor, beta: Tensor, eps: number, res?: Tensor): Tensor | undefined {
  const c = x.shape[x.shape.length - 1];
  if (x.dtype !== 'float32' || gamma.dtype !== 'float32' || beta.dtype !== 'float32' || !c || gamma.size !== c || beta.size !== c) return undefined;
  if (res && (res.dtype !== 'float32' || !tf.util.arraysEqual(res.shape, x.shape))) return undefined;
  if (!available('TopiaryLayerNorm', 'TopiaryLayerNormGrad')) return undefined;
  type Fn = (...args: Array<Tensor | tf.GradSaveFunc>) => { value: Tensor; gradFunc: (dy: Tensor, saved: Tensor[]) => Tensor[] };
  const forward = (xx: Tensor, rr: Tensor | undefined, g: Tensor, b: Tensor, save: tf.GradSaveFunc) => {
    const [y, mean, rstd] = run('TopiaryLayerNorm', { x: xx, ...(rr ? { res: rr } : {}), gamma: g, beta: b }, { eps }) as Tensor[];
    save([xx, g, mean!, rstd!, ...(rr ? [rr] : [])]);
    return {
      value: y!,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sx, sg, sm, sr, sres] = saved as [Tensor, Tensor, Tensor, Tensor, Tensor | undefined];
        const [dx, dgamma, dbeta] = run('TopiaryLayerNormGrad', { dy, x: sx, ...(sres ? { res: sres } : {}), gamma: sg, mean: sm, rstd: sr }) as Tensor[];
        // Both addends get the same gradient; a second tensor (sharing the data) so the tape can dispose each.
        return [dx!, ...(sres ? [tf.clone(dx!)] : []), dgamma!.reshape(g.shape), dbeta!.reshape(b.shape)];
      },
    };
  };
  if (res) {
    const op = tf.customGrad(((xx: Tensor, rr: Tensor, g: Tensor, b: Tensor, save: tf.GradSaveFunc) => forward(xx, rr, g, b, save)) as unknown as Fn);
    return op(x, res, gamma, beta);
  }
  const op = tf.customGrad(((xx: Tensor, g: Tensor, b: Tensor, save: tf.GradSaveFunc) => forward(xx, undefined, g, b, save)) as unknown as Fn);
  return op(x, gamma, beta);
}

/**
 * `softmax(scores * scale + mask)` over the last axis, with `mask` an additive `[groups, cols]`
 * matrix whose row `g` applies to the `g`-th consecutive block of rows (attention: `[batch, seq]`
 * over `[batch, heads, seq, seq]` scores), in one kernel each way. No gradient flows to the mask.
 */
export function fusedScaledSoftmax(scores: Tensor, scale: number, mask?: Tensor): Tensor | undefined {
  const cols = scores.shape[scores.shape.length - 1];
  if (scores.dtype !== 'float32' || !cols || !available('TopiarySoftmax', 'TopiarySoftmaxGrad')) return undefined;
  if (mask) {
    const groups = mask.size / cols;
    if (mask.dtype !== 'float32' || mask.shape[mask.shape.length - 1] !== cols || !Number.isInteger(groups) || groups < 1 || (scores.size / cols) % groups !== 0) return undefined;
  }
  const inner = (y: Tensor) => (dy: Tensor) => run('TopiarySoftmaxGrad', { y, dy }, { scale }) as Tensor;
  if (!mask) {
    const op = tf.customGrad(((s: Tensor, save: tf.GradSaveFunc) => {
      const y = run('TopiarySoftmax', { s }, { scale }) as Tensor;
      save([y]);
      return { value: y, gradFunc: (dy: Tensor, saved: Tensor[]) => inner(saved[0]!)(dy) };
    }) as unknown as (...args: Array<Tensor | tf.GradSaveFunc>) => { value: Tensor; gradFunc: (dy: Tensor, saved: Tensor[]) => Tensor });
    return op(scores);
  }
  const op = tf.customGrad(((s: Tensor, m: Tensor, save: tf.GradSaveFunc) => {
    const y = run('TopiarySoftmax', { s, mask: m }, { scale }) as Tensor;
    save([y]);
    return { value: y, gradFunc: (dy: Tensor, saved: Tensor[]) => [inner(saved[0]!)(dy), tf.zerosLike(m)] };
  }) as unknown as (...args: Array<Tensor | tf.GradSaveFunc>) => { value: Tensor; gradFunc: (dy: Tensor, saved: Tensor[]) => Tensor[] });
  return op(scores, mask);
}

/**
 * `tf.dropout(x, rate, undefined, seed)` (the same mask: tfjs's generator continued natively), in one
 * kernel forward and one product backward.
 */
export function fusedDropout(x: Tensor, rate: number, seed: number | string): Tensor | undefined {
  if (x.dtype !== 'float32' || !(rate > 0 && rate < 1) || !available('TopiaryDropout')) return undefined;
  const op = tf.customGrad(((xx: Tensor, save: tf.GradSaveFunc) => {
    const [y, mult] = run('TopiaryDropout', { x: xx }, { rate, seed: String(seed) }) as Tensor[];
    save([mult!]);
    return { value: y!, gradFunc: (dy: Tensor, saved: Tensor[]) => tf.mul(dy, saved[0]!) };
  }) as unknown as (...args: Array<Tensor | tf.GradSaveFunc>) => { value: Tensor; gradFunc: (dy: Tensor, saved: Tensor[]) => Tensor });
  return op(x);
}

/**
 * Attention over `[B, T, heads * d]` queries, keys and values (the linear layers' layout, no head
 * split): `(softmax(scale q k^T + mask) * dropout) v` per example and head, returned as
 * `[B, T, heads * d]`, in one kernel each way. `mask` is an additive `[B, T]` over keys (no
 * gradient); with `dropout`, the probabilities get `tf.dropout`'s mask for that seed and shape
 * `[B, heads, T, T]`.
 */
export function fusedAttention(q: Tensor, k: Tensor, v: Tensor, heads: number, scale: number, mask?: Tensor, dropout?: { rate: number; seed: number }): Tensor | undefined {
  const [B, T, A] = q.shape;
  if (q.rank !== 3 || !tf.util.arraysEqual(k.shape, q.shape) || !tf.util.arraysEqual(v.shape, q.shape) || !(heads > 0) || A! % heads !== 0) return undefined;
  if ([q, k, v, ...(mask ? [mask] : [])].some((t) => t.dtype !== 'float32') || (mask && !tf.util.arraysEqual(mask.shape, [B!, T!]))) return undefined;
  if (!available('TopiaryAttention', 'TopiaryAttentionGrad', 'TopiaryDropoutMask')) return undefined;
  const rate = dropout?.rate ?? 0;
  const mult = rate > 0 ? (run('TopiaryDropoutMask', {}, { shape: [B!, heads, T!, T!], rate, seed: String(dropout!.seed) }) as Tensor) : undefined;
  const extra = { ...(mask ? { mask } : {}), ...(mult ? { mult } : {}) };
  let probs: Tensor | undefined;
  const op = tf.customGrad(((qq: Tensor, kk: Tensor, vv: Tensor, save: tf.GradSaveFunc) => {
    const [ctx, p] = run('TopiaryAttention', { q: qq, k: kk, v: vv, ...extra }, { heads, scale }) as Tensor[];
    probs = p;
    save([qq, kk, vv, probs!, ...(mult ? [mult] : [])]);
    return {
      value: ctx!,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sq, sk, sv, sp, sm] = saved as [Tensor, Tensor, Tensor, Tensor, Tensor | undefined];
        return run('TopiaryAttentionGrad', { dctx: dy, q: sq, k: sk, v: sv, probs: sp, ...(sm ? { mult: sm } : {}) }, { heads, scale }) as Tensor[];
      },
    };
  }) as unknown as (...args: Array<Tensor | tf.GradSaveFunc>) => { value: Tensor; gradFunc: (dy: Tensor, saved: Tensor[]) => Tensor[] });
  const out = op(q, k, v);
  // The tape keeps its own references to what the backward pass needs.
  probs?.dispose();
  mult?.dispose();
  return out;
}

/** `sum(square(x))` over every element in one pass (double accumulation), as a scalar; no gradient. */
export function fusedSumSquares(x: Tensor): Tensor | undefined {
  if (x.dtype !== 'float32' || !available('TopiarySumSquares')) return undefined;
  return run('TopiarySumSquares', { x }) as Tensor;
}

export interface AdamWStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Bias corrections 1 - beta^t. */
  bc1: number;
  bc2: number;
  /** Multiplier of the parameter before the update, 1 - lr * weightDecay. */
  decay: number;
  /** -1 for gradient ascent. */
  sign: 1 | -1;
}

/** One AdamW update of a parameter in one kernel: returns the new parameter, first and second moments. */
export function fusedAdamW(p: Tensor, g: Tensor, m: Tensor, v: Tensor, h: AdamWStep): [Tensor, Tensor, Tensor] | undefined {
  if ([p, g, m, v].some((t) => t.dtype !== 'float32' || t.size !== p.size) || !available('TopiaryAdamW')) return undefined;
  return run('TopiaryAdamW', { p, g, m, v }, { ...h }) as [Tensor, Tensor, Tensor];
}

/** Whether `fusedAdamWOffHeap` can run (the native addon on wasm). */
export function offHeapAdamWAvailable(): boolean {
  return available('TopiaryAdamWOffHeap');
}

/** One AdamW update of a parameter whose moments `m`, `v` live in JS memory (updated in place): returns the new parameter. */
export function fusedAdamWOffHeap(p: Tensor, g: Tensor, m: Float32Array, v: Float32Array, h: AdamWStep): Tensor | undefined {
  if (p.dtype !== 'float32' || g.dtype !== 'float32' || g.size !== p.size || m.length !== p.size || v.length !== p.size || !available('TopiaryAdamWOffHeap')) return undefined;
  return run('TopiaryAdamWOffHeap', { p, g }, { ...h, m, v } as unknown as tf.NamedAttrMap) as Tensor;
}
