import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Rng, tf, useBackend } from '@topiary/core';
import { golden, maxAbsDiff } from '../../core/src/test-support/shared.js';
import { L0Module, LOG_ALPHA_MAX, LOG_ALPHA_MIN, applyL0Gradients, cdfQz, disposeCoFiZ, roundHalfEven, toStructuredMasks, type CoFiZ, type MaskType } from './l0.js';

// Golden: CoFiPruning's own L0Module on a 4-layer, 256-hidden, 4-head, 1024-FFN model.
const G = golden('algorithms-golden.json').cofi;
const CONFIG = {
  hiddenSize: G.config.hidden_size,
  numHiddenLayers: G.config.num_hidden_layers,
  numAttentionHeads: G.config.num_attention_heads,
  intermediateSize: G.config.intermediate_size,
};
const TOL = 1e-5;
const flat = (x: unknown): number[] => (Array.isArray(x) ? x.flat(Infinity) : [x]) as number[];

/** The golden module: given log-alphas, lambdas, warm-up 100 to target 0.6. */
function goldenModule(types?: MaskType[]): L0Module {
  const m = new L0Module(CONFIG, { types, targetSparsity: G.target_sparsity, lagrangianWarmup: G.lagrangian_warmup });
  const logas = Object.fromEntries(Object.entries(G.logas).filter(([t]) => m.types.includes(t as MaskType)));
  m.setLogAlphas(logas as Record<MaskType, number[]>);
  m.lambda1.assign(tf.scalar(G.lambda_1));
  m.lambda2.assign(tf.scalar(G.lambda_2));
  return m;
}

/** Golden CoFiZ-style record (`head_z` is [L,1,A,1,1], `intermediate_z` [L,1,1,I]) as flat per type. */
function zFlat(z: CoFiZ): Record<string, number[]> {
  const v = (t?: tf.Tensor | tf.Tensor[]) => (t === undefined ? [] : (Array.isArray(t) ? t : [t]).flatMap((x) => Array.from(x.dataSync())));
  return { head_z: v(z.headZ), intermediate_z: v(z.intermediateZ), hidden_z: v(z.hiddenZ), mlp_z: v(z.mlpZ), head_layer_z: v(z.headLayerZ) };
}

let modules: L0Module[] = [];
const track = (m: L0Module) => (modules.push(m), m);

beforeAll(async () => {
  await useBackend('wasm');
});
afterEach(() => {
  for (const m of modules) m.dispose();
  modules = [];
});

