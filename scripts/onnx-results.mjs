#!/usr/bin/env node
// The ONNX rows of docs/results.md: for each exported (compacted) model folder, its dev accuracy in
// Topiary (tfjs), in ONNX Runtime fp32 and int8 (the graphs `topiary export --format onnx --quantize
// int8` writes), and ONNX Runtime's speedup over the dense teacher at batch 32 x 64, timed round-robin
// in this process.
//   node scripts/onnx-results.mjs --teacher <dense-dir> --dev <dev.jsonl> [--threads 1] <model-dir>...
import 'reflect-metadata';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { DEFAULT_TRAINING, evaluate, loadBert, loadDataset, loadTokenizer, useBackend } from '@topiary/core';
import { bertToOnnx } from '@topiary/onnx';
import { takeOption } from './cli-args.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => takeOption(args, name, dflt);
const teacherDir = opt('teacher');
const devFile = opt('dev');
const threads = Number(opt('threads', '1'));
const reps = Number(opt('reps', '10'));
if (!teacherDir || !devFile) {
  console.error('usage: node scripts/onnx-results.mjs --teacher <dir> --dev <file> [--threads N] <model-dir>...');
  process.exit(2);
}
await useBackend('wasm');
const B = 32;
const T = 64;
const big = (a) => BigInt64Array.from(a, (v) => BigInt(v));
const feedsOf = (b) =>
  Object.fromEntries([['input_ids', b.inputIds], ['attention_mask', b.attentionMask], ['token_type_ids', b.tokenTypeIds]].map(([k, v]) => [k, new ort.Tensor('int64', big(v), [b.batchSize, b.seqLen])]));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const params = (m) => [...m.params.values()].reduce((a, v) => a + v.size, 0);

const rows = [];
const timed = {};
const timing = { batchSize: B, seqLen: T, inputIds: Int32Array.from({ length: B * T }, (_, i) => 1000 + ((i * 7919) % 7000)), attentionMask: new Int32Array(B * T).fill(1), tokenTypeIds: new Int32Array(B * T) };
for (const dir of [teacherDir, ...args]) {
  const model = await loadBert(dir);
  const tok = await loadTokenizer(dir);
  const dev = await loadDataset(devFile, tok, { labels: model.config.id2label, maxLength: DEFAULT_TRAINING.maxLength });
  const tfjsAccuracy = evaluate(model, dev, { batchSize: 128 }).accuracy;
  const { fp32, int8 } = bertToOnnx(model, { quantize: 'int8' });
  const acc = {};
  for (const [dtype, bytes] of [['fp32', fp32], ['int8', int8]]) {
    const s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: threads, interOpNumThreads: 1 });
    let correct = 0;
    const K = model.numLabels;
    for (const b of dev.batches(128)) {
      const logits = (await s.run(feedsOf(b))).logits.data;
      for (let r = 0; r < b.batchSize; r++) {
        let best = 0;
        for (let j = 1; j < K; j++) if (logits[r * K + j] > logits[r * K + best]) best = j;
        if (best === b.labels[r]) correct++;
      }
    }
    acc[dtype] = correct / dev.size;
    timed[`${dir}/${dtype}`] = s;
  }
  const c = model.config;
  rows.push({ model: path.basename(dir) === 'model' ? path.basename(path.dirname(dir)) : path.basename(dir), dir, heads: c.layerHeads.join(' '), hidden: c.hiddenSize, params: params(model), tfjs: tfjsAccuracy, fp32: acc.fp32, int8: acc.int8, fp32Bytes: fp32.byteLength, int8Bytes: int8.byteLength });
  console.error(JSON.stringify(rows.at(-1)));
  model.dispose();
}
// Round-robin timing of every session on the same batch.
const samples = Object.fromEntries(Object.keys(timed).map((k) => [k, []]));
const feeds = feedsOf(timing);
for (const s of Object.values(timed)) await s.run(feeds);
for (let i = 0; i < reps; i++) {
  for (const [k, s] of Object.entries(timed)) {
    const t0 = performance.now();
    await s.run(feeds);
    samples[k].push(performance.now() - t0);
  }
}
const ms = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
const dense = ms[`${teacherDir}/fp32`];
const pct = (x) => `${(100 * x).toFixed(2)}%`;
console.log(`| model | heads per layer | hidden | params | Topiary (tfjs) | ONNX fp32 | ONNX int8 | fp32 ms | int8 ms | fp32 speedup | int8 speedup | int8 MB |`);
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  const f = ms[`${r.dir}/fp32`];
  const q = ms[`${r.dir}/int8`];
  console.log(`| ${r.model} | ${r.heads} | ${r.hidden} | ${r.params.toLocaleString('en-US')} | ${pct(r.tfjs)} | ${pct(r.fp32)} | ${pct(r.int8)} | ${f.toFixed(1)} | ${q.toFixed(1)} | ${(dense / f).toFixed(2)}x | ${(dense / q).toFixed(2)}x | ${(r.int8Bytes / 1e6).toFixed(1)} |`);
}
for (const s of Object.values(timed)) await s.release();
console.log(JSON.stringify({ threads, batch: B, tokens: T, rows: rows.map((r) => ({ ...r, fp32Ms: ms[`${r.dir}/fp32`], int8Ms: ms[`${r.dir}/int8`] })) }));
