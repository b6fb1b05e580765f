import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadBert, saveBert } from '@topiary/core';
import { testBackend } from '../../core/src/test-support/backend.js';
import { readRunConfig } from './config.js';
import { RUN_ONNX_DIR, exportAfterRun } from './formats.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const tinyModel = path.join(root, 'examples/models/bert-tiny-wordnet-supersense');

describe('run config export field', () => {
  const write = (body: string) => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'topiary-export-config-')), 'run.yaml');
    writeFileSync(file, ['method: structured', 'model: m', 'data: { train: t.jsonl, dev: d.jsonl }', body].join('\n'));
    return file;
  };

  it('reads format and quantize, format defaulting to onnx', async () => {
    expect((await readRunConfig(write('export: { format: all, quantize: int8 }'))).export).toEqual({ format: 'all', quantize: 'int8' });
    expect((await readRunConfig(write('export: {}'))).export).toEqual({ format: 'onnx' });
    expect((await readRunConfig(write(''))).export).toBeUndefined();
  });

  it('names the field of a bad value', async () => {
    await expect(readRunConfig(write('export: { format: tflite }'))).rejects.toThrow(/export\.format/);
    await expect(readRunConfig(write('export: { format: onnx, quantize: int4 }'))).rejects.toThrow(/export\.quantize/);
    await expect(readRunConfig(write('export: { format: safetensors, quantize: int8 }'))).rejects.toThrow(/export\.quantize/);
    await expect(readRunConfig(write('export: { format: onnx, bogus: 1 }'))).rejects.toThrow(/bogus/);
  });
});

describe('export at the end of a run', () => {
  beforeAll(testBackend);

  it(`writes <out>/${RUN_ONNX_DIR} from <out>/model with the run's report in the model card`, async () => {
    const out = mkdtempSync(path.join(tmpdir(), 'topiary-run-export-'));
    const model = await loadBert(tinyModel);
    await saveBert(model, path.join(out, 'model'), { tokenizerFrom: tinyModel });
    model.dispose();
    const report = { method: 'structured', teacherAccuracy: 0.7424, accuracy: 0.7306, encoderSparsity: 0.499, totalSparsity: 0.13, params: 1483688 };
    writeFileSync(path.join(out, 'report.json'), JSON.stringify(report));
    const dir = await exportAfterRun(out, { format: 'onnx', quantize: 'int8' }, tinyModel);
    expect(dir).toBe(path.join(out, RUN_ONNX_DIR));
    for (const f of ['onnx/model.onnx', 'onnx/model_quantized.onnx', 'tokenizer.json', 'config.json']) expect(existsSync(path.join(dir!, f)), f).toBe(true);
    const card = readFileSync(path.join(dir!, 'README.md'), 'utf8');
    for (const v of [report.teacherAccuracy, report.accuracy, report.encoderSparsity]) expect(card).toContain(`${(100 * v).toFixed(2)}%`);
    expect(card).toContain(`| method | ${report.method} |`);
    expect(await exportAfterRun(out, { format: 'safetensors' }, tinyModel)).toBeUndefined();
  });
});
