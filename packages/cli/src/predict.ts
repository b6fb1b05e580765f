import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { Command, Option } from 'commander';
import { DEFAULT_TRAINING, Dataset, loadBert, loadTokenizer, readConfig, readExamples, tf, type Batch } from '@topiary/core';
import { UsageError } from './config.js';

export const RUNTIMES = ['auto', 'tfjs', 'onnx'] as const;
type Runtime = (typeof RUNTIMES)[number];

export interface Prediction {
  index: number;
  label: string;
  probabilities: number[];
  logits: number[];
}

interface PredictOptions {
  data: string;
  runtime: Runtime;
  quantized: boolean;
  batchSize: number;
  maxLength: number;
  textField: string;
  pairField?: string;
  limit?: number;
  threads?: number;
}

/** Logits of one batch, `[batch * labels]` row-major. */
type Runner = { run(b: Batch): Promise<Float32Array>; close(): Promise<void> };

/** The runtime a folder is for: tfjs when it has `model.safetensors`, ONNX Runtime when it has `onnx/model.onnx`. */
function pickRuntime(dir: string, asked: Runtime, quantized: boolean): 'tfjs' | 'onnx' {
  const hasSafetensors = existsSync(path.join(dir, 'model.safetensors'));
  const hasOnnx = existsSync(path.join(dir, 'onnx', 'model.onnx'));
  const runtime = asked !== 'auto' ? asked : quantized || !hasSafetensors ? 'onnx' : 'tfjs';
  if (runtime === 'tfjs' && !hasSafetensors) throw new UsageError(`${dir}: no model.safetensors for --runtime tfjs (found ${hasOnnx ? 'onnx/model.onnx: use --runtime onnx' : 'neither it nor onnx/model.onnx'})`);
  if (runtime === 'onnx' && !hasOnnx) throw new UsageError(`${dir}: no onnx/model.onnx (write one with 'topiary export ... --format onnx')`);
  if (quantized && runtime === 'tfjs') throw new UsageError(`--quantized runs onnx/model_quantized.onnx: use --runtime onnx`);
  return runtime;
}

async function tfjsRunner(dir: string): Promise<Runner> {
  const model = await loadBert(dir);
  if (!model.hasClassifier) throw new UsageError(`${dir}: the model has no classification head (config 'architectures' is ${model.config.architecture})`);
  return {
    run: async (b) => tf.tidy(() => model.forward(b).logits!.dataSync() as Float32Array),
    close: async () => model.dispose(),
  };
}

async function onnxRunner(dir: string, quantized: boolean, threads?: number): Promise<Runner> {
  const file = path.join(dir, 'onnx', quantized ? 'model_quantized.onnx' : 'model.onnx');
  if (!existsSync(file)) throw new UsageError(`${file}: not found${quantized ? " (export with '--quantize int8')" : ''}`);
  let ort: typeof import('onnxruntime-node');
  try {
    ort = await import('onnxruntime-node');
  } catch {
    throw new UsageError(`--runtime onnx needs the optional package onnxruntime-node: npm install onnxruntime-node`);
  }
  const session = await ort.InferenceSession.create(file, threads ? { intraOpNumThreads: threads } : {});
  const wants = new Set(session.inputNames);
  return {
    async run(b) {
      const t = (a: Int32Array) => new ort.Tensor('int64', BigInt64Array.from(a, (v) => BigInt(v)), [b.batchSize, b.seqLen]);
      const feeds: Record<string, import('onnxruntime-node').Tensor> = { input_ids: t(b.inputIds), attention_mask: t(b.attentionMask) };
      if (wants.has('token_type_ids')) feeds['token_type_ids'] = t(b.tokenTypeIds);
      const out = (await session.run(feeds))['logits'];
      if (!out) throw new Error(`${file}: the graph has no output named 'logits' (outputs: ${session.outputNames.join(', ')})`);
      return out.data as Float32Array;
    },
    close: () => session.release(),
  };
}

