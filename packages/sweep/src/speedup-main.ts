#!/usr/bin/env node
// The speedup measurement as a child process of a lane (so it gets the lane's native threads):
//   node speedup-main.js <options JSON>  ->  prints the SpeedupMeasure as one JSON line.
import 'reflect-metadata';
import { measureSpeedup } from './speedup.js';

const { dense, pruned, ...opts } = JSON.parse(process.argv[2] ?? '{}');
try {
  const m = await measureSpeedup(dense, pruned, opts);
  process.stdout.write(`${JSON.stringify(m)}\n`);
} catch (err) {
  process.stderr.write(`speedup: ${(err as Error).message}\n`);
  process.exitCode = 3;
}
