import * as path from 'node:path';
import type { Command } from 'commander';
import { writeReport } from '@topiary/report';

/** `topiary report RUN_OR_SWEEP`: one self-contained HTML file, and each chart as an SVG beside it. */
export function registerReport(program: Command, globals: () => { json: boolean }): void {
  program
    .command('report <runOrSweep>')
    .description('an HTML report of a run folder (curves, sparsity, heads and neurons kept per layer, levels) or a sweep (accuracy against sparsity and speedup, Pareto fronts, sortable table), with each chart as an SVG beside it')
    .option('--out <file>', 'the HTML file (default: <run or sweep folder>/report.html)')
    .option('--force', 'replace files of those names that topiary report did not write', false)
    .action(async (input: string, o: { out?: string; force: boolean }) => {
      const r = await writeReport(input, { ...(o.out ? { out: o.out } : {}), force: o.force });
      const rel = (p: string) => {
        const r = path.relative(process.cwd(), p);
        return r && !r.startsWith('..') ? r : p;
      };
      process.stdout.write(globals().json ? `${JSON.stringify(r)}\n` : `wrote ${rel(r.html)} (${r.kind}) and ${r.svgs.length} SVG file(s): ${r.svgs.map((s) => path.basename(s)).join(', ')}\n`);
    });
}
