import { BertModel, gelu, layerNorm, layerParamNames, linear, tf, type Batch, type Tensor } from '@topiary/core';

/** What one encoder layer computes, in the terms of the reference's hooks. */
export interface LayerTrace {
  /** Context vectors after the head mask, `[B, T, heads * d]` (the attention output projection's input). */
  context: Tensor;
  /** Attention output projection plus the residual, before LayerNorm. */
  attnPre: Tensor;
  /** The attention block's output (after LayerNorm): the FFN's input and residual. */
  mid: Tensor;
  /** FFN activations after GELU, before the neuron mask, `[B, T, intermediate]`. */
  act: Tensor;
  /** FFN output projection of the masked activations plus the residual, before LayerNorm. */
  ffnPre: Tensor;
  /** The layer's output. */
  out: Tensor;
}

/** Additive attention mask `[B, T]` (0 attended, large negative padded), as the model builds it. */
export function additiveMask(batch: Batch): Tensor {
  return tf.tidy(() => tf.mul(tf.sub(1, tf.tensor2d(batch.attentionMask, [batch.batchSize, batch.seqLen], 'float32')), -1e9));
}

/**
 * One encoder layer of `model` in plain tfjs ops (evaluation mode), exposing its intermediate values:
 * mask tuning needs the per-head context and the FFN activations, which `BertModel.forward` does not
 * return. Masks are per-unit values (fractional allowed), as `BertModel.forward`'s `headMask[l]` and
 * `neuronMask[l]`. Call inside a tidy.
 */
export function runLayer(model: BertModel, l: number, x: Tensor, addMask: Tensor, headMask?: ArrayLike<number>, neuronMask?: ArrayLike<number>): LayerTrace {
  const a = attentionBlock(model, l, x, addMask, headMask);
  return { ...a, ...ffnBlock(model, l, a.mid, neuronMask) };
}

/** The attention half of `runLayer`. */
export function attentionBlock(model: BertModel, l: number, x: Tensor, addMask: Tensor, headMask?: ArrayLike<number>): Pick<LayerTrace, 'context' | 'attnPre' | 'mid'> {
  const c = model.config;
  const n = layerParamNames(l);
  const p = (name: string) => model.param(name);
  const heads = c.layerHeads[l]!;
  const d = c.attentionHeadSize;
  if (heads === 0 || c.layerIntermediate[l] === 0) throw new Error(`retraining-free: layer ${l} has no heads or no FFN neurons left; start from an uncompacted model`);
  const [B, T] = x.shape as [number, number, number];
  const split = (t: Tensor) => t.reshape([B, T, heads, d]).transpose([0, 2, 1, 3]);
  const q = split(linear(x, p(`${n.query}.weight`), p(`${n.query}.bias`)));
  const k = split(linear(x, p(`${n.key}.weight`), p(`${n.key}.bias`)));
  const v = split(linear(x, p(`${n.value}.weight`), p(`${n.value}.bias`)));
  const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(d)), addMask.reshape([B, 1, 1, T]));
  let context = tf.matMul(tf.softmax(scores, -1), v).transpose([0, 2, 1, 3]);
  if (headMask) context = tf.mul(context, tf.tensor1d(Float32Array.from(headMask)).reshape([1, 1, heads, 1]));
  context = context.reshape([B, T, heads * d]);
  const attnPre = tf.add(linear(context, p(`${n.attnOut}.weight`), p(`${n.attnOut}.bias`)), x);
  const mid = layerNorm(attnPre, p(`${n.attnLn}.weight`), p(`${n.attnLn}.bias`), c.layerNormEps);
  return { context, attnPre, mid };
}

/** The FFN half of `runLayer`, from the attention block's output. */
export function ffnBlock(model: BertModel, l: number, mid: Tensor, neuronMask?: ArrayLike<number>): Pick<LayerTrace, 'act' | 'ffnPre' | 'out'> {
  const c = model.config;
  const n = layerParamNames(l);
  const p = (name: string) => model.param(name);
  const act = gelu(linear(mid, p(`${n.inter}.weight`), p(`${n.inter}.bias`)));
  const masked = neuronMask ? tf.mul(act, tf.tensor1d(Float32Array.from(neuronMask))) : act;
  const ffnPre = tf.add(linear(masked, p(`${n.out}.weight`), p(`${n.out}.bias`)), mid);
  const out = layerNorm(ffnPre, p(`${n.outLn}.weight`), p(`${n.outLn}.bias`), c.layerNormEps);
  return { act, ffnPre, out };
}

/** The embedding output of `batch` (layer 0's input), `[B, T, H]`: word + position + token type, LayerNorm. */
export function embeddings(model: BertModel, batch: Batch): Tensor {
  const c = model.config;
  const H = c.hiddenSize;
  const [B, T] = [batch.batchSize, batch.seqLen];
  return tf.tidy(() => {
    const { inputIds, tokenTypeIds } = BertModel.toTensors(batch);
    const words = model.embedWords(inputIds.reshape([-1])).reshape([B, T, H]);
    const positions = tf.slice(model.param('bert.embeddings.position_embeddings.weight'), [0, 0], [T, H]);
    const types = tf.gather(model.param('bert.embeddings.token_type_embeddings.weight'), tokenTypeIds.reshape([-1])).reshape([B, T, H]);
    return layerNorm(tf.add(tf.add(words, positions), types), model.param('bert.embeddings.LayerNorm.weight'), model.param('bert.embeddings.LayerNorm.bias'), c.layerNormEps);
  });
}

/** Rows of `[B, T, ...]` at the non-padded positions (or only each example's first token), as `[N, ...]`. */
export function tokenRows(batch: Batch, clsOnly = false): Int32Array {
  const out: number[] = [];
  for (let b = 0; b < batch.batchSize; b++) {
    if (clsOnly) out.push(b * batch.seqLen);
    else for (let t = 0; t < batch.seqLen; t++) if (batch.attentionMask[b * batch.seqLen + t]) out.push(b * batch.seqLen + t);
  }
  return Int32Array.from(out);
}
