import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../tf.js';
import { useBackend } from './backend.js';
import { accelerateWasm, FUSED_KERNEL_NAMES, nativeGemm } from './accelerate.js';
import { hasFused } from './native-kernels.js';
import { fusedGelu } from './fused.js';
import { addLayerNorm, attention, dropout, gelu, layerNorm, linear, scaledMaskedSoftmax } from '../model/ops.js';
import { aleaState } from './native-kernels.js';
import { AdamW, clipByGlobalNorm } from '../engine/optimizer.js';

/** Runs `f` on the cpu backend (tfjs's reference kernels; no fused kernels there) and returns its values. */
async function onCpu(f: () => tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend('cpu');
  const ts = f();
  const v = ts.map((t) => Float32Array.from(t.dataSync() as Float32Array));
  ts.forEach((t) => t.dispose());
  await tf.setBackend('wasm');
  return v;
}

const rand = (shape: number[], seed: number, lo = -1, hi = 1) => tf.randomUniform(shape, lo, hi, 'float32', seed);

/** |got - want| <= atol + rtol |want| everywhere. */
function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, atol = 1e-5, rtol = 1e-5): void {
  expect(got.length).toBe(want.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const excess = Math.abs(got[i]! - want[i]!) - (atol + rtol * Math.abs(want[i]!));
    if (!(excess <= worst)) {
      worst = Number.isNaN(excess) ? Infinity : excess;
      at = i;
    }
  }
  if (at >= 0) expect.fail(`element ${at}: got ${got[at]}, want ${want[at]} (tolerance ${atol} + ${rtol} relative)`);
}

/** Runs a stateful `run` (it creates and returns its own tensors) on cpu and on wasm: equal values, no leaks. */
async function expectStateful(run: () => tf.Tensor[], atol: number, rtol: number): Promise<void> {
  const want = await onCpu(run);
  const before = tf.memory().numTensors;
  const got = run();
  got.forEach((t, i) => expectClose(t.dataSync() as Float32Array, want[i]!, atol, rtol));
  got.forEach((t) => t.dispose());
  expect(tf.memory().numTensors).toBe(before);
}

/** Compares `f` (values and gradients it returns) on wasm with native kernels against cpu, and checks no tensor leaks. */
async function compare(f: () => tf.Tensor[], atol = 1e-5, rtol = 1e-5): Promise<void> {
  const want = await onCpu(() => tf.tidy(f));
  const before = tf.memory().numTensors;
  const got = tf.tidy(f);
  got.forEach((t, i) => expectClose(t.dataSync() as Float32Array, want[i]!, atol, rtol));
  got.forEach((t) => t.dispose());
  expect(tf.memory().numTensors).toBe(before);
}

const native = hasFused(nativeGemm().binding);

