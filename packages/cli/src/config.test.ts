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
});
