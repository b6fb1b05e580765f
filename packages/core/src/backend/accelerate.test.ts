import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../tf.js';
import { useBackend } from './backend.js';
import { accelerateWasm, nativeGemm } from './accelerate.js';

/** Runs `f` on the cpu backend and returns its values, then switches back to wasm. */
async function onCpu(f: () => tf.Tensor): Promise<Float32Array> {
  await tf.setBackend('cpu');
  const t = f();
  const v = t.dataSync() as Float32Array;
  t.dispose();
  await tf.setBackend('wasm');
  return Float32Array.from(v);
}

const rand = (shape: number[], seed: number, lo = -1, hi = 1) => tf.randomUniform(shape, lo, hi, 'float32', seed);

describe('wasm replacement kernels', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('reports the kernels it registered', () => {
    expect(accelerateWasm(true, false)).toEqual(['UnsortedSegmentSum', 'BatchMatMul', 'GatherV2', 'Sum', 'Identity', 'Cast']);
    expect(accelerateWasm(false)).toEqual(['UnsortedSegmentSum']);
  });

  it('unsortedSegmentSum matches the cpu kernel, dropping out-of-range ids', async () => {
    const make = () => tf.unsortedSegmentSum(rand([6, 3, 2], 1), tf.tensor1d([0, 2, 2, -1, 4, 0], 'int32'), 4);
    const want = await onCpu(make);
    const got = make();
    expect(got.shape).toEqual([4, 3, 2]);
    expect(Array.from(got.dataSync())).toEqual(Array.from(want));
    got.dispose();
  });

  it('gives the gradient of gather on wasm, as on cpu', async () => {
    const f = () => tf.grad((t: tf.Tensor) => tf.gather(t, tf.tensor1d([1, 1, 3], 'int32')).mul(rand([3, 5], 2)).sum())(rand([4, 5], 3));
    const want = await onCpu(f);
    const got = f();
    expect(Array.from(got.dataSync())).toEqual(Array.from(want));
    got.dispose();
  });

  const modes = [['JS kernels', false], ...(nativeGemm().binding ? [['native GEMM', true]] : [])] as const;
  for (const [mode, useNative] of modes) for (const [transposeA, transposeB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
    it(`${mode}: batched matMul with transposeA=${transposeA} transposeB=${transposeB} matches cpu`, async () => {
      accelerateWasm(true, useNative);
      const a = () => rand(transposeA ? [2, 7, 5] : [2, 5, 7], 4);
      const b = () => rand(transposeB ? [2, 3, 7] : [2, 7, 3], 5);
      const f = () => tf.tidy(() => tf.matMul(a(), b(), transposeA, transposeB));
      const want = await onCpu(f);
      const before = tf.memory().numTensors;
      const got = f();
      expect(got.shape).toEqual([2, 5, 3]);
      const g = got.dataSync();
      for (let i = 0; i < want.length; i++) expect(g[i]).toBeCloseTo(want[i]!, 5);
      got.dispose();
      // The explicit transposes are freed inside the kernel: nothing leaks.
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  for (const [mode, useNative] of modes) it(`${mode}: attention-shaped and broadcast matMuls (rank 4 and 3, every transpose) match cpu`, async () => {
    accelerateWasm(true, useNative);
    const broadcast = () => tf.tidy(() => tf.matMul(rand([3, 37, 70], 9), rand([1, 70, 45], 10)));
    const wantB = await onCpu(broadcast);
    const gotB = broadcast();
    expect(gotB.shape).toEqual([3, 37, 45]);
    const gb = gotB.dataSync();
    for (let i = 0; i < wantB.length; i++) expect(gb[i]).toBeCloseTo(wantB[i]!, 4);
    gotB.dispose();
    for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
      const f = () => tf.tidy(() => tf.matMul(rand(ta ? [3, 2, 4, 6] : [3, 2, 6, 4], 6), rand(tb ? [3, 2, 5, 4] : [3, 2, 4, 5], 7), ta, tb));
      const want = await onCpu(f);
      const got = f();
      const g = got.dataSync();
      for (let i = 0; i < want.length; i++) expect(g[i]).toBeCloseTo(want[i]!, 5);
      got.dispose();
    }
  });

  it('sum over leading axes matches cpu, other reductions untouched', async () => {
    for (const [axis, keepDims] of [[0, false], [[0, 1], true], [-1, false], [1, false]] as const) {
      const f = () => tf.tidy(() => tf.sum(rand([5, 4, 3], 11), axis as number | number[], keepDims));
      const want = await onCpu(f);
      const got = f();
      const g = got.dataSync();
      expect(g.length).toBe(want.length);
      for (let i = 0; i < want.length; i++) expect(g[i]).toBeCloseTo(want[i]!, 5);
      got.dispose();
    }
  });

  it('row gather matches cpu and rejects an out-of-range index naming it', async () => {
    const f = () => tf.tidy(() => tf.gather(rand([10, 3], 8), tf.tensor2d([[1, 9], [0, 1]], [2, 2], 'int32')));
    const want = await onCpu(f);
    const got = f();
    expect(got.shape).toEqual([2, 2, 3]);
    expect(Array.from(got.dataSync())).toEqual(Array.from(want));
    got.dispose();
    expect(() => tf.tidy(() => tf.gather(rand([4, 3], 8), tf.tensor1d([4], 'int32')))).toThrow(/index 4/);
  });
});

/** Runs `f` on cpu and on wasm (as accelerated now): the same shape, values within `atol`, no tensor leaked. */
async function expectAsCpu(label: string, f: () => tf.Tensor, atol = 1e-5): Promise<void> {
  await tf.setBackend('cpu');
  const c = tf.tidy(f);
  const wantShape = c.shape;
  const want = Float32Array.from(c.dataSync() as Float32Array);
  c.dispose();
  await tf.setBackend('wasm');
  const before = tf.memory().numTensors;
  const got = tf.tidy(f);
  expect(got.shape, label).toEqual(wantShape);
  const g = got.dataSync();
  for (let i = 0; i < want.length; i++) expect(Math.abs(g[i]! - want[i]!), `${label} [${i}]`).toBeLessThanOrEqual(atol);
  got.dispose();
  expect(tf.memory().numTensors, label).toBe(before);
}

/**
 * Every kernel Topiary replaces on wasm, on shapes with a leading size 1 and other size-1 axes (a
 * batch of one example, one head, one token, one segment id), in each mode of `accelerateWasm`.
 */
const unitModes = [['JS kernels', false, false], ...(nativeGemm().binding ? [['native GEMM', true, false], ['native GEMM and fused', true, true]] : [])] as const;
describe('wasm replacement kernels on size-1 axes', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });
  afterAll(() => {
    accelerateWasm();
  });

  for (const [mode, useNative, fused] of unitModes) {
    it(`${mode}: UnsortedSegmentSum and the gather gradient with one id or one row`, async () => {
      accelerateWasm(true, useNative, fused);
      for (const [shape, ids, n] of [[[1, 3], [0], 2], [[1, 1, 4], [1], 3], [[1], [0], 1], [[3, 1], [2, 0, 2], 3], [[2, 1, 1], [0, 0], 1]] as const) {
        await expectAsCpu(`unsortedSegmentSum ${shape} ids ${ids}`, () => tf.unsortedSegmentSum(rand([...shape], 21), tf.tensor1d([...ids], 'int32'), n), 0);
      }
      // The [CLS] row of a batch of one (one index), a one-row table, a one-token lookup in 2-d indices.
      for (const [table, idx, idxShape] of [[[4, 5], [2], [1]], [[1, 5], [0, 0], [2]], [[4, 1], [3], [1]], [[6, 3], [5], [1, 1]]] as const) {
        await expectAsCpu(`gather gradient of ${table} at ${idx}`, () => {
          const i = tf.tensor(idx as unknown as number[], [...idxShape], 'int32');
          const w = rand([...idxShape, table[1]], 22);
          return tf.grad((t: tf.Tensor) => tf.gather(t, i).mul(w).sum())(rand([...table], 23));
        }, 0);
      }
    });

    it(`${mode}: BatchMatMul with size-1 batch, rows, columns and inner dimension, every transpose`, async () => {
      accelerateWasm(true, useNative, fused);
      const cases: Array<[number[], number, number, number]> = [[[1], 5, 7, 3], [[1, 1], 4, 6, 5], [[1], 1, 7, 3], [[1], 5, 1, 3], [[1], 5, 7, 1], [[2], 1, 1, 1], [[1, 3], 2, 4, 1], [[], 1, 8, 4], [[], 6, 8, 1]];
      for (const [batch, m, k, n] of cases) for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        await expectAsCpu(`matMul ${batch} ${m}x${k}x${n} ${ta} ${tb}`, () => tf.matMul(rand([...batch, ...(ta ? [k, m] : [m, k])], 24), rand([...batch, ...(tb ? [n, k] : [k, n])], 25), ta, tb), 1e-5);
      }
      // Broadcast batches of size 1 on either side.
      await expectAsCpu('matMul broadcast [1] x [3]', () => tf.matMul(rand([1, 4, 6], 26), rand([3, 6, 2], 27)), 1e-5);
      await expectAsCpu('matMul broadcast [3] x [1]', () => tf.matMul(rand([3, 4, 6], 26), rand([1, 6, 2], 27), false, false), 1e-5);
    });

    it(`${mode}: Sum, GatherV2, Identity, Cast, Add/Sub/Multiply/RealDiv and Transpose with size-1 axes`, async () => {
      accelerateWasm(true, useNative, fused);
      for (const [shape, axis, keepDims] of [[[1, 4], 0, false], [[1, 1, 3], [0, 1], true], [[1, 5, 3], 0, false], [[4, 1], 0, false], [[1], 0, false], [[1, 1], [0], true], [[2, 1, 3], [0, 1], false]] as const) {
        await expectAsCpu(`sum ${shape} axis ${axis}`, () => tf.sum(rand([...shape], 28), axis as number | number[], keepDims), 1e-6);
      }
      for (const [table, idx, idxShape] of [[[1, 3], [0], [1]], [[5, 1], [4, 0], [2]], [[4, 3], [2], [1, 1]], [[1, 1], [0, 0], [1, 2]]] as const) {
        await expectAsCpu(`gather ${table} at ${idx}`, () => tf.gather(rand([...table], 29), tf.tensor(idx as unknown as number[], [...idxShape], 'int32')), 0);
      }
      for (const shape of [[1], [1, 1], [1, 4, 1]]) {
        await expectAsCpu(`identity ${shape}`, () => tf.clone(rand(shape, 30)), 0);
        await expectAsCpu(`cast ${shape}`, () => tf.cast(rand(shape, 30), 'float32'), 0);
      }
      const pairs: Array<[number[], number[]]> = [[[1], [1]], [[1, 1], [1]], [[1, 5], [5]], [[1, 5], [1, 1]], [[1, 1, 5], [1, 1, 5]], [[1, 4, 1], [1, 4, 6]], [[1, 4, 6], [1, 1, 6]], [[1], [3, 4]], [[3, 1], [1, 1]], [[1, 3], [2, 1]]];
      for (const op of [tf.add, tf.sub, tf.mul, tf.div]) for (const [a, b] of pairs) {
        await expectAsCpu(`${op.name} ${a} ${b}`, () => op(rand(a, 31), op === tf.div ? rand(b, 32, 0.5, 2) : rand(b, 32)), 1e-6);
      }
      for (const [shape, perm] of [[[1, 5, 4, 7], [0, 2, 1, 3]], [[1, 1, 1, 7], [0, 2, 1, 3]], [[1, 3, 1, 2], [0, 2, 1, 3]], [[1, 2, 3, 1], [0, 2, 1, 3]], [[1, 5], [0, 1]], [[1, 5], [1, 0]], [[1, 1, 3], [0, 1, 2]], [[1, 3, 1], [2, 1, 0]]] as const) {
        await expectAsCpu(`transpose ${shape} ${perm}`, () => tf.transpose(rand([...shape], 33), [...perm]), 0);
      }
    });
  }
});

