import { closeSync, fsyncSync, openSync, readSync, renameSync, fstatSync, writeSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { RunEvent } from '../events.js';
import { tempName } from './outputs.js';

/** A run folder's event history: every event of `topiary run`, as `--json` prints them, one per line. */
export const EVENTS_FILE = 'events.ndjson';

export interface EventLog {
  write(event: RunEvent): void;
  /** True once the first event was written (the run had started and made its folder). */
  readonly opened: boolean;
  close(): void;
}

export interface EventLogOptions {
  /** Continue an existing log (a resumed run); otherwise the log replaces the previous run's. */
  append?: boolean;
}

/**
 * An NDJSON event log, opened at the first event (the run creates its folder before it emits any).
 * A new log is started under a temporary sibling name and renamed over the previous run's once its
 * first line is written, so a run that fails before it starts leaves the old log whole; later lines
 * are appended to the same file. Each event is one write of one whole line, so a kill leaves at most
 * a partial last line, which `parseEventLog` skips and an appending run closes with a newline first.
 */
export function openEventLog(file: string, opts: EventLogOptions = {}): EventLog {
  let fd: number | undefined;
  let closed = false;
  const open = (first: string) => {
    if (opts.append) {
      fd = openSync(file, 'a+');
      const size = fstatSync(fd).size;
      if (size > 0) {
        const last = Buffer.alloc(1);
        readSync(fd, last, 0, 1, size - 1);
        if (last[0] !== 0x0a) writeSync(fd, '\n');
      }
      writeSync(fd, first);
      return;
    }
    const tmp = path.join(path.dirname(file), tempName(path.basename(file)));
    fd = openSync(tmp, 'wx');
    writeSync(fd, first);
    renameSync(tmp, file);
  };
  return {
    get opened() {
      return fd !== undefined;
    },
    write(event) {
      if (closed) return;
      const line = `${JSON.stringify(event)}\n`;
      if (fd === undefined) open(line);
      else writeSync(fd, line);
    },
    close() {
      if (closed) return;
      closed = true;
      if (fd === undefined) return;
      fsyncSync(fd);
      closeSync(fd);
    },
  };
}

/** The events of an NDJSON log; a line that is not a JSON object with a `type` (a kill mid-write) is skipped. */
export function parseEventLog(text: string): RunEvent[] {
  const events: RunEvent[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const e = JSON.parse(line) as unknown;
      if (e && typeof e === 'object' && typeof (e as { type?: unknown }).type === 'string') events.push(e as RunEvent);
    } catch {
      // a partial line
    }
  }
  return events;
}

export async function readEventLog(file: string): Promise<RunEvent[]> {
  return parseEventLog(await fs.readFile(file, 'utf8'));
}
