import { MaskSet, Rng, bindMasks, compact, encoderLinearNames, layerParamNames, structureFromWeightMasks, type BertModel } from '@topiary/core';

/**
 * Pruned models of every kind Topiary makes, from masks set by hand on a checkpoint (no training):
 * what each method's masks look like when it is done, compacted as `topiary export` does.
 */
export type VariantKind = 'dense' | 'structured' | 'cofi' | 'movement' | 'magnitude';
export const VARIANTS: VariantKind[] = ['dense', 'structured', 'cofi', 'movement', 'magnitude'];

const keepFraction = (n: number, f: number, rng: Rng) => {
  const order = rng.shuffle(Array.from({ length: n }, (_, i) => i));
  const keep = new Set(order.slice(0, Math.max(1, Math.round(n * f))));
  return Float32Array.from({ length: n }, (_, i) => (keep.has(i) ? 1 : 0));
};

/** The masks of `kind` for `model` (layer 0 and the last layer lose whole blocks in `structured`). */
export function variantMasks(model: BertModel, kind: VariantKind, seed = 7): MaskSet {
  const c = model.config;
  const L = c.numHiddenLayers;
  const rng = new Rng(seed);
  const m = bindMasks(MaskSet.ones(model), model);
  switch (kind) {
    case 'dense':
      break;
    case 'structured':
      // First-order-like: layer 0 loses every head, the last layer every FFN neuron; elsewhere half.
      m.headMask = m.headMask.map((h, l) => (l === 0 ? h.fill(0) : keepFraction(h.length, 0.5, rng)));
      m.neuronMask = m.neuronMask.map((n, l) => (l === L - 1 ? n.fill(0) : keepFraction(n.length, 0.4, rng)));
      break;
    case 'cofi':
      // CoFi: hidden dimensions removed, fractional (learned) head/neuron/block masks folded by compaction.
      m.hiddenMask = keepFraction(c.hiddenSize, 0.75, rng);
      m.headMask = m.headMask.map((h) => keepFraction(h.length, 0.5, rng).map((v) => v * (0.5 + 0.5 * rng.next())));
      m.neuronMask = m.neuronMask.map((n) => keepFraction(n.length, 0.5, rng).map((v) => v * (0.5 + 0.5 * rng.next())));
      m.mhaMask[L - 1] = 0.9;
      m.ffnMask[0] = 0.8;
      break;
    case 'movement': {
      // Movement pruning's weight masks: whole rows/columns gone (compaction removes those heads and
      // neurons) and scattered zeros that stay as zeros.
      for (let l = 0; l < L; l++) {
        const n = layerParamNames(l);
        const H = c.hiddenSize;
        const I = c.layerIntermediate[l]!;
        const A = c.layerHeads[l]! * c.attentionHeadSize;
        const inter = Float32Array.from({ length: H * I }, () => (rng.next() < 0.3 ? 0 : 1));
        const dead = keepFraction(I, 0.5, rng); // 0 = a neuron whose input column is all masked
        for (let r = 0; r < H; r++) for (let j = 0; j < I; j++) if (dead[j] === 0) inter[r * I + j] = 0;
        m.weightMasks.set(`${n.inter}.weight`, inter);
        const attnOut = Float32Array.from({ length: A * H }, () => (rng.next() < 0.3 ? 0 : 1));
        // Head 0's rows of the attention output all masked: the head goes.
        for (let r = 0; r < c.attentionHeadSize; r++) attnOut.fill(0, r * H, (r + 1) * H);
        m.weightMasks.set(`${n.attnOut}.weight`, attnOut);
        for (const name of [n.query, n.key, n.value]) m.weightMasks.set(`${name}.weight`, Float32Array.from({ length: H * A }, () => (rng.next() < 0.3 ? 0 : 1)));
      }
      break;
    }
    case 'magnitude':
      // Unstructured: half of every encoder weight matrix zero, shapes unchanged.
      for (const name of encoderLinearNames(c)) {
        const size = model.param(`${name}.weight`).size;
        m.weightMasks.set(`${name}.weight`, Float32Array.from({ length: size }, () => (rng.next() < 0.5 ? 0 : 1)));
      }
      break;
  }
  return m;
}

/** The compacted model of `kind` (a new model; `model` is not changed except by `structureFromWeightMasks` folding biases, so pass a clone). */
export function variantModel(model: BertModel, kind: VariantKind, seed = 7): BertModel {
  const masks = variantMasks(model, kind, seed);
  structureFromWeightMasks(model, masks);
  return compact(model, masks);
}
