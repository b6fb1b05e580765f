import { tf } from '../tf.js';

/**
 * Replacement kernels for the wasm backend, registered when it is activated.
 *
 * - `UnsortedSegmentSum` is missing from tfjs-backend-wasm, and the gradient of `gather` (every
 *   embedding lookup) needs it: without it, training with trainable embeddings fails on wasm.
 * - `BatchMatMul` with `transposeA`/`transposeB` runs 10-45x slower in wasm's XNNPACK path than
 *   without, and every backward pass of a linear layer uses it. Transposing explicitly first and
 *   calling the untransposed kernel is much faster (see `npm run bench`); batched products go
 *   matrix by matrix through the fast single-matrix path.
 * - Row `GatherV2` (embedding lookups) is much faster as plain row copies.
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

/** Copies `count` floats from one wasm tensor to another (views re-read: allocation may grow the heap). */
function copyHeap(backend: WasmBackend, from: tf.TensorInfo, fromOffset: number, to: tf.TensorInfo, toOffset: number, count: number): void {
  const src = backend.typedArrayFromHeap(from) as Float32Array;
  const dst = backend.typedArrayFromHeap(to) as Float32Array;
  dst.set(src.subarray(fromOffset, fromOffset + count), toOffset);
}

/**
 * wasm multiplies batched matrices (attention's `[batch, heads, seq, seq]` products) with a slow
 * generic loop, at a fraction of its single-matrix speed; multiplying each matrix of the batch
 * through the fast single-matrix path is several times faster.
 */
function perMatrix(backend: WasmBackend, original: KernelFunc, a: tf.TensorInfo, b: tf.TensorInfo, attrs: tf.NamedAttrMap): tf.TensorInfo | undefined {
  const r = a.shape.length;
  if (r < 3 || b.shape.length !== r || a.dtype !== 'float32' || b.dtype !== 'float32') return undefined;
  const batchShape = a.shape.slice(0, r - 2);
  if (batchShape.some((d, i) => d !== b.shape[i])) return undefined; // broadcasting: leave to wasm
  const batches = batchShape.reduce((x, y) => x * y, 1);
  if (batches === 1) return undefined;
  const [m, k] = a.shape.slice(r - 2) as [number, number];
  const n = b.shape[r - 1]!;
  const out = backend.makeOutput([...batchShape, m, n], 'float32');
  const kb = backend as unknown as tf.KernelBackend;
  for (let i = 0; i < batches; i++) {
    const ai = backend.makeOutput([1, m, k], 'float32');
    copyHeap(backend, a, i * m * k, ai, 0, m * k);
    const bi = backend.makeOutput([1, k, n], 'float32');
    copyHeap(backend, b, i * k * n, bi, 0, k * n);
    const ri = original({ inputs: { a: ai, b: bi }, backend: kb, attrs: { ...attrs, transposeA: false, transposeB: false } }) as tf.TensorInfo;
    copyHeap(backend, ri, 0, out, i * m * n, m * n);
    backend.disposeData(ai.dataId);
    backend.disposeData(bi.dataId);
    backend.disposeData(ri.dataId);
  }
  return out;
}

function wrapBatchMatMul(original: KernelFunc, transpose: KernelFunc): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const wasm = backend as unknown as WasmBackend;
    const a2 = transposeA ? transposeLastTwo(wasm, transpose, a) : a;
    const b2 = transposeB ? transposeLastTwo(wasm, transpose, b) : b;
    const plain = { ...attrs, transposeA: false, transposeB: false };
    const out = perMatrix(wasm, original, a2, b2, plain) ?? (original({ inputs: { a: a2, b: b2 }, backend, attrs: plain }) as tf.TensorInfo);
    if (a2 !== a) wasm.disposeData(a2.dataId);
    if (b2 !== b) wasm.disposeData(b2.dataId);
    return out;
  };
}

/** Row gather (`gather(x, indices)` on axis 0, as embedding lookups do) as plain row copies; otherwise wasm's own. */
function wrapGather(original: KernelFunc): KernelFunc {
  return (args) => {
    const { x, indices } = args.inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
    const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims: number };
    if (axis !== 0 || batchDims !== 0 || x.dtype !== 'float32' || x.shape.length !== 2) return original(args);
    const wasm = args.backend as unknown as WasmBackend;
    const rows = x.shape[0]!;
    const width = x.shape[1]!;
    const out = wasm.makeOutput([...indices.shape, width], 'float32');
    const idx = wasm.typedArrayFromHeap(indices) as Int32Array;
    const src = wasm.typedArrayFromHeap(x) as Float32Array;
    const dst = wasm.typedArrayFromHeap(out) as Float32Array;
    for (let i = 0; i < idx.length; i++) {
      const r = idx[i]!;
      if (!(r >= 0 && r < rows)) throw new Error(`gather: index ${r} is not in [0, ${rows - 1}]`);
      dst.set(src.subarray(r * width, (r + 1) * width), i * width);
    }
    return out;
  };
}

/**
 * Registers the wasm kernels once; returns the names of the kernels added or replaced.
 * `UnsortedSegmentSum` is always added (training needs it); the faster `BatchMatMul` and
 * `GatherV2` only when `fast` is set, so a benchmark can measure the difference side by side.
 */
export function accelerateWasm(fast = accelerationEnabled()): string[] {
  if (!tf.getKernel('UnsortedSegmentSum', 'wasm')) {
    tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: unsortedSegmentSumWasm });
  }
  const names = ['UnsortedSegmentSum'];
  const replacements: Record<string, (original: KernelFunc) => KernelFunc> = {
    BatchMatMul: (original) => wrapBatchMatMul(original, tf.getKernel('Transpose', 'wasm')!.kernelFunc),
    GatherV2: (original) => wrapGather(original),
  };
  for (const [name, make] of Object.entries(replacements)) {
    const current = tf.getKernel(name, 'wasm');
    if (!current) continue;
    const isReplaced = replaced.has(name) && current.kernelFunc === replaced.get(name)!.kernelFunc;
    if (fast !== isReplaced) {
      tf.unregisterKernel(name, 'wasm');
      if (fast) {
        const kernelFunc = make(current.kernelFunc);
        replaced.set(name, { original: current.kernelFunc, kernelFunc });
        tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc });
      } else {
        tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: replaced.get(name)!.original });
      }
    }
    if (fast) names.push(name);
  }
  return names;
}

/** Kernels replaced on wasm: the original (to restore) and the replacement. */
const replaced = new Map<string, { original: KernelFunc; kernelFunc: KernelFunc }>();

/** Whether the faster kernels are enabled (`TOPIARY_NO_ACCELERATE=1` turns it off, for benchmarks). */
export function accelerationEnabled(): boolean {
  return process.env['TOPIARY_NO_ACCELERATE'] !== '1';
}
