#!/usr/bin/env node
// Profiles one bert-mini training step (batch 32 x 64, forward + backward + AdamW) on wasm with
// tf.profile and prints kernels by total time. Not part of the bench.
// Usage: node scripts/profile-step.mjs [--model mini|tiny] [--top 40] [--reps 2] [--infer] [--compact]
// (--infer: one inference forward instead; --compact: of the bench's quarter-FLOPs compacted model)
import 'reflect-metadata';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AdamW, MaskSet, compact, crossEntropy, loadBert, tf, useBackend } from '@topiary/core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const MODELS = {
  tiny: path.join(ROOT, 'examples/models/bert-tiny-wordnet-supersense'),
  mini: path.join(ROOT, '../shared/models/bert-mini-wordnet-supersense'),
};
const B = 32;
const T = 64;
const info = await useBackend('wasm');
console.error(`accelerated: ${info.accelerated.join(', ')}`);
let model = await loadBert(MODELS[arg('model', 'mini')]);
if (process.argv.includes('--compact')) {
  const masks = MaskSet.ones(model);
  masks.headMask = masks.headMask.map((h) => h.map((_, i) => (i < Math.max(1, h.length / 4) ? 1 : 0)));
  masks.neuronMask = masks.neuronMask.map((n) => n.map((_, i) => (i < n.length / 4 ? 1 : 0)));
  const small = compact(model, masks);
  model.dispose();
  model = small;
}
const inputIds = new Int32Array(B * T);
for (let i = 0; i < inputIds.length; i++) inputIds[i] = 1000 + ((i * 7919) % (model.config.vocabSize - 1000));
const batch = { batchSize: B, seqLen: T, inputIds, attentionMask: new Int32Array(B * T).fill(1), tokenTypeIds: new Int32Array(B * T), labels: Int32Array.from({ length: B }, (_, i) => i % 10) };
const vars = [...model.params.values()];
const opt = new AdamW([{ variables: vars, learningRate: 1e-5, weightDecay: 0.01 }]);
const labels = tf.tensor1d(batch.labels, 'int32');
const step = process.argv.includes('--infer') ? () => tf.tidy(() => { model.forward(batch).logits.dataSync(); }) : () =>
  tf.tidy(() => {
    const { grads } = tf.variableGrads(() => crossEntropy(model.forward(batch, { training: true }).logits, labels), vars);
    opt.apply(new Map(vars.map((v) => [v, grads[v.name]])));
  });
step();
step();
tf.env().set('CHECK_COMPUTATION_FOR_ERRORS', false);
const reps = Number(arg('reps', '2'));
const agg = new Map();
let wall = 0;
for (let r = 0; r < reps; r++) {
  const t0 = performance.now();
  const prof = await tf.profile(() => { step(); vars[0].dataSync(); });
  wall += performance.now() - t0;
  for (const k of prof.kernels) {
    const key = k.name;
    const e = agg.get(key) ?? { ms: 0, n: 0, shapes: new Map() };
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    e.ms += ms / reps;
    e.n += 1 / reps;
    const sk = JSON.stringify(k.inputShapes);
    e.shapes.set(sk, (e.shapes.get(sk) ?? 0) + ms / reps);
    agg.set(key, e);
  }
}
// customGrad wrappers (named after their scope, not a kernel) contain their kernels: not counted twice.
for (const name of [...agg.keys()]) if (!tf.getKernel(name, "wasm")) agg.delete(name);
const total = [...agg.values()].reduce((a, e) => a + e.ms, 0);
console.log(`wall per profiled step ${(wall / reps).toFixed(1)} ms, kernel total ${total.toFixed(1)} ms`);
console.log('| kernel | calls | total ms | % | top input shapes |');
console.log('|---|---|---|---|---|');
const top = Number(arg('top', '40'));
for (const [name, e] of [...agg].sort((a, b) => b[1].ms - a[1].ms).slice(0, top)) {
  const shapes = [...e.shapes].sort((a, b) => b[1] - a[1]).slice(0, 2).map(([s, ms]) => `${s} ${ms.toFixed(1)}`).join('; ');
  console.log(`| ${name} | ${Math.round(e.n)} | ${e.ms.toFixed(1)} | ${((100 * e.ms) / total).toFixed(1)} | ${shapes} |`);
}
labels.dispose();
opt.dispose();
model.dispose();
