import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../model/config.js';

/**
 * Output folders: Topiary only ever replaces what it wrote itself. Every folder it creates carries a
 * marker (`.topiary.json`: tool, version, kind and, for folders written whole, the entries it wrote);
 * an existing folder that holds anything else is refused unless the caller forces it, and even then
 * only the entries Topiary writes are replaced.
 */
export const MARKER_FILE = '.topiary.json';

/** An output that cannot or must not be written (exit code 2 in the CLI): the message names the path. */
export class OutputError extends ConfigError {
  override name = 'OutputError';
}

export interface OutputMarker {
  tool: 'topiary';
  version: string;
  /** `model`, `checkpoint`, `run`... : a folder of one kind is never replaced by another. */
  kind: string;
  /** Entries Topiary wrote (folders written whole); absent when every entry is Topiary's (run folders). */
  files?: string[];
}

const VERSION: string = (() => {
  try {
    const pkg = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json');
    return String(JSON.parse(readFileSync(pkg, 'utf8')).version);
  } catch {
    return 'unknown';
  }
})();

export function outputMarker(kind: string, files?: string[]): OutputMarker {
  return { tool: 'topiary', version: VERSION, kind, ...(files ? { files: [...files].sort() } : {}) };
}

/** The marker of `dir`, or undefined when it has none (or one Topiary did not write). */
export async function readMarker(dir: string): Promise<OutputMarker | undefined> {
  try {
    const m = JSON.parse(await fs.readFile(path.join(dir, MARKER_FILE), 'utf8')) as OutputMarker;
    if (m && typeof m === 'object' && m.tool === 'topiary' && typeof m.kind === 'string') return m;
  } catch {
    // no marker, or not ours
  }
  return undefined;
}

/** Temporary names Topiary writes: `.<name>.<pid>.<time>.tmp` (and `.old.tmp` for a replaced folder). */
const TEMP = /^\.(.+)\.(\d+)\.(\d+)(?:\.old)?\.tmp$/;

