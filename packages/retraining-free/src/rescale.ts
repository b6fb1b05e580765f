import { gelu, layerNorm, layerParamNames, linear, tf, type Batch, type BertModel, type RunControl, type Tensor } from '@topiary/core';
import { additiveMask, attentionBlock, embeddings, runLayer, tokenRows } from './layer.js';
import { dampedScaleSolve } from './linalg.js';

export interface RescaleInput {
  model: BertModel;
  /** Masks of the model the student reconstructs (the reference: the search's result at an intermediate constraint). */
  teacherHeadMask: Float32Array[];
  teacherNeuronMask: Float32Array[];
  /** The pruned (binary) masks to tune. */
  headMask: Float32Array[];
  neuronMask: Float32Array[];
  batches: Batch[];
  /** Classification: the last layer's FFN reconstructs only the first ([CLS]) token, as the reference. */
  classification?: boolean;
  /**
   * What to do when a solve fails or a scale leaves [-maxScale, maxScale]: `stop` tuning (the
   * reference's `break`: this block and every later one keep their binary masks) or `skip` only this block.
   */
  onFailure?: 'stop' | 'skip';
  maxScale?: number;
  /** Damping of the least-squares problem (the reference's LSMR `damp=1`). */
  damp?: number;
  /**
   * The FFN target: `masked`, the teacher layer's output with its neuron mask; `reference`, what the
   * reference's hooks capture (its forward pre-hook records the FFN input before the neuron mask's hook
   * runs, so the current layer's FFN target uses all its neurons).
   */
  ffnTarget?: 'masked' | 'reference';
  control?: RunControl;
}

export interface BlockReport {
  layer: number;
  block: 'attention' | 'ffn';
  status: 'scaled' | 'solve-failed' | 'out-of-range' | 'not-tuned';
  min?: number;
  max?: number;
}

/**
 * The reference's `rescale_mask`: layer by layer, the kept heads' and neurons' mask values become real
 * scales that make the pruned layer's block outputs (before LayerNorm) reconstruct the teacher's, in
 * least squares over the non-padded tokens of the sample, given the student's own (already tuned)
 * inputs. Attention (not in layer 0, as the reference): one scale per kept head plus a constant
 * term, columns = each head's slice of the output projection applied to its context. FFN: one scale
 * per kept neuron, columns = activation times the neuron's row of the output projection. Each system
 * is solved by `dampedScaleSolve`; a failed solve or a scale outside [-10, 10] leaves the binary mask.
 */
