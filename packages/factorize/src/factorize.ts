import {
  BertModel,
  MaskSet,
  bindMasks,
  compact,
  evaluate,
  budgetSteps,
  crossEntropy,
  encoderFlops,
  layerParamNames,
  paramCount,
  resolveParts,
  sparsityOf,
  wordEmbeddingParams,
  WORD_EMBEDDINGS,
  tf,
  trainLoop,
  type PruneContext,
  type PruneResult,
  type Pruner,
  type Tensor,
} from '@topiary/core';
import { allocateRanks, lowRankFactors, maxUsefulRank, svd, tallFactors, type RankCandidate } from './svd.js';

/** Linear layers of an encoder layer that can be factorized (`layerParamNames` parts). */
export const TARGETS = ['query', 'key', 'value', 'attnOut', 'inter', 'out'] as const;
export type Target = (typeof TARGETS)[number];
const GROUPS: Record<string, Target[]> = { attention: ['query', 'key', 'value', 'attnOut'], ffn: ['inter', 'out'] };

export interface SvdOptions {
  /** Which linear layers: parts (`query`, `key`, `value`, `attnOut`, `inter`, `out`) or groups (`attention`, `ffn`). Default `['ffn']`. */
  targets?: string[];
  /** One rank for every chosen layer. */
  rank?: number;
  /** Or a global budget: the factors of the chosen layers keep this fraction of their dense parameters, ranks allocated by retained energy. */
  paramRatio?: number;
  /** Fine-tune after factorizing (the run's training budget, KD on the teacher when there is one). Default false. */
  fineTune?: boolean;
  /** fisher-svd: batches (of the run's batch size) over which squared gradients are summed. Default 8. */
  fisherBatches?: number;
  losses?: unknown;
}

const KNOWN = new Set(['targets', 'rank', 'paramRatio', 'fineTune', 'fisherBatches', 'losses', 'targetSparsity']);

function parseOptions(method: string, raw: Record<string, unknown>): SvdOptions & { parts: Target[] } {
  for (const k of Object.keys(raw)) if (!KNOWN.has(k)) throw new Error(`${method}: unknown option '${k}' (expected one of ${[...KNOWN].join(', ')})`);
  const o = raw as SvdOptions;
  const targets = o.targets ?? ['ffn'];
  if (!Array.isArray(targets) || targets.length === 0) throw new Error(`${method}: option 'targets' must be a non-empty list of ${[...TARGETS, ...Object.keys(GROUPS)].join(', ')}`);
  const parts = new Set<Target>();
  for (const t of targets) {
    if (GROUPS[t]) GROUPS[t]!.forEach((p) => parts.add(p));
    else if ((TARGETS as readonly string[]).includes(t)) parts.add(t as Target);
    else throw new Error(`${method}: option 'targets' has ${JSON.stringify(t)}, expected one of ${[...TARGETS, ...Object.keys(GROUPS)].join(', ')}`);
  }
  if ((o.rank === undefined) === (o.paramRatio === undefined)) throw new Error(`${method}: give exactly one of option 'rank' (a positive integer) or 'paramRatio' (in (0, 1))`);
  if (o.rank !== undefined && !(Number.isInteger(o.rank) && o.rank > 0)) throw new Error(`${method}: option 'rank' must be a positive integer, got ${JSON.stringify(o.rank)}`);
  if (o.paramRatio !== undefined && !(typeof o.paramRatio === 'number' && o.paramRatio > 0 && o.paramRatio < 1)) throw new Error(`${method}: option 'paramRatio' must be in (0, 1), got ${JSON.stringify(o.paramRatio)}`);
  if (o.fisherBatches !== undefined && !(Number.isInteger(o.fisherBatches) && o.fisherBatches > 0)) throw new Error(`${method}: option 'fisherBatches' must be a positive integer, got ${JSON.stringify(o.fisherBatches)}`);
  if (o.fineTune !== undefined && typeof o.fineTune !== 'boolean') throw new Error(`${method}: option 'fineTune' must be true or false, got ${JSON.stringify(o.fineTune)}`);
  return { ...o, parts: [...parts] };
}

/**
 * Per-output Fisher information of linear weights: the squared gradients of the task loss
 * (cross-entropy on the labels) w.r.t. each weight, summed over `batches` batches, then summed over
 * the inputs: one value per output unit (a row of Hugging Face's `[out, in]` weight, a column of the
 * stored `[in, out]` one). FWSVD's row importance (Hsu et al. 2022, eq. 3-4).
 */
