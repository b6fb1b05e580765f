import cliProgress from 'cli-progress';
import type { RunEvent } from '@topiary/core';

export interface Renderer {
  event(e: RunEvent): void;
  /** Human-readable lines (stderr in both modes, so stdout stays machine-readable with --json). */
  log(message: string): void;
  close(): void;
}

/** `--json`: every event as one NDJSON line on stdout. */
export function ndjsonRenderer(): Renderer {
  return {
    event: (e) => process.stdout.write(`${JSON.stringify(e)}\n`),
    log: (m) => process.stderr.write(`${m}\n`),
    close: () => {},
  };
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

/** Progress bars on stderr (a plain line per event when stderr is not a terminal). */
export function progressRenderer(): Renderer {
  const tty = Boolean(process.stderr.isTTY);
  let bar: cliProgress.SingleBar | undefined;
  let lastPrinted = 0;
  const line = (m: string) => {
    if (bar) bar.stop();
    process.stderr.write(`${m}\n`);
    bar = undefined;
  };
  return {
    event(e) {
      switch (e.type) {
        case 'run-started':
          line(`${e.method} on ${e.backend}${e.kernels?.length ? ` (Topiary kernels: ${e.kernels.join(', ')})` : ''}: ${e.totalSteps} training steps${e.memory ? `, micro-batch ${e.memory.microBatchSize} of ${e.memory.batchSize} (${e.memory.source})` : ''}`);
          break;
        case 'step': {
          const loss = Object.entries(e.loss).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(' ');
          if (tty) {
            if (!bar) {
              bar = new cliProgress.SingleBar({ format: `${e.phase ?? 'train'} [{bar}] {value}/{total} {loss} lr {lr}`, stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic);
              bar.start(e.totalSteps, e.step, { loss, lr: e.learningRate.toExponential(2) });
            }
            bar.setTotal(e.totalSteps);
            bar.update(e.step, { loss, lr: e.learningRate.toExponential(2) });
          } else if (Date.now() - lastPrinted > 5000 || e.step === e.totalSteps) {
            lastPrinted = Date.now();
            process.stderr.write(`${e.phase ?? 'train'} step ${e.step}/${e.totalSteps} ${loss}\n`);
          }
          break;
        }
        case 'evaluated':
          line(`${e.label ?? e.phase ?? 'eval'} @ step ${e.step}: accuracy ${pct(e.metrics.accuracy)}, macro-F1 ${pct(e.metrics.macroF1)}`);
          break;
        case 'masks-updated':
          line(`masks${e.level !== undefined ? ` (level ${e.level})` : ''}: encoder sparsity ${pct(e.sparsity.encoderSparsity)}, total ${pct(e.sparsity.totalSparsity)}`);
          break;
        case 'checkpoint-saved':
          line(`saved ${e.path}`);
          break;
        case 'warning':
          line(`warning: ${e.message}`);
          break;
        case 'log':
          line(e.message);
          break;
        case 'run-completed':
          line(`done in ${e.wallSeconds.toFixed(1)} s`);
          break;
        case 'run-interrupted':
          line(
            e.checkpoint
              ? `interrupted (${e.reason}): stopped at step ${e.step}; checkpoint ${e.checkpoint}${e.resume ? `\nresume with: ${e.resume}` : ''}`
              : `interrupted (${e.reason}) before the first checkpoint: nothing to resume; run the command again to start over`,
          );
          break;
        case 'epoch-started':
        case 'run-failed': // the CLI prints the error itself
          break;
      }
    },
    log: line,
    close: () => bar?.stop(),
  };
}
