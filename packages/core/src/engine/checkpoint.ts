import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ConfigError } from '../model/config.js';
import { readSafetensors, type NamedTensor } from '../io/safetensors.js';

/** What a stateful component saves in a checkpoint: plain JSON and named float32 tensors. */
export interface ComponentState {
  json?: unknown;
  tensors?: Map<string, NamedTensor>;
}

/**
 * A component with state across steps (optimizer moments, RNGs, learned masks, banks): `state()` is
 * called when a checkpoint is written, `restore()` once when a resumed run registers it.
 */
export interface Stateful {
  state(): ComponentState;
  restore(state: ComponentState): void;
}

/** Files of a checkpoint folder besides `model/` and `masks.safetensors`. */
export const STATE_FILE = 'state.json';
export const STATE_TENSORS_FILE = 'state.safetensors';

/** A checkpoint as read back: what `RunCheckpoints` wrote into `state.json` and `state.safetensors`. */
export interface SavedState {
  version: 1;
  /** Global step of the run when it was written. */
  step: number;
  /** The run's configuration, flattened to `field.path: value` (what resuming checks). */
  config: Record<string, unknown>;
  /** Results of the stages that had finished, by key, in order. */
  stages: [string, unknown][];
  /** JSON of each registered component, by name. */
  components: Record<string, unknown>;
  tensors: Map<string, NamedTensor>;
}

/** `{a: {b: 1}, c: [1, 2]}` -> `{'a.b': 1, c: [1, 2]}`: leaf fields by path (arrays are leaves). */
export function flattenConfig(value: unknown, prefix = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (v !== undefined) flattenConfig(v, prefix ? `${prefix}.${k}` : k, out);
    }
  } else out[prefix] = value;
  return out;
}

/** Fields whose values differ between a checkpoint's config and this run's, as `field (checkpoint X, now Y)`. */
export function configDifferences(saved: Record<string, unknown>, now: Record<string, unknown>): string[] {
  const keys = [...new Set([...Object.keys(saved), ...Object.keys(now)])].sort();
  const show = (v: unknown) => (v === undefined ? 'unset' : JSON.stringify(v));
  return keys.filter((k) => JSON.stringify(saved[k]) !== JSON.stringify(now[k])).map((k) => `${k} (checkpoint ${show(saved[k])}, now ${show(now[k])})`);
}

