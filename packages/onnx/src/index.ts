/**
 * @topiary/onnx: ONNX export of (compacted) Topiary models with their real per-layer shapes, int8
 * dynamic quantization, and the folder transformers.js and ONNX Runtime load.
 */
export { OPSET, bertClassificationHead, bertEmbeddings, bertGraph, bertLayer, linear, wordEmbeddings } from './bert.js';
export type { BertGraphOptions, EncoderInputs } from './bert.js';
export { GraphBuilder } from './graph.js';
export type { AttributeValue, GraphNode, Initializer, ValueInfo } from './graph.js';
export { quantizeDynamic } from './quantize.js';
export type { QuantizeOptions, QuantizeReport } from './quantize.js';
export { bertToOnnx, topiaryVersion, writeOnnxFolder } from './folder.js';
export type { ModelCard, OnnxFolderOptions, OnnxFolderReport } from './folder.js';
export { AttributeType, DataType, decodeModel, encodeModel } from './proto.js';
export type { DataTypeId, ModelObject } from './proto.js';
