import 'reflect-metadata';
import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { MaskSet, compact, corePlugin, createRunContainer, loadBert, loadDataset, loadTokenizer, runPruning, tf, type PruneContext, type RunEvent, type RunSpec } from '@topiary/core';
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
  /** numTensors after each step, by phase. */
  const counts: Record<string, number[]> = {};
  const ctx: PruneContext = {
    model,
    teacher,
    masks: MaskSet.ones(model),
    train: data,
    dev: data,
    control: {
      emit: (e) => {
        events.push(e);
        if (e.type === 'step') (counts[e.phase ?? ''] ??= []).push(tf.memory().numTensors);
      },
      signal: new AbortController().signal,
      checkpoint: () => {},
    },
    resolve: registry,
    options,
    seed: 4,
    training: { batchSize: 16, learningRate: 1e-4, maxSteps, warmupRatio: 0, weightDecay: 0.01, maxGradNorm: 1, maxLength: 24 },
    ...(out ? { out } : {}),
  };
  const dispose = () => {
    model.dispose();
    teacher.dispose();
  };
  return { ctx, registry, events, counts, dispose };
}

type Report = {
  expectedSparsityStart: number;
  expectedSparsity: number;
  reachedEncoderSparsity: number;
  phases: Record<string, number>;
  bestPruneStep?: number;
  resumedFrom?: string;
  l0State?: string;
};

