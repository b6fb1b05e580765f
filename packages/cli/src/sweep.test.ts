import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

// `topiary sweep` checks every expanded run with the run-config checks of `topiary run` (schema, then
// component ids and options from the plugin registry) before anything starts.
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = path.join(root, 'packages/cli/dist/bin.js');
const work = mkdtempSync(path.join(tmpdir(), 'topiary-sweep-cli-'));

describe('topiary sweep', () => {
  it('exits 2 naming the sweep file, the run and where each bad field was set, before any run starts', () => {
    const sweep = (name: string, lines: string[]) => {
      const file = path.join(work, name);
      writeFileSync(file, ['out: out', `base: { extends: ${path.join(root, 'examples/first-order-tiny.yaml')} }`, ...lines, ''].join('\n'));
      return { file, ...spawnSync(process.execPath, [bin, 'sweep', file], { cwd: work, encoding: 'utf8' }) };
    };
    // The schema: an unknown field and a value out of range.
    let r = sweep('schema.yaml', ['grid: { targetSparsity: [0.5, 1.2], pruner.options.targetSparsity: [0.5] }']);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toContain(r.file);
    expect(r.stderr).toContain("field 'grid.pruner.options.targetSparsity[0]': unknown field");
    expect(r.stderr).toMatch(/run targetSparsity=1\.2 x pruner\.options\.targetSparsity=0\.5: field 'grid\.targetSparsity\[1\]': Too big/i);
    expect(r.stderr).not.toContain('targetSparsity[0]:');
    // The components' ids and options, from the registry.
    r = sweep('components.yaml', [
        'runs:',
        '  - { criterion: { id: first-order, options: { normalize: 3 } } }',
        '  - { criterion: no-such-criterion }',
    ]);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toContain(r.file);
    expect(r.stderr).toContain("field 'runs[0].criterion.options.normalize'");
    expect(r.stderr).toMatch(/field 'runs\[1\]\.criterion[^']*'.*no-such-criterion/);
    expect(existsSync(path.join(work, 'out'))).toBe(false);
  });
});
