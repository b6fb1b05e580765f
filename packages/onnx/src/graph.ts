import { AttributeType, DataType, encodeModel, type DataTypeId, type ModelObject } from './proto.js';

/** A dense initializer: ONNX element type, dims and the little-endian bytes of its values. */
export interface Initializer {
  name: string;
  dataType: DataTypeId;
  dims: number[];
  raw: Uint8Array;
}

export type AttributeValue = number | number[] | string | { int: number } | { ints: number[] };

export interface GraphNode {
  opType: string;
  name: string;
  inputs: string[];
  outputs: string[];
  attributes: Record<string, AttributeValue>;
}

/** A graph input or output: element type and dims (a string is a named dynamic axis). */
export interface ValueInfo {
  name: string;
  elemType: DataTypeId;
  shape: (number | string)[];
}

const bytesOf = (a: Float32Array | BigInt64Array | Int8Array | Uint8Array | Int32Array): Uint8Array =>
  new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  // Whole words where both are aligned (initializer copies are), bytes otherwise; most differ at once.
  if (a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0 && a.byteLength % 4 === 0) {
    const x = new Uint32Array(a.buffer, a.byteOffset, a.byteLength / 4);
    const y = new Uint32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
    return true;
  }
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * An ONNX graph under construction: nodes in topological order, initializers by name. Values get
 * unique names from a prefix (`fresh`), so per-layer helpers need no bookkeeping. The graph stays a
 * plain structure until `toModel`, so passes such as dynamic quantization rewrite it before encoding.
 */
export class GraphBuilder {
  readonly nodes: GraphNode[] = [];
  readonly initializers = new Map<string, Initializer>();
  readonly inputs: ValueInfo[] = [];
  readonly outputs: ValueInfo[] = [];
  private used = new Set<string>();
  /** Parameter initializers by name, and by dims for finding a parameter already written with the same values. */
  private params = new Map<string, string>();
  private paramsByDims = new Map<string, string[]>();

  constructor(public name = 'topiary') {}

  /** A value name not used yet, from `prefix` (Hugging Face's parameter path makes graphs readable). */
  fresh(prefix: string): string {
    let n = prefix;
    for (let i = 1; this.used.has(n); i++) n = `${prefix}_${i}`;
    this.used.add(n);
    return n;
  }

  input(name: string, elemType: DataTypeId, shape: (number | string)[]): string {
    this.used.add(name);
    this.inputs.push({ name, elemType, shape });
    return name;
  }

  output(name: string, elemType: DataTypeId, shape: (number | string)[]): void {
    this.outputs.push({ name, elemType, shape });
  }

  initializer(name: string, dataType: DataTypeId, dims: number[], values: Float32Array | BigInt64Array | Int8Array | Uint8Array | Int32Array): string {
    const n = this.fresh(name);
    const size = dims.reduce((a, b) => a * b, 1);
    if (values.length !== size) throw new Error(`initializer '${n}': ${values.length} values for dims [${dims.join(', ')}]`);
    // A copy: the caller's array may be a view of a tfjs buffer that is freed later.
    this.initializers.set(n, { name: n, dataType, dims, raw: bytesOf(values).slice() });
    return n;
  }

  /**
   * A model parameter as a float initializer, written once: asked again by name, or with the same dims
   * and the same values as one already written (ALBERT's shared layer, unshared into one copy per use
   * at load), it returns that initializer, so shared weights are stored once and read by every use.
   */
  parameter(name: string, dims: number[], values: Float32Array): string {
    const known = this.params.get(name);
    if (known) return known;
    const key = dims.join(',');
    const bytes = bytesOf(values);
    const same = (this.paramsByDims.get(key) ?? []).find((other) => equalBytes(this.initializers.get(other)!.raw, bytes));
    const n = same ?? this.float(name, dims, values);
    if (!same) this.paramsByDims.set(key, [...(this.paramsByDims.get(key) ?? []), n]);
    this.params.set(name, n);
    return n;
  }

  float(name: string, dims: number[], values: Float32Array | number[]): string {
    return this.initializer(name, DataType.FLOAT, dims, values instanceof Float32Array ? values : Float32Array.from(values));
  }

  int64(name: string, values: number[], dims: number[] = [values.length]): string {
    return this.initializer(name, DataType.INT64, dims, BigInt64Array.from(values.map(BigInt)));
  }

  /** Appends a node; returns its output names (`outputs` are prefixes made unique). */
  node(opType: string, inputs: string[], outputs: string[] | string, attributes: Record<string, AttributeValue> = {}): string[] {
    const outs = (Array.isArray(outputs) ? outputs : [outputs]).map((o) => this.fresh(o));
    this.nodes.push({ opType, name: this.fresh(`${opType}:${outs[0]}`), inputs, outputs: outs, attributes });
    return outs;
  }

  /** `node` with a single output. */
  op(opType: string, inputs: string[], output: string, attributes: Record<string, AttributeValue> = {}): string {
    return this.node(opType, inputs, output, attributes)[0]!;
  }

  /** The ModelProto object (see `encodeModel`). */
  toModel(meta: { opset: number; producerVersion: string; docString?: string; metadata?: Record<string, string> }): ModelObject {
    const valueInfo = (v: ValueInfo) => ({
      name: v.name,
      type: { tensor_type: { elem_type: v.elemType, shape: { dim: v.shape.map((d) => (typeof d === 'string' ? { dim_param: d } : { dim_value: d })) } } },
    });
    const attribute = (name: string, v: AttributeValue) => {
      if (typeof v === 'string') return { name, type: AttributeType.STRING, s: new TextEncoder().encode(v) };
      if (typeof v === 'number') return { name, type: AttributeType.FLOAT, f: v };
      if (Array.isArray(v)) return { name, type: AttributeType.FLOATS, floats: v };
      if ('int' in v) return { name, type: AttributeType.INT, i: v.int };
      return { name, type: AttributeType.INTS, ints: v.ints };
    };
    return {
      // IR version 8 goes with opset 17 (ONNX 1.12); readers accept it with any later opset too.
      ir_version: 8,
      opset_import: [{ domain: '', version: meta.opset }],
      producer_name: 'topiary',
      producer_version: meta.producerVersion,
      ...(meta.docString ? { doc_string: meta.docString } : {}),
      graph: {
        name: this.name,
        node: this.nodes.map((n) => ({
          name: n.name,
          op_type: n.opType,
          input: n.inputs,
          output: n.outputs,
          attribute: Object.entries(n.attributes).map(([k, v]) => attribute(k, v)),
        })),
        initializer: [...this.initializers.values()].map((t) => ({ name: t.name, data_type: t.dataType, dims: t.dims, raw_data: t.raw })),
        input: this.inputs.map(valueInfo),
        output: this.outputs.map(valueInfo),
      },
      metadata_props: Object.entries(meta.metadata ?? {}).map(([key, value]) => ({ key, value })),
    };
  }

  encode(meta: Parameters<GraphBuilder['toModel']>[0]): Uint8Array {
    return encodeModel(this.toModel(meta));
  }

  /** Float32 values of an initializer (for passes over the graph). */
  floatValues(name: string): Float32Array {
    const t = this.initializers.get(name);
    if (!t || t.dataType !== DataType.FLOAT) throw new Error(`graph has no float initializer '${name}'`);
    return new Float32Array(t.raw.buffer, t.raw.byteOffset, t.raw.byteLength / 4);
  }
}
