import { existsSync, promises as fs, statSync } from 'node:fs';
import * as path from 'node:path';
import { ConfigError, EVENTS_FILE, MASKS_FILE, OutputError, pseudoFilesystem, readConfig, readEventLog, readJsonFile, readSafetensors, writeFileAtomic } from '@topiary/core';
import { accuracyChart, keptHeatmap, lossChart, sparsityChart, tradeoffChart, type Chart } from './charts.js';
import { keptFromMasks, keptPerLayer, runCurves, type KeptCell, type RunCurves } from './data.js';
import { GENERATOR, esc, fmtNum, fmtPct, fmtText, renderPage, table, type Column, type Page } from './html.js';
import { toSvg, toVega } from './render.js';
import { bestPerSparsity, markFronts, readSweep, tradeoffPoints, type SweepRun } from './sweep.js';

export const SWEEP_FILE = 'sweep.json';
export const REPORT_HTML = 'report.html';

/** A report before it is written: the page's parts and the charts. */
export interface Report {
  kind: 'run' | 'sweep';
  title: string;
  subtitle: string;
  facts: [string, string][];
  charts: Chart[];
  sections: { title: string; html: string }[];
  notes: string[];
  /** Files the report was made from (never overwritten). */
  inputs: string[];
}

type RunReportJson = Record<string, unknown> & {
  method?: string;
  accuracy?: number;
  teacherAccuracy?: number | null;
  encoderSparsity?: number;
  totalSparsity?: number;
  targetSparsity?: number | null;
  params?: number;
  exportedParams?: number;
  wallSeconds?: number;
  levels?: Record<string, unknown>[];
};

/** What the report of a run folder shows, from report.json, events.ndjson and the model's config (or the checkpoint's masks). */
export async function runReport(dir: string): Promise<Report> {
  const reportFile = path.join(dir, 'report.json');
  const eventsFile = path.join(dir, EVENTS_FILE);
  const notes: string[] = [];
  const report = existsSync(reportFile) ? ((await readJsonFile(reportFile, 'a run report')) as RunReportJson) : undefined;
  if (!report) notes.push(`${reportFile} is missing: the run has not finished; curves and layers come from its events and checkpoint.`);
  let curves: RunCurves | undefined;
  if (existsSync(eventsFile)) curves = runCurves(await readEventLog(eventsFile));
  else notes.push(`${eventsFile} is missing (a run from before Topiary logged its events): no loss, accuracy or sparsity curves.`);
  const kept = await keptCells(dir);
  if (!kept) notes.push(`no model/config.json nor checkpoint/ in ${dir}: no per-layer heatmap.`);
  const charts: Chart[] = [];
  if (curves && curves.loss.length > 0) charts.push(lossChart(curves));
  if (curves && (curves.accuracy.length > 0 || curves.exportedAccuracy !== null)) charts.push(accuracyChart(curves, report?.teacherAccuracy ?? null));
  if (curves && curves.sparsity.length > 0) charts.push(sparsityChart(curves));
  if (kept) charts.push(keptHeatmap(kept.cells));
  const facts: [string, string][] = [];
  if (report) {
    if (report.accuracy !== undefined) facts.push(['dev accuracy (exported model)', pctText(report.accuracy)]);
    if (report.teacherAccuracy !== undefined && report.teacherAccuracy !== null) facts.push(['teacher accuracy', pctText(report.teacherAccuracy)]);
    if (report.accuracy !== undefined && report.teacherAccuracy) facts.push(['accuracy kept', pctText(report.accuracy / report.teacherAccuracy, 1)]);
    if (report.encoderSparsity !== undefined) facts.push(['encoder sparsity', pctText(report.encoderSparsity)]);
    if (report.exportedParams !== undefined && report.params !== undefined) facts.push(['parameters', `${report.exportedParams.toLocaleString('en-US')} of ${report.params.toLocaleString('en-US')}`]);
    if (report.wallSeconds !== undefined) facts.push(['wall time', `${report.wallSeconds.toFixed(1)} s`]);
  }
  if (curves) {
    const steps = curves.loss.reduce((m, p) => Math.max(m, p.step), 0);
    if (steps > 0) facts.push(['training steps', steps.toLocaleString('en-US')]);
  }
  const sections: Report['sections'] = [];
  const levels = report?.levels ?? [];
  if (levels.length > 0) sections.push({ title: 'Levels', html: levelTable(levels) });
  if (kept) sections.push({ title: 'Kept per layer', html: keptTable(kept.cells) + `<p class="sub">from ${esc(kept.from)}</p>` });
  if (report) {
    const rest = Object.entries(report).filter(([k, v]) => k !== 'levels' && k !== 'kernels' && (typeof v !== 'object' || v === null));
    sections.push({ title: 'report.json', html: table<[string, unknown]>([{ title: 'field', cell: ([k]) => ({ text: k }) }, { title: 'value', cell: ([, v]) => ({ text: JSON.stringify(v) }) }], rest) });
  }
  return {
    kind: 'run',
    title: `Topiary run: ${path.basename(path.resolve(dir))}`,
    subtitle: `${report?.method ? `method ${report.method}` : 'a run'}${report?.targetSparsity !== undefined && report.targetSparsity !== null ? `, target encoder sparsity ${pctText(report.targetSparsity, 0)}` : ''} · ${path.resolve(dir)}`,
    facts,
    charts,
    sections,
    notes,
    inputs: [reportFile, eventsFile],
  };
}

