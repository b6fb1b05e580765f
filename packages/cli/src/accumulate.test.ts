import { beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CrossEntropyLoss,
  MaskSet,
  RunCheckpoints,
  bindMasks,
  createRunContainer,
  loadBert,
  loadDataset,
  loadTokenizer,
  tf,
  trainLoop,
  type BertModel,
  type Dataset,
  type RunControl,
  type SavedState,
  type TrainingOptions,
} from '@topiary/core';
import { testBackend } from '../../core/src/test-support/backend.js';
import { builtinPlugins } from './plugins.js';

// Gradient accumulation: a batch split into micro-batches (a quarter of it, and a remainder) must give
// the whole batch's update, for every method that trains. Dropout off, so both runs see the same function.
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const ex = path.join(root, 'examples');
const tiny = path.join(ex, 'models/bert-tiny-wordnet-supersense');
const pretrained = path.join(ex, 'models/bert-tiny-wordnet-pretrained');
const BATCH = 14;
const MICRO = 4; // 4 + 4 + 4 + 2
const TOL = 1e-6;
// The attention key bias adds q.b to every score of a query: the softmax ignores it, its gradient is
// zero up to rounding, and AdamW turns that rounding into a full step of either sign in both runs.
const KEY_BIAS = /attention\.self\.key\.bias$/;

const control = (): RunControl => ({ emit: () => {}, signal: new AbortController().signal, checkpoint: () => {} });

async function load(dir: string, labels?: string[]): Promise<BertModel> {
  const m = await loadBert(dir, { seed: 7, ...(labels ? { labels } : {}) });
  // Dropout off: the split and the whole batch must compute the same loss.
  m.config.hiddenDropoutProb = 0;
  m.config.attentionProbsDropoutProb = 0;
  m.config.classifierDropout = 0;
  return m;
}

interface Captured {
  states: SavedState[];
  /** The model's parameters at each checkpoint and at the end. */
  weights: Map<string, Float32Array>[];
  masks: MaskSet;
  tensorsAfter: number[];
  /** Parameter names in the model's order (CoFi's snapshots hold its non-embedding ones by position). */
  names: string[];
}

