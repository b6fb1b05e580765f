import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { beforeAll, describe, expect, it } from 'vitest';
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

const rand = (shape: number[], seed: number) => tf.randomUniform(shape, -1, 1, 'float32', seed);

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
