import { tf, type Tensor } from '../tf.js';
import { fusedAdamW, fusedAdamWOffHeap, fusedSumSquares, offHeapAdamWAvailable } from '../backend/fused.js';
import type { NamedTensor } from '../io/safetensors.js';
import { tensorState } from './checkpoint.js';

export interface ParamGroup {
  variables: tf.Variable[];
  learningRate: number;
  weightDecay: number;
  /** Gradient ascent (CoFi's Lagrange multipliers maximize the loss). */
  ascent?: boolean;
  /** Ignore the warm-up/decay schedule (mask and multiplier groups in CoFi keep a constant rate). */
  constantRate?: boolean;
}

/**
 * AdamW (decoupled weight decay, Loshchilov & Hutter) with parameter groups, as Hugging Face's
 * trainer uses it: betas 0.9/0.999, eps 1e-8, bias correction. `scale` multiplies every group's
 * learning rate (the warm-up/decay schedule).
 */
export class AdamW {
  private readonly m = new Map<tf.Variable, tf.Variable>();
  private readonly v = new Map<tf.Variable, tf.Variable>();
  /**
   * The moments in JS memory instead (with the native addon on wasm): two float32 copies of every
   * trained parameter that the update reads once a step need no room on the 4 GB heap (BERT-base: 0.7 GB).
   */
  private readonly mHost = new Map<tf.Variable, Float32Array>();
  private readonly vHost = new Map<tf.Variable, Float32Array>();
  private t = 0;

  constructor(
    public readonly groups: ParamGroup[],
    private readonly beta1 = 0.9,
    private readonly beta2 = 0.999,
    private readonly eps = 1e-8,
    offHeap = offHeapAdamWAvailable(),
  ) {
    for (const g of groups) {
      for (const p of g.variables) {
        if (offHeap && p.dtype === 'float32') {
          this.mHost.set(p, new Float32Array(p.size));
          this.vHost.set(p, new Float32Array(p.size));
          continue;
        }
        // In a tidy: tf.variable shares the initial tensor's data, which would otherwise stay counted.
        this.m.set(p, tf.tidy(() => tf.variable(tf.zerosLike(p), false)));
        this.v.set(p, tf.tidy(() => tf.variable(tf.zerosLike(p), false)));
      }
    }
  }

  get variables(): tf.Variable[] {
    return this.groups.flatMap((g) => g.variables);
  }

  /** Whether the moments live in JS memory (off the backend's heap). */
  get offHeap(): boolean {
    return this.mHost.size > 0;
  }

