/**
 * CoFi's hard-concrete L0 masks (Xia, Zhong & Chen, ACL 2022; Louizos et al. 2018), following
 * princeton-nlp/CoFiPruning `models/l0_module.py`: five mask types with one log-alpha per masked unit,
 * the expected remaining size from `1 - cdf(0)`, a Lagrangian sparsity constraint with learnable
 * multipliers, sampled (training) and deterministic (eval) masks, and the parameter count of a mask set.
 *
 * Log-alphas of `head` and `intermediate` are stored flat, layer after layer (`[sum_l A_l]`,
 * `[sum_l I_l]`), so a model whose layers have different widths needs no padding; for a uniform model
 * that is the reference's `[L, A]` / `[L, I]` in row-major order.
 */
import { tf, Rng, type StructuredMasks, type Tensor, type Scalar } from '@topiary/core';

export const MASK_TYPES = ['head', 'intermediate', 'hidden', 'mlp', 'head_layer'] as const;
export type MaskType = (typeof MASK_TYPES)[number];

/** Stretch limits of the hard-concrete distribution and the clamp of its CDF (reference constants). */
export const LIMIT_A = -0.1;
export const LIMIT_B = 1.1;
export const EPSILON = 1e-6;
/** Reference `constrain_parameters`: log-alphas are clamped to [ln 1e-2, ln 1e2] after every step. */
export const LOG_ALPHA_MIN = Math.log(1e-2);
export const LOG_ALPHA_MAX = Math.log(1e2);

/** The model dimensions the module needs; a core `BertConfig` satisfies it. */
export interface L0ModelConfig {
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  intermediateSize: number;
  /** Defaults to hiddenSize / numAttentionHeads. */
  attentionHeadSize?: number;
  /** Heads per layer (an already-compacted model); defaults to numAttentionHeads everywhere. */
  layerHeads?: number[];
  /** FFN width per layer; defaults to intermediateSize everywhere. */
  layerIntermediate?: number[];
}

export interface L0Options {
  /** Mask types to learn (reference `pruning_type`); default all five. */
  types?: readonly MaskType[];
  /** Initial drop rate of `intermediate` (reference 0.5; 0 means 0.5 as in the reference). */
  droprateInit?: number;
  /** Initial log-alpha mean of `head`, `hidden`, `mlp`, `head_layer` (reference 10: start fully open). */
  openInitMean?: number;
  temperature?: number;
  magicalNumber?: number;
  targetSparsity?: number;
  startSparsity?: number;
  /** Steps over which the target rises linearly from startSparsity (0 = no warm-up). */
  lagrangianWarmup?: number;
  /** Seed of the log-alpha initialization. */
  seed?: number;
}

/** One value per unit: per-layer lists for heads/neurons, vectors for hidden and the layer masks. */
export interface ZValues {
  head?: number[][];
  intermediate?: number[][];
  hidden?: number[];
  mlp?: number[];
  head_layer?: number[];
}

/** Masks as tensors (the caller owns and disposes them): per-layer `headZ` [A_l], `intermediateZ` [I_l]. */
export interface CoFiZ {
  headZ?: Tensor[];
  intermediateZ?: Tensor[];
  hiddenZ?: Tensor;
  mlpZ?: Tensor;
  headLayerZ?: Tensor;
}

/** What the reference's `calculate_model_size` reports for a mask set. */
export interface ModelSizeReport {
  head_layers: number[];
  mlp_layers: number[];
  hidden_dims: number;
  intermediate_dims: number[];
  head_nums: number[];
  pruned_params: number;
  remaining_params: number;
  pruned_model_sparsity: number;
}

/** Uniform noise per type, flat in the storage order (nested per-layer arrays are flattened). */
export type NoiseInput = Partial<Record<MaskType, Tensor | number[] | number[][]>>;

let serial = 0;

/** logit of the stretched point 0, the constant inside cdf(0): log(xn) - log(1 - xn). */
function stretchedLogit(x: number): number {
  const xn = (x - LIMIT_A) / (LIMIT_B - LIMIT_A);
  return Math.log(xn) - Math.log(1 - xn);
}

