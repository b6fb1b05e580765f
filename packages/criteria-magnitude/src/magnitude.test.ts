import { beforeAll, describe, expect, it } from 'vitest';
import { keepTopFraction, layerParamNames, loadBert, tf, weightMasksTopFraction, type BertModel } from '@topiary/core';
import { golden, modelDir } from '../../core/src/test-support/shared.js';
import { testBackend } from '../../core/src/test-support/backend.js';
import { MagnitudeCriterion, RandomCriterion, encoderWeightGroups } from './magnitude.js';

const M = golden('algorithms-golden.json').movement as { weights: number[][]; 'magnitude_keep_0.25': number[][] };

describe('magnitude criterion', () => {
  let model: BertModel;
  beforeAll(async () => {
    await testBackend();
    model = await loadBert(modelDir('bert-tiny-wordnet-supersense'));
  });

  it("ranks weights like movement pruning's magnitude binarizer (magnitude_keep_0.25)", async () => {
    const name = 'w.weight';
    const w = tf.variable(tf.tensor2d(M.weights));
    const stub = { params: new Map([[name, w]]) } as unknown as BertModel;
    const scores = await new MagnitudeCriterion().score([{ kind: 'weight', param: name, size: w.size }], { model: stub } as never);
    const mask = keepTopFraction(scores.get(`weight:${name}`)!, 0.25);
    expect(Array.from(mask)).toEqual(M['magnitude_keep_0.25'].flat());
    w.dispose();
  });

  it('scores a head by the L1 / L2 norm of the weights it owns', async () => {
    const n = layerParamNames(1);
    const d = model.config.attentionHeadSize;
    const expected = (p: number) =>
      tf.tidy(() => {
        const pow = (t: tf.Tensor) => (p === 1 ? t.abs() : t.square()).sum();
        const cols = [n.query, n.key, n.value].map((w) => pow(model.params.get(`${w}.weight`)!.slice([0, d], [-1, d])));
        const rows = pow(model.params.get(`${n.attnOut}.weight`)!.slice([d, 0], [d, -1]));
        const s = tf.addN([...cols, rows]);
        return (p === 1 ? s : s.sqrt()).dataSync()[0]!;
      });
    for (const [norm, p] of [['l1', 1], ['l2', 2]] as const) {
      const scores = await new MagnitudeCriterion({ norm }).score([{ kind: 'head', layer: 1, size: 2 }], { model } as never);
      expect(scores.get('head:1')![1]).toBeCloseTo(expected(p), 2);
    }
  });

  it('scores FFN neurons and hidden dimensions', async () => {
    const n = layerParamNames(0);
    const scores = await new MagnitudeCriterion().score(
      [{ kind: 'neuron', layer: 0, size: model.config.layerIntermediate[0]! }, { kind: 'hidden', size: model.config.hiddenSize }],
      { model } as never,
    );
    const want = tf.tidy(() =>
      model.params.get(`${n.inter}.weight`)!.slice([0, 7], [-1, 1]).abs().sum().add(model.params.get(`${n.out}.weight`)!.slice([7, 0], [1, -1]).abs().sum()).dataSync()[0]!,
    );
    expect(scores.get('neuron:0')![7]).toBeCloseTo(want, 3);
    expect(scores.get('hidden')).toHaveLength(model.config.hiddenSize);
    expect(Math.min(...scores.get('hidden')!)).toBeGreaterThan(0);
  });

  it('selects per matrix or globally', async () => {
    const groups = encoderWeightGroups(model);
    const scores = await new MagnitudeCriterion().score(groups, { model } as never);
    const perMatrix = weightMasksTopFraction(scores, 0.3, 'matrix');
    const global = weightMasksTopFraction(scores, 0.3, 'global');
    const kept = (m: Map<string, Float32Array>) => [...m.values()].map((v) => v.reduce((a, b) => a + b, 0) / v.length);
    for (const f of kept(perMatrix)) expect(f).toBeCloseTo(0.3, 2);
    const g = [...global.values()].reduce((a, v) => a + v.reduce((x, y) => x + y, 0), 0) / groups.reduce((a, x) => a + x.size, 0);
    expect(g).toBeCloseTo(0.3, 3);
    // Global ranking does not keep the same fraction in every matrix.
    expect(new Set(kept(global).map((f) => f.toFixed(3))).size).toBeGreaterThan(1);
  });

  it('random scores are seeded', async () => {
    const g = [{ kind: 'head' as const, layer: 0, size: 4 }];
    const a = await new RandomCriterion({ seed: 3 }).score(g);
    const b = await new RandomCriterion({ seed: 3 }).score(g);
    const c = await new RandomCriterion({ seed: 4 }).score(g);
    expect(a.get('head:0')).toEqual(b.get('head:0'));
    expect(a.get('head:0')).not.toEqual(c.get('head:0'));
  });
});