describe.skipIf(!native)('native fused kernels match tfjs cpu', () => {
  beforeAll(async () => {
    await useBackend('wasm');
    accelerateWasm(true, true, true);
  });
  afterAll(() => {
    accelerateWasm();
  });

  it('registers the fused kernels, and only with the native addon', () => {
    const names = accelerateWasm(true, true, true);
    for (const k of FUSED_KERNEL_NAMES) expect(names).toContain(k);
    expect(names).toContain('Multiply (native)');
    const without = accelerateWasm(true, true, false);
    for (const k of FUSED_KERNEL_NAMES) expect(without).not.toContain(k);
    expect(tf.getKernel('TopiaryGelu', 'wasm')).toBeUndefined();
    accelerateWasm(true, true, true);
    expect(tf.getKernel('TopiaryGelu', 'wasm')).toBeDefined();
  });

  it('linear with the bias in the GEMM: values and gradients of x, w and b', async () => {
    // Products on one thread; on two splitting rows; on two splitting columns over several k blocks
    // (rows > 256); and with more columns than one 1,024-wide block.
    for (const [rows, k, n] of [[37, 70, 45], [130, 300, 33], [5, 1, 3], [300, 40, 200], [260, 8, 2100]]) {
      await compare(() => {
        const x = rand([rows, k], 80);
        const w = rand([k, n], 81);
        const b = rand([n], 82);
        const m = rand([rows, n], 83);
        const grads = tf.grads(((a: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(linear(a, ww, bb), m))) as (...t: tf.Tensor[]) => tf.Tensor)([x, w, b]);
        return [linear(x.reshape([1, rows, k]), w, b), ...grads];
      }, 1e-5, 1e-5);
    }
  });

  it('GELU: values and gradient', async () => {
    // Wide range, including the tails where erf saturates.
    await compare(() => {
      const x = rand([3, 7, 129], 1, -8, 8);
      const w = rand([3, 7, 129], 2);
      const [dx] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(gelu(t), w)))([x]);
      return [gelu(x), dx!];
    }, 1e-6, 1e-5);
  });

  it('GELU goes through the fused kernel on wasm and not on cpu', async () => {
    const x = rand([4], 3);
    const y = fusedGelu(x);
    expect(y).toBeDefined();
    y!.dispose();
    x.dispose();
    await tf.setBackend('cpu');
    const xc = rand([4], 3);
    expect(fusedGelu(xc)).toBeUndefined();
    xc.dispose();
    await tf.setBackend('wasm');
  });

  it('LayerNorm: values and gradients of x, gamma and beta', async () => {
    for (const shape of [[2, 5, 256], [3, 17], [1, 1, 7]]) {
      await compare(() => {
        const c = shape[shape.length - 1]!;
        const x = tf.add(rand(shape, 4, -3, 3), 0.5);
        const gamma = rand([c], 5, 0.5, 1.5);
        const beta = rand([c], 6);
        const w = rand(shape, 7);
        const f = (a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(layerNorm(a, g, b, 1e-12), w));
        const grads = tf.grads(f as (...t: tf.Tensor[]) => tf.Tensor)([x, gamma, beta]);
        return [layerNorm(x, gamma, beta, 1e-12), ...grads];
      }, 2e-5, 2e-5);
    }
  });

  it('residual add + LayerNorm: values and gradients of both addends, gamma and beta', async () => {
    for (const shape of [[2, 5, 256], [3, 17]]) {
      await compare(() => {
        const c = shape[shape.length - 1]!;
        const x = rand(shape, 24, -3, 3);
        const r = rand(shape, 25, -2, 2);
        const gamma = rand([c], 26, 0.5, 1.5);
        const beta = rand([c], 27);
        const w = rand(shape, 28);
        // x also feeds the loss directly, as the residual stream does, so its gradients accumulate.
        const f = (a: tf.Tensor, b: tf.Tensor, g: tf.Tensor, be: tf.Tensor) => tf.add(tf.sum(tf.mul(addLayerNorm(a, b, g, be, 1e-12), w)), tf.sum(tf.mul(a, b)));
        const grads = tf.grads(f as (...t: tf.Tensor[]) => tf.Tensor)([x, r, gamma, beta]);
        return [addLayerNorm(x, r, gamma, beta, 1e-12), ...grads];
      }, 2e-5, 2e-5);
    }
  });

  it('LayerNorm with a hidden mask keeps the tfjs formulation', async () => {
    await compare(() => {
      const x = rand([2, 3, 8], 8);
      const keep = tf.tensor1d([1, 1, 0, 1, 1, 0, 1, 1]);
      return [layerNorm(x, rand([8], 9), rand([8], 10), 1e-5, keep, 6)];
    });
  });

  it('scaled masked softmax: values and gradient, padded keys get no weight', async () => {
    const B = 3;
    // 9: rows shorter than the kernel's 16 vector lanes; 37: two full vectors and a tail.
    for (const T of [9, 37]) await compare(() => {
      const scores = rand([B, 2, T, T], 11, -4, 4);
      const attn = tf.tensor2d(Array.from({ length: B * T }, (_, i) => (i % T < T - (i / T | 0) ? 1 : 0)), [B, T]);
      const mask = tf.mul(tf.sub(1, attn), -1e9);
      const w = rand([B, 2, T, T], 12);
      const [ds] = tf.grads((s: tf.Tensor) => tf.sum(tf.mul(scaledMaskedSoftmax(s, 0.125, mask), w)))([scores]);
      return [scaledMaskedSoftmax(scores, 0.125, mask), ds!];
    }, 1e-6, 1e-5);
  });

  it('attention core on [B, T, heads * d]: values and gradients of q, k, v against the head split, softmax, dropout and merge', async () => {
    // Short rows (9 < 16 vector lanes) and rows with a tail (37); padded keys; with and without dropout;
    // and the bert-mini shape (4 heads of 64, 2 threads).
    for (const [B, T, heads, d, rate] of [[3, 9, 2, 8, 0], [2, 37, 3, 5, 0.1], [2, 64, 4, 64, 0.1]] as const) {
      await compare(() => {
        const [q, k, v] = [90, 91, 92].map((seed) => rand([B, T, heads * d], seed, -2, 2));
        const attn = tf.tensor2d(Array.from({ length: B * T }, (_, i) => (i % T < T - (i / T | 0) * 3 ? 1 : 0)), [B, T]);
        const mask = tf.mul(tf.sub(1, attn), -1e9);
        const w = rand([B, T, heads * d], 93);
        const spec = rate > 0 ? { rate, seed: 4242 } : undefined;
        const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(attention(a, b, c, heads, mask, spec), w));
        const grads = tf.grads(f as (...t: tf.Tensor[]) => tf.Tensor)([q!, k!, v!]);
        return [attention(q!, k!, v!, heads, mask, spec), ...grads];
      }, 1e-5, 1e-4);
    }
  });

  it('dropout: the same mask as tf.dropout with the same seed, and its gradient', async () => {
    for (const [shape, rate, seed] of [[[4, 9, 33], 0.1, 12345], [[1000], 0.5, 7], [[3, 5], 0.9, 2 ** 31 - 1]] as const) {
      const want = await onCpu(() => tf.tidy(() => {
        const x = rand([...shape], 60);
        const [dx] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(tf.dropout(t, rate, undefined, seed), rand([...shape], 61))))([x]);
        return [tf.dropout(x, rate, undefined, seed), dx!];
      }));
      const before = tf.memory().numTensors;
      const got = tf.tidy(() => {
        const x = rand([...shape], 60);
        const [dx] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(dropout(t, rate, seed), rand([...shape], 61))))([x]);
        return [dropout(x, rate, seed), dx!];
      });
      got.forEach((t, i) => expect(Array.from(t.dataSync())).toEqual(Array.from(want[i]!)));
      got.forEach((t) => t.dispose());
      expect(tf.memory().numTensors).toBe(before);
    }
  });

  it('seeds Alea as seedrandom does (the first uniform of a seed)', () => {
    const st = aleaState('42');
    const t = 2091639 * st.s0 + st.c * 2.3283064365386963e-10;
    const u = tf.randomUniform([1], 0, 1, 'float32', 42);
    expect(u.dataSync()[0]).toBe(Math.fround(t - (t | 0)));
    u.dispose();
  });

  it('sum over leading axes through the native column sum', async () => {
    for (const [shape, axis, keepDims] of [[[2048, 300], 0, false], [[5, 4, 3], [0, 1], true], [[7, 3], 1, false]] as const) {
      await compare(() => [tf.sum(rand([...shape], 70), axis as number | number[], keepDims)], 1e-5, 1e-6);
    }
  });

  it('clips by the global norm as the tfjs formulation (sum of squares in one pass)', async () => {
    const run = () => {
      const vars = [tf.tidy(() => tf.variable(rand([300, 70], 91))), tf.tidy(() => tf.variable(rand([7], 92)))];
      const grads = new Map<tf.Variable, tf.Tensor>(vars.map((v, i) => [v, rand(v.shape, 93 + i, -3, 3)]));
      const { grads: clipped, norm } = clipByGlobalNorm(grads, 1);
      const out = [tf.scalar(norm), ...[...clipped.values()].map((g) => g.clone())];
      [...grads.values(), ...clipped.values(), ...vars].forEach((t) => t.dispose());
      return out;
    };
    await expectStateful(run, 1e-6, 1e-5);
  });

  it('AdamW: two steps with decay, without, and ascent, as the tfjs formulation', async () => {
    const run = () => {
      const p1 = tf.tidy(() => tf.variable(rand([300, 7], 13)));
      const p2 = tf.tidy(() => tf.variable(rand([5], 14)));
      const p3 = tf.tidy(() => tf.variable(rand([2, 3], 15)));
      const opt = new AdamW([
        { variables: [p1], learningRate: 1e-2, weightDecay: 0.1 },
        { variables: [p2], learningRate: 3e-3, weightDecay: 0 },
        { variables: [p3], learningRate: 5e-2, weightDecay: 0, ascent: true },
      ]);
      for (let step = 0; step < 2; step++) {
        const grads = new Map<tf.Variable, tf.Tensor>([[p1, rand([300, 7], 16 + step)], [p2, rand([5], 18 + step)], [p3, rand([2, 3], 20 + step)]]);
        opt.apply(grads, 0.7);
        grads.forEach((g) => g.dispose());
      }
      opt.dispose();
      return [p1, p2, p3];
    };
    await expectStateful(run, 1e-6, 1e-5);
  });

  it('Add/Sub/Multiply/RealDiv: same shape, suffix, scalar and per-row broadcasts on either side, other layouts', async () => {
    const pairs: Array<[number[], number[]]> = [
      [[4, 6, 33], [4, 6, 33]],
      [[4, 6, 33], [33]],
      [[33], [4, 6, 33]],
      [[4, 6, 33], [1, 6, 33]],
      [[4, 6, 33], []],
      [[], [4, 6, 33]],
      [[4, 6, 33], [4, 6, 1]],
      [[4, 6, 1], [4, 6, 33]],
      [[4, 1, 33], [4, 6, 33]], // middle broadcast: wasm's own kernel
      [[4, 1], [1, 5]], // outer product: wasm's own kernel
      [[300000], [300000]], // several threads
    ];
    for (const op of [tf.add, tf.sub, tf.mul, tf.div]) {
      for (const [i, [sa, sb]] of pairs.entries()) {
        await compare(() => [op(rand(sa, 30 + i), op === tf.div ? rand(sb, 50 + i, 0.5, 2) : rand(sb, 50 + i))], 1e-6, 1e-6);
      }
    }
    // int32 operands keep wasm's kernels.
    const ints = tf.tidy(() => tf.add(tf.tensor1d([1, 2, 3], 'int32'), tf.scalar(4, 'int32')));
    expect(Array.from(ints.dataSync())).toEqual([5, 6, 7]);
    ints.dispose();
  });

  it('Transpose [0, 2, 1, 3] natively, identity perms shared, other perms through wasm', async () => {
    for (const [shape, perm] of [[[3, 5, 4, 7], [0, 2, 1, 3]], [[32, 64, 4, 64], [0, 2, 1, 3]], [[3, 5, 1, 7], [0, 2, 1, 3]], [[3, 1, 4, 7], [0, 2, 1, 3]], [[3, 5], [0, 1]], [[2, 3, 4], [0, 1, 2]], [[3, 5, 4, 7], [0, 1, 3, 2]], [[3, 5, 4], [1, 0, 2]]] as const) {
      await compare(() => [tf.transpose(rand([...shape], 90), [...perm])], 0, 0);
    }
  });

  it('flushes denormals inside kernels only: softmax tails stay fast, JavaScript keeps IEEE subnormals', () => {
    // Scores 100 apart give probabilities at or below FLT_MIN, where x86 is slow unless denormals are
    // flushed; the kernels flush them and restore the calling thread's FP mode when they return.
    const scores = tf.tensor2d([[0, -100, -200, -300]]);
    const probs = tf.tidy(() => scaledMaskedSoftmax(scores.reshape([1, 1, 1, 4]), 1, tf.zeros([1, 1, 1, 4])).dataSync() as Float32Array);
    expect(probs[0]).toBeCloseTo(1, 6);
    for (const p of probs.subarray(1)) expect(p).toBeLessThan(1e-37);
    const tiny = new Float64Array([Number.MIN_VALUE, 2.2250738585072014e-308]);
    expect(tiny[0]! * 3).toBeGreaterThan(0);
    expect(tiny[1]! / 4).toBeGreaterThan(0);
    scores.dispose();
  });

  it('Identity and same-dtype Cast share data; the copy outlives the original', () => {
    const before = tf.memory().numTensors;
    const x = rand([3, 4], 40);
    const want = Array.from(x.dataSync());
    const c = tf.clone(x);
    const k = tf.cast(x, 'float32');
    const i = tf.cast(x, 'int32');
    x.dispose();
    expect(Array.from(c.dataSync())).toEqual(want);
    expect(Array.from(k.dataSync())).toEqual(want);
    expect(Array.from(i.dataSync())).toEqual(want.map((v) => Math.trunc(v) || 0));
    c.dispose();
    k.dispose();
    i.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('every fused kernel on shapes with a leading size 1 and other size-1 axes (a batch of one, one head, one token)', async () => {
    for (const [rows, k, n] of [[1, 7, 5], [1, 1, 1], [1, 300, 1], [4, 1, 1]]) {
      await compare(() => {
        const [x, w, b, m] = [rand([rows, k], 100), rand([k, n], 101), rand([n], 102), rand([rows, n], 103)];
        const grads = tf.grads(((a: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(linear(a, ww, bb), m))) as (...t: tf.Tensor[]) => tf.Tensor)([x, w, b]);
        return [linear(x, w, b), linear(x.reshape([1, rows, k]), w, b), ...grads];
      });
    }
    for (const shape of [[1], [1, 1, 1], [1, 1, 5]]) {
      await compare(() => {
        const x = rand(shape, 104, -3, 3);
        const w = rand(shape, 105);
        const [dx] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(gelu(t), w)))([x]);
        return [gelu(x), dx!];
      }, 1e-6, 1e-5);
    }
    for (const shape of [[1, 1, 7], [1, 7], [1, 3, 2]]) {
      await compare(() => {
        const c = shape[shape.length - 1]!;
        const [x, r, gamma, beta, w] = [rand(shape, 106, -3, 3), rand(shape, 107), rand([c], 108, 0.5, 1.5), rand([c], 109), rand(shape, 110)];
        const f = (a: tf.Tensor, rr: tf.Tensor, g: tf.Tensor, be: tf.Tensor) => tf.add(tf.sum(tf.mul(layerNorm(a, g, be, 1e-12), w)), tf.sum(tf.mul(addLayerNorm(a, rr, g, be, 1e-12), w)));
        const grads = tf.grads(f as (...t: tf.Tensor[]) => tf.Tensor)([x, r, gamma, beta]);
        return [layerNorm(x, gamma, beta, 1e-12), addLayerNorm(x, r, gamma, beta, 1e-12), ...grads];
      }, 2e-5, 2e-5);
    }
    for (const [B, heads, T] of [[1, 1, 1], [1, 2, 5], [1, 1, 9]]) {
      await compare(() => {
        const scores = rand([B, heads, T, T], 111, -4, 4);
        const attn = tf.tensor2d(Array.from({ length: B * T }, (_, i) => (i % T < Math.max(1, T - 1) ? 1 : 0)), [B, T]);
        const mask = tf.mul(tf.sub(1, attn), -1e9).reshape([B, 1, 1, T]);
        const w = rand([B, heads, T, T], 112);
        const [ds] = tf.grads((sc: tf.Tensor) => tf.sum(tf.mul(scaledMaskedSoftmax(sc, 0.125, mask), w)))([scores]);
        return [scaledMaskedSoftmax(scores, 0.125, mask), ds!];
      }, 1e-6, 1e-5);
    }
    for (const [B, T, heads, d, rate] of [[1, 1, 1, 1, 0], [1, 5, 1, 8, 0], [1, 7, 2, 4, 0.1], [3, 1, 2, 4, 0]] as const) {
      await compare(() => {
        const [q, k, v] = [113, 114, 115].map((seed) => rand([B, T, heads * d], seed, -2, 2));
        const attn = tf.tensor2d(Array.from({ length: B * T }, (_, i) => (i % T < Math.max(1, T - 2) ? 1 : 0)), [B, T]);
        const mask = tf.mul(tf.sub(1, attn), -1e9);
        const w = rand([B, T, heads * d], 116);
        const spec = rate > 0 ? { rate, seed: 77 } : undefined;
        const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(attention(a, b, c, heads, mask, spec), w));
        const grads = tf.grads(f as (...t: tf.Tensor[]) => tf.Tensor)([q!, k!, v!]);
        return [attention(q!, k!, v!, heads, mask, spec), ...grads];
      }, 1e-5, 1e-4);
    }
    for (const shape of [[1], [1, 1, 5]]) {
      const want = await onCpu(() => tf.tidy(() => [tf.dropout(rand(shape, 117), 0.5, undefined, 9)]));
      const got = tf.tidy(() => dropout(rand(shape, 117), 0.5, 9));
      expect(Array.from(got.dataSync())).toEqual(Array.from(want[0]!));
      got.dispose();
    }
    for (const [shape, axis] of [[[1, 300], 0], [[1, 1, 4], [0, 1]], [[1], 0]] as const) {
      await compare(() => [tf.sum(rand([...shape], 118), axis as number | number[])], 1e-6, 1e-6);
    }
    await expectStateful(() => {
      const vars = [tf.tidy(() => tf.variable(rand([1], 119))), tf.tidy(() => tf.variable(rand([1, 1], 120)))];
      const opt = new AdamW([{ variables: vars, learningRate: 1e-2, weightDecay: 0.1 }]);
      for (let step = 0; step < 2; step++) {
        const grads = new Map<tf.Variable, tf.Tensor>(vars.map((v, i) => [v, rand(v.shape, 121 + i + 2 * step, -3, 3)]));
        const { grads: clipped } = clipByGlobalNorm(grads, 1);
        opt.apply(clipped, 1);
        [...grads.values(), ...clipped.values()].forEach((g) => g.dispose());
      }
      opt.dispose();
      return vars;
    }, 1e-6, 1e-5);
  });

  it('without the fused kernels the same functions run as tfjs ops', async () => {
    accelerateWasm(true, true, false);
    try {
      await compare(() => {
        const x = rand([2, 3, 16], 41);
        const [dx] = tf.grads((t: tf.Tensor) => tf.sum(gelu(layerNorm(t, tf.onesLike(t.sum([0, 1])), tf.zeros([16]), 1e-12))))([x]);
        return [dx!];
      });
    } finally {
      accelerateWasm(true, true, true);
    }
  });
});
