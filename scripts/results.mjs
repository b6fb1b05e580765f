#!/usr/bin/env node
// Builds the results rows of docs/results.md from finished runs: for every exported level model of
// each run (`exportLevels: true`; a run without levels gives its exported `model`), dev accuracy on the full dev set, encoder parameters left, and the
// inference speedup over the dense teacher measured side by side in this process (batch 32 x 64).
//   node scripts/results.mjs --teacher <dense-dir> --dev <dev.jsonl> --levels 3,5,7 <run-dir>...
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { evaluate, loadBert, loadDataset, loadTokenizer, tf, useBackend } from '@topiary/core';
import { takeOption } from './cli-args.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => takeOption(args, name, dflt);
const teacherDir = opt('teacher');
const devFile = opt('dev');
const levels = opt('levels', '')
  .split(',')
  .filter(Boolean)
  .map(Number);
if (!teacherDir || !devFile || args.length === 0) {
  console.error('usage: node scripts/results.mjs --teacher <dir> --dev <file> [--levels 3,5,7] <run-dir>...');
  process.exit(2);
}
await useBackend('wasm');
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
const tokenizer = await loadTokenizer(teacherDir);

function inferMs(model) {
  const run = () => tf.tidy(() => model.forward(batch).logits.dataSync());
  run();
  const times = [];
  for (let i = 0; i < 7; i++) {
    const t0 = performance.now();
    run();
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[3];
}

const encoderParams = (m) => [...m.params].filter(([n]) => n.includes('.encoder.')).reduce((a, [, v]) => a + v.size, 0);

async function measure(dir) {
  const model = await loadBert(dir);
  const dev = await loadDataset(devFile, tokenizer, { labels: model.config.id2label, maxLength: 64 });
  const accuracy = evaluate(model, dev, { batchSize: 128 }).accuracy;
  const ms = inferMs(model);
  const row = { model: dir, accuracy, encoderParams: encoderParams(model), params: [...model.params.values()].reduce((a, v) => a + v.size, 0), inferMs: ms };
  model.dispose();
  return row;
}

const teacher = await measure(teacherDir);
console.error(`teacher ${(100 * teacher.accuracy).toFixed(2)}%, ${teacher.inferMs.toFixed(1)} ms`);
const rows = [];
for (const run of args) {
  const report = JSON.parse(readFileSync(path.join(run, 'report.json'), 'utf8'));
  // A run without levels (cofi, movement) is one row: its exported model.
  const entries = report.levels?.length ? report.levels : [{ level: '-', targetSparsity: report.targetSparsity, encoderSparsity: report.encoderSparsity, model: path.join(run, 'model') }];
  for (const level of entries) {
    if (report.levels?.length && levels.length && !levels.includes(level.level)) continue;
    if (!level.model) continue;
    const r = await measure(level.model);
    const row = {
      run: path.basename(run),
      level: level.level,
      targetSparsity: level.targetSparsity,
      encoderSparsity: level.encoderSparsity,
      accuracy: r.accuracy,
      retention: r.accuracy / teacher.accuracy,
      encoderParams: r.encoderParams,
      params: r.params,
      speedup: teacher.inferMs / r.inferMs,
    };
    rows.push(row);
    console.error(JSON.stringify(row));
  }
}
const pct = (x) => `${(100 * x).toFixed(1)}%`;
console.log(`| run | level | encoder sparsity | dev accuracy | of teacher | encoder params | all params | inference speedup |`);
console.log(`|---|---|---|---|---|---|---|---|`);
console.log(`| teacher (dense) | - | 0% | ${pct(teacher.accuracy)} | 100% | ${teacher.encoderParams.toLocaleString('en')} | ${teacher.params.toLocaleString('en')} | 1.00x |`);
for (const r of rows) {
  console.log(
    `| ${r.run} | ${r.level} | ${pct(r.encoderSparsity)} | ${pct(r.accuracy)} | ${pct(r.retention)} | ${r.encoderParams.toLocaleString('en')} | ${r.params.toLocaleString('en')} | ${r.speedup.toFixed(2)}x |`,
  );
}
console.log(JSON.stringify({ teacher, rows }));