describe('CoFi L0Module parity with CoFiPruning (algorithms-golden.json `cofi`)', () => {
  it('counts parameters per unit and the prunable size as the reference', () => {
    const m = track(new L0Module(CONFIG));
    expect(m.parametersPerDim).toEqual(G.parameters_per_dim);
    expect(m.prunableModelSize).toBe(G.prunable_model_size);
    expect(m.types).toEqual(G.types);
  });

  it('cdf_qz(0) at given log-alphas', () => {
    for (const [x, want] of Object.entries(G.cdf_qz_at_0 as Record<string, number>)) {
      const got = tf.tidy(() => cdfQz(0, tf.scalar(Number(x)), G.temperature).dataSync()[0]!);
      expect(Math.abs(got - want), `cdf_qz(0) at log-alpha ${x}`).toBeLessThan(TOL);
      expect(Math.abs(got - want) / want, `relative, at log-alpha ${x}`).toBeLessThan(1e-4);
    }
  });

  it('expected sparsity and Lagrangian loss with the hidden mask (step 50 of a 100-step warm-up)', () => {
    const m = track(goldenModule());
    const r = m.lagrangianRegularization(G.pruned_steps);
    expect(r.targetSparsity).toBeCloseTo(G.with_hidden.target_sparsity, 12);
    expect(Math.abs(r.expectedSparsity.dataSync()[0]! - G.with_hidden.expected_sparsity)).toBeLessThan(TOL);
    expect(Math.abs(r.lagrangianLoss.dataSync()[0]! - G.with_hidden.lagrangian_loss)).toBeLessThan(TOL);
    r.expectedSparsity.dispose();
    r.lagrangianLoss.dispose();
  });

  it('expected sparsity and Lagrangian loss without the hidden mask', () => {
    const m = track(goldenModule(['head', 'intermediate', 'mlp', 'head_layer']));
    expect(m.prunableModelSize).toBe(G.without_hidden.prunable_model_size);
    // The golden's target here is the full 0.6 (no warm-up applied): same as any step past the warm-up.
    const r = m.lagrangianRegularization(G.lagrangian_warmup);
    expect(r.targetSparsity).toBeCloseTo(G.without_hidden.target_sparsity, 12);
    expect(Math.abs(r.expectedSparsity.dataSync()[0]! - G.without_hidden.expected_sparsity)).toBeLessThan(TOL);
    expect(Math.abs(r.lagrangianLoss.dataSync()[0]! - G.without_hidden.lagrangian_loss)).toBeLessThan(TOL);
    r.expectedSparsity.dispose();
    r.lagrangianLoss.dispose();
    m.lagrangianWarmup = 0;
    expect(m.targetSparsityAt(G.pruned_steps)).toBe(G.target_sparsity);
  });

  it('deterministic (eval) masks', () => {
    const m = track(goldenModule());
    const z = m.deterministicZ();
    const got = zFlat(z);
    for (const key of ['head_z', 'intermediate_z', 'hidden_z', 'mlp_z', 'head_layer_z']) {
      const want = flat(G.deterministic_z[key]);
      expect(got[key]!.length, key).toBe(want.length);
      expect(maxAbsDiff(got[key], want), key).toBeLessThan(TOL);
      // The number of exact zeros is the reference's rounded expected count.
      expect(got[key]!.filter((v) => v === 0).length, `${key} zeros`).toBe(want.filter((v) => v === 0).length);
    }
    disposeCoFiZ(z);
  });

  it('sampled (training) masks for the given noise', () => {
    const m = track(goldenModule());
    const z = m.sampleZWithNoise(G.eps);
    const got = zFlat(z);
    for (const key of ['head_z', 'intermediate_z', 'hidden_z', 'mlp_z', 'head_layer_z']) {
      expect(maxAbsDiff(got[key], flat(G.sampled_z[key])), key).toBeLessThan(TOL);
    }
    disposeCoFiZ(z);
  });

  it('model size of the deterministic masks', () => {
    const m = track(goldenModule());
    const r = m.modelSizeOfDeterministicMasks();
    const want = G.model_size_of_deterministic_z;
    const { pruned_model_sparsity, ...counts } = r;
    const { pruned_model_sparsity: wantSparsity, ...wantCounts } = want;
    expect(counts).toEqual(wantCounts);
    expect(Math.abs(pruned_model_sparsity - wantSparsity)).toBeLessThan(TOL);
  });
});