/** P(z <= x) under the stretched concrete with log-alpha `logAlpha`, clamped to [eps, 1 - eps]. */
export function cdfQz(x: number, logAlpha: Tensor, temperature = 2 / 3): Tensor {
  return tf.tidy(() => tf.clipByValue(tf.sigmoid(tf.sub(stretchedLogit(x) * temperature, logAlpha)), EPSILON, 1 - EPSILON));
}

/** The same CDF in float64 JS, for the discrete decisions of the deterministic masks. */
export function cdfQzValue(x: number, logAlpha: number, temperature = 2 / 3): number {
  const s = 1 / (1 + Math.exp(-(stretchedLogit(x) * temperature - logAlpha)));
  return Math.min(1 - EPSILON, Math.max(EPSILON, s));
}

/** Python's round(): halves go to the even neighbour (the reference rounds expected zeros with it). */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

export class L0Module {
  readonly types: readonly MaskType[];
  readonly numHiddenLayers: number;
  readonly hiddenSize: number;
  readonly attentionHeadSize: number;
  readonly layerHeads: number[];
  readonly layerIntermediate: number[];
  readonly temperature: number;
  readonly magicalNumber: number;
  readonly droprateInit: number;
  readonly openInitMean: number;
  targetSparsity: number;
  startSparsity: number;
  lagrangianWarmup: number;
  /**
   * Added to the warmed-up target in the Lagrangian (0 = the reference). The pruner sets it to the gap
   * between expected and deterministic sparsity, so that the deterministic (exported) model lands on
   * the target rather than the expectation.
   */
  targetCorrection = 0;

  /** Parameters per unit of each type, as the reference counts them. */
  readonly parametersPerDim: Record<MaskType, number>;
  /** Attention + FFN parameters the expected sparsity is relative to (reference `prunable_model_size`). */
  readonly prunableModelSize: number;

  /** Log-alpha per type (absent types have none). */
  readonly logAlpha: Partial<Record<MaskType, tf.Variable>> = {};
  /** Lagrange multipliers, trained by gradient ascent (see `applyL0Gradients`). */
  readonly lambda1: tf.Variable;
  readonly lambda2: tf.Variable;

  constructor(config: L0ModelConfig, options: L0Options = {}) {
    const L = config.numHiddenLayers;
    const H = config.hiddenSize;
    const A = config.numAttentionHeads;
    const I = config.intermediateSize;
    const d = config.attentionHeadSize ?? H / A;
    if (!Number.isInteger(d) || d <= 0) throw new Error(`config.attentionHeadSize: expected a positive integer, got ${d}`);
    this.numHiddenLayers = L;
    this.hiddenSize = H;
    this.attentionHeadSize = d;
    this.layerHeads = config.layerHeads ? [...config.layerHeads] : new Array<number>(L).fill(A);
    this.layerIntermediate = config.layerIntermediate ? [...config.layerIntermediate] : new Array<number>(L).fill(I);
    if (this.layerHeads.length !== L) throw new Error(`config.layerHeads: expected ${L} entries, got ${this.layerHeads.length}`);
    if (this.layerIntermediate.length !== L) {
      throw new Error(`config.layerIntermediate: expected ${L} entries, got ${this.layerIntermediate.length}`);
    }
    const types = options.types ?? MASK_TYPES;
    for (const t of types) if (!MASK_TYPES.includes(t)) throw new Error(`options.types: unknown mask type '${t}', expected one of ${MASK_TYPES.join(', ')}`);
    this.types = MASK_TYPES.filter((t) => types.includes(t));
    this.temperature = options.temperature ?? 2 / 3;
    this.magicalNumber = options.magicalNumber ?? 0.8;
    this.droprateInit = options.droprateInit && options.droprateInit !== 0 ? options.droprateInit : 0.5;
    this.openInitMean = options.openInitMean ?? 10;
    this.targetSparsity = options.targetSparsity ?? 0;
    this.startSparsity = options.startSparsity ?? 0;
    this.lagrangianWarmup = options.lagrangianWarmup ?? 0;

    // Reference counts: a head owns 1/A of Q, K, V, O weights and biases, (4H^2 + 4H) / A = 4Hd + 4d;
    // an FFN layer is 2HI + 5H (its own bias count), and a neuron its integer share of that.
    const perHead = 4 * H * d + 4 * d;
    const perMlpLayer = 2 * H * I + 5 * H;
    this.parametersPerDim = {
      head: perHead,
      intermediate: Math.floor(perMlpLayer / I),
      hidden: 12 * H,
      mlp: perMlpLayer,
      head_layer: perHead * A,
    };
    let prunable = 0;
    for (let l = 0; l < L; l++) prunable += perHead * this.layerHeads[l]! + 2 * H * this.layerIntermediate[l]! + 5 * H;
    this.prunableModelSize = prunable;

    const id = serial++;
    for (const t of this.types) {
      // In a tidy: tf.variable shares the initial tensor's data, which would otherwise stay counted.
      this.logAlpha[t] = tf.tidy(() => tf.variable(tf.zeros([this.sizeOf(t)]), true, `cofi_l0_${t}_${id}`));
    }
    this.lambda1 = tf.tidy(() => tf.variable(tf.scalar(0), true, `cofi_lambda_1_${id}`));
    this.lambda2 = tf.tidy(() => tf.variable(tf.scalar(0), true, `cofi_lambda_2_${id}`));
    this.resetLogAlphas(options.seed ?? 0);
  }

