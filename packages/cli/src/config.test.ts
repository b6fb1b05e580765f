import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { readRunConfig } from './config.js';

describe('run config', () => {
  it('resolves every path, cofi resumeMasks included, against the config folder; --out against the working directory', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'topiary-config-'));
    const file = path.join(dir, 'sub', 'run.yaml');
    mkdirSync(path.dirname(file));
    writeFileSync(file, ['method: cofi', 'model: m', 'data: { train: t.jsonl, dev: d.jsonl }', 'targetSparsity: 0.9', 'options: { resumeMasks: ../runs/first }', 'out: ../runs/second'].join('\n'));
    const spec = await readRunConfig(file);
    expect(spec.model).toBe(path.join(dir, 'sub', 'm'));
    expect(spec.options['resumeMasks']).toBe(path.join(dir, 'runs', 'first'));
    expect(spec.out).toBe(path.join(dir, 'runs', 'second'));
    expect((await readRunConfig(file, { out: 'x' })).out).toBe(path.resolve('x'));
  });

  it('takes training.microBatchSize as a positive integer, naming the field otherwise', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'topiary-config-'));
    const file = path.join(dir, 'run.yaml');
    const write = (micro: string) => writeFileSync(file, ['method: structured', 'model: m', 'data: { train: t.jsonl, dev: d.jsonl }', `training: { batchSize: 32, microBatchSize: ${micro} }`].join('\n'));
    write('8');
    expect((await readRunConfig(file)).training.microBatchSize).toBe(8);
    for (const bad of ['0', '2.5']) {
      write(bad);
      await expect(readRunConfig(file)).rejects.toThrow(/training\.microBatchSize/);
    }
  });
});
