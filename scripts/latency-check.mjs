#!/usr/bin/env node
// Does a latency-constrained retraining-free model land on its target? Times the dense and the
// pruned (exported) model side by side at the latency table's batch and length, round-robin:
//   node scripts/latency-check.mjs --lut <table.json> --dense <dense-dir> --constraint 0.6 <pruned-dir>... [--rounds N]
// Encoder latency = the forward pass minus the embeddings and the head (timed alone, as `topiary
// profile` does); the target is `constraint` x the dense encoder's. Also the whole forward pass ratio;
// by the median of the rounds and by the fastest round.
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import { loadBert, profileModel, syntheticBatch, timeMs, useBackend } from '@topiary/core';
import { takeOption } from './cli-args.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => takeOption(args, name, dflt);
const lutFile = opt('lut');
const denseDir = opt('dense');
const constraint = Number(opt('constraint'));
const rounds = Number(opt('rounds', '15'));
if (!lutFile || !denseDir || !(constraint > 0) || args.length < 1) {
  console.error('usage: node scripts/latency-check.mjs --lut <table.json> --dense <dense-dir> --constraint F <pruned-dir>... [--rounds N]');
  process.exit(2);
}
await useBackend(opt('backend', 'wasm'));
const lut = JSON.parse(readFileSync(lutFile, 'utf8'));
const dirs = [denseDir, ...args];
const models = await Promise.all(dirs.map((d) => loadBert(d)));
const batch = syntheticBatch(models[0].config, lut.batch, lut.seq);
// The non-encoder part (embeddings, pooler, classifier) of each model, from its profile.
const outside = [];
for (const m of models) {
  const p = await profileModel(m, { batch: lut.batch, seq: lut.seq, repeats: rounds });
  outside.push(p.modules.filter((x) => x.group === 'embeddings' || x.group === 'head').reduce((a, x) => a + x.ms, 0));
}
const forward = (m) => () => {
  const out = m.forward(batch);
  return [out.sequenceOutput, ...(out.pooled ? [out.pooled] : []), ...(out.logits ? [out.logits] : [])];
};
for (const m of models) timeMs(forward(m), 1, 2);
const times = models.map(() => []);
for (let r = 0; r < rounds; r++) models.forEach((m, i) => times[i].push(timeMs(forward(m), 1, 0)));
const median = (t) => {
  const s = [...t].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
// The median, and the fastest round (on a shared machine the least disturbed by other processes).
const rowsBy = (stat) => {
  const fw = times.map(stat);
  const enc = fw.map((f, i) => f - outside[i]);
  return dirs.map((d, i) => ({
    model: d,
    forwardMs: fw[i],
    encoderMs: enc[i],
    encoderFraction: enc[i] / enc[0],
    forwardFraction: fw[i] / fw[0],
    targetEncoderMs: constraint * enc[0],
    offTarget: i === 0 ? null : enc[i] / (constraint * enc[0]) - 1,
  }));
};
const result = { median: rowsBy(median), min: rowsBy((t) => Math.min(...t)) };
for (const [stat, rows] of Object.entries(result)) {
  for (const r of rows) {
    console.log(`${stat}: ${r.model}: forward ${r.forwardMs.toFixed(2)} ms (${(100 * r.forwardFraction).toFixed(1)}% of dense), encoder ${r.encoderMs.toFixed(2)} ms (${(100 * r.encoderFraction).toFixed(1)}%)${r.offTarget === null ? '' : `; target ${(100 * constraint).toFixed(0)}% = ${r.targetEncoderMs.toFixed(2)} ms, off by ${(100 * r.offTarget).toFixed(1)}%`}`);
  }
}
console.log(JSON.stringify({ lut: lutFile, batch: lut.batch, seq: lut.seq, constraint, rounds, ...result }));
for (const m of models) m.dispose();