/** op(A) x op(B) in double precision, row-major, for checking the native GEMM directly. */
function referenceGemm(a: Float32Array, b: Float32Array, m: number, n: number, k: number, ta: boolean, tb: boolean): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[ta ? p * m + i : i * k + p]! * b[tb ? j * k + p : p * n + j]!;
      c[i * n + j] = s;
    }
  return c;
}

const nativeBinding = nativeGemm().binding;
describe.skipIf(!nativeBinding)('native GEMM worker pool', () => {
  // Large enough to be split between threads (> 1 MFLOP), with ragged edges in every dimension.
  const [m, n, k] = [133, 71, 301];
  const fill = (len: number, seed: number) => Float32Array.from({ length: len }, (_, i) => Math.sin(seed * 1000 + i * 0.37));
  const a = fill(m * k, 1);
  const b = fill(k * n, 2);

  it('gives the same products on 1, 2 and 3 threads, with every transpose', () => {
    const g = nativeBinding!;
    const saved = g.threads;
    try {
      for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        const want = referenceGemm(a, b, m, n, k, ta, tb);
        for (const threads of [1, 2, 3]) {
          g.setThreads(threads);
          const c = new Float32Array(m * n).fill(NaN);
          g.gemm(a, b, c, 1, 1, 1, m, n, k, ta, tb);
          let worst = 0;
          for (let i = 0; i < c.length; i++) worst = Math.max(worst, Math.abs(c[i]! - want[i]!));
          expect(worst, `threads=${threads} transA=${ta} transB=${tb}`).toBeLessThan(1e-3);
        }
      }
    } finally {
      g.setThreads(saved);
    }
  });

  it('stays correct when several JavaScript threads call it at once (the busy pool runs the call on its caller)', async () => {
    const want = referenceGemm(a, b, m, n, k, false, false);
    const addon = createRequire(import.meta.url).resolve('@topiary/native');
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { binding } = require(workerData.addon);
      const { a, b, m, n, k, want } = workerData;
      let worst = 0;
      for (let r = 0; r < 40; r++) {
        const c = new Float32Array(m * n);
        binding.gemm(a, b, c, 1, 1, 1, m, n, k, false, false);
        for (let i = 0; i < c.length; i++) worst = Math.max(worst, Math.abs(c[i] - want[i]));
      }
      parentPort.postMessage(worst);`;
    const workers = [0, 1].map(() => new Worker(code, { eval: true, workerData: { addon, a, b, m, n, k, want } }));
    const results = workers.map((w) => new Promise<number>((resolve, reject) => w.once('message', resolve).once('error', reject)));
    let worst = 0;
    for (let r = 0; r < 40; r++) {
      const c = new Float32Array(m * n);
      nativeBinding!.gemm(a, b, c, 1, 1, 1, m, n, k, false, false);
      for (let i = 0; i < c.length; i++) worst = Math.max(worst, Math.abs(c[i]! - want[i]!));
    }
    expect(worst).toBeLessThan(1e-3);
    for (const r of await Promise.all(results)) expect(r).toBeLessThan(1e-3);
    await Promise.all(workers.map((w) => w.terminate()));
  });
});
