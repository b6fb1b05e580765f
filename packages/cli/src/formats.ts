import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { loadBert, saveBert, type BertModel } from '@topiary/core';
import { writeOnnxFolder, type ModelCard } from '@topiary/onnx';
import { UsageError } from './config.js';

/** What `topiary export --format` and a run's `export.format` write. */
export const EXPORT_FORMATS = ['safetensors', 'onnx', 'all'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];
export const QUANTIZE_MODES = ['int8'] as const;
export type QuantizeMode = (typeof QUANTIZE_MODES)[number];

/** Where a run writes its ONNX folder (beside `<out>/model`, the safetensors one). */
export const RUN_ONNX_DIR = 'onnx-model';

/** The model card's facts from a run's `report.json`, when `dir` (or its parent) has one. */
export async function cardFromReport(dir: string): Promise<ModelCard> {
  for (const file of [path.join(dir, 'report.json'), path.join(path.dirname(path.resolve(dir)), 'report.json')]) {
    if (!existsSync(file)) continue;
    const r = JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>;
    const num = (k: string) => (typeof r[k] === 'number' ? (r[k] as number) : undefined);
    const card: ModelCard = { source: path.basename(path.dirname(path.resolve(file))) };
    if (typeof r['method'] === 'string') card.method = r['method'];
    for (const k of ['accuracy', 'teacherAccuracy', 'encoderSparsity', 'totalSparsity', 'params'] as const) {
      const v = num(k);
      if (v !== undefined) card[k] = v;
    }
    return card;
  }
  return { source: path.basename(path.resolve(dir)) };
}

/**
 * Writes `model` (compacted) to `out` in `format`: `safetensors` is the Hugging Face folder Topiary
 * loads; `onnx` the folder transformers.js and ONNX Runtime load (config, tokenizer, `onnx/`, model
 * card); `all` one folder with both. Each is written to a temporary sibling and renamed.
 */
export async function writeModel(
  model: BertModel,
  out: string,
  opts: { format: ExportFormat; quantize?: QuantizeMode | undefined; tokenizerFrom: string; card?: ModelCard; force?: boolean },
): Promise<string[]> {
  if (opts.quantize && opts.format === 'safetensors') throw new UsageError(`--quantize ${opts.quantize} needs --format onnx or all (the int8 model is an ONNX graph)`);
  if (opts.format === 'safetensors') {
    await saveBert(model, out, { tokenizerFrom: opts.tokenizerFrom, ...(opts.force ? { force: true } : {}) });
    return ['config.json', 'model.safetensors'];
  }
  const r = await writeOnnxFolder(model, out, {
    tokenizerFrom: opts.tokenizerFrom,
    quantize: opts.quantize,
    safetensors: opts.format === 'all',
    ...(opts.card ? { card: opts.card } : {}),
    ...(opts.force ? { force: true } : {}),
  });
  return r.files;
}

/** A run config's `export` field. */
export interface RunExport {
  format: ExportFormat;
  quantize?: QuantizeMode | undefined;
}

/**
 * At the end of a run: writes `<out>/onnx-model` from the exported `<out>/model` (format `onnx` or
 * `all`; `safetensors` is `<out>/model` itself, nothing more to write). Returns the folder written.
 */
export async function exportAfterRun(out: string, exp: RunExport, tokenizerFrom: string): Promise<string | undefined> {
  if (exp.format === 'safetensors') {
    if (exp.quantize) throw new UsageError(`run config: field 'export.quantize' needs 'export.format' onnx or all`);
    return undefined;
  }
  const model = await loadBert(path.join(out, 'model'));
  try {
    const dir = path.join(out, RUN_ONNX_DIR);
    await writeModel(model, dir, { format: exp.format, quantize: exp.quantize, tokenizerFrom, card: await cardFromReport(out) });
    return dir;
  } finally {
    model.dispose();
  }
}
