import type { Executor } from './results.js';
import type { RunProgress } from './runner.js';

/** What a sweep reports, as a union on `type`; `topiary sweep --json` prints these as NDJSON. */
export type SweepEvent =
  | { type: 'sweep-started'; file: string; out: string; executor: Executor; runs: number; /** Runs already completed, skipped. */ skipped: string[]; lanes: number | null; time: string }
  | ({ type: 'sweep-run-progress' } & RunProgress)
  | { type: 'sweep-run-completed'; id: string; host: string; accuracy: number | null; encoderSparsity: number | null; speedup: number | null; wallSeconds: number | null }
  /** `willRetry`: BullMQ retries it (with backoff); else the run's row is `failed`. */
  | { type: 'sweep-run-failed'; id: string; error: string; willRetry: boolean }
  | { type: 'sweep-completed'; completed: number; failed: number; pending: number; wallSeconds: number; results: string };

export type SweepEventType = SweepEvent['type'];
