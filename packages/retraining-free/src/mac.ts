import type { BertConfig } from '@topiary/core';

/**
 * MACs of one attention head at sequence length `T` (the reference's `efficiency/mac.py`): its Q, K, V
 * projections, the two attention products, and its slice of the output projection. Biases, softmax,
 * LayerNorm and embeddings are not counted.
 */
export function macPerHead(T: number, hidden: number, headSize: number): number {
  return 3 * T * hidden * headSize + 2 * T * T * headSize + T * headSize * hidden;
}

/** MACs of one FFN neuron at sequence length `T`: its row of the up and column of the down projection. */
export function macPerNeuron(T: number, hidden: number): number {
  return 2 * T * hidden;
}

/** Encoder MACs of `heads[l]` heads and `neurons[l]` neurons per layer. */
export function encoderMacs(heads: number[], neurons: number[], T: number, hidden: number, headSize: number): number {
  let mac = 0;
  heads.forEach((h, l) => (mac += h * macPerHead(T, hidden, headSize) + neurons[l]! * macPerNeuron(T, hidden)));
  return mac;
}

/** Encoder MACs of a model's current shapes. */
export function modelMacs(config: BertConfig, T: number): number {
  return encoderMacs(config.layerHeads, config.layerIntermediate, T, config.hiddenSize, config.attentionHeadSize);
}

/** Encoder MACs of masks over a model (non-zero entries count). */
export function maskMacs(config: BertConfig, headMask: ArrayLike<number>[], neuronMask: ArrayLike<number>[], T: number): number {
  const nz = (m: ArrayLike<number>) => Array.from(m).filter((v) => v !== 0).length;
  return encoderMacs(headMask.map(nz), neuronMask.map(nz), T, config.hiddenSize, config.attentionHeadSize);
}
