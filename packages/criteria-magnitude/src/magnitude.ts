import { EMBEDDINGS_PROJECT, Rng, encoderLinearNames, groupKey, layerParamNames, type BertModel, type CriterionContext, type GroupKind, type ImportanceCriterion, type PrunableGroup, type Scores } from '@topiary/core';

export type Norm = 'l1' | 'l2';

export interface MagnitudeOptions {
  /** Norm of the weights a head/neuron/hidden dimension owns (default `l1`). Weights score |w| either way. */
  norm?: Norm;
}

/** Reads a parameter's values and shape (linear weights are stored `[in, out]`). */
function read(model: BertModel, name: string): { v: Float32Array; rows: number; cols: number } {
  const p = model.params.get(name);
  if (!p) throw new Error(`magnitude: the model has no parameter '${name}'`);
  const [rows = 1, cols = 1] = p.shape;
  return { v: p.dataSync() as Float32Array, rows, cols };
}

/**
 * Adds |w|^p of a `[rows, cols]` matrix into `acc`, element `e` of `acc` owning `unit` consecutive
 * rows (`axis: 'row'`) or columns (`axis: 'col'`).
 */
function accumulate(acc: Float64Array, m: { v: Float32Array; rows: number; cols: number }, axis: 'row' | 'col', unit: number, p: number): void {
  const { v, rows, cols } = m;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const a = Math.abs(v[r * cols + c]!);
      acc[Math.floor((axis === 'row' ? r : c) / unit)]! += p === 1 ? a : a * a;
    }
  }
}

const finish = (acc: Float64Array, p: number) => Float32Array.from(acc, (x) => (p === 1 ? x : Math.sqrt(x)));

/**
 * `magnitude`: |w| for every weight of a matrix; for structures, the L1 or L2 norm of the weights
 * they own: a head its query/key/value output columns and its rows of the attention output; an FFN
 * neuron its intermediate column and output row; a hidden dimension its embedding columns and every
 * encoder weight row or column on the residual stream.
 */
export class MagnitudeCriterion implements ImportanceCriterion {
  readonly id = 'magnitude';
  readonly kinds: readonly GroupKind[] = ['weight', 'head', 'neuron', 'hidden'];
  private readonly p: number;

  constructor(opts: MagnitudeOptions = {}) {
    const norm = opts.norm ?? 'l1';
    if (norm !== 'l1' && norm !== 'l2') throw new Error(`magnitude: option 'norm' must be 'l1' or 'l2', got ${JSON.stringify(norm)}`);
    this.p = norm === 'l1' ? 1 : 2;
  }

  async score(groups: PrunableGroup[], ctx: CriterionContext): Promise<Scores> {
    const { model } = ctx;
    const c = model.config;
    const scores: Scores = new Map();
    for (const g of groups) {
      const key = groupKey(g);
      if (g.kind === 'weight') {
        const { v } = read(model, g.param!);
        scores.set(key, Float32Array.from(v, Math.abs));
      } else if (g.kind === 'head') {
        const n = layerParamNames(g.layer!);
        const acc = new Float64Array(c.layerHeads[g.layer!]!);
        for (const w of [n.query, n.key, n.value]) accumulate(acc, read(model, `${w}.weight`), 'col', c.attentionHeadSize, this.p);
        accumulate(acc, read(model, `${n.attnOut}.weight`), 'row', c.attentionHeadSize, this.p);
        scores.set(key, finish(acc, this.p));
      } else if (g.kind === 'neuron') {
        const n = layerParamNames(g.layer!);
        const acc = new Float64Array(c.layerIntermediate[g.layer!]!);
        accumulate(acc, read(model, `${n.inter}.weight`), 'col', 1, this.p);
        accumulate(acc, read(model, `${n.out}.weight`), 'row', 1, this.p);
        scores.set(key, finish(acc, this.p));
      } else if (g.kind === 'hidden') {
        const acc = new Float64Array(c.hiddenSize);
        if (model.params.has(`${EMBEDDINGS_PROJECT}.weight`)) {
          // Factorized embeddings (ELECTRA, ALBERT): the projection writes the hidden dimensions.
          accumulate(acc, read(model, `${EMBEDDINGS_PROJECT}.weight`), 'col', 1, this.p);
        } else {
          // Factorized word embeddings (config.embeddingRank): V [r, H] holds the hidden columns.
          for (const e of ['word_embeddings', 'word_embeddings.weight_v', 'position_embeddings', 'token_type_embeddings']) {
            const name = e.endsWith('weight_v') ? `bert.embeddings.${e}` : `bert.embeddings.${e}.weight`;
            if (model.params.has(name)) accumulate(acc, read(model, name), 'col', 1, this.p);
          }
        }
        for (let l = 0; l < c.numHiddenLayers; l++) {
          const n = layerParamNames(l);
          for (const w of [n.query, n.key, n.value, n.inter]) accumulate(acc, read(model, `${w}.weight`), 'row', 1, this.p);
          for (const w of [n.attnOut, n.out]) accumulate(acc, read(model, `${w}.weight`), 'col', 1, this.p);
        }
        scores.set(key, finish(acc, this.p));
      } else {
        throw new Error(`magnitude: cannot score '${g.kind}' groups (it scores ${this.kinds.join(', ')})`);
      }
    }
    return scores;
  }
}

/** `random`: uniform scores from a seeded generator, the control every pruning paper compares against. */
export class RandomCriterion implements ImportanceCriterion {
  readonly id = 'random';
  readonly kinds: readonly GroupKind[] = ['weight', 'head', 'neuron', 'hidden', 'attention-block', 'ffn-block', 'layer'];
  private readonly rng: Rng;

  constructor(opts: { seed?: number } = {}) {
    this.rng = new Rng(opts.seed ?? 0);
  }

  async score(groups: PrunableGroup[]): Promise<Scores> {
    return new Map(groups.map((g) => [groupKey(g), Float32Array.from({ length: g.size }, () => this.rng.next())]));
  }

  /** The generator's position: a resumed run draws the later levels' scores as the uninterrupted one. */
  state(): { json: number } {
    return { json: this.rng.position };
  }
  restore(s: { json?: unknown }): void {
    this.rng.position = s.json as number;
  }
}

/** Weight groups for every encoder linear layer of `model` (what unstructured criteria score). */
export function encoderWeightGroups(model: BertModel): PrunableGroup[] {
  return encoderLinearNames(model.config).map((n) => {
    const param = `${n}.weight`;
    return { kind: 'weight' as const, param, size: model.params.get(param)!.size };
  });
}
