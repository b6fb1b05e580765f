import 'reflect-metadata';
import { useBackend, loadBert, tf } from '@topiary/core';
await useBackend('wasm');
const dirs = { dense: '/work/shared/models/bert-mini-wordnet-supersense', 'svd-0.5': '/tmp/fz/runs/svd-0.5/model', 'svd-0.25': '/tmp/fz/runs/svd-0.25/model' };
const models = {};
for (const [k, d] of Object.entries(dirs)) models[k] = await loadBert(d);
const B = 32, T = 64;
const batch = { batchSize: B, seqLen: T, inputIds: Int32Array.from({ length: B * T }, (_, i) => (i * 7919) % 8000 + 100), attentionMask: new Int32Array(B * T).fill(1), tokenTypeIds: new Int32Array(B * T) };
const times = Object.fromEntries(Object.keys(models).map((k) => [k, []]));
for (let rep = 0; rep < 7; rep++) for (const [k, m] of Object.entries(models)) {
  const t0 = performance.now();
  tf.tidy(() => m.forward(batch).logits.dataSync());
  times[k].push(performance.now() - t0);
}
for (const [k, ts] of Object.entries(times)) { const s = ts.slice(2).sort((a, b) => a - b); console.log(k, 'median ms', s[Math.floor(s.length / 2)].toFixed(1)); }