/** Reads a checkpoint folder's state, or explains why there is none to resume from (exit 2). */
export async function readSavedState(dir: string, out: string): Promise<SavedState> {
  const file = path.join(dir, STATE_FILE);
  if (!existsSync(file)) throw new ConfigError(`${out}: no checkpoint to resume from (expected ${file}; run without --resume to start)`);
  let json: Omit<SavedState, 'tensors'>;
  try {
    json = JSON.parse(await fs.readFile(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(`${file}: not valid JSON (${(err as Error).message})`);
  }
  if (json?.version !== 1 || !Array.isArray(json.stages) || typeof json.step !== 'number') {
    throw new ConfigError(`${file}: not a resumable checkpoint (expected version 1 with 'step' and 'stages'; checkpoints written before resume existed cannot be resumed)`);
  }
  const tensorsFile = path.join(dir, STATE_TENSORS_FILE);
  const tensors = existsSync(tensorsFile) ? await readSafetensors(tensorsFile) : new Map<string, NamedTensor>();
  return { ...json, tensors };
}

/**
 * A run's checkpoints: the components whose state goes into each one, a journal of finished stages,
 * and when to write (`every` N steps, at the end of each training phase, and when interrupted).
 *
 * Resuming re-runs the pruner's code from the top: a stage found in the journal returns its recorded
 * result without running (its effects on the model, masks and components are in their restored
 * state), a training loop continues at the recorded step, and each component takes its saved state
 * when it registers. Stages must therefore be keyed deterministically and never contain a training loop.
 */
export class RunCheckpoints {
  private readonly components = new Map<string, Stateful>();
  private readonly stages: [string, unknown][] = [];
  private readonly resumedStages: Map<string, unknown>;
  /** Step and path of the last checkpoint written (or resumed from). */
  last?: { step: number; path: string };

  constructor(
    private readonly o: {
      /** Write a checkpoint every N global steps (0 or unset: at phase ends and on interruption only). */
      every?: number;
      config: Record<string, unknown>;
      /** Writes the checkpoint folder (model, masks, then `state`'s two files); returns its path. */
      write: (state: SavedState) => Promise<string>;
      resumed?: SavedState;
      resumedPath?: string;
    },
  ) {
    this.resumedStages = new Map(o.resumed?.stages ?? []);
    if (o.resumed && o.resumedPath) this.last = { step: o.resumed.step, path: o.resumedPath };
  }

  get every(): number | undefined {
    return this.o.every && this.o.every > 0 ? this.o.every : undefined;
  }

  /** The step the resumed checkpoint was written at, if this run resumes. */
  get resumedStep(): number | undefined {
    return this.o.resumed?.step;
  }

  /**
   * Adds a component to every later checkpoint; when resuming and the checkpoint holds its state,
   * restores it now and returns true. Names must be unique among the components registered at once.
   */
  register(name: string, component: Stateful): boolean {
    if (this.components.has(name)) throw new Error(`checkpoint: two components registered as '${name}'`);
    this.components.set(name, component);
    const r = this.o.resumed;
    if (!r || !(name in r.components)) return false;
    const prefix = `${name}/`;
    const tensors = new Map([...r.tensors].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]));
    component.restore({ json: r.components[name], tensors });
    // Restored once: a component registered again later (the next phase's loop) starts fresh.
    delete r.components[name];
    return true;
  }

  unregister(name: string): void {
    this.components.delete(name);
  }

  /** Drops every component (a finished pruner's state is disposed; its result is in the journal). */
  unregisterAll(): void {
    this.components.clear();
  }

  /** The recorded result of a stage that had finished before the resumed checkpoint. */
  completed(key: string): { result: unknown } | undefined {
    return this.resumedStages.has(key) ? { result: this.resumedStages.get(key) } : undefined;
  }

  /** Records a finished stage (its result must be JSON). */
  finish(key: string, result: unknown): void {
    if (this.stages.some(([k]) => k === key)) throw new Error(`checkpoint: stage '${key}' ran twice (stage keys must be unique in a run)`);
    this.stages.push([key, result ?? null]);
  }

  /** Runs `fn` once per run: skipped on resume when the checkpoint says it had finished. */
  async stage<T>(key: string, fn: () => Promise<T> | T): Promise<T> {
    const done = this.completed(key);
    const result = done ? (done.result as T) : await fn();
    this.finish(key, result);
    return result;
  }

  /** Writes a checkpoint of every registered component at global `step`. */
  async save(step: number): Promise<string> {
    const components: Record<string, unknown> = {};
    const tensors = new Map<string, NamedTensor>();
    for (const [name, c] of this.components) {
      const s = c.state();
      components[name] = s.json ?? null;
      for (const [k, v] of s.tensors ?? []) tensors.set(`${name}/${k}`, v);
    }
    const p = await this.o.write({ version: 1, step, config: this.o.config, stages: [...this.stages], components, tensors });
    this.last = { step, path: p };
    return p;
  }
}

/** A variable's value as a float32 array (a copy: safe to keep after the variable changes). */
export function tensorState(v: { shape: number[]; dataSync(): ArrayLike<number> }): NamedTensor {
  return { shape: [...v.shape], data: Float32Array.from(v.dataSync()) };
}

/** `checkpoints.stage(key, fn)`, or just `fn()` for a run without checkpoints. */
export async function stage<T>(checkpoints: RunCheckpoints | undefined, key: string, fn: () => Promise<T> | T): Promise<T> {
  return checkpoints ? checkpoints.stage(key, fn) : fn();
}

/** Registers the criterion and losses that carry state (they implement `state` and `restore`). */
export function registerParts(checkpoints: RunCheckpoints | undefined, parts: { criterion?: { id: string } & Partial<Stateful>; losses?: ({ id: string } & Partial<Stateful>)[] }): void {
  if (!checkpoints) return;
  const stateful = (c: Partial<Stateful>): c is Stateful => typeof c.state === 'function' && typeof c.restore === 'function';
  if (parts.criterion && stateful(parts.criterion)) checkpoints.register(`criterion.${parts.criterion.id}`, parts.criterion);
  (parts.losses ?? []).forEach((l, i) => {
    if (stateful(l)) checkpoints.register(`loss.${i}.${l.id}`, l);
  });
}
