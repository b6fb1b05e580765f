#!/usr/bin/env node
// `npm run bench`: training-step and inference speed of bert-tiny and bert-mini shapes (batch 32 x 64
// tokens) on every available backend, next to this machine's float32 GEMM ceiling measured in the same
// run with numpy: wasm with Topiary's native GEMM, with its JS kernels only, and with tfjs's own
// kernels, side by side; and inference of a compacted model with a quarter of the encoder FLOPs
// against the dense one. Not a test: it prints a table, then one JSON document.
//
// Then the exported ONNX models in onnxruntime-node (when installed), 1 and 2 threads: dense fp32, a
// compacted model fp32, and the int8 quantization of each, next to Topiary's own inference of the same
// model; with the pruned model's speedup against its encoder-FLOP reduction.
//
// Options: --models tiny,mini  --backends wasm,cpu  --steps N  --only onnx|train
import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  AdamW,
  BACKEND_NAMES,
  MaskSet,
  accelerateWasm,
  nativeGemm,
  compact,
  crossEntropy,
  isBackendInstalled,
  loadBert,
  tf,
  useBackend,
} from '@topiary/core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODELS = {
  tiny: path.join(ROOT, 'examples/models/bert-tiny-wordnet-supersense'),
  mini: path.join(ROOT, '../shared/models/bert-mini-wordnet-supersense'),
};
const B = 32;
const T = 64;

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const models = arg('models', 'tiny,mini').split(',');
const steps = Number(arg('steps', '5'));
const only = arg('only', '');
const backends = arg('backends', BACKEND_NAMES.filter((b) => b !== 'cpu' && isBackendInstalled(b)).join(',')).split(',');

/** FLOPs of one forward pass from the model's shape: linear layers (2 per multiply-add) and attention. */
function forwardFlops(config) {
  const H = config.hiddenSize;
  const d = config.attentionHeadSize;
  let f = 0;
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const A = config.layerHeads[l];
    const I = config.layerIntermediate[l];
    f += 2 * B * T * (3 * H * A * d + A * d * H); // Q, K, V, attention output
    f += 2 * B * A * T * T * d * 2; // scores and context
    f += 2 * B * T * (H * I + I * H); // FFN
  }
  f += 2 * B * H * H + 2 * B * H * config.id2label.length; // pooler and classifier
  return f;
}

function randomBatch(vocab) {
  const inputIds = new Int32Array(B * T);
  for (let i = 0; i < inputIds.length; i++) inputIds[i] = 1000 + ((i * 7919) % (vocab - 1000));
  return {
    batchSize: B,
    seqLen: T,
    inputIds,
    attentionMask: new Int32Array(B * T).fill(1),
    tokenTypeIds: new Int32Array(B * T),
    labels: Int32Array.from({ length: B }, (_, i) => i % 10),
  };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timeTrainStep(model, batch) {
  const vars = [...model.params.values()];
  const opt = new AdamW([{ variables: vars, learningRate: 1e-5, weightDecay: 0.01 }]);
  const labels = tf.tensor1d(batch.labels, 'int32');
  const step = () =>
    tf.tidy(() => {
      const { grads } = tf.variableGrads(() => crossEntropy(model.forward(batch, { training: true }).logits, labels), vars);
      opt.apply(new Map(vars.map((v) => [v, grads[v.name]])));
    });
  step(); // warm-up: kernel compilation, moment allocation
  await tf.ready();
  const times = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    step();
    vars[0].dataSync(); // wait for the update
    times.push(performance.now() - t0);
  }
  labels.dispose();
  opt.dispose();
  return median(times);
}

function timeInference(model, batch) {
  const run = () => tf.tidy(() => model.forward(batch).logits.dataSync());
  run();
  const times = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    run();
    times.push(performance.now() - t0);
  }
  return median(times);
}

function gemmCeiling() {
  const py = `
import numpy as np, time, json
n = 2048
a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
a @ b
ts = []
for _ in range(5):
    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
print(json.dumps({"gflops": 2 * n**3 / min(ts) / 1e9}))`;
  try {
    return JSON.parse(execFileSync('python3', ['-c', py], { encoding: 'utf8' })).gflops;
  } catch (e) {
    console.error(`bench: numpy GEMM ceiling unavailable (${e.message.split('\n')[0]})`);
    return NaN;
  }
}

/** Encoder FLOPs of one forward pass (attention and FFN; what pruning removes). */
function encoderFlops(config) {
  const H = config.hiddenSize;
  const d = config.attentionHeadSize;
  let f = 0;
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const A = config.layerHeads[l];
    f += 2 * B * T * 4 * H * A * d + 4 * B * A * T * T * d + 4 * B * T * H * config.layerIntermediate[l];
  }
  return f;
}

