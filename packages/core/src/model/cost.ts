import { layerParamNames } from './bert.js';
import type { BertConfig } from './config.js';

/**
 * Forward FLOPs (2 per multiply-add) of the encoder's matrix products on one sequence of `seqLen`
 * tokens: the six linear layers of every layer (a low-rank layer costs `r (in + out)` per token instead
 * of `in out`) and attention's two products (`2 T^2 A`). Embeddings, LayerNorm and activations are
 * left out (linear in T H, small beside these).
 */
export function encoderFlops(config: BertConfig, seqLen: number): number {
  const H = config.hiddenSize;
  const d = config.attentionHeadSize;
  let macs = 0;
  const lin = (name: string, inDim: number, outDim: number) => {
    const r = config.lowRank?.[name];
    return seqLen * (r === undefined ? inDim * outDim : r * (inDim + outDim));
  };
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const n = layerParamNames(l);
    const A = config.layerHeads[l]! * d;
    const I = config.layerIntermediate[l]!;
    if (A > 0) macs += lin(n.query, H, A) + lin(n.key, H, A) + lin(n.value, H, A) + lin(n.attnOut, A, H) + 2 * seqLen * seqLen * A;
    if (I > 0) macs += lin(n.inter, H, I) + lin(n.out, I, H);
  }
  return 2 * macs;
}

/** Parameters of the word embeddings: `vocab E`, or `r (vocab + E)` when factorized (`config.embeddingRank` r). */
export function wordEmbeddingParams(config: BertConfig): number {
  const r = config.embeddingRank;
  return r === undefined ? config.vocabSize * config.embeddingSize : r * (config.vocabSize + config.embeddingSize);
}

/** Every entry of the model's parameters (factors of low-rank layers and embeddings as stored). */
export function paramCount(model: { params: Map<string, { size: number }> }): number {
  let n = 0;
  for (const v of model.params.values()) n += v.size;
  return n;
}
