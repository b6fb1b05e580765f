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

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/** Parses a safetensors buffer; F32 tensors are views into `bytes` when aligned (no copy). */
export function parseSafetensors(bytes: Uint8Array, file = '<buffer>'): Map<string, NamedTensor> {
  if (bytes.byteLength < 8) throw new SafetensorsError(`${file}: too short to be safetensors (${bytes.byteLength} bytes)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen <= 0 || 8 + headerLen > bytes.byteLength) {
    throw new SafetensorsError(`${file}: header length ${headerLen} does not fit in a ${bytes.byteLength}-byte file`);
  }
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  } catch (err) {
    throw new SafetensorsError(`${file}: header is not valid JSON (${(err as Error).message})`);
  }
  const base = 8 + headerLen;
  const out = new Map<string, NamedTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: offsets } = info;
    if (!FLOAT_DTYPES.has(dtype)) {
      throw new SafetensorsError(`${file}: tensor '${name}' has dtype ${dtype}, expected one of F32, F16, BF16, F64`);
    }
    const count = shape.reduce((a, b) => a * b, 1);
    const [begin, end] = offsets;
    const width = dtype === 'F32' ? 4 : dtype === 'F64' ? 8 : 2;
    if (end - begin !== count * width || base + end > bytes.byteLength) {
      throw new SafetensorsError(`${file}: tensor '${name}' offsets [${begin}, ${end}] do not match shape [${shape}] of ${dtype}`);
    }
    const start = bytes.byteOffset + base + begin;
    let data: Float32Array;
    if (dtype === 'F32') {
      data = start % 4 === 0
        ? new Float32Array(bytes.buffer, start, count)
        : new Float32Array(bytes.slice(base + begin, base + end).buffer);
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

export async function readSafetensors(file: string): Promise<Map<string, NamedTensor>> {
  const bytes = await fs.readFile(file);
  return parseSafetensors(bytes, file);
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
