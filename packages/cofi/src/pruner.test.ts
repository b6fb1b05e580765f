import 'reflect-metadata';
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { MaskSet, compact, corePlugin, createRunContainer, loadBert, loadDataset, loadTokenizer, tf, type PruneContext, type RunEvent } from '@topiary/core';
import { SHARED, maxAbsDiff, modelDir } from '../../core/src/test-support/shared.js';
import { testBackend } from '../../core/src/test-support/backend.js';
import { cofiPlugin } from './index.js';

async function context(options: Record<string, unknown>, maxSteps: number, out?: string) {
  const { registry } = await createRunContainer([corePlugin(), cofiPlugin()]);
  const dir = modelDir('bert-tiny-wordnet-supersense');
  const model = await loadBert(dir);
  const teacher = await loadBert(dir);
  const tok = await loadTokenizer(dir);
  const data = await loadDataset(path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl'), tok, { limit: 64, labels: model.config.id2label, maxLength: 24 });
  const events: RunEvent[] = [];
  const counts: number[] = [];
  const ctx: PruneContext = {
    model,
    teacher,
    masks: MaskSet.ones(model),
    train: data,
    dev: data,
    control: { emit: (e) => { events.push(e); if (e.type === 'step') counts.push(tf.memory().numTensors); }, signal: new AbortController().signal, checkpoint: () => {} },
    resolve: registry,
    options,
    seed: 4,
    training: { batchSize: 16, learningRate: 1e-4, maxSteps, warmupRatio: 0, weightDecay: 0.01, maxGradNorm: 1, maxLength: 24 },
    ...(out ? { out } : {}),
  };
  return { ctx, registry, events, counts, teacher };
}

describe('cofi pruner', () => {
  beforeAll(testBackend);

  it('learns masks under the Lagrangian, keeps numTensors flat, and its masks compact to the same logits', async () => {
    const out = mkdtempSync(path.join(tmpdir(), 'topiary-cofi-'));
    // A mask learning rate far above the reference's so that a dozen steps visibly move the masks.
    const { ctx, registry, events, counts, teacher } = await context({ targetSparsity: 0.6, maskLearningRate: 0.5, lagrangianWarmupFraction: 0.5, finetuneFraction: 0.25, evalEvery: 3 }, 12, out);
    const result = await registry.pruner('cofi').run(ctx);
    const report = result.report as { expectedSparsity: number; phases: Record<string, number> };
    expect(report.phases).toEqual({ prune: 9, finetune: 3 });
    expect(report.expectedSparsity).toBeGreaterThan(0.05);
    // Lagrangian term present during pruning; prune-phase steps hold the same tensors.
    const steps = events.flatMap((e) => (e.type === 'step' ? [e] : []));
    expect(steps.slice(0, 9).every((e) => 'lagrangian' in e.loss && 'layer' in e.loss)).toBe(true);
    expect(new Set(counts.slice(1, 9).filter((_, i) => (i + 2) % 3 !== 0)).size).toBeLessThanOrEqual(2);
    // Compaction folds the (fractional) deterministic masks: same logits as the masked model.
    const small = compact(result.model, result.masks);
    const batch = [...ctx.dev.batches(8)][0]!;
    const [a, b] = tf.tidy(() => [
      result.model.forward(batch, result.masks.toTensors()).logits!.arraySync(),
      small.forward(batch).logits!.arraySync(),
    ]);
    expect(maxAbsDiff(a, b)).toBeLessThan(1e-4);
    // The L0 state is saved so that a later run can continue to a higher target.
    const again = await context({ targetSparsity: 0.7, resumeFrom: out, finetuneFraction: 0 }, 2);
    const resumed = await again.registry.pruner('cofi').run(again.ctx);
    expect((resumed.report as { resumedFrom: string }).resumedFrom).toBe(out);
    small.dispose();
    result.model.dispose();
    resumed.model.dispose();
    teacher.dispose();
    again.teacher.dispose();
  });

  it('names bad options', async () => {
    const { ctx, registry, teacher } = await context({ targetSparsity: 1.5 }, 2);
    await expect(registry.pruner('cofi').run(ctx)).rejects.toThrow(/option 'targetSparsity'/);
    const r = await context({ targetSparsity: 0.5, resumeFrom: '/nonexistent' }, 2);
    await expect(r.registry.pruner('cofi').run(r.ctx)).rejects.toThrow(/resumeFrom/);
    ctx.model.dispose();
    teacher.dispose();
    r.ctx.model.dispose();
    r.teacher.dispose();
  });
});
