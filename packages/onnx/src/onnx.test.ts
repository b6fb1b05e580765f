import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { Dataset, loadBert, loadDataset, loadTokenizer, readExamples, tf, type Batch, type BertModel } from '@topiary/core';
import { testBackend } from '../../core/src/test-support/backend.js';
import { REPO } from '../../core/src/test-support/shared.js';
import { DataType, GraphBuilder, bertToOnnx, decodeModel, quantizeDynamic, writeOnnxFolder } from './index.js';
import { VARIANTS, variantModel } from './test-support/variants.js';

const tiny = path.join(REPO, 'examples/models/bert-tiny-wordnet-supersense');
const devFile = path.join(REPO, 'examples/data/dev.jsonl');

const feeds = (b: Batch) => {
  const t = (a: Int32Array) => new ort.Tensor('int64', BigInt64Array.from(a, (v) => BigInt(v)), [b.batchSize, b.seqLen]);
  return { input_ids: t(b.inputIds), attention_mask: t(b.attentionMask), token_type_ids: t(b.tokenTypeIds) };
};
const topiaryLogits = (model: BertModel, b: Batch) => tf.tidy(() => model.forward(b).logits!.dataSync() as Float32Array);
async function onnxLogits(session: ort.InferenceSession, b: Batch): Promise<Float32Array> {
  return (await session.run(feeds(b)))['logits']!.data as Float32Array;
}
const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), a.length === b.length ? 0 : Infinity);
const argmaxRows = (logits: Float32Array, k: number) =>
  Array.from({ length: logits.length / k }, (_, r) => {
    let best = 0;
    for (let j = 1; j < k; j++) if (logits[r * k + j]! > logits[r * k + best]!) best = j;
    return best;
  });

