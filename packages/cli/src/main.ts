import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { lastValueFrom, tap, type Observable } from 'rxjs';
import {
  BACKEND_NAMES,
  ConfigError,
  DataError,
  DEFAULT_TRAINING,
  EVENTS_FILE,
  PluginError,
  SafetensorsError,
  assertTokenizerFits,
  compact,
  createRunContainer,
  defaultFinetuneLearningRate,
  evaluate,
  isBackendInstalled,
  loadBert,
  loadDataset,
  loadMasks,
  loadTokenizer,
  prepareOutput,
  readConfig,
  runFinetune,
  nativeGemm,
  openEventLog,
  runPruning,
  structureFromWeightMasks,
  useBackend,
  type BackendName,
  type EventLog,
  type RunEvent,
  type RunFailure,
} from '@topiary/core';
import { UsageError, assertValidRunConfig, readRunConfig } from './config.js';
import { allPlugins } from './plugins.js';
import { inspectModel } from './inspect.js';
import { EXPORT_FORMATS, QUANTIZE_MODES, cardFromReport, exportAfterRun, writeModel, type ExportFormat, type QuantizeMode } from './formats.js';
import { registerPredict } from './predict.js';
import { registerReport } from './report.js';
import { registerSweep } from './sweep.js';
import { registerProfile } from './profile.js';
import { ndjsonRenderer, progressRenderer, type Renderer } from './render.js';

/** Exit codes: 0 done, 1 ran but missed its target, 2 usage/config error, 3 runtime failure, 130 interrupted. */
export const EXIT = { ok: 0, missedTarget: 1, usage: 2, failure: 3, interrupted: 130 } as const;

interface GlobalOptions {
  backend: BackendName | 'auto';
  plugin: string[];
  json: boolean;
}

const version = (): string => {
  const pkg = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'package.json');
  return JSON.parse(readFileSync(pkg, 'utf8')).version as string;
};

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${name} must be a positive integer, got '${v}'`);
  return n;
};
const seedArg = (v: string) => {
  const n = Number(v);
  if (!/^\s*-?\d+\s*$/.test(v) || !Number.isSafeInteger(n)) throw new UsageError(`--seed must be an integer, got '${v}'`);
  return n;
};
const num = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${name} must be a positive number, got '${v}'`);
  return n;
};

/** What a command prints: one JSON document with --json, else readable lines; both on stdout. */
function output(json: boolean, data: unknown, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(data)}\n` : `${text}\n`);
}

function renderer(json: boolean): Renderer {
  return json ? ndjsonRenderer() : progressRenderer();
}

/** Exit codes of a run stopped by a signal (128 + the signal's number, as shells report it). */
const SIGNAL_EXIT = { SIGINT: EXIT.interrupted, SIGTERM: 143 } as const;

/** The command line that continues this run: the same arguments plus `--resume`. */
function resumeCommand(): string {
  const args = process.argv.slice(2);
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`);
  return ['topiary', ...args.map(quote), ...(args.includes('--resume') ? [] : ['--resume'])].join(' ');
}

/**
 * Drives a run's Observable to completion, printing its events (and writing them to `log`, failure
 * included). SIGINT or SIGTERM aborts it: the run stops at the next step boundary, saves a checkpoint
 * and reports where (a `run-interrupted` event), and the process exits 130 (143 for SIGTERM); a
 * second signal exits at once.
 */
