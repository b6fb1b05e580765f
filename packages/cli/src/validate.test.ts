import 'reflect-metadata';
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRunContainer, type PluginRegistry } from '@topiary/core';
import { expandSweep } from '@topiary/sweep';
import { RUN_CONFIG_PATH_FIELDS, assertValidRunConfig, readRunConfig, runConfigIssues } from './config.js';
import { builtinPlugins } from './plugins.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
let registry: PluginRegistry;
beforeAll(async () => {
  ({ registry } = await createRunContainer(builtinPlugins()));
});

const dir = mkdtempSync(path.join(tmpdir(), 'topiary-validate-'));
let n = 0;
/** The error of validating a config (the lines after the header), or undefined when it is valid. */
async function problems(yaml: string): Promise<string | undefined> {
  const file = path.join(dir, `c${n++}.yaml`);
  writeFileSync(file, `model: m\ndata: { train: t.jsonl, dev: d.jsonl }\n${yaml}\n`);
  try {
    assertValidRunConfig(file, await readRunConfig(file), registry);
    return undefined;
  } catch (err) {
    const msg = (err as Error).message;
    expect(msg.startsWith(`${file}: invalid config`)).toBe(true);
    return msg;
  }
}

describe('run config validation against the components\' option schemas', () => {
  const configs = ['examples', 'docs/experiments'].flatMap((d) => readdirSync(path.join(root, d)).filter((f) => f.endsWith('.yaml')).map((f) => path.join(root, d, f)));
  it(`accepts every bundled config (${configs.length} in examples/ and docs/experiments/)`, async () => {
    expect(configs.length).toBeGreaterThan(4);
    for (const file of configs) {
      // A sweep file (a `base:` run config and axes): every run it expands to.
      if (/^base:/m.test(readFileSync(file, 'utf8'))) await expandSweep(file, { pathFields: RUN_CONFIG_PATH_FIELDS, validate: (c) => runConfigIssues(c, registry) });
      else assertValidRunConfig(file, await readRunConfig(file), registry);
    }
  });

  const structured = 'method: structured\ntargetSparsity: 0.5';
  const cases: Array<[string, string, RegExp]> = [
    ['an unknown pruner', 'method: prune-it-all', /^ {2}method: no pruner 'prune-it-all' is registered \(known: .*cofi/m],
    ['an unknown criterion id', `${structured}\ncriterion: magnitud`, /^ {2}criterion: no criterion 'magnitud' is registered \(known: .*magnitude/m],
    ['an unknown criterion id in { id, options }', `${structured}\ncriterion: { id: nope, options: {} }`, /^ {2}criterion\.id: no criterion 'nope'/m],
    ['an unknown scheduler id', `${structured}\nscheduler: linear`, /^ {2}scheduler: no scheduler 'linear'/m],
    ['an unknown loss id', `${structured}\nlosses: [kd, { id: contrastiv }]`, /^ {2}losses\[1\]\.id: no loss 'contrastiv'/m],
    ['an unknown criterion option', `${structured}\ncriterion: { id: first-order, options: { normalise: true } }`, /^ {2}criterion\.options\.normalise: unknown option; expected one of normalize, loss/m],
    ['a criterion option of the wrong type', `${structured}\ncriterion: { id: first-order, options: { normalize: 'yes' } }`, /^ {2}criterion\.options\.normalize: .*boolean.*\(got "yes"\)/m],
    ['a criterion option out of its values', `${structured}\ncriterion: { id: magnitude, options: { norm: l3 } }`, /^ {2}criterion\.options\.norm: .*"l1"\|"l2".*\(got "l3"\)/m],
    ['a loss option out of range', `${structured}\nlosses: [{ id: kd, options: { temperature: -1 } }]`, /^ {2}losses\[0\]\.options\.temperature: .*>0.*\(got -1\) \(loss 'kd'\)/m],
    ['a contrastive option out of range', `${structured}\nlosses: [{ id: contrastive, options: { extraExamples: 2.5 } }]`, /^ {2}losses\[0\]\.options\.extraExamples: .*int/m],
    ['scheduler levels that do not increase', `${structured}\nscheduler: { id: iterative, options: { levels: [0.5, 0.3] } }`, /^ {2}scheduler\.options\.levels\[1\]: levels must increase/m],
    ['a scheduler level out of range', `${structured}\nscheduler: { id: iterative, options: { levels: [0.5, 1.2] } }`, /^ {2}scheduler\.options\.levels\[1\]: .*<1/m],
    ['the default scheduler without a target', 'method: structured', /^ {2}targetSparsity: iterative needs the run's targetSparsity/m],
    ['an unknown pruner option', `${structured}\noptions: { minHeadPerLayer: 1 }`, /^ {2}options\.minHeadPerLayer: unknown option; expected one of .*minHeadsPerLayer/m],
    ['a pruner option out of range', `${structured}\noptions: { scoreBatches: 0 }`, /^ {2}options\.scoreBatches: .*>=1.*\(got 0\) \(pruner 'structured'\)/m],
    ['a cofi option out of range', 'method: cofi\ntargetSparsity: 0.6\noptions: { maskLearningRate: 0 }', /^ {2}options\.maskLearningRate: .*>0/m],
    ['cofi without a target', 'method: cofi', /^ {2}targetSparsity: /m],
    ['a cofi fine-tuning loss with an unknown option', 'method: cofi\ntargetSparsity: 0.6\noptions: { finetuneLosses: [{ id: kd, options: { temp: 2 } }] }', /^ {2}options\.finetuneLosses\[0\]\.options\.temp: unknown option/m],
    ['losses on cofi (fixed in pruning)', 'method: cofi\ntargetSparsity: 0.6\nlosses: [kd]', /^ {2}losses: unknown option/m],
    ['a criterion on a pruner that takes none', 'method: movement\ncriterion: magnitude', /^ {2}criterion: unknown option/m],
    ['a target on movement (its finalThreshold sets it)', 'method: soft-movement\ntargetSparsity: 0.5', /^ {2}targetSparsity: unknown option/m],
    ['mode on a movement preset', 'method: soft-movement\noptions: { mode: topk }', /^ {2}options\.mode: unknown option/m],
    ['a movement granularity of the wrong shape', 'method: movement\noptions: { granularity: [32] }', /^ {2}options\.granularity/m],
    ['a movement keep fraction of 0', 'method: movement\noptions: { finalThreshold: 0 }', /^ {2}options\.finalThreshold: the fraction of weights kept in 'topk' mode/m],
  ];
  for (const [what, yaml, want] of cases) {
    it(`names the field of ${what}`, async () => {
      expect(await problems(yaml)).toMatch(want);
    });
  }

  it('reports every problem of a config at once', async () => {
    const msg = await problems(`${structured}\ncriterion: nope\nlosses: [{ id: kd, options: { alpha: -1 } }]\noptions: { scope: everything }`);
    expect(msg).toMatch(/^ {2}criterion: /m);
    expect(msg).toMatch(/^ {2}losses\[0\]\.options\.alpha: /m);
    expect(msg).toMatch(/^ {2}options\.scope: /m);
  });

  it('lists every built-in component\'s options with name, type, default and description', () => {
    const list = registry.list();
    for (const c of list) {
      expect(c.options, `${c.kind} ${c.id}`).toBeDefined();
      for (const o of c.options!) {
        expect(typeof o.name).toBe('string');
        expect(o.type, `${c.id}.${o.name}`).not.toBe('');
        expect(o.description, `${c.id}.${o.name}`).not.toBe('');
      }
    }
    const fo = list.find((c) => c.id === 'first-order')!;
    expect(fo.options).toContainEqual({ name: 'normalize', type: 'boolean', default: true, description: expect.any(String) });
    expect(list.find((c) => c.id === 'kd')!.options).toContainEqual({ name: 'temperature', type: 'number (> 0)', default: 2, description: expect.any(String) });
    expect(list.find((c) => c.id === 'cofi')!.options!.map((o) => o.name)).toContain('lagrangianWarmupFraction');
  });
});
