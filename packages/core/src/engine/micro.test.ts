import { beforeAll, describe, expect, it } from 'vitest';
import { makeBatch } from '../data/dataset.js';
import { randomBert } from '../test-support/random-bert.js';
import { testBackend } from '../test-support/backend.js';
import { WASM_HEAP_LIMIT, MemoryLimitError, chooseMicroBatch, estimateStepBytes, memoryFailure, splitBatch, type StepMemoryInput } from './micro.js';
import type { MemoryPlan } from '../events.js';

describe('micro-batches', () => {
  beforeAll(testBackend);

  it('splits a batch into micro-batches with a remainder, keeping the padded length, labels and example ids', () => {
    const examples = Array.from({ length: 10 }, (_, i) => ({ id: 100 + i, inputIds: Array.from({ length: 2 + (i % 4) }, (_, t) => t + 1), tokenTypeIds: Array.from({ length: 2 + (i % 4) }, () => 0), label: i % 3 }));
    const batch = makeBatch(examples as never);
    const parts = splitBatch(batch, 4);
    expect(parts.map((p) => [p.offset, p.size])).toEqual([[0, 4], [4, 4], [8, 2]]);
    for (const p of parts) {
      expect(p.batch.seqLen).toBe(batch.seqLen);
      expect(p.whole).toBe(batch);
      expect(Array.from(p.batch.inputIds)).toEqual(Array.from(batch.inputIds.subarray(p.offset * batch.seqLen, (p.offset + p.size) * batch.seqLen)));
      expect(Array.from(p.batch.attentionMask)).toEqual(Array.from(batch.attentionMask.subarray(p.offset * batch.seqLen, (p.offset + p.size) * batch.seqLen)));
      expect(Array.from(p.batch.labels!)).toEqual(Array.from(batch.labels!.subarray(p.offset, p.offset + p.size)));
      expect(p.batch.exampleIds).toEqual(batch.exampleIds!.slice(p.offset, p.offset + p.size));
    }
    // A micro-batch at least the batch's size is the batch itself.
    expect(splitBatch(batch, 10)).toEqual([{ batch, offset: 0, size: 10, whole: batch }]);
    expect(() => splitBatch(batch, 0)).toThrow(/positive integer/);
  });

  it('chooses the largest micro-batch that fits by the estimate, the whole batch when it fits, 0 when none does', () => {
    const model = randomBert({ layers: 2, hidden: 64, heads: 4, intermediate: 128, labels: 3, vocab: 64, maxPositions: 128 });
    const input: StepMemoryInput = { config: model.config, seqLen: 128 };
    const { fixed, perExample } = estimateStepBytes(input);
    // Limits that leave room for exactly k examples after the safety margin.
    const limitFor = (k: number) => (fixed + k * perExample + perExample / 2) / 0.9;
    expect(chooseMicroBatch(32, limitFor(5), input)).toBe(5);
    expect(chooseMicroBatch(32, limitFor(1), input)).toBe(1);
    expect(chooseMicroBatch(32, limitFor(0), input)).toBe(0);
    expect(chooseMicroBatch(32, 1e15, input)).toBe(32);
    // Longer sequences need more per example.
    expect(estimateStepBytes({ ...input, seqLen: 256 }).perExample).toBeGreaterThan(2 * perExample);
    model.dispose();
  });

  it('turns a wasm abort into a MemoryLimitError naming the model, the batch, the limit and --micro-batch-size', () => {
    const model = randomBert({ layers: 2, hidden: 64, heads: 4, intermediate: 128, labels: 3 });
    const plan: MemoryPlan = { batchSize: 32, microBatchSize: 8, source: 'auto', seqLen: 128, limitBytes: WASM_HEAP_LIMIT, estimatedStepBytes: 1, params: 1 };
    const abort = Object.assign(new Error('Aborted(). Build with -sASSERTIONS for more info.'), { name: 'RuntimeError' });
    const err = memoryFailure(abort, model, plan) as Error;
    expect(err).toBeInstanceOf(MemoryLimitError);
    expect(err.message).toMatch(/parameters \(2 layers, hidden 64/);
    expect(err.message).toMatch(/batch 32 \(micro-batch 8\) x 128 tokens/);
    expect(err.message).toMatch(/4\.00 GiB/);
    expect(err.message).toMatch(/--micro-batch-size .* e\.g\. 4/);
    const oob = Object.assign(new Error('memory access out of bounds'), { name: 'RuntimeError' });
    expect(memoryFailure(oob, model, plan)).toBeInstanceOf(MemoryLimitError);
    // Anything else passes through.
    const other = new Error('something else');
    expect(memoryFailure(other, model, plan)).toBe(other);
    model.dispose();
  });
});
