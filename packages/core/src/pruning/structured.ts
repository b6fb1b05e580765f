import { groupKey, type PrunableGroup, type PruneContext, type PruneResult, type Pruner } from '../contracts.js';
import { trainLoop } from '../engine/train.js';
import { evaluate } from '../engine/evaluate.js';
import * as path from 'node:path';
import { bindMasks } from './masks.js';
import { compact } from './compact.js';
import { saveBert } from '../io/checkpoint.js';
import { resolveParts } from './spec.js';
import { determinePruningSequence, pruneHeadMask, pruneLayerMask, pruneNeuronMask, weightMasksTopFraction } from './selection.js';
import { encoderLinearNames } from '../model/bert.js';
import { registerParts, stage } from '../engine/checkpoint.js';
import { componentRef, fractionOption, z } from '../plugins/options.js';

/** Options of the `structured` and `unstructured` pruners (the defaults of `run`). */
export const STRUCTURED_OPTIONS = z.strictObject({
  criterion: componentRef.default('first-order').describe('importance criterion'),
  scheduler: componentRef.default('iterative').describe('sparsity schedule (gets the run\'s targetSparsity)'),
  losses: z.array(componentRef).default([{ id: 'ce' }]).describe('loss terms of the fine-tuning between levels'),
  targetSparsity: fractionOption().optional().describe('the run\'s targetSparsity (top-level field)'),
  scope: z.enum(['matrix', 'global']).default('matrix').describe('unstructured: rank weights per matrix or across the encoder'),
  granularity: z.enum(['units', 'layers']).default('units').describe('structured: remove heads and FFN neurons (units), or whole encoder layers (layers: targetSparsity is the fraction of layers, the criterion scores `layer` groups)'),
  minHeadsPerLayer: z.number().int().min(0).default(1).describe('heads every layer keeps'),
  scoreBatches: z.number().int().min(1).default(32).describe('training batches the criterion scores over at each level'),
  levelEvalExamples: z.number().int().min(1).optional().describe('evaluate each level on this many evenly spaced dev examples (default: all)'),
  exportLevels: z.boolean().default(false).describe('export each level\'s compacted model under <out>/levels/<n>/model'),
});

export interface LevelReport {
  level: number;
  targetSparsity: number;
  encoderSparsity: number;
  accuracy?: number;
  heads: number;
  neurons: number;
  /** Encoder layers left (the layer mask's non-zeros). */
  layers: number;
  remainingEncoderParams: number;
  /** The level's exported checkpoint, with `exportLevels`. */
  model?: string;
}

/**
 * Structured pruning of attention heads and FFN neurons by any importance criterion: for each level of
 * the schedule, score heads and neurons at the current masks, remove the least important ones (the
 * reference's selection: a global ranking, at least `minHeadsPerLayer` heads kept per layer), then
 * fine-tune with the configured losses. One-shot is the one-level case. With `granularity: 'layers'`
 * the criterion scores whole layers (`layer` groups) and each level removes the least important ones
 * until `targetSparsity` of the layers are gone; compaction drops them (fewer `num_hidden_layers`).
 */
export class StructuredPruner implements Pruner {
  readonly id: string = 'structured';
  /** `structures` (heads and FFN neurons) or `weights` (individual encoder weights). */
  protected readonly unit: 'structures' | 'weights' = 'structures';
  constructor(private readonly defaults: Record<string, unknown> = {}) {}

