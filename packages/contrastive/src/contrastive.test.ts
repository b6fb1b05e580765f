import 'reflect-metadata';
import { beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { MaskSet, corePlugin, createRunContainer, groupKey, loadBert, loadDataset, loadTokenizer, provide, tf, type ImportanceCriterion, type PruneContext, type RunEvent } from '@topiary/core';
import { SHARED, modelDir } from '../../core/src/test-support/shared.js';
import { testBackend } from '../../core/src/test-support/backend.js';
import { contrastivePlugin } from './index.js';
import { ContrastiveLoss } from './contrastive.js';

const byIndex: ImportanceCriterion = {
  id: 'by-index',
  kinds: ['head', 'neuron'],
  score: async (groups) => new Map(groups.map((g) => [groupKey(g), Float32Array.from({ length: g.size }, (_, i) => i)])),
};

describe('contrastive loss in a pruning run (CAP-f by configuration)', () => {
  beforeAll(testBackend);

  it('builds PrC, FiC and one SnC bank per level, adds its term to every step, and keeps numTensors flat', async () => {
    const { registry } = await createRunContainer([
      corePlugin(),
      contrastivePlugin(),
      { name: 'test-criteria', register: (c) => provide(c, { kind: 'criterion', id: 'by-index', description: 'index', create: () => byIndex }) },
    ]);
    const tok = await loadTokenizer(modelDir('bert-tiny-wordnet-supersense'));
    const teacher = await loadBert(modelDir('bert-tiny-wordnet-supersense'));
    const pretrained = await loadBert(modelDir('bert-tiny-wordnet-pretrained'), { labels: teacher.config.id2label, seed: 1 });
    const model = await loadBert(modelDir('bert-tiny-wordnet-pretrained'), { labels: teacher.config.id2label, seed: 1 });
    const data = await loadDataset(path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl'), tok, { limit: 48, labels: teacher.config.id2label, maxLength: 24 });
    const events: RunEvent[] = [];
    const counts: number[] = [];
    const ctx: PruneContext = {
      model,
      teacher,
      pretrained,
      masks: MaskSet.ones(model),
      train: data,
      dev: data,
      control: { emit: (e) => { events.push(e); if (e.type === 'step') counts.push(tf.memory().numTensors); }, signal: new AbortController().signal, checkpoint: () => {} },
      resolve: registry,
      options: {
        criterion: 'by-index',
        scheduler: { id: 'iterative', options: { levels: [0.25, 0.5] } },
        scoreBatches: 1,
        losses: [{ id: 'kd', options: { temperature: 1 } }, { id: 'contrastive', options: { extraExamples: 16 } }],
      },
      seed: 2,
      training: { batchSize: 8, learningRate: 1e-4, maxSteps: 8, warmupRatio: 0, weightDecay: 0.01, maxGradNorm: 1, maxLength: 24 },
    };
    await registry.pruner('structured').run(ctx);
    const steps = events.flatMap((e) => (e.type === 'step' ? [e.loss as Record<string, number>] : []));
    expect(steps).toHaveLength(8);
    for (const l of steps) expect(l['contrastive']).toBeGreaterThan(0);
    // Within a level the tensors alive stay the same from step to step.
    expect(new Set(counts.slice(1, 4)).size).toBe(1);
    expect(new Set(counts.slice(5, 8)).size).toBe(1);
    model.dispose();
    teacher.dispose();
    pretrained.dispose();
  });

  it('holds examples x representations x hidden floats per bank, and can switch banks off', async () => {
    const teacher = await loadBert(modelDir('bert-tiny-wordnet-supersense'));
    const tok = await loadTokenizer(modelDir('bert-tiny-wordnet-supersense'));
    const data = await loadDataset(path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl'), tok, { limit: 20, labels: teacher.config.id2label, maxLength: 16 });
    const loss = new ContrastiveLoss({ pretrained: false });
    const ctx = { model: teacher, teacher, masks: MaskSet.ones(teacher), train: data } as unknown as PruneContext;
    await loss.onRunStart(ctx);
    expect(loss.bankFloats).toBe(20 * 1 * 128);
    await loss.onLevelEnd(ctx);
    await loss.onLevelEnd(ctx);
    expect(loss.bankFloats).toBe(20 * 128 + 20 * 2 * 128);
    loss.dispose();
    expect(loss.bankFloats).toBe(0);
    expect(() => new ContrastiveLoss({ representation: 'avg' as never })).toThrow(/option 'representation'/);
    teacher.dispose();
  });
});