export function fisherRowImportance(model: BertModel, names: string[], batches: Iterable<import('@topiary/core').Batch>): Map<string, Float32Array> {
  const vars = names.map((n) => model.param(`${n}.weight`));
  const sums = names.map((n) => tf.zeros([model.param(`${n}.weight`).shape[1]!]));
  for (const batch of batches) {
    tf.tidy(() => {
      const labels = tf.tensor1d(batch.labels!, 'int32');
      const { grads } = tf.variableGrads(() => crossEntropy(model.forward(batch).logits!, labels), vars);
      names.forEach((n, i) => {
        const g = grads[model.param(`${n}.weight`).name]!;
        const next = tf.add(sums[i]!, tf.sum(tf.square(g), 0));
        sums[i]!.dispose();
        sums[i] = tf.keep(next);
      });
    });
  }
  const out = new Map<string, Float32Array>();
  names.forEach((n, i) => {
    out.set(n, sums[i]!.dataSync() as Float32Array);
    sums[i]!.dispose();
  });
  return out;
}

/**
 * A copy of `model` whose linear modules `factors` are low-rank (`config.lowRank`), their weight
 * replaced by `weight_v` `[in, r]` and `weight_u` `[r, out]`.
 */
export function withLowRank(model: BertModel, factors: Map<string, { v: Float32Array; u: Float32Array; rank: number }>): BertModel {
  const config = structuredClone(model.config);
  config.lowRank = { ...(config.lowRank ?? {}) };
  const params = new Map<string, Tensor>();
  for (const [n, p] of model.params) params.set(n, tf.clone(p));
  for (const [name, f] of factors) {
    const [inDim, outDim] = model.param(`${name}.weight`).shape as [number, number];
    params.get(`${name}.weight`)!.dispose();
    params.delete(`${name}.weight`);
    params.set(`${name}.weight_v`, tf.tensor2d(f.v, [inDim, f.rank]));
    params.set(`${name}.weight_u`, tf.tensor2d(f.u, [f.rank, outDim]));
    config.lowRank[name] = f.rank;
  }
  try {
    const m = new BertModel(config, params);
    m.family = model.family;
    return m;
  } finally {
    for (const t of params.values()) t.dispose();
  }
}


/**
 * `svd` / `fisher-svd`: truncated (Fisher-weighted) SVD of the chosen dense linear layers to one rank
 * or a global parameter budget, then optionally a fine-tune with KD. Returns the low-rank model with
 * all-ones masks (the engine compacts and exports it; compaction keeps the ranks).
 */
export class SvdPruner implements Pruner {
  constructor(
    readonly id: 'svd' | 'fisher-svd',
    private readonly defaults: SvdOptions = {},
  ) {}

  async run(ctx: PruneContext): Promise<PruneResult> {
    const { targetSparsity: _ignored, ...rest } = { ...this.defaults, ...ctx.options } as Record<string, unknown>;
    const o = parseOptions(this.id, rest);
    const { model, control } = ctx;
    const c = model.config;
    const names: string[] = [];
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const n = layerParamNames(l);
      for (const part of o.parts) if (c.lowRank?.[n[part]] === undefined && model.params.has(`${n[part]}.weight`) && model.param(`${n[part]}.weight`).size > 0) names.push(n[part]);
    }
    if (names.length === 0) throw new Error(`${this.id}: option 'targets' selects no dense linear layer of this model`);
    const fisher = this.id === 'fisher-svd' ? fisherRowImportance(model, names, take(ctx.train.batches(ctx.training.batchSize, { shuffleSeed: ctx.seed }), o.fisherBatches ?? 8)) : undefined;
    const weights = new Map(names.map((n) => [n, model.param(`${n}.weight`).dataSync() as Float32Array]));
    const dims = (n: string) => model.param(`${n}.weight`).shape as [number, number];
    let ranks: Record<string, number>;
    if (o.rank !== undefined) ranks = Object.fromEntries(names.map((n) => [n, Math.min(o.rank!, maxUsefulRank(...dims(n)))]));
    else {
      // Budget allocation on the (weighted) spectra the factors will be cut from.
      const candidates: RankCandidate[] = names.map((n) => {
        const [i, out] = dims(n);
        const w = weights.get(n)!;
        const f = fisher?.get(n);
        const scaled = f ? w.map((x, k) => x * Math.sqrt(Math.max(f[k % out]!, 0))) : w;
        return { name: n, s: svd(scaled, i, out).s, inDim: i, outDim: out };
      });
      const dense = names.reduce((a, n) => a + dims(n)[0] * dims(n)[1], 0);
      ranks = allocateRanks(candidates, Math.floor(o.paramRatio! * dense));
    }
    const factors = new Map<string, { v: Float32Array; u: Float32Array; rank: number }>();
    for (const n of names) {
      const [i, out] = dims(n);
      const f = lowRankFactors(weights.get(n)!, i, out, ranks[n]!, fisher?.get(n));
      factors.set(n, { v: f.v, u: f.u, rank: ranks[n]! });
    }
    const small = withLowRank(model, factors);
    control.emit({ type: 'log', message: `${this.id}: ${names.length} layers factorized, parameters ${paramCount(model)} -> ${paramCount(small)}` });
    if (o.fineTune) await fineTune(ctx, small, o.losses);
    const seqLen = 128;
    return {
      model: small,
      masks: bindMasks(MaskSet.ones(small), small),
      report: {
        lowRank: small.config.lowRank,
        denseParams: paramCount(model),
        factorizedParams: paramCount(small),
        flopsPerSequence128: { before: encoderFlops(c, seqLen), after: encoderFlops(small.config, seqLen) },
      },
    };
  }
}

