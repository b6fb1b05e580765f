import 'reflect-metadata';
import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { BUILTIN_FAMILIES, MaskSet, parseSafetensors, bindMasks, compact, createRunContainer, evaluate, loadBert, loadDataset, loadTokenizer, runPruning, saveBert, tf, type Batch, type BertModel, type PruneContext, type RunEvent, type RunSpec } from '@topiary/core';
import { SHARED, golden, maxAbsDiff } from '../../core/src/test-support/shared.js';
import { testBackend } from '../../core/src/test-support/backend.js';
import { builtinPlugins } from './plugins.js';
import { inspectModel } from './inspect.js';

const goldens = path.join(SHARED, 'goldens', 'families');
const FAMILIES = ['roberta', 'distilbert', 'electra', 'albert'].filter((f) => existsSync(path.join(goldens, f, 'config.json')));

/** Every method, each for a few steps (what runs is checked, not how well it prunes). */
const METHODS: Record<string, (pretrained: string) => Pick<RunSpec, 'method' | 'options' | 'targetSparsity' | 'pretrained'>> = {
  magnitude: () => ({ method: 'structured', targetSparsity: 0.5, options: { criterion: 'magnitude', scheduler: 'one-shot', losses: ['ce'] } }),
  'first-order': () => ({ method: 'structured', targetSparsity: 0.5, options: { criterion: 'first-order', scheduler: 'one-shot', scoreBatches: 1, losses: ['ce'] } }),
  'unstructured magnitude': () => ({ method: 'unstructured', targetSparsity: 0.5, options: { criterion: 'magnitude', scheduler: 'one-shot', losses: ['ce'] } }),
  movement: () => ({ method: 'movement', targetSparsity: 0.5, options: {} }),
  'soft movement': () => ({ method: 'soft-movement', options: { finalThreshold: 0.1, finalLambda: 10 } }),
  cofi: () => ({ method: 'cofi', targetSparsity: 0.5, options: { maskLearningRate: 0.1, finetuneFraction: 0.25 } }),
  cap: (pretrained) => ({
    method: 'structured',
    targetSparsity: 0.5,
    pretrained,
    options: { criterion: 'first-order', scheduler: { id: 'iterative', options: { levels: [0.25, 0.5] } }, scoreBatches: 1, losses: [{ id: 'kd', options: { temperature: 1 } }, { id: 'contrastive', options: { extraExamples: 8 } }] },
  }),
};

