// What a training step needs on the wasm heap, per micro-batch size: each size runs in its own process
// (emscripten's heap grows and never shrinks, so its size after the steps is the peak), two steps of
// fine-tuning (cross-entropy; `--teacher` adds KD from a copy of the model, `--hidden-states` the
// teacher's hidden states as layer distillation keeps them) at batch = micro-batch on DATA truncated
// to --seq tokens. Prints one JSON line per size and the per-example slope: what calibrates
// core's STEP_MEMORY (docs/results.md).
//   TOPIARY_NATIVE_THREADS=1 node scripts/measure-step-memory.mjs MODEL DATA --micro 1,2,4 --seq 128
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { takeOption } from './cli-args.mjs';

const args = process.argv.slice(2);
const child = takeOption(args, 'child', undefined);
const seq = Number(takeOption(args, 'seq', 128));
const teacher = args.includes('--teacher');
const hidden = args.includes('--hidden-states');
const positional = args.filter((a) => !a.startsWith('--'));
const [modelDir, dataFile] = positional;
if (!modelDir || !dataFile) throw new Error('usage: measure-step-memory.mjs MODEL DATA --micro 1,2,4 --seq 128 [--teacher] [--hidden-states]');

if (child === undefined) {
  const sizes = takeOption(args, 'micro', '1,2,4').split(',').map(Number);
  const rows = [];
  for (const m of sizes) {
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), modelDir, dataFile, '--child', String(m), '--seq', String(seq), ...(teacher ? ['--teacher'] : []), ...(hidden ? ['--hidden-states'] : [])], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    const line = r.stdout.trim().split('\n').pop();
    if (r.status !== 0 || !line) {
      process.stdout.write(`${JSON.stringify({ micro: m, failed: r.status, signal: r.signal })}\n`);
      continue;
    }
    process.stdout.write(`${line}\n`);
    rows.push(JSON.parse(line));
  }
  for (let i = 1; i < rows.length; i++) {
    const [a, b] = [rows[i - 1], rows[i]];
    process.stdout.write(`per example ${a.micro}->${b.micro}: heap ${((b.heapAfter - a.heapAfter) / (b.micro - a.micro) / 2 ** 20).toFixed(1)} MiB, tensor peak ${((b.peakTensorBytes - a.peakTensorBytes) / (b.micro - a.micro) / 2 ** 20).toFixed(1)} MiB\n`);
  }
} else {
  const { CrossEntropyLoss, KdLoss, estimateStepBytes, loadBert, loadDataset, loadTokenizer, tf, trainLoop, useBackend, wasmHeapBytes } = await import('@topiary/core');
  await useBackend('wasm');
  const m = Number(child);
  const model = await loadBert(modelDir);
  const tok = await loadTokenizer(modelDir);
  const train = await loadDataset(dataFile, tok, { labels: model.config.id2label, maxLength: seq, limit: 4 * m });
  const t = teacher ? await loadBert(modelDir) : undefined;
  const heapLoaded = wasmHeapBytes();
  const liveLoaded = tf.memory().numBytes;
  // The largest number of bytes held by tensors at once, sampled at every kernel (tfjs's profiler).
  let peakTensorBytes = 0;
  const control = { emit: () => {}, signal: new AbortController().signal, checkpoint: () => {} };
  const losses = teacher ? [new KdLoss()] : [new CrossEntropyLoss()];
  if (hidden) losses.push({ id: 'hidden', needs: { teacher: true, hiddenStates: true }, compute: ({ student, teacher: tt }) => ({ hidden: tf.mul(tf.mean(tf.squaredDifference(student.hiddenStates.at(-1), tt.hiddenStates.at(-1))), 1) }) });
  const started = Date.now();
  const info = await tf.profile(() => trainLoop({ model, train, ...(t ? { teacher: t } : {}), losses, training: { batchSize: m, learningRate: 1e-5, maxSteps: 2, warmupRatio: 0, weightDecay: 0.01, maxGradNorm: 1, maxLength: seq }, seed: 1, control }));
  peakTensorBytes = info.peakBytes;
  const seqLen = Math.max(...train.examples.map((e) => e.inputIds.length));
  const est = estimateStepBytes({ config: model.config, seqLen, ...(t ? { teacher: t.config, teacherHiddenStates: hidden } : {}) });
  process.stdout.write(`${JSON.stringify({ micro: m, seqLen, teacher, hidden, heapLoaded, liveLoaded, heapAfter: wasmHeapBytes(), peakTensorBytes, estimatePerExample: est.perExample, estimateFixed: est.fixed, rss: process.memoryUsage.rss(), seconds: (Date.now() - started) / 1000 })}\n`);
}