  private get sumHeads(): number {
    return this.layerHeads.reduce((a, b) => a + b, 0);
  }
  private get sumIntermediate(): number {
    return this.layerIntermediate.reduce((a, b) => a + b, 0);
  }

  /** Number of log-alphas of a type. */
  sizeOf(t: MaskType): number {
    switch (t) {
      case 'head':
        return this.sumHeads;
      case 'intermediate':
        return this.sumIntermediate;
      case 'hidden':
        return this.hiddenSize;
      case 'mlp':
      case 'head_layer':
        return this.numHiddenLayers;
    }
  }

  /**
   * Reference `reset_loga`: N(mean, 0.01) with mean ln(1-p) - ln(p) for `intermediate` and
   * `openInitMean` (10, i.e. open) for the other types.
   */
  resetLogAlphas(seed = 0): void {
    const dropMean = Math.log(1 - this.droprateInit) - Math.log(this.droprateInit);
    this.types.forEach((t, i) => {
      const mean = t === 'intermediate' ? dropMean : this.openInitMean;
      const v = this.logAlpha[t]!;
      tf.tidy(() => v.assign(tf.randomNormal([this.sizeOf(t)], mean, 1e-2, 'float32', seed * 7919 + i + 1)));
    });
  }

  /** Sets log-alphas from values (per-layer nested arrays or flat), e.g. from a checkpoint. */
  setLogAlphas(values: Partial<Record<MaskType, number[] | number[][]>>): void {
    for (const [t, v] of Object.entries(values) as [MaskType, number[] | number[][]][]) {
      const variable = this.logAlpha[t];
      if (!variable) throw new Error(`setLogAlphas: mask type '${t}' is not learned by this module (types: ${this.types.join(', ')})`);
      const flat = this.flatten(t, v, 'setLogAlphas');
      tf.tidy(() => variable.assign(tf.tensor1d(flat, 'float32')));
    }
  }

  /** Log-alphas as per-layer arrays (head, intermediate) or vectors. */
  logAlphaValues(): ZValues {
    const out: ZValues = {};
    for (const t of this.types) {
      const flat = Array.from(this.logAlpha[t]!.dataSync() as Float32Array);
      if (t === 'head') out.head = this.splitPerLayer(flat, this.layerHeads);
      else if (t === 'intermediate') out.intermediate = this.splitPerLayer(flat, this.layerIntermediate);
      else out[t] = flat;
    }
    return out;
  }

