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