/** The compacted model the bench prunes to: a quarter of the heads (at least one) and of the FFN neurons per layer. */
function pruneQuarter(model) {
  const masks = MaskSet.ones(model);
  masks.headMask = masks.headMask.map((h) => h.map((_, i) => (i < Math.max(1, h.length / 4) ? 1 : 0)));
  masks.neuronMask = masks.neuronMask.map((n) => n.map((_, i) => (i < n.length / 4 ? 1 : 0)));
  return compact(model, masks);
}

/**
 * ONNX Runtime (onnxruntime-node) on the exported graphs, 1 and 2 intra-op threads, with Topiary's
 * own wasm inference of the same models in the same process (on the native kernels when built).
 */
async function onnxRows() {
  let ort;
  let onnx;
  try {
    ort = await import('onnxruntime-node');
    onnx = await import('@topiary/onnx');
  } catch (e) {
    console.error(`bench: ONNX rows skipped (${e.message.split('\n')[0]})`);
    return [];
  }
  await useBackend('wasm');
  accelerateWasm(true, Boolean(nativeGemm().binding));
  const out = [];
  const reps = Math.max(steps, 10);
  for (const m of models) {
    const dense = await loadBert(MODELS[m]);
    const pruned = pruneQuarter(dense);
    const batch = randomBatch(dense.config.vocabSize);
    const big = (a) => BigInt64Array.from(a, (v) => BigInt(v));
    const feeds = Object.fromEntries(
      [['input_ids', batch.inputIds], ['attention_mask', batch.attentionMask], ['token_type_ids', batch.tokenTypeIds]].map(([k, v]) => [k, new ort.Tensor('int64', big(v), [B, T])]),
    );
    // The demo's pruned model too, when `npm run demo` has written it (bert-tiny).
    const demoDir = path.join(ROOT, 'runs/first-order-tiny/model');
    const demo = m === 'tiny' && existsSync(path.join(demoDir, 'model.safetensors')) ? await loadBert(demoDir) : undefined;
    const variantsOf = [['dense', dense], ['quarter', pruned], ...(demo ? [['demo', demo]] : [])];
    const reduction = Object.fromEntries(variantsOf.map(([name, model]) => [name, encoderFlops(dense.config) / encoderFlops(model.config)]));
    // Every configuration is created first, then timed round-robin (one run each per round), so that
    // a load that comes and goes (other processes on the machine) hits them all alike.
    const runners = {};
    for (const [name, model] of variantsOf) {
      runners[`${name}/topiary`] = async () => tf.tidy(() => model.forward(batch).logits.dataSync());
      const { fp32, int8 } = onnx.bertToOnnx(model, { quantize: 'int8' });
      for (const [dtype, bytes] of [['fp32', fp32], ['int8', int8]]) {
        for (const threads of [1, 2]) {
          const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' });
          runners[`${name}/${dtype}/${threads}`] = () => session.run(feeds);
          runners[`${name}/${dtype}/${threads}`].session = session;
        }
      }
    }
    const samples = Object.fromEntries(Object.keys(runners).map((k) => [k, []]));
    for (const run of Object.values(runners)) await run(); // warm-up
    for (let i = 0; i < reps; i++) {
      for (const [k, run] of Object.entries(runners)) {
        const t0 = performance.now();
        await run();
        samples[k].push(performance.now() - t0);
      }
    }
    for (const run of Object.values(runners)) await run.session?.release();
    const times = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
    const topiaryMs = Object.fromEntries(variantsOf.map(([name]) => [name, times[`${name}/topiary`]]));
    for (const threads of [1, 2]) {
      for (const [name] of variantsOf) {
        const fp = times[`${name}/fp32/${threads}`];
        const q = times[`${name}/int8/${threads}`];
        const row = {
          model: `bert-${m}`,
          variant: name,
          threads,
          encoderFlopsReduction: +reduction[name].toFixed(2),
          onnxFp32Ms: +fp.toFixed(2),
          onnxInt8Ms: +q.toFixed(2),
          int8Speedup: +(fp / q).toFixed(2),
          prunedSpeedup: +(times[`dense/fp32/${threads}`] / fp).toFixed(2),
          prunedSpeedupOfReduction: +(times[`dense/fp32/${threads}`] / fp / reduction[name]).toFixed(2),
          // Topiary's wasm kernels use their own thread count (TOPIARY_NATIVE_THREADS), measured once.
          topiaryMs: +topiaryMs[name].toFixed(2),
        };
        out.push(row);
        console.error(JSON.stringify(row));
      }
    }
    pruned.dispose();
    demo?.dispose();
    dense.dispose();
  }
  return out;
}

