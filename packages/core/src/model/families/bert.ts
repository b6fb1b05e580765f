import type { NamedTensor } from '../../io/safetensors.js';
import { parseBertConfig, serializeBertConfig } from '../config.js';
import type { ModelFamily } from './family.js';

/** Maps checkpoint names onto ours: `BertModel` checkpoints have no `bert.` prefix; old ones say gamma/beta. */
function canonicalName(name: string): string | undefined {
  let n = name.replace(/\.gamma$/, '.weight').replace(/\.beta$/, '.bias');
  if (n.startsWith('cls.')) return undefined; // MLM head: not used by pruning or classification
  if (!n.startsWith('bert.') && !n.startsWith('classifier.')) n = `bert.${n}`;
  return n;
}

/** BERT: the canonical names are its own. */
export const bertFamily: ModelFamily = {
  id: 'bert',
  description: 'BERT (BertModel, BertForSequenceClassification, BertForMaskedLM)',
  parseConfig: parseBertConfig,
  serializeConfig: serializeBertConfig,
  importTensors(tensors) {
    const out = new Map<string, NamedTensor>();
    for (const [name, t] of tensors) {
      const n = canonicalName(name);
      if (n) out.set(n, t);
    }
    return out;
  },
  exportTensors: (tensors, config) => ({ tensors, config }),
};
