import type { TopLevelSpec } from 'vega-lite';
import type { KeptCell, RunCurves, TradeoffPoint } from './data.js';

/** A named plot: its Vega-Lite spec (data inlined) and a caption. */
export interface Chart {
  /** File-name part of its SVG (`loss` -> `report-loss.svg`). */
  name: string;
  title: string;
  /** How to read it, under the title. */
  caption?: string;
  spec: TopLevelSpec;
}

const WIDTH = 440;
const HEIGHT = 260;
const base = { $schema: 'https://vega.github.io/schema/vega-lite/v6.json', width: WIDTH, height: HEIGHT, config: { font: 'system-ui, sans-serif', view: { stroke: '#ddd' } } } as const;
const pct = { format: '.1%' } as const;

/** Each loss term per step (faint), and its moving mean over about a fiftieth of the run (solid). */
export function lossChart(curves: RunCurves): Chart {
  const steps = new Set(curves.loss.map((p) => p.step)).size;
  const window = Math.max(1, Math.round(steps / 50));
  const x = { field: 'step', type: 'quantitative', title: 'step' } as const;
  const color = { field: 'term', type: 'nominal', title: 'term' } as const;
  return {
    name: 'loss',
    title: 'Training loss per step',
    ...(window > 1 ? { caption: `faint: every step; solid: the mean of the last ${window} steps` } : {}),
    spec: {
      ...base,
      data: { values: curves.loss },
      layer: [
        {
          mark: { type: 'line', strokeWidth: 1, opacity: window > 1 ? 0.25 : 1 },
          encoding: { x, y: { field: 'value', type: 'quantitative', title: 'loss' }, color, tooltip: [{ field: 'step' }, { field: 'term' }, { field: 'value', format: '.4f' }, { field: 'phase' }] },
        },
        ...(window > 1
          ? [
              {
                transform: [{ window: [{ op: 'mean', field: 'value', as: 'mean' }], frame: [-(window - 1), 0], groupby: ['term'], sort: [{ field: 'step' }] }],
                mark: { type: 'line', strokeWidth: 1.8 },
                encoding: { x, y: { field: 'mean', type: 'quantitative' }, color },
              },
            ]
          : []),
      ],
    } as TopLevelSpec,
  };
}

/** Dev accuracy at each evaluation, with the teacher's and the exported model's as rules. */
export function accuracyChart(curves: RunCurves, teacherAccuracy: number | null): Chart {
  const rules = [
    ...(teacherAccuracy !== null ? [{ what: 'teacher', accuracy: teacherAccuracy }] : []),
    ...(curves.exportedAccuracy !== null ? [{ what: 'exported model', accuracy: curves.exportedAccuracy }] : []),
  ];
  return {
    name: 'accuracy',
    title: 'Dev accuracy during the run',
    // Pruners may evaluate on a sample of the dev split during the run (`levelEvalExamples`).
    caption: `points: the run's evaluations (a pruner may use part of the dev split)${rules.length > 0 ? '; dashed: on the whole dev split' : ''}`,
    spec: {
      ...base,
      layer: [
        {
          data: { values: curves.accuracy },
          mark: { type: 'line', point: true },
          encoding: {
            x: { field: 'step', type: 'quantitative', title: 'step' },
            y: { field: 'accuracy', type: 'quantitative', title: 'dev accuracy', axis: pct, scale: { zero: false } },
            tooltip: [{ field: 'step' }, { field: 'accuracy', format: '.2%' }, { field: 'macroF1', format: '.2%', title: 'macro-F1' }, { field: 'phase' }],
          },
        },
        {
          data: { values: rules },
          mark: { type: 'rule', strokeDash: [4, 3] },
          encoding: {
            y: { field: 'accuracy', type: 'quantitative' },
            color: { field: 'what', type: 'nominal', title: null, scale: { range: ['#d62728', '#888'] } },
            tooltip: [{ field: 'what' }, { field: 'accuracy', format: '.2%' }],
          },
        },
      ],
    } as TopLevelSpec,
  };
}