  /** Reference `constrain_parameters`: clamps every log-alpha to [ln 0.01, ln 100]. */
  constrainParameters(): void {
    for (const t of this.types) {
      const v = this.logAlpha[t]!;
      tf.tidy(() => v.assign(tf.clipByValue(v, LOG_ALPHA_MIN, LOG_ALPHA_MAX)));
    }
  }

  /** The learnable mask parameters (minimized with the model). */
  logAlphaVariables(): tf.Variable[] {
    return this.types.map((t) => this.logAlpha[t]!);
  }
  /** The Lagrange multipliers (maximized). */
  lagrangianVariables(): tf.Variable[] {
    return [this.lambda1, this.lambda2];
  }

  /** cdf_qz(0) of a type's log-alphas: the probability each unit's mask is exactly 0. */
  cdfQzAtZero(t: MaskType): Tensor {
    const v = this.logAlpha[t];
    if (!v) throw new Error(`cdfQzAtZero: mask type '${t}' is not learned by this module`);
    return cdfQz(0, v, this.temperature);
  }

  /**
   * Repeats each layer's value over that layer's units ([L] -> [sum_l n_l]). Slices and broadcasts
   * rather than a gather, whose gradient needs a kernel the wasm backend lacks (UnsortedSegmentSum).
   */
  private perUnit(layerValues: Tensor, sizes: number[]): Tensor {
    const parts = sizes.flatMap((n, l) => (n > 0 ? [tf.broadcastTo(tf.slice(layerValues, [l], [1]), [n])] : []));
    return parts.length > 0 ? tf.concat(parts) : tf.zeros([0]);
  }

  /** P(unit kept) for heads and neurons times P(layer kept); 1 for types not learned. Inside a tidy. */
  private unitScores(): { head: Tensor; intermediate: Tensor } {
    const keep = (t: MaskType) => tf.sub(1, this.cdfQzAtZero(t));
    let head = this.logAlpha.head ? keep('head') : tf.ones([this.sumHeads]);
    if (this.logAlpha.head_layer) head = tf.mul(head, this.perUnit(keep('head_layer'), this.layerHeads));
    let inter = this.logAlpha.intermediate ? keep('intermediate') : tf.ones([this.sumIntermediate]);
    if (this.logAlpha.mlp) inter = tf.mul(inter, this.perUnit(keep('mlp'), this.layerIntermediate));
    return { head, intermediate: inter };
  }

  /**
   * Expected number of remaining prunable parameters. With the hidden mask (reference
   * `get_num_parameters_and_constraint_for_hidden`): sum over (hidden dim, head) pairs of
   * P(both kept) * per_head / H, plus 2 per (hidden dim, neuron) pair; the pair sums factor into
   * products of sums. Without it (`get_num_parameters_and_constraint`): sum of head scores * per_head
   * plus neuron scores * per_neuron.
   */
  expectedModelSize(): Scalar {
    return tf.tidy(() => {
      const { head, intermediate } = this.unitScores();
      if (this.logAlpha.hidden) {
        const hidden = tf.sum(tf.sub(1, this.cdfQzAtZero('hidden')));
        const heads = tf.mul(tf.sum(head), this.parametersPerDim.head / this.hiddenSize);
        const neurons = tf.mul(tf.sum(intermediate), 2);
        return tf.mul(hidden, tf.add(heads, neurons)) as Scalar;
      }
      return tf.add(
        tf.mul(tf.sum(head), this.parametersPerDim.head),
        tf.mul(tf.sum(intermediate), this.parametersPerDim.intermediate),
      ) as Scalar;
    });
  }

  /** 1 - expected size / prunable size. */
  expectedSparsity(): Scalar {
    return tf.tidy(() => tf.sub(1, tf.div(this.expectedModelSize(), this.prunableModelSize)) as Scalar);
  }