export function tempName(base: string, suffix = 'tmp'): string {
  return `.${base}.${process.pid}.${Date.now()}.${suffix}`;
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const exists = (p: string) => fs.lstat(p).then(() => true, () => false);

async function entries(dir: string): Promise<string[] | undefined> {
  try {
    return await fs.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') throw new OutputError(`${dir}: exists and is a file, expected a folder`);
    throw err;
  }
}

/**
 * Entries of `dir` that Topiary did not write as a `kind` folder (all of them when it has no marker or
 * one of another kind); Topiary's own temporary names never count. Empty when `dir` does not exist.
 */
export async function foreignEntries(dir: string, kind: string): Promise<string[]> {
  const names = await entries(dir);
  if (!names) return [];
  const own = names.filter((n) => !TEMP.test(n));
  const marker = await readMarker(dir);
  if (!marker || marker.kind !== kind) return own;
  if (!marker.files) return [];
  const ours = new Set([MARKER_FILE, ...marker.files]);
  return own.filter((n) => !ours.has(n));
}

/**
 * Removes leftovers of killed runs into `dir`: Topiary's temporary siblings `.<basename>.<pid>.<time>.tmp`
 * and, inside a folder Topiary marked, its temporary entries, when their process is gone. Nothing else.
 */
export async function removeStaleTemps(dir: string): Promise<string[]> {
  const abs = path.resolve(dir);
  const removed: string[] = [];
  const sweep = async (folder: string, base?: string) => {
    for (const n of (await entries(folder).catch(() => undefined)) ?? []) {
      const m = TEMP.exec(n);
      if (!m || (base !== undefined && m[1] !== base) || alive(Number(m[2]))) continue;
      await fs.rm(path.join(folder, n), { recursive: true, force: true });
      removed.push(path.join(folder, n));
    }
  };
  if (path.dirname(abs) !== abs) await sweep(path.dirname(abs), path.basename(abs));
  if (await readMarker(abs)) await sweep(abs);
  return removed;
}

/** `p` with symlinks resolved in its longest existing prefix (the rest may not exist yet). */
export async function realPath(p: string): Promise<string> {
  let head = path.resolve(p);
  const rest: string[] = [];
  for (;;) {
    try {
      return path.join(await fs.realpath(head), ...rest);
    } catch {
      const up = path.dirname(head);
      if (up === head) return path.join(head, ...rest);
      rest.unshift(path.basename(head));
      head = up;
    }
  }
}

/** Filesystem types (statfs f_type) of kernel pseudo filesystems: writes there fail or, for mkdir -p, spin. */
const PSEUDO_FS: Record<number, string> = {
  0x9fa0: 'proc',
  0x62656572: 'sysfs',
  0x1cd1: 'devpts',
  0x1373: 'devfs',
  0x64626720: 'debugfs',
  0x74726163: 'tracefs',
  0x73636673: 'securityfs',
  0x27e0eb: 'cgroup',
  0x63677270: 'cgroup2',
  0xcafe4a11: 'bpf',
  0x6165676c: 'pstore',
  0x62656570: 'configfs',
  0xde5e81e4: 'efivarfs',
};
// /dev is often a tmpfs (in containers), so its path counts too; /dev/shm is meant for files.
const PSEUDO_ROOTS = ['/proc', '/sys', '/dev'];

/** The pseudo filesystem `p` is on (by its nearest existing ancestor), or undefined for a real one. */
export async function pseudoFilesystem(p: string): Promise<string | undefined> {
  const real = await realPath(p);
  const root = PSEUDO_ROOTS.find((r) => real === r || real.startsWith(`${r}/`));
  if (root && !(real === '/dev/shm' || real.startsWith('/dev/shm/'))) return root.slice(1);
  let probe = real;
  while (!(await exists(probe))) probe = path.dirname(probe);
  try {
    const { type } = await fs.statfs(probe);
    return PSEUDO_FS[Number(type)];
  } catch {
    return undefined;
  }
}

async function refusePseudo(out: string, what: string): Promise<void> {
  const fsName = await pseudoFilesystem(out);
  if (fsName) throw new OutputError(`${what} ${out}: is on the ${fsName} pseudo filesystem, expected a folder on a real disk`);
}

const within = (child: string, parent: string) => child === parent || child.startsWith(parent.endsWith(path.sep) ? parent : `${parent}${path.sep}`);

/** True when `dir` is the current folder or one of its ancestors (it cannot be renamed away). */
export async function holdsCwd(dir: string): Promise<boolean> {
  return within(await realPath(process.cwd()), await realPath(dir));
}

export interface PrepareOutputOptions {
  /** What the folder holds: `model` (written whole, e.g. `finetune --out`), `run` (report, model/, checkpoint/). */
  kind: string;
  /** Files and folders the run reads: the output may not be, contain or be inside any of them. */
  inputs?: (string | undefined)[];
  /** Write into an existing folder that holds other things (only Topiary's entries are replaced). */
  force?: boolean;
  /** How the output was named in the error messages (`--out`, a config's `out`). */
  what?: string;
}

/**
 * Checks an output folder before any model loads or training starts: not on a pseudo filesystem,
 * not overlapping an input, empty or Topiary's own (unless forced), creatable and writable (a probe
 * file is written and removed, next to it too when the folder is written whole). Creates and marks
 * the folder, removes leftovers of killed runs into it, and returns its absolute path.
 */
export async function prepareOutput(out: string, opts: PrepareOutputOptions): Promise<string> {
  const what = opts.what ?? 'output';
  const abs = path.resolve(out);
  await refusePseudo(abs, what);
  const realOut = await realPath(abs);
  for (const input of opts.inputs ?? []) {
    if (!input) continue;
    const realIn = await realPath(input);
    const relation = realOut === realIn ? 'is' : within(realIn, realOut) ? 'contains' : within(realOut, realIn) ? 'is inside' : undefined;
    if (relation) throw new OutputError(`${what} ${out}: ${relation} the input ${input}; the output must be a folder apart from every input (even with --force)`);
  }
  let ancestor = abs;
  while (!(await exists(ancestor))) ancestor = path.dirname(ancestor);
  const stat = await fs.stat(ancestor);
  if (!stat.isDirectory()) throw new OutputError(`${what} ${out}: ${ancestor} is a file, expected a folder`);
  await removeStaleTemps(abs);
  const foreign = await foreignEntries(abs, opts.kind);
  if (foreign.length > 0 && !opts.force) {
    const marker = await readMarker(abs);
    const why = marker && marker.kind !== opts.kind ? `it holds a Topiary ${marker.kind}, not a ${opts.kind}` : `it holds files Topiary did not write (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', ...' : ''})`;
    throw new OutputError(`${what} ${out}: the folder exists and ${why}; choose an empty or new folder, or pass --force to write Topiary's files into it`);
  }
  const created = !(await exists(abs));
  try {
    await fs.mkdir(abs, { recursive: true });
    const probes = [abs];
    if (!(await holdsCwd(abs)) && path.dirname(abs) !== abs) probes.push(path.dirname(abs));
    for (const dir of probes) {
      const probe = path.join(dir, tempName('topiary-probe'));
      await fs.writeFile(probe, '');
      await fs.rm(probe);
    }
    if (created || (await entries(abs))!.length === 0) {
      await fs.writeFile(path.join(abs, MARKER_FILE), `${JSON.stringify(outputMarker(opts.kind, opts.kind === 'run' ? undefined : []), null, 2)}\n`);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new OutputError(`${what} ${out}: cannot write there (${e.code ?? e.message}${e.path ? ` on ${e.path}` : ''}), expected a writable folder`);
  }
  return abs;
}

/** Checks before writing a folder whole: a real filesystem, and nothing in it Topiary did not write unless forced. */
export async function checkWritableDir(dir: string, kind: string, force = false): Promise<string[]> {
  await refusePseudo(dir, 'output');
  await removeStaleTemps(dir);
  const foreign = await foreignEntries(dir, kind);
  if (foreign.length > 0 && !force) {
    throw new OutputError(`${dir}: the folder exists and holds files Topiary did not write as a ${kind} (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', ...' : ''}); Topiary only replaces what it wrote itself (--force writes its files into it)`);
  }
  return foreign;
}
