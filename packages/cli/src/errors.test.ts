import { beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSafetensors, serializeSafetensors, type NamedTensor } from '@topiary/core';

// Every error a user can cause, through the built binary as a user runs it: exit code 2 and a message
// naming the file and what was expected (never a raw ENOENT, TypeError or tfjs message).
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = path.join(root, 'packages/cli/dist/bin.js');
const tiny = path.join(root, 'examples/models/bert-tiny-wordnet-supersense');
const pretrained = path.join(root, 'examples/models/bert-tiny-wordnet-pretrained');
const MODEL_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt'];

interface Result { code: number | null; stdout: string; stderr: string; seconds: number }
function topiary(args: string[], cwd = root): Promise<Result> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd, env: { ...process.env, TOPIARY_NATIVE_THREADS: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, seconds: (Date.now() - started) / 1000 });
    });
  });
}

const work = mkdtempSync(path.join(tmpdir(), 'topiary-errors-'));
const at = (...p: string[]) => path.join(work, ...p);

/** A copy of the tiny model (files linked) with some files replaced. */
function variant(name: string, replace: Record<string, string | Uint8Array | null> = {}, from = tiny): string {
  const dir = at(name);
  mkdirSync(dir, { recursive: true });
  for (const f of MODEL_FILES) {
    if (f in replace) {
      const v = replace[f];
      if (v !== null && v !== undefined) writeFileSync(path.join(dir, f), v);
    } else symlinkSync(path.join(from, f), path.join(dir, f));
  }
  return dir;
}
const tensors = () => parseSafetensors(new Uint8Array(readFileSync(path.join(tiny, 'model.safetensors'))));
const pack = (t: Map<string, NamedTensor>) => new Uint8Array(Buffer.concat(serializeSafetensors(t)));
const config = () => JSON.parse(readFileSync(path.join(tiny, 'config.json'), 'utf8')) as Record<string, unknown>;

/** A few dev lines spread over the label-sorted file. */
function sample(file: string, n: number): string {
  const lines = readFileSync(path.join(root, 'examples/data', file), 'utf8').split('\n').filter(Boolean);
  return `${Array.from({ length: n }, (_, i) => lines[Math.floor((i * lines.length) / n)]).join('\n')}\n`;
}

interface Case { name: string; args: string[]; cwd?: string; message: string[] }
const cases: Case[] = [];
const results = new Map<string, Result>();

