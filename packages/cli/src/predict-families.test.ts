import { beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadBert } from '@topiary/core';
import { writeOnnxFolder } from '@topiary/onnx';
import { AutoModelForSequenceClassification, AutoTokenizer, env, pipeline } from '@huggingface/transformers';
import { testBackend } from '../../core/src/test-support/backend.js';
import { SHARED, golden, maxAbsDiff } from '../../core/src/test-support/shared.js';
import { predict, type Prediction } from './predict.js';

const root = path.join(SHARED, 'goldens', 'families');
const families = existsSync(root) ? readdirSync(root).filter((f) => existsSync(path.join(root, f, 'golden.json'))).sort() : [];
const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dist/bin.js');
/** float32 against the goldens' float64 (issue 17's parity bound). */
const TOL = 1e-5;

const topiary = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 120_000 });
const ndjson = (stdout: string): Prediction[] => stdout.trim().split('\n').map((l) => JSON.parse(l) as Prediction);
const argmax = (r: number[]) => r.indexOf(Math.max(...r));

interface Golden {
  texts: string[];
  pairs: [string, string][];
  single: { logits: number[][]; token_type_ids?: number[][] };
  pair: { logits: number[][]; token_type_ids?: number[][] };
}

describe.runIf(existsSync(bin) && families.length > 0)('topiary predict on every family golden; transformers.js on the exported ONNX folders', () => {
  let dir: string;
  const files = (family: string) => ({ single: path.join(dir, `${family}-single.jsonl`), pairs: path.join(dir, `${family}-pairs.jsonl`) });
  beforeAll(async () => {
    await testBackend();
    dir = mkdtempSync(path.join(tmpdir(), 'topiary-predict-families-'));
    for (const family of families) {
      const g = golden<Golden>(`families/${family}/golden.json`);
      writeFileSync(files(family).single, g.texts.map((text) => JSON.stringify({ text })).join('\n') + '\n');
      writeFileSync(files(family).pairs, g.pairs.map(([text, pair]) => JSON.stringify({ text, pair })).join('\n') + '\n');
    }
  });

  for (const family of families) {
    it(`${family}: topiary predict --max-length 64 gives the golden's predictions on its texts and (--pair-field) its pairs`, () => {
      const g = golden<Golden>(`families/${family}/golden.json`);
      const model = path.join(root, family);
      const config = JSON.parse(readFileSync(path.join(model, 'config.json'), 'utf8')) as { id2label: Record<string, string>; type_vocab_size?: number };
      const id2label = config.id2label;
      const single = topiary('--json', 'predict', model, '--data', files(family).single, '--max-length', '64');
      const pairs = topiary('--json', 'predict', model, '--data', files(family).pairs, '--pair-field', 'pair', '--max-length', '64');
      for (const [r, side] of [[single, g.single], [pairs, g.pair]] as const) {
        expect(r.status, r.stderr).toBe(0);
        const lines = ndjson(r.stdout);
        expect(lines.map((l) => l.index)).toEqual([...side.logits.keys()]);
        expect(lines.map((l) => argmax(l.logits))).toEqual(side.logits.map(argmax));
        expect(lines.map((l) => l.label)).toEqual(side.logits.map((row) => id2label[String(argmax(row))]));
        // The logits are the golden's, except where the golden fed no token types to a model with a
        // type table of several rows: transformers 5's AlbertTokenizer returns no token_type_ids (so
        // ALBERT's golden pairs have type 0 throughout), where tokenizer.json's template, which Topiary
        // follows, gives the second segment type 1. Single texts are type 0 in every family.
        const typesDiffer = side === g.pair && !side.token_type_ids && (config.type_vocab_size ?? 0) > 1;
        if (!typesDiffer) expect(maxAbsDiff(lines.map((l) => l.logits), side.logits)).toBeLessThan(TOL);
      }
    });
  }

  it("transformers.js loads every family's exported ONNX folder offline: its tokenizer's ids give Topiary's logits, its pipeline Topiary's labels", async () => {
    const out = path.join(dir, 'onnx');
    env.allowRemoteModels = false;
    env.localModelPath = out;
    for (const family of families) {
      const src = path.join(root, family);
      const model = await loadBert(src);
      // --format all: the ONNX graph and the family's safetensors in one folder.
      await writeOnnxFolder(model, path.join(out, family), { tokenizerFrom: src, safetensors: true });
      model.dispose();
      // The family's own config.json (model_type picks transformers.js's model class) and tokenizer class.
      const read = (f: string) => JSON.parse(readFileSync(f, 'utf8'));
      const [orig, exported] = [read(path.join(src, 'config.json')), read(path.join(out, family, 'config.json'))];
      expect([exported.model_type, exported.architectures]).toEqual([orig.model_type, orig.architectures]);
      expect(read(path.join(out, family, 'tokenizer_config.json')).tokenizer_class).toBe(read(path.join(src, 'tokenizer_config.json')).tokenizer_class);
      const g = golden<Golden>(`families/${family}/golden.json`);
      // At the tokenizer's own model_max_length (transformers.js truncates pairs at 64 otherwise than Hugging Face).
      const maxLength = 128;
      const run = async (folder: string, runtime: 'tfjs' | 'onnx', data: string, pairField?: string) => {
        const got: Prediction[] = [];
        await predict(folder, { data, runtime, quantized: false, batchSize: 64, maxLength, textField: 'text', ...(pairField ? { pairField } : {}) }, (p) => got.push(p));
        return got;
      };
      const [single, pairs] = [await run(src, 'tfjs', files(family).single), await run(src, 'tfjs', files(family).pairs, 'pair')];
      // The exported folder through both of predict's runtimes: the same logits.
      for (const runtime of ['tfjs', 'onnx'] as const) {
        const again = await run(path.join(out, family), runtime, files(family).pairs, 'pair');
        expect(maxAbsDiff(again.map((p) => p.logits), pairs.map((p) => p.logits)), `${family} exported, ${runtime}`).toBeLessThan(TOL);
      }
      const tok = await AutoTokenizer.from_pretrained(family);
      const clf = await AutoModelForSequenceClassification.from_pretrained(family, { dtype: 'fp32' });
      const logits = async (inputs: Record<string, unknown>) => ((await clf(inputs)) as { logits: { tolist(): number[][] } }).logits.tolist();
      const a = await logits(await tok(g.texts, { padding: true, truncation: true, max_length: maxLength }));
      const b = await logits(await tok(g.pairs.map((p) => p[0]), { text_pair: g.pairs.map((p) => p[1]), padding: true, truncation: true, max_length: maxLength }));
      expect(maxAbsDiff(a, single.map((p) => p.logits)), `${family} texts`).toBeLessThan(TOL);
      expect(maxAbsDiff(b, pairs.map((p) => p.logits)), `${family} pairs`).toBeLessThan(TOL);
      const classify = await pipeline('text-classification', family, { dtype: 'fp32' });
      const labelled = (await classify(g.texts)) as { label: string; score: number }[];
      expect(labelled.map((x) => x.label), family).toEqual(single.map((p) => p.label));
      labelled.forEach((x, i) => expect(Math.abs(x.score - Math.max(...single[i]!.probabilities))).toBeLessThan(TOL));
      await classify.dispose();
      await clf.dispose();
    }
  });
});
