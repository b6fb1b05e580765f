import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../tf.js';
import { testBackend } from '../test-support/backend.js';
import { randomBert } from '../test-support/random-bert.js';
import { MaskSet, bindMasks } from '../pruning/masks.js';
import { compact } from '../pruning/compact.js';
import { encoderFlops } from './cost.js';
import { checkLatencyTable, fitPiecewiseLatency, measureLatencyTable, piecewiseAt, profileModel, tableLatency } from './profile.js';

beforeAll(testBackend);

describe('profileModel', () => {
  it('counts every parameter once and the FLOPs of each product by hand, on a model with an emptied attention block', async () => {
    const dense = randomBert({ layers: 2, hidden: 8, heads: 2, intermediate: 6, labels: 3 }, 4);
    const masks = bindMasks(MaskSet.ones(dense), dense);
    masks.headMask[0] = new Float32Array([0, 0]);
    masks.neuronMask[1] = new Float32Array([1, 0, 1, 0, 0, 1]);
    const model = compact(dense, masks);
    const before = tf.memory().numTensors;
    const [B, T] = [3, 5];
    const p = await profileModel(model, { batch: B, seq: T, repeats: 1, warmup: 0 });
    expect(tf.memory().numTensors).toBe(before);
    const c = model.config;
    const total = [...model.params.values()].reduce((a, v) => a + v.size, 0);
    expect(p.params).toBe(total);
    expect(p.modules.map((m) => m.name)).toEqual([
      'embeddings',
      ...[0, 1].flatMap((l) => ['attention.query', 'attention.key', 'attention.value', 'attention.core', 'attention.output', 'attention.LayerNorm', 'ffn.intermediate', 'ffn.output', 'ffn.LayerNorm'].map((m) => `layer.${l}.${m}`)),
      'pooler',
      'classifier',
    ]);
    const get = (n: string) => p.modules.find((m) => m.name === n)!;
    // By hand: H = 8, head size 4; layer 0 has no heads, layer 1 two heads and 3 neurons.
    const H = 8;
    const A1 = 2 * 4;
    expect(get('layer.0.attention.query').flops).toBe(0);
    expect(get('layer.1.attention.query').flops).toBe(2 * B * T * H * A1);
    expect(get('layer.1.attention.core').flops).toBe(2 * 2 * B * T * T * A1);
    expect(get('layer.1.attention.output').flops).toBe(2 * B * T * A1 * H);
    expect(get('layer.0.ffn.intermediate').flops).toBe(2 * B * T * H * 6);
    expect(get('layer.1.ffn.output').flops).toBe(2 * B * T * 3 * H);
    expect(get('layer.1.ffn.intermediate').params).toBe(H * 3 + 3);
    expect(get('layer.0.attention.output').params).toBe(H); // its bias alone
    expect(get('embeddings').params).toBe(c.vocabSize * H + c.maxPositionEmbeddings * H + c.typeVocabSize * H + 2 * H);
    expect(get('pooler').flops).toBe(2 * B * H * H);
    expect(get('classifier').flops).toBe(2 * B * H * 3);
    const encoder = p.modules.filter((m) => m.group === 'attention' || m.group === 'ffn').reduce((a, m) => a + m.flops, 0);
    expect(encoder).toBe(B * encoderFlops(c, T));
    expect(p.modules.every((m) => m.ms >= 0)).toBe(true);
    expect(p.forwardMs).toBeGreaterThan(0);
    model.dispose();
    dense.dispose();
  });
});

describe('latency table', () => {
  it('fits the reference\'s piecewise-linear function exactly to piecewise-linear points', () => {
    const f = { threshold: 16, c: 2, slope: 0.05, zero: 0.3 };
    const units = [1, 2, 4, 8, 16, 32, 64, 96, 128];
    const fit = fitPiecewiseLatency(units, units.map((u) => piecewiseAt(f, u)), 0.3);
    expect(fit.threshold).toBe(16);
    expect(fit.c).toBeCloseTo(2, 12);
    expect(fit.slope).toBeCloseTo(0.05, 12);
    expect(piecewiseAt(fit, 0)).toBe(0.3);
    // A flat curve has slope 0 (clipped, never negative).
    expect(fitPiecewiseLatency([1, 2, 3], [1, 0.9, 0.8]).slope).toBe(0);
  });

  it('measures every head count and a grid of neuron counts for the model\'s sizes, and checks a table against a model', () => {
    const model = randomBert({ layers: 2, hidden: 8, heads: 2, intermediate: 40, labels: 3 }, 5);
    const before = tf.memory().numTensors;
    const t = measureLatencyTable(model.config, { batch: 2, seq: 4, repeats: 1, warmup: 0, neuronPoints: 4 });
    expect(tf.memory().numTensors).toBe(before);
    expect(t).toMatchObject({ format: 'topiary-latency-lut', version: 1, batch: 2, seq: 4, hiddenSize: 8, attentionHeadSize: 4, heads: 2, intermediate: 40 });
    expect(t.mha.units).toEqual([0, 1, 2]);
    expect(t.ffn.units).toEqual([0, 1, 2, 4, 8, 10, 16, 20, 30, 32, 40]);
    for (const cv of [t.mha, t.ffn]) {
      expect(cv.ms).toHaveLength(cv.units.length);
      expect(cv.fit.zero).toBe(cv.ms[0]);
    }
    const json = JSON.parse(JSON.stringify(t));
    expect(checkLatencyTable(json, 'lut.json', model.config)).toEqual(t);
    expect(tableLatency(t, [2, 0], [40, 1])).toBeCloseTo(piecewiseAt(t.mha.fit, 2) + piecewiseAt(t.ffn.fit, 40) + piecewiseAt(t.mha.fit, 0) + piecewiseAt(t.ffn.fit, 1), 12);
    expect(() => checkLatencyTable({ ...json, hiddenSize: 16 }, 'lut.json', model.config)).toThrow(/lut.json: field 'hiddenSize' must be 8/);
    expect(() => checkLatencyTable({ ...json, intermediate: 20 }, 'lut.json', model.config)).toThrow(/'intermediate' must be at least 40/);
    expect(() => checkLatencyTable({ ...json, ffn: { ...json.ffn, units: [3, 1] } }, 'lut.json')).toThrow(/'ffn.units'/);
    expect(() => checkLatencyTable({ ...json, format: 'x' }, 'lut.json')).toThrow(/'format'/);
    model.dispose();
  });
});