  async run(ctx: PruneContext): Promise<PruneResult> {
    const opts = { ...this.defaults, ...ctx.options };
    const { criterion, scheduler, losses } = resolveParts({ ...ctx, options: opts }, { criterion: 'first-order', scheduler: 'iterative' });
    if (!criterion || !scheduler) throw new Error(`${this.id}: needs a criterion and a scheduler`);
    const granularity = opts['granularity'] ?? 'units';
    if (granularity !== 'units' && granularity !== 'layers') throw new Error(`${this.id}: option 'granularity' must be 'units' or 'layers', got ${JSON.stringify(granularity)}`);
    if (granularity === 'layers' && this.unit === 'weights') throw new Error(`${this.id}: option 'granularity' 'layers' is for the structured pruner`);
    const byLayer = granularity === 'layers';
    const kinds = this.unit === 'weights' ? (['weight'] as const) : byLayer ? (['layer'] as const) : (['head', 'neuron'] as const);
    for (const k of kinds) {
      if (!criterion.kinds.includes(k)) throw new Error(`${this.id}: criterion '${criterion.id}' cannot score ${k}s (it scores ${criterion.kinds.join(', ')})`);
    }
    const scope = opts['scope'] ?? 'matrix';
    if (scope !== 'matrix' && scope !== 'global') throw new Error(`${this.id}: option 'scope' must be 'matrix' or 'global', got ${JSON.stringify(scope)}`);
    const minHeads = Number(opts['minHeadsPerLayer'] ?? 1);
    const scoreBatches = Number(opts['scoreBatches'] ?? 32);
    const { model, masks, control } = ctx;
    bindMasks(masks, model);
    // Per-level accuracy may use N evenly spaced dev examples to save time; the run's final figure always uses all of dev.
    const levelEvalExamples = opts['levelEvalExamples'] === undefined ? undefined : Number(opts['levelEvalExamples']);
    if (levelEvalExamples !== undefined && !(Number.isInteger(levelEvalExamples) && levelEvalExamples > 0)) {
      throw new Error(`${this.id}: option 'levelEvalExamples' must be a positive integer, got ${JSON.stringify(opts['levelEvalExamples'])}`);
    }
    const levelDev = ctx.dev.evenlySpaced(levelEvalExamples);
    const c = model.config;
    const totalHeads = c.layerHeads.reduce((a, b) => a + b, 0);
    const totalNeurons = c.layerIntermediate.reduce((a, b) => a + b, 0);
    const total = ctx.training.maxSteps ?? Math.ceil(ctx.train.size / ctx.training.batchSize) * (ctx.training.epochs ?? 1);
    const levels = scheduler.levels(total);
    // Percentages rounded so that e.g. 0.29 * 100 does not truncate one unit short.
    const percents = levels.map((l) => Math.round(l.sparsity * 100 * 1e9) / 1e9);
    const L = c.numHiddenLayers;
    // Whole layers: cumulative layers removed per level, of the L layers (a sparsity below 1 leaves one).
    const layerCounts = percents.map((p) => Math.floor((p / 100) * L + 1e-9));
    const sequence = this.unit === 'weights' || byLayer ? { heads: [], neurons: [] } : determinePruningSequence(percents, totalHeads, totalNeurons, { layers: c.layerHeads.length, minHeadsPerLayer: minHeads });
    const groups: PrunableGroup[] =
      this.unit === 'weights'
        ? encoderLinearNames(c).map((n) => ({ kind: 'weight' as const, param: `${n}.weight`, size: model.params.get(`${n}.weight`)!.size }))
        : byLayer
          ? [{ kind: 'layer' as const, size: L }]
          : c.layerHeads.flatMap((a, l) => [
            { kind: 'head' as const, layer: l, size: a },
            { kind: 'neuron' as const, layer: l, size: c.layerIntermediate[l]! },
          ]);
    for (const loss of losses) await loss.onRunStart?.({ ...ctx, options: opts });
    const cp = ctx.checkpoints;
    registerParts(cp, { criterion, losses });
    const reports: LevelReport[] = [];
    let offset = 0;
    for (const [i, level] of levels.entries()) {
      control.checkpoint();
      // Selection, training and the level's end are separate stages: a resumed run skips what had finished.
      const sparsity = await stage(cp, `level ${i + 1}: select`, async () => {
        const scores = await criterion.score(groups, {
          model,
          masks,
          batches: function* () {
            let n = 0;
            for (const b of ctx.train.batches(ctx.training.batchSize, { shuffleSeed: ctx.seed + 7919 * (i + 1) })) {
              if (n++ >= scoreBatches) return;
              yield b;
            }
          },
          ...(ctx.teacher ? { teacher: ctx.teacher } : {}),
          ...(ctx.training.microBatchSize ? { microBatchSize: ctx.training.microBatchSize } : {}),
          control,
        });
        if (this.unit === 'weights') {
          const byParam = new Map(groups.map((g) => [g.param!, scores.get(groupKey(g))!]));
          masks.weightMasks = weightMasksTopFraction(byParam, 1 - level.sparsity, scope, masks.weightMasks);
        } else if (byLayer) {
          const removed = L - masks.layerMask.filter((v) => v !== 0).length;
          masks.layerMask = pruneLayerMask(scores.get(groupKey({ kind: 'layer' }))!, masks.layerMask, Math.max(0, layerCounts[i]! - removed));
        } else {
          const headImportance = c.layerHeads.map((_, l) => scores.get(groupKey({ kind: 'head', layer: l }))!);
          const neuronImportance = c.layerIntermediate.map((_, l) => scores.get(groupKey({ kind: 'neuron', layer: l }))!);
          masks.headMask = pruneHeadMask(headImportance, masks.headMask, sequence.heads[i]!, minHeads);
          masks.neuronMask = pruneNeuronMask(neuronImportance, masks.neuronMask, sequence.neurons[i]!);
        }
        const sparsity = masks.sparsity(model);
        control.emit({ type: 'masks-updated', step: offset, sparsity, level: i + 1, target: level.sparsity });
        return sparsity;
      });
      let accuracy: number | undefined;
      if (level.steps > 0) {
        const res = await trainLoop({
          model,
          train: ctx.train,
          dev: levelDev,
          ...(ctx.teacher ? { teacher: ctx.teacher } : {}),
          losses,
          training: { ...ctx.training, maxSteps: level.steps },
          seed: ctx.seed + i,
          control,
          forwardMasks: () => masks.toTensors(),
          phase: `level ${i + 1}/${levels.length}`,
          stepOffset: offset,
          ...(cp ? { checkpoints: cp } : {}),
        });
        offset += res.steps;
        accuracy = res.metrics?.accuracy;
      }
      const report = await stage(cp, `level ${i + 1}: end`, async (): Promise<LevelReport> => {
        if (level.steps <= 0) accuracy = evaluate(model, levelDev, { forward: () => masks.toTensors() }).accuracy;
        for (const loss of losses) await loss.onLevelEnd?.({ ...ctx, options: opts }, i);
        let exported: string | undefined;
        if (opts['exportLevels'] && ctx.out) {
          // Each level's snapshot as its own compacted checkpoint, so every sparsity can be evaluated and timed.
          exported = path.join(ctx.out, 'levels', String(i + 1), 'model');
          const small = compact(model, masks);
          try {
            await saveBert(small, exported, ctx.modelDir ? { tokenizerFrom: ctx.modelDir } : {});
          } finally {
            small.dispose();
          }
          control.emit({ type: 'checkpoint-saved', step: offset, path: exported });
        }
        return {
          level: i + 1,
          targetSparsity: level.sparsity,
          encoderSparsity: sparsity.encoderSparsity,
          ...(accuracy !== undefined ? { accuracy } : {}),
          remainingEncoderParams: masks.sparsity(model).remainingEncoderParams,
          ...(exported ? { model: exported } : {}),
          heads: masks.headMask.reduce((a, m) => a + m.filter((v) => v !== 0).length, 0),
          neurons: masks.neuronMask.reduce((a, m) => a + m.filter((v) => v !== 0).length, 0),
          layers: masks.layerMask.filter((v) => v !== 0).length,
        };
      });
      reports.push(report);
    }
    criterion.dispose?.();
    for (const loss of losses) loss.dispose?.();
    return { model, masks, report: { levels: reports } };
  }
}

/**
 * Unstructured pruning of individual encoder weights by any weight-level criterion (magnitude,
 * first-order |w dL/dw|, random), ranked per matrix (`scope: 'matrix'`, torch's `l1_unstructured`) or
 * across the encoder (`scope: 'global'`), one-shot or iterative, with fine-tuning between levels.
 * Pruned weights are exported as zeros.
 */
export class UnstructuredPruner extends StructuredPruner {
  override readonly id = 'unstructured';
  protected override readonly unit = 'weights' as const;
}
