import type * as vega from 'vega';
import { vegaRuntime } from './render.js';

/** Marks a file `topiary report` wrote, so a later report may replace it (and nothing else). */
export const GENERATOR = 'topiary report';

export const esc = (s: unknown): string => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A table cell: the text shown and, for sorting, the value it stands for (numbers sort as numbers). */
export interface Cell {
  text: string;
  sort?: number | string | null;
  /** Extra class (`num` aligns right). */
  cls?: string;
  /** Makes the text a link. */
  href?: string;
}

export interface Column<T> {
  title: string;
  cell: (row: T) => Cell;
}

export function table<T>(columns: Column<T>[], rows: readonly T[], opts: { sortable?: boolean; id?: string; caption?: string } = {}): string {
  const head = columns.map((c) => `<th scope="col">${esc(c.title)}</th>`).join('');
  const body = rows
    .map((r) => {
      const cells = columns.map((c) => {
        const v = c.cell(r);
        const sort = v.sort === undefined || v.sort === null ? '' : ` data-sort="${esc(v.sort)}"`;
        const text = v.href !== undefined ? `<a href="${esc(v.href)}">${esc(v.text)}</a>` : esc(v.text);
        return `<td${v.cls ? ` class="${v.cls}"` : ''}${sort}>${text}</td>`;
      });
      return `<tr>${cells.join('')}</tr>`;
    })
    .join('\n');
  const attrs = `${opts.id ? ` id="${esc(opts.id)}"` : ''}${opts.sortable ? ' class="sortable"' : ''}`;
  return `<table${attrs}>${opts.caption ? `<caption>${esc(opts.caption)}</caption>` : ''}<thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

export const fmtPct = (v: number | null | undefined, digits = 2): Cell => (v === null || v === undefined || !Number.isFinite(v) ? { text: '–', cls: 'num' } : { text: `${(100 * v).toFixed(digits)}%`, sort: v, cls: 'num' });
export const fmtNum = (v: number | null | undefined, digits?: number): Cell =>
  v === null || v === undefined || !Number.isFinite(v) ? { text: '–', cls: 'num' } : { text: digits === undefined ? v.toLocaleString('en-US') : v.toFixed(digits), sort: v, cls: 'num' };
export const fmtText = (v: unknown): Cell => ({ text: v === null || v === undefined ? '–' : String(v), sort: v === null || v === undefined ? null : String(v) });

export interface PageChart {
  title: string;
  caption?: string;
  spec: vega.Spec;
  /** The SVG file written beside the page, linked from the chart. */
  svg: string;
}

export interface Page {
  title: string;
  subtitle: string;
  /** Key figures shown at the top. */
  facts: [string, string][];
  charts: PageChart[];
  /** HTML sections after the charts (already escaped). */
  sections: { title: string; html: string }[];
  notes: string[];
}

// Click a header to sort by it (numbers by their data-sort value), again to reverse.
const SORT_JS = `
for (const table of document.querySelectorAll('table.sortable')) {
  table.querySelectorAll('th').forEach((th, col) => {
    th.tabIndex = 0;
    const sort = () => {
      const dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
      table.querySelectorAll('th').forEach((o) => { delete o.dataset.dir; o.removeAttribute('aria-sort'); });
      th.dataset.dir = dir;
      th.setAttribute('aria-sort', dir === 'asc' ? 'ascending' : 'descending');
      const body = table.tBodies[0];
      const key = (tr) => { const td = tr.cells[col]; const v = td.dataset.sort; return v === undefined ? null : (v !== '' && !isNaN(Number(v)) ? Number(v) : v); };
      const rows = [...body.rows].sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === null || y === null) return x === y ? 0 : x === null ? 1 : -1;
        const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
        return dir === 'asc' ? c : -c;
      });
      body.append(...rows);
    };
    th.addEventListener('click', sort);
    th.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); } });
  });
}`;

// Renders every chart with Vega's runtime as SVG; the page says when all are done (data-rendered).
const CHARTS_JS = `
const specs = JSON.parse(document.getElementById('topiary-specs').textContent);
Promise.all(specs.map((spec, i) => {
  const el = document.getElementById('chart-' + i);
  return new vega.View(vega.parse(spec), { renderer: 'svg', container: el, hover: true }).runAsync()
    .catch((err) => { el.textContent = 'this chart failed to render: ' + err.message; console.error(err); });
})).then(() => { document.body.dataset.rendered = 'true'; });`;

const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 16px 24px 48px; color: #222; }
h1 { font-size: 22px; margin: 8px 0 2px; } h2 { font-size: 17px; margin: 28px 0 8px; } .sub { color: #666; margin: 0 0 16px; }
.facts { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; } .fact { border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; }
.fact b { display: block; font-size: 17px; } .fact span { color: #666; font-size: 12px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 16px; }
figure { margin: 0; border: 1px solid #eee; border-radius: 6px; padding: 8px; overflow-x: auto; } figcaption { font-weight: 600; margin-bottom: 4px; } figcaption a { font-weight: 400; font-size: 12px; margin-left: 8px; color: #06c; } figcaption small { display: block; font-weight: 400; color: #666; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; } caption { text-align: left; color: #666; padding-bottom: 4px; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 4px 10px; text-align: left; } td.num { text-align: right; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th::after { content: ' \\2195'; color: #bbb; }
table.sortable th[data-dir=asc]::after { content: ' \\2191'; color: #333; } table.sortable th[data-dir=desc]::after { content: ' \\2193'; color: #333; }
.note { color: #8a5a00; background: #fff8e6; border-left: 3px solid #f0b400; padding: 6px 10px; margin: 8px 0; }`;

/** Inline JSON in a script element: `<` escaped so no `</script>` can end it early. */
const inlineJson = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');

/** One self-contained HTML page: Vega's runtime, the compiled specs and their data are all inline. */
export function renderPage(page: Page): string {
  const figures = page.charts
    .map((c, i) => `<figure><figcaption>${esc(c.title)}<a href="${esc(c.svg)}">SVG</a>${c.caption ? `<small>${esc(c.caption)}</small>` : ''}</figcaption><div class="chart" id="chart-${i}"></div></figure>`)
    .join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="${GENERATOR}">
<title>${esc(page.title)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>${esc(page.title)}</h1>
<p class="sub">${esc(page.subtitle)}</p>
<div class="facts">${page.facts.map(([k, v]) => `<div class="fact"><b>${esc(v)}</b><span>${esc(k)}</span></div>`).join('')}</div>
${page.notes.map((n) => `<p class="note">${esc(n)}</p>`).join('\n')}
<div class="charts">
${figures}
</div>
${page.sections.map((s) => `<h2>${esc(s.title)}</h2>\n${s.html}`).join('\n')}
<script>${vegaRuntime().replace(/<\/script/gi, '<\\/script')}</script>
<script type="application/json" id="topiary-specs">${inlineJson(page.charts.map((c) => c.spec))}</script>
<script>${SORT_JS}
${CHARTS_JS}</script>
</body>
</html>
`;
}
