// Long examples for memory and speed runs at 128 (or more) tokens: each example is a gloss of the
// bundled WordNet supersense data followed by other glosses, labelled as the first one. Glosses are
// drawn by seed over the whole file (it is sorted by label).
//   node scripts/make-long-data.mjs [OUT] [--glosses 16] [--train 256] [--dev 64] [--seed 1]
// OUT defaults to runs/data/long (runs/ is gitignored): OUT/train.jsonl and OUT/dev.jsonl.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '@topiary/core';
import { takeOption } from './cli-args.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const glosses = Number(takeOption(args, 'glosses', 16));
const sizes = { train: Number(takeOption(args, 'train', 256)), dev: Number(takeOption(args, 'dev', 64)) };
let s = Number(takeOption(args, 'seed', 1)) >>> 0;
const out = path.resolve(args[0] ?? path.join(root, 'runs/data/long'));
const rows = (await fs.readFile(path.join(root, 'examples/data/train-10k.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
const next = () => {
  s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
  return s / 4294967296;
};
const pick = () => rows[Math.floor(next() * rows.length)];
await fs.mkdir(out, { recursive: true });
for (const [split, n] of Object.entries(sizes)) {
  const lines = Array.from({ length: n }, () => {
    const first = pick();
    const text = [first.text, ...Array.from({ length: glosses - 1 }, () => pick().text)].join('; ');
    return JSON.stringify({ text, label: first.label });
  });
  await writeFileAtomic(path.join(out, `${split}.jsonl`), `${lines.join('\n')}\n`);
}
process.stdout.write(`${out}: train.jsonl (${sizes.train}) and dev.jsonl (${sizes.dev}), ${glosses} glosses an example\n`);