/** The short fine-tune after a factorization: the run's training budget, KD from the teacher when there is one (else CE), or the given `losses`. */
async function fineTune(ctx: PruneContext, model: BertModel, losses: unknown): Promise<void> {
  const parts = resolveParts({ ...ctx, options: { ...(losses ? { losses } : {}) } }, { losses: ctx.teacher ? [{ id: 'kd' }] : [{ id: 'ce' }] });
  await trainLoop({ model, train: ctx.train, dev: ctx.dev, ...(ctx.teacher ? { teacher: ctx.teacher } : {}), losses: parts.losses, training: ctx.training, seed: ctx.seed, control: ctx.control, evalEvery: budgetSteps(ctx.training, ctx.train.size) });
}

export interface EmbeddingSvdOptions {
  /** Rank E of the factorized word embeddings: `[vocab, E]` times `[E, hidden]`. */
  rank: number;
  /** Fine-tune after factorizing (the run's training budget, KD on the teacher when there is one). Default false. */
  fineTune?: boolean;
  losses?: unknown;
}

const EMBEDDING_KNOWN = new Set(['rank', 'fineTune', 'losses', 'targetSparsity']);

/**
 * A copy of `model` whose word embedding table is factorized (`config.embeddingRank`): `weight_u`
 * `[vocab, r]` and `weight_v` `[r, embeddingSize]` instead of `weight`.
 */
export function withFactorizedEmbeddings(model: BertModel, u: Float32Array, v: Float32Array, rank: number): BertModel {
  const c = model.config;
  const config = { ...structuredClone(c), embeddingRank: rank };
  const params = new Map<string, Tensor>();
  for (const [n, p] of model.params) if (n !== `${WORD_EMBEDDINGS}.weight`) params.set(n, tf.clone(p));
  params.set(`${WORD_EMBEDDINGS}.weight_u`, tf.tensor2d(u, [c.vocabSize, rank]));
  params.set(`${WORD_EMBEDDINGS}.weight_v`, tf.tensor2d(v, [rank, c.embeddingSize]));
  try {
    const m = new BertModel(config, params);
    m.family = model.family;
    return m;
  } finally {
    for (const t of params.values()) t.dispose();
  }
}

/**
 * `embedding-svd`: ALBERT's factorized embeddings applied after training. The `vocab x E` word
 * embedding table becomes `U` `[vocab, rank]` times `V` `[rank, E]` from its truncated SVD (position
 * and token-type tables unchanged), then optionally a short fine-tune.
 */
export class EmbeddingSvdPruner implements Pruner {
  readonly id = 'embedding-svd';
  constructor(private readonly defaults: Partial<EmbeddingSvdOptions> = {}) {}

