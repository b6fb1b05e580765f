import {
  Rng,
  clsOf,
  tensorState,
  tf,
  type Batch,
  type BertModel,
  type Dataset,
  type DistillationLoss,
  type ForwardOptions,
  type ForwardOutput,
  type LossInput,
  type NamedTensor,
  type PruneContext,
  type Scalar,
  type Tensor,
  type Tensor2D,
  type Tensor3D,
} from '@topiary/core';
import { contrastiveLoss, meanPooled, normalizeRows } from './loss.js';

export type Representation = 'cls' | 'pooled' | 'mean';

export interface ContrastiveOptions {
  /** Reference defaults for structured (CAP-f) or unstructured (CAP-m, CAP-soft) pruning. */
  preset?: 'structured' | 'unstructured';
  temperature?: number;
  /** Extra bank examples per step, divided among a bank's representations (the reference's `extra_examples`). */
  extraExamples?: number;
  /** `cls` (the [CLS] hidden state), `pooled` (the pooler's output) or `mean` (mean over the attention mask). */
  representation?: Representation;
  unsupervisedWeight?: number;
  supervisedWeight?: number;
  /** PrC: contrast with the pre-trained model. */
  pretrained?: boolean;
  /** SnC: contrast with the snapshots of earlier pruning levels. */
  snapshots?: boolean;
  /** FiC: contrast with the fine-tuned model. */
  finetuned?: boolean;
  seed?: number;
  /** Picks `k` distinct rows of `n` (tests inject the reference's fixed draw). */
  sampler?: (n: number, k: number) => number[];
}

const PRESETS = {
  structured: { unsupervisedWeight: 0.3, supervisedWeight: 3 },
  unstructured: { unsupervisedWeight: 0.1, supervisedWeight: 10 },
} as const;

/** The normalised sentence representation of a forward pass. */
export function representationOf(out: ForwardOutput, batch: Batch, kind: Representation): Tensor2D {
  return tf.tidy(() => {
    if (kind === 'mean') {
      return meanPooled(out.sequenceOutput, tf.tensor2d(batch.attentionMask, [batch.batchSize, batch.seqLen], 'int32'));
    }
    if (kind === 'pooled') {
      if (!out.pooled) throw new Error("contrastive: representation 'pooled' needs a model with a pooler");
      return normalizeRows(out.pooled);
    }
    return normalizeRows(clsOf(out.sequenceOutput));
  });
}

/**
 * Representations of every training example under `model` (no tape, one tidy per batch), as a
 * `[examples, hidden]` array in bank-row order.
 */
export function computeBank(model: BertModel, data: Dataset, rowOf: Map<number, number>, kind: Representation, forward: () => Omit<ForwardOptions, 'training'> = () => ({})): Float32Array {
  let out: Float32Array | undefined;
  for (const batch of data.batches(128)) {
    const reps = tf.tidy(() => representationOf(model.forward(batch, { ...forward(), training: false }), batch, kind).dataSync() as Float32Array);
    const hidden = reps.length / batch.batchSize;
    out ??= new Float32Array(rowOf.size * hidden);
    batch.exampleIds!.forEach((id, b) => out!.set(reps.subarray(b * hidden, (b + 1) * hidden), rowOf.get(id)! * hidden));
  }
  if (!out) throw new Error('contrastive: the training set is empty');
  return out;
}

/**
 * CAP (Xu et al. 2022) as a loss term: contrastive losses between the student's representation of
 * each training example and banks of representations of all training examples under the pre-trained
 * model (PrC), the snapshots taken after each pruning level or epoch (SnC) and the fine-tuned teacher
 * (FiC), unsupervised and supervised. Banks are built in `onRunStart` and `onLevelEnd`, off the tape.
 */
export class ContrastiveLoss implements DistillationLoss {
  readonly id = 'contrastive';
  readonly needs = { teacher: false, hiddenStates: false };
  readonly temperature: number;
  readonly extraExamples: number;
  readonly representation: Representation;
  readonly unsupervisedWeight: number;
  readonly supervisedWeight: number;
  readonly use: { pretrained: boolean; snapshots: boolean; finetuned: boolean };
  private readonly sampler: (n: number, k: number) => number[];
  private readonly banks: { pretrained?: Tensor3D; finetuned?: Tensor3D; snapshots?: Tensor3D } = {};
  private rowOf = new Map<number, number>();
  private bankLabels = new Int32Array(0);
  private hidden = 0;
  /** The default sampler's generator (its position goes into checkpoints). */
  private readonly rng: Rng;

