import { Observable } from 'rxjs';

/** Loss terms of one step, by name (`ce`, `kd`, `layer`, `lagrangian`, `contrastive`...), plus the total. */
export type LossTerms = Record<string, number> & { total: number };

export interface Metrics {
  accuracy: number;
  macroF1: number;
  loss?: number;
  examples: number;
}

export interface SparsityReport {
  /** Fraction of encoder (attention + FFN) weights pruned, as CoFi and CAP count it. */
  encoderSparsity: number;
  /** Fraction of all parameters pruned (embeddings, pooler and classifier included). */
  totalSparsity: number;
  encoderParams: number;
  remainingEncoderParams: number;
}

/** The micro-batch a run trains with (`training.microBatchSize`) and what it was sized for. */
export interface MemoryPlan {
  batchSize: number;
  microBatchSize: number;
  /** `config`: set by the user; `auto`: the largest that fits by the estimate; `whole`: no memory limit known. */
  source: 'config' | 'auto' | 'whole';
  /** The padded sequence length the estimate assumed (the longest training example, at most maxLength). */
  seqLen: number;
  /** The backend's memory limit (wasm's heap), null when it has none Topiary knows. */
  limitBytes: number | null;
  /** The estimated peak of a step at the chosen micro-batch. */
  estimatedStepBytes: number | null;
  params: number;
}

/** Everything a run reports, as a union on `type`; `--json` prints these as NDJSON. */
export type RunEvent =
  | { type: 'run-started'; method: string; backend: string; /** Kernels Topiary replaced on the backend. */ kernels?: string[]; totalSteps: number; time: string; /** Examples per forward/backward pass, how it was chosen and the memory it was sized for. */ memory?: MemoryPlan }
  | { type: 'epoch-started'; epoch: number; phase?: string }
  | { type: 'step'; step: number; totalSteps: number; epoch: number; loss: LossTerms; learningRate: number; phase?: string }
  | { type: 'evaluated'; step: number; metrics: Metrics; phase?: string; label?: string }
  | { type: 'masks-updated'; step: number; sparsity: SparsityReport; level?: number; target?: number }
  | { type: 'checkpoint-saved'; step: number; path: string }
  | { type: 'warning'; message: string }
  | { type: 'log'; message: string }
  | { type: 'run-completed'; metrics: Record<string, unknown>; wallSeconds: number }
  /** The last event of a run (or command) that failed: `--json` prints it on stdout before exiting. */
  | { type: 'run-failed'; error: RunFailure }
  /** The run was aborted and stopped at a step boundary; `checkpoint` is the last one written (null: none). */
  | { type: 'run-interrupted'; step: number | null; checkpoint: string | null; reason: string; /** The command that continues the run (the CLI adds it). */ resume?: string };

/** Why a run stopped: the error's name and message, and the exit code class of the CLI. */
export interface RunFailure {
  /** The error's class name (`ConfigError`, `DataError`, `SafetensorsError`, `OutputError`, `Error`...). */
  name: string;
  message: string;
  /** `usage`: bad input or configuration (exit 2); `failure`: a runtime failure (exit 3); `interrupted` (130). */
  kind: 'usage' | 'failure' | 'interrupted';
  exitCode: number;
}

export type RunEventType = RunEvent['type'];

/** What a run procedure gets: a way to report, and the signal that says stop. */
export interface RunControl {
  emit(event: RunEvent): void;
  signal: AbortSignal;
  /** Throws `RunAborted` when the signal has fired; call it at step boundaries. */
  checkpoint(): void;
}

export class RunAborted extends Error {
  override name = 'RunAborted';
  constructor() {
    super('run aborted');
  }
}

/**
 * Turns a procedure into a cold Observable: each subscription starts its own run with its own
 * AbortController (the rxjs `fromFetch` pattern); unsubscribing aborts it, and the procedure stops at
 * its next step boundary. An outer `signal` aborts it too.
 */
export function createRun(procedure: (control: RunControl) => Promise<void>, outer?: AbortSignal): Observable<RunEvent> {
  return new Observable<RunEvent>((subscriber) => {
    const controller = new AbortController();
    const onOuter = () => controller.abort(outer?.reason);
    if (outer) {
      if (outer.aborted) controller.abort(outer.reason);
      else outer.addEventListener('abort', onOuter, { once: true });
    }
    const control: RunControl = {
      emit: (event) => {
        if (!subscriber.closed) subscriber.next(event);
      },
      signal: controller.signal,
      checkpoint: () => {
        if (controller.signal.aborted) throw new RunAborted();
      },
    };
    // Start on the next tick so a synchronous unsubscribe-in-subscribe is honoured.
    Promise.resolve()
      .then(() => {
        control.checkpoint();
        return procedure(control);
      })
      .then(
        () => subscriber.complete(),
        (err: unknown) => {
          if (err instanceof RunAborted) subscriber.complete();
          else subscriber.error(err instanceof Error ? err : new Error(String(err)));
        },
      );
    return () => {
      outer?.removeEventListener('abort', onOuter);
      controller.abort();
    };
  });
}
