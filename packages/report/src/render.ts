import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import * as vega from 'vega';
import { compile } from 'vega-lite';
import type { Chart } from './charts.js';

/** A chart's Vega spec: compiled here, so the page needs Vega's runtime only (not Vega-Lite's compiler). */
export function toVega(chart: Chart): vega.Spec {
  return compile(chart.spec).spec as vega.Spec;
}

/** The chart as a standalone SVG document, rendered headless (no DOM, no canvas). */
export async function toSvg(spec: vega.Spec): Promise<string> {
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

let runtime: string | undefined;

/** Vega's browser build (UMD, defines `vega`), to inline in the page. */
export function vegaRuntime(): string {
  if (runtime === undefined) {
    // The package exports only its ES module; the minified browser build sits beside it.
    const entry = createRequire(import.meta.url).resolve('vega');
    runtime = readFileSync(path.join(path.dirname(entry), 'vega.min.js'), 'utf8');
  }
  return runtime;
}