  constructor(opts: ContrastiveOptions = {}) {
    const preset = opts.preset ?? 'structured';
    if (!(preset in PRESETS)) throw new Error(`contrastive: option 'preset' must be structured or unstructured, got ${JSON.stringify(preset)}`);
    this.temperature = opts.temperature ?? 0.1;
    this.extraExamples = opts.extraExamples ?? 4096;
    this.representation = opts.representation ?? 'cls';
    if (!['cls', 'pooled', 'mean'].includes(this.representation)) throw new Error(`contrastive: option 'representation' must be cls, pooled or mean, got ${JSON.stringify(this.representation)}`);
    this.unsupervisedWeight = opts.unsupervisedWeight ?? PRESETS[preset].unsupervisedWeight;
    this.supervisedWeight = opts.supervisedWeight ?? PRESETS[preset].supervisedWeight;
    this.use = { pretrained: opts.pretrained ?? true, snapshots: opts.snapshots ?? true, finetuned: opts.finetuned ?? true };
    for (const [k, v] of Object.entries({ temperature: this.temperature, extraExamples: this.extraExamples, unsupervisedWeight: this.unsupervisedWeight, supervisedWeight: this.supervisedWeight })) {
      if (!(typeof v === 'number' && v >= 0 && Number.isFinite(v))) throw new Error(`contrastive: option '${k}' must be a non-negative number, got ${JSON.stringify(v)}`);
    }
    const rng = (this.rng = new Rng(opts.seed ?? 0));
    this.sampler =
      opts.sampler ??
      ((n, k) => {
        // A partial Fisher-Yates draw of k distinct rows.
        const pool = Array.from({ length: n }, (_, i) => i);
        for (let i = 0; i < k; i++) {
          const j = i + Math.floor(rng.next() * (n - i));
          [pool[i], pool[j]] = [pool[j]!, pool[i]!];
        }
        return pool.slice(0, k);
      });
  }

  /** Floats held by the banks (examples x representations x hidden, summed over banks). */
  get bankFloats(): number {
    return Object.values(this.banks).reduce((a, b) => a + (b?.size ?? 0), 0);
  }

  private toBank(values: Float32Array): Tensor3D {
    return tf.tensor3d(values, [this.rowOf.size, 1, this.hidden]);
  }

  async onRunStart(ctx: PruneContext): Promise<void> {
    this.dispose();
    this.rowOf = new Map();
    const labels: number[] = [];
    for (const batch of ctx.train.batches(512)) {
      batch.exampleIds!.forEach((id, b) => {
        this.rowOf.set(id, this.rowOf.size);
        labels.push(batch.labels ? batch.labels[b]! : -1);
      });
    }
    this.bankLabels = Int32Array.from(labels);
    this.hidden = ctx.model.config.hiddenSize;
    if (this.use.pretrained) {
      // The pre-trained model before the first pruning step: the given checkpoint, else the student as it starts.
      const source = ctx.pretrained ?? ctx.model;
      this.banks.pretrained = this.toBank(computeBank(source, ctx.train, this.rowOf, this.representation, source === ctx.model ? () => ctx.masks.toTensors() : undefined));
    }
    if (this.use.finetuned) {
      if (!ctx.teacher) throw new Error('contrastive: the fine-tuned bank (finetuned: true) needs a teacher model');
      this.banks.finetuned = this.toBank(computeBank(ctx.teacher, ctx.train, this.rowOf, this.representation));
    }
  }

  async onLevelEnd(ctx: PruneContext): Promise<void> {
    if (!this.use.snapshots) return;
    const snap = this.toBank(computeBank(ctx.model, ctx.train, this.rowOf, this.representation, () => ctx.masks.toTensors()));
    const prev = this.banks.snapshots;
    this.banks.snapshots = prev ? (tf.concat([prev, snap], 1) as Tensor3D) : snap;
    if (prev) {
      prev.dispose();
      snap.dispose();
    }
  }

