#!/usr/bin/env node
// Inference speed of exported checkpoints against a dense one, side by side in one process:
//   node scripts/speedup.mjs <dense-model-dir> <model-dir>... [--reps N] [--backend wasm]
// Batch 32 x 64 tokens, median of N timed forward passes after one warm-up. Prints a table and JSON.
import 'reflect-metadata';
import { loadBert, tf, useBackend } from '@topiary/core';
import { takeOption } from './cli-args.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => takeOption(args, name, dflt);
const reps = Number(opt('reps', '7'));
const backend = opt('backend', 'wasm');
if (args.length < 1) {
  console.error('usage: node scripts/speedup.mjs <dense-model-dir> <model-dir>... [--reps N] [--backend wasm]');
  process.exit(2);
}
await useBackend(backend);
const B = 32;
const T = 64;
const batch = {
  batchSize: B,
  seqLen: T,
  // Ids below every bundled vocabulary (bert-mini's has 8,192 entries).
  inputIds: Int32Array.from({ length: B * T }, (_, i) => 1000 + ((i * 7919) % 7000)),
  attentionMask: new Int32Array(B * T).fill(1),
  tokenTypeIds: new Int32Array(B * T),
};

async function measure(dir) {
  const model = await loadBert(dir);
  const run = () => tf.tidy(() => model.forward(batch).logits.dataSync());
  run();
  const times = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    run();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const params = [...model.params.values()].reduce((a, v) => a + v.size, 0);
  let zeros = 0;
  let encoder = 0;
  for (const [name, v] of model.params) {
    if (!name.includes('.encoder.') || !name.endsWith('.weight') || v.shape.length !== 2) continue;
    encoder += v.size;
    for (const x of v.dataSync()) if (x === 0) zeros++;
  }
  model.dispose();
  return { model: dir, params, encoderWeights: encoder, encoderWeightZeros: zeros, inferMs: times[Math.floor(reps / 2)] };
}

const rows = [];
for (const dir of args) rows.push(await measure(dir));
const dense = rows[0];
for (const r of rows) r.speedup = +(dense.inferMs / r.inferMs).toFixed(2);
console.log('| model | params | encoder weights (nonzero) | infer ms (32x64) | speedup |\n|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.model} | ${r.params} | ${r.encoderWeights - r.encoderWeightZeros} | ${r.inferMs.toFixed(1)} | ${r.speedup}x |`);
}
console.log(JSON.stringify({ backend, batch: B, tokens: T, reps, results: rows }));