beforeAll(async () => {
  if (!existsSync(bin)) return;
  writeFileSync(at('dev.jsonl'), sample('dev.jsonl', 24));
  // The same examples for both splits: every dev label is a training label, so no case fails on the data by accident.
  writeFileSync(at('train.jsonl'), sample('dev.jsonl', 24));
  const data = ['--train', at('train.jsonl'), '--dev', at('dev.jsonl')];
  const fresh = (n: string) => at('out', n);
  writeFileSync(at('labels-bad.json'), '[noun.act, noun.animal]');

  const noTensor = tensors();
  noTensor.delete('bert.encoder.layer.1.output.dense.bias');
  const misshapen = tensors();
  const q = misshapen.get('bert.encoder.layer.0.attention.self.query.bias')!;
  misshapen.set('bert.encoder.layer.0.attention.self.query.bias', { shape: [q.shape[0]! - 1], data: q.data.slice(1) });
  const nan = tensors();
  const w = nan.get('bert.encoder.layer.0.attention.self.query.weight')!;
  const wNan = w.data.slice();
  wNan[5] = NaN;
  nan.set('bert.encoder.layer.0.attention.self.query.weight', { shape: w.shape, data: wNan });
  // An embedding matrix with fewer rows than the tokenizer's vocabulary.
  const small = tensors();
  const emb = small.get('bert.embeddings.word_embeddings.weight')!;
  const rows = emb.shape[0]! - 192;
  small.set('bert.embeddings.word_embeddings.weight', { shape: [rows, emb.shape[1]!], data: emb.data.slice(0, rows * emb.shape[1]!) });
  const whole = readFileSync(path.join(tiny, 'model.safetensors'));
  const threeLabels = { ...config(), id2label: { 0: 'a', 1: 'b', 2: 'c' }, label2id: { a: 0, b: 1, c: 2 } };
  const noId2label = { ...config() };
  delete noId2label['id2label'];
  delete noId2label['label2id'];

  const m = {
    nullConfig: variant('null-config', { 'config.json': 'null' }),
    badTokenizerJson: variant('bad-tokenizer-json', { 'tokenizer.json': '{"model": {"vocab": ' }),
    badTokenizerConfig: variant('bad-tokenizer-config', { 'tokenizer_config.json': 'do_lower_case: true' }),
    noCls: variant('no-cls', { 'tokenizer.json': null, 'vocab.txt': '[PAD]\n[UNK]\nthe\n' }),
    noTokenizer: variant('no-tokenizer', { 'tokenizer.json': null, 'vocab.txt': null }),
    noTensor: variant('no-tensor', { 'model.safetensors': pack(noTensor) }),
    misshapen: variant('misshapen', { 'model.safetensors': pack(misshapen) }),
    nan: variant('nan', { 'model.safetensors': pack(nan) }),
    smallEmbedding: variant('small-embedding', { 'model.safetensors': pack(small), 'config.json': JSON.stringify({ ...config(), vocab_size: rows }) }),
    truncated: variant('truncated', { 'model.safetensors': whole.subarray(0, whole.length - 100) }),
    noSafetensors: variant('no-safetensors', { 'model.safetensors': null }),
    threeLabels: variant('three-labels', { 'config.json': JSON.stringify(threeLabels) }),
    noId2label: variant('no-id2label', { 'config.json': JSON.stringify(noId2label) }),
  };
  // A project folder and a run folder Topiary did not write.
  mkdirSync(at('project'));
  writeFileSync(at('project', 'README.md'), 'my notes');
  mkdirSync(at('run', 'checkpoint', 'model'), { recursive: true });
  for (const f of MODEL_FILES) copyFileSync(path.join(tiny, f), at('run', 'checkpoint', 'model', f));
  writeFileSync(at('run', 'report.json'), '{}');
  // A run config whose output is the folder holding its model.
  variant(path.join('self', 'model'));
  writeFileSync(at('self', 'run.yaml'), `method: structured\ntargetSparsity: 0.5\nmodel: model\ndata: { train: ${at('train.jsonl')}, dev: ${at('dev.jsonl')} }\nout: .\n`);
  writeFileSync(at('no-teacher.yaml'), `method: structured\ntargetSparsity: 0.5\nmodel: ${tiny}\nteacher: ${at('nope-teacher')}\ndata: { train: ${at('train.jsonl')}, dev: ${at('dev.jsonl')} }\nout: ${fresh('no-teacher')}\n`);
  // A plugin folder whose package.json names no existing entry.
  mkdirSync(at('plugin-broken'));
  writeFileSync(at('plugin-broken', 'package.json'), JSON.stringify({ name: 'broken', type: 'module', exports: { '.': { import: './dist/index.js' } } }));

  const evalOf = (dir: string) => ['eval', dir, '--data', at('dev.jsonl')];
  cases.push(
    { name: 'labels file not JSON', args: ['finetune', pretrained, ...data, '--labels', at('labels-bad.json'), '--out', fresh('labels')], message: [at('labels-bad.json'), 'not valid JSON', 'expected a JSON array of label names'] },
    { name: 'labels file missing', args: ['finetune', pretrained, ...data, '--labels', at('nope.json'), '--out', fresh('labels2')], message: [at('nope.json'), 'cannot read the labels file'] },
    { name: 'config.json is null', args: evalOf(m.nullConfig), message: [path.join(m.nullConfig, 'config.json'), 'expected a JSON object'] },
    { name: 'tokenizer.json not JSON', args: evalOf(m.badTokenizerJson), message: [path.join(m.badTokenizerJson, 'tokenizer.json'), 'not valid JSON'] },
    { name: 'tokenizer_config.json not JSON', args: evalOf(m.badTokenizerConfig), message: [path.join(m.badTokenizerConfig, 'tokenizer_config.json'), 'not valid JSON'] },
    { name: 'vocab.txt without [CLS]', args: evalOf(m.noCls), message: [path.join(m.noCls, 'vocab.txt'), "no '[CLS]' token"] },
    { name: 'no tokenizer files', args: evalOf(m.noTokenizer), message: [m.noTokenizer, 'no tokenizer.json or vocab.txt'] },
    { name: 'missing teacher folder', args: ['run', at('no-teacher.yaml')], message: [`teacher ${at('nope-teacher')}`, 'no such folder'] },
    { name: 'missing model folder (finetune)', args: ['finetune', at('nope-model'), ...data, '--out', fresh('nope')], message: [`model ${at('nope-model')}`, 'no such folder'] },
    { name: 'missing model folder (eval)', args: evalOf(at('nope-model')), message: [`model ${at('nope-model')}`, 'no such folder'] },
    { name: 'missing model.safetensors', args: evalOf(m.noSafetensors), message: [path.join(m.noSafetensors, 'model.safetensors'), 'not found'] },
    { name: 'missing tensor', args: evalOf(m.noTensor), message: [path.join(m.noTensor, 'model.safetensors'), "tensor 'bert.encoder.layer.1.output.dense.bias' is missing"] },
    { name: 'misshapen tensor', args: evalOf(m.misshapen), message: [path.join(m.misshapen, 'model.safetensors'), "tensor 'bert.encoder.layer.0.attention.self.query.bias'", 'expected shape'] },
    { name: 'truncated safetensors', args: evalOf(m.truncated), message: [path.join(m.truncated, 'model.safetensors'), 'data_offsets'] },
    { name: 'NaN in a weight', args: evalOf(m.nan), message: [path.join(m.nan, 'model.safetensors'), "tensor 'bert.encoder.layer.0.attention.self.query.weight' holds NaN", 'expected finite weights'] },
    { name: 'tokenizer larger than the embedding', args: evalOf(m.smallEmbedding), message: [m.smallEmbedding, `expected at most ${rows}`, 'word_embeddings'] },
    { name: 'id2label count differs from the classifier', args: evalOf(m.threeLabels), message: [path.join(m.threeLabels, 'config.json'), "'id2label' has 3 labels, expected 40"] },
    { name: 'data labels the model does not know', args: evalOf(m.noId2label), message: [at('dev.jsonl'), "label 'noun.", 'not one of the 40 labels (LABEL_0, LABEL_1'] },
    { name: 'finetune of a headed model without id2label on named labels', args: ['finetune', m.noId2label, ...data, '--out', fresh('noid')], message: [at('train.jsonl'), 'not one of the 40 labels (LABEL_0'] },
    { name: '--seed abc', args: ['finetune', pretrained, ...data, '--out', fresh('seed'), '--seed', 'abc'], message: ["--seed must be an integer, got 'abc'"] },
    { name: '--seed 1.5', args: ['finetune', pretrained, ...data, '--out', fresh('seed2'), '--seed', '1.5'], message: ["--seed must be an integer, got '1.5'"] },
    { name: '--plugin folder without its entry', args: ['--plugin', at('plugin-broken'), 'plugins'], message: [at('plugin-broken', 'dist', 'index.js'), 'not found', 'package.json'] },
    { name: '--plugin missing path', args: ['--plugin', at('nope-plugin'), 'plugins'], message: [at('nope-plugin'), 'not found'] },
    { name: '--out a folder Topiary did not write', args: ['finetune', pretrained, ...data, '--out', at('project')], message: [`out ${at('project')}`, 'README.md', '--force'] },
    { name: 'export RUN --out RUN', args: ['export', at('run'), '--out', at('run')], message: [`--out ${at('run')}`, 'is the input', 'even with --force'] },
    { name: 'export RUN --out RUN --force', args: ['export', at('run'), '--out', at('run'), '--force'], message: ['is the input'] },
    { name: 'export into a run folder', args: ['export', at('run'), '--out', at('run', 'export')], message: ['is inside the input'] },
    { name: 'run config with model: model and out: .', args: ['run', at('self', 'run.yaml')], message: [`out ${at('self')}`, 'contains the input'] },
    { name: '--out /etc/passwd/x', args: ['finetune', pretrained, ...data, '--out', '/etc/passwd/x'], message: ['/etc/passwd/x', '/etc/passwd is a file'] },
    { name: '--out /proc/self/x', args: ['finetune', pretrained, ...data, '--out', '/proc/self/x'], message: ['/proc/self/x', 'proc pseudo filesystem'] },
    { name: 'export --out /sys/x', args: ['export', at('run'), '--out', '/sys/x'], message: ['/sys/x', 'pseudo filesystem'] },
  );
  // Two at a time: each is a node process loading tfjs.
  const queue = [...cases];
  await Promise.all([0, 1].map(async () => {
    for (let c = queue.shift(); c; c = queue.shift()) results.set(c.name, await topiary(c.args, c.cwd));
  }));
  // The whole table, for the record (`npx vitest run packages/cli/src/errors.test.ts` prints it).
  console.log(cases.map((c) => `${c.name} | ${c.args.join(' ').replaceAll(work, '$W').replaceAll(root, '.')} | ${results.get(c.name)!.code} | ${results.get(c.name)!.stderr.trim().split('\n').pop()!.replaceAll(work, '$W').replaceAll(root, '.')}`).join('\n'));
}, 600_000);