const pctText = (v: number, digits = 2) => `${(100 * v).toFixed(digits)}%`;

async function keptCells(dir: string): Promise<{ cells: KeptCell[]; from: string } | undefined> {
  const model = path.join(dir, 'model');
  if (existsSync(path.join(model, 'config.json'))) return { cells: keptPerLayer(await readConfig(model)), from: `${path.join(model, 'config.json')} (per-layer sizes against the dense sizes)` };
  const ckpt = path.join(dir, 'checkpoint');
  if (existsSync(path.join(ckpt, 'model', 'config.json')) && existsSync(path.join(ckpt, MASKS_FILE))) {
    const config = await readConfig(path.join(ckpt, 'model'));
    return { cells: keptFromMasks(await readSafetensors(path.join(ckpt, MASKS_FILE)), config), from: `${path.join(ckpt, MASKS_FILE)} (the last checkpoint's masks)` };
  }
  return undefined;
}

function levelTable(levels: Record<string, unknown>[]): string {
  const keys = [...new Set(levels.flatMap((l) => Object.keys(l)))].filter((k) => k !== 'model');
  const columns: Column<Record<string, unknown>>[] = keys.map((k) => ({
    title: k,
    cell: (row) => {
      const v = row[k];
      if (typeof v !== 'number') return fmtText(v === undefined ? null : typeof v === 'object' ? JSON.stringify(v) : v);
      return /sparsity|accuracy|f1/i.test(k) ? fmtPct(v) : fmtNum(v);
    },
  }));
  return table(columns, levels);
}

function keptTable(cells: KeptCell[]): string {
  const layers = [...new Set(cells.map((c) => c.layer))];
  const get = (l: number, kind: KeptCell['kind']) => cells.find((c) => c.layer === l && c.kind === kind)!;
  return table<number>(
    [
      { title: 'layer', cell: (l) => fmtNum(l) },
      { title: 'heads kept', cell: (l) => ({ text: `${get(l, 'heads').kept} / ${get(l, 'heads').total}`, cls: 'num' }) },
      { title: 'FFN neurons kept', cell: (l) => ({ text: `${get(l, 'FFN neurons').kept} / ${get(l, 'FFN neurons').total}`, cls: 'num' }) },
    ],
    layers,
  );
}

