import { existsSync, readFileSync } from 'node:fs';
import { Command } from 'commander';
import { loadBert, measureLatencyTable, nativeGemm, profileModel, writeFileAtomic, type LatencyTable, type ModelProfile } from '@topiary/core';
import { UsageError } from './config.js';

interface ProfileCliOptions {
  batch: number;
  seq: number;
  repeats: number;
  lut?: string;
  lutOnly: boolean;
  neuronPoints: number;
}

const positive = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${name} must be a positive integer, got '${v}'`);
  return n;
};

const pct = (a: number, b: number) => (b > 0 ? `${((100 * a) / b).toFixed(1)}%` : '-');
const fmtInt = (n: number) => Math.round(n).toLocaleString('en-US');
const mflop = (f: number) => (f / 1e6).toFixed(1);

/** The per-module table: modules of a layer, then a per-layer summary when there are many layers. */
export function renderProfile(dir: string, p: ModelProfile): string {
  const lines = [`${dir}: batch ${p.batch} x ${p.seq} tokens on ${p.backend}; forward ${p.forwardMs.toFixed(2)} ms (median), modules sum ${p.moduleMs.toFixed(2)} ms; peak memory ${(p.peakBytes / 2 ** 20).toFixed(1)} MiB`];
  const w = Math.max(...p.modules.map((m) => m.name.length), 6);
  lines.push(`${'module'.padEnd(w)}  ${'params'.padStart(11)} ${'share'.padStart(6)}  ${'MFLOP'.padStart(10)} ${'share'.padStart(6)}  ${'ms'.padStart(8)} ${'share'.padStart(6)}`);
  for (const m of p.modules) {
    lines.push(`${m.name.padEnd(w)}  ${fmtInt(m.params).padStart(11)} ${pct(m.params, p.params).padStart(6)}  ${mflop(m.flops).padStart(10)} ${pct(m.flops, p.flops).padStart(6)}  ${m.ms.toFixed(3).padStart(8)} ${pct(m.ms, p.moduleMs).padStart(6)}`);
  }
  lines.push(`${'total'.padEnd(w)}  ${fmtInt(p.params).padStart(11)} ${''.padStart(6)}  ${mflop(p.flops).padStart(10)} ${''.padStart(6)}  ${p.moduleMs.toFixed(3).padStart(8)}`);
  const by = (g: string) => p.modules.filter((m) => m.group === g);
  const sum = (ms: typeof p.modules, k: 'params' | 'flops' | 'ms') => ms.reduce((a, m) => a + m[k], 0);
  lines.push(
    `by part: ${['embeddings', 'attention', 'ffn', 'head'].map((g) => `${g} ${pct(sum(by(g), 'params'), p.params)} of params, ${pct(sum(by(g), 'flops'), p.flops)} of FLOPs, ${pct(sum(by(g), 'ms'), p.moduleMs)} of time`).join('; ')}`,
  );
  return lines.join('\n');
}

/** The latency table: measured points and the fitted piecewise-linear function of each block. */
export function renderLut(t: LatencyTable, file?: string): string {
  const curve = (name: string, c: LatencyTable['mha']) =>
    [
      `${name}: ${c.fit.zero.toFixed(3)} ms at 0, ${c.fit.c.toFixed(3)} ms up to ${c.fit.threshold}, then +${(c.fit.slope * 1000).toFixed(2)} us per unit (fit)`,
      `  units ${c.units.join(' ')}`,
      `  ms    ${c.ms.map((m) => m.toFixed(3)).join(' ')}`,
    ].join('\n');
  return [`latency table${file ? ` ${file}` : ''}: batch ${t.batch} x ${t.seq} tokens on ${t.backend}${t.threads !== undefined ? `, ${t.threads} native threads` : ''}; one layer's blocks`, curve('attention (heads)', t.mha), curve('FFN (neurons)', t.ffn)].join('\n');
}

/**
 * `topiary profile MODEL`: per-module parameters, FLOPs and measured forward time; `--lut FILE` also
 * measures and writes the latency table the latency-constrained retraining-free search reads.
 */
export function registerProfile(program: Command, globals: () => { json: boolean }, backend: () => Promise<unknown>): void {
  program
    .command('profile <model>')
    .description('parameters, FLOPs and measured forward time per module (embeddings, each layer\'s attention and FFN parts, pooler/classifier); --lut writes the latency table of one layer\'s attention and FFN blocks by heads and neurons kept')
    .option('--batch <n>', 'batch size of the timed input', positive('--batch'), 32)
    .option('--seq <n>', 'tokens per sequence of the timed input', positive('--seq'), 128)
    .option('--repeats <n>', 'timed repetitions per module (the median is reported)', positive('--repeats'), 20)
    .option('--lut <file>', 'also measure the latency table and write it to <file> (JSON)')
    .option('--lut-only', 'with --lut: skip the per-module profile', false)
    .option('--neuron-points <n>', 'FFN sizes measured for the table, evenly spaced (plus powers of two)', positive('--neuron-points'), 32)
    .action(async (dir: string, o: ProfileCliOptions) => {
      await backend();
      if (o.lutOnly && !o.lut) throw new UsageError('--lut-only needs --lut <file>');
      // Topiary replaces only what it wrote: an existing --lut file must be a latency table.
      if (o.lut && existsSync(o.lut)) {
        let format: unknown;
        try {
          format = JSON.parse(readFileSync(o.lut, 'utf8'))?.format;
        } catch {
          format = undefined;
        }
        if (format !== 'topiary-latency-lut') throw new UsageError(`--lut ${o.lut}: the file exists and is not a latency table Topiary wrote; choose another path`);
      }
      const model = await loadBert(dir);
      try {
        if (o.seq > model.config.maxPositionEmbeddings) throw new UsageError(`--seq ${o.seq} exceeds the model's max_position_embeddings ${model.config.maxPositionEmbeddings}`);
        const profile = o.lutOnly ? undefined : await profileModel(model, { batch: o.batch, seq: o.seq, repeats: o.repeats });
        const threads = nativeGemm().binding?.threads;
        const lut = o.lut ? measureLatencyTable(model.config, { batch: o.batch, seq: o.seq, repeats: o.repeats, neuronPoints: o.neuronPoints, ...(threads !== undefined ? { threads } : {}) }) : undefined;
        if (lut && o.lut) await writeFileAtomic(o.lut, `${JSON.stringify(lut, null, 1)}\n`);
        const text = [profile ? renderProfile(dir, profile) : '', lut ? renderLut(lut, o.lut) : ''].filter(Boolean).join('\n\n');
        process.stdout.write(globals().json ? `${JSON.stringify({ ...(profile ? { profile } : {}), ...(lut ? { lut, lutFile: o.lut } : {}) })}\n` : `${text}\n`);
      } finally {
        model.dispose();
      }
    });
}
