import { createRequire } from 'node:module';
import type { NativeKernels } from '@topiary/native';
import { tf } from '../tf.js';
import { BINARY_KERNELS, fusedKernels, hasFused, nativeBinary, nativeTranspose, sharingCast, sharingIdentity, type NativeFused } from './native-kernels.js';

const util = tf.util;

/** The optional native GEMM (`@topiary/native`), when it is installed and built (an older build may have only this). */
type NativeGemm = Pick<NativeKernels, 'gemm' | 'threads'>;
let nativeState: { binding?: NativeGemm; reason?: string } | undefined;
/** Loads `@topiary/native` once; a missing or unbuilt package is not an error (wasm kernels are used). */
export function nativeGemm(): { binding?: NativeGemm; reason?: string } {
  if (!nativeState) {
    try {
      const mod = createRequire(import.meta.url)('@topiary/native') as { binding?: NativeGemm; loadError?: string };
      nativeState = mod.binding ? { binding: mod.binding } : { reason: mod.loadError ?? 'not built' };
    } catch {
      nativeState = { reason: 'the optional package @topiary/native is not installed' };
    }
  }
  return nativeState;
}

/**
 * Replacement kernels for the wasm backend, registered when it is activated.
 *
 * - `UnsortedSegmentSum` is missing from tfjs-backend-wasm, and the gradient of `gather` (every
 *   embedding lookup) needs it: without it, training with trainable embeddings fails on wasm.
 * - `BatchMatMul` with `transposeA`/`transposeB` runs 10-45x slower in wasm's XNNPACK path than
 *   without, and every backward pass of a linear layer uses it. With `@topiary/native` it goes
 *   through the native GEMM on the wasm heap; without, transposing explicitly first and calling the
 *   untransposed kernel is much faster (see `npm run bench`), and batched products go matrix by
 *   matrix through the fast single-matrix path.
 * - Row `GatherV2` (embedding lookups) and `Sum` over leading axes (bias gradients) are much faster
 *   as plain loops (`Sum` as the native column sum with the addon).
 * - `Identity` (the tape saves every tensor a gradient needs through it) and a `Cast` to the same
 *   dtype copy their input on wasm; they share the data instead, as wasm's `Reshape` and the cpu
 *   backend do (tensors are immutable). In a bert-mini training step this removed ~530 copies.
 * - With the native addon (`native-kernels.ts`, `csrc/fused.c`): `Add`, `Sub`, `Multiply` and
 *   `RealDiv` on float32 with the same shape, a suffix broadcast (bias row, scalar) or a per-row
 *   broadcast on either side, multi-threaded; other layouts stay with wasm. `Transpose` with perm
 *   [0, 2, 1, 3] (attention's head split and merge) as row copies. And Topiary's fused
 *   kernels, which `fused.ts` calls through `tf.customGrad` from the model and the optimizer:
 *   `TopiaryLinear` (GEMM with the bias added in its store), `TopiaryGelu`/`TopiaryGeluGrad`, `TopiaryLayerNorm`/`TopiaryLayerNormGrad` (optionally of a residual sum), `TopiarySoftmax`/
 *   `TopiarySoftmaxGrad` (attention: scale, additive padding mask, softmax), `TopiaryDropout` (the
 *   mask of `tf.dropout` with the same seed), `TopiarySumSquares` (gradient clipping's norm) and
 *   `TopiaryAdamW` (one pass per parameter). Without
 *   them (`TOPIARY_NATIVE=0`, `TOPIARY_FUSED=0`, an unbuilt addon, other backends) the model runs
 *   the same functions as tfjs ops.
 */

type KernelFunc = tf.KernelConfig['kernelFunc'];
interface WasmBackend {
  readSync(dataId: unknown): tf.backend_util.BackendValues;
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): tf.backend_util.TypedArray;
  disposeData(dataId: unknown): boolean;
}

/** Sums rows of `x` into `numSegments` buckets by `segmentIds` (negative or out-of-range ids are dropped, as in TF). */
const unsortedSegmentSumWasm: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const { numSegments } = attrs as unknown as { numSegments: number };
  const wasm = backend as unknown as WasmBackend;
  const ids = wasm.readSync(segmentIds.dataId) as ArrayLike<number>;
  const idCount = ids.length;
  const inner = idCount === 0 ? 0 : util.sizeFromShape(x.shape) / idCount;
  // The ids index x's leading axes: the output keeps the rest. (Inferring how many axes from the id
  // count went wrong for one id, x = [1, ...]: the output kept the 1, and gather's gradient failed.)
  const rank = segmentIds.shape.length;
  // Accumulate straight into the (zeroed) output on the heap: the embedding gradient is large.
  const out = wasm.makeOutput([numSegments, ...x.shape.slice(rank)], 'float32');
  const dst = wasm.typedArrayFromHeap(out) as Float32Array;
  const src = wasm.typedArrayFromHeap(x) as Float32Array;
  dst.fill(0);
  for (let i = 0; i < idCount; i++) {
    const s = ids[i]!;
    if (s < 0 || s >= numSegments) continue;
    const o = s * inner;
    const p = i * inner;
    for (let j = 0; j < inner; j++) dst[o + j]! += src[p + j]!;
  }
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

