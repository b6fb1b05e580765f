import { readFileSync } from 'node:fs';
import { RunAborted, bindMasks, checkLatencyTable, stage, tableLatency, type LatencyTable, type PruneContext, type PruneResult, type Pruner } from '@topiary/core';
import { Options, evaluateStage, finetune, meanLength, sampleBatches } from './common.js';
import { collectMaskGrads, fisherInformation, maskGradsState, type MaskGradRow } from './fisher.js';
import { maskMacs, modelMacs } from './mac.js';
import { greedyRearrange } from './rearrange.js';
import { rescaleMasks } from './rescale.js';
import { pruningSchedule, searchLatency, searchMac } from './search.js';

/** Options of the `retraining-free` pruner (the run config's `options`). */
export interface RetrainingFreeOptions {
  /** MACs to keep, as a fraction of the dense encoder's (the reference's `--constraint` with `--metric mac`). */
  macConstraint?: number;
  /** Encoder latency to keep, as a fraction of the dense encoder's by `latencyTable` (the reference's `--metric latency`); instead of `macConstraint`. */
  latencyConstraint?: number;
  /** The latency table `topiary profile MODEL --lut FILE` wrote, measured at the deployment's batch and length. */
  latencyTable?: string;
  /** Training examples the Fisher information and mask tuning use (reference `--num_samples`, 2048). */
  samples?: number;
  /** Batch size of the sample (reference: 32); one gradient per batch. */
  sampleBatchSize?: number;
  /** Sequence length the MACs are counted at; default the training examples' mean tokenized length. */
  seqLen?: number;
  /** Mask rearrangement (default true). */
  rearrange?: boolean;
  /** Mask tuning by least squares (default true). */
  rescale?: boolean;
  /** Constraint of the masks that mask tuning reconstructs; default the reference's sqrt(macConstraint). */
  teacherConstraint?: number;
  /** See `RescaleInput.onFailure` (default 'stop', the reference). */
  onFailure?: 'stop' | 'skip';
  /** See `RescaleInput.ffnTarget` (default 'masked'). */
  ffnTarget?: 'masked' | 'reference';
  /** Scales outside [-maxScale, maxScale] fall back to the binary mask (default 10). */
  maxScale?: number;
  damp?: number;
  /** Steps of fine-tuning after pruning (default 0: none), with `losses` (default KD from the teacher). */
  finetuneSteps?: number;
  finetuneLearningRate?: number;
  /** Evaluate dev after each step (search, rearrangement, tuning) and report the accuracies (default false). */
  evalStages?: boolean;
  losses?: unknown;
}

const KNOWN = ['macConstraint', 'latencyConstraint', 'latencyTable', 'samples', 'sampleBatchSize', 'seqLen', 'rearrange', 'rescale', 'teacherConstraint', 'onFailure', 'ffnTarget', 'maxScale', 'damp', 'finetuneSteps', 'finetuneLearningRate', 'evalStages', 'losses'] as const;

/**
 * Retraining-free structured pruning (Kwon et al., NeurIPS 2022; reference code
 * WoosukKwon/retraining-free-pruning): Fisher information of head and neuron masks from a sample of
 * training examples, the MAC-constrained mask search, mask rearrangement per layer, and mask tuning by
 * layerwise least squares; the tuned scales are mask values that compaction folds into the weights.
 * Optionally a short fine-tune (KD) afterwards.
 */
export class RetrainingFreePruner implements Pruner {
  readonly id = 'retraining-free';
  constructor(private readonly defaults: RetrainingFreeOptions = {}) {
    new Options(this.id, defaults as Record<string, unknown>, KNOWN);
  }

