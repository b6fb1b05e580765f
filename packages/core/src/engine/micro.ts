import { tf } from '../tf.js';
import type { Batch } from '../model/bert.js';
import type { BertConfig } from '../model/config.js';

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
  /** Parameters that train (optimizer moments and gradients); default all of the student's. */
  trainableParams?: number;
}

function paramCount(c: BertConfig): number {
  const H = c.hiddenSize;
  let n = c.vocabSize * (c.embeddingSize ?? H) + (c.maxPositionEmbeddings + c.typeVocabSize) * H + 2 * H;
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const a = (c.layerHeads[l] ?? c.numAttentionHeads) * c.attentionHeadSize;
    const i = c.layerIntermediate[l] ?? c.intermediateSize;
    n += 3 * (H * a + a) + a * H + H + 2 * H * i + i + H + 4 * H;
  }
  return n + H * H + H + H * 64;
}

/**
 * Calibration of `estimateStepBytes`, from the wasm heap after one step at several batch sizes
 * (scripts/measure-step-memory.mjs, docs/results.md): floats kept per example and layer, per token of
 * hidden width, per token of FFN width and per attention score, and the fixed bytes per parameter
 * (weights, gradients, two moments, one transient copy in the update).
 */
export const STEP_MEMORY = { perTokenHidden: 30, perTokenFfn: 6, perScore: 5, bytesPerParam: 24, teacherBytesPerParam: 4, overhead: 64 * 2 ** 20 };

/**
 * An estimate of the bytes a training step needs on the backend's heap: the fixed part (parameters,
 * gradients, optimizer moments, the teacher's weights) and the part per example (the activations the
 * backward pass keeps), calibrated on the wasm backend.
 */
export function estimateStepBytes(s: StepMemoryInput): { fixed: number; perExample: number } {
  const c = s.config;
  const T = s.seqLen;
  let perExample = 0;
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const heads = c.layerHeads[l] ?? c.numAttentionHeads;
    const inter = c.layerIntermediate[l] ?? c.intermediateSize;
    perExample += T * (STEP_MEMORY.perTokenHidden * c.hiddenSize + STEP_MEMORY.perTokenFfn * inter) + STEP_MEMORY.perScore * heads * T * T;
  }
  perExample *= 4;
  if (s.teacher) {
    const t = s.teacher;
    // Inference keeps one layer's temporaries, plus every layer's output when the losses read them.
    perExample += 4 * T * (4 * t.hiddenSize + t.intermediateSize) + 4 * t.numAttentionHeads * T * T * 2;
    if (s.teacherHiddenStates) perExample += 4 * T * t.hiddenSize * (t.numHiddenLayers + 1);
  }
  const params = paramCount(c);
  const trainable = s.trainableParams ?? params;
  const fixed = STEP_MEMORY.overhead + 4 * params + (STEP_MEMORY.bytesPerParam - 4) * trainable + (s.teacher ? STEP_MEMORY.teacherBytesPerParam * paramCount(s.teacher) : 0);
  return { fixed, perExample };
}

/**
 * The largest micro-batch (at most `batchSize`) whose step fits in `limit` bytes by the estimate, or
 * 0 when not even one example fits.
 */
export function chooseMicroBatch(batchSize: number, limit: number, s: StepMemoryInput): number {
  const { fixed, perExample } = estimateStepBytes(s);
  const room = limit - fixed;
  if (room < perExample) return 0;
  return Math.max(1, Math.min(batchSize, Math.floor(room / perExample)));
}

/** The step does not fit in the backend's memory; names what does and the option that fixes it. */
export class MemoryLimitError extends Error {
  override name = 'MemoryLimitError';
}

/** A wasm out-of-memory abort (emscripten's `Aborted()` when the heap cannot grow). */
export function isWasmAbort(err: unknown): boolean {
  return err instanceof Error && err.name === 'RuntimeError' && /^Aborted\(/.test(err.message);
}

export function formatBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(0)} MiB`;
}

/** Parameters of a config (for messages). */
export { paramCount as configParamCount };