  /** A split step: the whole batch's representations (in-batch columns, constants), filled by `observe`. */
  private whole: { batch: Batch; reps: Float32Array } | undefined;
  /** The extra examples drawn for a split batch, per bank: its micro-batches share them. */
  private drawn: { batch: Batch; extra: number[][] } | undefined;

  observe({ student, batch, part }: LossInput): void {
    if (!part) return;
    if (this.whole?.batch !== part.whole) this.whole = { batch: part.whole, reps: new Float32Array(part.whole.batchSize * this.hidden) };
    const reps = tf.tidy(() => representationOf(student, batch, this.representation).dataSync() as Float32Array);
    this.whole.reps.set(reps, part.offset * this.hidden);
  }

  private rowsOf(ids: number[] | undefined): number[] {
    if (!ids) throw new Error('contrastive: batches carry no example ids (use a Dataset from loadDataset)');
    return ids.map((id) => {
      const row = this.rowOf.get(id);
      if (row === undefined) throw new Error(`contrastive: example ${id} is not in the representation banks (banks cover the training set)`);
      return row;
    });
  }

  compute({ student, batch, labels, part }: LossInput): Record<string, Scalar> {
    const banks = Object.entries(this.banks).filter(([, b]) => b !== undefined) as [string, Tensor3D][];
    if (banks.length === 0) return {};
    const split = part !== undefined && this.whole?.batch === part.whole;
    const idx = this.rowsOf(split ? part.whole.exampleIds : batch.exampleIds);
    const current = representationOf(student, batch, this.representation);
    const batchLabels = split ? part.whole.labels : labels ? (labels.dataSync() as Int32Array) : undefined;
    const whole = split ? { reps: tf.tensor2d(this.whole!.reps, [part.whole.batchSize, this.hidden]), offset: part.offset } : undefined;
    const draw = () => banks.map(([, bank]) => this.sampler(this.rowOf.size, Math.min(Math.floor(this.extraExamples / bank.shape[1]), this.rowOf.size)));
    const extra = part ? (this.drawn?.batch === part.whole ? this.drawn.extra : (this.drawn = { batch: part.whole, extra: draw() }).extra) : draw();
    const terms: Tensor[] = banks.map(([, bank], b) =>
      contrastiveLoss({
        current,
        bank,
        idx,
        extraIdx: extra[b]!,
        ...(batchLabels ? { labels: batchLabels, bankLabels: this.bankLabels } : {}),
        temperature: this.temperature,
        unsupervisedWeight: this.unsupervisedWeight,
        supervisedWeight: batchLabels ? this.supervisedWeight : 0,
        ...(whole ? { whole } : {}),
      }),
    );
    return { contrastive: tf.addN(terms) as Scalar };
  }

  /** Banks (the snapshots are the student's at earlier levels: they cannot be recomputed) and the sampler's position. */
  state(): { json: { rng: number; banks: string[] }; tensors: Map<string, NamedTensor> } {
    const tensors = new Map<string, NamedTensor>();
    for (const [k, b] of Object.entries(this.banks)) if (b) tensors.set(k, tensorState(b));
    return { json: { rng: this.rng.position, banks: [...tensors.keys()] }, tensors };
  }

  /** Replaces the banks `onRunStart` built with the saved ones. */
  restore(s: { json?: unknown; tensors?: Map<string, NamedTensor> }): void {
    const j = s.json as { rng: number; banks: string[] };
    this.dispose();
    for (const k of j.banks as (keyof typeof this.banks)[]) {
      const t = s.tensors?.get(k);
      if (!t || t.shape.length !== 3 || t.shape[0] !== this.rowOf.size) throw new Error(`contrastive: the checkpoint's '${k}' bank is missing or not [${this.rowOf.size}, reps, hidden]`);
      this.banks[k] = tf.tensor3d(t.data, t.shape as [number, number, number]);
    }
    this.rng.position = j.rng;
  }

  dispose(): void {
    for (const k of Object.keys(this.banks) as (keyof typeof this.banks)[]) {
      this.banks[k]?.dispose();
      delete this.banks[k];
    }
  }
}
