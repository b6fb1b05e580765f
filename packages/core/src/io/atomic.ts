import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { MARKER_FILE, checkWritableDir, holdsCwd, outputMarker, readMarker, tempName } from './outputs.js';

/** Writes a file under a temporary name in the same folder, then renames it: never half-written. */
export async function writeFileAtomic(file: string, data: string | Uint8Array | Uint8Array[]): Promise<void> {
  const tmp = path.join(path.dirname(file), tempName(path.basename(file)));
  const handle = await fs.open(tmp, 'w');
  try {
    for (const chunk of Array.isArray(data) ? data : [data]) {
      if (typeof chunk === 'string') await handle.write(chunk);
      else await handle.write(chunk);
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, file);
}

export interface WriteDirOptions {
  /** What the folder holds (recorded in its `.topiary.json` marker); a folder of another kind is not replaced. */
  kind?: string;
  /** Write into a folder holding files Topiary did not write: its entries of the same names are replaced, the others kept. */
  force?: boolean;
}

/**
 * Fills a folder under a temporary name and renames it into place, replacing a previous folder of
 * that name only once the new one is complete, and only when Topiary wrote everything in it (its
 * marker lists the entries). A folder holding other files (with `force`), or the current folder and
 * its ancestors (which cannot be renamed), get the new entries moved in one by one instead: the other
 * entries stay.
 */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void>, opts: WriteDirOptions = {}): Promise<void> {
  const kind = opts.kind ?? 'folder';
  const abs = path.resolve(dir);
  const parent = path.dirname(abs);
  const foreign = await checkWritableDir(abs, kind, opts.force);
  const exists = await fs.stat(abs).then(() => true, () => false);
  const inPlace = exists && (foreign.length > 0 || (await holdsCwd(abs)));
  if (!inPlace) await fs.mkdir(parent, { recursive: true });
  // In place, the temporary folder goes inside the target: same filesystem, and the parent may be read-only.
  const tmp = path.join(inPlace ? abs : parent, tempName(path.basename(abs)));
  await fs.mkdir(tmp);
  let names: string[];
  try {
    await fill(tmp);
    names = (await fs.readdir(tmp)).filter((n) => n !== MARKER_FILE);
    await fs.writeFile(path.join(tmp, MARKER_FILE), `${JSON.stringify(outputMarker(kind, names), null, 2)}\n`);
  } catch (err) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw err;
  }
  if (!inPlace) {
    const old = path.join(parent, tempName(path.basename(abs), 'old.tmp'));
    if (exists) await fs.rename(abs, old);
    await fs.rename(tmp, abs);
    if (exists) await fs.rm(old, { recursive: true, force: true });
    return;
  }
  const previous = await readMarker(abs);
  const stale = previous?.kind === kind ? (previous.files ?? []).filter((n) => !names.includes(n)) : [];
  for (const n of names) {
    const target = path.join(abs, n);
    const old = path.join(abs, tempName(n, 'old.tmp'));
    const had = await fs.lstat(target).then(() => true, () => false);
    if (had) await fs.rename(target, old);
    await fs.rename(path.join(tmp, n), target);
    if (had) await fs.rm(old, { recursive: true, force: true });
  }
  // Entries the previous write of this kind left and this one does not write: Topiary's own, so they go.
  for (const n of stale) await fs.rm(path.join(abs, n), { recursive: true, force: true });
  await fs.rename(path.join(tmp, MARKER_FILE), path.join(abs, MARKER_FILE));
  await fs.rm(tmp, { recursive: true, force: true });
}
