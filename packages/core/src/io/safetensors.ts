import { promises as fs } from 'node:fs';
import { writeFileAtomic } from './atomic.js';

/**
 * safetensors: an 8-byte little-endian header length N, N bytes of JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?}`), then the raw little-endian
 * tensor bytes, offsets relative to the end of the header.
 */
export interface NamedTensor {
  shape: number[];
  /** Always float32 in memory (F16 and BF16 are widened on read). */
  data: Float32Array;
}

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

/** Bytes per element of every safetensors dtype; the float ones are read, the others validated and skipped. */
const DTYPE_BYTES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, U64: 8, I32: 4, U32: 4, I16: 2, U16: 2, I8: 1, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
};
const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/**
 * Keys of the top-level object of a JSON text, in order, duplicates included (JSON.parse keeps only
 * the last of duplicates). The text must already be valid JSON.
 */
function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (ch === '"') {
      const start = i;
      for (i++; json[i] !== '"'; i++) if (json[i] === '\\') i++;
      if (depth === 1) {
        let j = i + 1;
        while (/\s/.test(json[j] ?? '')) j++;
        if (json[j] === ':') keys.push(JSON.parse(json.slice(start, i + 1)) as string);
      }
    } else if (ch === '{' || ch === '[') depth++;
    else if (ch === '}' || ch === ']') depth--;
  }
  return keys;
}

const isIndex = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * Parses a safetensors buffer; F32 tensors are views into `bytes` when aligned (no copy). The header
 * is checked as the format's reference implementation does: UTF-8 JSON object, no duplicate names,
 * every tensor's dtype, shape and `[begin, end]` offsets consistent (byte size = dtype size x
 * elements), and the tensors tile the data exactly (no overlap, no gap, nothing past the end), so no
 * byte is ever read as two things or as header. Tensors of integer or boolean dtypes (buffers such as
 * `position_ids`) are validated and left out, reported to `onSkipped`.
 */
export function parseSafetensors(bytes: Uint8Array, file = '<buffer>', opts: { onSkipped?: (name: string, dtype: string) => void } = {}): Map<string, NamedTensor> {
  const fail = (msg: string): never => {
    throw new SafetensorsError(`${file}: ${msg}`);
  };
  if (bytes.byteLength < 8) fail(`too short to be safetensors (${bytes.byteLength} bytes, expected at least 8)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = view.getBigUint64(0, true);
  if (headerLen < 2n || headerLen > BigInt(bytes.byteLength - 8)) {
    fail(`header length ${headerLen} does not fit in a ${bytes.byteLength}-byte file`);
  }
  const base = 8 + Number(headerLen);
  let text = '';
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, base));
  } catch {
    fail('header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    fail(`header is not valid JSON (${(err as Error).message})`);
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) fail('header must be a JSON object of tensors');
  const seen = new Set<string>();
  for (const k of topLevelKeys(text)) {
    if (seen.has(k)) fail(`header names tensor '${k}' twice`);
    seen.add(k);
  }
  const dataLen = bytes.byteLength - base;
  const entries: { name: string; dtype: string; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (!info || typeof info !== 'object' || Array.isArray(info) || !Object.values(info).every((v) => typeof v === 'string')) {
        fail(`'__metadata__' must be an object of strings, got ${JSON.stringify(info)}`);
      }
      continue;
    }
    const t = info as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    if (!t || typeof t !== 'object' || Array.isArray(t)) fail(`tensor '${name}' must be an object { dtype, shape, data_offsets }`);
    const { dtype, shape, data_offsets: offsets } = t!;
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype)) fail(`tensor '${name}' has dtype ${JSON.stringify(dtype)}, expected one of ${Object.keys(DTYPE_BYTES).join(', ')}`);
    if (!Array.isArray(shape) || !shape.every(isIndex)) fail(`tensor '${name}' has shape ${JSON.stringify(shape)}, expected a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
      fail(`tensor '${name}' has data_offsets ${JSON.stringify(offsets)}, expected [begin, end] with non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end || end > dataLen) fail(`tensor '${name}' has data_offsets [${begin}, ${end}], expected 0 <= begin <= end <= ${dataLen} (the data's length)`);
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    const size = count * DTYPE_BYTES[dtype as string]!;
    if (end - begin !== size) fail(`tensor '${name}' has data_offsets [${begin}, ${end}] (${end - begin} bytes), expected ${size} bytes for shape [${shape}] of ${dtype}`);
    entries.push({ name, dtype: dtype as string, shape: shape as number[], begin, end });
  }
  // The tensors must tile the data: sorted by offset, each starts where the previous one ended.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of sorted) {
    if (e.begin < cursor) fail(`tensor '${e.name}' (bytes ${e.begin}..${e.end}) overlaps another tensor ending at ${cursor}`);
    if (e.begin > cursor) fail(`bytes ${cursor}..${e.begin} of the data belong to no tensor (before '${e.name}')`);
    cursor = e.end;
  }
  if (cursor !== dataLen) fail(`the data is ${dataLen} bytes, the tensors cover ${cursor}`);
  const out = new Map<string, NamedTensor>();
  for (const { name, dtype, shape, begin, end } of entries) {
    if (!FLOAT_DTYPES.has(dtype)) {
      opts.onSkipped?.(name, dtype);
      continue;
    }
    const count = shape.reduce((a, b) => a * b, 1);
    const start = bytes.byteOffset + base + begin;
    let data: Float32Array;
    if (dtype === 'F32') {
      if (start % 4 === 0) data = new Float32Array(bytes.buffer, start, count);
      else {
        // An unaligned header (other writers do not pad it): copy. (Buffer#slice is a view, not a copy.)
        data = new Float32Array(count);
        new Uint8Array(data.buffer).set(bytes.subarray(base + begin, base + end));
      }
    } else {
      data = new Float32Array(count);
      const dv = new DataView(bytes.buffer, start, end - begin);
      for (let i = 0; i < count; i++) {
        if (dtype === 'F16') data[i] = f16ToF32(dv.getUint16(2 * i, true));
        else if (dtype === 'BF16') data[i] = new Float32Array(new Uint32Array([dv.getUint16(2 * i, true) << 16]).buffer)[0]!;
        else data[i] = dv.getFloat64(8 * i, true);
      }
    }
    out.set(name, { shape, data });
  }
  return out;
}

export async function readSafetensors(file: string, opts: { onSkipped?: (name: string, dtype: string) => void } = {}): Promise<Map<string, NamedTensor>> {
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SafetensorsError(`${file}: cannot read the file (${code === 'ENOENT' ? 'not found' : code === 'EISDIR' ? 'a folder' : (err as Error).message})`);
  }
  return parseSafetensors(bytes, file, opts);
}

/** Serializes float32 tensors (sorted by name, as Hugging Face writes them). */
export function serializeSafetensors(tensors: Map<string, NamedTensor>, metadata: Record<string, string> = { format: 'pt' }): Uint8Array[] {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) throw new SafetensorsError(`tensor '${name}': shape [${t.shape}] holds ${count} values, data has ${t.data.length}`);
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + 4 * count] };
    offset += 4 * count;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so tensor data starts 8-byte aligned (readers can then view it without copying).
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true);
  const chunks: Uint8Array[] = [len, headerBytes];
  for (const name of names) {
    const d = tensors.get(name)!.data;
    chunks.push(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  }
  return chunks;
}

export async function writeSafetensors(file: string, tensors: Map<string, NamedTensor>): Promise<void> {
  await writeFileAtomic(file, serializeSafetensors(tensors));
}
