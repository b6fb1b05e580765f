import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../tf.js';
import { useBackend } from './backend.js';
import { accelerateWasm, unsortedSegmentSumValues } from './accelerate.js';

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
    expect(accelerateWasm(true)).toEqual(['UnsortedSegmentSum', 'BatchMatMul', 'GatherV2']);
  });

  it('unsortedSegmentSum matches the cpu kernel, dropping out-of-range ids', async () => {
    const make = () => tf.unsortedSegmentSum(rand([6, 3, 2], 1), tf.tensor1d([0, 2, 2, -1, 4, 0], 'int32'), 4);
    const want = await onCpu(make);
    const got = make();
    expect(got.shape).toEqual([4, 3, 2]);
    expect(Array.from(got.dataSync())).toEqual(Array.from(want));
    got.dispose();
    expect(unsortedSegmentSumValues([1, 2, 3], [3], [1, 1, 0], 2).values).toEqual(new Float32Array([3, 3]));
  });

  it('gives the gradient of gather on wasm, as on cpu', async () => {
    const f = () => tf.grad((t: tf.Tensor) => tf.gather(t, tf.tensor1d([1, 1, 3], 'int32')).mul(rand([3, 5], 2)).sum())(rand([4, 5], 3));
    const want = await onCpu(f);
    const got = f();
    expect(Array.from(got.dataSync())).toEqual(Array.from(want));
    got.dispose();
  });

  for (const [transposeA, transposeB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
    it(`batched matMul with transposeA=${transposeA} transposeB=${transposeB} matches cpu`, async () => {
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

  it('batched attention-shaped matMul (rank 4, every transpose) matches cpu', async () => {
    for (const [ta, tb] of [[false, true], [true, false]] as const) {
      const f = () => tf.tidy(() => tf.matMul(rand([3, 2, 6, 4], 6), rand([3, 2, 6, 4], 7), ta, tb));
      const want = await onCpu(f);
      const got = f();
      const g = got.dataSync();
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