describe.skipIf(FAMILIES.length === 0)('every method on every family', () => {
  let data: string;
  beforeAll(async () => {
    await testBackend();
    // A small labelled set with the goldens' labels: wordnet glosses spread over the file (it is sorted
    // by label), labelled round-robin.
    const labels = Object.values(JSON.parse(readFileSync(path.join(goldens, FAMILIES[0]!, 'config.json'), 'utf8')).id2label as Record<string, string>);
    const lines = readFileSync(path.join(SHARED, 'datasets/wordnet-supersense/dev.jsonl'), 'utf8').trim().split('\n');
    const stride = Math.floor(lines.length / 40);
    const rows = Array.from({ length: 40 }, (_, i) => ({ text: JSON.parse(lines[i * stride]!).text, label: labels[i % labels.length] }));
    data = path.join(mkdtempSync(path.join(tmpdir(), 'topiary-families-')), 'data.jsonl');
    writeFileSync(data, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  });

  for (const family of FAMILIES) {
    for (const [name, method] of Object.entries(METHODS)) {
      it(`${name} prunes ${family} and exports a ${family} folder that reloads with the run's logits`, async () => {
        const model = path.join(goldens, family);
        const out = path.join(mkdtempSync(path.join(tmpdir(), `topiary-${family}-`)), 'run');
        const { registry } = await createRunContainer(builtinPlugins());
        const spec: RunSpec = {
          ...method(model),
          model,
          teacher: model,
          data: { train: data, dev: data },
          training: { batchSize: 8, learningRate: 1e-4, maxSteps: 4, warmupRatio: 0, weightDecay: 0.01, maxGradNorm: 1, maxLength: 32 },
          seed: 3,
          out,
        };
        const events: RunEvent[] = [];
        await new Promise<void>((resolve, reject) => runPruning(spec, registry).subscribe({ next: (e) => events.push(e), error: reject, complete: resolve }));
        expect(events.some((e) => e.type === 'step')).toBe(true);
        const report = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
        // Methods given a target reach some of it in these few steps (CoFi's Lagrangian needs more).
        if (spec.targetSparsity !== undefined && spec.method !== 'cofi') expect(report.encoderSparsity).toBeGreaterThan(0.2);
        const exportedEval = events.find((e) => e.type === 'evaluated' && e.label === 'exported model') as Extract<RunEvent, { type: 'evaluated' }>;
        expect(exportedEval).toBeDefined();
        const cfg = JSON.parse(readFileSync(path.join(out, 'model', 'config.json'), 'utf8'));
        const orig = JSON.parse(readFileSync(path.join(model, 'config.json'), 'utf8'));
        expect(cfg.model_type).toBe(orig.model_type);
        expect(cfg.architectures).toEqual(orig.architectures);
        expect(existsSync(path.join(out, 'model', 'tokenizer_config.json'))).toBe(true);
        // Topiary reloads the export as the same family with the logits the run evaluated.
        const reloaded = await loadBert(path.join(out, 'model'));
        expect(reloaded.config.modelType).toBe(orig.model_type);
        const tok = await loadTokenizer(path.join(out, 'model'));
        const dev = await loadDataset(data, tok, { labels: reloaded.config.id2label, maxLength: 32 });
        const again = evaluate(reloaded, dev, { batchSize: 128 });
        expect(Math.abs(again.loss! - exportedEval.metrics.loss)).toBeLessThan(1e-5);
        reloaded.dispose();
      }, 120_000);
    }
  }
});

describe.skipIf(!existsSync(path.join(goldens, 'roberta', 'golden.json')))('RoBERTa: first-order to 50%, export, reload', () => {
  beforeAll(testBackend);
  it('the compacted export reloads as RoBERTa with the masked model\'s logits on the golden texts and pairs', async () => {
    const dir = path.join(goldens, 'roberta');
    const g = golden('families/roberta/golden.json');
    const { registry } = await createRunContainer(builtinPlugins());
    const model = await loadBert(dir);
    const tok = await loadTokenizer(dir);
    const texts: [string, string?][] = g.texts.map((t: string) => [t]);
    const data = await loadDataset(writeData(texts.map(([t, p], i) => ({ text: t, ...(p ? { pair: p } : {}), label: model.config.id2label[i % model.config.id2label.length] }))), tok, { labels: model.config.id2label, maxLength: 64 });
    const masks = bindMasks(MaskSet.ones(model), model);
    const ctx: PruneContext = {
      model,
      masks,
      train: data,
      dev: data,
      control: { emit: () => {}, signal: new AbortController().signal, checkpoint: () => {} },
      resolve: registry,
      options: { criterion: 'first-order', scheduler: 'one-shot', scoreBatches: 1, losses: ['ce'], targetSparsity: 0.5 },
      seed: 1,
      training: { batchSize: 8, learningRate: 1e-4, maxSteps: 2, warmupRatio: 0, weightDecay: 0, maxGradNorm: 1, maxLength: 64 },
    };
    const result = await registry.pruner('structured').run(ctx);
    expect(result.masks.sparsity(result.model).encoderSparsity).toBeGreaterThan(0.45);
    const out = path.join(mkdtempSync(path.join(tmpdir(), 'topiary-roberta-export-')), 'model');
    const small = compact(result.model, result.masks);
    await saveBert(small, out, { tokenizerFrom: dir });
    small.dispose();
    const reloaded = await loadBert(out);
    expect(JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')).model_type).toBe('roberta');
    expect(reloaded.config.layerHeads.reduce((a, b) => a + b, 0)).toBeLessThan(model.config.numAttentionHeads * model.config.numHiddenLayers);
    for (const kind of ['single', 'pair'] as const) {
      const gk = g[kind];
      const [B, T] = [gk.input_ids.length, gk.input_ids[0].length];
      const batch: Batch = { batchSize: B, seqLen: T, inputIds: Int32Array.from(gk.input_ids.flat()), attentionMask: Int32Array.from(gk.attention_mask.flat()), tokenTypeIds: new Int32Array(B * T) };
      const logits = (m: BertModel, b: Batch, withMasks: boolean) =>
        tf.tidy(() => {
          const t = withMasks ? result.masks.toTensors() : undefined;
          return m.forward(b, t ? { masks: t.masks, weightMasks: t.weightMasks } : {}).logits!.arraySync();
        });
      expect(maxAbsDiff(logits(reloaded, batch, false), logits(result.model, batch, true))).toBeLessThan(1e-5);
    }
    reloaded.dispose();
    result.model.dispose();
  }, 120_000);
});

function writeData(rows: object[]): string {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'topiary-data-')), 'data.jsonl');
  writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

// The built binary, as a user runs it (`npm test` builds first).
const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dist/bin.js');
const topiary = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 120_000 });

describe.runIf(existsSync(bin) && FAMILIES.length > 0)('topiary binary and families', () => {
  it('plugins --json lists every family with its package', () => {
    const r = topiary('plugins', '--json');
    expect(r.status).toBe(0);
    const list = JSON.parse(r.stdout) as { id: string; kind: string; plugin: string }[];
    for (const f of BUILTIN_FAMILIES) expect(list).toContainEqual(expect.objectContaining({ kind: 'family', id: f.id, plugin: '@topiary/core' }));
  });

  it('inspect names the family; ALBERT reports its shared and unshared parameter counts', async () => {
    await testBackend();
    for (const f of readdirSync(goldens).filter((x) => existsSync(path.join(goldens, x, 'config.json')))) {
      const dir = path.join(goldens, f);
      const model = await loadBert(dir);
      const j = inspectModel(model);
      model.dispose();
      const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
      expect(j.family).toBe(cfg.model_type);
      const groups = cfg.num_hidden_groups;
      if (groups !== undefined && groups < j.layers) {
        // The checkpoint stores each group once: its tensor count is the shared figure.
        const stored = [...parseSafetensors(readFileSync(path.join(dir, 'model.safetensors'))).values()].reduce((a, t) => a + t.data.length, 0);
        expect(j.sharedParams).toBe(stored);
        expect(j.totalParams).toBeGreaterThan(stored);
      }
    }
    const roberta = path.join(goldens, FAMILIES[0]!);
    const cfg = JSON.parse(readFileSync(path.join(roberta, 'config.json'), 'utf8'));
    expect(topiary('inspect', roberta).stdout).toContain(`family ${cfg.model_type}`);
  });
});