  async run(ctx: PruneContext): Promise<PruneResult> {
    const o = { ...this.defaults, ...ctx.options } as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!EMBEDDING_KNOWN.has(k)) throw new Error(`embedding-svd: unknown option '${k}' (expected one of ${[...EMBEDDING_KNOWN].join(', ')})`);
    const { model, control } = ctx;
    const c = model.config;
    const rank = o['rank'];
    if (!(Number.isInteger(rank) && (rank as number) > 0)) throw new Error(`embedding-svd: option 'rank' must be a positive integer, got ${JSON.stringify(rank)}`);
    if (o['fineTune'] !== undefined && typeof o['fineTune'] !== 'boolean') throw new Error(`embedding-svd: option 'fineTune' must be true or false, got ${JSON.stringify(o['fineTune'])}`);
    if (c.embeddingRank !== undefined) throw new Error(`embedding-svd: the word embeddings are already factorized (topiary_embedding_rank ${c.embeddingRank})`);
    const E = c.embeddingSize;
    const r = rank as number;
    if (r > Math.min(c.vocabSize, E)) throw new Error(`embedding-svd: option 'rank' is ${r}, expected at most ${Math.min(c.vocabSize, E)} (the embedding size)`);
    const table = model.param(`${WORD_EMBEDDINGS}.weight`).dataSync() as Float32Array;
    const f = tallFactors(table, c.vocabSize, E, r);
    const small = withFactorizedEmbeddings(model, f.u, f.v, r);
    const total = f.s.reduce((a, x) => a + x * x, 0) || 1;
    const kept = f.s.slice(0, r).reduce((a, x) => a + x * x, 0);
    const before = wordEmbeddingParams(c);
    const after = wordEmbeddingParams(small.config);
    control.emit({ type: 'log', message: `embedding-svd: word embeddings rank ${r}, ${before} -> ${after} parameters${after >= before ? ' (no saving at this rank)' : ''}, ${(100 * kept / total).toFixed(2)}% of the spectral energy kept` });
    if (o['fineTune']) await fineTune(ctx, small, o['losses']);
    return {
      model: small,
      masks: bindMasks(MaskSet.ones(small), small),
      report: {
        embeddingRank: r,
        wordEmbeddingParams: { before, after },
        retainedEnergy: kept / total,
        denseParams: paramCount(model),
        factorizedParams: paramCount(small),
      },
    };
  }
}

function* take<T>(it: Iterable<T>, n: number): Generator<T> {
  let i = 0;
  for (const x of it) {
    if (i++ >= n) return;
    yield x;
  }
}

/** One stage of a `chain`: a registered pruner and its options. */
export interface ChainStage {
  method: string;
  options?: Record<string, unknown>;
}

/**
 * `chain`: runs `stages` in order (e.g. `structured` pruning, then `svd` of what remains, then a
 * fine-tune), each on the previous stage's compacted model, and reports every stage's parameters,
 * FLOPs (one sequence of 128 tokens) and dev accuracy.
 */
export class ChainPruner implements Pruner {
  readonly id = 'chain';
  async run(ctx: PruneContext): Promise<PruneResult> {
    const stages = ctx.options['stages'] as ChainStage[] | undefined;
    for (const k of Object.keys(ctx.options)) if (k !== 'stages' && k !== 'targetSparsity') throw new Error(`chain: unknown option '${k}' (expected 'stages'; give each stage its own options)`);
    if (!Array.isArray(stages) || stages.length === 0 || !stages.every((s) => s && typeof s.method === 'string')) {
      throw new Error(`chain: option 'stages' must be a non-empty list of {method, options}, got ${JSON.stringify(stages)}`);
    }
    let model = ctx.model;
    // Encoder sparsity of every stage against the chain's input model (the engine's own figure is
    // against the final, compacted model, where nothing is masked).
    const encoderParams = sparsityOf(ctx.model, MaskSet.ones(ctx.model)).encoderParams;
    const measure = (m: BertModel) => {
      const remaining = sparsityOf(m, MaskSet.ones(m)).remainingEncoderParams;
      return { params: paramCount(m), encoderParams: remaining, encoderSparsity: encoderParams === 0 ? 0 : 1 - remaining / encoderParams, flopsPerSequence128: encoderFlops(m.config, 128), accuracy: evaluate(m, ctx.dev, { batchSize: 128 }).accuracy };
    };
    const input = { stage: -1, method: 'input', ...measure(model) };
    const report: Record<string, unknown>[] = [input];
    for (const [i, stage] of stages.entries()) {
      const pruner = ctx.resolve.pruner(stage.method, {});
      const masks = bindMasks(MaskSet.ones(model), model);
      const result = await pruner.run({ ...ctx, model, masks, options: { ...(stage.options ?? {}) } });
      const next = compact(result.model, result.masks);
      if (result.model !== model && result.model !== ctx.model) result.model.dispose();
      if (model !== ctx.model) model.dispose();
      model = next;
      const entry = { stage: i, method: stage.method, ...measure(model) };
      ctx.control.emit({ type: 'log', message: `chain stage ${i} (${stage.method}): ${entry.params} parameters, encoder sparsity ${(100 * entry.encoderSparsity).toFixed(2)}%, dev accuracy ${(100 * entry.accuracy).toFixed(2)}%` });
      report.push(entry);
    }
    const last = report[report.length - 1]!;
    return { model, masks: bindMasks(MaskSet.ones(model), model), report: { stages: report, chainEncoderSparsity: last['encoderSparsity'], chainEncoderParams: { before: encoderParams, after: last['encoderParams'] } } };
  }
}