async function drive(start: (signal: AbortSignal) => Observable<RunEvent>, json: boolean, log?: EventLog): Promise<RunEvent | undefined> {
  const r = renderer(json);
  let completed: RunEvent | undefined;
  let interrupted = false;
  const controller = new AbortController();
  const onSignal = (signal: keyof typeof SIGNAL_EXIT) => {
    if (controller.signal.aborted) {
      r.log(`${signal} again: exiting now (the last checkpoint stays intact)`);
      r.close();
      log?.close();
      process.exit(SIGNAL_EXIT[signal]);
    }
    r.log(`${signal}: stopping at the next step boundary to save a checkpoint (send it again to exit at once)`);
    controller.abort(signal);
  };
  const onSigint = () => onSignal('SIGINT');
  const onSigterm = () => onSignal('SIGTERM');
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  try {
    await lastValueFrom(
      start(controller.signal).pipe(
        tap((e) => {
          const shown = e.type === 'run-interrupted' && e.checkpoint ? { ...e, resume: resumeCommand() } : e;
          if (e.type === 'run-interrupted') interrupted = true;
          // The log first: whatever a reader of stdout has seen is on disk too.
          log?.write(shown);
          r.event(shown);
          if (e.type === 'run-completed') completed = e;
        }),
      ),
      { defaultValue: undefined },
    );
  } catch (err) {
    // Only into a log the run had started: a run refused before it began writes nothing there.
    if (log?.opened) log.write({ type: 'run-failed', error: failureOf(err) });
    throw err;
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    r.close();
    log?.close();
  }
  if (interrupted || (controller.signal.aborted && !completed)) {
    const reason = controller.signal.reason as keyof typeof SIGNAL_EXIT;
    process.exitCode = SIGNAL_EXIT[reason] ?? EXIT.interrupted;
    return undefined;
  }
  return completed;
}

