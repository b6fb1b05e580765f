import { describe, expect, it } from 'vitest';
import { take, toArray, lastValueFrom } from 'rxjs';
import { createRun, type RunEvent } from './events.js';

/** A run of `n` steps that records which steps started and whether it finished cleanly. */
function countingRun(n: number, log: { started: number[]; finished: boolean }) {
  return createRun(async (control) => {
    control.emit({ type: 'run-started', method: 'test', backend: 'none', totalSteps: n, time: '' });
    try {
      for (let step = 1; step <= n; step++) {
        control.checkpoint(); // the step boundary
        log.started.push(step);
        await new Promise((r) => setTimeout(r, 2));
        control.emit({ type: 'step', step, totalSteps: n, epoch: 0, loss: { total: 1 / step }, learningRate: 0 });
      }
    } finally {
      log.finished = true;
    }
  });
}

describe('run event stream', () => {
  it('is cold: each subscription runs the procedure anew', async () => {
    const log = { started: [] as number[], finished: false };
    const run = countingRun(3, log);
    expect(log.started).toEqual([]);
    const a = await lastValueFrom(run.pipe(toArray()));
    const b = await lastValueFrom(run.pipe(toArray()));
    expect(a.filter((e) => e.type === 'step')).toHaveLength(3);
    expect(b.filter((e) => e.type === 'step')).toHaveLength(3);
    expect(log.started).toEqual([1, 2, 3, 1, 2, 3]);
  });

  it('stops at the next step boundary when the subscriber unsubscribes', async () => {
    const log = { started: [] as number[], finished: false };
    const events: RunEvent[] = [];
    const sub = countingRun(100, log).subscribe((e) => {
      events.push(e);
      if (e.type === 'step' && e.step === 3) sub.unsubscribe();
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(log.finished).toBe(true);
    // Step 4 may not start: the abort lands before its boundary check.
    expect(log.started).toEqual([1, 2, 3]);
    expect(events.filter((e) => e.type === 'step')).toHaveLength(3);
  });

  it('stops when an outer AbortSignal fires, and completes the stream', async () => {
    const controller = new AbortController();
    const log = { started: [] as number[], finished: false };
    const run = createRun(async (control) => {
      for (let step = 1; step <= 100; step++) {
        control.checkpoint();
        log.started.push(step);
        if (step === 2) controller.abort();
        await new Promise((r) => setTimeout(r, 1));
      }
    }, controller.signal);
    await lastValueFrom(run, { defaultValue: undefined });
    expect(log.started).toEqual([1, 2]);
  });

  it('ends the stream with an Error that says what failed', async () => {
    const run = createRun(async () => {
      throw new Error('loading model: config.json not found');
    });
    await expect(lastValueFrom(run)).rejects.toThrow('config.json not found');
  });

  it('take(n) unsubscribes after n events', async () => {
    const log = { started: [] as number[], finished: false };
    const events = await lastValueFrom(countingRun(50, log).pipe(take(3), toArray()));
    expect(events).toHaveLength(3);
    await new Promise((r) => setTimeout(r, 50));
    expect(log.finished).toBe(true);
    expect(log.started.length).toBeLessThanOrEqual(3);
  });
});
