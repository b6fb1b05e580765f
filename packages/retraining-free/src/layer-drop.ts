import { MaskSet, RunAborted, bindMasks, dropLayers, tf, type Batch, type BertModel, type PruneContext, type PruneResult, type Pruner } from '@topiary/core';
import { Options, evaluateStage, finetune, sampleBatches } from './common.js';
import { tokenRows } from './layer.js';

/** Sajjad et al.'s strategies. */
export const LAYER_DROP_STRATEGIES = ['top', 'bottom', 'alternate', 'symmetric', 'contribution'] as const;
export type LayerDropStrategy = (typeof LAYER_DROP_STRATEGIES)[number];

export interface LayerDropOptions {
  strategy?: LayerDropStrategy;
  /** Layers to drop: a count (integer >= 1) or a fraction of the layers in (0, 1) (rounded). */
  drop?: number;
  /** Examples the contribution strategy measures on (default 1024) and their batch size (32). */
  samples?: number;
  sampleBatchSize?: number;
  /** Steps of fine-tuning after dropping (default 0), with `losses` (default KD from the teacher). */
  finetuneSteps?: number;
  finetuneLearningRate?: number;
  /** Evaluate dev before the fine-tune too (default: when fine-tuning). */
  evalBeforeFinetune?: boolean;
  losses?: unknown;
}
const KNOWN = ['strategy', 'drop', 'samples', 'sampleBatchSize', 'finetuneSteps', 'finetuneLearningRate', 'evalBeforeFinetune', 'losses'] as const;

/** How many layers `drop` means out of `layers`. */
export function layersToDrop(drop: number, layers: number): number {
  const k = drop < 1 ? Math.round(drop * layers) : drop;
  if (!(Number.isInteger(k) && k >= 1 && k < layers)) throw new Error(`layer-drop: option 'drop' must give between 1 and ${layers - 1} of the ${layers} layers, got ${drop} (${k} layers)`);
  return k;
}

/**
 * The layers (0-based) a strategy drops (Sajjad et al. 2020, section 3): `top`, the last k; `bottom`,
 * the first k; `alternate`, every other layer from the top, odd-numbered counting from 1 (12 layers,
 * k = 4: 11, 9, 7, 5, 1-based); `symmetric`, k from the middle, keeping the top and bottom ones (12
 * layers, k = 4: 5-8, 1-based); `contribution`, the k layers whose output is most similar to their
 * input (`similarity[l]`, highest first).
 */
export function layersFor(strategy: LayerDropStrategy, layers: number, k: number, similarity?: ArrayLike<number>): number[] {
  const range = (a: number, n: number) => Array.from({ length: n }, (_, i) => a + i);
  switch (strategy) {
    case 'top':
      return range(layers - k, k);
    case 'bottom':
      return range(0, k);
    case 'alternate': {
      const out = range(0, k).map((i) => layers - 2 - 2 * i).filter((l) => l >= 0);
      if (out.length < k) throw new Error(`layer-drop: 'alternate' drops at most ${Math.floor(layers / 2)} of ${layers} layers, asked for ${k}`);
      return out.sort((a, b) => a - b);
    }
    case 'symmetric':
      return range(Math.floor((layers - k) / 2), k);
    case 'contribution': {
      if (!similarity || similarity.length !== layers) throw new Error('layer-drop: the contribution strategy needs a similarity per layer');
      return range(0, layers).sort((a, b) => similarity[b]! - similarity[a]! || a - b).slice(0, k).sort((a, b) => a - b);
    }
  }
}

/**
 * Mean cosine similarity between each layer's input and output token vectors over the non-padded tokens
 * of `batches` (Sajjad et al.'s contribution: a layer that changes its input little contributes little).
 */
export function layerSimilarity(model: BertModel, batches: Batch[]): Float64Array {
  const L = model.config.numHiddenLayers;
  const H = model.config.hiddenSize;
  const sums = new Float64Array(L);
  let tokens = 0;
  for (const b of batches) {
    const rows = tokenRows(b);
    const cos = tf.tidy(() => {
      const hs = model.forward(b, { outputHiddenStates: true }).hiddenStates!;
      const idx = tf.tensor1d(rows, 'int32');
      return hs.slice(0, L).map((x, l) => {
        const a = tf.gather(x.reshape([-1, H]), idx);
        const y = tf.gather(hs[l + 1]!.reshape([-1, H]), idx);
        const dot = tf.sum(tf.mul(a, y), 1);
        return tf.sum(tf.div(dot, tf.mul(tf.norm(a, 2, 1), tf.norm(y, 2, 1)))).dataSync()[0]!;
      });
    });
    cos.forEach((v, l) => (sums[l]! += v));
    tokens += rows.length;
  }
  return sums.map((s) => s / tokens);
}

