import { describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { OutputError, readConfig } from '@topiary/core';
import { keptPerLayer, runCurves } from './data.js';
import { locate, writeReport } from './report.js';
import { writeRunFixture, writeSweepFixture } from './test-support/fixtures.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const TINY = path.join(REPO, 'examples/models/bert-tiny-wordnet-supersense');
const scratch = () => mkdtempSync(path.join(tmpdir(), 'topiary-report-'));

/** The compiled Vega specs the page inlines. */
function pageSpecs(html: string): any[] {
  const m = /<script type="application\/json" id="topiary-specs">([\s\S]*?)<\/script>/.exec(html);
  expect(m).not.toBeNull();
  return JSON.parse(m![1]!);
}
/** Rows of one inline data set of a compiled spec (Vega names them data_0, data_1...). */
const specData = (spec: any): Record<string, unknown>[][] => spec.data.filter((d: any) => Array.isArray(d.values)).map((d: any) => d.values);

describe('writeReport: a run folder', () => {
  it('writes one self-contained page and an SVG per chart beside it, with the run\'s data', async () => {
    const dir = path.join(scratch(), 'run');
    const fx = writeRunFixture(dir, TINY);
    const r = await writeReport(dir);
    expect(r.kind).toBe('run');
    expect(r.html).toBe(path.join(dir, 'report.html'));
    expect(r.svgs.map((s) => path.basename(s))).toEqual(['report-loss.svg', 'report-accuracy.svg', 'report-sparsity.svg', 'report-kept.svg']);
    for (const svg of r.svgs) {
      const text = readFileSync(svg, 'utf8');
      expect(text).toMatch(/<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
      // Marks drawn: a mark group with at least one path (lines, rects, symbols).
      expect(text).toMatch(/class="mark-(line|rect|symbol)[^"]*"[^>]*>\s*<path/);
    }
    const html = readFileSync(r.html, 'utf8');
    // Self-contained: no external script, style or image.
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=|<img[^>]+src="http/);
    const specs = pageSpecs(html);
    expect(specs).toHaveLength(4);
    // The loss chart carries every (step, term) of the log, the heatmap the config's per-layer sizes.
    const curves = runCurves(fx.events);
    const lossRows = specData(specs[0]).flat();
    expect(lossRows).toHaveLength(curves.loss.length);
    const kept = specData(specs[3]).flat() as { layer: number; kind: string; kept: number; total: number }[];
    const raw = JSON.parse(readFileSync(path.join(TINY, 'config.json'), 'utf8'));
    for (const [l, h] of fx.heads.entries()) expect(kept).toContainEqual(expect.objectContaining({ layer: l, kind: 'heads', kept: h, total: raw.num_attention_heads }));
    for (const [l, n] of fx.intermediate.entries()) expect(kept).toContainEqual(expect.objectContaining({ layer: l, kind: 'FFN neurons', kept: n, total: raw.intermediate_size }));
    expect(kept).toHaveLength(keptPerLayer(await readConfig(path.join(dir, 'model'))).length);
    // The level table: a row per level of report.json.
    const levels = /<h2>Levels<\/h2>\s*<table>[\s\S]*?<tbody>([\s\S]*?)<\/tbody>/.exec(html)![1]!;
    expect(levels.match(/<tr>/g)).toHaveLength((fx.report['levels'] as unknown[]).length);
  });

  it('replaces its own files, refuses others\' unless forced, and never writes over an input', async () => {
    const dir = path.join(scratch(), 'run');
    writeRunFixture(dir, TINY);
    await writeReport(dir);
    await writeReport(dir); // its own: replaced
    const mine = path.join(dir, 'mine.html');
    writeFileSync(mine, '<p>my notes</p>');
    await expect(writeReport(dir, { out: mine })).rejects.toThrow(OutputError);
    await expect(writeReport(dir, { out: mine })).rejects.toThrow(/mine\.html: exists and was not written by topiary report/);
    expect(readFileSync(mine, 'utf8')).toBe('<p>my notes</p>');
    // An SVG of that name that is not the report's is refused too, and nothing is written.
    writeFileSync(path.join(dir, 'other-loss.svg'), '<svg/>');
    await expect(writeReport(dir, { out: path.join(dir, 'other.html') })).rejects.toThrow(/other-loss\.svg/);
    expect(existsSync(path.join(dir, 'other.html'))).toBe(false);
    await writeReport(dir, { out: mine, force: true });
    expect(readFileSync(mine, 'utf8')).toContain('topiary report');
    await expect(writeReport(dir, { out: path.join(dir, 'report.json'), force: true })).rejects.toThrow(/is an input of the report/);
    // No temporaries left.
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('a run with an empty event log still gets its heatmap; a folder that is no run nor sweep is refused', async () => {
    const dir = path.join(scratch(), 'run');
    writeRunFixture(dir, TINY);
    const noEvents = path.join(dir, 'events.ndjson');
    writeFileSync(noEvents, '');
    const r = await writeReport(dir);
    expect(r.svgs.map((s) => path.basename(s))).toEqual(['report-kept.svg']);
    expect(() => locate(mkdtempSync(path.join(tmpdir(), 'empty-')))).toThrow(/holds neither sweep\.json nor a run's report\.json/);
  });
});

describe('writeReport: a sweep', () => {
  it('plots accuracy against sparsity and speedup with the fronts, a sortable row per run, the best run per level', async () => {
    const dir = path.join(scratch(), 'sweep');
    const sweep = writeSweepFixture(dir);
    // A run folder with its own report gets linked from the table.
    mkdirSync(path.join(dir, sweep.runs[0]!.out), { recursive: true });
    writeFileSync(path.join(dir, sweep.runs[0]!.out, 'report.html'), '<meta name="generator" content="topiary report">');
    const r = await writeReport(path.join(dir, 'sweep.json'), { out: path.join(dir, 'out', 'index.html') });
    expect(r.kind).toBe('sweep');
    expect(r.svgs.map((s) => path.basename(s))).toEqual(['index-accuracy-sparsity.svg', 'index-accuracy-speedup.svg']);
    const html = readFileSync(r.html, 'utf8');
    const specs = pageSpecs(html);
    const completed = sweep.runs.filter((x) => x.status === 'completed');
    // Every completed run is a point of both plots.
    for (const spec of specs) {
      const rows = specData(spec);
      expect(rows.some((d) => d.length === completed.length && completed.every((c) => d.some((p) => p['id'] === c.id)))).toBe(true);
    }
    const body = /<table id="runs" class="sortable">[\s\S]*?<tbody>([\s\S]*?)<\/tbody>/.exec(html)![1]!;
    expect(body.match(/<tr>/g)).toHaveLength(sweep.runs.length);
    expect(body).toContain(`<a href="../${sweep.runs[0]!.out}/report.html">${sweep.runs[0]!.id}</a>`);
    expect(html).toContain(sweep.runs.find((x) => x.status === 'failed')!.error!);
    const best = /<h2>Best run per sparsity level<\/h2>\s*<table>[\s\S]*?<tbody>([\s\S]*?)<\/tbody>/.exec(html)![1]!;
    const levels = new Set(completed.map((c) => c.values['pruner.options.targetSparsity']));
    expect(best.match(/<tr>/g)).toHaveLength(levels.size);
  });
});
