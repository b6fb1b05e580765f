import { tf } from '../tf.js';
import { offHeapAdamWAvailable } from '../backend/fused.js';
import type { Batch } from '../model/bert.js';
import type { BertConfig } from '../model/config.js';
import type { BertModel } from '../model/bert.js';
import type { TrainingOptions } from '../contracts.js';
import type { MemoryPlan } from '../events.js';
import type { Dataset } from '../data/dataset.js';

/** One micro-batch of a batch: examples `[offset, offset + size)` of `whole`. */
export interface BatchPart {
  batch: Batch;
  offset: number;
  size: number;
  whole: Batch;
}

/**
 * Splits a batch into micro-batches of at most `size` examples (the last one takes the remainder),
 * keeping the whole batch's padded length, so that a loss averaged over elements (padding included)
 * weights every example as in the whole batch.
 */
export function splitBatch(batch: Batch, size: number): BatchPart[] {
  if (!(Number.isInteger(size) && size > 0)) throw new Error(`splitBatch: micro-batch size must be a positive integer, got ${size}`);
  if (size >= batch.batchSize) return [{ batch, offset: 0, size: batch.batchSize, whole: batch }];
  const T = batch.seqLen;
  const parts: BatchPart[] = [];
  for (let o = 0; o < batch.batchSize; o += size) {
    const n = Math.min(size, batch.batchSize - o);
    const part: Batch = {
      inputIds: batch.inputIds.slice(o * T, (o + n) * T),
      attentionMask: batch.attentionMask.slice(o * T, (o + n) * T),
      tokenTypeIds: batch.tokenTypeIds.slice(o * T, (o + n) * T),
      batchSize: n,
      seqLen: T,
      ...(batch.labels ? { labels: batch.labels.slice(o, o + n) } : {}),
      ...(batch.exampleIds ? { exampleIds: batch.exampleIds.slice(o, o + n) } : {}),
    };
    parts.push({ batch: part, offset: o, size: n, whole: batch });
  }
  return parts;
}

/** The wasm backend's heap (emscripten module), when wasm is the active backend. */
function wasmModule(): { HEAPU8?: Uint8Array; wasmMemory?: { buffer: ArrayBuffer } } | undefined {
  if (tf.getBackend() !== 'wasm') return undefined;
  return (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array; wasmMemory?: { buffer: ArrayBuffer } } }).wasm;
}

/**
 * Bytes the wasm heap spans now. Emscripten grows the heap and never shrinks it, so this is also its
 * peak so far in the process. Undefined on other backends.
 */
export function wasmHeapBytes(): number | undefined {
  const m = wasmModule();
  return m?.HEAPU8?.buffer.byteLength ?? m?.wasmMemory?.buffer.byteLength;
}

/** The most the wasm heap can grow to (32-bit addresses: 4 GiB less one 64 KiB page). */
export const WASM_HEAP_LIMIT = 4294901760;

/** The backend's memory limit in bytes, when it has one Topiary knows (wasm's heap). */
export function backendMemoryLimit(): number | undefined {
  return wasmModule() ? WASM_HEAP_LIMIT : undefined;
}

/** Peak memory of a run: the wasm heap's size and the process's resident set, sampled. */
export class MemoryMonitor {
  peakHeapBytes = 0;
  peakRssBytes = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(everyMs = 200) {
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
  }

  sample(): void {
    this.peakHeapBytes = Math.max(this.peakHeapBytes, wasmHeapBytes() ?? 0);
    this.peakRssBytes = Math.max(this.peakRssBytes, process.memoryUsage.rss());
  }

  stop(): { peakHeapBytes: number | null; peakRssBytes: number } {
    this.sample();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    return { peakHeapBytes: wasmHeapBytes() === undefined ? null : this.peakHeapBytes, peakRssBytes: this.peakRssBytes };
  }
}

/** What a training step holds besides the per-example activations. */
export interface StepMemoryInput {
  config: BertConfig;
  /** The padded sequence length (the run's `maxLength` bounds it). */
  seqLen: number;
  /** A teacher forward per micro-batch (inference only: its activations live one layer at a time). */
  teacher?: BertConfig;
  /** The losses keep the teacher's hidden states (layer distillation). */
  teacherHiddenStates?: boolean;
  /** Parameters that train (gradients, optimizer moments); default all of the student's. */
  trainableParams?: number;
  /** Bytes the heap holds already (the loaded models' weights); default: the student's weights (and the teacher's). */
  liveBytes?: number;
  /** The optimizer's moments live on the heap (default true; with the native addon on wasm they live in JS memory). */
  momentsOnHeap?: boolean;
  /** Bytes per example the method adds to a step (`Pruner.memory`). */
  extraPerExample?: number;
}

