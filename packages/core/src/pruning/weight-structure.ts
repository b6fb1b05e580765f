import { tf } from '../tf.js';
import { layerParamNames, type BertModel } from '../model/bert.js';
import { gelu } from '../model/ops.js';
import type { MaskSet } from './masks.js';

/** What `structureFromWeightMasks` removed, per layer. */
export interface WeightStructure {
  /** Heads removed from each layer. */
  heads: number[];
  /** FFN neurons removed from each layer. */
  neurons: number[];
  /** Of those, how many were constant (all input weights masked) and folded into the output bias. */
  foldedHeads: number;
  foldedNeurons: number;
}

const keptIndices = (mask: Float32Array): number[] => {
  const out: number[] = [];
  mask.forEach((v, i) => v !== 0 && out.push(i));
  return out;
};

/** True when `mask` (row-major, `cols` wide) is 0 on rows `rows` x columns `[c0, c1)`. */
function zeroBlock(mask: Float32Array | undefined, cols: number, rows: Iterable<number>, c0: number, c1: number): boolean {
  if (!mask) return false;
  for (const r of rows) for (let j = c0; j < c1; j++) if (mask[r * cols + j] !== 0) return false;
  return true;
}

/** True when `mask` (row-major, `cols` wide) is 0 on rows `[r0, r1)` x columns `colsKept`. */
function zeroRows(mask: Float32Array | undefined, cols: number, r0: number, r1: number, colsKept: number[]): boolean {
  if (!mask) return false;
  for (let i = r0; i < r1; i++) for (const j of colsKept) if (mask[i * cols + j] !== 0) return false;
  return true;
}

/**
 * Turns whole masked rows and columns of the weight masks into structured removals that `compact`
 * drops, keeping the masked model's function exactly:
 *
 * - an FFN neuron goes when the output-projection weights reading it are all masked (it contributes
 *   nothing), or when the intermediate weights producing it are all masked: its activation is then the
 *   constant act(b1_i), and act(b1_i) * W2[i, :] is folded into the output bias first;
 * - an attention head goes when the output-projection weights reading its context are all masked, or
 *   when its value-projection weights are all masked: attention probabilities sum to 1, so its context
 *   is the constant value bias b_v, and b_v @ W_o[head rows] is folded into the output bias first.
 *   Masked query or key weights alone never remove a head: they change the softmax, not a constant.
 *
 * Weights on hidden dimensions the hidden mask removes do not count (their inputs and outputs are 0).
 * Mutates `model` (attention and FFN output biases) and `masks` (`headMask`, `neuronMask`) in place:
 * the model under the returned masks computes what it computed under the old ones, and `compact`
 * then yields smaller matrices. Heads keep a uniform size, so query/key dimensions are not removed.
 */
export function structureFromWeightMasks(model: BertModel, masks: MaskSet): WeightStructure {
  const c = model.config;
  const H = c.hiddenSize;
  const d = c.attentionHeadSize;
  const hKeep = keptIndices(masks.hiddenMask);
  const wm = (name: string) => masks.weightMasks.get(`${name}.weight`);
  const values = (name: string) => model.param(name).dataSync() as Float32Array;
  const result: WeightStructure = { heads: [], neurons: [], foldedHeads: 0, foldedNeurons: 0 };
  /** Adds `scale * (W ⊙ M)[row, :]` to `acc` (kept hidden columns only; the others are masked out anyway). */
  const addRow = (acc: Float64Array, w: Float32Array, m: Float32Array | undefined, row: number, scale: number) => {
    for (const j of hKeep) acc[j]! += scale * w[row * H + j]! * (m ? m[row * H + j]! : 1);
  };
  const setBias = (name: string, acc: Float64Array) => tf.tidy(() => model.param(name).assign(tf.tensor1d(Float32Array.from(acc))));

  for (let l = 0; l < c.numHiddenLayers; l++) {
    const n = layerParamNames(l);
    const A = c.layerHeads[l]!;
    const I = c.layerIntermediate[l]!;
    let heads = 0;
    let neurons = 0;

    // Attention heads (the block itself gone: nothing to decide).
    const headMask = masks.headMask[l]!;
    if (masks.mhaMask[l] !== 0 && A > 0) {
      const oMask = wm(n.attnOut);
      const vMask = wm(n.value);
      let wo: Float32Array | undefined;
      let bv: Float32Array | undefined;
      let bias: Float64Array | undefined;
      for (let a = 0; a < A; a++) {
        if (headMask[a] === 0) continue;
        if (zeroRows(oMask, H, a * d, (a + 1) * d, hKeep)) {
          headMask[a] = 0;
          heads++;
        } else if (zeroBlock(vMask, A * d, hKeep, a * d, (a + 1) * d)) {
          // The head's context is b_v (times its head mask): fold it through the output projection.
          wo ??= values(`${n.attnOut}.weight`);
          bv ??= values(`${n.value}.bias`);
          bias ??= Float64Array.from(values(`${n.attnOut}.bias`));
          for (let k = a * d; k < (a + 1) * d; k++) addRow(bias, wo, oMask, k, headMask[a]! * bv[k]!);
          headMask[a] = 0;
          heads++;
          result.foldedHeads++;
        }
      }
      if (bias) setBias(`${n.attnOut}.bias`, bias);
    }

    // FFN neurons.
    const neuronMask = masks.neuronMask[l]!;
    if (masks.ffnMask[l] !== 0 && I > 0) {
      const m1 = wm(n.inter);
      const m2 = wm(n.out);
      let w2: Float32Array | undefined;
      let act: Float32Array | undefined;
      let bias: Float64Array | undefined;
      for (let i = 0; i < I; i++) {
        if (neuronMask[i] === 0) continue;
        if (zeroRows(m2, H, i, i + 1, hKeep)) {
          neuronMask[i] = 0;
          neurons++;
        } else if (zeroBlock(m1, I, hKeep, i, i + 1)) {
          // The activation is the constant act(b1_i), computed by the forward pass's own activation.
          w2 ??= values(`${n.out}.weight`);
          act ??= tf.tidy(() => gelu(model.param(`${n.inter}.bias`)).dataSync() as Float32Array);
          bias ??= Float64Array.from(values(`${n.out}.bias`));
          addRow(bias, w2, m2, i, neuronMask[i]! * act[i]!);
          neuronMask[i] = 0;
          neurons++;
          result.foldedNeurons++;
        }
      }
      if (bias) setBias(`${n.out}.bias`, bias);
    }
    result.heads.push(heads);
    result.neurons.push(neurons);
  }
  return result;
}