export function buildProgram(): Command {
  const program = new Command('topiary')
    .description('Prune BERT-family transformers into smaller, faster models (tfjs).')
    .addOption(new Option('--backend <name>', 'compute backend').choices([...BACKEND_NAMES, 'auto']).default('wasm'))
    .option('--plugin <module>', 'load a third-party plugin by package name or path (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--json', 'machine-readable output: NDJSON events / one JSON document on stdout, logs on stderr', false)
    .showHelpAfterError()
    .exitOverride();

  const globals = () => program.opts<GlobalOptions>();
  const backend = async () => useBackend(globals().backend);

  // --version also reports the backend that would run (the fastest installed, or --backend).
  program.option('-V, --version', 'print the version and the backend');
  program.on('option:version', () => {
    const g = globals();
    const chosen = g.backend === 'auto' || !g.backend ? BACKEND_NAMES.find(isBackendInstalled) : g.backend;
    const installed = BACKEND_NAMES.filter(isBackendInstalled);
    const native = nativeGemm();
    const nativeText = native.binding ? `${native.binding.threads} threads` : `off (${native.reason})`;
    output(
      Boolean(g.json),
      { version: version(), backend: chosen, installedBackends: installed, nativeGemm: native.binding ? { threads: native.binding.threads } : { off: native.reason } },
      `topiary ${version()} (backend ${chosen}; installed: ${installed.join(', ')}; native GEMM for wasm: ${nativeText})`,
    );
    throw new CommanderError(0, 'topiary.version', '');
  });

  program
    .command('plugins')
    .description('list every registered criterion, scheduler, loss, pruner and model family with its package')
    .action(async () => {
      const { registry } = await createRunContainer(await allPlugins(globals().plugin));
      const list = registry.list();
      const width = Math.max(...list.map((c) => c.id.length));
      output(globals().json, list, list.map((c) => `${c.kind.padEnd(9)} ${c.id.padEnd(width)}  ${c.plugin}  ${c.description}`).join('\n'));
    });

  program
    .command('inspect <model>')
    .description('layers, heads and FFN size per layer, hidden size, parameter counts and zero-weight sparsity')
    .action(async (dir: string) => {
      await backend();
      const model = await loadBert(dir);
      const r = inspectModel(model);
      model.dispose();
      output(
        globals().json,
        r,
        [
          `${dir}`,
          `family ${r.family}, layers ${r.layers}, hidden ${r.hiddenSize}, head size ${r.attentionHeadSize}, labels ${r.labels}`,
          `heads per layer        ${r.heads.join(' ')}`,
          `FFN size per layer     ${r.intermediate.join(' ')}`,
          `encoder parameters     ${r.encoderParams.toLocaleString('en-US')} (${(100 * r.encoderSparsity).toFixed(2)}% zero)`,
          `embedding parameters   ${r.embeddingParams.toLocaleString('en-US')}`,
          `total parameters       ${r.totalParams.toLocaleString('en-US')}`,
          ...(r.sharedParams !== undefined ? [`as stored (shared)     ${r.sharedParams.toLocaleString('en-US')} (${r.sharedLayerGroups} layer group(s) unshared into ${r.layers} layers at load)`] : []),
        ].join('\n'),
      );
    });

  program
    .command('eval <model>')
    .description('dev accuracy of a checkpoint on a JSONL/CSV/TSV file')
    .requiredOption('--data <file>', 'labelled data')
    .option('--limit <n>', 'first N examples', int('--limit'))
    .option('--batch-size <n>', 'batch size', int('--batch-size'), 64)
    .option('--max-length <n>', 'truncate to N tokens', int('--max-length'), DEFAULT_TRAINING.maxLength)
    .option('--text-field <name>', 'text field/column', 'text')
    .option('--pair-field <name>', 'second text field/column (sentence pairs)')
    .option('--label-field <name>', 'label field/column', 'label')
    .action(async (dir: string, o: { data: string; limit?: number; batchSize: number; maxLength: number; textField: string; pairField?: string; labelField: string }) => {
      const info = await backend();
      const started = Date.now();
      const model = await loadBert(dir);
      if (!model.hasClassifier) throw new UsageError(`${dir}: the model has no classification head (config 'architectures' is ${model.config.architecture})`);
      const tok = await loadTokenizer(dir);
      assertTokenizerFits(tok, model, dir);
      const data = await loadDataset(o.data, tok, {
        labels: model.config.id2label,
        maxLength: o.maxLength,
        textField: o.textField,
        labelField: o.labelField,
        ...(o.pairField ? { pairField: o.pairField } : {}),
        ...(o.limit ? { limit: o.limit } : {}),
      });
      const m = evaluate(model, data, { batchSize: o.batchSize });
      model.dispose();
      const seconds = (Date.now() - started) / 1000;
      output(
        globals().json,
        { accuracy: m.accuracy, macroF1: m.macroF1, loss: m.loss, examples: m.examples, seconds, backend: info.name },
        `accuracy ${(100 * m.accuracy).toFixed(2)}% (macro-F1 ${(100 * m.macroF1).toFixed(2)}%) on ${m.examples} examples, ${seconds.toFixed(1)} s on ${info.name}`,
      );
    });

  program
    .command('finetune <model>')
    .description('fine-tune a checkpoint on a task (a pretrained encoder gets a new head sized from the labels)')
    .requiredOption('--train <file>', 'training data')
    .requiredOption('--dev <file>', 'dev data')
    .requiredOption('--out <dir>', 'output checkpoint folder')
    .option('--labels <file>', 'label list (JSON array or one per line); default: the model\'s id2label, else the sorted training labels')
    .option('--epochs <n>', 'epochs', num('--epochs'), 1)
    .option('--max-steps <n>', 'stop after N steps (overrides --epochs)', int('--max-steps'))
    .option('--limit <n>', 'first N training examples', int('--limit'))
    .option('--batch-size <n>', 'batch size', int('--batch-size'), DEFAULT_TRAINING.batchSize)
    .option('--max-length <n>', 'truncate to N tokens', int('--max-length'), DEFAULT_TRAINING.maxLength)
    .option('--lr <x>', 'peak learning rate (default: from the model\'s hidden size, 1e-3 for bert-tiny\'s 128; see defaultFinetuneLearningRate)', num('--lr'))
    .option('--text-field <name>', 'text field/column', 'text')
    .option('--pair-field <name>', 'second text field/column (sentence pairs)')
    .option('--label-field <name>', 'label field/column', 'label')
    .option('--seed <n>', 'seed (an integer)', seedArg, 42)
    .option('--eval-every <n>', 'evaluate every N steps', int('--eval-every'))
    .option('--micro-batch-size <n>', 'examples per forward/backward pass; a batch\'s gradients are summed over its micro-batches (default: the largest that fits the backend\'s memory)', int('--micro-batch-size'))
    .option('--checkpoint-every <n>', 'save a checkpoint in <out>/checkpoint every N steps', int('--checkpoint-every'))
    .option('--resume', 'continue from the last checkpoint in <out>/checkpoint (same arguments)', false)
    .option('--force', 'write into an existing --out folder that holds files Topiary did not write (only its own files are replaced)', false)
    .action(async (dir: string, o: Record<string, any>) => {
      await backend();
      const lr = o['lr'] ?? defaultFinetuneLearningRate((await readConfig(dir)).hiddenSize);
      if (o['lr'] === undefined) process.stderr.write(`learning rate ${lr.toPrecision(2)} (the default for the model's hidden size; --lr to choose)\n`);
      const fields = { textField: o['textField'], labelField: o['labelField'], ...(o['pairField'] ? { pairField: o['pairField'] } : {}) };
      const spec = {
        model: dir,
        data: { train: o['train'], dev: o['dev'], ...fields, ...(o['labels'] ? { labels: o['labels'] } : {}), ...(o['limit'] ? { trainLimit: o['limit'] } : {}) },
        training: {
          ...DEFAULT_TRAINING,
          batchSize: o['batchSize'],
          learningRate: lr,
          epochs: o['epochs'],
          maxLength: o['maxLength'],
          ...(o['maxSteps'] ? { maxSteps: o['maxSteps'] } : {}),
          ...(o['microBatchSize'] ? { microBatchSize: o['microBatchSize'] } : {}),
        },
        seed: o['seed'],
        out: o['out'],
        ...(o['evalEvery'] ? { evalEvery: o['evalEvery'] } : {}),
        ...(o['checkpointEvery'] ? { checkpointEvery: o['checkpointEvery'] } : {}),
        ...(o['force'] ? { force: true } : {}),
      };
      const done = await drive((signal) => runFinetune(spec, signal, { resume: Boolean(o['resume']) }), globals().json);
      if (done?.type === 'run-completed' && !globals().json) {
        const acc = done.metrics['accuracy'] as number | null;
        process.stdout.write(`dev accuracy ${acc === null ? 'n/a' : `${(100 * acc).toFixed(2)}%`}; saved ${o['out']}\n`);
      }
    });

  program
    .command('export <dir>')
    .description('compact a masked model (a run folder or a checkpoint with masks.safetensors) into a smaller Hugging Face folder, or (--format onnx|all) the ONNX folder transformers.js and ONNX Runtime load')
    .requiredOption('--out <dir>', 'output folder')
    .addOption(new Option('--format <format>', 'safetensors (Topiary, Hugging Face), onnx (transformers.js, ONNX Runtime) or all (both in one folder)').choices(EXPORT_FORMATS).default('safetensors'))
    .addOption(new Option('--quantize <mode>', 'also write onnx/model_quantized.onnx (dynamic int8)').choices(QUANTIZE_MODES))
    .option('--force', 'write into an existing --out folder that holds files Topiary did not write (only its own files are replaced)', false)
    .action(async (dir: string, o: { out: string; format: ExportFormat; quantize?: QuantizeMode; force: boolean }) => {
      await prepareOutput(o.out, { kind: 'model', inputs: [dir], force: o.force, what: '--out' });
      await backend();
      // A run folder holds checkpoint/{model, masks.safetensors}; a checkpoint folder holds both directly.
      const ckpt = existsSync(path.join(dir, 'checkpoint', 'model')) ? path.join(dir, 'checkpoint') : dir;
      const modelDir = existsSync(path.join(ckpt, 'model', 'config.json')) ? path.join(ckpt, 'model') : ckpt;
      const model = await loadBert(modelDir);
      const masks = await loadMasks(ckpt, model);
      // Heads and neurons masked whole by weight masks go too (exact: constant ones are folded into the
      // output bias), so checkpoints saved before pruners did this also export as smaller matrices.
      structureFromWeightMasks(model, masks);
      const small = compact(model, masks);
      const files = await writeModel(small, o.out, { format: o.format, quantize: o.quantize, tokenizerFrom: modelDir, card: await cardFromReport(dir), force: o.force });
      const before = inspectModel(model);
      const after = inspectModel(small);
      model.dispose();
      small.dispose();
      output(
        globals().json,
        { out: o.out, format: o.format, files, params: before.totalParams, exportedParams: after.totalParams, heads: after.heads, intermediate: after.intermediate, hiddenSize: after.hiddenSize, encoderSparsity: after.encoderSparsity },
        `exported ${o.out}: ${after.totalParams.toLocaleString('en-US')} parameters (from ${before.totalParams.toLocaleString('en-US')}), heads ${after.heads.join(' ')}, FFN ${after.intermediate.join(' ')}, hidden ${after.hiddenSize}`,
      );
    });

  program
    .command('run <config>')
    .description('a pruning run from a YAML or JSON config: progress, report.json and the compacted model in <out>/model')
    .option('--out <dir>', 'output folder (overrides the config\'s out)')
    .option('--micro-batch-size <n>', 'examples per forward/backward pass (overrides the config\'s training.microBatchSize; default: the largest that fits the backend\'s memory)', int('--micro-batch-size'))
    .option('--resume', 'continue from the last checkpoint in <out>/checkpoint (same config)', false)
    .option('--force', 'write into an existing output folder that holds files Topiary did not write (only its own files are replaced)', false)
    .action(async (file: string, o: { out?: string; force: boolean; resume?: boolean; microBatchSize?: number }) => {
      const spec = await readRunConfig(file, o.out ? { out: o.out } : {});
      if (o.force) spec.force = true;
      if (o.microBatchSize) spec.training = { ...spec.training, microBatchSize: o.microBatchSize };
      const { registry } = await createRunContainer(await allPlugins(globals().plugin));
      // Pruner, criterion, scheduler and loss ids and their options, before any model loads.
      assertValidRunConfig(file, spec, registry);
      await backend();
      // Every event also goes to <out>/events.ndjson (what `topiary report` plots); a resumed run appends.
      const log = openEventLog(path.join(spec.out, EVENTS_FILE), { append: Boolean(o.resume) });
      const done = await drive((signal) => runPruning(spec, registry, signal, { resume: Boolean(o.resume) }), globals().json, log);
      if (done?.type !== 'run-completed') return;
      const r = done.metrics as { accuracy: number; teacherAccuracy: number | null; encoderSparsity: number };
      if (!globals().json) {
        process.stdout.write(
          `accuracy ${(100 * r.accuracy).toFixed(2)}%${r.teacherAccuracy !== null ? ` (teacher ${(100 * r.teacherAccuracy).toFixed(2)}%)` : ''}, encoder sparsity ${(100 * r.encoderSparsity).toFixed(2)}%; report ${path.join(spec.out, 'report.json')}\n`,
        );
      }
      if (spec.export) {
        const onnxDir = await exportAfterRun(spec.out, spec.export, spec.model);
        if (onnxDir) process.stderr.write(`wrote ${onnxDir} (${spec.export.format}${spec.export.quantize ? `, ${spec.export.quantize}` : ''})\n`);
      }
      if (spec.minAccuracyRetention !== undefined && r.teacherAccuracy !== null && r.accuracy < spec.minAccuracyRetention * r.teacherAccuracy) {
        process.stderr.write(`missed target: kept ${((100 * r.accuracy) / r.teacherAccuracy).toFixed(1)}% of the teacher's accuracy, wanted ${(100 * spec.minAccuracyRetention).toFixed(1)}%\n`);
        process.exitCode = EXIT.missedTarget;
      }
    });

  registerPredict(program, globals, backend);
  registerReport(program, globals);
  registerSweep(program, globals);
  registerProfile(program, globals, backend);

  return program;
}