describe('CoFi L0Module behaviour', () => {
  it('rounds expected zeros like Python (halves to even)', () => {
    expect([0.5, 1.5, 2.5, 2.4999, 2.5001, 3].map(roundHalfEven)).toEqual([0, 2, 2, 2, 3, 3]);
  });

  it('initializes log-alphas as the reference: intermediate from the drop rate, the rest open (10)', () => {
    const m = track(new L0Module(CONFIG, { droprateInit: 0.3, seed: 3 }));
    const la = m.logAlphaValues();
    const stats = (v: number[]) => {
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      return { mean, sd: Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length) };
    };
    const inter = stats(la.intermediate!.flat());
    expect(inter.mean).toBeCloseTo(Math.log(0.7 / 0.3), 2);
    expect(inter.sd).toBeGreaterThan(0.005);
    expect(inter.sd).toBeLessThan(0.015);
    expect(stats(la.hidden!).mean).toBeCloseTo(10, 2);
    expect(stats(la.head!.flat()).mean).toBeCloseTo(10, 2);
    expect(stats([...la.mlp!, ...la.head_layer!]).mean).toBeCloseTo(10, 1);
    expect(m.lambda1.dataSync()[0]).toBe(0);
    expect(m.lambda2.dataSync()[0]).toBe(0);
  });

  it('draws seeded noise: same seed, same masks, values in [0, 1]', () => {
    const m = track(goldenModule());
    const a = m.sampleZ(new Rng(7));
    const b = m.sampleZ(new Rng(7));
    const c = m.sampleZ(new Rng(8));
    const [fa, fb, fc] = [zFlat(a), zFlat(b), zFlat(c)];
    expect(fa).toEqual(fb);
    expect(fa.intermediate_z).not.toEqual(fc.intermediate_z);
    for (const v of Object.values(fa).flat()) expect(v >= 0 && v <= 1).toBe(true);
    [a, b, c].forEach(disposeCoFiZ);
  });

  it('maps CoFi masks onto Topiary forward masks', () => {
    const m = track(goldenModule());
    const z = m.deterministicZ();
    const s = toStructuredMasks(z);
    expect(s.headMask).toBe(z.headZ);
    expect(s.neuronMask).toBe(z.intermediateZ);
    expect(s.hiddenMask).toBe(z.hiddenZ);
    expect(s.mhaMask).toBe(z.headLayerZ); // head_layer_z scales the attention output
    expect(s.ffnMask).toBe(z.mlpZ);
    const layers = Array.from({ length: CONFIG.numHiddenLayers });
    expect(s.headMask!.map((t) => t.shape)).toEqual(layers.map(() => [CONFIG.numAttentionHeads]));
    expect(s.neuronMask!.map((t) => t.shape[0])).toEqual(layers.map(() => CONFIG.intermediateSize));
    disposeCoFiZ(z);
  });

  it('supports per-layer widths (flat storage)', () => {
    const m = track(new L0Module({ ...CONFIG, layerHeads: [4, 2, 0, 3], layerIntermediate: [1024, 10, 0, 5] }));
    expect(m.logAlpha.head!.shape).toEqual([9]);
    expect(m.logAlpha.intermediate!.shape).toEqual([1039]);
    const z = m.deterministicZ();
    expect(z.headZ!.map((t) => t.shape[0])).toEqual([4, 2, 0, 3]);
    expect(m.modelSizeOfDeterministicMasks().head_nums).toEqual([4, 2, 0, 3]);
    disposeCoFiZ(z);
  });

  it('descends log-alphas, ascends the multipliers, then clamps log-alphas to [ln 0.01, ln 100]', () => {
    const m = track(goldenModule());
    // One log-alpha pushed past each bound, so the clamp is exercised whatever the golden's values.
    const [lo, hi] = [m.types[0]!, m.types[m.types.length - 1]!];
    for (const [t, v] of [[lo, LOG_ALPHA_MIN - 1], [hi, LOG_ALPHA_MAX + 1]] as const) {
      const flatValues = Array.from(m.logAlpha[t]!.dataSync());
      flatValues[0] = v;
      tf.tidy(() => m.logAlpha[t]!.assign(tf.tensor1d(flatValues)));
    }
    const before = Object.fromEntries(m.types.map((t) => [t, Array.from(m.logAlpha[t]!.dataSync())]));
    const reg = m.lagrangianRegularization(G.pruned_steps);
    const s = reg.expectedSparsity.dataSync()[0]!;
    const t = reg.targetSparsity;
    reg.expectedSparsity.dispose();
    reg.lagrangianLoss.dispose();
    const [l1, l2] = [m.lambda1.dataSync()[0]!, m.lambda2.dataSync()[0]!];
    const vars = [...m.logAlphaVariables(), ...m.lagrangianVariables()];
    const { value, grads } = tf.variableGrads(() => m.lagrangianRegularization(G.pruned_steps).lagrangianLoss, vars);
    const g = Object.fromEntries(m.types.map((ty) => [ty, Array.from(grads[m.logAlpha[ty]!.name]!.dataSync())]));
    const lr = 0.5;
    const opt = { l0: tf.train.sgd(lr), lagrangian: tf.train.sgd(lr) };
    applyL0Gradients(m, grads, opt);
    // d/d lambda_1 = s - t, d/d lambda_2 = (s - t)^2: ascent ADDS them.
    expect(m.lambda1.dataSync()[0]!).toBeCloseTo(l1 + lr * (s - t), 5);
    expect(m.lambda2.dataSync()[0]!).toBeCloseTo(l2 + lr * (s - t) ** 2, 5);
    // Every log-alpha: one SGD step, then the clamp.
    let clamped = 0;
    for (const ty of m.types) {
      const after = Array.from(m.logAlpha[ty]!.dataSync());
      after.forEach((a, i) => {
        const stepped = before[ty]![i]! - lr * g[ty]![i]!;
        const want = Math.min(LOG_ALPHA_MAX, Math.max(LOG_ALPHA_MIN, stepped));
        if (want !== stepped) clamped++;
        expect(Math.abs(a - want), `${ty}[${i}]`).toBeLessThan(1e-5);
      });
    }
    expect(clamped).toBeGreaterThanOrEqual(2);
    value.dispose();
    Object.values(grads).forEach((gr) => gr.dispose());
    opt.l0.dispose();
    opt.lagrangian.dispose();
  });
});
