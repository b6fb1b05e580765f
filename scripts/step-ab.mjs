#!/usr/bin/env node
// Side-by-side timing of one bert-mini training step (batch 32 x 64, forward + backward + AdamW) and
// of inference, in one process, alternating kernel modes so that a busy machine slows every mode
// alike: `gemm-only` (the native GEMM with tfjs's other wasm kernels, as before the fused kernels),
// `shared` (plus copy-free Identity/Cast) and `fused` (the default: native elementwise and fused kernels).
// Usage: TOPIARY_NATIVE_THREADS=1 node scripts/step-ab.mjs [--rounds 3] [--steps 3] [--modes gemm-only,fused]
import 'reflect-metadata';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AdamW, MaskSet, accelerateWasm, compact, crossEntropy, loadBert, tf, useBackend } from '@topiary/core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const B = 32;
const T = 64;
await useBackend('wasm');
// tfjs-backend-wasm's own Identity and Cast (copies), to measure without the sharing replacements.
const copying = ({ inputs, backend, attrs }) => {
  const out = backend.makeOutput(inputs.x.shape, attrs?.dtype ?? inputs.x.dtype);
  backend.typedArrayFromHeap(out).set(backend.typedArrayFromHeap(inputs.x));
  return out;
};
const setKernel = (name, kernelFunc) => {
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc });
};
const MODES = {
  'gemm-only': () => {
    accelerateWasm(true, true, false);
    setKernel('Identity', copying);
    setKernel('Cast', copying);
  },
  shared: () => accelerateWasm(true, true, false),
  fused: () => accelerateWasm(true, true, true),
};
const modes = arg('modes', 'gemm-only,shared,fused').split(',');
const model = await loadBert(path.join(ROOT, `../shared/models/bert-${arg('model', 'mini')}-wordnet-supersense`));
const inputIds = new Int32Array(B * T);
for (let i = 0; i < inputIds.length; i++) inputIds[i] = 1000 + ((i * 7919) % (model.config.vocabSize - 1000));
const batch = { batchSize: B, seqLen: T, inputIds, attentionMask: new Int32Array(B * T).fill(1), tokenTypeIds: new Int32Array(B * T), labels: Int32Array.from({ length: B }, (_, i) => i % 10) };
const vars = [...model.params.values()];
const labels = tf.tensor1d(batch.labels, 'int32');
const steps = Number(arg('steps', '3'));
const rounds = Number(arg('rounds', '3'));
const times = Object.fromEntries(modes.map((m) => [m, { train: [], infer: [], small: [] }]));
// The bench's compacted model: a quarter of the heads and of the FFN neurons (about a quarter of the encoder FLOPs).
const masks = MaskSet.ones(model);
masks.headMask = masks.headMask.map((h) => h.map((_, i) => (i < Math.max(1, h.length / 4) ? 1 : 0)));
masks.neuronMask = masks.neuronMask.map((n) => n.map((_, i) => (i < n.length / 4 ? 1 : 0)));
const small = compact(model, masks);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (let r = 0; r < rounds; r++) {
  for (const mode of modes) {
    MODES[mode]();
    const opt = new AdamW([{ variables: vars, learningRate: 1e-5, weightDecay: 0.01 }]);
    const step = () =>
      tf.tidy(() => {
        const { grads } = tf.variableGrads(() => crossEntropy(model.forward(batch, { training: true }).logits, labels), vars);
        opt.apply(new Map(vars.map((v) => [v, grads[v.name]])));
      });
    step();
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      step();
      vars[0].dataSync();
      times[mode].train.push(performance.now() - t0);
    }
    opt.dispose();
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      tf.tidy(() => model.forward(batch).logits.dataSync());
      times[mode].infer.push(performance.now() - t0);
      const t1 = performance.now();
      tf.tidy(() => small.forward(batch).logits.dataSync());
      times[mode].small.push(performance.now() - t1);
    }
  }
}
const base = modes[0];
for (const mode of modes) {
  const t = median(times[mode].train);
  const i = median(times[mode].infer);
  const c = median(times[mode].small);
  console.log(`${mode.padEnd(10)} train step ${t.toFixed(1)} ms (median of ${times[mode].train.length}; ${(median(times[base].train) / t).toFixed(2)}x vs ${base})  inference ${i.toFixed(1)} ms (${(median(times[base].infer) / i).toFixed(2)}x)  compacted ${c.toFixed(1)} ms (${(i / c).toFixed(2)}x faster than dense)`);
}
labels.dispose();
small.dispose();
model.dispose();
