export interface NativeGemm {
  /**
   * C = op(A) x op(B) for `batch` row-major float32 products; `batchA`/`batchB` are `batch` or 1
   * (broadcast). op(A) is m x k (stored k x m when `transA`), op(B) is k x n (stored n x k when `transB`).
   */
  gemm(a: Float32Array, b: Float32Array, c: Float32Array, batch: number, batchA: number, batchB: number, m: number, n: number, k: number, transA: boolean, transB: boolean): void;
  /** Worker threads per product (default: online CPUs, at most 16); returns the value set. */
  setThreads(threads: number): number;
  readonly threads: number;
}
export declare const binding: NativeGemm | undefined;
export declare const loadError: string | undefined;