  /** Reference `get_target_sparsity`: start + (target - start) * min(1, step / warmup); target when warmup is 0. */
  targetSparsityAt(prunedSteps: number): number {
    if (!(this.lagrangianWarmup > 0)) return this.targetSparsity;
    return (this.targetSparsity - this.startSparsity) * Math.min(1, prunedSteps / this.lagrangianWarmup) + this.startSparsity;
  }

  /**
   * Reference `lagrangian_regularization`: lambda_1 (s - t) + lambda_2 (s - t)^2 with s the expected
   * sparsity and t the warmed-up target at `prunedSteps` (steps since pruning started).
   */
  lagrangianRegularization(prunedSteps: number): { lagrangianLoss: Scalar; expectedSparsity: Scalar; targetSparsity: number } {
    const targetSparsity = this.targetSparsityAt(prunedSteps) + this.targetCorrection;
    const expectedSparsity = this.expectedSparsity();
    const lagrangianLoss = tf.tidy(() => {
      const gap = tf.sub(expectedSparsity, targetSparsity);
      return tf.add(tf.mul(this.lambda1, gap), tf.mul(this.lambda2, tf.square(gap))) as Scalar;
    });
    return { lagrangianLoss, expectedSparsity, targetSparsity };
  }

  /**
   * Training masks from given uniform noise `u` (flat per type, in (0, 1)):
   * z = clamp(sigmoid((ln u - ln(1-u) + log_alpha) / T) * (b - a) + a, 0, 1), differentiable in log_alpha.
   */
  sampleZWithNoise(noise: NoiseInput): CoFiZ {
    const flat: Partial<Record<MaskType, Tensor>> = {};
    return this.toCoFiZ(
      tf.tidy(() => {
        for (const t of this.types) {
          const given = noise[t];
          if (given === undefined) throw new Error(`sampleZWithNoise: noise.${t} is missing (expected ${this.sizeOf(t)} values)`);
          const u = given instanceof tf.Tensor ? given.reshape([-1]) : tf.tensor1d(this.flatten(t, given, 'sampleZWithNoise'), 'float32');
          if (u.size !== this.sizeOf(t)) throw new Error(`sampleZWithNoise: noise.${t} has ${u.size} values, expected ${this.sizeOf(t)}`);
          const logits = tf.add(tf.sub(tf.log(u), tf.log(tf.sub(1, u))), this.logAlpha[t]!);
          const y = tf.sigmoid(tf.div(logits, this.temperature));
          flat[t] = tf.clipByValue(tf.add(tf.mul(y, LIMIT_B - LIMIT_A), LIMIT_A), 0, 1);
        }
        return flat as Record<string, Tensor>;
      }) as Partial<Record<MaskType, Tensor>>,
    );
  }

  /** Training masks with noise U(eps, 1 - eps) drawn from `rng` (deterministic for a seed). */
  sampleZ(rng: Rng): CoFiZ {
    return this.sampleZWithNoise(this.sampleNoise(rng));
  }

  /** The uniform noise `sampleZ` draws (a step's micro-batches share one draw). */
  sampleNoise(rng: Rng): NoiseInput {
    const noise: NoiseInput = {};
    for (const t of this.types) {
      const u = new Array<number>(this.sizeOf(t));
      for (let i = 0; i < u.length; i++) u[i] = EPSILON + (1 - 2 * EPSILON) * rng.next();
      noise[t] = u;
    }
    return noise;
  }