describe('ONNX export', () => {
  let base: BertModel;
  let single: Batch[];
  let pairs: Batch;
  let dev: Dataset;
  beforeAll(async () => {
    await testBackend();
    base = await loadBert(tiny);
    const tok = await loadTokenizer(tiny);
    dev = await loadDataset(devFile, tok, { labels: base.config.id2label, maxLength: 64 });
    // Evenly spaced: the split is sorted by label. Batches of 16 pad to different lengths.
    single = [...dev.evenlySpaced(48).batches(16)];
    // Sentence pairs (token type 1 on the second text), from examples far apart in the file.
    const raw = (await readExamples(devFile)).filter((_, i) => i % 997 === 0).slice(0, 8);
    pairs = [...Dataset.encode(raw.map((e, i) => ({ ...e, pair: raw[(i + 3) % raw.length]!.text })), tok, base.config.id2label, { maxLength: 64 }).batches(8)][0]!;
  });

  for (const kind of VARIANTS) {
    it(`${kind}: ONNX Runtime's logits equal Topiary's (max abs diff <= 1e-4), with the pruned shapes in the graph`, async () => {
      const source = base.clone();
      const model = variantModel(source, kind);
      source.dispose();
      const c = model.config;
      const before = tf.memory().numTensors;
      const { fp32 } = bertToOnnx(model);
      expect(tf.memory().numTensors).toBe(before);

      // The graph has each layer's real shapes: no attention where no head is left, no FFN where no neuron is.
      const graph = decodeModel(fp32)['graph'] as { node: { op_type: string; input: string[] }[]; initializer: { name: string; dims: number[] }[] };
      const dims = (name: string) => graph.initializer.find((t) => t.name === name)?.dims;
      expect(dims('bert.embeddings.word_embeddings.weight')).toEqual([c.vocabSize, c.hiddenSize]);
      for (let l = 0; l < c.numHiddenLayers; l++) {
        const p = `bert.encoder.layer.${l}.`;
        expect(dims(`${p}attention.self.query.weight`)).toEqual(c.layerHeads[l] ? [c.hiddenSize, c.layerHeads[l]! * c.attentionHeadSize] : undefined);
        expect(dims(`${p}intermediate.dense.weight`)).toEqual(c.layerIntermediate[l] ? [c.hiddenSize, c.layerIntermediate[l]] : undefined);
        expect(dims(`${p}attention.output.dense.bias`)).toEqual([c.hiddenSize]);
      }
      expect(graph.node.filter((n) => n.op_type === 'Softmax').length).toBe(c.layerHeads.filter((h) => h > 0).length);
      expect(graph.node.filter((n) => n.op_type === 'Erf').length).toBe(c.layerIntermediate.filter((i) => i > 0).length);
      if (kind === 'structured') expect([c.layerHeads[0], c.layerIntermediate[c.numHiddenLayers - 1]]).toEqual([0, 0]);
      if (kind === 'cofi') expect(c.hiddenSize).toBeLessThan(base.config.hiddenSize);
      if (kind === 'movement') expect(c.layerIntermediate.every((i) => i < base.config.intermediateSize)).toBe(true);
      if (kind === 'magnitude') {
        const q = model.param('bert.encoder.layer.0.attention.self.query.weight').dataSync();
        expect(q.filter((v) => v === 0).length / q.length).toBeGreaterThan(0.4);
      }

      const session = await ort.InferenceSession.create(fp32);
      for (const b of [...single, pairs]) {
        const expected = topiaryLogits(model, b);
        const got = await onnxLogits(session, b);
        expect(got.length).toBe(b.batchSize * model.numLabels);
        expect(maxAbsDiff(got, expected)).toBeLessThanOrEqual(1e-4);
      }
      await session.release();
      model.dispose();
    });
  }

  it('int8: a graph of standard integer ops whose dev accuracy is within 1 point of fp32', async () => {
    const { fp32, int8 } = bertToOnnx(base, { quantize: 'int8' });
    const q = decodeModel(int8!)['graph'] as { node: { op_type: string }[]; initializer: { name: string; data_type: number; dims: number[] }[] };
    const linears = 6 * base.config.numHiddenLayers + 2; // q, k, v, attention output, FFN in and out; pooler, classifier
    expect(q.node.filter((n) => n.op_type === 'MatMulInteger').length).toBe(linears);
    expect(q.node.filter((n) => n.op_type === 'DynamicQuantizeLinear').length).toBe(4 * base.config.numHiddenLayers + 2); // q/k/v share one
    expect(q.initializer.filter((t) => t.data_type === 3).length).toBe(2 * linears); // int8 weights and zero points
    // Word and token-type tables are uint8 with a DequantizeLinear after the lookup; no float table is left but positions.
    expect(q.node.filter((n) => n.op_type === 'DequantizeLinear').length).toBe(2);
    expect(q.initializer.filter((t) => t.data_type === 1 && t.dims.length === 2).map((t) => t.name)).toEqual(['bert.embeddings.position_embeddings.weight']);
    // Symmetric per output channel: scale = max |w| / 127 over the column, zero point 0, q * scale = w to half a step.
    const init = (name: string) => (q.initializer as unknown as { name: string; dims: number[]; raw_data: Uint8Array }[]).find((t) => t.name === name)!;
    for (const name of ['bert.encoder.layer.0.intermediate.dense.weight', 'classifier.weight']) {
      const w = base.param(name).dataSync();
      const [rows, cols] = base.param(name).shape as [number, number];
      const qt = init(`${name}_quantized`);
      const st = init(`${name}_scale`);
      expect([qt.dims, st.dims, init(`${name}_zero_point`).dims]).toEqual([[rows, cols], [cols], [cols]]);
      const qv = new Int8Array(new Uint8Array(qt.raw_data).buffer);
      const sv = new Float32Array(new Uint8Array(st.raw_data).buffer);
      expect(new Int8Array(new Uint8Array(init(`${name}_zero_point`).raw_data).buffer).every((z) => z === 0)).toBe(true);
      for (let j = 0; j < cols; j++) {
        let maxAbs = 0;
        let maxQ = 0;
        for (let i = 0; i < rows; i++) {
          maxAbs = Math.max(maxAbs, Math.abs(w[i * cols + j]!));
          maxQ = Math.max(maxQ, Math.abs(qv[i * cols + j]!));
          expect(Math.abs(qv[i * cols + j]! * sv[j]! - w[i * cols + j]!)).toBeLessThanOrEqual(sv[j]! * 0.5 + 1e-7);
        }
        expect(sv[j]).toBeCloseTo(maxAbs / 127, 6);
        expect(maxQ).toBe(127);
      }
    }
    // A fifth of the dev split, evenly spaced over its labels: the two runtimes see the same examples.
    const sample = dev.evenlySpaced(2000);
    const accuracy = async (bytes: Uint8Array) => {
      const s = await ort.InferenceSession.create(bytes);
      let correct = 0;
      for (const b of sample.batches(128)) argmaxRows(await onnxLogits(s, b), base.numLabels).forEach((p, i) => (correct += p === b.labels![i] ? 1 : 0));
      await s.release();
      return correct / sample.size;
    };
    const [a32, a8] = [await accuracy(fp32), await accuracy(int8!)];
    console.error(`int8 ONNX dev accuracy ${(100 * a8).toFixed(2)}% against fp32 ${(100 * a32).toFixed(2)}% (${sample.size} examples)`);
    expect(Math.abs(a32 - a8)).toBeLessThanOrEqual(0.01);
    // fp32 ONNX is Topiary's accuracy (the same function).
    expect(a32).toBeGreaterThan(1 / base.numLabels);
  });

  it('writes the folder transformers.js loads: config with labels and problem type, tokenizer class, onnx/, model card', async () => {
    const out = path.join(mkdtempSync(path.join(tmpdir(), 'topiary-onnx-')), 'model');
    const r = await writeOnnxFolder(base, out, { tokenizerFrom: tiny, quantize: 'int8', card: { method: 'structured', accuracy: 0.7, teacherAccuracy: 0.75, encoderSparsity: 0.5 } });
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx', 'onnx/model_quantized.onnx', 'README.md']) {
      expect(existsSync(path.join(out, f)), f).toBe(true);
      expect(r.files).toContain(f);
    }
    expect(existsSync(path.join(out, 'model.safetensors'))).toBe(false);
    const config = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(config).toMatchObject({ model_type: 'bert', problem_type: 'single_label_classification', architectures: ['BertForSequenceClassification'] });
    expect(Object.keys(config.id2label).length).toBe(base.numLabels);
    expect(config.label2id[base.config.id2label[3]!]).toBe(3);
    expect(JSON.parse(readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8')).tokenizer_class).toBe('BertTokenizer');
    const card = readFileSync(path.join(out, 'README.md'), 'utf8');
    expect(card).toContain('| method | structured |');
    expect(card).toContain('70.00%');
    expect(card).toContain(r.params.toLocaleString('en-US'));
  });
});

describe('quantizeDynamic', () => {
  it('quantizes a weight read by several MatMuls once, and keeps its float values while a float node still reads them', async () => {
    const g = new GraphBuilder('shared');
    const x = g.input('x', DataType.FLOAT, [1, 4]);
    const values = Float32Array.from({ length: 16 }, (_, i) => (i % 5) / 4 - 0.5);
    const w = g.parameter('w', [4, 4], values);
    expect(g.parameter('w_again', [4, 4], values.slice())).toBe(w); // same values: the same initializer
    const twice = g.op('MatMul', [g.op('MatMul', [x, w], 'y1'), w], 'y2');
    g.nodes.push({ opType: 'Identity', name: 'Identity:y', inputs: [twice], outputs: ['y'], attributes: {} });
    g.nodes.push({ opType: 'Identity', name: 'Identity:w_out', inputs: [w], outputs: ['w_out'], attributes: {} });
    g.output('y', DataType.FLOAT, [1, 4]);
    g.output('w_out', DataType.FLOAT, [4, 4]);
    const report = quantizeDynamic(g);
    expect([report.matmuls, report.weights]).toEqual([2, 1]);
    const s = await ort.InferenceSession.create(g.encode({ opset: 17, producerVersion: 'test' }));
    const out = await s.run({ x: new ort.Tensor('float32', Float32Array.of(1, -1, 0.5, 2), [1, 4]) });
    expect(Array.from(out['w_out']!.data as Float32Array)).toEqual(Array.from(values));
    await s.release();
  });
});
