import type { NativeKernels } from '@topiary/native';
import { tf } from '../tf.js';

/**
 * Kernels backed by `@topiary/native`'s elementwise and fused functions (`csrc/fused.c`), working on
 * the wasm heap like its GEMM: replacements for wasm's `Add`/`Sub`/`Multiply`/`RealDiv`, and
 * Topiary's own fused kernels (`Topiary*`), which `fused.ts` calls through `tf.customGrad` when they
 * are registered and replaces with the equivalent tfjs ops when they are not. The addon's functions are
 * as `@topiary/native` declares them.
 */
export type NativeFused = NativeKernels;

/** True when a loaded addon has the fused functions (an older build has only the GEMM). */
export function hasFused(binding: unknown): binding is NativeFused {
  const b = binding as Partial<NativeFused> | undefined;
  return !!b && typeof b.gelu === 'function' && typeof b.layerNorm === 'function' && typeof b.adamw === 'function' && typeof b.binary === 'function' && typeof b.softmax === 'function' && typeof b.colSum === 'function' && typeof b.sumSquares === 'function' && typeof b.transpose0213 === 'function' && typeof b.dropout === 'function' && typeof b.attention === 'function' && typeof b.attentionGrad === 'function';
}

type KernelFunc = tf.KernelConfig['kernelFunc'];
type Info = tf.TensorInfo;
interface WasmBackend {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(info: Info): tf.backend_util.TypedArray;
  incRef(dataId: unknown): void;
}

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
/** A float32 view of a tensor on the heap. Take views only after the last allocation of a kernel: growing the heap detaches older ones. */
const view = (b: WasmBackend, t: Info) => b.typedArrayFromHeap(t) as Float32Array;
const wasmOf = (backend: unknown) => backend as WasmBackend;

/**
 * wasm's `Identity` (which the tape calls for every tensor it saves for the backward pass) and a
 * `Cast` to the same dtype copy their input; tfjs tensors are immutable, so sharing the data, as
 * wasm's own `Reshape` and the cpu backend do, is equivalent and free.
 */
export function sharingIdentity(original: KernelFunc): KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: Info };
    if (x.dtype === 'string') return original(args);
    wasmOf(args.backend).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
}

export function sharingCast(original: KernelFunc): KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: Info };
    const { dtype } = args.attrs as unknown as { dtype: tf.DataType };
    if (dtype !== x.dtype || x.dtype === 'string') return original(args);
    wasmOf(args.backend).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
}

const BINARY_OPS = { Add: 0, Sub: 1, Multiply: 2, RealDiv: 3 } as const;
export type BinaryKernel = keyof typeof BINARY_OPS;
export const BINARY_KERNELS = Object.keys(BINARY_OPS) as BinaryKernel[];

/**
 * How a float32 binary op's operands line up with its output, in the layouts the native kernel takes
 * (mode and inner length, see `binary` in fused.c), or undefined for other broadcasts.
 */
export function binaryLayout(aShape: readonly number[], bShape: readonly number[], outShape: readonly number[]): { mode: number; inner: number } | undefined {
  const n = size(outShape);
  const r = outShape.length;
  const pad = (s: readonly number[]) => [...Array<number>(r - s.length).fill(1), ...s];
  const layout = (full: readonly number[], other: readonly number[], suffixMode: number, perRowMode: number) => {
    if (size(full) !== n) return undefined;
    const o = pad(other);
    const no = size(o);
    if (no === n) return { mode: 0, inner: 1 };
    // Suffix broadcast (a bias row, a scalar): the other operand's non-1 dims are the output's last dims.
    let lead = 0;
    while (lead < r && o[lead] === 1) lead++;
    if (o.slice(lead).every((d, i) => d === outShape[lead + i])) return { mode: suffixMode, inner: Math.max(1, no) };
    // Per-row broadcast ([rows, 1] against [rows, cols]): the other operand's dims are the output's, then 1s.
    let tail = r;
    while (tail > 0 && o[tail - 1] === 1) tail--;
    if (tail < r && o.slice(0, tail).every((d, i) => d === outShape[i])) return { mode: perRowMode, inner: n / Math.max(1, no) };
    return undefined;
  };
  return layout(aShape, bShape, 1, 3) ?? layout(bShape, aShape, 2, 4);
}

