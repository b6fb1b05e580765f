import { tf } from '../tf.js';

/**
 * Replacement kernels for the wasm backend, registered when it is activated.
 *
 * - `UnsortedSegmentSum` is missing from tfjs-backend-wasm, and the gradient of `gather` (every
 *   embedding lookup) needs it: without it, training with trainable embeddings fails on wasm.
 * - `BatchMatMul` with `transposeA`/`transposeB` runs 10-45x slower in wasm's XNNPACK path than
 *   without, and every backward pass of a linear layer uses it. Transposing explicitly first and
 *   calling the untransposed kernel is much faster (see `npm run bench`).
 */

type KernelFunc = tf.KernelConfig['kernelFunc'];
interface WasmBackend {
  readSync(dataId: unknown): tf.backend_util.BackendValues;
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): tf.backend_util.TypedArray;
  disposeData(dataId: unknown): boolean;
}

/** Sums rows of `x` into `numSegments` buckets by `segmentIds` (negative or out-of-range ids are dropped, as in TF). */
export function unsortedSegmentSumValues(
  x: ArrayLike<number>,
  xShape: number[],
  segmentIds: ArrayLike<number>,
  numSegments: number,
): { values: Float32Array; shape: number[] } {
  const idCount = segmentIds.length;
  const inner = idCount === 0 ? 0 : x.length / idCount;
  if (!Number.isInteger(inner)) {
    throw new Error(`unsortedSegmentSum: segmentIds (${idCount} ids) must cover leading dims of x (shape [${xShape.join(', ')}])`);
  }
  // segmentIds covers the leading dims of x; the remaining dims are summed element-wise.
  let rank = 0;
  for (let size = 1; rank < xShape.length && size !== idCount; rank++) size *= xShape[rank]!;
  const shape = [numSegments, ...xShape.slice(rank)];
  const values = new Float32Array(numSegments * inner);
  for (let i = 0; i < idCount; i++) {
    const s = segmentIds[i]!;
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) values[dst + j]! += x[src + j]!;
  }
  return { values, shape };
}

const unsortedSegmentSumWasm: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const { numSegments } = attrs as unknown as { numSegments: number };
  const wasm = backend as unknown as WasmBackend;
  const xv = wasm.readSync(x.dataId) as ArrayLike<number>;
  const ids = wasm.readSync(segmentIds.dataId) as ArrayLike<number>;
  const { values, shape } = unsortedSegmentSumValues(xv, x.shape, ids, numSegments);
  const out = wasm.makeOutput(shape, 'float32');
  (wasm.typedArrayFromHeap(out) as Float32Array).set(values);
  return out;
};

function transposeLastTwo(backend: WasmBackend, transpose: KernelFunc, t: tf.TensorInfo): tf.TensorInfo {
  const perm = t.shape.map((_, i) => i);
  const r = perm.length;
  [perm[r - 2], perm[r - 1]] = [perm[r - 1]!, perm[r - 2]!];
  return transpose({ inputs: { x: t }, backend: backend as unknown as tf.KernelBackend, attrs: { perm } }) as tf.TensorInfo;
}

function wrapBatchMatMul(original: KernelFunc, transpose: KernelFunc): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
    if (!transposeA && !transposeB) return original({ inputs, backend, attrs });
    const wasm = backend as unknown as WasmBackend;
    const a2 = transposeA ? transposeLastTwo(wasm, transpose, a) : a;
    const b2 = transposeB ? transposeLastTwo(wasm, transpose, b) : b;
    const out = original({ inputs: { a: a2, b: b2 }, backend, attrs: { ...attrs, transposeA: false, transposeB: false } });
    if (a2 !== a) wasm.disposeData(a2.dataId);
    if (b2 !== b) wasm.disposeData(b2.dataId);
    return out;
  };
}

/**
 * Registers the wasm kernels once; returns the names of the kernels added or replaced.
 * `UnsortedSegmentSum` is always added (training needs it); the faster `BatchMatMul` only when
 * `fastMatMul` is set, so a benchmark can measure the difference side by side.
 */
export function accelerateWasm(fastMatMul = accelerationEnabled()): string[] {
  if (!tf.getKernel('UnsortedSegmentSum', 'wasm')) {
    tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: unsortedSegmentSumWasm });
  }
  const names = ['UnsortedSegmentSum'];
  const current = tf.getKernel('BatchMatMul', 'wasm');
  if (current && fastMatMul !== (current.kernelFunc === wrapped)) {
    tf.unregisterKernel('BatchMatMul', 'wasm');
    if (fastMatMul) {
      originalBatchMatMul = current.kernelFunc;
      const transpose = tf.getKernel('Transpose', 'wasm')!.kernelFunc;
      wrapped = wrapBatchMatMul(originalBatchMatMul, transpose);
      tf.registerKernel({ kernelName: 'BatchMatMul', backendName: 'wasm', kernelFunc: wrapped });
    } else {
      tf.registerKernel({ kernelName: 'BatchMatMul', backendName: 'wasm', kernelFunc: originalBatchMatMul! });
    }
  }
  if (fastMatMul) names.push('BatchMatMul');
  return names;
}

let originalBatchMatMul: KernelFunc | undefined;
let wrapped: KernelFunc | undefined;

/** Whether the faster matMul is enabled (`TOPIARY_NO_ACCELERATE=1` turns it off, for benchmarks). */
export function accelerationEnabled(): boolean {
  return process.env['TOPIARY_NO_ACCELERATE'] !== '1';
}
