import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { readdirSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { tf } from '../../tf.js';
import { loadBert, saveBert } from '../../io/checkpoint.js';
import { parseSafetensors, serializeSafetensors } from '../../io/safetensors.js';
import { MaskSet, bindMasks } from '../../pruning/masks.js';
import { compact, compactedParamCount } from '../../pruning/compact.js';
import { BUILTIN_FAMILIES } from './index.js';
import { loadTokenizer } from '../../io/tokenizer.js';
import { Dataset } from '../../data/dataset.js';
import type { Batch, BertModel } from '../bert.js';
import { SHARED, golden, goldenBatch, maxAbsDiff } from '../../test-support/shared.js';
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
          // Through a dataset, as runs batch: padded to the longest with the tokenizer's padding id.
          const raw = inputs.map(([text, pair], i) => ({ text, ...(pair !== undefined ? { pair } : {}), line: i + 1 }));
          const [batch] = [...Dataset.encode(raw, tok, [], { maxLength: 64 }).batches(inputs.length)] as [Batch];
          expect(batch.seqLen).toBe(gk.input_ids[0]!.length);
          expect(Array.from(batch.inputIds)).toEqual(gk.input_ids.flat());
          expect(Array.from(batch.attentionMask)).toEqual(gk.attention_mask.flat());
          if (gk.token_type_ids) expect(Array.from(batch.tokenTypeIds)).toEqual(gk.token_type_ids.flat());
        });

        it(`matches logits, the first token after every layer and the last hidden state (${kind})`, () => {
          const gk: GoldenSide = g[kind];
          const before = tf.memory().numTensors;
          const out = tf.tidy(() => {
            const o = model.forward(goldenBatch(gk), { outputHiddenStates: true });
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

describe.skipIf(families.length === 0)('families: save and reload', () => {
  beforeAll(testBackend);
  for (const family of families) {
    it(`${family}: saves under the family's own tensor names and config, reloads with the same logits; hidden-dim compaction is exact`, async () => {
      const dir = path.join(root, family);
      const g = golden(`families/${family}/golden.json`);
      const model = await loadBert(dir);
      const out = path.join(mkdtempSync(path.join(tmpdir(), `topiary-${family}-`)), 'model');
      await saveBert(model, out, { tokenizerFrom: dir });
      const orig = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
      const saved = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
      expect(saved.model_type).toBe(orig.model_type);
      expect(saved.architectures).toEqual(orig.architectures);
      expect(existsSync(path.join(out, 'tokenizer_config.json'))).toBe(true);
      // Every tensor the encoder uses is written under its checkpoint name (so transformers reloads it).
      const names = (f: string) => [...parseSafetensors(readFileSync(f)).keys()].filter((n) => !n.endsWith('position_ids')).sort();
      expect(names(path.join(out, 'model.safetensors'))).toEqual(names(path.join(dir, 'model.safetensors')));
      const reloaded = await loadBert(out);
      const batch = goldenBatch(g.pair);
      const logits = (m: BertModel, masks?: MaskSet) =>
        tf.tidy(() => {
          const t = masks?.toTensors();
          return m.forward(batch, t ? { masks: t.masks, weightMasks: t.weightMasks } : {}).logits!.arraySync();
        });
      expect(maxAbsDiff(logits(reloaded), g.pair.logits)).toBeLessThan(TOL);

      // Half the hidden dimensions, a head and some neurons: the compacted model computes the masked one.
      const masks = bindMasks(MaskSet.ones(model), model);
      masks.hiddenMask.forEach((_, i) => (masks.hiddenMask[i] = i % 2));
      masks.headMask[0]![1] = 0;
      masks.neuronMask[1]!.fill(0, 0, 16);
      const small = compact(model, masks);
      expect(small.config.hiddenSize).toBe(model.config.hiddenSize / 2);
      expect(maxAbsDiff(logits(small), logits(model, masks))).toBeLessThan(TOL);
      // ... and saved (layers no longer identical: ALBERT writes one group per layer), reloads the same.
      const out2 = path.join(path.dirname(out), 'small');
      await saveBert(small, out2);
      const small2 = await loadBert(out2);
      expect(maxAbsDiff(logits(small2), logits(small))).toBeLessThan(TOL);
      expect(compactedParamCount(model, masks)).toBe([...small.params.values()].reduce((a, v) => a + v.size, 0));
      for (const m of [model, reloaded, small, small2]) m.dispose();
    });
  }

  it('an unknown model_type is an error naming the file, the field and the known families', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'topiary-unknown-'));
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'gpt2', hidden_size: 64 }));
    const err = await loadBert(dir).catch((e: Error) => e);
    expect(String(err)).toContain(path.join(dir, 'config.json'));
    expect(String(err)).toContain("field 'model_type'");
    for (const f of BUILTIN_FAMILIES) expect(String(err)).toContain(`"${f.id}"`);
  });
});

describe.skipIf(!families.includes('roberta'))('families: bare base-model checkpoints', () => {
  beforeAll(testBackend);
  it('loads a RobertaModel checkpoint (tensor names without the roberta. prefix) with the golden hidden states', async () => {
    const src = path.join(root, 'roberta');
    const g = golden('families/roberta/golden.json');
    const dir = mkdtempSync(path.join(tmpdir(), 'topiary-bare-'));
    const tensors = new Map([...parseSafetensors(readFileSync(path.join(src, 'model.safetensors')))].filter(([n]) => n.startsWith('roberta.')).map(([n, t]) => [n.slice('roberta.'.length), t]));
    writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat(serializeSafetensors(tensors).map((c) => Buffer.from(c))));
    const cfg = JSON.parse(readFileSync(path.join(src, 'config.json'), 'utf8'));
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, architectures: ['RobertaModel'] }));
    const model = await loadBert(dir);
    expect(model.hasClassifier).toBe(false);
    const last = tf.tidy(() => model.forward(goldenBatch(g.single)).sequenceOutput.arraySync());
    for (let b = 0; b < g.single.attention_mask.length; b++) {
      const n = g.single.attention_mask[b].reduce((s: number, x: number) => s + x, 0);
      expect(maxAbsDiff(last[b]!.slice(0, n), g.single.last_hidden_state[b].slice(0, n))).toBeLessThan(TOL);
    }
    model.dispose();
  });
});