export function nativeBinary(name: BinaryKernel, native: NativeFused, original: KernelFunc): KernelFunc {
  const op = BINARY_OPS[name];
  return (args) => {
    const { a, b } = args.inputs as { a: Info; b: Info };
    if (a.dtype !== 'float32' || b.dtype !== 'float32') return original(args);
    const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
    const layout = size(outShape) === 0 ? undefined : binaryLayout(a.shape, b.shape, outShape);
    if (!layout) return original(args);
    const wasm = wasmOf(args.backend);
    const out = wasm.makeOutput(outShape, 'float32');
    native.binary(op, layout.mode, view(wasm, a), view(wasm, b), view(wasm, out), layout.inner);
    return out;
  };
}

/**
 * The state of seedrandom's Alea generator after seeding with `seed` (its Mash hash of the string),
 * the generator behind `tf.randomUniform(shape, 0, 1, 'float32', seed)`; the native dropout continues
 * from it with the same arithmetic, so its masks equal `tf.dropout`'s.
 */
export function aleaState(seed: string): { s0: number; s1: number; s2: number; c: number } {
  let n = 0xefc8249d;
  const mash = (data: string) => {
    for (let i = 0; i < data.length; i++) {
      n += data.charCodeAt(i);
      let h = 0.02519603282416938 * n;
      n = h >>> 0;
      h -= n;
      h *= n;
      n = h >>> 0;
      h -= n;
      n += h * 0x100000000;
    }
    return (n >>> 0) * 2.3283064365386963e-10;
  };
  let s0 = mash(' ');
  let s1 = mash(' ');
  let s2 = mash(' ');
  s0 -= mash(seed);
  if (s0 < 0) s0 += 1;
  s1 -= mash(seed);
  if (s1 < 0) s1 += 1;
  s2 -= mash(seed);
  if (s2 < 0) s2 += 1;
  return { s0, s1, s2, c: 1 };
}

/**
 * `Transpose` with perm [0, 2, 1, 3] (attention's head split and merge, when it is not fused) as
 * native row copies, or shared when an axis swapped has size 1; an identity perm shares its input;
 * other perms: wasm's.
 */
export function nativeTranspose(native: NativeFused, original: KernelFunc): KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: Info };
    const { perm } = args.attrs as unknown as { perm: number[] };
    const wasm = wasmOf(args.backend);
    // An identity permutation (tfjs's gather gradient makes two per embedding lookup) is the input.
    if (x.dtype !== 'string' && perm.every((p, i) => p === i)) {
      wasm.incRef(x.dataId);
      return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
    }
    if (x.dtype !== 'float32' || x.shape.length !== 4 || perm.join() !== '0,2,1,3' || size(x.shape) === 0) return original(args);
    const [a, b, c, d] = x.shape as [number, number, number, number];
    // Swapping an axis of size 1 (one head left after compaction) keeps the memory order: share it.
    if (b === 1 || c === 1) {
      wasm.incRef(x.dataId);
      return { dataId: x.dataId, shape: [a, c, b, d], dtype: x.dtype };
    }
    const out = wasm.makeOutput([a, c, b, d], 'float32');
    native.transpose0213(view(wasm, x), view(wasm, out), a, b, c, d);
    return out;
  };
}

