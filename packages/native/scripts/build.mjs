#!/usr/bin/env node
// Builds build/topiary_native.node with the system C compiler and Node's own headers. Optional by
// design: when there is no compiler or no headers it says so and exits 0, and Topiary runs on plain
// wasm kernels.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(here, 'build', 'topiary_native.node');
const candidates = [
  path.resolve(path.dirname(process.execPath), '../include/node'),
  '/usr/include/node',
  '/usr/local/include/node',
  process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, 'include/node'),
].filter(Boolean);
const include = candidates.find((d) => existsSync(path.join(d, 'node_api.h')));
if (!include) {
  console.warn('@topiary/native: Node headers (node_api.h) not found; skipping the native GEMM (wasm kernels will be used)');
  process.exit(0);
}
const cc = process.env.CC ?? 'cc';
mkdirSync(path.dirname(out), { recursive: true });
const tmp = `${out}.tmp-${process.pid}`;
const flags = ['-O3', '-march=native', '-ffp-contract=fast', '-fPIC', '-shared', '-pthread', '-std=gnu11', `-I${include}`, '-DNODE_GYP_MODULE_NAME=topiary_native'];
try {
  const sources = readdirSync(path.join(here, 'csrc')).filter((f) => f.endsWith('.c')).sort().map((f) => path.join(here, 'csrc', f));
  execFileSync(cc, [...flags, ...sources, '-lm', '-o', tmp], { stdio: 'inherit' });
  renameSync(tmp, out);
  console.log(`@topiary/native: built ${path.relative(process.cwd(), out)}`);
} catch (e) {
  console.warn(`@topiary/native: could not build the native GEMM with '${cc}' (${e.message.split('\n')[0]}); wasm kernels will be used`);
}
