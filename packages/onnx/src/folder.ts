import { promises as fs, existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TOKENIZER_FILES, exportTensors, familyOf, serializeSafetensors, writeDirAtomic, writeFileAtomic, type BertModel, type NamedTensor } from '@topiary/core';
import { OPSET, bertGraph, type BertGraphOptions } from './bert.js';
import { quantizeDynamic, type QuantizeOptions } from './quantize.js';

/** What the model card says about how the model was made (from a run's report.json when known). */
export interface ModelCard {
  /** Pruning method id (`structured`, `cofi`, ...). */
  method?: string;
  /** Dev accuracy of the model before pruning (the teacher) and of the exported model. */
  teacherAccuracy?: number | null;
  accuracy?: number | null;
  encoderSparsity?: number;
  totalSparsity?: number;
  /** Parameters of the unpruned model. */
  params?: number;
  /** Where the model came from (a run or checkpoint folder). */
  source?: string;
}

export interface OnnxFolderOptions {
  /** Folder to copy `tokenizer.json`, `tokenizer_config.json`, `vocab.txt` from. */
  tokenizerFrom?: string;
  /** Also write `onnx/model_quantized.onnx` (int8 dynamic quantization). */
  quantize?: 'int8' | undefined;
  quantizeOptions?: QuantizeOptions;
  /** Also write `model.safetensors` (Topiary and Hugging Face load the same folder). */
  safetensors?: boolean;
  card?: ModelCard;
  /** Write into an existing folder Topiary did not write (only Topiary's own entries are replaced). */
  force?: boolean;
}

export interface OnnxFolderReport {
  dir: string;
  files: string[];
  params: number;
  onnxBytes: number;
  quantizedBytes?: number;
}

/** The version of Topiary that wrote a model (this package's). */
export function topiaryVersion(): string {
  const pkg = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'package.json');
  return JSON.parse(readFileSync(pkg, 'utf8')).version as string;
}

/**
 * The model as its family writes it (`model_type`, `architectures`, its own field and tensor names):
 * config.json for transformers.js, and the tensors for a `model.safetensors` beside the graph.
 */
function familyExport(model: BertModel): { config: Record<string, unknown>; tensors: Map<string, NamedTensor> } {
  const family = familyOf(model);
  const { tensors, config } = family.exportTensors(exportTensors(model), model.config);
  return { config: family.serializeConfig(config), tensors };
}

/** `RobertaForSequenceClassification` -> `Roberta` (the class-name prefix of a family). */
const classPrefix = (architecture: string) => architecture.replace(/(For[A-Za-z]+|Model)$/, '');

/** The ONNX bytes of a (compacted) classification model of any family, fp32 and, when asked, int8. */
export function bertToOnnx(model: BertModel, opts: { quantize?: 'int8' | undefined; quantizeOptions?: QuantizeOptions } & BertGraphOptions = {}): { fp32: Uint8Array; int8?: Uint8Array } {
  const meta = { opset: OPSET, producerVersion: topiaryVersion(), docString: `sequence classifier (model_type ${model.config.modelType}) exported by Topiary with its pruned per-layer shapes` };
  const g = bertGraph(model, opts.lastHiddenState ? { lastHiddenState: true } : {});
  const fp32 = g.encode(meta);
  if (opts.quantize !== 'int8') return { fp32 };
  quantizeDynamic(g, opts.quantizeOptions);
  return { fp32, int8: g.encode({ ...meta, docString: `${meta.docString}; int8 dynamic quantization (per-channel symmetric weights)` }) };
}

const pct = (x: number | null | undefined) => (x === null || x === undefined ? 'n/a' : `${(100 * x).toFixed(2)}%`);

function modelCard(model: BertModel, params: number, opts: OnnxFolderOptions, files: string[], architecture: string): string {
  const c = model.config;
  const card = opts.card ?? {};
  const encoder = c.layerHeads.map((h, l) => `| ${l} | ${h} | ${c.layerIntermediate[l]} |`).join('\n');
  const retained = card.accuracy != null && card.teacherAccuracy ? ` (${((100 * card.accuracy) / card.teacherAccuracy).toFixed(1)}% kept)` : '';
  return `---
library_name: transformers.js
pipeline_tag: text-classification
tags: [topiary, pruned, onnx, ${c.modelType}]
---

# Pruned ${classPrefix(architecture)} for sequence classification (ONNX)

Made with [Topiary](https://www.npmjs.com/package/@topiary/cli) ${topiaryVersion()}${card.source ? ` from \`${card.source}\`` : ''}. The graph has the
pruned model's real shapes: removed heads, FFN neurons and hidden dimensions are gone, so it is smaller
and faster, not only sparse.

