import { DataType } from './proto.js';
import type { GraphBuilder, GraphNode } from './graph.js';

export interface QuantizeOptions {
  /**
   * 7-bit weights ([-63, 63]), as `quantize_dynamic(reduce_range=True)`: avoids the int16 saturation of
   * u8 x s8 products on x86 CPUs without VNNI, at some accuracy. Default false.
   */
  reduceRange?: boolean;
}

export interface QuantizeReport {
  /** Linear MatMuls rewritten to int8. */
  matmuls: number;
  /** Embedding lookups (Gather from a table) rewritten to a uint8 table and DequantizeLinear. */
  gathers: number;
  /** Weights stored as int8 instead of float32. */
  weights: number;
}

/**
 * Dynamic int8 quantization in place, laid out as ONNX Runtime's `quantize_dynamic` writes it
 * (per_channel=True, weight_type=QInt8): every MatMul whose second input is a 2-D float initializer
 * (the linear layers) gets symmetric per-output-channel int8 weights (zero point 0), and its input is
 * quantized at run time to uint8 by DynamicQuantizeLinear (one per input value, shared by q/k/v):
 *
 *   DynamicQuantizeLinear(x) -> (xq, xs, xz); MatMulInteger(xq, Wq, xz, Wz) -> Cast float -> Mul(xs * Ws)
 *
 * All standard ONNX ops (opset 10/11); ONNX Runtime fuses them into its MatMulIntegerToFloat kernel.
 * Embedding tables that a Gather reads are stored uint8 with one asymmetric scale and zero point per
 * table, and the gathered rows go through DequantizeLinear, as `quantize_dynamic` does for Gather.
 * Attention's activation-activation products stay float32, as do LayerNorm, biases and the position
 * table (a Slice, not a Gather).
 */
export function quantizeDynamic(g: GraphBuilder, opts: QuantizeOptions = {}): QuantizeReport {
  const qmax = opts.reduceRange ? 63 : 127;
  const nodes: GraphNode[] = [];
  const dynamic = new Map<string, [string, string, string]>();
  const quantizedWeights = new Map<string, [string, string, string]>();
  let matmuls = 0;
  const add = (opType: string, inputs: string[], output: string, attributes: GraphNode['attributes'] = {}, outputs?: string[]) => {
    const outs = outputs ?? [g.fresh(output)];
    nodes.push({ opType, name: g.fresh(`${opType}:${outs[0]}`), inputs, outputs: outs, attributes });
    return outs;
  };
  const weightOf = (name: string): [string, string, string] => {
    const hit = quantizedWeights.get(name);
    if (hit) return hit;
    const t = g.initializers.get(name)!;
    const [rows, cols] = t.dims as [number, number];
    const w = g.floatValues(name);
    const scale = new Float32Array(cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) scale[c] = Math.max(scale[c]!, Math.abs(w[r * cols + c]!));
    // An all-zero column (a pruned output) gets scale 1, as ONNX Runtime does for an empty range.
    for (let c = 0; c < cols; c++) scale[c] = scale[c]! > 0 ? scale[c]! / qmax : 1;
    const q = new Int8Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) q[r * cols + c] = Math.max(-qmax, Math.min(qmax, Math.round(w[r * cols + c]! / scale[c]!)));
    }
    const out: [string, string, string] = [
      g.initializer(`${name}_quantized`, DataType.INT8, [rows, cols], q),
      g.float(`${name}_scale`, [cols], scale),
      g.initializer(`${name}_zero_point`, DataType.INT8, [cols], new Int8Array(cols)),
    ];
    quantizedWeights.set(name, out);
    return out;
  };
  let gathers = 0;
  // A table read by several Gathers (or a weight by several MatMuls: ALBERT's shared layer) is quantized once.
  const quantizedTables = new Map<string, [string, string, string]>();
  const tableOf = (name: string): [string, string, string] => {
    const hit = quantizedTables.get(name);
    if (hit) return hit;
    const table = g.initializers.get(name)!;
    const w = g.floatValues(name);
    // uint8 asymmetric over [min(0, w), max(0, w)], so 0 is exact.
    let lo = 0;
    let hi = 0;
    for (const v of w) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
    const scale = hi > lo ? (hi - lo) / 255 : 1;
    const zero = Math.max(0, Math.min(255, Math.round(-lo / scale)));
    const q = Uint8Array.from(w, (v) => Math.max(0, Math.min(255, Math.round(v / scale) + zero)));
    const out: [string, string, string] = [
      g.initializer(`${name}_quantized`, DataType.UINT8, table.dims, q),
      g.float(`${name}_scale`, [], [scale]),
      g.initializer(`${name}_zero_point`, DataType.UINT8, [], Uint8Array.of(zero)),
    ];
    quantizedTables.set(name, out);
    return out;
  };
  const isFloat2d = (name: string) => {
    const t = g.initializers.get(name);
    return t !== undefined && t.dataType === DataType.FLOAT && t.dims.length === 2;
  };
  for (const n of g.nodes) {
    const tableName = n.inputs[0]!;
    if (n.opType === 'Gather' && !quantizedWeights.has(tableName) && (quantizedTables.has(tableName) || isFloat2d(tableName))) {
      gathers++;
      const [qt, scale, zero] = tableOf(tableName);
      const rows = add('Gather', [qt, ...n.inputs.slice(1)], `${n.outputs[0]}_quantized`, n.attributes)[0]!;
      add('DequantizeLinear', [rows, scale, zero], '', {}, [n.outputs[0]!]);
      continue;
    }
    const weightName = n.inputs[1]!;
    if (n.opType !== 'MatMul' || quantizedTables.has(weightName) || !(quantizedWeights.has(weightName) || isFloat2d(weightName))) {
      nodes.push(n);
      continue;
    }
    matmuls++;
    const x = n.inputs[0]!;
    let dq = dynamic.get(x);
    if (!dq) {
      dq = add('DynamicQuantizeLinear', [x], '', {}, [g.fresh(`${x}_quantized`), g.fresh(`${x}_scale`), g.fresh(`${x}_zero_point`)]) as [string, string, string];
      dynamic.set(x, dq);
    }
    const [wq, ws, wz] = weightOf(weightName);
    const int = add('MatMulInteger', [dq[0], wq, dq[2], wz], `${n.outputs[0]}_int32`)[0]!;
    const f = add('Cast', [int], `${n.outputs[0]}_cast`, { to: { int: DataType.FLOAT } })[0]!;
    const scale = add('Mul', [dq[1], ws], `${n.outputs[0]}_scale`)[0]!;
    add('Mul', [f, scale], '', {}, [n.outputs[0]!]);
  }
  g.nodes.splice(0, g.nodes.length, ...nodes);
  // The float originals go once nothing reads them (an initializer may also feed a node left in float).
  const read = new Set(nodes.flatMap((n) => n.inputs));
  for (const name of [...quantizedWeights.keys(), ...quantizedTables.keys()]) if (!read.has(name)) g.initializers.delete(name);
  return { matmuls, gathers, weights: quantizedWeights.size };
}