/** What the report of a sweep shows, from its sweep.json. */
export async function sweepReport(file: string, htmlDir = path.dirname(file)): Promise<Report> {
  const sweep = await readSweep(file);
  const runs = sweep.runs;
  const count = (s: SweepRun['status']) => runs.filter((r) => r.status === s).length;
  const teacher = median(runs.map((r) => r.teacherAccuracy).filter((v): v is number => v !== null));
  const charts: Chart[] = [];
  const bySparsity = markFronts(tradeoffPoints(runs, 'encoderSparsity'));
  const bySpeedup = markFronts(tradeoffPoints(runs, 'speedup'));
  const notes: string[] = [];
  if (bySparsity.length > 0) charts.push(tradeoffChart('accuracy-sparsity', 'Accuracy against encoder sparsity', 'encoder sparsity', bySparsity, '.0%', teacher));
  else notes.push('no completed run with an accuracy and an encoder sparsity yet: no trade-off plot.');
  if (bySpeedup.length > 0) charts.push(tradeoffChart('accuracy-speedup', 'Accuracy against measured speedup', 'speedup (x dense)', bySpeedup, '.2f', teacher));
  else if (bySparsity.length > 0) notes.push('no run has a measured speedup: no speedup plot.');
  const front = new Set([...bySparsity, ...bySpeedup].filter((p) => p.front).map((p) => p.id));
  const link = (r: SweepRun) => path.relative(htmlDir, path.join(path.dirname(file), r.out, REPORT_HTML));
  const axes = sweep.sweep.axes;
  const runColumns: Column<SweepRun>[] = [
    { title: 'run', cell: (r) => ({ text: r.id, sort: r.id, ...(existsSync(path.join(path.dirname(file), r.out, REPORT_HTML)) ? { href: link(r) } : {}) }) },
    { title: 'status', cell: (r) => fmtText(r.status) },
    { title: 'method', cell: (r) => fmtText(r.method) },
    ...axes.filter((a) => a !== 'method').map((a): Column<SweepRun> => ({ title: a, cell: (r) => axisCell(r.values[a]) })),
    { title: 'encoder sparsity', cell: (r) => fmtPct(r.encoderSparsity) },
    { title: 'accuracy', cell: (r) => fmtPct(r.accuracy) },
    { title: 'teacher', cell: (r) => fmtPct(r.teacherAccuracy) },
    { title: 'kept', cell: (r) => fmtPct(r.accuracy !== null && r.teacherAccuracy ? r.accuracy / r.teacherAccuracy : null, 1) },
    { title: 'parameters', cell: (r) => fmtNum(r.exportedParams) },
    { title: 'speedup', cell: (r) => ({ ...fmtNum(r.speedup, 2), ...(r.speedup !== null ? { text: `${r.speedup.toFixed(2)}x` } : {}) }) },
    { title: 'wall (s)', cell: (r) => fmtNum(r.wallSeconds, 0) },
    { title: 'host', cell: (r) => fmtText(r.host) },
    { title: 'Pareto', cell: (r) => ({ text: front.has(r.id) ? 'yes' : '', sort: front.has(r.id) ? 1 : 0 }) },
    { title: 'error', cell: (r) => fmtText(r.error ?? '') },
  ];
  const best = bestPerSparsity(runs);
  const bestTable = table(
    [
      { title: 'sparsity level', cell: (b) => fmtPct(b.level, 0) },
      { title: 'best run', cell: (b) => ({ text: b.run.id }) },
      { title: 'method', cell: (b) => fmtText(b.run.method) },
      { title: 'encoder sparsity', cell: (b) => fmtPct(b.run.encoderSparsity) },
      { title: 'accuracy', cell: (b) => fmtPct(b.run.accuracy) },
      { title: 'speedup', cell: (b) => (b.run.speedup === null ? fmtNum(null) : { text: `${b.run.speedup.toFixed(2)}x`, cls: 'num' }) },
      { title: 'parameters', cell: (b) => fmtNum(b.run.exportedParams) },
      { title: 'of runs', cell: (b) => fmtNum(b.candidates) },
    ],
    best,
  );
  const runTable = table(runColumns, runs, { sortable: true, id: 'runs', caption: 'click a column to sort; a run with its own report is linked from its id' });
  return {
    kind: 'sweep',
    title: `Topiary sweep: ${path.basename(sweep.sweep.file)}`,
    subtitle: `${sweep.sweep.executor} executor, created ${sweep.sweep.created} · axes ${axes.join(', ') || '(none)'} · ${path.resolve(file)}`,
    facts: [
      ['runs', String(runs.length)],
      ['completed', String(count('completed'))],
      ['failed', String(count('failed'))],
      ['pending', String(count('pending'))],
      ['methods', [...new Set(runs.map((r) => r.method))].join(', ')],
      ...(teacher !== null ? ([['teacher accuracy (median)', pctText(teacher)]] as [string, string][]) : []),
    ],
    charts,
    sections: [
      { title: 'Best run per sparsity level', html: best.length > 0 ? bestTable : '<p class="sub">no completed run yet</p>' },
      { title: 'All runs', html: runTable },
    ],
    notes,
    inputs: [file],
  };
}

function axisCell(v: unknown) {
  if (typeof v === 'number') return fmtNum(v);
  return fmtText(v === undefined ? null : typeof v === 'object' && v !== null ? JSON.stringify(v) : v);
}