function paramCount(c: BertConfig): number {
  const H = c.hiddenSize;
  const E = c.embeddingSize ?? H;
  let n = (c.vocabSize + c.maxPositionEmbeddings + c.typeVocabSize) * E + 2 * E + (E !== H ? E * H + H : 0);
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const a = (c.layerHeads[l] ?? c.numAttentionHeads) * c.attentionHeadSize;
    const i = c.layerIntermediate[l] ?? c.intermediateSize;
    n += 3 * (H * a + a) + a * H + H + 2 * H * i + i + H + 4 * H;
  }
  return n + H * H + H + H * c.id2label.length + c.id2label.length;
}

/**
 * Calibration of `estimateStepBytes` on the wasm backend (scripts/measure-step-memory.mjs: the heap
 * after two steps at several micro-batch sizes, each in a fresh process; docs/results.md). Floats the
 * backward pass keeps per example: per layer and token, `perTokenHidden` of the hidden width and
 * `perTokenFfn` of the FFN width, `perScore` per attention score, and `perToken` hidden widths per
 * token outside the layers (embeddings, head). Bytes per trained parameter besides its weights:
 * gradient and a transient in the update, two moments when they live on the heap, one more gradient
 * when a batch is split.
 * Measured: BERT-base shapes at 128 tokens 163-200 MiB an example (estimate 213), bert-tiny 7.6 (6.8).
 */
export const STEP_MEMORY = { perTokenHidden: 20, perTokenFfn: 4, perScore: 5, perToken: 16, bytesPerTrainedParam: 8, momentBytesPerTrainedParam: 8, splitBytesPerTrainedParam: 4, overhead: 64 * 2 ** 20, safety: 0.9 };

/**
 * An estimate of the bytes a training step needs on the backend's heap: `fixed` (weights, gradients,
 * optimizer moments; `split` adds the summed gradients) and `perExample` (the activations the backward
 * pass keeps, and the teacher's forward), calibrated on the wasm backend.
 */
export function estimateStepBytes(s: StepMemoryInput, split = true): { fixed: number; perExample: number } {
  const c = s.config;
  const T = s.seqLen;
  const k = STEP_MEMORY;
  let floats = k.perToken * T * c.hiddenSize;
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const heads = c.layerHeads[l] ?? c.numAttentionHeads;
    const inter = c.layerIntermediate[l] ?? c.intermediateSize;
    floats += T * (k.perTokenHidden * c.hiddenSize + k.perTokenFfn * inter) + k.perScore * heads * T * T;
  }
  if (s.teacher) {
    const t = s.teacher;
    // Inference keeps one layer's temporaries, plus every layer's output when the losses read them.
    floats += T * (4 * t.hiddenSize + 2 * t.intermediateSize) + 2 * t.numAttentionHeads * T * T;
    if (s.teacherHiddenStates) floats += T * t.hiddenSize * (t.numHiddenLayers + 1);
  }
  const trainable = s.trainableParams ?? paramCount(c);
  const live = s.liveBytes ?? 4 * (paramCount(c) + (s.teacher ? paramCount(s.teacher) : 0));
  const fixed = k.overhead + live + (k.bytesPerTrainedParam + (s.momentsOnHeap === false ? 0 : k.momentBytesPerTrainedParam) + (split ? k.splitBytesPerTrainedParam : 0)) * trainable;
  return { fixed, perExample: 4 * floats + (s.extraPerExample ?? 0) };
}

/**
 * The largest micro-batch (at most `batchSize`) whose step fits in `safety` of `limit` bytes by the
 * estimate, or 0 when not even one example fits.
 */
export function chooseMicroBatch(batchSize: number, limit: number, s: StepMemoryInput): number {
  const room = (whole: boolean) => STEP_MEMORY.safety * limit - estimateStepBytes(s, !whole).fixed;
  const { perExample } = estimateStepBytes(s);
  if (room(true) >= batchSize * perExample) return batchSize;
  const r = room(false);
  if (r < perExample) return 0;
  return Math.max(1, Math.min(batchSize, Math.floor(r / perExample)));
}

/** The step does not fit in the backend's memory; names what does and the option that fixes it. */
export class MemoryLimitError extends Error {
  override name = 'MemoryLimitError';
}