function snapshot(model: BertModel): Map<string, Float32Array> {
  return new Map([...model.params].map(([n, v]) => [n, v.dataSync() as Float32Array]));
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** CoFi's best/closest snapshots are copies of the non-embedding parameters, by position. */
function isKeyBiasCopy(key: string, names: string[]): boolean {
  const m = /^cofi\/(best|closest)\.(\d+)$/.exec(key);
  return m !== null && KEY_BIAS.test(names.filter((n) => !n.startsWith('bert.embeddings.'))[Number(m[2])] ?? '');
}

function expectSame(a: Captured, b: Captured): void {
  expect(b.states.length).toBe(a.states.length);
  expect(a.states.length).toBeGreaterThan(0);
  a.states.forEach((s, i) => {
    const t = b.states[i]!;
    expect(t.step).toBe(s.step);
    // Step counts, RNG positions, data order, stage results: equal (figures within the tolerance).
    expect(JSON.parse(JSON.stringify(t.components), (_, v) => (typeof v === 'number' ? Math.round(v * 1e4) / 1e4 : v))).toEqual(
      JSON.parse(JSON.stringify(s.components), (_, v) => (typeof v === 'number' ? Math.round(v * 1e4) / 1e4 : v)),
    );
    expect([...t.tensors.keys()].sort()).toEqual([...s.tensors.keys()].sort());
    // Optimizer moments, log-alphas, multipliers, movement scores, banks.
    for (const [k, v] of s.tensors) if (!isKeyBiasCopy(k, a.names)) expect(maxDiff(v.data, t.tensors.get(k)!.data), `state tensor ${k} at step ${s.step}`).toBeLessThan(TOL);
  });
  a.weights.forEach((w, i) => {
    for (const [k, v] of w) if (!KEY_BIAS.test(k)) expect(maxDiff(v, b.weights[i]!.get(k)!), `${k} (snapshot ${i})`).toBeLessThan(TOL);
  });
  // Masks (CoFi's are the deterministic z, fractional).
  for (const k of ['headMask', 'neuronMask'] as const) a.masks[k].forEach((m, l) => expect(maxDiff(m, b.masks[k][l]!), `${k}[${l}]`).toBeLessThan(TOL));
  for (const k of ['hiddenMask', 'mhaMask', 'ffnMask'] as const) expect(maxDiff(a.masks[k], b.masks[k]), k).toBeLessThan(TOL);
  for (const [k, v] of a.masks.weightMasks) expect(maxDiff(v, b.masks.weightMasks.get(k)!)).toBe(0);
}

let train: Dataset;
let dev: Dataset;
let labels: string[];

beforeAll(async () => {
  await testBackend();
  const tok = await loadTokenizer(tiny);
  const m = await loadBert(tiny);
  labels = m.config.id2label;
  m.dispose();
  train = await loadDataset(path.join(ex, 'data/train-10k.jsonl'), tok, { limit: 3 * BATCH, labels, maxLength: 24 });
  dev = await loadDataset(path.join(ex, 'data/dev.jsonl'), tok, { limit: 16, labels, maxLength: 24 });
});

const training = (micro?: number): TrainingOptions => ({
  batchSize: BATCH,
  // Small rates: AdamW divides by sqrt(v), so a gradient component that is zero up to float32 rounding
  // moves by up to the rate in either run; the moments (checked to 1e-6) carry the summed gradients.
  learningRate: 2e-5,
  maxSteps: 4,
  warmupRatio: 0.25,
  weightDecay: 0.01,
  // Clipping on: it reads the summed gradient's norm.
  maxGradNorm: 0.5,
  maxLength: 24,
  ...(micro ? { microBatchSize: micro } : {}),
});

async function runMethod(method: string, micro: number | undefined, extra: { model?: string; teacher?: boolean; pretrained?: boolean; options?: Record<string, unknown>; maxSteps?: number }): Promise<Captured> {
  const { registry } = await createRunContainer(builtinPlugins());
  const model = await load(extra.model ?? tiny, labels);
  const teacher = extra.teacher ? await load(tiny, labels) : undefined;
  const pre = extra.pretrained ? await load(pretrained) : undefined;
  const masks = bindMasks(MaskSet.ones(model), model);
  const cap: Captured = { states: [], weights: [], masks, tensorsAfter: [], names: [...model.params.keys()] };
  const checkpoints = new RunCheckpoints({
    every: 2,
    config: {},
    write: async (state) => {
      cap.states.push(state);
      cap.weights.push(snapshot(model));
      return 'memory';
    },
  });
  try {
    const t = { ...training(micro), ...(extra.maxSteps ? { maxSteps: extra.maxSteps } : {}) };
    const pruner = registry.pruner(method, {});
    const result = await pruner.run({
      model,
      masks,
      ...(teacher ? { teacher } : {}),
      ...(pre ? { pretrained: pre } : {}),
      train,
      dev,
      control: control(),
      resolve: registry,
      options: extra.options ?? {},
      seed: 3,
      training: t,
      checkpoints,
    });
    if (result.masks !== masks) Object.assign(masks, result.masks.clone());
    cap.weights.push(snapshot(model));
  } finally {
    model.dispose();
    teacher?.dispose();
    pre?.dispose();
  }
  return cap;
}

describe('gradient accumulation (training.microBatchSize)', () => {
  it('fine-tuning: micro-batches give the whole batch\'s weights and optimizer state, tensor count flat', async () => {
    const run = async (micro?: number) => {
      const model = await load(tiny);
      const cap: Captured = { states: [], weights: [], masks: MaskSet.ones(model), tensorsAfter: [], names: [...model.params.keys()] };
      const checkpoints = new RunCheckpoints({ every: 2, config: {}, write: async (s) => (cap.states.push(s), cap.weights.push(snapshot(model)), 'memory') });
      await trainLoop({ model, train, losses: [new CrossEntropyLoss()], training: { ...training(micro), maxSteps: 6 }, seed: 1, control: control(), checkpoints, afterStep: () => cap.tensorsAfter.push(tf.memory().numTensors) });
      cap.weights.push(snapshot(model));
      model.dispose();
      return cap;
    };
    const whole = await run();
    const split = await run(MICRO);
    expectSame(whole, split);
    expect(new Set(split.tensorsAfter.slice(1)).size).toBe(1);
    expect(split.tensorsAfter[1]).toBe(whole.tensorsAfter[1]);
  });

  const levels = { id: 'iterative', options: { levels: [0.25, 0.5] } };
  const methods: Record<string, Parameters<typeof runMethod>[2] & { method: string }> = {
    // The criterion's scoring passes are split too.
    'structured first-order with KD': { method: 'structured', teacher: true, options: { criterion: 'first-order', scheduler: levels, losses: ['kd'], scoreBatches: 2, targetSparsity: 0.5 } },
    'unstructured first-order (|w dL/dw|)': { method: 'unstructured', options: { criterion: 'first-order', scheduler: { id: 'one-shot' }, losses: ['ce'], scoreBatches: 2, targetSparsity: 0.5 } },
    'soft movement with KD (L1 once a step)': { method: 'movement', teacher: true, options: { mode: 'soft', warmupSteps: 1, scoreLearningRate: 1e-4 } },
    'movement top-k': { method: 'movement', teacher: true, options: { mode: 'topk', warmupSteps: 1, scoreLearningRate: 1e-4 } },
    // Lagrangian once a step, one mask sample per step, layer matching on the whole batch.
    'CoFi': { method: 'cofi', teacher: true, maxSteps: 6, options: { targetSparsity: 0.5, maskLearningRate: 1e-3, evalEvery: 3, distillSteps: 1, finetuneSteps: 2 } },
    // In-batch negatives and the extra examples of the whole batch.
    'CAP (contrastive)': { method: 'structured', model: pretrained, teacher: true, pretrained: true, options: { criterion: 'first-order', scheduler: levels, losses: ['kd', { id: 'contrastive', options: { extraExamples: 16 } }], scoreBatches: 2, targetSparsity: 0.5 } },
  };
  for (const [name, m] of Object.entries(methods)) {
    it(`${name}: micro-batches give the whole batch's weights, masks and state`, async () => {
      const whole = await runMethod(m.method, undefined, m);
      const split = await runMethod(m.method, MICRO, m);
      expectSame(whole, split);
    });
  }
});