const rows = [];
const onnxOnly = only === 'onnx';
const ceilingGflops = onnxOnly ? NaN : gemmCeiling();
console.error(`GEMM ceiling (numpy float32 2048^3, best of 5): ${ceilingGflops.toFixed(1)} GFLOP/s`);

// wasm three ways: Topiary's kernels with the native GEMM, with JS kernels only, and tfjs's own.
const wasmModes = [
  ...(nativeGemm().binding ? [['wasm+native', true, true]] : []),
  ['wasm+js-kernels', true, false],
  ['wasm (tfjs kernels)', false, false],
];
if (!nativeGemm().binding) console.error(`@topiary/native: ${nativeGemm().reason}`);
const variants = onnxOnly ? [] : backends.flatMap((b) => (b === 'wasm' ? wasmModes.map((m) => ['wasm', ...m]) : [[b, b, true, false]]));
for (const [backend, label, fast, useNative] of variants) {
  await useBackend(backend);
  if (backend === 'wasm') accelerateWasm(fast, useNative);
  for (const m of models) {
    const model = await loadBert(MODELS[m]);
    const batch = randomBatch(model.config.vocabSize);
    const flops = forwardFlops(model.config);
    const trainStepMs = await timeTrainStep(model, batch);
    const inferMs = timeInference(model, batch);
    const trainGflops = (3 * flops) / (trainStepMs / 1000) / 1e9;
    const row = {
      model: `bert-${m}`,
      backend: label,
      trainStepMs: +trainStepMs.toFixed(1),
      trainGflops: +trainGflops.toFixed(2),
      inferMs: +inferMs.toFixed(1),
      inferExamplesPerS: +((B / inferMs) * 1000).toFixed(1),
      ceilingGflops: +ceilingGflops.toFixed(1),
      ratio: +(trainGflops / ceilingGflops).toFixed(3),
    };
    // A compacted model with a quarter of the encoder FLOPs: keep half the heads and a quarter of the neurons.
    if (fast && (useNative || !nativeGemm().binding)) {
      const masks = MaskSet.ones(model);
      masks.headMask = masks.headMask.map((h) => h.map((_, i) => (i < Math.max(1, h.length / 4) ? 1 : 0)));
      masks.neuronMask = masks.neuronMask.map((n) => n.map((_, i) => (i < n.length / 4 ? 1 : 0)));
      const small = compact(model, masks);
      const smallMs = timeInference(small, batch);
      row.compactedFlopsFraction = +(forwardFlops(small.config) / flops).toFixed(3);
      row.compactedInferSpeedup = +(inferMs / smallMs).toFixed(2);
      small.dispose();
    }
    rows.push(row);
    console.error(JSON.stringify(row));
    model.dispose();
  }
}

const header = ['model', 'backend', 'trainStepMs', 'trainGflops', 'ratio', 'inferExamplesPerS', 'compactedFlopsFraction', 'compactedInferSpeedup'];
if (rows.length) console.log(`| ${header.join(' | ')} |\n|${header.map(() => '---').join('|')}|`);
for (const r of rows) console.log(`| ${header.map((h) => r[h] ?? '').join(' | ')} |`);
const byModel = (m) => rows.filter((r) => r.model === m);
for (const m of models.map((x) => `bert-${x}`)) {
  const plain = byModel(m).find((r) => r.backend === 'wasm (tfjs kernels)');
  for (const r of byModel(m)) {
    if (plain && r !== plain) console.log(`${m}: ${r.backend} trains ${(plain.trainStepMs / r.trainStepMs).toFixed(2)}x faster than tfjs's wasm kernels (${r.trainStepMs} vs ${plain.trainStepMs} ms/step)`);
  }
}
const onnxResults = only === 'train' ? [] : await onnxRows();
if (onnxResults.length) {
  const h = ['model', 'variant', 'threads', 'encoderFlopsReduction', 'onnxFp32Ms', 'onnxInt8Ms', 'int8Speedup', 'prunedSpeedup', 'prunedSpeedupOfReduction', 'topiaryMs'];
  console.log(`\nONNX Runtime (onnxruntime-node), batch ${B} x ${T} tokens, median ms per batch; aims: prunedSpeedupOfReduction >= 0.8, int8Speedup >= 1.5`);
  console.log(`| ${h.join(' | ')} |\n|${h.map(() => '---').join('|')}|`);
  for (const r of onnxResults) console.log(`| ${h.map((k) => r[k] ?? '').join(' | ')} |`);
}
console.log(JSON.stringify({ ceilingGflops, batch: B, tokens: T, results: rows, onnx: onnxResults }));
