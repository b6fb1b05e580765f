import { describe, expect, it } from 'vitest';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { RunEvent } from '../events.js';
import { EVENTS_FILE, openEventLog, parseEventLog, readEventLog } from './event-log.js';

const scratch = () => mkdtempSync(path.join(tmpdir(), 'topiary-events-'));
const log = (message: string): RunEvent => ({ type: 'log', message });

describe('event log (events.ndjson)', () => {
  it('writes one event per line, as --json prints them, and reads them back', async () => {
    const file = path.join(scratch(), EVENTS_FILE);
    const events: RunEvent[] = [log('a'), { type: 'step', step: 1, totalSteps: 2, epoch: 0, loss: { total: 1.5, kd: 1 }, learningRate: 1e-4 }, log('b')];
    const l = openEventLog(file);
    for (const e of events) l.write(e);
    l.close();
    const text = readFileSync(file, 'utf8');
    expect(text).toBe(events.map((e) => `${JSON.stringify(e)}\n`).join(''));
    expect(await readEventLog(file)).toEqual(events);
  });

  it('creates nothing before the first event; a new log replaces the previous one only then, with no temporary left', () => {
    const dir = scratch();
    const file = path.join(dir, EVENTS_FILE);
    writeFileSync(file, `${JSON.stringify(log('old'))}\n`);
    const l = openEventLog(file);
    expect(l.opened).toBe(false);
    expect(parseEventLog(readFileSync(file, 'utf8'))).toEqual([log('old')]);
    l.write(log('new'));
    expect(l.opened).toBe(true);
    expect(parseEventLog(readFileSync(file, 'utf8'))).toEqual([log('new')]);
    l.write(log('newer'));
    l.close();
    l.write(log('after close'));
    expect(parseEventLog(readFileSync(file, 'utf8'))).toEqual([log('new'), log('newer')]);
    expect(readdirSync(dir)).toEqual([EVENTS_FILE]);
    const unused = openEventLog(path.join(dir, 'other.ndjson'));
    unused.close();
    expect(existsSync(path.join(dir, 'other.ndjson'))).toBe(false);
  });

  it('appends for a resumed run, closing a partial last line left by a kill first', () => {
    const file = path.join(scratch(), EVENTS_FILE);
    writeFileSync(file, `${JSON.stringify(log('first run'))}\n{"type":"step","st`);
    const l = openEventLog(file, { append: true });
    l.write(log('resumed'));
    l.close();
    expect(parseEventLog(readFileSync(file, 'utf8'))).toEqual([log('first run'), log('resumed')]);
    // Appending to a log that ends cleanly adds no blank line.
    const l2 = openEventLog(file, { append: true });
    l2.write(log('again'));
    l2.close();
    expect(readFileSync(file, 'utf8').split('\n').filter((s) => s === '').length).toBe(1); // only after the last line
    appendFileSync(file, 'not json\n');
    expect(parseEventLog(readFileSync(file, 'utf8')).map((e) => (e as { message: string }).message)).toEqual(['first run', 'resumed', 'again']);
  });
});