/** The product through the native GEMM, on the wasm heap; undefined when the layout is not one it takes. */
function nativeMatMul(backend: WasmBackend, gemm: NativeGemm, a: tf.TensorInfo, b: tf.TensorInfo, transposeA: boolean, transposeB: boolean): tf.TensorInfo | undefined {
  const r = a.shape.length;
  if (r < 2 || b.shape.length !== r || a.dtype !== 'float32' || b.dtype !== 'float32') return undefined;
  const batchA = a.shape.slice(0, r - 2);
  const batchB = b.shape.slice(0, r - 2);
  const size = (s: number[]) => s.reduce((x, y) => x * y, 1);
  const outBatch = size(batchA) >= size(batchB) ? batchA : batchB;
  const ok = (s: number[]) => size(s) === 1 || s.every((d, i) => d === outBatch[i]);
  if (!ok(batchA) || !ok(batchB)) return undefined;
  const m = transposeA ? a.shape[r - 1]! : a.shape[r - 2]!;
  const k = transposeA ? a.shape[r - 2]! : a.shape[r - 1]!;
  const n = transposeB ? b.shape[r - 2]! : b.shape[r - 1]!;
  const out = backend.makeOutput([...outBatch, m, n], 'float32');
  // Views taken after the allocation: growing the heap detaches earlier ones.
  gemm.gemm(
    backend.typedArrayFromHeap(a) as Float32Array,
    backend.typedArrayFromHeap(b) as Float32Array,
    backend.typedArrayFromHeap(out) as Float32Array,
    size(outBatch), size(batchA), size(batchB), m, n, k, transposeA, transposeB,
  );
  return out;
}

function wrapBatchMatMul(original: KernelFunc, transpose: KernelFunc, gemm?: NativeGemm): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const wasm = backend as unknown as WasmBackend;
    const viaNative = gemm && nativeMatMul(wasm, gemm, a, b, transposeA, transposeB);
    if (viaNative) return viaNative;
    const a2 = transposeA ? transposeLastTwo(wasm, transpose, a) : a;
    const b2 = transposeB ? transposeLastTwo(wasm, transpose, b) : b;
    const plain = { ...attrs, transposeA: false, transposeB: false };
    const out = perMatrix(wasm, original, a2, b2, plain) ?? (original({ inputs: { a: a2, b: b2 }, backend, attrs: plain }) as tf.TensorInfo);
    if (a2 !== a) wasm.disposeData(a2.dataId);
    if (b2 !== b) wasm.disposeData(b2.dataId);
    return out;
  };
}

/**
 * `sum` over leading axes (bias gradients: `[tokens, width]` summed over tokens) as a row-by-row
 * accumulation (the native column sum with the addon); wasm transposes first and is several times
 * slower. Other reductions go to wasm.
 */
function wrapSum(original: KernelFunc, native?: NativeFused): KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
    const rank = x.shape.length;
    const axes = (Array.isArray(axis) ? axis : [axis]).map((a) => (a < 0 ? a + rank : a)).sort((p, q) => p - q);
    const prefix = axes.length > 0 && axes.length < rank && axes.every((a, i) => a === i);
    if (!prefix || x.dtype !== 'float32') return original(args);
    const wasm = args.backend as unknown as WasmBackend;
    const rest = x.shape.slice(axes.length);
    const cols = rest.reduce((p, q) => p * q, 1);
    const rows = x.shape.slice(0, axes.length).reduce((p, q) => p * q, 1);
    const out = wasm.makeOutput(keepDims ? [...axes.map(() => 1), ...rest] : rest, 'float32');
    // Heap views only after the last allocation: growing the heap detaches older ones.
    const src = wasm.typedArrayFromHeap(x) as Float32Array;
    if (native) {
      native.colSum(src, wasm.typedArrayFromHeap(out) as Float32Array, rows, cols);
      return out;
    }
    const acc = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      for (let c = 0; c < cols; c++) acc[c]! += src[o + c]!;
    }
    (wasm.typedArrayFromHeap(out) as Float32Array).set(acc);
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
    // Rows are moved with copyWithin on one view of the whole heap: a subarray per row (an object
    // each) made an embedding lookup of 2,048 rows take 1 ms.
    const heap = new Float32Array(src.buffer);
    const from = src.byteOffset / 4;
    const to = dst.byteOffset / 4;
    for (let i = 0; i < idx.length; i++) {
      const r = idx[i]!;
      if (!(r >= 0 && r < rows)) throw new Error(`gather: index ${r} is not in [0, ${rows - 1}]`);
      heap.copyWithin(to + i * width, from + r * width, from + (r + 1) * width);
    }
    return out;
  };
}

