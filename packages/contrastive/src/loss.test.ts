import { beforeAll, describe, expect, it } from 'vitest';
import { tf, type Tensor2D, type Tensor3D } from '@topiary/core';
import { golden } from '../../core/src/test-support/shared.js';
import { testBackend } from '../../core/src/test-support/backend.js';
import { contrastiveLoss, meanPooled, normalizeRows } from './loss.js';

const G = golden('algorithms-golden.json').cap as Record<string, any>;
const I = G['inputs'];

describe("CAP's contrastive loss (reference parity)", () => {
  beforeAll(testBackend);

  const keys = Object.keys(G).filter((k) => k.includes('|'));
  // Every key of the form `<alignment>|unsup=<w>|sup=<w>` is a setting (how many is the golden's choice).
  it('covers every golden setting', () => {
    expect(keys.length).toBeGreaterThan(0);
    for (const k of keys) expect(k).toMatch(/^(mean-pooling|cls)\|unsup=[\d.]+\|sup=[\d.]+$/);
  });

  for (const key of keys) {
    it(key, () => {
      const [align, unsupKey, supKey] = key.split('|') as [string, string, string];
      const unsupervisedWeight = Number(unsupKey.split('=')[1]);
      const supervisedWeight = Number(supKey.split('=')[1]);
      const got = tf.tidy(() => {
        const current =
          align === 'mean-pooling'
            ? meanPooled(tf.tensor3d(I.all_output) as Tensor3D, tf.tensor2d(I.attention_mask) as Tensor2D)
            : normalizeRows(tf.tensor2d(I.pooled_output) as Tensor2D);
        const bank = tf.tensor3d(I.bank) as Tensor3D;
        const reps = bank.shape[1];
        expect(I.extra_idx).toHaveLength(Math.floor(G['settings'].extra_examples / reps));
        return contrastiveLoss({
          current,
          bank,
          idx: I.idx,
          extraIdx: I.extra_idx,
          labels: I.labels,
          bankLabels: I.bank_labels,
          temperature: G['settings'].contrastive_temperature,
          unsupervisedWeight,
          supervisedWeight,
        }).dataSync()[0]!;
      });
      const want = G[key] as number;
      expect(Math.abs(got - want) / Math.abs(want)).toBeLessThan(1e-5);
    });
  }

  it('passes gradients to the current representations only through the scored side', () => {
    const g = tf.tidy(() => {
      const bank = normalizeRows(tf.randomNormal([6, 2], 0, 1, "float32", 5) as Tensor2D).reshape([3, 2, 2]) as Tensor3D;
      const f = (x: tf.Tensor) => contrastiveLoss({ current: normalizeRows(x as Tensor2D), bank, idx: [0, 1], extraIdx: [2], labels: [0, 1], bankLabels: [0, 1, 0], temperature: 0.1, unsupervisedWeight: 1, supervisedWeight: 1 });
      return tf.grad(f)(tf.tensor2d([[1, 0], [0, 1]])).abs().sum().dataSync()[0]!;
    });
    expect(g).toBeGreaterThan(0);
    expect(Number.isFinite(g)).toBe(true);
  });
});
