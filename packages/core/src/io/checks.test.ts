import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { tf } from '../tf.js';
import { testBackend } from '../test-support/backend.js';
import { REPO } from '../test-support/shared.js';
import { ConfigError } from '../model/config.js';
import { loadBert } from './checkpoint.js';
import { SafetensorsError, parseSafetensors, serializeSafetensors } from './safetensors.js';

const tiny = path.join(REPO, 'examples/models/bert-tiny-wordnet-supersense');
const original = () => new Uint8Array(readFileSync(path.join(tiny, 'model.safetensors')));
const config = () => JSON.parse(readFileSync(path.join(tiny, 'config.json'), 'utf8')) as Record<string, unknown>;

/** The tiny model with its config and/or weights replaced (the other files linked). */
function variant(files: { config?: Record<string, unknown>; weights?: Uint8Array }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'topiary-checks-'));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(files.config ?? config()));
  if (files.weights) writeFileSync(path.join(dir, 'model.safetensors'), files.weights);
  else symlinkSync(path.join(tiny, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  return dir;
}

/** Appends an I64 tensor to a safetensors file, as transformers writes `position_ids` buffers. */
function withI64(bytes: Uint8Array, name: string, values: bigint[]): Uint8Array {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
  const dataLen = bytes.length - 8 - n;
  header[name] = { dtype: 'I64', shape: [1, values.length], data_offsets: [dataLen, dataLen + 8 * values.length] };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataLen + 8 * values.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(bytes.subarray(8 + n), 8 + json.length);
  out.set(new Uint8Array(new BigInt64Array(values).buffer), 8 + json.length + dataLen);
  return out;
}

describe('loadBert: silent wrong results become errors', () => {
  beforeAll(testBackend);

  it('a head without id2label predicts LABEL_0..LABEL_{n-1}, n from the classifier', async () => {
    const cfg = config();
    delete cfg['id2label'];
    delete cfg['label2id'];
    const m = await loadBert(variant({ config: cfg }));
    expect(m.config.id2label).toEqual(Array.from({ length: m.numLabels }, (_, i) => `LABEL_${i}`));
    m.dispose();
    // A task's names do not silently replace them.
    const labels = (config()['id2label'] as Record<string, string>);
    await expect(loadBert(variant({ config: cfg }), { labels: Object.values(labels) })).rejects.toThrow(/id2label.*LABEL_0/);
  });

  it('an id2label whose count differs from the classifier is an error naming config.json', async () => {
    const dir = variant({ config: { ...config(), id2label: { 0: 'a', 1: 'b' } } });
    await expect(loadBert(dir)).rejects.toThrow(new ConfigError(`${path.join(dir, 'config.json')}: field 'id2label' has 2 labels, expected 40 (the classifier's outputs in model.safetensors)`));
  });

  it('NaN or Inf in any weight is an error at load naming the tensor', async () => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const t = parseSafetensors(original());
      const name = 'bert.encoder.layer.1.output.LayerNorm.bias';
      const d = t.get(name)!.data.slice();
      d[d.length - 1] = bad;
      t.set(name, { shape: t.get(name)!.shape, data: d });
      const dir = variant({ weights: new Uint8Array(Buffer.concat(serializeSafetensors(t))) });
      const before = tf.memory().numTensors;
      const err = await loadBert(dir).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(SafetensorsError);
      expect((err as Error).message).toContain(`${path.join(dir, 'model.safetensors')}: tensor '${name}' holds ${bad}`);
      expect(tf.memory().numTensors).toBe(before);
    }
  });

  it('an I64 buffer such as position_ids is skipped, not fatal', async () => {
    const dir = variant({ weights: withI64(original(), 'bert.embeddings.position_ids', Array.from({ length: 128 }, (_, i) => BigInt(i))) });
    const m = await loadBert(dir);
    const ref = await loadBert(tiny);
    expect([...m.params.keys()].sort()).toEqual([...ref.params.keys()].sort());
    m.dispose();
    ref.dispose();
  });
});
