import { existsSync } from 'node:fs';
import * as path from 'node:path';
import type { BertModel } from '../model/bert.js';
import { readSafetensors, writeSafetensors, type NamedTensor } from '../io/safetensors.js';
import { MaskSet, bindMasks } from './masks.js';

export const MASKS_FILE = 'masks.safetensors';

/** Writes masks as safetensors: `head_mask.{l}`, `neuron_mask.{l}`, `hidden_mask`, `mha_mask`, `ffn_mask`, `layer_mask` (when a layer is removed), `weight_mask.{param}`. */
export async function saveMasks(masks: MaskSet, dir: string): Promise<void> {
  const t = new Map<string, NamedTensor>();
  masks.headMask.forEach((m, l) => t.set(`head_mask.${l}`, { shape: [m.length], data: m }));
  masks.neuronMask.forEach((m, l) => t.set(`neuron_mask.${l}`, { shape: [m.length], data: m }));
  t.set('hidden_mask', { shape: [masks.hiddenMask.length], data: masks.hiddenMask });
  t.set('mha_mask', { shape: [masks.mhaMask.length], data: masks.mhaMask });
  t.set('ffn_mask', { shape: [masks.ffnMask.length], data: masks.ffnMask });
  // Only when it removes something, so files of models without removed layers stay as they were.
  if (!masks.layerMask.every((v) => v === 1)) t.set('layer_mask', { shape: [masks.layerMask.length], data: masks.layerMask });
  for (const [name, m] of masks.weightMasks) t.set(`weight_mask.${name}`, { shape: [m.length], data: m });
  await writeSafetensors(path.join(dir, MASKS_FILE), t);
}

/** Reads masks saved by `saveMasks`, checked against `model`'s shapes; all-ones when there is no file. */
export async function loadMasks(dir: string, model: BertModel): Promise<MaskSet> {
  const file = path.join(dir, MASKS_FILE);
  const masks = bindMasks(MaskSet.ones(model), model);
  if (!existsSync(file)) return masks;
  const t = await readSafetensors(file);
  const get = (name: string, size: number): Float32Array => {
    const v = t.get(name);
    if (!v) throw new Error(`${file}: tensor '${name}' is missing`);
    if (v.data.length !== size) throw new Error(`${file}: tensor '${name}' has ${v.data.length} values, the model needs ${size}`);
    return v.data.slice();
  };
  masks.headMask = masks.headMask.map((m, l) => get(`head_mask.${l}`, m.length));
  masks.neuronMask = masks.neuronMask.map((m, l) => get(`neuron_mask.${l}`, m.length));
  masks.hiddenMask = get('hidden_mask', masks.hiddenMask.length);
  masks.mhaMask = get('mha_mask', masks.mhaMask.length);
  masks.ffnMask = get('ffn_mask', masks.ffnMask.length);
  if (t.has('layer_mask')) masks.layerMask = get('layer_mask', masks.layerMask.length);
  for (const [name, v] of t) {
    if (!name.startsWith('weight_mask.')) continue;
    const param = name.slice('weight_mask.'.length);
    masks.weightMasks.set(param, get(name, model.param(param).size));
  }
  return masks;
}