/** Topiary's fused kernels on wasm: name -> kernel. Inputs and outputs are float32. */
export function fusedKernels(native: NativeFused): Record<string, KernelFunc> {
  return {
    TopiaryLinear: ({ inputs, backend }) => {
      const { x, w, b } = inputs as { x: Info; w: Info; b: Info };
      const wasm = wasmOf(backend);
      const [rows, k] = x.shape as [number, number];
      const n = w.shape[1]!;
      const y = wasm.makeOutput([rows, n], 'float32');
      native.gemm(view(wasm, x), view(wasm, w), view(wasm, y), 1, 1, 1, rows, n, k, false, false, view(wasm, b));
      return y;
    },
    TopiaryGelu: ({ inputs, backend }) => {
      const { x } = inputs as { x: Info };
      const wasm = wasmOf(backend);
      const y = wasm.makeOutput(x.shape, 'float32');
      native.gelu(view(wasm, x), view(wasm, y));
      return y;
    },
    TopiaryGeluGrad: ({ inputs, backend }) => {
      const { x, dy } = inputs as { x: Info; dy: Info };
      const wasm = wasmOf(backend);
      const dx = wasm.makeOutput(x.shape, 'float32');
      native.geluGrad(view(wasm, x), view(wasm, dy), view(wasm, dx));
      return dx;
    },
    TopiaryLayerNorm: ({ inputs, backend, attrs }) => {
      const { x, res, gamma, beta } = inputs as { x: Info; res?: Info; gamma: Info; beta: Info };
      const { eps } = attrs as unknown as { eps: number };
      const wasm = wasmOf(backend);
      const cols = x.shape[x.shape.length - 1]!;
      const rows = size(x.shape) / cols;
      const y = wasm.makeOutput(x.shape, 'float32');
      const mean = wasm.makeOutput([rows], 'float32');
      const rstd = wasm.makeOutput([rows], 'float32');
      native.layerNorm(view(wasm, x), res ? view(wasm, res) : null, view(wasm, gamma), view(wasm, beta), view(wasm, y), view(wasm, mean), view(wasm, rstd), rows, cols, eps);
      return [y, mean, rstd];
    },
    TopiaryLayerNormGrad: ({ inputs, backend }) => {
      const { dy, x, res, gamma, mean, rstd } = inputs as Record<'dy' | 'x' | 'gamma' | 'mean' | 'rstd', Info> & { res?: Info };
      const wasm = wasmOf(backend);
      const cols = x.shape[x.shape.length - 1]!;
      const rows = size(x.shape) / cols;
      const dx = wasm.makeOutput(x.shape, 'float32');
      const dgamma = wasm.makeOutput(gamma.shape, 'float32');
      const dbeta = wasm.makeOutput(gamma.shape, 'float32');
      native.layerNormGrad(view(wasm, dy), view(wasm, x), res ? view(wasm, res) : null, view(wasm, gamma), view(wasm, mean), view(wasm, rstd), view(wasm, dx), view(wasm, dgamma), view(wasm, dbeta), rows, cols);
      return [dx, dgamma, dbeta];
    },
    TopiarySoftmax: ({ inputs, backend, attrs }) => {
      const { s, mask } = inputs as { s: Info; mask?: Info };
      const { scale } = attrs as unknown as { scale: number };
      const wasm = wasmOf(backend);
      const cols = s.shape[s.shape.length - 1]!;
      const rows = size(s.shape) / cols;
      const groups = mask ? size(mask.shape) / cols : 1;
      const y = wasm.makeOutput(s.shape, 'float32');
      native.softmax(view(wasm, s), mask ? view(wasm, mask) : null, view(wasm, y), rows, cols, Math.max(1, rows / Math.max(1, groups)), scale);
      return y;
    },
    TopiarySoftmaxGrad: ({ inputs, backend, attrs }) => {
      const { y, dy } = inputs as { y: Info; dy: Info };
      const { scale } = attrs as unknown as { scale: number };
      const wasm = wasmOf(backend);
      const cols = y.shape[y.shape.length - 1]!;
      const ds = wasm.makeOutput(y.shape, 'float32');
      native.softmaxGrad(view(wasm, y), view(wasm, dy), view(wasm, ds), size(y.shape) / cols, cols, scale);
      return ds;
    },
    TopiaryDropout: ({ inputs, backend, attrs }) => {
      const { x } = inputs as { x: Info };
      const { rate, seed } = attrs as unknown as { rate: number; seed: string };
      const wasm = wasmOf(backend);
      const y = wasm.makeOutput(x.shape, 'float32');
      const mult = wasm.makeOutput(x.shape, 'float32');
      const st = aleaState(seed);
      native.dropout(view(wasm, x), view(wasm, y), view(wasm, mult), 1 - rate, st.s0, st.s1, st.s2, st.c);
      return [y, mult];
    },
    // tf.dropout's multiplier for `shape` and `seed` (the mask TopiaryDropout would apply), alone.
    TopiaryDropoutMask: ({ backend, attrs }) => {
      const { shape, rate, seed } = attrs as unknown as { shape: number[]; rate: number; seed: string };
      const wasm = wasmOf(backend);
      const mult = wasm.makeOutput(shape, 'float32');
      const st = aleaState(seed);
      native.dropout(null, null, view(wasm, mult), 1 - rate, st.s0, st.s1, st.s2, st.c);
      return mult;
    },
    // Attention on [B, T, heads * d] queries, keys and values: [context, probabilities].
    TopiaryAttention: ({ inputs, backend, attrs }) => {
      const { q, k, v, mask, mult } = inputs as { q: Info; k: Info; v: Info; mask?: Info; mult?: Info };
      const { heads, scale } = attrs as unknown as { heads: number; scale: number };
      const wasm = wasmOf(backend);
      const [B, T, A] = q.shape as [number, number, number];
      const probs = wasm.makeOutput([B, heads, T, T], 'float32');
      const ctx = wasm.makeOutput([B, T, A], 'float32');
      native.attention(view(wasm, q), view(wasm, k), view(wasm, v), mask ? view(wasm, mask) : null, mult ? view(wasm, mult) : null, view(wasm, probs), view(wasm, ctx), B, T, heads, A / heads, scale);
      return [ctx, probs];
    },
    TopiaryAttentionGrad: ({ inputs, backend, attrs }) => {
      const { dctx, q, k, v, probs, mult } = inputs as { dctx: Info; q: Info; k: Info; v: Info; probs: Info; mult?: Info };
      const { heads, scale } = attrs as unknown as { heads: number; scale: number };
      const wasm = wasmOf(backend);
      const [B, T, A] = q.shape as [number, number, number];
      const [dq, dk, dv] = [0, 1, 2].map(() => wasm.makeOutput([B, T, A], 'float32'));
      native.attentionGrad(view(wasm, dctx), view(wasm, q), view(wasm, k), view(wasm, v), view(wasm, probs), mult ? view(wasm, mult) : null, view(wasm, dq!), view(wasm, dk!), view(wasm, dv!), B, T, heads, A / heads, scale);
      return [dq!, dk!, dv!];
    },
    TopiarySumSquares: ({ inputs, backend }) => {
      const { x } = inputs as { x: Info };
      const wasm = wasmOf(backend);
      const out = wasm.makeOutput([], 'float32');
      const total = native.sumSquares(view(wasm, x));
      view(wasm, out)[0] = total;
      return out;
    },
    TopiaryAdamW: ({ inputs, backend, attrs }) => {
      const { p, g, m, v } = inputs as Record<'p' | 'g' | 'm' | 'v', Info>;
      const h = attrs as unknown as { lr: number; beta1: number; beta2: number; eps: number; bc1: number; bc2: number; decay: number; sign: number };
      const wasm = wasmOf(backend);
      const p2 = wasm.makeOutput(p.shape, 'float32');
      const m2 = wasm.makeOutput(p.shape, 'float32');
      const v2 = wasm.makeOutput(p.shape, 'float32');
      native.adamw(view(wasm, p), view(wasm, g), view(wasm, m), view(wasm, v), view(wasm, p2), view(wasm, m2), view(wasm, v2), h.lr, h.beta1, h.beta2, h.eps, h.bc1, h.bc2, h.decay, h.sign);
      return [p2, m2, v2];
    },
    // The same update with the moments in JS memory (attrs `m`, `v`, updated in place: the kernel
    // reads each element before writing it), so that they take no room on the 4 GB heap.
    TopiaryAdamWOffHeap: ({ inputs, backend, attrs }) => {
      const { p, g } = inputs as Record<'p' | 'g', Info>;
      const h = attrs as unknown as { m: Float32Array; v: Float32Array; lr: number; beta1: number; beta2: number; eps: number; bc1: number; bc2: number; decay: number; sign: number };
      const wasm = wasmOf(backend);
      const p2 = wasm.makeOutput(p.shape, 'float32');
      native.adamw(view(wasm, p), view(wasm, g), h.m, h.v, view(wasm, p2), h.m, h.v, h.lr, h.beta1, h.beta2, h.eps, h.bc1, h.bc2, h.decay, h.sign);
      return p2;
    },
  };
}
