import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { writeDirAtomic } from './atomic.js';
import { MARKER_FILE, OutputError, prepareOutput, pseudoFilesystem, readMarker, removeStaleTemps } from './outputs.js';

const scratch = () => mkdtempSync(path.join(tmpdir(), 'topiary-out-'));
const fill = (files: Record<string, string>) => async (tmp: string) => {
  for (const [f, text] of Object.entries(files)) writeFileSync(path.join(tmp, f), text);
};
/** A pid that is certainly not running: a child that has exited. */
const deadPid = () => spawnSync(process.execPath, ['-e', '0']).pid!;

async function rejects(p: Promise<unknown>, ...parts: string[]): Promise<string> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(OutputError);
  for (const part of parts) expect((e as Error).message).toContain(part);
  return (e as Error).message;
}

describe('writeDirAtomic: Topiary only replaces what it wrote', () => {
  it('refuses a folder holding files it did not write, naming it; --force keeps them', async () => {
    const dir = path.join(scratch(), 'project');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'README.md'), 'mine');
    await rejects(writeDirAtomic(dir, fill({ 'config.json': '{}' }), { kind: 'model' }), dir, 'README.md');
    expect(readdirSync(dir)).toEqual(['README.md']);
    await writeDirAtomic(dir, fill({ 'config.json': '{}' }), { kind: 'model', force: true });
    expect(readFileSync(path.join(dir, 'README.md'), 'utf8')).toBe('mine');
    expect(readFileSync(path.join(dir, 'config.json'), 'utf8')).toBe('{}');
    // Still not all Topiary's: the next write needs --force again.
    await rejects(writeDirAtomic(dir, fill({ 'config.json': '{}' }), { kind: 'model' }), 'README.md');
  });

  it('replaces its own folder whole, but not once a user added a file, nor a folder of another kind', async () => {
    const dir = path.join(scratch(), 'model');
    await writeDirAtomic(dir, fill({ 'a.json': '1', 'b.json': '1' }), { kind: 'model' });
    expect((await readMarker(dir))).toMatchObject({ tool: 'topiary', kind: 'model', files: ['a.json', 'b.json'] });
    await writeDirAtomic(dir, fill({ 'a.json': '2' }), { kind: 'model' });
    expect(readdirSync(dir).sort()).toEqual([MARKER_FILE, 'a.json']);
    writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    await rejects(writeDirAtomic(dir, fill({ 'a.json': '3' }), { kind: 'model' }), 'notes.txt');
    await rejects(writeDirAtomic(dir, fill({ 'a.json': '3' }), { kind: 'checkpoint' }), dir);
    expect(readFileSync(path.join(dir, 'a.json'), 'utf8')).toBe('2');
    // Nothing left beside it.
    expect(readdirSync(path.dirname(dir))).toEqual(['model']);
  });

  it('writes into the current folder in place (no rename of the cwd), by "." and by its absolute path', async () => {
    const dir = scratch();
    const before = process.cwd();
    process.chdir(dir);
    try {
      await writeDirAtomic('.', fill({ 'a.json': '1', 'b.json': '1' }), { kind: 'model' });
      await writeDirAtomic(process.cwd(), fill({ 'a.json': '2' }), { kind: 'model' });
      expect(readdirSync(dir).sort()).toEqual([MARKER_FILE, 'a.json']);
      expect(readFileSync(path.join(dir, 'a.json'), 'utf8')).toBe('2');
      writeFileSync(path.join(dir, 'mine.txt'), 'x');
      await rejects(writeDirAtomic(process.cwd(), fill({ 'a.json': '3' }), { kind: 'model' }), 'mine.txt');
      await writeDirAtomic('.', fill({ 'a.json': '3' }), { kind: 'model', force: true });
      expect(readdirSync(dir).sort()).toEqual([MARKER_FILE, 'a.json', 'mine.txt']);
      expect(readdirSync(path.dirname(dir)).filter((n) => n.startsWith(`.${path.basename(dir)}.`))).toEqual([]);
    } finally {
      process.chdir(before);
    }
  });

  it('removes leftovers of killed runs into the same place, and nothing else', async () => {
    const root = scratch();
    const dir = path.join(root, 'model');
    await writeDirAtomic(dir, fill({ 'a.json': '1' }), { kind: 'model' });
    const dead = deadPid();
    const stale = [`.model.${dead}.1700000000000.tmp`, `.model.${dead}.1700000000000.old.tmp`];
    const kept = [`.model.${process.pid}.1700000000000.tmp`, `.other.${dead}.1700000000000.tmp`, '.model.bak', 'model.1.2.tmp'];
    for (const n of [...stale, ...kept]) mkdirSync(path.join(root, n));
    writeFileSync(path.join(dir, `.a.json.${dead}.1700000000000.tmp`), 'half');
    await writeDirAtomic(dir, fill({ 'a.json': '2' }), { kind: 'model' });
    expect(readdirSync(root).sort()).toEqual([...kept, 'model'].sort());
    expect(readdirSync(dir).sort()).toEqual([MARKER_FILE, 'a.json']);
    expect(await removeStaleTemps(dir)).toEqual([]);
  });
});