/** Runs the CLI; sets `process.exitCode` (never calls `process.exit`, so output flushes). */
export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
      if (err.exitCode !== 0) failed(program, argv, { name: 'UsageError', message: err.message, kind: 'usage', exitCode: EXIT.usage });
      return;
    }
    const failure = failureOf(err);
    process.stderr.write(`topiary: ${failure.message}\n`);
    if (failure.kind !== 'usage' && process.env['TOPIARY_DEBUG']) process.stderr.write(`${(err as Error).stack}\n`);
    process.exitCode = failure.exitCode;
    failed(program, argv, failure);
  }
}

/** An error as a `run-failed` event's payload: usage/config errors exit 2, anything else 3. */
function failureOf(err: unknown): RunFailure {
  const usage = err instanceof UsageError || err instanceof ConfigError || err instanceof DataError || err instanceof PluginError || err instanceof SafetensorsError;
  const name = err instanceof Error ? err.name : typeof err;
  return { name, message: (err as Error).message ?? String(err), kind: usage ? 'usage' : 'failure', exitCode: usage ? EXIT.usage : EXIT.failure };
}

/** With --json, a failure is also the last NDJSON event on stdout, so a program driving the CLI sees why. */
function failed(program: Command, argv: string[], error: RunFailure): void {
  const json = Boolean(program.opts<GlobalOptions>().json) || argv.includes('--json');
  if (!json) return;
  const event: RunEvent = { type: 'run-failed', error };
  process.stdout.write(`${JSON.stringify(event)}\n`);
}