/** Per-example labels, probabilities (softmax of the logits) and logits, in the file's order. */
export async function predict(dir: string, o: PredictOptions, onPrediction: (p: Prediction) => void): Promise<{ runtime: string; examples: number; accuracy?: number }> {
  const config = await readConfig(dir);
  const labels = config.id2label;
  if (labels.length === 0) throw new UsageError(`${path.join(dir, 'config.json')}: field 'id2label' is missing (not a classification model)`);
  const runtime = pickRuntime(dir, o.runtime, o.quantized);
  const tok = await loadTokenizer(dir);
  const raw = await readExamples(o.data, { textField: o.textField, unlabelled: true, ...(o.pairField ? { pairField: o.pairField } : {}), ...(o.limit ? { limit: o.limit } : {}) });
  const gold = raw.map((e) => (e.label === undefined ? undefined : labels.indexOf(e.label)));
  // Labels in the file are only compared with, never required to be the model's.
  const data = Dataset.encode(raw.map(({ label: _label, ...e }) => e), tok, labels, { maxLength: o.maxLength, file: o.data });
  const runner = runtime === 'tfjs' ? await tfjsRunner(dir) : await onnxRunner(dir, o.quantized, o.threads);
  const K = labels.length;
  let index = 0;
  let correct = 0;
  try {
    for (const b of data.batches(o.batchSize)) {
      const logits = await runner.run(b);
      for (let r = 0; r < b.batchSize; r++, index++) {
        const row = Array.from(logits.subarray(r * K, (r + 1) * K));
        const max = Math.max(...row);
        const exp = row.map((x) => Math.exp(x - max));
        const sum = exp.reduce((a, v) => a + v, 0);
        const best = row.indexOf(max);
        if (gold[index] === best) correct++;
        onPrediction({ index, label: labels[best]!, probabilities: exp.map((v) => v / sum), logits: row });
      }
    }
  } finally {
    await runner.close();
  }
  const labelled = gold.every((g) => g !== undefined);
  return { runtime: runtime === 'onnx' ? `onnxruntime-node${o.quantized ? ' (int8)' : ''}` : 'tfjs', examples: index, ...(labelled && index ? { accuracy: correct / index } : {}) };
}

const positive = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${name} must be a positive integer, got '${v}'`);
  return n;
};

/** `topiary predict <model> --data FILE [--json]`. */
export function registerPredict(program: Command, globals: () => { json: boolean }, backend: () => Promise<unknown>): void {
  program
    .command('predict <model>')
    .description('labels, probabilities and logits per example, from a Topiary folder (tfjs) or an exported ONNX folder (onnxruntime-node)')
    .requiredOption('--data <file>', 'JSONL/CSV/TSV examples (labels optional)')
    .addOption(new Option('--runtime <name>', 'tfjs for model.safetensors, onnx for onnx/model.onnx; auto: tfjs when the folder has safetensors').choices(RUNTIMES).default('auto'))
    .option('--quantized', 'run onnx/model_quantized.onnx (int8)', false)
    .option('--limit <n>', 'first N examples', positive('--limit'))
    .option('--batch-size <n>', 'batch size', positive('--batch-size'), 64)
    .option('--max-length <n>', 'truncate to N tokens', positive('--max-length'), DEFAULT_TRAINING.maxLength)
    .option('--text-field <name>', 'text field/column', 'text')
    .option('--pair-field <name>', 'second text field/column (sentence pairs)')
    .option('--threads <n>', 'ONNX Runtime intra-op threads (default: its own)', positive('--threads'))
    .action(async (dir: string, o: PredictOptions) => {
      const json = globals().json;
      if (o.runtime !== 'onnx' && !o.quantized) await backend();
      const started = Date.now();
      const r = await predict(dir, o, (p) => {
        // --json: one object per example on stdout and nothing else.
        process.stdout.write(json ? `${JSON.stringify(p)}\n` : `${p.index}\t${p.label}\t${p.probabilities[p.logits.indexOf(Math.max(...p.logits))]!.toFixed(4)}\n`);
      });
      const seconds = (Date.now() - started) / 1000;
      const summary = `${r.examples} examples with ${r.runtime} in ${seconds.toFixed(1)} s${r.accuracy !== undefined ? `; accuracy ${(100 * r.accuracy).toFixed(2)}% against the file's labels` : ''}`;
      process.stderr.write(`${summary}\n`);
    });
}