function median(vs: number[]): number | null {
  if (vs.length === 0) return null;
  const s = [...vs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export interface WriteReportOptions {
  /** The HTML file (default `<RUN_OR_SWEEP folder>/report.html`); the SVGs go beside it. */
  out?: string;
  /** Replace files of those names that `topiary report` did not write. */
  force?: boolean;
}

export interface WrittenReport {
  kind: 'run' | 'sweep';
  html: string;
  svgs: string[];
}

/** Where the input is: a sweep (a sweep.json, or a folder holding one) or a run folder. */
export function locate(input: string): { kind: 'run' | 'sweep'; path: string; dir: string } {
  if (!existsSync(input)) throw new ConfigError(`${input}: not found, expected a run folder (report.json, events.ndjson) or a sweep (sweep.json or its folder)`);
  if (statSync(input).isFile()) {
    if (path.basename(input) === 'report.json') return { kind: 'run', path: path.dirname(input), dir: path.dirname(input) };
    return { kind: 'sweep', path: input, dir: path.dirname(input) };
  }
  if (existsSync(path.join(input, SWEEP_FILE))) return { kind: 'sweep', path: path.join(input, SWEEP_FILE), dir: input };
  if (['report.json', EVENTS_FILE, 'checkpoint'].some((f) => existsSync(path.join(input, f)))) return { kind: 'run', path: input, dir: input };
  throw new ConfigError(`${input}: holds neither sweep.json nor a run's report.json, events.ndjson or checkpoint/, expected a run folder or a sweep`);
}

/** Writes the report of a run folder or a sweep: one self-contained HTML file and an SVG per chart beside it. */
export async function writeReport(input: string, opts: WriteReportOptions = {}): Promise<WrittenReport> {
  const where = locate(input);
  const html = path.resolve(opts.out ?? path.join(where.dir, REPORT_HTML));
  const report = where.kind === 'sweep' ? await sweepReport(where.path, path.dirname(html)) : await runReport(where.path);
  const stem = path.basename(html).replace(/\.html?$/i, '');
  const compiled = report.charts.map((c) => ({ chart: c, spec: toVega(c), svg: path.join(path.dirname(html), `${stem}-${c.name}.svg`) }));
  const targets = [html, ...compiled.map((c) => c.svg)];
  await checkTargets(targets, report.inputs, Boolean(opts.force));
  await fs.mkdir(path.dirname(html), { recursive: true });
  for (const c of compiled) {
    const svg = await toSvg(c.spec);
    await writeFileAtomic(c.svg, `<!-- ${GENERATOR}: ${esc(c.chart.title)} -->\n${svg}\n`);
  }
  const page: Page = {
    title: report.title,
    subtitle: report.subtitle,
    facts: report.facts,
    notes: report.notes,
    sections: report.sections,
    charts: compiled.map((c) => ({ title: c.chart.title, ...(c.chart.caption ? { caption: c.chart.caption } : {}), spec: c.spec, svg: path.basename(c.svg) })),
  };
  await writeFileAtomic(html, renderPage(page));
  return { kind: report.kind, html, svgs: compiled.map((c) => c.svg) };
}

/** Topiary only replaces what it wrote: an existing file without the report's mark is refused unless forced; an input never. */
async function checkTargets(targets: string[], inputs: string[], force: boolean): Promise<void> {
  for (const t of targets) {
    const fsName = await pseudoFilesystem(t);
    if (fsName) throw new OutputError(`--out ${t}: is on the ${fsName} pseudo filesystem, expected a file on a real disk`);
    if (inputs.some((i) => path.resolve(i) === t)) throw new OutputError(`--out ${t}: is an input of the report; choose another file (even with --force)`);
    let head: string;
    try {
      const stat = await fs.stat(t);
      if (stat.isDirectory()) throw new OutputError(`--out ${t}: is a folder, expected an HTML file name`);
      const fd = await fs.open(t, 'r');
      try {
        const buf = Buffer.alloc(2048);
        const { bytesRead } = await fd.read(buf, 0, buf.length, 0);
        head = buf.subarray(0, bytesRead).toString('utf8');
      } finally {
        await fd.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    if (!head.includes(GENERATOR) && !force) throw new OutputError(`${t}: exists and was not written by topiary report; choose another --out, or pass --force to replace it`);
  }
}
