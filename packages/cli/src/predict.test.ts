import { beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadBert, readExamples, saveBert } from '@topiary/core';
import { env, pipeline } from '@huggingface/transformers';
import { testBackend } from '../../core/src/test-support/backend.js';
import { variantModel } from '../../onnx/src/test-support/variants.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = path.join(root, 'packages/cli/dist/bin.js');
const tinyModel = path.join(root, 'examples/models/bert-tiny-wordnet-supersense');
const devFile = path.join(root, 'examples/data/dev.jsonl');

function topiary(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: root, encoding: 'utf8', timeout: 300_000, maxBuffer: 256 * 1024 * 1024 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Line {
  index: number;
  label: string;
  probabilities: number[];
  logits: number[];
}
const ndjson = (stdout: string): Line[] => stdout.trim().split('\n').map((l) => JSON.parse(l) as Line);

describe.runIf(existsSync(bin))('export --format onnx and predict', () => {
  let dir: string;
  let sample: string;
  beforeAll(async () => {
    await testBackend();
    dir = mkdtempSync(path.join(tmpdir(), 'topiary-predict-'));
    // A structurally pruned model (a layer without attention, one without FFN) saved as Topiary's folder.
    const base = await loadBert(tinyModel);
    const pruned = variantModel(base, 'structured');
    base.dispose();
    await saveBert(pruned, path.join(dir, 'pruned'), { tokenizerFrom: tinyModel });
    pruned.dispose();
    // 80 dev examples spread over the label-sorted file (every 120th line).
    const lines = readFileSync(devFile, 'utf8').trim().split('\n');
    sample = path.join(dir, 'sample.jsonl');
    writeFileSync(sample, `${lines.filter((_, i) => i % 120 === 0).join('\n')}\n`);
  });

  it('the exported folder predicts what Topiary predicts (ONNX Runtime, tfjs and the transformers.js pipeline)', async () => {
    const out = path.join(dir, 'onnx-out');
    const e = topiary('--json', 'export', path.join(dir, 'pruned'), '--out', out, '--format', 'onnx', '--quantize', 'int8');
    expect(e.code, e.stderr).toBe(0);
    expect(JSON.parse(e.stdout).files).toEqual(expect.arrayContaining(['onnx/model.onnx', 'onnx/model_quantized.onnx', 'tokenizer.json', 'tokenizer_config.json', 'README.md']));
    expect(existsSync(path.join(out, 'model.safetensors'))).toBe(false);

    // 128 tokens: what transformers.js truncates to (the tokenizer's model_max_length).
    const tfjs = topiary('--json', 'predict', path.join(dir, 'pruned'), '--data', sample, '--max-length', '128', '--batch-size', '16');
    const onnx = topiary('--json', 'predict', out, '--data', sample, '--max-length', '128', '--batch-size', '16');
    expect(tfjs.code, tfjs.stderr).toBe(0);
    expect(onnx.code, onnx.stderr).toBe(0);
    const [a, b] = [ndjson(tfjs.stdout), ndjson(onnx.stdout)];
    const n = (await readExamples(sample)).length;
    expect(a.length).toBe(n);
    expect(b.length).toBe(n);
    for (const line of b) expect(Object.keys(line).sort()).toEqual(['index', 'label', 'logits', 'probabilities']);
    expect(b.map((l) => l.index)).toEqual([...Array(n).keys()]);
    expect(b.map((l) => l.label)).toEqual(a.map((l) => l.label));
    const diff = Math.max(...a.flatMap((l, i) => l.logits.map((v, j) => Math.abs(v - b[i]!.logits[j]!))));
    expect(diff).toBeLessThanOrEqual(1e-4);
    expect(new Set(a.map((l) => l.label)).size).toBeGreaterThan(5); // the sample spans labels

    env.allowRemoteModels = false;
    env.localModelPath = dir;
    const texts = (await readExamples(sample)).map((x) => x.text);
    const classify = await pipeline('text-classification', 'onnx-out', { dtype: 'fp32' });
    const got = (await classify(texts)) as { label: string; score: number }[];
    expect(got.map((g) => g.label)).toEqual(a.map((l) => l.label));
    got.forEach((g, i) => expect(Math.abs(g.score - Math.max(...a[i]!.probabilities))).toBeLessThan(1e-4));
    await classify.dispose();

    // int8: the same file through both runtimes, as transformers.js's q8 dtype loads it. Activation
    // scales are per tensor, so a prediction depends on its batch: one batch of all, as the pipeline does.
    const q = topiary('--json', 'predict', out, '--data', sample, '--max-length', '128', '--quantized', '--batch-size', String(n));
    expect(q.code, q.stderr).toBe(0);
    const q8 = await pipeline('text-classification', 'onnx-out', { dtype: 'q8' });
    expect(((await q8(texts)) as { label: string }[]).map((g) => g.label)).toEqual(ndjson(q.stdout).map((l) => l.label));
    await q8.dispose();
  });

  it('--format all writes one folder that Topiary and transformers.js both load; predict --runtime picks', () => {
    const out = path.join(dir, 'all-out');
    expect(topiary('export', path.join(dir, 'pruned'), '--out', out, '--format', 'all').code).toBe(0);
    for (const f of ['model.safetensors', 'onnx/model.onnx', 'config.json']) expect(existsSync(path.join(out, f)), f).toBe(true);
    expect(existsSync(path.join(out, 'onnx/model_quantized.onnx'))).toBe(false);
    const viaTfjs = ndjson(topiary('--json', 'predict', out, '--data', sample, '--limit', '8', '--runtime', 'tfjs').stdout);
    const viaOnnx = ndjson(topiary('--json', 'predict', out, '--data', sample, '--limit', '8', '--runtime', 'onnx').stdout);
    expect(viaOnnx.map((l) => l.label)).toEqual(viaTfjs.map((l) => l.label));
    const bad = topiary('predict', out, '--data', sample, '--quantized');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('model_quantized.onnx');
    expect(topiary('export', path.join(dir, 'pruned'), '--out', path.join(dir, 'x'), '--quantize', 'int8').code).toBe(2);
  });
});