  apply(grads: Map<tf.Variable, Tensor>, scale = 1): void {
    this.t++;
    const bc1 = 1 - this.beta1 ** this.t;
    const bc2 = 1 - this.beta2 ** this.t;
    tf.tidy(() => {
      for (const g of this.groups) {
        const lr = g.learningRate * (g.constantRate ? 1 : scale);
        for (const p of g.variables) {
          const grad = grads.get(p);
          if (!grad) continue;
          const h = { lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, bc1, bc2, decay: 1 - lr * g.weightDecay, sign: g.ascent ? (-1 as const) : (1 as const) };
          const mh = this.mHost.get(p);
          if (mh) {
            // The same native kernel and formula as on the heap (bit for bit), the moments updated in place.
            const next = fusedAdamWOffHeap(p, grad, mh, this.vHost.get(p)!, h);
            if (!next) throw new Error('AdamW: the off-heap update needs the native kernels on wasm (the backend changed during training?)');
            p.assign(next);
            continue;
          }
          const m = this.m.get(p)!;
          const v = this.v.get(p)!;
          // One native kernel per parameter when registered (same formula, float32).
          const fused = fusedAdamW(p, grad, m, v, h);
          if (fused) {
            p.assign(fused[0]);
            m.assign(fused[1]);
            v.assign(fused[2]);
            continue;
          }
          const signed = g.ascent ? tf.neg(grad) : grad;
          m.assign(tf.add(tf.mul(m, this.beta1), tf.mul(signed, 1 - this.beta1)));
          v.assign(tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(signed), 1 - this.beta2)));
          const update = tf.div(tf.div(m, bc1), tf.add(tf.sqrt(tf.div(v, bc2)), this.eps));
          const decayed = g.weightDecay > 0 ? tf.mul(p, 1 - lr * g.weightDecay) : p;
          p.assign(tf.sub(decayed, tf.mul(update, lr)));
        }
      }
    });
  }

  /** Step count and moments (`m.{i}`, `v.{i}` by position in `variables`), for checkpoints. */
  state(): { json: { t: number }; tensors: Map<string, NamedTensor> } {
    const tensors = new Map<string, NamedTensor>();
    this.variables.forEach((p, i) => {
      const mh = this.mHost.get(p);
      // Host moments are copied, as a heap tensor's are read out: a caller may keep the state past the next step.
      tensors.set(`m.${i}`, mh ? { shape: [...p.shape], data: mh.slice() } : tensorState(this.m.get(p)!));
      tensors.set(`v.${i}`, mh ? { shape: [...p.shape], data: this.vHost.get(p)!.slice() } : tensorState(this.v.get(p)!));
    });
    return { json: { t: this.t }, tensors };
  }

  restore(s: { json?: unknown; tensors?: Map<string, NamedTensor> }): void {
    const t = (s.json as { t?: unknown } | undefined)?.t;
    if (typeof t !== 'number') throw new Error('optimizer state: no step count');
    this.variables.forEach((p, i) => {
      for (const k of ['m', 'v'] as const) {
        const saved = s.tensors?.get(`${k}.${i}`);
        if (!saved || saved.data.length !== p.size) throw new Error(`optimizer state: moment '${k}.${i}' is missing or has ${saved?.data.length} values, expected ${p.size}`);
        const host = (k === 'm' ? this.mHost : this.vHost).get(p);
        if (host) host.set(saved.data);
        else {
          const into = (k === 'm' ? this.m : this.v).get(p)!;
          tf.tidy(() => into.assign(tf.tensor(saved.data, into.shape)));
        }
      }
    });
    this.t = t;
  }

  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
    this.m.clear();
    this.v.clear();
    this.mHost.clear();
    this.vHost.clear();
  }
}

/** Linear warm-up to 1 over `warmupSteps`, then linear decay to 0 at `totalSteps` (Hugging Face's default). */
/**
 * The default peak learning rate for fine-tuning (`topiary finetune` without `--lr`), from the model's
 * hidden size: 1e-3 up to 256, then falling as the inverse square of the width (1.1e-4 at BERT-base's
 * 768, 6.3e-5 at 1,024). Measured on both shared sizes (docs/results.md): 1e-3 was the best of
 * 1e-4..3e-3 on bert-tiny (128) and of 3e-4..2e-3 on bert-mini (256); 1e-4, the old default, left
 * bert-tiny at 47%. Above 256 the rule is not measured here: it lands near the top of the rates
 * BERT-base is usually fine-tuned at, which wider models need lower.
 */
export function defaultFinetuneLearningRate(hiddenSize: number): number {
  return 1e-3 * Math.min(1, 256 / hiddenSize) ** 2;
}

export function linearSchedule(step: number, warmupSteps: number, totalSteps: number): number {
  if (step < warmupSteps) return (step + 1) / Math.max(1, warmupSteps);
  return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
}

/** Scales gradients so their global L2 norm is at most `maxNorm`; returns the norm before clipping. */
export function clipByGlobalNorm(grads: Map<tf.Variable, Tensor>, maxNorm: number): { grads: Map<tf.Variable, Tensor>; norm: number } {
  // One pass per gradient when the fused kernel is registered. The scalar is disposed here: callers outside a tidy would leak it.
  const normTensor = tf.tidy(() => tf.sqrt(tf.addN([...grads.values()].map((g) => fusedSumSquares(g) ?? tf.sum(tf.square(g))))));
  const norm = normTensor.dataSync()[0]!;
  normTensor.dispose();
  if (!(maxNorm > 0) || norm <= maxNorm || !Number.isFinite(norm)) return { grads, norm };
  const factor = maxNorm / (norm + 1e-6);
  const out = new Map<tf.Variable, Tensor>();
  for (const [v, g] of grads) out.set(v, tf.mul(g, factor));
  return { grads: out, norm };
}

/** Hugging Face's convention: no weight decay on biases and LayerNorm weights. */
export function decays(name: string): boolean {
  return !name.endsWith('.bias') && !name.includes('LayerNorm');
}