/**
 * Registers the wasm kernels once; returns the names of the kernels added or replaced.
 * `UnsortedSegmentSum` is always added (training needs it); the others only when `fast` is set, so a
 * benchmark can measure the difference side by side: `BatchMatMul`, `GatherV2`, `Sum`, and the
 * copy-free `Identity` and same-dtype `Cast`; with `useNative`, `BatchMatMul` through the native
 * GEMM; with `fused` (native only; `TOPIARY_FUSED=0` turns it off), native `Add`/`Sub`/`Multiply`/
 * `RealDiv` and the fused `Topiary*` kernels of `native-kernels.ts` (GELU, LayerNorm, scaled masked
 * softmax, AdamW) that `fused.ts` uses.
 */
export function accelerateWasm(
  fast = accelerationEnabled(),
  useNative = fast && process.env['TOPIARY_NATIVE'] !== '0',
  fused = useNative && process.env['TOPIARY_FUSED'] !== '0',
): string[] {
  const gemm = useNative ? nativeGemm().binding : undefined;
  const native = fused && hasFused(gemm) ? (gemm as unknown as NativeFused) : undefined;
  if (!tf.getKernel('UnsortedSegmentSum', 'wasm')) {
    tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: unsortedSegmentSumWasm });
  }
  const names = ['UnsortedSegmentSum'];
  const replacements: Partial<Record<string, (original: KernelFunc) => KernelFunc>> = {
    // wasm's own Transpose (not a replacement registered by an earlier call).
    BatchMatMul: (original) => wrapBatchMatMul(original, replaced.get('Transpose')?.original ?? tf.getKernel('Transpose', 'wasm')!.kernelFunc, gemm),
    GatherV2: (original) => wrapGather(original),
    Sum: (original) => wrapSum(original, native),
    Identity: (original) => sharingIdentity(original),
    Cast: (original) => sharingCast(original),
  };
  if (native) for (const name of BINARY_KERNELS) replacements[name] = (original) => nativeBinary(name, native, original);
  if (native) replacements['Transpose'] = (original) => nativeTranspose(native, original);
  for (const name of ['BatchMatMul', 'GatherV2', 'Sum', 'Identity', 'Cast', ...BINARY_KERNELS, 'Transpose']) {
    const current = tf.getKernel(name, 'wasm');
    if (!current) continue;
    // Always rebuild from the original kernel, so switching modes (benchmarks) takes effect.
    const prior = replaced.get(name);
    const original = prior && current.kernelFunc === prior.kernelFunc ? prior.original : current.kernelFunc;
    tf.unregisterKernel(name, 'wasm');
    const make = replacements[name];
    const kernelFunc = fast && make ? make(original) : original;
    replaced.set(name, { original, kernelFunc });
    tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc });
    if (fast && make) names.push(name === 'BatchMatMul' && gemm ? `BatchMatMul (native GEMM, ${gemm.threads} threads)` : native && [...BINARY_KERNELS, 'Sum', 'Transpose'].includes(name) ? `${name} (native)` : name);
  }
  // Topiary's own fused kernels exist only with the native addon; unregistered, fused.ts falls back to tfjs ops.
  const kernels: Partial<Record<string, KernelFunc>> = native && fast ? fusedKernels(native) : {};
  for (const name of FUSED_KERNEL_NAMES) {
    if (tf.getKernel(name, 'wasm')) tf.unregisterKernel(name, 'wasm');
    const kernelFunc = kernels[name];
    if (kernelFunc) {
      tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc });
      names.push(name);
    }
  }
  return names;
}

/** The fused kernels `native-kernels.ts` provides (registered only with the native addon). */
export const FUSED_KERNEL_NAMES = ['TopiaryLinear', 'TopiaryGelu', 'TopiaryGeluGrad', 'TopiaryLayerNorm', 'TopiaryLayerNormGrad', 'TopiarySoftmax', 'TopiarySoftmaxGrad', 'TopiaryDropout', 'TopiaryDropoutMask', 'TopiaryAttention', 'TopiaryAttentionGrad', 'TopiarySumSquares', 'TopiaryAdamW', 'TopiaryAdamWOffHeap'];

/** Kernels replaced on wasm: the original (to restore) and the replacement. */
const replaced = new Map<string, { original: KernelFunc; kernelFunc: KernelFunc }>();

/** Whether the faster kernels are enabled (`TOPIARY_NO_ACCELERATE=1` turns it off, for benchmarks). */
export function accelerationEnabled(): boolean {
  return process.env['TOPIARY_NO_ACCELERATE'] !== '1';
}
