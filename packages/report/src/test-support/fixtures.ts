import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { EVENTS_FILE, type RunEvent } from '@topiary/core';
import type { SweepFile } from '../sweep.js';

/**
 * A sweep.json as `topiary sweep` writes it: 3 methods x 2 target sparsities on bert-tiny, plus a
 * failed and a pending run. The figures are made up, shaped like real ones (a teacher at 74%).
 */
export function sweepFixture(): SweepFile {
  const methods = ['first-order', 'cofi', 'movement'];
  const levels = [0.5, 0.7];
  const acc: Record<string, number[]> = { 'first-order': [0.731, 0.702], cofi: [0.725, 0.712], movement: [0.718, 0.69] };
  const speed: Record<string, number[]> = { 'first-order': [1.41, 1.95], cofi: [1.52, 2.3], movement: [1.05, 1.1] };
  const runs: SweepFile['runs'] = [];
  for (const method of methods) {
    for (const [i, level] of levels.entries()) {
      runs.push({
        id: `${method.slice(0, 2)}${i}a1b2c3`,
        values: { method, 'pruner.options.targetSparsity': level },
        status: 'completed',
        method,
        out: `runs/${method}-${level}`,
        encoderSparsity: level - 0.004 + 0.001 * i,
        accuracy: acc[method]![i]!,
        teacherAccuracy: 0.7424,
        params: 1483688,
        exportedParams: Math.round(1483688 - 395520 * level),
        speedup: speed[method]![i]!,
        wallSeconds: 60 + 30 * i,
        host: i === 0 ? 'worker-a' : 'worker-b',
        error: null,
      });
    }
  }
  runs.push({ id: 'fa0d0d0d', values: { method: 'cofi', 'pruner.options.targetSparsity': 0.9 }, status: 'failed', method: 'cofi', out: 'runs/cofi-0.9', encoderSparsity: null, accuracy: null, teacherAccuracy: null, params: null, exportedParams: null, speedup: null, wallSeconds: 12.5, host: 'worker-a', error: 'training: loss is NaN at step 40' });
  runs.push({ id: 'pe0e0e0e', values: { method: 'movement', 'pruner.options.targetSparsity': 0.9 }, status: 'pending', method: 'movement', out: 'runs/movement-0.9', encoderSparsity: null, accuracy: null, teacherAccuracy: null, params: null, exportedParams: null, speedup: null, wallSeconds: null, host: null, error: null });
  return { sweep: { file: 'docs/experiments/sweep-tiny.yaml', axes: ['method', 'pruner.options.targetSparsity'], executor: 'local', created: '2026-12-02T20:00:00.000Z' }, runs };
}

/**
 * A run folder as `topiary run` leaves it, without the weights: report.json, events.ndjson (two
 * levels of iterative pruning, evaluations, the exported model's accuracy) and model/config.json with
 * per-layer sizes, made from the bundled bert-tiny's config.
 */
export function writeRunFixture(dir: string, tinyModelDir: string): { report: Record<string, unknown>; events: RunEvent[]; heads: number[]; intermediate: number[] } {
  const raw = JSON.parse(readFileSync(path.join(tinyModelDir, 'config.json'), 'utf8')) as Record<string, number>;
  const L = raw['num_hidden_layers']!;
  const heads = Array.from({ length: L }, (_, l) => Math.max(1, raw['num_attention_heads']! - 1 - (l % 2)));
  const intermediate = Array.from({ length: L }, (_, l) => Math.round(raw['intermediate_size']! * (0.55 - 0.1 * l)));
  mkdirSync(path.join(dir, 'model'), { recursive: true });
  writeFileSync(path.join(dir, 'model', 'config.json'), JSON.stringify({ ...raw, topiary_layer_heads: heads, topiary_layer_intermediate: intermediate }));
  const events: RunEvent[] = [{ type: 'run-started', method: 'structured', backend: 'wasm', kernels: [], totalSteps: 40, time: '2026-12-02T20:00:00.000Z' }];
  const levels = [0.25, 0.5];
  const sparsity = (s: number) => ({ encoderSparsity: s, totalSparsity: s / 3.7, encoderParams: 395520, remainingEncoderParams: Math.round(395520 * (1 - s)) });
  for (const [i, target] of levels.entries()) {
    events.push({ type: 'masks-updated', step: 20 * i, sparsity: sparsity(target - 0.001), level: i + 1, target });
    for (let s = 1; s <= 20; s++) {
      const step = 20 * i + s;
      const kd = 0.4 * Math.exp(-s / 8) + 0.05 * (i + 1);
      events.push({ type: 'step', step, totalSteps: 40, epoch: 0, loss: { kd, ce: kd * 1.7, total: kd * 0.9 + kd * 0.17 }, learningRate: 1e-4, phase: `level ${i + 1}/2` });
      if (s % 10 === 0) events.push({ type: 'evaluated', step, metrics: { accuracy: 0.74 - 0.02 * i - 0.01 / s, macroF1: 0.4, examples: 300 }, phase: `level ${i + 1}/2` });
    }
  }
  events.push({ type: 'evaluated', step: -1, metrics: { accuracy: 0.7306, macroF1: 0.47, loss: 1.1, examples: 9547 }, label: 'exported model' });
  const report = {
    method: 'structured',
    targetSparsity: 0.5,
    encoderSparsity: 0.499,
    totalSparsity: 0.133,
    teacherAccuracy: 0.7424,
    accuracy: 0.7306,
    macroF1: 0.47,
    levels: levels.map((t, i) => ({ level: i + 1, targetSparsity: t, encoderSparsity: t - 0.001, accuracy: 0.74 - 0.02 * i, remainingEncoderParams: Math.round(395520 * (1 - t)), heads: 4 - i, neurons: 896 - 128 * i })),
    params: 1483688,
    exportedParams: 1286184,
    wallSeconds: 48.6,
  };
  events.push({ type: 'run-completed', metrics: report, wallSeconds: 48.6 });
  writeFileSync(path.join(dir, 'report.json'), JSON.stringify(report, null, 2));
  writeFileSync(path.join(dir, EVENTS_FILE), events.map((e) => `${JSON.stringify(e)}\n`).join(''));
  return { report, events, heads, intermediate };
}

/** A sweep folder holding its sweep.json. */
export function writeSweepFixture(dir: string): SweepFile {
  const sweep = sweepFixture();
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'sweep.json'), JSON.stringify(sweep, null, 2));
  return sweep;
}