describe.runIf(existsSync(bin))('errors a user can cause: exit 2, naming the file and what was expected', () => {
  it('every case of the table', () => {
    expect(cases.length).toBeGreaterThan(25);
    for (const c of cases) {
      const r = results.get(c.name)!;
      expect({ case: c.name, code: r.code }).toEqual({ case: c.name, code: 2 });
      const line = r.stderr.trim();
      for (const part of c.message) expect(line, c.name).toContain(part);
      for (const raw of ['ENOENT', 'TypeError', 'SyntaxError', 'Error in ', 'at async']) expect(line, c.name).not.toContain(raw);
      expect(r.seconds, `${c.name}: found before any training`).toBeLessThan(60);
    }
    // Nothing Topiary did not write was touched.
    expect(readdirSync(at('project'))).toEqual(['README.md']);
    expect(readdirSync(at('run')).sort()).toEqual(['checkpoint', 'report.json']);
    expect(readdirSync(at('self')).sort()).toEqual(['model', 'run.yaml']);
  });

  it('--json: a failure is also a run-failed event on stdout', async () => {
    const r = await topiary(['--json', 'run', at('no-teacher.yaml')]);
    expect(r.code).toBe(2);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; error?: Record<string, unknown> });
    const last = events[events.length - 1]!;
    expect(last.type).toBe('run-failed');
    expect(last.error).toMatchObject({ name: 'ConfigError', kind: 'usage', exitCode: 2 });
    expect(String(last.error!['message'])).toContain(at('nope-teacher'));
    const u = await topiary(['finetune', pretrained, '--json', '--train', at('train.jsonl'), '--dev', at('dev.jsonl'), '--out', at('out', 'json2'), '--seed', 'x']);
    expect(u.code).toBe(2);
    expect(JSON.parse(u.stdout.trim().split('\n').pop()!)).toMatchObject({ type: 'run-failed', error: { kind: 'usage', exitCode: 2 } });
    const plain = await topiary(['run', at('no-teacher.yaml')]);
    expect(plain.stdout).toBe('');
  });

  it('eval of a head without id2label uses LABEL_i: a model always wrong scores 0%, not 100%', async () => {
    // Always predicts class 0 (LABEL_0); every example is labelled LABEL_1. Mapping the data's sorted
    // label names onto the head (the old behaviour) made LABEL_1 class 0: 100%.
    const t = tensors();
    const bias = t.get('classifier.bias')!;
    const b = bias.data.slice();
    b[0] = 1e4;
    t.set('classifier.bias', { shape: bias.shape, data: b });
    const cfg = config();
    delete cfg['id2label'];
    delete cfg['label2id'];
    const dir = variant('always-0', { 'config.json': JSON.stringify(cfg), 'model.safetensors': pack(t) });
    const data = readFileSync(at('dev.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.stringify({ ...JSON.parse(l), label: 'LABEL_1' }));
    writeFileSync(at('dev-label1.jsonl'), `${data.join('\n')}\n`);
    const r = await topiary(['--json', 'eval', dir, '--data', at('dev-label1.jsonl')]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ accuracy: 0, examples: data.length });
  });

  it('--plugin loads a package folder through its package.json exports', async () => {
    const pkg = at('plugin-pkg');
    mkdirSync(path.join(pkg, 'dist'), { recursive: true });
    copyFileSync(path.join(root, 'packages/cli/test-fixtures/topiary-plugin-fixture/index.js'), path.join(pkg, 'dist', 'plugin.js'));
    writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: 'topiary-plugin-fixture', type: 'module', main: './nowhere.js', exports: { '.': { import: './dist/plugin.js' }, './package.json': './package.json' } }));
    for (const spec of [pkg, './packages/cli/test-fixtures/topiary-plugin-fixture']) {
      const r = await topiary(['--plugin', spec, 'plugins', '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toContainEqual(expect.objectContaining({ id: 'fixture-constant', plugin: 'topiary-plugin-fixture' }));
    }
  });
});