  /**
   * Eval masks as the reference computes them, per layer for heads and neurons, per layer (one unit)
   * for `mlp` / `head_layer`, over the whole vector for `hidden`: soft values
   * sigmoid(log_alpha / T * magical_number) with the round(size - sum(1 - cdf(0))) smallest set to 0
   * (Python rounding, halves to even). Computed in float64 JS: these are discrete choices on few values.
   */
  deterministicZValues(): ZValues {
    const la = this.logAlphaValues();
    const det = (loga: number[]): number[] => {
      let kept = 0;
      for (const a of loga) kept += 1 - cdfQzValue(0, a, this.temperature);
      const numZeros = roundHalfEven(loga.length - kept);
      const soft = loga.map((a) => 1 / (1 + Math.exp(-((a / this.temperature) * this.magicalNumber))));
      if (numZeros > 0) {
        // Smallest first; ties by index (torch.topk leaves their order unspecified).
        const order = soft.map((_, i) => i).sort((i, j) => soft[i]! - soft[j]! || i - j);
        for (let k = 0; k < Math.min(numZeros, soft.length); k++) soft[order[k]!] = 0;
      }
      return soft;
    };
    const out: ZValues = {};
    if (la.head) out.head = la.head.map(det);
    if (la.intermediate) out.intermediate = la.intermediate.map(det);
    if (la.hidden) out.hidden = det(la.hidden);
    if (la.mlp) out.mlp = la.mlp.map((a) => det([a])[0]!);
    if (la.head_layer) out.head_layer = la.head_layer.map((a) => det([a])[0]!);
    return out;
  }

  /** The deterministic masks as float32 tensors (caller disposes). */
  deterministicZ(): CoFiZ {
    const v = this.deterministicZValues();
    return {
      ...(v.head && { headZ: v.head.map((h) => tf.tensor1d(h, 'float32')) }),
      ...(v.intermediate && { intermediateZ: v.intermediate.map((h) => tf.tensor1d(h, 'float32')) }),
      ...(v.hidden && { hiddenZ: tf.tensor1d(v.hidden, 'float32') }),
      ...(v.mlp && { mlpZ: tf.tensor1d(v.mlp, 'float32') }),
      ...(v.head_layer && { headLayerZ: tf.tensor1d(v.head_layer, 'float32') }),
    };
  }

  /**
   * Reference `calculate_model_size` of a mask set (a unit counts as kept when its z > 0; types absent
   * count as all kept): remaining = (#heads kept in kept layers) * kept hidden dims * 4d
   * + (#neurons kept in kept FFNs) * kept hidden dims * 2.
   */
  calculateModelSize(z: ZValues): ModelSizeReport {
    const L = this.numHiddenLayers;
    const on = (x: number) => (x > 0 ? 1 : 0);
    const headLayers = z.head_layer ? z.head_layer.map(on) : new Array<number>(L).fill(1);
    const mlpLayers = z.mlp ? z.mlp.map(on) : new Array<number>(L).fill(1);
    const hiddenDims = z.hidden ? z.hidden.reduce((s, x) => s + on(x), 0) : this.hiddenSize;
    const count = (rows: number[][] | undefined, sizes: number[]) =>
      sizes.map((n, l) => (rows ? rows[l]!.reduce((s, x) => s + on(x), 0) : n));
    const headNums = count(z.head, this.layerHeads);
    const intermediateDims = count(z.intermediate, this.layerIntermediate);
    let heads = 0;
    let neurons = 0;
    for (let l = 0; l < L; l++) {
      heads += headNums[l]! * headLayers[l]!;
      neurons += intermediateDims[l]! * mlpLayers[l]!;
    }
    const remaining = heads * hiddenDims * this.attentionHeadSize * 4 + neurons * hiddenDims * 2;
    const pruned = this.prunableModelSize - remaining;
    return {
      head_layers: headLayers,
      mlp_layers: mlpLayers,
      hidden_dims: hiddenDims,
      intermediate_dims: intermediateDims,
      head_nums: headNums,
      pruned_params: pruned,
      remaining_params: remaining,
      pruned_model_sparsity: pruned / this.prunableModelSize,
    };
  }

  /** Size report of the current deterministic masks (the golden's `model_size_of_deterministic_z`). */
  modelSizeOfDeterministicMasks(): ModelSizeReport {
    return this.calculateModelSize(this.deterministicZValues());
  }

  dispose(): void {
    for (const t of this.types) this.logAlpha[t]!.dispose();
    this.lambda1.dispose();
    this.lambda2.dispose();
  }

