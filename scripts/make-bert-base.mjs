// A BERT-base-shaped classification checkpoint (12 layers, hidden 768, 12 heads, FFN 3072, 512
// positions) with random weights, the shared 8k vocabulary and the shared task's labels, for memory and
// speed measurements at the papers' shapes (not a model to prune for accuracy: it is untrained).
//   node scripts/make-bert-base.mjs [OUT] [--layers N] [--hidden H] [--heads A] [--intermediate I] [--seed S]
// OUT defaults to runs/models/bert-base-shaped (runs/ is gitignored). Weights follow transformers'
// init: normal(0, 0.02), zero biases, LayerNorm 1/0. Written with core's safetensors writer.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSafetensors, writeDirAtomic } from '@topiary/core';
import { takeOption } from './cli-args.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const L = Number(takeOption(args, 'layers', 12));
const H = Number(takeOption(args, 'hidden', 768));
const A = Number(takeOption(args, 'heads', 12));
const I = Number(takeOption(args, 'intermediate', 4 * H));
const seed = Number(takeOption(args, 'seed', 1));
const out = path.resolve(args[0] ?? path.join(root, 'runs/models/bert-base-shaped'));
if (H % A !== 0) throw new Error(`--hidden ${H} is not a multiple of --heads ${A}`);

// The shared 8k vocabulary and the WordNet supersense labels (from the shared fine-tuned bert-mini).
const source = path.resolve(root, '../shared/models/bert-mini-wordnet-supersense');
const template = JSON.parse(await fs.readFile(path.join(source, 'config.json'), 'utf8'));
const config = {
  ...template,
  hidden_size: H,
  num_hidden_layers: L,
  num_attention_heads: A,
  intermediate_size: I,
  max_position_embeddings: 512,
};

// mulberry32 + Box-Muller: fast and deterministic by seed.
let s = seed >>> 0;
const uniform = () => {
  s = (s + 0x6d2b79f5) >>> 0;
  let t = s;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const normal = (shape, std = 0.02) => {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - uniform())) * std;
    const a = 2 * Math.PI * uniform();
    data[i] = r * Math.cos(a);
    if (i + 1 < n) data[i + 1] = r * Math.sin(a);
  }
  return { shape, data };
};
const fill = (shape, v) => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(v) });

const V = config.vocab_size;
const K = Object.keys(config.id2label).length;
const t = new Map();
// Hugging Face names and [out, in] layout.
t.set('bert.embeddings.word_embeddings.weight', normal([V, H]));
t.set('bert.embeddings.position_embeddings.weight', normal([512, H]));
t.set('bert.embeddings.token_type_embeddings.weight', normal([config.type_vocab_size, H]));
const ln = (p) => {
  t.set(`${p}.LayerNorm.weight`, fill([H], 1));
  t.set(`${p}.LayerNorm.bias`, fill([H], 0));
};
ln('bert.embeddings');
const dense = (name, o, i) => {
  t.set(`${name}.weight`, normal([o, i]));
  t.set(`${name}.bias`, fill([o], 0));
};
for (let l = 0; l < L; l++) {
  const p = `bert.encoder.layer.${l}`;
  for (const m of ['query', 'key', 'value']) dense(`${p}.attention.self.${m}`, H, H);
  dense(`${p}.attention.output.dense`, H, H);
  ln(`${p}.attention.output`);
  dense(`${p}.intermediate.dense`, I, H);
  dense(`${p}.output.dense`, H, I);
  ln(`${p}.output`);
}
dense('bert.pooler.dense', H, H);
dense('classifier', K, H);
const params = [...t.values()].reduce((a, x) => a + x.data.length, 0);

await writeDirAtomic(out, async (tmp) => {
  await writeSafetensors(path.join(tmp, 'model.safetensors'), t);
  await fs.writeFile(path.join(tmp, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  for (const f of ['vocab.txt', 'tokenizer.json', 'tokenizer_config.json']) await fs.copyFile(path.join(source, f), path.join(tmp, f));
}, { kind: 'model' });
process.stdout.write(`${out}: ${L} layers, hidden ${H}, ${A} heads, FFN ${I}, vocabulary ${V}, ${K} labels, ${params.toLocaleString('en-US')} parameters\n`);