| | |
| --- | --- |
| method | ${card.method ?? 'n/a'} |
| encoder sparsity | ${pct(card.encoderSparsity)} |
| total sparsity | ${pct(card.totalSparsity)} |
| dev accuracy before pruning | ${pct(card.teacherAccuracy)} |
| dev accuracy after pruning | ${pct(card.accuracy)}${retained} |
| parameters | ${params.toLocaleString('en-US')}${card.params ? ` (from ${card.params.toLocaleString('en-US')})` : ''} |
| hidden size | ${c.hiddenSize} (head size ${c.attentionHeadSize}) |
| labels | ${c.id2label.length} |

Accuracy is Topiary's measurement of the float32 model${files.includes('onnx/model_quantized.onnx') ? '; `onnx/model_quantized.onnx` is its int8 dynamic quantization (per-channel symmetric int8 weights of every linear layer, activations quantized at run time)' : ''}.

| layer | heads | FFN neurons |
| --- | --- | --- |
${encoder}

## Use

\`\`\`js
import { env, pipeline } from '@huggingface/transformers';
env.allowRemoteModels = false;
env.localModelPath = '<folder containing this one>';
const classify = await pipeline('text-classification', '<this folder name>'${files.includes('onnx/model_quantized.onnx') ? ", { dtype: 'fp32' } /* or 'q8' */" : ''});
console.log(await classify('some text'));
\`\`\`

Files: ${files.map((f) => `\`${f}\``).join(', ')}.
`;
}

/**
 * Writes the folder transformers.js loads offline: `config.json` (with `id2label`, `label2id`,
 * `problem_type`), the tokenizer files with `tokenizer_config.json` naming the tokenizer class,
 * `onnx/model.onnx` (and `onnx/model_quantized.onnx`), and a model card `README.md`. Filled under a
 * temporary name and renamed into place.
 */
export async function writeOnnxFolder(model: BertModel, dir: string, opts: OnnxFolderOptions = {}): Promise<OnnxFolderReport> {
  const { fp32, int8 } = bertToOnnx(model, { quantize: opts.quantize, ...(opts.quantizeOptions ? { quantizeOptions: opts.quantizeOptions } : {}) });
  const params = [...model.params.values()].reduce((a, v) => a + v.size, 0);
  const exported = familyExport(model);
  const architecture = String((exported.config['architectures'] as string[] | undefined)?.[0] ?? 'BertForSequenceClassification');
  const files = ['config.json'];
  await writeDirAtomic(dir, async (tmp) => {
    // The family's own config (model_type picks transformers.js's model class).
    const config = { ...exported.config, problem_type: 'single_label_classification' };
    await fs.writeFile(path.join(tmp, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    if (opts.tokenizerFrom) {
      for (const f of TOKENIZER_FILES) {
        const src = path.join(opts.tokenizerFrom, f);
        if (existsSync(src) && f !== 'tokenizer_config.json') {
          await fs.copyFile(src, path.join(tmp, f));
          files.push(f);
        }
      }
      // transformers.js picks the tokenizer class from tokenizer_config.json.
      const cfgFile = path.join(opts.tokenizerFrom, 'tokenizer_config.json');
      const cfg: Record<string, unknown> = existsSync(cfgFile) ? JSON.parse(await fs.readFile(cfgFile, 'utf8')) : {};
      cfg['tokenizer_class'] ??= `${classPrefix(architecture)}Tokenizer`;
      if (typeof cfg['model_max_length'] !== 'number' || (cfg['model_max_length'] as number) > model.config.maxPositionEmbeddings) cfg['model_max_length'] = model.config.maxPositionEmbeddings;
      await fs.writeFile(path.join(tmp, 'tokenizer_config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
      files.push('tokenizer_config.json');
    }
    await fs.mkdir(path.join(tmp, 'onnx'));
    await writeFileAtomic(path.join(tmp, 'onnx', 'model.onnx'), fp32);
    files.push('onnx/model.onnx');
    if (int8) {
      await writeFileAtomic(path.join(tmp, 'onnx', 'model_quantized.onnx'), int8);
      files.push('onnx/model_quantized.onnx');
    }
    if (opts.safetensors) {
      await writeFileAtomic(path.join(tmp, 'model.safetensors'), serializeSafetensors(exported.tensors));
      files.push('model.safetensors');
    }
    files.push('README.md');
    await fs.writeFile(path.join(tmp, 'README.md'), modelCard(model, params, opts, files, architecture));
  }, { kind: 'model', ...(opts.force ? { force: true } : {}) });
  return { dir, files, params, onnxBytes: fp32.byteLength, ...(int8 ? { quantizedBytes: int8.byteLength } : {}) };
}
