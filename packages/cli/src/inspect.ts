import { encoderLinearNames, layerParamNames, type BertModel } from '@topiary/core';

export interface InspectReport {
  /** The checkpoint's family (`model_type`). */
  family: string;
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
  /**
   * ALBERT: the checkpoint's layer groups and its parameter count with shared layers counted once;
   * `totalParams` counts the unshared copies Topiary prunes.
   */
  sharedLayerGroups?: number;
  sharedParams?: number;
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
  const groups = c.arch.sharedLayerGroups;
  let sharedParams: number | undefined;
  if (groups !== undefined && groups < c.numHiddenLayers) {
    // Layers after the first of their group are copies of it in the checkpoint.
    sharedParams = totalParams;
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const g = Math.floor(l / (c.numHiddenLayers / groups));
      if (l > 0 && Math.floor((l - 1) / (c.numHiddenLayers / groups)) === g) {
        for (const n of Object.values(layerParamNames(l))) sharedParams -= model.param(`${n}.weight`).size + model.param(`${n}.bias`).size;
      }
    }
  }
  return {
    family: c.modelType,
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
    ...(sharedParams !== undefined ? { sharedLayerGroups: groups, sharedParams } : {}),
  };
}
