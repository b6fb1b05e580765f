import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { writeReport } from './report.js';
import { writeRunFixture, writeSweepFixture } from './test-support/fixtures.js';

// The report as a person sees it: opened from disk in headless Chromium (Debian's `chromium`, or
// CHROMIUM_PATH), charts drawn as SVG, no console errors, no request beyond the file itself.
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const TINY = path.join(REPO, 'examples/models/bert-tiny-wordnet-supersense');
const executablePath = [process.env['CHROMIUM_PATH'], '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p): p is string => Boolean(p && existsSync(p)));
if (!executablePath) console.warn('browser test skipped: no chromium found (apt-get install chromium, or set CHROMIUM_PATH)');

const work = mkdtempSync(path.join(tmpdir(), 'topiary-report-browser-'));

interface Opened {
  page: Page;
  errors: string[];
  requests: string[];
}

describe.runIf(executablePath)('the report in headless Chromium', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: executablePath!, args: ['--no-sandbox'], timeout: 60_000 });
  });
  afterAll(async () => {
    await browser?.close();
  });

  async function open(html: string): Promise<Opened> {
    const page = await browser.newPage({ viewport: { width: 1320, height: 900 } });
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(pathToFileURL(html).href);
    await page.waitForSelector('body[data-rendered="true"]', { timeout: 20_000 });
    return { page, errors, requests };
  }

  /** Marks Vega drew in each chart: paths of line, area, rect, symbol and rule marks, and text marks. */
  const marksPerChart = (page: Page) =>
    page.$$eval('.chart', (charts) => charts.map((c) => c.querySelectorAll('svg g[class*="mark-"] path, svg g[class*="mark-"] line, svg g.mark-text text').length));

  it('a run: every chart drawn as SVG with marks, no console error, nothing fetched', async () => {
    const dir = path.join(work, 'run');
    writeRunFixture(dir, TINY);
    const r = await writeReport(dir);
    const { page, errors, requests } = await open(r.html);
    const marks = await marksPerChart(page);
    expect(marks).toHaveLength(r.svgs.length);
    for (const n of marks) expect(n).toBeGreaterThan(0);
    // The heatmap: one rect per (layer, kind) cell.
    const cells = await page.$$eval('.chart', (charts) => charts.at(-1)!.querySelectorAll('svg g.mark-rect path').length);
    expect(cells).toBeGreaterThanOrEqual(2 * 2);
    expect(errors).toEqual([]);
    expect(requests).toEqual([pathToFileURL(r.html).href]);
    await page.screenshot({ path: path.join(work, 'run.png'), fullPage: true });
    await page.close();
  });

  it('a sweep: both trade-off plots drawn, the run table sorts by a column on click', async () => {
    const dir = path.join(work, 'sweep');
    const sweep = writeSweepFixture(dir);
    const r = await writeReport(dir);
    const { page, errors, requests } = await open(r.html);
    const marks = await marksPerChart(page);
    expect(marks).toHaveLength(2);
    for (const n of marks) expect(n).toBeGreaterThan(0);
    // One symbol per completed run in each plot's points layer (and the ringed front on top).
    const completed = sweep.runs.filter((x) => x.status === 'completed').length;
    const symbols = await page.$$eval('.chart', (charts) => charts.map((c) => c.querySelectorAll('svg g.mark-symbol path').length));
    for (const n of symbols) expect(n).toBeGreaterThan(completed);
    const column = await page.$$eval('#runs th', (ths) => ths.findIndex((th) => th.textContent === 'accuracy'));
    const values = async () =>
      page.$$eval('#runs tbody tr', (rows, col) => rows.map((tr) => (tr as HTMLTableRowElement).cells[col as number]!.dataset['sort'] ?? null), column);
    const want = sweep.runs.map((x) => x.accuracy).filter((v): v is number => v !== null);
    await page.click(`#runs th:nth-child(${column + 1})`);
    const asc = await values();
    expect(asc.slice(0, want.length).map(Number)).toEqual([...want].sort((a, b) => a - b));
    expect(asc.slice(want.length)).toEqual(Array(sweep.runs.length - want.length).fill(null)); // runs without one go last
    await page.click(`#runs th:nth-child(${column + 1})`);
    expect((await values()).slice(0, want.length).map(Number)).toEqual([...want].sort((a, b) => b - a));
    expect(errors).toEqual([]);
    expect(requests).toEqual([pathToFileURL(r.html).href]);
    await page.screenshot({ path: path.join(work, 'sweep.png'), fullPage: true });
    await page.close();
  });
});