/**
 * Layer dropping (Sajjad et al. 2020, "On the effect of dropping layers of pre-trained transformer
 * models"): remove whole encoder layers by one of five strategies, then optionally fine-tune (KD). The
 * result has fewer layers (`num_hidden_layers` updated in the export).
 */
export class LayerDropPruner implements Pruner {
  readonly id = 'layer-drop';
  constructor(private readonly defaults: LayerDropOptions = {}) {
    new Options(this.id, defaults as Record<string, unknown>, KNOWN);
  }

  async run(ctx: PruneContext): Promise<PruneResult> {
    const o = new Options(this.id, { ...this.defaults, ...ctx.options } as Record<string, unknown>, KNOWN);
    const strategy = o.oneOf('strategy', LAYER_DROP_STRATEGIES, 'top')!;
    const dropOpt = o.number('drop', undefined, (v) => v > 0, 'a layer count or a fraction in (0, 1)');
    if (dropOpt === undefined) throw new Error(`${this.id}: option 'drop' is required (a number of layers, or a fraction of them)`);
    const samples = o.int('samples', 1024, 1);
    const batchSize = o.int('sampleBatchSize', 32, 1);
    const finetuneSteps = o.int('finetuneSteps', 0, 0);
    const finetuneLearningRate = o.number('finetuneLearningRate', undefined, (v) => v > 0, 'a positive number');
    const evalBefore = o.bool('evalBeforeFinetune', finetuneSteps > 0);
    const { model } = ctx;
    const L = model.config.numHiddenLayers;
    const k = layersToDrop(dropOpt, L);
    const similarity = strategy === 'contribution' ? layerSimilarity(model, sampleBatches(ctx.train, samples, batchSize, ctx.seed)) : undefined;
    const dropped = layersFor(strategy, L, k, similarity);
    ctx.control.emit({ type: 'log', message: `layer-drop: ${strategy} drops layers ${dropped.join(', ')} of ${L}${similarity ? ` (input/output cosine ${Array.from(similarity, (s) => s.toFixed(3)).join(', ')})` : ''}` });
    const small = dropLayers(model, dropped);
    const masks = bindMasks(MaskSet.ones(small), small);
    let beforeFinetune: number | undefined;
    if (evalBefore) beforeFinetune = evaluateStage(ctx, small, undefined, 'after dropping');
    // The run's checkpoints hold the run's model, not this smaller one: layer-drop writes none, and an
    // interrupted run starts again (the dropping takes seconds; the fine-tune restarts from step 0).
    if (finetuneSteps > 0) {
      try {
        await finetune(ctx, small, undefined, finetuneSteps, finetuneLearningRate, 'finetune');
      } catch (err) {
        if (err instanceof RunAborted) ctx.control.emit({ type: 'log', message: 'layer-drop: interrupted; it writes no checkpoint (it changes the architecture), so run it again without --resume: dropping takes seconds, the fine-tune restarts' });
        small.dispose();
        throw err;
      }
    }
    // The run reports sparsity of the returned model; against the original, these are the figures.
    const full = MaskSet.ones(model).sparsity(model);
    const encoderKept = masks.sparsity(small).encoderParams;
    const total = (m: BertModel) => [...m.params.values()].reduce((a, v) => a + v.size, 0);
    return {
      model: small,
      masks,
      report: {
        strategy,
        droppedLayers: dropped,
        layers: L - k,
        ...(similarity ? { similarity: Array.from(similarity) } : {}),
        ...(beforeFinetune !== undefined ? { accuracyBeforeFinetune: beforeFinetune } : {}),
        encoderSparsity: 1 - encoderKept / full.encoderParams,
        totalSparsity: 1 - total(small) / total(model),
      },
    };
  }
}
