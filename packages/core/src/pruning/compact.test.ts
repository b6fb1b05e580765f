import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { tf } from '../tf.js';
import { loadBert, saveBert } from '../io/checkpoint.js';
import { loadTokenizer } from '../io/tokenizer.js';
import { Dataset } from '../data/dataset.js';
import { MaskSet, bindMasks } from './masks.js';
import { compact } from './compact.js';
import { Rng } from '../model/ops.js';
import { modelDir } from '../test-support/shared.js';
import { testBackend } from '../test-support/backend.js';
import type { BertModel, Batch } from '../model/bert.js';

const texts = [
  'a small domesticated carnivorous mammal with soft fur',
  'move fast by using one\'s feet',
  'the act of terminating a project before it is completed',
  'a building for public worship',
];

async function sampleBatch(dir: string): Promise<Batch> {
  const tok = await loadTokenizer(dir);
  const ds = Dataset.encode(texts.map((text, i) => ({ text, pair: i % 2 ? 'run' : undefined, line: i + 1 })) as never, tok, []);
  return [...ds.batches(4)][0]!;
}

function randomMasks(model: BertModel, seed: number, fractional: boolean): MaskSet {
  const rng = new Rng(seed);
  const m = MaskSet.ones(model);
  const v = () => (fractional ? 0.3 + 0.7 * rng.next() : 1);
  m.headMask = m.headMask.map((h) => h.map(() => (rng.next() < 0.4 ? 0 : v())));
  m.headMask[0]![0] = 0; // at least one removed head
  m.neuronMask = m.neuronMask.map((h) => h.map(() => (rng.next() < 0.5 ? 0 : v())));
  m.hiddenMask = m.hiddenMask.map(() => (rng.next() < 0.2 ? 0 : 1));
  m.mhaMask[1] = fractional ? 0.8 : 1;
  m.ffnMask[model.config.numHiddenLayers - 1] = 0; // a whole FFN block removed
  const q = 'bert.encoder.layer.0.attention.self.query.weight';
  const w = model.param(q);
  m.weightMasks.set(q, Float32Array.from({ length: w.size }, () => (rng.next() < 0.5 ? 0 : 1)));
  return bindMasks(m, model);
}

const logitsOf = (model: BertModel, batch: Batch, masks?: MaskSet) =>
  tf.tidy(() => {
    const t = masks?.toTensors();
    return model.forward(batch, t ?? {}).logits!.arraySync();
  });

const maxDiff = (a: number[][], b: number[][]) => Math.max(...a.flatMap((r, i) => r.map((x, j) => Math.abs(x - b[i]![j]!))));

describe('compaction and export', () => {
  beforeAll(testBackend);

  for (const fractional of [false, true]) {
    it(`a compacted model computes the masked model's logits (${fractional ? 'fractional' : 'binary'} masks), and reloads`, async () => {
      const dir = modelDir('bert-mini-wordnet-supersense');
      const model = await loadBert(dir);
      const batch = await sampleBatch(dir);
      const masks = randomMasks(model, fractional ? 7 : 3, fractional);
      const masked = logitsOf(model, batch, masks);
      const small = compact(model, masks);
      expect(maxDiff(logitsOf(small, batch), masked)).toBeLessThan(1e-4);
      // Unmasked logits differ: the masks do something.
      expect(maxDiff(logitsOf(model, batch), masked)).toBeGreaterThan(1e-2);

      const out = path.join(mkdtempSync(path.join(tmpdir(), 'topiary-')), 'pruned');
      await saveBert(small, out, { tokenizerFrom: dir });
      const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
      expect(cfg.hidden_size).toBe(masks.hiddenMask.filter((x) => x !== 0).length);
      expect(cfg.topiary_layer_heads).toEqual(masks.headMask.map((h, l) => (masks.mhaMask[l] === 0 ? 0 : h.filter((x) => x !== 0).length)));
      expect(cfg.topiary_layer_intermediate[3]).toBe(0);
      expect(cfg.pruned_heads['0']).toContain(0);
      expect(cfg.attention_head_size).toBe(64);
      const reloaded = await loadBert(out);
      expect(maxDiff(logitsOf(reloaded, batch), masked)).toBeLessThan(1e-4);
      // Unstructured zeros survive export.
      const q = reloaded.param('bert.encoder.layer.0.attention.self.query.weight').dataSync();
      expect(q.filter((x) => x === 0).length).toBeGreaterThan(q.length * 0.3);
      expect(masks.sparsity(model).encoderSparsity).toBeGreaterThan(0.3);
      for (const m of [model, small, reloaded]) m.dispose();
    });
  }
});