  async run(ctx: PruneContext): Promise<PruneResult> {
    const raw = { ...this.defaults, ...ctx.options } as Record<string, unknown>;
    const o = new Options(this.id, raw, KNOWN);
    const macConstraint = o.number('macConstraint', undefined, (v) => v > 0 && v < 1, 'in (0, 1)');
    const latencyConstraint = o.number('latencyConstraint', undefined, (v) => v > 0 && v < 1, 'in (0, 1)');
    if ((macConstraint === undefined) === (latencyConstraint === undefined)) {
      throw new Error(`${this.id}: give exactly one of 'macConstraint' (the fraction of the dense encoder's MACs to keep, e.g. 0.6) and 'latencyConstraint' (the fraction of its latency, with 'latencyTable')`);
    }
    const constraint = (macConstraint ?? latencyConstraint)!;
    const tableFile = raw['latencyTable'];
    if (latencyConstraint !== undefined && typeof tableFile !== 'string') throw new Error(`${this.id}: option 'latencyTable' must name the file of \`topiary profile MODEL --lut FILE\`, got ${JSON.stringify(tableFile)}`);
    if (latencyConstraint === undefined && tableFile !== undefined) throw new Error(`${this.id}: option 'latencyTable' is read only with 'latencyConstraint'`);
    const samples = o.int('samples', 2048, 1);
    const batchSize = o.int('sampleBatchSize', 32, 1);
    const seqLenOpt = o.number('seqLen', undefined, (v) => v > 0, 'a positive number');
    const doRearrange = o.bool('rearrange', true);
    const doRescale = o.bool('rescale', true);
    const teacherConstraint = o.number('teacherConstraint', pruningSchedule(constraint, 2)[0]!, (v) => v > 0 && v <= 1, 'in (0, 1]')!;
    const onFailure = o.oneOf('onFailure', ['stop', 'skip'] as const, 'stop')!;
    const ffnTarget = o.oneOf('ffnTarget', ['masked', 'reference'] as const, 'masked')!;
    const maxScale = o.number('maxScale', 10, (v) => v > 0, 'a positive number')!;
    const damp = o.number('damp', 1, (v) => v >= 0, 'a non-negative number')!;
    const finetuneSteps = o.int('finetuneSteps', 0, 0);
    const finetuneLearningRate = o.number('finetuneLearningRate', undefined, (v) => v > 0, 'a positive number');
    const evalStages = o.bool('evalStages', false);

    const { model, masks, control } = ctx;
    bindMasks(masks, model);
    const c = model.config;
    let table: LatencyTable | undefined;
    if (latencyConstraint !== undefined) {
      const file = tableFile as string;
      let parsed: unknown;
      try {
        parsed = JSON.parse(readFileSync(file, 'utf8'));
      } catch (e) {
        throw new Error(`${this.id}: option 'latencyTable': cannot read ${file} as JSON (${(e as Error).message})`);
      }
      table = checkLatencyTable(parsed, file, c);
    }
    const seqLen = seqLenOpt ?? Math.round(meanLength(ctx.train));
    const times: Record<string, number> = {};
    // Wall and CPU seconds per stage (CPU time is the steadier figure on a shared machine).
    const cpu: Record<string, number> = {};
    let t0 = Date.now();
    let c0 = process.cpuUsage();
    const lap = (k: string) => {
      times[k] = (Date.now() - t0) / 1000;
      const u = process.cpuUsage(c0);
      cpu[k] = (u.user + u.system) / 1e6;
      t0 = Date.now();
      c0 = process.cpuUsage();
    };
    // Stage evaluations are not part of any stage's time.
    const evalStage = (label: string) => {
      const acc = evaluateStage(ctx, model, masks, label);
      t0 = Date.now();
      c0 = process.cpuUsage();
      return acc;
    };
    const batches = sampleBatches(ctx.train, samples, batchSize, ctx.seed);
    control.emit({ type: 'log', message: `retraining-free: ${Math.min(samples, ctx.train.size)} samples in ${batches.length} batches, MACs at ${seqLen} tokens` });

    const cp = ctx.checkpoints;
    const rows: MaskGradRow[] = [];
    cp?.register('retraining-free.fisher', maskGradsState(rows));
    const fisherDone = rows.length;
    if (fisherDone > 0) control.emit({ type: 'log', message: `retraining-free: resumed with the Fisher gradients of ${fisherDone} of ${batches.length} batches` });
    const save = async () => {
      if (!cp) return;
      const path = await cp.save(0);
      control.emit({ type: 'checkpoint-saved', step: 0, path });
    };
    const pruned = await stage(cp, 'retraining-free: masks', async () => {
      try {
        // Fisher gradients collected so far are checkpoint state: an interrupted run continues after the
        // batches it had finished. Mask search, rearrangement and tuning are one stage whose result (the
        // final masks) a resumed run takes as it is; the fine-tune resumes at its step like any training.
        const grads = collectMaskGrads(model, batches, control, rows, ctx.training.microBatchSize);
        if (rows.length > fisherDone) await save();
        const headImportance = grads.heads.map((g) => fisherInformation(g, grads.batches));
        const neuronImportance = grads.neurons.map((g) => fisherInformation(g, grads.batches));
        lap('fisherSeconds');
        const search = (k: number) =>
          table
            ? searchLatency({ headImportance, neuronImportance, mha: table.mha.fit, ffn: table.ffn.fit, constraint: k })
            : searchMac({ headImportance, neuronImportance, seqLen, hiddenSize: c.hiddenSize, headSize: c.attentionHeadSize, constraint: k });
        const student = search(constraint);
        const teacher = search(teacherConstraint);
        lap('searchSeconds');
        const stages: Record<string, number> = {};
        const setMasks = (h: Float32Array[], n: Float32Array[]) => {
          masks.headMask = h.map((m) => m.slice());
          masks.neuronMask = n.map((m) => m.slice());
        };
        setMasks(student.headMask, student.neuronMask);
        if (evalStages) stages['search'] = evalStage('after mask search');
        let headMask = student.headMask;
        let neuronMask = student.neuronMask;
        if (doRearrange) {
          headMask = headMask.map((m, l) => greedyRearrange(m, grads.heads[l]!, grads.batches));
          neuronMask = neuronMask.map((m, l) => greedyRearrange(m, grads.neurons[l]!, grads.batches));
          setMasks(headMask, neuronMask);
          lap('rearrangeSeconds');
          if (evalStages) stages['rearrange'] = evalStage('after mask rearrangement');
        }
        let blocks: unknown[] = [];
        if (doRescale) {
          const tuned = rescaleMasks({
            model,
            teacherHeadMask: teacher.headMask,
            teacherNeuronMask: teacher.neuronMask,
            headMask,
            neuronMask,
            batches,
            classification: model.hasClassifier,
            onFailure,
            ffnTarget,
            maxScale,
            damp,
            control,
          });
          blocks = tuned.blocks;
          setMasks(tuned.headMask, tuned.neuronMask);
          lap('rescaleSeconds');
          if (evalStages || finetuneSteps > 0) stages['rescale'] = evalStage('after mask tuning');
        }
        return { headMask: masks.headMask.map((m) => Array.from(m)), neuronMask: masks.neuronMask.map((m) => Array.from(m)), blocks, stages, times, cpu };
      } catch (err) {
        // Outside a training loop nothing else saves: an interrupted search or tuning keeps its Fisher gradients.
        if (err instanceof RunAborted) await save();
        throw err;
      }
    });
    // The tuned masks are all that later checkpoints need.
    cp?.unregister('retraining-free.fisher');
    masks.headMask = pruned.headMask.map((m) => Float32Array.from(m));
    masks.neuronMask = pruned.neuronMask.map((m) => Float32Array.from(m));
    const { blocks, stages } = pruned;
    Object.assign(times, pruned.times);
    Object.assign(cpu, pruned.cpu);
    if (cp?.completed('retraining-free: masks')) control.emit({ type: 'log', message: 'retraining-free: resumed after mask tuning (the checkpoint holds the tuned masks)' });
    else if (finetuneSteps > 0) await save();
    const macFraction = maskMacs(c, masks.headMask, masks.neuronMask, seqLen) / modelMacs(c, seqLen);
    const count1 = (ms: Float32Array[]) => ms.map((m) => m.filter((v) => v !== 0).length);
    const latency = table
      ? (() => {
          const ms = tableLatency(table, count1(masks.headMask), count1(masks.neuronMask));
          const dense = tableLatency(table, c.layerHeads, c.layerIntermediate);
          return { latencyMs: ms, denseLatencyMs: dense, latencyFraction: ms / dense, latencyTable: { file: tableFile as string, batch: table.batch, seq: table.seq, backend: table.backend } };
        })()
      : undefined;
    control.emit({ type: 'masks-updated', step: 0, sparsity: masks.sparsity(model), target: constraint });
    control.emit({ type: 'log', message: `retraining-free: ${(100 * macFraction).toFixed(2)}% of the dense MACs kept${latency ? `, ${(100 * latency.latencyFraction).toFixed(2)}% of the dense encoder latency by the table (${latency.latencyMs.toFixed(2)} of ${latency.denseLatencyMs.toFixed(2)} ms at batch ${table!.batch} x ${table!.seq})` : ''} (constraint ${(100 * constraint).toFixed(1)}%${table ? ' of the latency' : ''})` });
    if (finetuneSteps > 0) {
      await finetune(ctx, model, masks, finetuneSteps, finetuneLearningRate, 'finetune', ctx.checkpoints);
      lap('finetuneSeconds');
    }
    const count = (ms: Float32Array[]) => ms.reduce((a, m) => a + m.filter((v) => v !== 0).length, 0);
    return {
      model,
      masks,
      report: {
        ...(macConstraint !== undefined ? { macConstraint } : { latencyConstraint }),
        macFraction,
        ...(latency ?? {}),
        teacherConstraint,
        seqLen,
        samples: Math.min(samples, ctx.train.size),
        heads: count(masks.headMask),
        neurons: count(masks.neuronMask),
        headsPerLayer: masks.headMask.map((m) => m.filter((v) => v !== 0).length),
        neuronsPerLayer: masks.neuronMask.map((m) => m.filter((v) => v !== 0).length),
        ...(Object.keys(stages).length ? { stageAccuracy: stages } : {}),
        tuning: blocks,
        seconds: times,
        cpuSeconds: cpu,
      },
    };
  }
}
