/** The addon's functions. Arrays are float32 views (of tfjs's wasm heap); outputs are written in place. */
export interface NativeKernels {
  /**
   * C = op(A) x op(B) (+ bias row) for `batch` row-major float32 products; `batchA`/`batchB` are
   * `batch` or 1 (broadcast). op(A) is m x k (stored k x m when `transA`), op(B) is k x n (stored
   * n x k when `transB`).
   */
  gemm(a: Float32Array, b: Float32Array, c: Float32Array, batch: number, batchA: number, batchB: number, m: number, n: number, k: number, transA: boolean, transB: boolean, bias?: Float32Array | null): void;
  gelu(x: Float32Array, y: Float32Array): void;
  geluGrad(x: Float32Array, dy: Float32Array, dx: Float32Array): void;
  /** LayerNorm over rows of `cols`, of x + res when `res` is given. */
  layerNorm(x: Float32Array, res: Float32Array | null, gamma: Float32Array, beta: Float32Array, y: Float32Array, mean: Float32Array, rstd: Float32Array, rows: number, cols: number, eps: number): void;
  layerNormGrad(dy: Float32Array, x: Float32Array, res: Float32Array | null, gamma: Float32Array, mean: Float32Array, rstd: Float32Array, dx: Float32Array, dgamma: Float32Array, dbeta: Float32Array, rows: number, cols: number): void;
  /** softmax(scale * s + mask) over rows of `cols`; mask row g applies to rows [g * rowsPerMask, (g + 1) * rowsPerMask). */
  softmax(s: Float32Array, mask: Float32Array | null, y: Float32Array, rows: number, cols: number, rowsPerMask: number, scale: number): void;
  softmaxGrad(y: Float32Array, dy: Float32Array, ds: Float32Array, rows: number, cols: number, scale: number): void;
  adamw(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, pOut: Float32Array, mOut: Float32Array, vOut: Float32Array, lr: number, beta1: number, beta2: number, eps: number, bc1: number, bc2: number, decay: number, sign: number): void;
  /** op 0 add, 1 sub, 2 mul, 3 div; mode 0 same shape, 1 b repeats every `inner`, 2 a repeats, 3 b is one value per row of `inner`, 4 a is. */
  binary(op: number, mode: number, a: Float32Array, b: Float32Array, out: Float32Array, inner: number): void;
  colSum(x: Float32Array, out: Float32Array, rows: number, cols: number): void;
  sumSquares(x: Float32Array): number;
  /** out[a, c, b, :] = x[a, b, c, :] */
  transpose0213(x: Float32Array, out: Float32Array, a: number, b: number, c: number, d: number): void;
  /** tf.dropout's multiplier from Alea state (s0, s1, s2, c) into `mult`, and y = x * mult; with x and y null, the multiplier alone. */
  dropout(x: Float32Array | null, y: Float32Array | null, mult: Float32Array, keep: number, s0: number, s1: number, s2: number, c: number): void;
  /** ctx = (softmax(scale q k^T + mask) * mult) v per example and head; q, k, v, ctx [batch, seq, heads * headSize], probs and mult [batch, heads, seq, seq], mask [batch, seq]. */
  attention(q: Float32Array, k: Float32Array, v: Float32Array, mask: Float32Array | null, mult: Float32Array | null, probs: Float32Array, ctx: Float32Array, batch: number, seq: number, heads: number, headSize: number, scale: number): void;
  attentionGrad(dctx: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, probs: Float32Array, mult: Float32Array | null, dq: Float32Array, dk: Float32Array, dv: Float32Array, batch: number, seq: number, heads: number, headSize: number, scale: number): void;
  /** Worker threads per kernel call (default: online CPUs, at most 16); returns the value set. */
  setThreads(threads: number): number;
  readonly threads: number;
}
export declare const binding: NativeKernels | undefined;
export declare const loadError: string | undefined;