describe('prepareOutput: checked before any model loads', () => {
  it('refuses an output that is, contains or is inside an input, by real path, even with force', async () => {
    const root = scratch();
    const model = path.join(root, 'models', 'm');
    mkdirSync(model, { recursive: true });
    writeFileSync(path.join(root, 'train.jsonl'), '');
    symlinkSync(model, path.join(root, 'link'));
    const inputs = [model, path.join(root, 'train.jsonl')];
    await rejects(prepareOutput(model, { kind: 'model', inputs, force: true }), 'is the input');
    await rejects(prepareOutput(path.join(root, 'link'), { kind: 'model', inputs, force: true }), 'is the input');
    await rejects(prepareOutput(path.join(root, 'link', 'out'), { kind: 'model', inputs, force: true }), 'is inside the input');
    await rejects(prepareOutput(path.join(root, 'models'), { kind: 'run', inputs, force: true }), 'contains the input');
    await rejects(prepareOutput(root, { kind: 'run', inputs: [path.join(root, 'train.jsonl')], force: true }), 'contains the input');
    expect(await prepareOutput(path.join(root, 'out'), { kind: 'run', inputs })).toBe(path.join(root, 'out'));
    expect(await readMarker(path.join(root, 'out'))).toMatchObject({ tool: 'topiary', kind: 'run' });
  });

  it('refuses a non-empty folder Topiary did not write, or one of another kind, unless forced', async () => {
    const root = scratch();
    writeFileSync(path.join(root, 'README.md'), 'x');
    await rejects(prepareOutput(root, { kind: 'run', what: '--out' }), `--out ${root}`, 'README.md', '--force');
    expect(await prepareOutput(root, { kind: 'run', force: true })).toBe(root);
    expect(existsSync(path.join(root, MARKER_FILE))).toBe(false); // not Topiary's: never marked
    const run = path.join(root, 'run');
    await prepareOutput(run, { kind: 'run' });
    await prepareOutput(run, { kind: 'run' });
    await rejects(prepareOutput(run, { kind: 'model' }), 'holds a Topiary run');
  });

  it('fails at once on an output it cannot create or write', async () => {
    await rejects(prepareOutput('/etc/passwd/x', { kind: 'model', what: '--out' }), '--out /etc/passwd/x', '/etc/passwd is a file');
    const file = path.join(scratch(), 'f');
    writeFileSync(file, '');
    await rejects(prepareOutput(file, { kind: 'model' }), file, 'is a file');
  });

  it('refuses pseudo filesystems (/proc, /sys, /dev) without looping', async () => {
    for (const p of ['/proc/self/out', '/proc/out/deeper', '/sys/out', '/dev/out']) await rejects(prepareOutput(p, { kind: 'model' }), p, 'pseudo filesystem');
    await rejects(writeDirAtomic('/proc/self/out', fill({})), '/proc/self/out', 'pseudo filesystem');
    expect(await pseudoFilesystem('/proc/self')).toBe('proc');
    expect(await pseudoFilesystem(tmpdir())).toBeUndefined();
    if (existsSync('/dev/shm')) expect(await pseudoFilesystem('/dev/shm/x')).toBeUndefined();
  }, 15_000); // Node's recursive mkdir spins there forever: a regression fails by timeout
});
