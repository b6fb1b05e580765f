import { describe, expect, it, beforeAll } from 'vitest';
import { tf } from '../tf.js';
import { loadBert } from '../io/checkpoint.js';
import { loadTokenizer } from '../io/tokenizer.js';
import type { BertModel, StructuredMasks } from './bert.js';
import { golden, goldenBatch, maxAbsDiff, modelDir } from '../test-support/shared.js';
import { testBackend } from '../test-support/backend.js';


function masksFrom(m: Record<string, any>, keys: string[]): StructuredMasks {
  const out: StructuredMasks = {};
  if (keys.includes('head_mask')) out.headMask = m.head_mask.map((r: number[]) => tf.tensor1d(r));
  if (keys.includes('neuron_mask')) out.neuronMask = m.neuron_mask.map((r: number[]) => tf.tensor1d(r));
  if (keys.includes('hidden_mask')) out.hiddenMask = tf.tensor1d(m.hidden_mask);
  if (keys.includes('mha_mask')) out.mhaMask = tf.tensor1d(m.mha_mask);
  if (keys.includes('ffn_mask')) out.ffnMask = tf.tensor1d(m.ffn_mask);
  return out;
}

for (const name of ['bert-tiny', 'bert-mini'] as const) {
  describe(`${name} parity with Hugging Face`, () => {
    const g = golden(`${name}-golden.json`);
    const dir = modelDir(`${name}-wordnet-supersense`);
    let model: BertModel;
    beforeAll(async () => {
      await testBackend();
      model = await loadBert(dir);
    });

    it('tokenizes texts and pairs to the same ids (tokenizer.json and vocab.txt)', async () => {
      const tok = await loadTokenizer(dir);
      for (const [i, text] of g.texts.entries()) {
        const e = tok.encode(text);
        const n = e.inputIds.length;
        expect(e.inputIds).toEqual(g.single.input_ids[i].slice(0, n));
        expect(g.single.attention_mask[i].reduce((a: number, b: number) => a + b, 0)).toBe(n);
      }
      for (const [i, [a, b]] of g.pairs.entries()) {
        const e = tok.encode(a, b);
        const n = e.inputIds.length;
        expect(e.inputIds).toEqual(g.pair.input_ids[i].slice(0, n));
        expect(e.tokenTypeIds).toEqual(g.pair.token_type_ids[i].slice(0, n));
      }
    });

    for (const kind of ['single', 'pair'] as const) {
      it(`matches logits, per-layer [CLS]${name === 'bert-tiny' ? ' and hidden states' : ''} (${kind})`, () => {
        const gk = g[kind];
        const out = tf.tidy(() => {
          const o = model.forward(goldenBatch(gk), { outputHiddenStates: true });
          return {
            logits: o.logits!.arraySync(),
            cls: o.hiddenStates!.map((h) => tf.slice(h, [0, 0, 0], [h.shape[0], 1, h.shape[2]]).squeeze([1]).arraySync()),
            hidden: o.hiddenStates!.map((h) => h.arraySync()),
          };
        });
        expect(maxAbsDiff(out.logits, gk.logits)).toBeLessThan(1e-4);
        // Without hidden states (and no tape), inference frees each layer's input once consumed.
        const before = tf.memory().numTensors;
        const plain = tf.tidy(() => model.forward(goldenBatch(gk)).logits!.arraySync());
        expect(maxAbsDiff(plain, gk.logits)).toBeLessThan(1e-4);
        expect(tf.memory().numTensors).toBe(before);
        // golden cls_per_layer is [layer][example][hidden], layer 0 the embedding output
        expect(out.cls.length).toBe(gk.cls_per_layer.length);
        for (let l = 0; l < out.cls.length; l++) expect(maxAbsDiff(out.cls[l], gk.cls_per_layer[l])).toBeLessThan(1e-4);
        if (gk.hidden_states) {
          // golden hidden_states is [layer][example][token][hidden]; compare attended tokens only
          for (let l = 0; l < out.hidden.length; l++) {
            for (let b = 0; b < gk.attention_mask.length; b++) {
              const n = gk.attention_mask[b].reduce((a: number, x: number) => a + x, 0);
              expect(maxAbsDiff(out.hidden[l]![b]!.slice(0, n), gk.hidden_states[l][b].slice(0, n))).toBeLessThan(1e-4);
            }
          }
        }
      });
    }

    for (const key of Object.keys(g.masked).filter((k) => k !== 'masks')) {
      it(`matches logits and last [CLS] under ${key}`, () => {
        const res = tf.tidy(() => {
          const masks = masksFrom(g.masked.masks, key.split('+'));
          const o = model.forward(goldenBatch(g.single), { masks, outputHiddenStates: true });
          const last = o.hiddenStates![o.hiddenStates!.length - 1]!;
          return { logits: o.logits!.arraySync(), cls: tf.slice(last, [0, 0, 0], [last.shape[0], 1, last.shape[2]]).squeeze([1]).arraySync() };
        });
        expect(maxAbsDiff(res.logits, g.masked[key].logits)).toBeLessThan(1e-4);
        expect(maxAbsDiff(res.cls, g.masked[key].last_cls)).toBeLessThan(1e-4);
      });
    }

    it('matches logits under fractional head and neuron masks', () => {
      const logits = tf.tidy(() => model.forward(goldenBatch(g.single), { masks: masksFrom(g.soft_masked.masks, ['head_mask', 'neuron_mask']) }).logits!.arraySync());
      expect(maxAbsDiff(logits, g.soft_masked.logits)).toBeLessThan(1e-4);
    });
  });
}