export function rescaleMasks(o: RescaleInput): { headMask: Float32Array[]; neuronMask: Float32Array[]; blocks: BlockReport[] } {
  const { model } = o;
  const c = model.config;
  const L = c.numHiddenLayers;
  const H = c.hiddenSize;
  const d = c.attentionHeadSize;
  const maxScale = o.maxScale ?? 10;
  const onFailure = o.onFailure ?? 'stop';
  const headMask = o.headMask.map((m) => m.slice());
  const neuronMask = o.neuronMask.map((m) => m.slice());
  const blocks: BlockReport[] = [];
  const masks = o.batches.map((b) => additiveMask(b));
  let teacherX: Tensor[] = o.batches.map((b) => embeddings(model, b));
  let studentX: Tensor[] = teacherX.map((t) => t.clone());
  let stopped = false;
  const nonzero = (m: Float32Array) => Array.from(m.keys()).filter((i) => m[i] !== 0);
  // Applies a solve's scales, or records why not; false when tuning stops here.
  const apply = (layer: number, block: 'attention' | 'ffn', sol: ReturnType<typeof dampedScaleSolve>, count: number, target: Float32Array, idx: number[]): void => {
    const scales = sol.x?.subarray(0, count);
    const min = scales ? Math.min(...scales) : undefined;
    const max = scales ? Math.max(...scales) : undefined;
    const range = min !== undefined ? { min, max: max! } : {};
    if (!sol.ok || !scales) blocks.push({ layer, block, status: 'solve-failed' });
    else if (max! > maxScale || min! < -maxScale) blocks.push({ layer, block, status: 'out-of-range', ...range });
    else {
      idx.forEach((i, k) => (target[i] = target[i]! * scales[k]!));
      blocks.push({ layer, block, status: 'scaled', ...range });
      return;
    }
    if (onFailure === 'stop') stopped = true;
  };
  try {
    for (let l = 0; l < L; l++) {
      o.control?.checkpoint();
      const n = layerParamNames(l);
      const last = l === L - 1;
      const ffnRows = o.batches.map((b) => tokenRows(b, o.classification === true && last));
      const attnRows = o.batches.map((b) => tokenRows(b));
      // Teacher targets of this layer, at the rows each reconstruction uses.
      const teacherAttn: Tensor[] = [];
      const teacherFfn: Tensor[] = [];
      const nextTeacher = o.batches.map((b, i) =>
        tf.tidy(() => {
          const t = runLayer(model, l, teacherX[i]!, masks[i]!, o.teacherHeadMask[l], o.teacherNeuronMask[l]);
          teacherAttn.push(tf.keep(tf.gather(t.attnPre.reshape([-1, H]), tf.tensor1d(attnRows[i]!, 'int32'))));
          let ffnPre = t.ffnPre;
          if (o.ffnTarget === 'reference') ffnPre = tf.add(tf.add(tf.matMul(t.act.reshape([-1, c.layerIntermediate[l]!]), model.param(`${n.out}.weight`)), model.param(`${n.out}.bias`)), t.mid.reshape([-1, H]));
          teacherFfn.push(tf.keep(tf.gather(ffnPre.reshape([-1, H]), tf.tensor1d(ffnRows[i]!, 'int32'))));
          return t.out;
        }),
      );
      try {
        // Attention: A = [per-head outputs | 1], B = teacher (projection + residual) - bias - student residual.
        const heads = nonzero(headMask[l]!);
        if (!stopped && l !== 0 && heads.length > 0) {
          const k = heads.length;
          const m = k + 1;
          const ata = new Float64Array(m * m);
          const atb = new Float64Array(m);
          o.batches.forEach((b, i) => {
            const [oo, os, ob, bs, count] = tf.tidy(() => {
              const s = attentionBlock(model, l, studentX[i]!, masks[i]!, headMask[l]);
              const rows = tf.tensor1d(attnRows[i]!, 'int32');
              const N = attnRows[i]!.length;
              const ctx = tf.gather(s.context.reshape([-1, c.layerHeads[l]!, d]), rows).transpose([1, 0, 2]); // [A, N, d]
              const ctxK = tf.gather(ctx, tf.tensor1d(heads, 'int32')); // [k, N, d]
              const wo = tf.gather(model.param(`${n.attnOut}.weight`).reshape([c.layerHeads[l]!, d, H]), tf.tensor1d(heads, 'int32')); // [k, d, H]
              const outs = tf.matMul(ctxK, wo).reshape([k, N * H]);
              const residual = tf.gather(studentX[i]!.reshape([-1, H]), rows);
              const target = tf.sub(tf.sub(teacherAttn[i]!, model.param(`${n.attnOut}.bias`)), residual).reshape([N * H, 1]);
              return [
                tf.matMul(outs, outs, false, true).dataSync(),
                tf.sum(outs, 1).dataSync(),
                tf.matMul(outs, target).dataSync(),
                tf.sum(target).dataSync(),
                N * H,
              ] as const;
            });
            for (let a = 0; a < k; a++) {
              for (let e = 0; e < k; e++) ata[a * m + e]! += oo[a * k + e]!;
              ata[a * m + k]! += os[a]!;
              ata[k * m + a]! += os[a]!;
              atb[a]! += ob[a]!;
            }
            ata[k * m + k]! += count;
            atb[k]! += bs[0]!;
          });
          apply(l, 'attention', dampedScaleSolve(ata, atb, m, o.damp ?? 1), k, headMask[l]!, heads);
        } else if (heads.length > 0) blocks.push({ layer: l, block: 'attention', status: 'not-tuned' });

        // FFN, from the student's attention output with the tuned heads, computing only the kept neurons.
        // A's columns are activation x the neuron's output row, so ATA = (W2 W2^T) .* (act^T act).
        const neurons = nonzero(neuronMask[l]!);
        const k = neurons.length;
        const idx = tf.tensor1d(neurons, 'int32');
        const wi = k > 0 ? tf.gather(model.param(`${n.inter}.weight`), idx, 1) : undefined; // [H, k]
        const bi = k > 0 ? tf.gather(model.param(`${n.inter}.bias`), idx) : undefined;
        const w2 = k > 0 ? tf.gather(model.param(`${n.out}.weight`), idx) : undefined; // [k, H]
        const mids: Tensor[] = [];
        const acts: Tensor[] = [];
        try {
          o.batches.forEach((_, i) =>
            tf.tidy(() => {
              const { mid } = attentionBlock(model, l, studentX[i]!, masks[i]!, headMask[l]);
              mids.push(tf.keep(mid));
              if (k > 0) acts.push(tf.keep(gelu(linear(mid, wi!, bi!))));
            }),
          );
          if (!stopped && k > 0) {
            const ww = tf.tidy(() => tf.matMul(w2!, w2!, false, true));
            const ata = new Float64Array(k * k);
            const atb = new Float64Array(k);
            o.batches.forEach((_, i) => {
              const [hh, hb] = tf.tidy(() => {
                const rows = tf.tensor1d(ffnRows[i]!, 'int32');
                const act = tf.gather(acts[i]!.reshape([-1, k]), rows); // [N, k]
                const residual = tf.gather(mids[i]!.reshape([-1, H]), rows);
                const target = tf.sub(tf.sub(teacherFfn[i]!, model.param(`${n.out}.bias`)), residual); // [N, H]
                return [tf.mul(ww, tf.matMul(act, act, true, false)).dataSync(), tf.sum(tf.mul(act, tf.matMul(target, w2!, false, true)), 0).dataSync()] as const;
              });
              for (let j = 0; j < k * k; j++) ata[j]! += hh[j]!;
              for (let j = 0; j < k; j++) atb[j]! += hb[j]!;
            });
            ww.dispose();
            apply(l, 'ffn', dampedScaleSolve(ata, atb, k, o.damp ?? 1), k, neuronMask[l]!, neurons);
          } else if (k > 0) blocks.push({ layer: l, block: 'ffn', status: 'not-tuned' });

          // The next layer's inputs: the student's with this layer's tuned masks (the teacher's are above).
          const scales = tf.tensor1d(Float32Array.from(neurons, (j) => neuronMask[l]![j]!));
          const nextStudent = o.batches.map((_, i) =>
            tf.tidy(() => {
              const pre = k > 0 ? tf.add(linear(tf.mul(acts[i]!, scales), w2!, model.param(`${n.out}.bias`)), mids[i]!) : tf.add(mids[i]!, model.param(`${n.out}.bias`));
              return layerNorm(pre, model.param(`${n.outLn}.weight`), model.param(`${n.outLn}.bias`), c.layerNormEps);
            }),
          );
          scales.dispose();
          tf.dispose(studentX);
          studentX = nextStudent;
        } finally {
          tf.dispose([idx, ...(wi ? [wi, bi!, w2!] : []), ...mids, ...acts]);
        }
      } finally {
        tf.dispose([...teacherAttn, ...teacherFfn]);
        tf.dispose(teacherX);
        teacherX = nextTeacher;
      }
    }
  } finally {
    tf.dispose([...teacherX, ...studentX, ...masks]);
  }
  return { headMask, neuronMask, blocks };
}
