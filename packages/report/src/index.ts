/**
 * @topiary/report: self-contained HTML reports of pruning runs and sweeps (Vega-Lite charts, compiled
 * and inlined with Vega's runtime and the data), with each chart also written as an SVG file.
 */
export { writeReport, runReport, sweepReport, locate, REPORT_HTML, SWEEP_FILE } from './report.js';
export type { Report, WriteReportOptions, WrittenReport } from './report.js';
export { keptFromMasks, keptPerLayer, paretoFront, runCurves } from './data.js';
export type { AccuracyPoint, KeptCell, LossPoint, RunCurves, SparsityPoint, TradeoffPoint } from './data.js';
export { SweepFileSchema, bestPerSparsity, markFronts, readSweep, sparsityLevel, tradeoffPoints } from './sweep.js';
export type { BestAtLevel, SweepFile, SweepRun } from './sweep.js';
export { accuracyChart, keptHeatmap, lossChart, sparsityChart, tradeoffChart } from './charts.js';
export type { Chart } from './charts.js';
export { toSvg, toVega } from './render.js';