  private splitPerLayer(flat: number[], sizes: number[]): number[][] {
    const out: number[][] = [];
    let o = 0;
    for (const n of sizes) out.push(flat.slice(o, (o += n)));
    return out;
  }

  private flatten(t: MaskType, v: number[] | number[][], where: string): number[] {
    const flat = (v as unknown[]).flat(Infinity) as number[];
    if (flat.length !== this.sizeOf(t)) throw new Error(`${where}: ${t} has ${flat.length} values, expected ${this.sizeOf(t)}`);
    return flat;
  }

  /** Splits flat head / neuron masks per layer. */
  private toCoFiZ(flat: Partial<Record<MaskType, Tensor>>): CoFiZ {
    const z: CoFiZ = {};
    const split = (t: Tensor, sizes: number[]) => {
      const parts = tf.split(t, sizes);
      t.dispose();
      return parts;
    };
    if (flat.head) z.headZ = split(flat.head, this.layerHeads);
    if (flat.intermediate) z.intermediateZ = split(flat.intermediate, this.layerIntermediate);
    if (flat.hidden) z.hiddenZ = flat.hidden;
    if (flat.mlp) z.mlpZ = flat.mlp;
    if (flat.head_layer) z.headLayerZ = flat.head_layer;
    return z;
  }
}

/**
 * Topiary forward masks for CoFi masks. `head_z` scales each head's context (`headMask`);
 * `head_layer_z` scales the attention block's output projection before the residual (CoFi multiplies
 * `BertSelfOutput.dense`'s output), i.e. `mhaMask`; `intermediate_z` scales the activations (`neuronMask`);
 * `mlp_z` the FFN block's output (`ffnMask`); `hidden_z` the embedding and block outputs (`hiddenMask`).
 * The returned masks share the given tensors (no copies).
 */
export function toStructuredMasks(z: CoFiZ): StructuredMasks {
  const m: StructuredMasks = {};
  if (z.headZ) m.headMask = z.headZ;
  if (z.intermediateZ) m.neuronMask = z.intermediateZ;
  if (z.hiddenZ) m.hiddenMask = z.hiddenZ;
  if (z.headLayerZ) m.mhaMask = z.headLayerZ;
  if (z.mlpZ) m.ffnMask = z.mlpZ;
  return m;
}

/** Disposes every tensor of a mask set. */
export function disposeCoFiZ(z: CoFiZ): void {
  for (const t of [...(z.headZ ?? []), ...(z.intermediateZ ?? []), z.hiddenZ, z.mlpZ, z.headLayerZ]) t?.dispose();
}

/**
 * One optimizer step of the L0 module from gradients of the total loss (model loss + Lagrangian) keyed
 * by variable name, e.g. from `tf.variableGrads`. Log-alphas descend with `optimizers.l0`; the
 * multipliers ASCEND with `optimizers.lagrangian` (their gradients are negated, which for Adam equals
 * the reference's AdamW with learning rate `-reg_learning_rate`), so lambda pushes the expected
 * sparsity towards the target. Then log-alphas are clamped (reference order: step, then
 * `constrain_parameters`). Gradients of other variables are ignored (the model's optimizer applies them).
 */
export function applyL0Gradients(
  module: L0Module,
  grads: Record<string, Tensor>,
  optimizers: { l0: tf.Optimizer; lagrangian: tf.Optimizer },
): void {
  const l0: Record<string, Tensor> = {};
  for (const v of module.logAlphaVariables()) if (grads[v.name]) l0[v.name] = grads[v.name]!;
  if (Object.keys(l0).length > 0) optimizers.l0.applyGradients(l0);
  const ascent: Record<string, Tensor> = {};
  for (const v of module.lagrangianVariables()) if (grads[v.name]) ascent[v.name] = tf.neg(grads[v.name]!);
  if (Object.keys(ascent).length > 0) optimizers.lagrangian.applyGradients(ascent);
  for (const g of Object.values(ascent)) g.dispose();
  module.constrainParameters();
}