export function formatBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(0)} MiB`;
}

/** Parameters of a config (for messages). */
export { paramCount as configParamCount };

/** A WebAssembly trap or abort: on the wasm backend, what a heap that cannot grow ends in (`Aborted()`, or an allocation that came back null). */
export function isWasmFailure(err: unknown): boolean {
  return err instanceof Error && err.name === 'RuntimeError' && /^Aborted\(|memory access out of bounds|out of memory/i.test(err.message);
}

function describeModel(model: BertModel, params = [...model.params.values()].reduce((a, v) => a + v.size, 0)): string {
  const c = model.config;
  return `${(params / 1e6).toFixed(1)}M parameters (${c.numHiddenLayers} layers, hidden ${c.hiddenSize}, FFN ${c.intermediateSize})`;
}

/**
 * The micro-batch a run trains with: `training.microBatchSize` when set, else the largest that fits the
 * backend's memory by `estimateStepBytes` (the whole batch when it fits, or when the backend has no
 * limit Topiary knows). Throws `MemoryLimitError` when not even one example fits.
 */
export function planMicroBatch(o: { model: BertModel; teacher?: BertModel; train: Dataset; training: TrainingOptions; extra?: (seqLen: number) => { fixedBytes?: number; perExampleBytes?: number } }): MemoryPlan {
  const { model, teacher, train, training } = o;
  const B = training.batchSize;
  const seqLen = Math.min(training.maxLength, Math.max(1, ...train.examples.map((e) => e.inputIds.length)));
  const limit = backendMemoryLimit();
  const params = [...model.params.values()].reduce((a, v) => a + v.size, 0);
  const extra = o.extra?.(seqLen) ?? {};
  const input: StepMemoryInput = { config: model.config, seqLen, trainableParams: params, liveBytes: tf.memory().numBytes + (extra.fixedBytes ?? 0), extraPerExample: extra.perExampleBytes ?? 0, momentsOnHeap: !offHeapAdamWAvailable(), ...(teacher ? { teacher: teacher.config, teacherHiddenStates: true } : {}) };
  const estimate = (m: number) => {
    const e = estimateStepBytes(input, m < B);
    return e.fixed + m * e.perExample;
  };
  if (training.microBatchSize !== undefined) {
    const m = Math.min(training.microBatchSize, B);
    return { batchSize: B, microBatchSize: m, source: 'config', seqLen, limitBytes: limit ?? null, estimatedStepBytes: limit ? estimate(m) : null, params };
  }
  if (limit === undefined) return { batchSize: B, microBatchSize: B, source: 'whole', seqLen, limitBytes: null, estimatedStepBytes: null, params };
  const m = chooseMicroBatch(B, limit, input);
  if (m === 0) {
    const e = estimateStepBytes(input);
    throw new MemoryLimitError(
      `training ${describeModel(model)} needs about ${formatBytes(e.fixed)} for its weights, gradients and optimizer moments plus ${formatBytes(e.perExample)} per example at ${seqLen} tokens; ` +
        `the wasm heap holds at most ${formatBytes(limit)}: not even one example fits, so no --micro-batch-size (training.microBatchSize) can help at batch ${B}; use a smaller maxLength or model`,
    );
  }
  return { batchSize: B, microBatchSize: m, source: 'auto', seqLen, limitBytes: limit, estimatedStepBytes: estimate(m), params };
}

/** A wasm trap during training as the error that says why and what to change (exit 3), else `err` itself. */
export function memoryFailure(err: unknown, model: BertModel | undefined, plan: MemoryPlan | undefined): unknown {
  if (!isWasmFailure(err)) return err;
  const heap = wasmHeapBytes();
  // The model may be disposed by now: its size comes from the plan.
  const what = model ? `training ${describeModel(model, plan?.params)}` : 'the run';
  const at = plan ? ` at batch ${plan.batchSize} (micro-batch ${plan.microBatchSize}) x ${plan.seqLen} tokens` : '';
  const smaller = plan && plan.microBatchSize > 1 ? `; set a smaller --micro-batch-size (training.microBatchSize in a run config), e.g. ${Math.max(1, Math.floor(plan.microBatchSize / 2))}` : '; a shorter maxLength or a smaller model';
  return new MemoryLimitError(
    `${what}${at} ran out of the wasm heap (limit ${formatBytes(WASM_HEAP_LIMIT)}${heap ? `, ${formatBytes(heap)} in use` : ''}): ${(err as Error).message.split('.')[0]}${smaller}`,
  );
}
