import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

// Pruners that change the architecture (fewer layers, factorized layers) return another model than the
// run's: `topiary run` exports that model and reports it (it had refused them after the resume work).
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = path.join(root, 'packages/cli/dist/bin.js');
const tiny = path.join(root, 'examples/models/bert-tiny-wordnet-supersense');

describe.runIf(existsSync(bin))('pruners that reshape the model, through topiary run', () => {
  it.each([
    ['layer-drop', { strategy: 'top', drop: 1 }, (cfg: any) => expect(cfg['num_hidden_layers']).toBe(1)],
    ['svd', { rank: 8 }, (cfg: any) => expect(Object.values(cfg['topiary_low_rank'])).toContain(8)],
    ['embedding-svd', { rank: 16 }, (cfg: any) => expect(cfg['topiary_embedding_rank']).toBe(16)],
    // A chain reports each stage against its input; the run's encoder sparsity is the last stage's, not 0.
    ['chain', { stages: [{ method: 'embedding-svd', options: { rank: 16 } }, { method: 'svd', options: { rank: 8 } }] }, (cfg: any, report: any) => {
      expect(cfg['topiary_embedding_rank']).toBe(16);
      expect(report.stages.map((s: any) => s.method)).toEqual(['input', 'embedding-svd', 'svd']);
      expect(report.stages[1].encoderSparsity).toBe(0);
      expect(report.stages[2].encoderSparsity).toBeGreaterThan(0);
      expect(report.encoderSparsity).toBeCloseTo(report.stages[2].encoderSparsity, 10);
    }],
  ] as const)('%s', (method, options, check) => {
    const work = mkdtempSync(path.join(tmpdir(), 'topiary-reshape-'));
    try {
      const file = path.join(work, 'run.json');
      const data = { train: path.join(root, 'examples/data/train-10k.jsonl'), dev: path.join(root, 'examples/data/dev.jsonl'), trainLimit: 64, devLimit: 64 };
      writeFileSync(file, JSON.stringify({ method, model: tiny, data, options, out: path.join(work, 'out') }));
      const r = spawnSync(process.execPath, [bin, 'run', file], { cwd: root, encoding: 'utf8', timeout: 120_000 });
      expect(r.status, r.stderr).toBe(0);
      const report = JSON.parse(readFileSync(path.join(work, 'out/report.json'), 'utf8'));
      check(JSON.parse(readFileSync(path.join(work, 'out/model/config.json'), 'utf8')), report);
      expect(report.method).toBe(method);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
