import { beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { MaskSet, bindMasks, loadBert, saveBert, saveMasks, tf, type Batch, type BertModel } from '@topiary/core';
import { testBackend } from '../../core/src/test-support/backend.js';
import { writeRunFixture, writeSweepFixture } from '../../report/src/test-support/fixtures.js';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

// The built binary, as a user runs it (`npm test` builds first).
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = path.join(root, 'packages/cli/dist/bin.js');
const tinyModel = path.join(root, 'examples/models/bert-tiny-wordnet-supersense');

function topiary(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.runIf(existsSync(bin))('topiary binary', () => {
  it('plugins --json lists the built-in ids with their packages', () => {
    const r = topiary('plugins', '--json');
    expect(r.code).toBe(0);
    const list = JSON.parse(r.stdout) as { id: string; kind: string; plugin: string }[];
    const ids = list.map((c) => `${c.kind}:${c.id}`);
    for (const id of ['scheduler:one-shot', 'scheduler:iterative', 'loss:kd', 'pruner:structured', 'criterion:magnitude', 'criterion:random', 'criterion:first-order']) {
      expect(ids).toContain(id);
    }
    expect(list.find((c) => c.id === 'first-order')?.plugin).toBe('@topiary/criteria-firstorder');
  });

  it('--plugin loads a third-party plugin by path', () => {
    const r = topiary('--plugin', 'packages/cli/test-fixtures/topiary-plugin-fixture/index.js', 'plugins', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toContainEqual(expect.objectContaining({ id: 'fixture-constant', plugin: 'topiary-plugin-fixture' }));
  });

  it('inspect --json reports shapes and parameter counts', () => {
    const r = topiary('inspect', tinyModel, '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ layers: 2, hiddenSize: 128, heads: [2, 2], intermediate: [512, 512], encoderSparsity: 0 });
    // 2 layers x (4 x (128x128 + 128) + 2 x 128x512 + 512 + 128)
    expect(j.encoderParams).toBe(2 * (4 * (128 * 128 + 128) + 2 * 128 * 512 + 512 + 128));
    expect(j.totalParams).toBeGreaterThan(1_400_000);
  });

  it('exits 2 naming the field on a bad config', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'topiary-cli-'));
    const cfg = path.join(dir, 'bad.yaml');
    writeFileSync(cfg, 'method: structured\nmodel: m\ndata: { train: a.jsonl }\ntargetSparsity: 1.5\n');
    const r = topiary('run', cfg);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('data.dev');
    expect(r.stderr).toContain('targetSparsity');
  });

  it('report: the page and SVGs of a run folder (--json says which), exit 2 on a file it did not write or a bad sweep.json', () => {
    const dir = path.join(mkdtempSync(path.join(tmpdir(), 'topiary-cli-')), 'run');
    writeRunFixture(dir, tinyModel);
    const r = topiary('--json', 'report', dir);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { kind: string; html: string; svgs: string[] };
    expect(out.kind).toBe('run');
    expect(out.html).toBe(path.join(dir, 'report.html'));
    for (const f of [out.html, ...out.svgs]) expect(existsSync(f), f).toBe(true);
    const mine = path.join(dir, 'notes.html');
    writeFileSync(mine, 'mine');
    const refused = topiary('report', dir, '--out', mine);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`${mine}: exists and was not written by topiary report`);
    expect(readFileSync(mine, 'utf8')).toBe('mine');
    const sweepDir = path.join(path.dirname(dir), 'sweep');
    const sweep = writeSweepFixture(sweepDir) as any;
    sweep.runs[0].status = 'done';
    writeFileSync(path.join(sweepDir, 'sweep.json'), JSON.stringify(sweep));
    const bad = topiary('report', sweepDir);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`${path.join(sweepDir, 'sweep.json')}: field 'runs[0].status'`);
  });

  it('run: a failure after the run started ends its events.ndjson with the run-failed event --json prints', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'topiary-cli-'));
    // A criterion that throws once the run is under way.
    const plugin = path.join(dir, 'failing-plugin.mjs');
    writeFileSync(
      plugin,
      `export default () => ({ name: 'failing', version: '1.0.0', register(c) { c.register(Symbol.for('topiary.criterion'), { useValue: { kind: 'criterion', id: 'fails', description: 'throws', create: () => ({ id: 'fails', kinds: ['head', 'neuron'], async score() { throw new Error('fixture criterion failed'); } }) } }); } });\n`,
    );
    const ex = path.join(root, 'examples');
    const cfg = path.join(dir, 'run.json');
    const out = path.join(dir, 'out');
    writeFileSync(cfg, JSON.stringify({ method: 'structured', model: tinyModel, data: { train: path.join(ex, 'data/train-10k.jsonl'), dev: path.join(ex, 'data/dev.jsonl'), labels: path.join(ex, 'data/labels.json'), trainLimit: 32, devLimit: 32 }, targetSparsity: 0.5, criterion: 'fails', training: { batchSize: 16, maxSteps: 2, maxLength: 16 }, out }));
    const r = topiary('--json', '--plugin', plugin, 'run', cfg);
    expect(r.code, r.stderr).toBe(3);
    const printed = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const logged = readFileSync(path.join(out, 'events.ndjson'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(logged[0].type).toBe('run-started');
    expect(logged.at(-1)).toEqual(printed.at(-1));
    expect(logged.at(-1)).toMatchObject({ type: 'run-failed', error: { kind: 'failure', exitCode: 3 } });
    expect(logged.at(-1).error.message).toContain('fixture criterion failed');
  });

  it('exits 2 naming the config file and the field of a bad component id or option, before any model loads', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'topiary-cli-'));
    const cfg = path.join(dir, 'bad-options.yaml');
    // The model does not exist: a message about it would mean the run got as far as loading.
    writeFileSync(cfg, 'method: structured\nmodel: no-such-model\ndata: { train: a.jsonl, dev: b.jsonl }\ntargetSparsity: 0.5\ncriterion: { id: first-order, options: { normalise: true } }\nlosses: [kd, { id: nope }]\n');
    const r = topiary('run', cfg);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${cfg}: invalid config`);
    expect(r.stderr).toMatch(/criterion\.options\.normalise: unknown option/);
    expect(r.stderr).toMatch(/losses\[1\]\.id: no loss 'nope'/);
    expect(r.stderr).not.toContain('no-such-model');
  });

  it('plugins --json lists each component\'s options', () => {
    const list = JSON.parse(topiary('plugins', '--json').stdout) as { id: string; options?: { name: string; type: string; default?: unknown; description: string }[] }[];
    const iterative = list.find((c) => c.id === 'iterative')!;
    expect(iterative.options!.map((o) => o.name)).toEqual(['levels', 'targetSparsity', 'steps']);
    expect(iterative.options!.find((o) => o.name === 'steps')).toMatchObject({ type: 'integer (>= 1)', default: 4 });
  });

  it('finetune reads --text-field, --pair-field and --label-field: a label only the second text decides is learned', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'topiary-cli-'));
    const data = path.join(dir, 'pairs.jsonl');
    // The same first text everywhere; the label follows the second, so without it nothing beats chance.
    const lines = Array.from({ length: 64 }, (_, i) => JSON.stringify({ premise: 'the same gloss for every line', hypothesis: i % 3 === 0 ? 'alpha' : 'omega', y: i % 3 === 0 ? 'first' : 'second' }));
    writeFileSync(data, `${lines.join('\n')}\n`);
    const pretrained = path.join(root, 'examples/models/bert-tiny-wordnet-pretrained');
    const args = ['--json', 'finetune', pretrained, '--train', data, '--dev', data, '--text-field', 'premise', '--label-field', 'y', '--max-steps', '30', '--batch-size', '16'];
    const r = topiary(...args, '--pair-field', 'hypothesis', '--out', path.join(dir, 'with-pair'));
    expect(r.code, r.stderr).toBe(0);
    const done = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).find((e) => e.type === 'run-completed');
    expect(done.metrics.accuracy).toBe(1);
    // No --lr: the default for bert-tiny's hidden size (1e-3), said on stderr.
    expect(r.stderr).toContain('learning rate 0.0010 (the default');
    // A pair field the data lacks is named.
    const missing = topiary(...args, '--pair-field', 'second_text', '--out', path.join(dir, 'missing'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("field 'second_text'");
  });

  it('profile --json: modules with the model\'s parameters, and --lut writes a table it will not write over a foreign file', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'topiary-profile-'));
    const lut = path.join(dir, 'lut.json');
    const r = topiary('profile', tinyModel, '--batch', '2', '--seq', '8', '--repeats', '1', '--lut', lut, '--neuron-points', '4', '--json');
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    const inspect = JSON.parse(topiary('inspect', tinyModel, '--json').stdout);
    expect(j.profile.params).toBe(inspect.totalParams);
    expect(j.profile.modules.filter((m: { group: string }) => m.group === 'attention')).toHaveLength(2 * 6);
    const table = JSON.parse(readFileSync(lut, 'utf8'));
    expect(table).toMatchObject({ format: 'topiary-latency-lut', batch: 2, seq: 8, heads: inspect.heads[0], intermediate: inspect.intermediate[0] });
    expect(j.lut).toEqual(table);
    // The table is shown in the terminal without --json.
    const text = topiary('profile', tinyModel, '--batch', '1', '--seq', '4', '--repeats', '1', '--lut', lut, '--lut-only', '--neuron-points', '2');
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/attention \(heads\): .* ms at 0/);
    const foreign = path.join(dir, 'notes.json');
    writeFileSync(foreign, '{"mine": true}');
    const refused = topiary('profile', tinyModel, '--lut', foreign, '--lut-only');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/notes\.json: the file exists and is not a latency table/);
    expect(readFileSync(foreign, 'utf8')).toBe('{"mine": true}');
  });

  it('exits 2 on an unknown option and 0 on --help', () => {
    expect(topiary('--bogus-flag').code).toBe(2);
    const h = topiary('--help');
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('run [options] <config>');
  });

  it('--version reports the backend', () => {
    const r = topiary('--json', '--version');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ version: '0.1.0', backend: 'wasm' });
  });
});

describe.runIf(existsSync(bin))('export', () => {
  beforeAll(testBackend);
  it('removes the FFN neurons a checkpoint\'s weight masks cut off whole, with the masked model\'s logits', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'topiary-export-'));
    const model = await loadBert(tinyModel);
    const masks = bindMasks(MaskSet.ones(model), model);
    // Layer 0's intermediate columns 0..99 (neurons' inputs: folded) and output rows 100..149 (neurons' outputs).
    const inter = new Float32Array(128 * 512).fill(1);
    for (let r = 0; r < 128; r++) for (let j = 0; j < 100; j++) inter[r * 512 + j] = 0;
    const out = new Float32Array(512 * 128).fill(1);
    out.fill(0, 100 * 128, 150 * 128);
    masks.weightMasks.set('bert.encoder.layer.0.intermediate.dense.weight', inter);
    masks.weightMasks.set('bert.encoder.layer.0.output.dense.weight', out);
    await saveBert(model, path.join(dir, 'model'));
    await saveMasks(masks, dir);
    // Beside the checkpoint, not inside it: an output inside an input is refused.
    const r = topiary('--json', 'export', dir, '--out', `${dir}-small`);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.intermediate).toEqual([512 - 150, 512]);
    expect(j.exportedParams).toBe(j.params - 150 * (2 * 128 + 1));
    const small = await loadBert(`${dir}-small`);
    const batch: Batch = { batchSize: 1, seqLen: 5, inputIds: Int32Array.from([101, 2000, 2023, 3000, 102]), attentionMask: new Int32Array(5).fill(1), tokenTypeIds: new Int32Array(5) };
    const logits = (m: BertModel, withMasks: boolean) => tf.tidy(() => m.forward(batch, withMasks ? masks.toTensors() : {}).logits!.dataSync());
    const want = logits(model, true);
    const got = logits(small, false);
    want.forEach((v, i) => expect(Math.abs(v - got[i]!)).toBeLessThan(1e-5));
    model.dispose();
    small.dispose();
  });
});

describe.runIf(existsSync(bin))('killing a run', () => {
  beforeAll(testBackend);
  it('leaves the last checkpoint loadable when the process is killed between checkpoints', async () => {
    const out = mkdtempSync(path.join(tmpdir(), 'topiary-kill-'));
    const child = spawn(process.execPath, [
      bin, '--json', 'finetune', tinyModel,
      '--train', path.join(root, 'examples/data/train-10k.jsonl'), '--dev', path.join(root, 'examples/data/dev.jsonl'),
      '--limit', '256', '--max-steps', '400', '--batch-size', '8', '--max-length', '32', '--checkpoint-every', '2', '--out', out,
    ], { cwd: root });
    let buffer = '';
    let saved = 0;
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        buffer += chunk.toString();
        const lines = buffer.split('\n');
        buffer = lines.pop()!;
        for (const line of lines) {
          if (line.includes('"checkpoint-saved"') && ++saved === 2) {
            // Kill mid-run: the step after a checkpoint, before the next one is complete.
            child.kill('SIGKILL');
            resolve();
          }
        }
      });
      child.on('exit', () => (saved < 2 ? reject(new Error('run ended before two checkpoints')) : resolve()));
    });
    await new Promise((r) => child.once('close', r));
    // `finetune --out` is itself the checkpoint: complete, loadable, and trained (not the input weights).
    const model = await loadBert(out);
    const original = await loadBert(tinyModel);
    expect(model.config.id2label.length).toBe(40);
    const name = 'bert.encoder.layer.0.attention.self.query.weight';
    const moved = tf.tidy(() => model.params.get(name)!.sub(original.params.get(name)!).abs().max().dataSync()[0]!);
    expect(moved).toBeGreaterThan(0);
    model.dispose();
    original.dispose();
  }, 120_000);
});