describe('cofi pruner', () => {
  beforeAll(testBackend);

  it('learns masks under the Lagrangian with flat numTensors; its masks compact to the same logits; a later run resumes them', async () => {
    const out = mkdtempSync(path.join(tmpdir(), 'topiary-cofi-'));
    const target = 0.6;
    // A mask learning rate far above the reference's (0.01) so that twenty steps visibly move the
    // masks; no evaluation inside the phases, so that every step of a phase holds the same tensors.
    const run = await context({ targetSparsity: target, maskLearningRate: 0.3, lagrangianWarmup: 4, finetuneSteps: 3, evalEvery: 1000 }, 23, out);
    const result = await run.registry.pruner('cofi').run(run.ctx);
    const report = result.report as Report;
    expect(report.phases).toEqual({ prune: 20, finetune: 3 });

    // Every pruning step has the CoFi terms and the Lagrangian; numTensors does not grow.
    const steps = run.events.flatMap((e) => (e.type === 'step' ? [e] : []));
    expect(steps.filter((e) => e.phase === 'prune').every((e) => 'lagrangian' in e.loss && 'layer' in e.loss && 'kd' in e.loss)).toBe(true);
    expect(steps.filter((e) => e.phase === 'finetune').every((e) => !('lagrangian' in e.loss) && 'layer' in e.loss)).toBe(true);
    expect(run.counts['prune']).toHaveLength(20);
    expect(new Set(run.counts['prune']).size).toBe(1);
    expect(new Set(run.counts['finetune']).size).toBe(1);

    // The expected sparsity moved toward the target, and the masks actually prune something.
    expect(report.expectedSparsityStart).toBeLessThan(0.2);
    expect(Math.abs(report.expectedSparsity - target)).toBeLessThan(Math.abs(report.expectedSparsityStart - target) - 0.1);
    expect(report.reachedEncoderSparsity).toBeGreaterThan(0.1);
    expect(result.masks.sparsity(result.model).encoderSparsity).toBeCloseTo(report.reachedEncoderSparsity, 10);

    // Compaction folds the (fractional) deterministic masks: the same logits as the masked model.
    const small = compact(result.model, result.masks);
    expect([...small.params.values()].reduce((a, v) => a + v.size, 0)).toBeLessThan([...result.model.params.values()].reduce((a, v) => a + v.size, 0));
    const batch = [...run.ctx.dev.batches(8)][0]!;
    const [a, b] = tf.tidy(() => [
      result.model.forward(batch, result.masks.toTensors()).logits!.arraySync(),
      small.forward(batch).logits!.arraySync(),
    ]);
    expect(maxAbsDiff(a, b)).toBeLessThan(1e-4);
    small.dispose();

    // The L0 state is saved next to the output; a later run continues from it to a higher target:
    // it starts at the saved expected sparsity, and the warm-up rises from there.
    expect(report.l0State).toBe(path.join(out, 'cofi', 'l0.safetensors'));
    expect(existsSync(report.l0State!)).toBe(true);
    expect(JSON.parse(readFileSync(path.join(out, 'cofi', 'l0.json'), 'utf8')).expectedSparsity).toBeCloseTo(report.expectedSparsity, 6);
    const again = await context({ targetSparsity: 0.7, resumeMasks: out, finetuneSteps: 0, maskLearningRate: 1e-6 }, 2);
    const resumed = (await again.registry.pruner('cofi').run(again.ctx)).report as Report;
    expect(resumed.resumedFrom).toBe(report.l0State);
    expect(Math.abs(resumed.expectedSparsityStart - report.expectedSparsity)).toBeLessThan(1e-5);
    // With masks that barely move and the default epsilon, 0.7 is never reached: no best model, a warning.
    expect(resumed.bestPruneStep).toBeUndefined();
    expect(again.events.some((e) => e.type === 'warning' && /came within/.test(e.message))).toBe(true);
    run.dispose();
    again.dispose();
    rmSync(out, { recursive: true, force: true });
  });

  it('keeps the best evaluated model once the expected sparsity is within epsilon of the target', async () => {
    // With a pre-pruning distillation phase: its steps are counted first and carry no Lagrangian.
    const run = await context({ targetSparsity: 0.5, sparsityEpsilon: 0.5, distillSteps: 2, finetuneSteps: 0, evalEvery: 2 }, 6);
    const report = (await run.registry.pruner('cofi').run(run.ctx)).report as Report & { bestPruneAccuracy: number };
    expect(report.phases).toEqual({ distill: 2, prune: 4 });
    const steps = run.events.flatMap((e) => (e.type === 'step' ? [e] : []));
    expect(steps.map((e) => `${e.phase}:${e.step}:${'lagrangian' in e.loss}`)).toEqual(['distill:1:false', 'distill:2:false', 'prune:3:true', 'prune:4:true', 'prune:5:true', 'prune:6:true']);
    const evals = run.events.flatMap((e) => (e.type === 'evaluated' ? [e] : []));
    expect(evals.map((e) => e.step)).toEqual([4, 6]);
    const bestEval = evals.reduce((x, y) => (y.metrics.accuracy > x.metrics.accuracy ? y : x));
    expect(report.bestPruneStep).toBe(bestEval.step);
    expect(report.bestPruneAccuracy).toBe(bestEval.metrics.accuracy);
    // Size correction: the Lagrangian target is shifted by the last evaluation's expected - deterministic gap.
    const logs = run.events.flatMap((e) => (e.type === 'log' && e.message.startsWith('cofi: step') ? [/expected sparsity ([\d.]+)%, deterministic ([\d.]+)%/.exec(e.message)] : [])).filter((m) => m !== null);
    expect(logs).toHaveLength(2);
    const [, expected, deterministic] = logs[1]!.map(Number);
    expect((report as Report & { targetCorrection: number }).targetCorrection).toBeCloseTo((expected! - deterministic!) / 100, 3);
    run.dispose();
  });

  it('runs through core: compacts and exports, reports, and a second run continues from the first run\'s checkpoint to a higher target', async () => {
    const { registry } = await createRunContainer([corePlugin(), cofiPlugin()]);
    const dir = modelDir('bert-tiny-wordnet-supersense');
    const dev = path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl');
    const out = mkdtempSync(path.join(tmpdir(), 'topiary-cofi-run-'));
    const spec = (o: Partial<RunSpec> & { out: string; options: Record<string, unknown> }): RunSpec => ({
      method: 'cofi',
      model: dir,
      teacher: dir,
      data: { train: dev, dev, trainLimit: 48, devLimit: 32 },
      training: { batchSize: 16, learningRate: 1e-4, maxSteps: 6, warmupRatio: 0, weightDecay: 0.01, maxGradNorm: 1, maxLength: 24 },
      seed: 3,
      ...o,
    });
    const drain = (s: RunSpec) =>
      new Promise<RunEvent[]>((resolve, reject) => {
        const events: RunEvent[] = [];
        runPruning(s, registry).subscribe({ next: (e) => events.push(e), error: reject, complete: () => resolve(events) });
      });
    await drain(spec({ out, targetSparsity: 0.5, options: { maskLearningRate: 0.3, finetuneSteps: 2 } }));
    const report = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
    expect(report.method).toBe('cofi');
    expect(report.phases).toEqual({ prune: 4, finetune: 2 });
    expect(report.encoderSparsity).toBeCloseTo(report.reachedEncoderSparsity, 10);
    expect(report.exportedParams).toBeLessThan(report.params);
    const exported = JSON.parse(readFileSync(path.join(out, 'model', 'config.json'), 'utf8'));
    expect(exported.hidden_size).toBe(report.hiddenDims);
    for (const f of ['cofi/l0.safetensors', 'checkpoint/model/config.json']) expect(existsSync(path.join(out, f)), f).toBe(true);

    // Continue: the full-size checkpoint of the first run, its masks, a higher target.
    const out2 = mkdtempSync(path.join(tmpdir(), 'topiary-cofi-run2-'));
    await drain(spec({ out: out2, model: path.join(out, 'checkpoint', 'model'), targetSparsity: 0.7, options: { resumeMasks: out, finetuneSteps: 0 } }));
    const report2 = JSON.parse(readFileSync(path.join(out2, 'report.json'), 'utf8'));
    expect(report2.resumedFrom).toBe(path.join(out, 'cofi', 'l0.safetensors'));
    expect(Math.abs(report2.expectedSparsityStart - report.expectedSparsity)).toBeLessThan(1e-5);
    for (const d of [out, out2]) rmSync(d, { recursive: true, force: true });
  });

  it('lets the multipliers ascend at their own learning rate (lagrangianLearningRate)', async () => {
    // The expected sparsity stays below the target for these few steps, so the gap keeps its sign and
    // each Adam step of lambda_1 is close to its full learning rate: 5 steps at 0.8 go well past what
    // 5 steps at the mask rate (0.05) could reach.
    const lambdas: number[] = [];
    for (const lagrangianLearningRate of [undefined, 0.8]) {
      const run = await context({ targetSparsity: 0.6, maskLearningRate: 0.05, ...(lagrangianLearningRate ? { lagrangianLearningRate } : {}), lagrangianWarmup: 0, finetuneSteps: 0, evalEvery: 1000 }, 5);
      const report = (await run.registry.pruner('cofi').run(run.ctx)).report as Report & { lambda1: number };
      expect(report.expectedSparsity).toBeLessThan(0.6);
      lambdas.push(report.lambda1);
      run.dispose();
    }
    // Ascent on lambda_1 (s - t) with s < t drives lambda_1 negative.
    expect(lambdas[0]).toBeLessThan(0);
    expect(Math.abs(lambdas[0]!)).toBeLessThanOrEqual(5 * 0.05 + 1e-6);
    expect(Math.abs(lambdas[1]!)).toBeGreaterThan(2.5);
  });

  it('names bad options', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ targetSparsity: 1.5 }, /option 'targetSparsity'/],
      [{ targetSparsity: 0.5, temperature: 2 }, /unknown option 'temperature'.*distillTemperature/],
      [{ targetSparsity: 0.5, teacherLayers: [0, 5] }, /option 'teacherLayers': 5/],
      [{ targetSparsity: 0.5, lagrangianLearningRate: -1 }, /option 'lagrangianLearningRate' must be a positive number, got -1/],
      [{ targetSparsity: 0.5, finetuneFraction: 0.5, distillFraction: 0.5 }, /leave no pruning steps/],
      [{ targetSparsity: 0.5, resumeMasks: '/nonexistent' }, /resumeMasks/],
    ];
    for (const [options, message] of cases) {
      const r = await context(options, 2);
      await expect(r.registry.pruner('cofi').run(r.ctx)).rejects.toThrow(message);
      r.dispose();
    }
  });
});