/** Encoder and total sparsity after each mask update (a step function), targets as points. */
export function sparsityChart(curves: RunCurves): Chart {
  const values = curves.sparsity.flatMap((p) => [
    { step: p.step, what: 'encoder', sparsity: p.encoderSparsity, level: p.level },
    { step: p.step, what: 'total', sparsity: p.totalSparsity, level: p.level },
  ]);
  const targets = curves.sparsity.filter((p) => p.target !== null).map((p) => ({ step: p.step, target: p.target, level: p.level }));
  return {
    name: 'sparsity',
    title: 'Sparsity over steps',
    spec: {
      ...base,
      layer: [
        {
          data: { values },
          mark: { type: 'line', interpolate: 'step-after', point: true },
          encoding: {
            x: { field: 'step', type: 'quantitative', title: 'step' },
            y: { field: 'sparsity', type: 'quantitative', title: 'sparsity', axis: pct, scale: { domain: [0, 1] } },
            color: { field: 'what', type: 'nominal', title: 'parameters' },
            tooltip: [{ field: 'step' }, { field: 'what' }, { field: 'sparsity', format: '.2%' }, { field: 'level' }],
          },
        },
        {
          data: { values: targets },
          mark: { type: 'point', shape: 'cross', color: '#000', size: 60 },
          encoding: {
            x: { field: 'step', type: 'quantitative' },
            y: { field: 'target', type: 'quantitative' },
            tooltip: [{ field: 'level' }, { field: 'target', format: '.2%', title: 'target encoder sparsity' }],
          },
        },
      ],
    } as TopLevelSpec,
  };
}

/** Fraction of heads and FFN neurons kept per layer, with the counts written in the cells. */
export function keptHeatmap(cells: KeptCell[]): Chart {
  const values = cells.map((c) => ({ ...c, label: `${c.kept}/${c.total}` }));
  return {
    name: 'kept',
    title: 'Heads and FFN neurons kept per layer',
    spec: {
      ...base,
      height: 110,
      data: { values },
      encoding: {
        x: { field: 'layer', type: 'ordinal', title: 'layer', axis: { labelAngle: 0 } },
        y: { field: 'kind', type: 'nominal', title: null },
      },
      layer: [
        {
          mark: { type: 'rect', stroke: '#fff' },
          encoding: {
            color: { field: 'fraction', type: 'quantitative', title: 'kept', scale: { domain: [0, 1], scheme: 'greens' }, legend: { format: '.0%' } },
            tooltip: [{ field: 'layer' }, { field: 'kind' }, { field: 'kept' }, { field: 'total' }, { field: 'fraction', format: '.1%', title: 'kept' }],
          },
        },
        {
          mark: { type: 'text', fontSize: 11 },
          encoding: {
            text: { field: 'label' },
            color: { condition: { test: 'datum.fraction > 0.6', value: '#fff' }, value: '#000' },
          },
        },
      ],
    } as TopLevelSpec,
  };
}

/**
 * Accuracy against a sweep coordinate, a colour per method: each method's Pareto front as a line
 * through its points, and the points on the front of all runs ringed in black.
 */
export function tradeoffChart(name: string, title: string, xTitle: string, points: (TradeoffPoint & { front: boolean; methodFront: boolean })[], xFormat: string, teacherAccuracy: number | null): Chart {
  const methodFront = points.filter((p) => p.methodFront).sort((a, b) => a.x - b.x);
  const front = points.filter((p) => p.front);
  // Padding (pixels) keeps the extreme points and their rings inside the frame.
  const x = { field: 'x', type: 'quantitative', title: xTitle, axis: { format: xFormat }, scale: { zero: false, padding: 14 } } as const;
  const y = { field: 'accuracy', type: 'quantitative', title: 'dev accuracy', axis: pct, scale: { zero: false, padding: 14 } } as const;
  const tooltip = [{ field: 'id', title: 'run' }, { field: 'method' }, { field: 'x', title: xTitle, format: xFormat }, { field: 'accuracy', format: '.2%' }, { field: 'front', title: 'on the Pareto front' }];
  return {
    name,
    title,
    caption: `a point per completed run; lines: each method's Pareto front; black rings: the Pareto front of all runs${teacherAccuracy !== null ? '; dashed: the teacher' : ''}`,
    spec: {
      ...base,
      layer: [
        ...(teacherAccuracy !== null
          ? [{ data: { values: [{ accuracy: teacherAccuracy }] }, mark: { type: 'rule', strokeDash: [4, 3], color: '#888' }, encoding: { y: { field: 'accuracy', type: 'quantitative' }, tooltip: [{ field: 'accuracy', format: '.2%', title: 'teacher accuracy' }] } }]
          : []),
        { data: { values: methodFront }, mark: { type: 'line', strokeWidth: 1.5, opacity: 0.7 }, encoding: { x, y, color: { field: 'method', type: 'nominal', title: 'method' }, order: { field: 'x', type: 'quantitative' } } },
        { data: { values: points }, mark: { type: 'point', filled: true, size: 70 }, encoding: { x, y, color: { field: 'method', type: 'nominal', title: 'method' }, shape: { field: 'method', type: 'nominal', title: 'method' }, tooltip } },
        { data: { values: front }, mark: { type: 'point', filled: false, size: 260, color: '#000', strokeWidth: 1.5 }, encoding: { x, y, tooltip } },
      ],
    } as TopLevelSpec,
  };
}
