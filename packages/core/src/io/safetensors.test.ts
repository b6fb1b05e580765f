import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Rng } from '../model/ops.js';
import { REPO, modelDir } from '../test-support/shared.js';
import { SafetensorsError, parseSafetensors, serializeSafetensors, type NamedTensor } from './safetensors.js';

/** A safetensors buffer from a header object (as given, no checks) and raw data bytes. */
function build(header: Record<string, unknown> | string, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}
const f32 = (...v: number[]) => new Uint8Array(new Float32Array(v).buffer);
const err = (bytes: Uint8Array) => {
  try {
    parseSafetensors(bytes, 'bad.safetensors');
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    expect((e as Error).message).toContain('bad.safetensors');
    return (e as Error).message;
  }
  throw new Error('parsed');
};

describe('safetensors header validation', () => {
  const two = f32(1, 2, 3, 4);
  it('reads a valid file and its __metadata__', () => {
    const t = parseSafetensors(build({ __metadata__: { format: 'pt' }, a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1, 2], data_offsets: [8, 16] } }, two));
    expect([...t.keys()]).toEqual(['a', 'b']);
    expect([...t.get('b')!.data]).toEqual([3, 4]);
  });
  it('refuses negative, reversed or out-of-range offsets', () => {
    expect(err(build({ a: { dtype: 'F32', shape: [2], data_offsets: [-8, 0] }, b: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, two))).toContain('data_offsets');
    expect(err(build({ a: { dtype: 'F32', shape: [0], data_offsets: [16, 8] }, b: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, two))).toContain('begin <= end');
    expect(err(build({ a: { dtype: 'F32', shape: [6], data_offsets: [0, 24] } }, two))).toContain('<= 16');
    expect(err(build({ a: { dtype: 'F32', shape: [2], data_offsets: [0.5, 8.5] } }, two))).toContain('non-negative integers');
  });
  it('refuses overlapping tensors, gaps and bytes past the last tensor', () => {
    expect(err(build({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, two))).toContain('overlaps');
    expect(err(build({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, two))).toContain('belong to no tensor');
    expect(err(build({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, two))).toContain('cover 8');
  });
  it('refuses a size that does not match dtype x shape', () => {
    expect(err(build({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } }, two))).toContain('expected 12 bytes');
    expect(err(build({ a: { dtype: 'F16', shape: [4], data_offsets: [0, 16] } }, two))).toContain('expected 8 bytes');
    expect(err(build({ a: { dtype: 'F32', shape: [-4], data_offsets: [0, 16] } }, two))).toContain('shape');
  });
  it('refuses duplicate names, which JSON.parse would silently merge', () => {
    const header = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}';
    expect(err(build(header, two))).toContain("'a' twice");
  });
  it('refuses headers that are not UTF-8, not JSON or not an object, and bad metadata or dtypes', () => {
    const bytes = build('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', two);
    bytes[10] = 0xff;
    expect(err(bytes)).toContain('UTF-8');
    expect(err(build('{"a":', two))).toContain('JSON');
    expect(err(build('[1, 2]', two))).toContain('JSON object');
    expect(err(build({ __metadata__: { format: 1 }, a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, two))).toContain('__metadata__');
    expect(err(build({ a: { dtype: 'F33', shape: [4], data_offsets: [0, 16] } }, two))).toContain('dtype');
    expect(err(build({ a: { dtype: 'constructor', shape: [4], data_offsets: [0, 16] } }, two))).toContain('dtype');
    expect(err(build({ a: null }, two))).toContain("tensor 'a'");
    expect(err(new Uint8Array(4))).toContain('too short');
    const huge = build({}, two);
    new DataView(huge.buffer).setBigUint64(0, 2n ** 63n, true);
    expect(err(huge)).toContain('header length');
  });
  it('skips integer buffers such as position_ids, after validating them', () => {
    const ids = new Uint8Array(new BigInt64Array([0n, 1n]).buffer);
    const data = new Uint8Array(32);
    data.set(two, 0);
    data.set(ids, 16);
    const skipped: string[] = [];
    const t = parseSafetensors(build({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, position_ids: { dtype: 'I64', shape: [1, 2], data_offsets: [16, 32] } }, data), 'x', { onSkipped: (n, d) => skipped.push(`${n}:${d}`) });
    expect([...t.keys()]).toEqual(['a']);
    expect(skipped).toEqual(['position_ids:I64']);
  });
  it('reads F32 data after an unaligned header from a Buffer view (a copy of the tensor bytes only)', () => {
    const file = build('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', two); // 8 + 55 bytes: unaligned
    const view = Buffer.concat([Buffer.from([9, 9, 9]), file]).subarray(3);
    expect([...parseSafetensors(view).get('a')!.data]).toEqual([1, 2, 3, 4]);
  });
  it('round-trips what serializeSafetensors writes', () => {
    const tensors = new Map<string, NamedTensor>([['x', { shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) }], ['e', { shape: [0], data: new Float32Array(0) }]]);
    const chunks = serializeSafetensors(tensors);
    const bytes = new Uint8Array(Buffer.concat(chunks));
    const back = parseSafetensors(bytes);
    expect([...back.get('x')!.data]).toEqual([1, 2, 3, 4]);
    expect(back.get('e')!.shape).toEqual([0]);
  });
});

describe('safetensors fuzz: truncations and corruptions of a real checkpoint', () => {
  const shared = path.join(modelDir('bert-tiny-wordnet-supersense'), 'model.safetensors');
  const file = existsSync(shared) ? shared : path.join(REPO, 'examples/models/bert-tiny-wordnet-supersense/model.safetensors');
  const original = new Uint8Array(readFileSync(file));
  const headerLen = Number(new DataView(original.buffer, original.byteOffset).getBigUint64(0, true));
  const headerText = new TextDecoder().decode(original.subarray(8, 8 + headerLen));
  // Byte positions (in the file) inside a JSON string of the header: names, dtypes, metadata values.
  const inString = new Uint8Array(original.length);
  for (let i = 0, open = false; i < headerText.length; i++) {
    if (headerText[i] === '"' && headerText[i - 1] !== '\\') open = !open;
    else if (open) inString[8 + i] = 1;
  }
  const reference = parseSafetensors(original, file);
  const bytesOf = (t: NamedTensor) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const same = (a: NamedTensor, b: NamedTensor) => a.shape.join() === b.shape.join() && bytesOf(a).equals(bytesOf(b));

  /** Parses one fuzzed case: a SafetensorsError naming the file, or tensors (never another error). */
  function attempt(bytes: Uint8Array): Map<string, NamedTensor> | 'rejected' {
    try {
      return parseSafetensors(bytes, 'fuzzed.safetensors');
    } catch (e) {
      if (!(e instanceof SafetensorsError) || !e.message.startsWith('fuzzed.safetensors: ')) throw e;
      return 'rejected';
    }
  }

  it('every truncation is a SafetensorsError naming the file', () => {
    const rng = new Rng(20261202);
    // Random lengths, and lengths around the end of the length prefix and of the header.
    const lengths = [0, 7, 8, 9, 8 + headerLen - 1, 8 + headerLen, 8 + headerLen + 1, original.length - 1];
    for (let i = 0; i < 200; i++) lengths.push(Math.floor(rng.next() * original.length));
    for (const n of lengths) expect(attempt(original.subarray(0, n)), `truncated to ${n} bytes`).toBe('rejected');
  });

  it('every corruption of the header is rejected or yields exactly the original tensors', () => {
    const rng = new Rng(7);
    let rejected = 0;
    let renamed = 0;
    for (let c = 0; c < 400; c++) {
      const bytes = original.slice();
      const positions: number[] = [];
      const k = 1 + Math.floor(rng.next() * 3);
      for (let j = 0; j < k; j++) {
        // Mostly the JSON header, sometimes the 8-byte length prefix.
        const at = rng.next() < 0.1 ? Math.floor(rng.next() * 8) : 8 + Math.floor(rng.next() * headerLen);
        let v = Math.floor(rng.next() * 256);
        if (v === bytes[at]) v = (v + 1) % 256;
        bytes[at] = v;
        positions.push(at);
      }
      const got = attempt(bytes);
      if (got === 'rejected') {
        rejected++;
        continue;
      }
      const label = `corrupted bytes ${positions.join(', ')}`;
      if (positions.every((p) => inString[p])) {
        // Only text inside strings changed (a name, a dtype, a metadata value): the format has no
        // checksum to notice, but every tensor still reads exactly its own bytes, in the original
        // order and shapes (loadBert rejects names it does not know, and integer dtypes are skipped).
        const want = [...reference.values()];
        let w = 0;
        for (const t of got.values()) {
          while (w < want.length && !same(t, want[w]!)) w++;
          expect(w < want.length, label).toBe(true);
          w++;
        }
        if ([...got.keys()].join() !== [...reference.keys()].join()) renamed++;
        continue;
      }
      // Anything else (offsets, shapes, structure, the length prefix) must change nothing.
      expect([...got.keys()], label).toEqual([...reference.keys()]);
      for (const [name, t] of got) expect(same(t, reference.get(name)!), `${label}: ${name}`).toBe(true);
    }
    // Most corruptions are caught; the rest only renamed tensors (checked above to read their own bytes).
    expect(rejected).toBeGreaterThan(200);
    expect(rejected + renamed).toBeLessThanOrEqual(400);
  });
});
