import { encoderLinearNames, type BertModel } from '@topiary/core';

export interface InspectReport {
  layers: number;
  hiddenSize: number;
  heads: number[];
  intermediate: number[];
  attentionHeadSize: number;
  labels: number;
  encoderParams: number;
  embeddingParams: number;
  totalParams: number;
  encoderZeros: number;
  encoderSparsity: number;
}

/** Shapes and parameter counts of a model; `encoderSparsity` is the fraction of zero encoder weights. */
export function inspectModel(model: BertModel): InspectReport {
  const c = model.config;
  let encoderParams = 0;
  let encoderZeros = 0;
  for (const base of encoderLinearNames(c)) {
    for (const part of ['weight', 'bias']) {
      const v = model.param(`${base}.${part}`);
      encoderParams += v.size;
      if (v.size > 0) {
        const data = v.dataSync();
        for (let i = 0; i < data.length; i++) if (data[i] === 0) encoderZeros++;
      }
    }
  }
  let embeddingParams = 0;
  let totalParams = 0;
  for (const [name, v] of model.params) {
    totalParams += v.size;
    if (name.includes('.embeddings.')) embeddingParams += v.size;
  }
  return {
    layers: c.numHiddenLayers,
    hiddenSize: c.hiddenSize,
    heads: [...c.layerHeads],
    intermediate: [...c.layerIntermediate],
    attentionHeadSize: c.attentionHeadSize,
    labels: model.numLabels,
    encoderParams,
    embeddingParams,
    totalParams,
    encoderZeros,
    encoderSparsity: encoderParams ? encoderZeros / encoderParams : 0,
  };
}
