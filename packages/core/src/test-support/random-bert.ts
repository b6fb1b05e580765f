import { tf, type Tensor } from '../tf.js';
import { BertModel, layerParamNames } from '../model/bert.js';
import { parseBertConfig } from '../model/config.js';
import { Rng } from '../model/ops.js';

export interface RandomBertShape {
  layers: number;
  hidden: number;
  heads: number;
  intermediate: number;
  labels: number;
  vocab?: number;
  maxPositions?: number;
}

/**
 * A small classification BERT with uniform random weights of scale `weightScale` and biases of scale
 * `biasScale` (non-zero biases, so that anything folded into a bias shows in the logits).
 */
export function randomBert(s: RandomBertShape, seed = 1, weightScale = 0.4, biasScale = 0.5): BertModel {
  const vocab = s.vocab ?? 32;
  const maxPos = s.maxPositions ?? 16;
  const config = parseBertConfig({
    architectures: ['BertForSequenceClassification'],
    model_type: 'bert',
    vocab_size: vocab,
    hidden_size: s.hidden,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    intermediate_size: s.intermediate,
    max_position_embeddings: maxPos,
    type_vocab_size: 2,
    id2label: Object.fromEntries(Array.from({ length: s.labels }, (_, i) => [String(i), `l${i}`])),
  });
  const rng = new Rng(seed);
  const params = new Map<string, Tensor>();
  const rand = (name: string, shape: number[], scale: number, offset = 0) => {
    const size = shape.reduce((a, b) => a * b, 1);
    params.set(name, tf.tensor(Float32Array.from({ length: size }, () => offset + scale * (2 * rng.next() - 1)), shape));
  };
  const H = s.hidden;
  const ln = (name: string) => {
    rand(`${name}.weight`, [H], 0.2, 1);
    rand(`${name}.bias`, [H], 0.2);
  };
  rand('bert.embeddings.word_embeddings.weight', [vocab, H], 1);
  rand('bert.embeddings.position_embeddings.weight', [maxPos, H], 1);
  rand('bert.embeddings.token_type_embeddings.weight', [2, H], 1);
  ln('bert.embeddings.LayerNorm');
  for (let l = 0; l < s.layers; l++) {
    const n = layerParamNames(l);
    for (const [name, i, o] of [[n.query, H, H], [n.key, H, H], [n.value, H, H], [n.attnOut, H, H], [n.inter, H, s.intermediate], [n.out, s.intermediate, H]] as const) {
      rand(`${name}.weight`, [i, o], weightScale);
      rand(`${name}.bias`, [o], biasScale);
    }
    ln(n.attnLn);
    ln(n.outLn);
  }
  rand('bert.pooler.dense.weight', [H, H], weightScale);
  rand('bert.pooler.dense.bias', [H], biasScale);
  rand('classifier.weight', [H, s.labels], weightScale);
  rand('classifier.bias', [s.labels], biasScale);
  try {
    return new BertModel(config, params);
  } finally {
    for (const t of params.values()) t.dispose();
  }
}
