import { describe, expect, it } from 'vitest';
import { golden } from '../test-support/shared.js';
import { determinePruningSequence, normalizePerLayer, pruneHeadMask, pruneNeuronMask } from './selection.js';

interface CapSelection {
  prune_percents: number[];
  n_heads: number;
  n_layers: number;
  n_intermediate: number;
  sequence_heads: number[];
  sequence_intermediate: number[];
  head_importance: number[][];
  old_head_mask: number[][];
  n_heads_to_prune: number;
  new_head_mask: number[][];
  neuron_importance: number[][];
  old_neuron_mask: number[][];
  n_neurons_to_prune: number;
  new_neuron_mask: number[][];
}

const g = (golden('algorithms-golden.json') as { cap_selection: CapSelection }).cap_selection;
const f32 = (rows: number[][]) => rows.map((r) => Float32Array.from(r));
const plain = (rows: Float32Array[]) => rows.map((r) => Array.from(r));

describe('structured selection (ContrastivePruning parity)', () => {
  it('computes the reference pruning sequence for 20/40/60/80%', () => {
    const seq = determinePruningSequence(g.prune_percents, g.n_heads * g.n_layers, g.n_intermediate * g.n_layers, { layers: g.n_layers });
    expect(seq.heads).toEqual(g.sequence_heads);
    expect(seq.neurons).toEqual(g.sequence_intermediate);
  });

  it('refuses a sequence that would empty a layer', () => {
    expect(() => determinePruningSequence([90], 16, 4096, { layers: 4, minHeadsPerLayer: 1 })).toThrow(/fewer than 1 head/);
  });

  it('chooses the reference head mask, keeping one head per layer and pruned heads pruned', () => {
    const got = pruneHeadMask(g.head_importance, f32(g.old_head_mask), g.n_heads_to_prune, 1);
    expect(plain(got)).toEqual(g.new_head_mask);
  });

  it('chooses the reference FFN-neuron mask', () => {
    const got = pruneNeuronMask(g.neuron_importance, f32(g.old_neuron_mask), g.n_neurons_to_prune);
    expect(plain(got)).toEqual(g.new_neuron_mask);
  });

  it('never empties a layer even when asked for more heads than may go', () => {
    const got = pruneHeadMask([[0.1, 0.2], [0.3, 0.4]], f32([[1, 1], [1, 1]]), 4, 1);
    expect(plain(got)).toEqual([[0, 1], [0, 1]]);
  });

  it('normalises scores by the L2 norm of each layer', () => {
    const [row] = normalizePerLayer([Float32Array.from([3, 4])]);
    expect(Array.from(row!)).toEqual([Math.fround(0.6), Math.fround(0.8)]);
  });
});
