import { beforeAll, describe, expect, it } from 'vitest';
import { MaskSet, loadBert, tf, type Batch } from '@topiary/core';
import { golden, goldenBatch, modelDir } from '../../core/src/test-support/shared.js';
import { testBackend } from '../../core/src/test-support/backend.js';
import { FirstOrderCriterion } from './firstorder.js';

/** The golden's single texts with their labels. */
const singleBatch = (g: any): Batch => goldenBatch(g.single, g.labels);

const relErr = (got: ArrayLike<number>, want: number[]) => {
  const scale = Math.max(...want.map(Math.abs));
  return Math.max(...want.map((w, i) => Math.abs(got[i]! - w))) / scale;
};

describe('first-order criterion (Hugging Face goldens)', () => {
  beforeAll(testBackend);

  for (const name of ['bert-tiny', 'bert-mini']) {
    it(`matches |dL/dm| of heads and neurons on ${name} to 1e-4 relative`, async () => {
      const g = golden(`${name}-golden.json`);
      const model = await loadBert(modelDir(`${name}-wordnet-supersense`));
      const masks = MaskSet.ones(model);
      const groups = model.config.layerHeads.flatMap((a, l) => [
        { kind: 'head' as const, layer: l, size: a },
        { kind: 'neuron' as const, layer: l, size: model.config.layerIntermediate[l]! },
      ]);
      const batch = singleBatch(g);
      const raw = await new FirstOrderCriterion({ normalize: false }).score(groups, { model, masks, batches: () => [batch] });
      g.first_order.head_importance.forEach((row: number[], l: number) => expect(relErr(raw.get(`head:${l}`)!, row)).toBeLessThan(1e-4));
      g.first_order.neuron_importance.forEach((row: number[], l: number) => expect(relErr(raw.get(`neuron:${l}`)!, row)).toBeLessThan(1e-4));
      // Per-layer normalisation divides by the layer's L2 norm; accumulation sums over batches.
      const norm = await new FirstOrderCriterion().score(groups, { model, masks, batches: () => [batch, batch] });
      const row = g.first_order.head_importance[0] as number[];
      const l2 = Math.hypot(...row);
      expect(relErr(norm.get('head:0')!, row.map((v) => v / l2))).toBeLessThan(1e-4);
      model.dispose();
    });
  }

  it('scores whole layers by |dL/dm| of the layer gate: the central difference of the loss, summed over batches', async () => {
    const { randomBert } = await import('../../core/src/test-support/random-bert.js');
    const { crossEntropy } = await import('@topiary/core');
    const model = randomBert({ layers: 3, hidden: 8, heads: 2, intermediate: 6, labels: 3 }, 9, 0.3, 0.2);
    const batches: Batch[] = [0, 1].map((k) => ({ batchSize: 2, seqLen: 4, inputIds: Int32Array.from([1, 5 + k, 9, 2, 1, 7, 3 + k, 0]), attentionMask: Int32Array.from([1, 1, 1, 1, 1, 1, 1, 0]), tokenTypeIds: new Int32Array(8), labels: Int32Array.from([k, 2]) }));
    const masks = MaskSet.ones(model);
    const scores = (await new FirstOrderCriterion().score([{ kind: 'layer', size: 3 }], { model, masks, batches: () => batches })).get('layer')!;
    const loss = (b: Batch, gate: number[]) => tf.tidy(() => crossEntropy(model.forward(b, { masks: { layerMask: tf.tensor1d(gate) } }).logits!, tf.tensor1d(b.labels!, 'int32')).dataSync()[0]!);
    const eps = 1e-2;
    for (let l = 0; l < 3; l++) {
      const want = batches.reduce((a, b) => {
        const up = [1, 1, 1].map((v, i) => (i === l ? v + eps : v));
        const down = [1, 1, 1].map((v, i) => (i === l ? v - eps : v));
        return a + Math.abs((loss(b, up) - loss(b, down)) / (2 * eps));
      }, 0);
      expect(Math.abs(scores[l]! - want)).toBeLessThan(2e-3 * Math.max(1, want));
    }
    model.dispose();
  });

  it('scores weights by |w dL/dw| (the magnitude of the movement goldens)', async () => {
    const g = golden('bert-tiny-golden.json');
    const model = await loadBert(modelDir('bert-tiny-wordnet-supersense'));
    const param = 'bert.encoder.layer.0.attention.self.query.weight';
    const scores = await new FirstOrderCriterion().score([{ kind: 'weight', param, size: model.params.get(param)!.size }], {
      model,
      masks: MaskSet.ones(model),
      batches: () => [singleBatch(g)],
    });
    // Golden is [out, in]; ours [in, out].
    const want = tf.tidy(() => tf.tensor2d(g.movement[param]).abs().transpose().dataSync());
    expect(relErr(scores.get(`weight:${param}`)!, Array.from(want))).toBeLessThan(1e-4);
    model.dispose();
  });

  it('refuses groups it cannot score and a kd loss without a teacher', async () => {
    await expect(new FirstOrderCriterion().score([{ kind: 'hidden', size: 4 }], {} as never)).rejects.toThrow(/cannot score 'hidden'/);
    expect(() => new FirstOrderCriterion({ loss: 'mse' as never })).toThrow(/option 'loss'/);
  });
});
