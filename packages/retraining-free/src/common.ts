import { Rng, evaluate, resolveParts, trainLoop, type BertModel, type Batch, type Dataset, type MaskSet, type PruneContext, type RunCheckpoints } from '@topiary/core';

/** Option checks that name the pruner and the field. */
export class Options {
  constructor(
    private readonly id: string,
    private readonly o: Record<string, unknown>,
    known: readonly string[],
  ) {
    for (const k of Object.keys(o)) {
      if (!known.includes(k)) {
        const hint = k === 'targetSparsity' ? ` (${id} takes ${id === 'layer-drop' ? "'drop'" : "'macConstraint', a fraction of the dense MACs"})` : '';
        throw new Error(`${id}: unknown option '${k}'${hint}; expected one of ${known.join(', ')}`);
      }
    }
  }
  private bad(k: string, want: string): never {
    throw new Error(`${this.id}: option '${k}' must be ${want}, got ${JSON.stringify(this.o[k])}`);
  }
  number(k: string, dflt: number | undefined, ok: (v: number) => boolean, want: string): number | undefined {
    const v = this.o[k];
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) this.bad(k, want);
    return v;
  }
  int(k: string, dflt: number, min: number): number {
    return this.number(k, dflt, (v) => Number.isInteger(v) && v >= min, min === 0 ? 'a non-negative integer' : `an integer >= ${min}`)!;
  }
  bool(k: string, dflt: boolean): boolean {
    const v = this.o[k];
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') this.bad(k, 'true or false');
    return v;
  }
  oneOf<T extends string>(k: string, values: readonly T[], dflt: T | undefined): T | undefined {
    const v = this.o[k];
    if (v === undefined) return dflt;
    if (!values.includes(v as T)) this.bad(k, `one of ${values.map((x) => `'${x}'`).join(', ')}`);
    return v as T;
  }
}

/**
 * `n` training examples drawn without replacement with `seed` (the shared splits are sorted by label,
 * so a prefix would hold a few classes), batched in the drawn order.
 */
export function sampleBatches(train: Dataset, n: number, batchSize: number, seed: number): Batch[] {
  const order = new Rng(seed).shuffle(Array.from({ length: train.size }, (_, i) => i)).slice(0, Math.min(n, train.size));
  return [...train.subset(order).batches(batchSize)];
}

/** Mean tokenized length of the training examples (special tokens included), where MACs are counted. */
export function meanLength(train: Dataset): number {
  return train.examples.reduce((s, e) => s + e.inputIds.length, 0) / Math.max(1, train.size);
}

/**
 * A short fine-tune after pruning, with the run's training settings for `steps` steps and the
 * configured losses (default: KD from the teacher with the task loss, or the task loss alone without a
 * teacher). Masks stay fixed. With `checkpoints` (only for the run's own model: a reshaped one is not
 * what the run's checkpoints hold) it saves and resumes like any training loop.
 */
export async function finetune(ctx: PruneContext, model: BertModel, masks: MaskSet | undefined, steps: number, learningRate: number | undefined, phase: string, checkpoints?: RunCheckpoints): Promise<void> {
  const { losses } = resolveParts(ctx, { losses: ctx.teacher ? [{ id: 'kd' }] : [{ id: 'ce' }] });
  try {
    await trainLoop({
      model,
      train: ctx.train,
      ...(ctx.teacher ? { teacher: ctx.teacher } : {}),
      losses,
      training: { ...ctx.training, maxSteps: steps, ...(learningRate !== undefined ? { learningRate } : {}) },
      seed: ctx.seed,
      control: ctx.control,
      ...(masks ? { forwardMasks: () => masks.toTensors() } : {}),
      phase,
      ...(checkpoints ? { checkpoints } : {}),
    });
  } finally {
    for (const l of losses) l.dispose?.();
  }
}

/** Dev accuracy of `model` under `masks`, emitted as an `evaluated` event with `label`. */
export function evaluateStage(ctx: PruneContext, model: BertModel, masks: MaskSet | undefined, label: string): number {
  const m = evaluate(model, ctx.dev, { batchSize: 128, ...(masks ? { forward: () => masks.toTensors() } : {}) });
  ctx.control.emit({ type: 'evaluated', step: -1, metrics: { accuracy: m.accuracy, macroF1: m.macroF1, loss: m.loss!, examples: m.examples }, label });
  return m.accuracy;
}
