import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

// `--out` through the built binary: the current folder by '.' and by its absolute path, a folder of
// the user's with --force, and a rerun into Topiary's own output.
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = path.join(root, 'packages/cli/dist/bin.js');
const pretrained = path.join(root, 'examples/models/bert-tiny-wordnet-pretrained');

function topiary(args: string[], cwd: string) {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd, encoding: 'utf8', timeout: 120_000, env: { ...process.env, TOPIARY_NATIVE_THREADS: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.runIf(existsSync(bin))('finetune --out', () => {
  const work = mkdtempSync(path.join(tmpdir(), 'topiary-outs-'));
  const lines = readFileSync(path.join(root, 'examples/data/dev.jsonl'), 'utf8').split('\n').filter(Boolean);
  // Spread over the label-sorted file, so both splits hold the same few labels.
  const sample = Array.from({ length: 16 }, (_, i) => lines[Math.floor((i * lines.length) / 16)]).join('\n');
  writeFileSync(path.join(work, 'data.jsonl'), `${sample}\n`);
  const finetune = (out: string, cwd: string, ...extra: string[]) =>
    topiary(['finetune', pretrained, '--train', path.join(work, 'data.jsonl'), '--dev', path.join(work, 'data.jsonl'), '--max-steps', '1', '--batch-size', '8', '--max-length', '16', '--out', out, ...extra], cwd);
  const hidden = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.tmp'));

  it('writes into the current folder by "." and by $PWD, leaving nothing beside it, and reruns into its own output', () => {
    for (const [name, out] of [['dot', '.'], ['pwd', undefined]] as const) {
      const cwd = path.join(work, name);
      mkdirSync(cwd);
      const r = finetune(out ?? cwd, cwd);
      expect(r.code, r.stderr).toBe(0);
      expect(readdirSync(cwd)).toEqual(expect.arrayContaining(['.topiary.json', 'config.json', 'model.safetensors', 'tokenizer.json']));
      expect(hidden(work)).toEqual([]);
      expect(hidden(cwd)).toEqual([]);
      // Topiary's own output: a second run replaces it without --force.
      const again = finetune(out ?? cwd, cwd);
      expect(again.code, again.stderr).toBe(0);
    }
  });

  it('--force writes into a folder of the user\'s, keeping what it did not write; leftovers of killed runs go', () => {
    const project = path.join(work, 'project');
    mkdirSync(project);
    writeFileSync(path.join(project, 'README.md'), 'my notes');
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    mkdirSync(path.join(work, `.project.${dead}.1700000000000.tmp`));
    mkdirSync(path.join(work, '.project.keep'));
    expect(finetune(project, work).code).toBe(2);
    const r = finetune(project, work, '--force');
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(path.join(project, 'README.md'), 'utf8')).toBe('my notes');
    expect(readdirSync(project)).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'README.md']));
    expect(existsSync(path.join(work, `.project.${dead}.1700000000000.tmp`))).toBe(false);
    expect(existsSync(path.join(work, '.project.keep'))).toBe(true);
  });
});
