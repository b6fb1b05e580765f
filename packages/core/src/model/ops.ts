import { tf, type Tensor } from '../tf.js';
import { fusedAttention, fusedDropout, fusedGelu, fusedLayerNorm, fusedLinear, fusedScaledSoftmax } from '../backend/fused.js';

/** Shape checks that name the argument, so a wrong mask says which one. */
export function expectShape(name: string, t: Tensor, shape: number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`${name}: expected shape [${shape.join(', ')}], got [${t.shape.join(', ')}]`);
  }
}

/** y = x W + b with x [..., in], W stored [in, out] (no transposes on the hot path; the bias in the GEMM when fused). */
export function linear(x: Tensor, w: Tensor, b: Tensor | undefined, name = 'linear'): Tensor {
  const inDim = x.shape[x.shape.length - 1]!;
  if (w.shape[0] !== inDim) throw new Error(`${name}: input has ${inDim} features, weight expects ${w.shape[0]}`);
  const lead = x.shape.slice(0, -1);
  const x2 = x.reshape([-1, inDim]);
  const fused = b ? fusedLinear(x2, w, b) : undefined;
  const y2 = fused ?? tf.matMul(x2, w as tf.Tensor2D);
  const y = b && !fused ? tf.add(y2, b) : y2;
  return y.reshape([...lead, w.shape[1]!]);
}

const SQRT1_2 = Math.SQRT1_2;
/**
 * Exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as Hugging Face's "gelu". One fused kernel
 * each way when the native kernels are registered (`backend/fused.ts`), else tfjs ops.
 */
export function gelu(x: Tensor): Tensor {
  return fusedGelu(x) ?? tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, SQRT1_2))));
}

/** GELU's tanh approximation, Hugging Face's "gelu_new" (ALBERT): 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))). */
export function geluNew(x: Tensor): Tensor {
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3))))))));
}

/**
 * LayerNorm over the last axis. With `keep` (a 0/1 vector over the last axis) it normalizes the kept
 * entries over the kept entries only and leaves the dropped ones 0, which is what a pruned hidden
 * dimension means (CoFi's LayerNorm with a hidden mask).
 */
export function layerNorm(x: Tensor, gamma: Tensor, beta: Tensor, eps: number, keep?: Tensor, keptCount?: number): Tensor {
  if (!keep) {
    const fused = fusedLayerNorm(x, gamma, beta, eps);
    if (fused) return fused;
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, eps))), gamma), beta);
  }
  const n = keptCount ?? tf.sum(keep).arraySync() as number;
  const mean = tf.div(tf.sum(tf.mul(x, keep), -1, true), n);
  const centered = tf.mul(tf.sub(x, mean), keep);
  const variance = tf.div(tf.sum(tf.square(centered), -1, true), n);
  const normed = tf.div(centered, tf.sqrt(tf.add(variance, eps)));
  return tf.mul(tf.add(tf.mul(normed, gamma), beta), keep);
}

/** `layerNorm(tf.add(x, res), gamma, beta, eps)` (a residual add then LayerNorm), fused when registered. */
export function addLayerNorm(x: Tensor, res: Tensor, gamma: Tensor, beta: Tensor, eps: number): Tensor {
  return fusedLayerNorm(x, gamma, beta, eps, res) ?? layerNorm(tf.add(x, res), gamma, beta, eps);
}

/**
 * Attention probabilities `softmax(scores * scale + mask)` over the last axis, `scores`
 * `[batch, heads, seq, seq]` and `mask` an additive `[batch, seq]` (0 attended, large negative
 * padded). One fused kernel each way when registered, else tfjs ops.
 */
export function scaledMaskedSoftmax(scores: Tensor, scale: number, mask: Tensor): Tensor {
  const [B, , , T] = scores.shape;
  return fusedScaledSoftmax(scores, scale, mask) ?? tf.softmax(tf.add(tf.mul(scores, scale), mask.reshape([B!, 1, 1, T!])), -1);
}

/**
 * Multi-head attention's core on `[B, T, heads * d]` queries, keys and values: per head,
 * `dropout(softmax(q k^T / sqrt(d) + mask)) v`, returned as `[B, T, heads * d]` (heads merged).
 * `mask` is an additive `[B, T]` over keys; `dropout.seed` gives `tf.dropout`'s mask on the
 * `[B, heads, T, T]` probabilities. One native kernel each way when registered (no head split or
 * merge), else the split, two batched products and the merge in tfjs ops.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, heads: number, mask: Tensor, dropoutSpec?: { rate: number; seed: number }): Tensor {
  const [B, T, A] = q.shape as [number, number, number];
  const d = A / heads;
  const scale = 1 / Math.sqrt(d);
  const fused = fusedAttention(q, k, v, heads, scale, mask, dropoutSpec);
  if (fused) return fused;
  const split = (t: Tensor) => t.reshape([B, T, heads, d]).transpose([0, 2, 1, 3]);
  let probs = scaledMaskedSoftmax(tf.matMul(split(q), split(k), false, true), scale, mask);
  if (dropoutSpec && dropoutSpec.rate > 0) probs = dropout(probs, dropoutSpec.rate, dropoutSpec.seed);
  return tf.matMul(probs, split(v)).transpose([0, 2, 1, 3]).reshape([B, T, A]);
}

/** `tf.dropout(x, rate, undefined, seed)`: the same mask, in one fused kernel when registered. */
export function dropout(x: Tensor, rate: number, seed: number): Tensor {
  return fusedDropout(x, rate, seed) ?? tf.dropout(x, rate, undefined, seed);
}

/** A small deterministic PRNG (mulberry32) for seeds of dropout and shuffles. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(): number {
    return Math.floor(this.next() * 2 ** 31);
  }
  /** The generator's whole state (one 32-bit word), for checkpoints. */
  get position(): number {
    return this.state;
  }
  set position(state: number) {
    this.state = state >>> 0;
  }
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }
}
