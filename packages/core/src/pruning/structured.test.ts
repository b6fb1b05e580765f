import 'reflect-metadata';
import { beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { loadBert } from '../io/checkpoint.js';
import { loadTokenizer } from '../io/tokenizer.js';
import { loadDataset } from '../data/dataset.js';
import { createRunContainer } from '../plugins/registry.js';
import { provide } from '../plugins/plugin.js';
import { corePlugin } from '../plugins/builtins.js';
import { groupKey, type ImportanceCriterion, type PruneContext } from '../contracts.js';
import { MaskSet } from './masks.js';
import { compact } from './compact.js';
import type { RunEvent } from '../events.js';
import { SHARED, modelDir } from '../test-support/shared.js';
import { testBackend } from '../test-support/backend.js';

/** A criterion whose scores are the unit's index: the selection is then known in advance. */
const byIndex: ImportanceCriterion = {
  id: 'by-index',
  kinds: ['head', 'neuron', 'weight', 'layer'],
  score: async (groups) => new Map(groups.map((g) => [groupKey(g), Float32Array.from({ length: g.size }, (_, i) => i)])),
};

async function context(options: Record<string, unknown>) {
  const { registry } = await createRunContainer([
    corePlugin(),
    {
      name: 'test-criteria',
      register: (c) => {
        provide(c, { kind: 'criterion', id: 'by-index', description: 'index', create: () => byIndex });
        provide(c, { kind: 'criterion', id: 'units-only', description: 'index, heads and neurons only', create: () => ({ ...byIndex, kinds: ['head', 'neuron'] }) });
      },
    },
  ]);
  const dir = modelDir('bert-tiny-wordnet-supersense');
  const model = await loadBert(dir);
  const tok = await loadTokenizer(dir);
  const data = await loadDataset(path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl'), tok, { limit: 64, labels: model.config.id2label, maxLength: 32 });
  const events: RunEvent[] = [];
  const ctx: PruneContext = {
    model,
    masks: MaskSet.ones(model),
    train: data,
    dev: data,
    control: { emit: (e) => events.push(e), signal: new AbortController().signal, checkpoint: () => {} },
    resolve: registry,
    options,
    seed: 1,
    training: { batchSize: 16, learningRate: 1e-4, maxSteps: 4, warmupRatio: 0, weightDecay: 0.01, maxGradNorm: 1, maxLength: 32 },
  };
  return { ctx, registry, events };
}

describe('level pruners', () => {
  beforeAll(testBackend);

  it('structured: removes the scheduled heads and neurons per level, lowest scores first, then fine-tunes', async () => {
    const { ctx, registry, events } = await context({ criterion: 'by-index', scheduler: { id: 'iterative', options: { levels: [0.25, 0.5] } }, scoreBatches: 1 });
    const result = await registry.pruner('structured').run(ctx);
    // bert-tiny: 2 layers x 2 heads, 512 neurons each. 25% then 50% of 4 heads = 1 then 2; of 1024 neurons 256 then 512.
    const heads = result.masks.headMask.map((m) => Array.from(m));
    expect(heads).toEqual([[0, 1], [0, 1]]);
    // Equal scores across layers: the stable global ranking takes layer 0's units first.
    expect(result.masks.neuronMask.map((m) => m.reduce((a, b) => a + b, 0))).toEqual([256, 256]);
    expect(result.masks.neuronMask[0]!.slice(0, 256).every((v) => v === 0)).toBe(true);
    const levels = (result.report!['levels'] as { heads: number; neurons: number }[]);
    expect(levels.map((l) => [l.heads, l.neurons])).toEqual([[3, 768], [2, 512]]);
    expect(events.filter((e) => e.type === 'step')).toHaveLength(4);
    // Each level ends with an evaluation of the masked model, reported in the level's row.
    expect(events.filter((e) => e.type === 'evaluated')).toHaveLength(2);
    expect(levels.every((l) => typeof (l as { accuracy?: number }).accuracy === 'number')).toBe(true);
    result.model.dispose();
  });

  it('structured with granularity layers: removes the lowest-scoring layers per level, and compaction drops them', async () => {
    // by-index scores layer l with l: layer 0 goes first.
    const { ctx, registry } = await context({ criterion: 'by-index', scheduler: { id: 'one-shot', options: { targetSparsity: 0.5 } }, scoreBatches: 1, granularity: 'layers' });
    const result = await registry.pruner('structured').run(ctx);
    expect(Array.from(result.masks.layerMask)).toEqual([0, 1]);
    expect((result.report!['levels'] as { layers: number }[])[0]!.layers).toBe(1);
    expect(result.masks.sparsity(result.model).encoderSparsity).toBeCloseTo(0.5, 6);
    const small = compact(result.model, result.masks);
    expect(small.config.numHiddenLayers).toBe(1);
    small.dispose();
    const units = await context({ criterion: 'units-only', scheduler: { id: 'one-shot', options: { targetSparsity: 0.5 } }, granularity: 'layers' });
    await expect(registry.pruner('structured').run(units.ctx)).rejects.toThrow(/cannot score layers/);
    units.ctx.model.dispose();
    result.model.dispose();
  });

  it('unstructured: keeps the top fraction of each matrix and exports zeros', async () => {
    const { ctx, registry } = await context({ criterion: 'by-index', scheduler: { id: 'one-shot', options: { targetSparsity: 0.75 } }, scoreBatches: 1 });
    const result = await registry.pruner('unstructured').run(ctx);
    const name = 'bert.encoder.layer.1.output.dense.weight';
    const m = result.masks.weightMasks.get(name)!;
    expect(m.reduce((a, b) => a + b, 0)).toBe(m.length / 4);
    expect(m[m.length - 1]).toBe(1);
    expect(m[0]).toBe(0);
    const small = compact(result.model, result.masks);
    const w = small.params.get(name)!.dataSync();
    let zeros = 0;
    for (const v of w) if (v === 0) zeros++;
    expect(zeros).toBe(m.length * 0.75);
    expect(result.masks.sparsity(result.model).encoderSparsity).toBeGreaterThan(0.74);
    small.dispose();
    result.model.dispose();
  });
});
