import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { readdirSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import { tf } from '../../tf.js';
import { loadBert } from '../../io/checkpoint.js';
import { loadTokenizer } from '../../io/tokenizer.js';
import { makeBatch } from '../../data/dataset.js';
import type { Batch, BertModel } from '../bert.js';
import { SHARED, golden, maxAbsDiff } from '../../test-support/shared.js';
import { testBackend } from '../../test-support/backend.js';

const root = path.join(SHARED, 'goldens', 'families');
const families = existsSync(root) ? readdirSync(root).filter((f) => existsSync(path.join(root, f, 'golden.json'))) : [];

interface GoldenSide {
  input_ids: number[][];
  attention_mask: number[][];
  token_type_ids?: number[][];
  logits: number[][];
  first_token_per_layer: number[][][];
  last_hidden_state: number[][][];
}

function toBatch(g: GoldenSide): Batch {
  const B = g.input_ids.length;
  const T = g.input_ids[0]!.length;
  return {
    batchSize: B,
    seqLen: T,
    inputIds: Int32Array.from(g.input_ids.flat()),
    attentionMask: Int32Array.from(g.attention_mask.flat()),
    tokenTypeIds: g.token_type_ids ? Int32Array.from(g.token_type_ids.flat()) : new Int32Array(B * T),
  };
}

const TOL = 1e-5;

describe.skipIf(families.length === 0)('families: parity with Hugging Face transformers', () => {
  beforeAll(testBackend);
  for (const family of families) {
    describe(family, () => {
      const dir = path.join(root, family);
      const g = golden(`families/${family}/golden.json`);
      let model: BertModel;
      beforeAll(async () => {
        model = await loadBert(dir);
      });
      afterAll(() => model?.dispose());

      it('reads the family from config.json', () => {
        expect(model.config.modelType).toBe(g.model_type);
      });

      for (const kind of ['single', 'pair'] as const) {
        it(`tokenizes to Hugging Face's ids, padded to the longest with the tokenizer's pad id (${kind})`, async () => {
          const tok = await loadTokenizer(dir);
          const gk: GoldenSide = g[kind];
          const inputs: [string, string?][] = kind === 'single' ? g.texts.map((t: string) => [t]) : g.pairs;
          const encoded = inputs.map(([a, b]) => tok.encode(a, b, 64));
          const batch = makeBatch(encoded.map((e) => ({ ...e, label: 0 })), tok.padId);
          expect(batch.seqLen).toBe(gk.input_ids[0]!.length);
          expect(Array.from(batch.inputIds)).toEqual(gk.input_ids.flat());
          expect(Array.from(batch.attentionMask)).toEqual(gk.attention_mask.flat());
          if (gk.token_type_ids) expect(Array.from(batch.tokenTypeIds)).toEqual(gk.token_type_ids.flat());
        });

        it(`matches logits, the first token after every layer and the last hidden state (${kind})`, () => {
          const gk: GoldenSide = g[kind];
          const before = tf.memory().numTensors;
          const out = tf.tidy(() => {
            const o = model.forward(toBatch(gk), { outputHiddenStates: true });
            return {
              logits: o.logits!.arraySync(),
              first: o.hiddenStates!.map((h) => tf.slice(h, [0, 0, 0], [h.shape[0], 1, h.shape[2]]).squeeze([1]).arraySync()),
              last: o.sequenceOutput.arraySync(),
            };
          });
          expect(tf.memory().numTensors).toBe(before);
          expect(maxAbsDiff(out.logits, gk.logits)).toBeLessThan(TOL);
          // first_token_per_layer is [layer][example][hidden], layer 0 the embedding output.
          expect(out.first.length).toBe(gk.first_token_per_layer.length);
          for (let l = 0; l < out.first.length; l++) expect(maxAbsDiff(out.first[l], gk.first_token_per_layer[l])).toBeLessThan(TOL);
          // Padding positions differ by design (HF attends nothing there either); compare attended tokens.
          for (let b = 0; b < gk.attention_mask.length; b++) {
            const n = gk.attention_mask[b]!.reduce((s, x) => s + x, 0);
            expect(maxAbsDiff(out.last[b]!.slice(0, n), gk.last_hidden_state[b]!.slice(0, n))).toBeLessThan(TOL);
          }
        });
      }
    });
  }
});
