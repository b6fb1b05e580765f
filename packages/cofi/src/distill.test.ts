import { beforeAll, describe, expect, it } from 'vitest';
import { tf, useBackend, type Tensor } from '@topiary/core';
import { golden } from '../../core/src/test-support/shared.js';
import { LayerTransformation, cofiDistillationLoss, defaultTeacherLayers, layerDistillationLoss } from './distill.js';

// Golden: CoFiPruning's `calculate_distillation_loss`, layer-distillation version 4, 12-layer teacher and student.
const G = golden('algorithms-golden.json').cofi_distill;
const REL = 1e-6;
const rel = (got: number, want: number) => Math.abs(got - want) / Math.abs(want);

let input: { teacherHiddenStates: Tensor[]; studentHiddenStates: Tensor[]; teacherLogits: Tensor; studentLogits: Tensor };
let transform: LayerTransformation;

beforeAll(async () => {
  await useBackend('wasm');
  const i = G.inputs;
  input = {
    teacherHiddenStates: i.teacher_hidden_states.map((h: number[][][]) => tf.tensor3d(h)),
    studentHiddenStates: i.student_hidden_states.map((h: number[][][]) => tf.tensor3d(h)),
    teacherLogits: tf.tensor2d(i.teacher_logits),
    studentLogits: tf.tensor2d(i.student_logits),
  };
  transform = LayerTransformation.fromHuggingFace(i.layer_transformation_weight, i.layer_transformation_bias);
});

function run(headLayerZ?: number[], removedLayerRule?: 'reference' | 'layer') {
  const s = G.settings;
  const r = cofiDistillationLoss(input, transform, {
    teacherLayers: s.teacher_layers,
    temperature: s.distill_temp,
    ceLossAlpha: s.distill_ce_loss_alpha,
    layerLossAlpha: s.distill_loss_alpha,
    ...(headLayerZ && { headLayerZ }),
    ...(removedLayerRule && { removedLayerRule }),
  });
  const out = {
    layer: r.layerLoss.dataSync()[0]!,
    kd: r.kdLoss.dataSync()[0]!,
    total: r.loss.dataSync()[0]!,
    alignment: r.alignment,
  };
  [r.layerLoss, r.kdLoss, r.loss].forEach((t) => t.dispose());
  return out;
}

describe('CoFi distillation parity with CoFiPruning (algorithms-golden.json `cofi_distill`)', () => {
  it('default teacher layers are the reference [2, 5, 8, 11] for 12 layers', () => {
    expect(defaultTeacherLayers(12)).toEqual(G.settings.teacher_layers);
    expect(defaultTeacherLayers(6)).toEqual([1, 2, 4, 5]);
    expect(defaultTeacherLayers(4)).toEqual([0, 1, 2, 3]);
    expect(defaultTeacherLayers(2)).toEqual([0, 1]);
  });

  it('all student layers present: layer loss, KD term and total', () => {
    const r = run();
    const want = G.all_layers_exist;
    expect(rel(r.layer, want.layer_loss), 'layer_loss').toBeLessThan(REL);
    expect(rel(r.kd, want.kd_loss), 'kd_loss').toBeLessThan(REL);
    expect(rel(r.total, want.total), 'total').toBeLessThan(REL);
    // Ordered matching: non-decreasing; here the last teacher layer takes student layer 0, so every
    // earlier one falls back to it.
    expect(r.alignment).toEqual([0, 0, 0, 0]);
  });

  it('with head_layer_z, the reference rule (existence mask applied to the loss ranking)', () => {
    const z: number[] = G.inputs.head_layer_z; // student layer 0 removed
    const r = run(z);
    const want = G.with_head_layer_z;
    expect(rel(r.layer, want.layer_loss), 'layer_loss').toBeLessThan(REL);
    expect(rel(r.kd, want.kd_loss), 'kd_loss').toBeLessThan(REL);
    expect(rel(r.total, want.total), 'total').toBeLessThan(REL);
    // The reference skips the best-RANKED candidate (rank 0 <-> layer 0 removed) and still matches layer 0.
    expect(r.alignment).toEqual([0, 0, 1, 4]);
  });

  it("with head_layer_z, the 'layer' rule never matches a removed layer", () => {
    const z: number[] = G.inputs.head_layer_z;
    const r = run(z, 'layer');
    // Computed independently (numpy float64, ordered matching over layers 1..11): [1, 1, 3, 4], 8.570410393669071.
    expect(r.alignment).toEqual([1, 1, 3, 4]);
    expect(rel(r.layer, 8.570410393669071)).toBeLessThan(REL);
  });

  it('the layer loss trains the transformation (gradients reach W and b)', () => {
    const { grads, value } = tf.variableGrads(
      () => layerDistillationLoss(input.teacherHiddenStates, input.studentHiddenStates, transform, { teacherLayers: [2, 5, 8, 11] }).loss,
      transform.variables(),
    );
    for (const g of Object.values(grads)) {
      expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0]!)).toBeGreaterThan(0);
      g.dispose();
    }
    value.dispose();
  });

  it('rejects a head_layer_z of the wrong length and teacher layers out of range', () => {
    expect(() => layerDistillationLoss(input.teacherHiddenStates, input.studentHiddenStates, transform, { headLayerZ: [1, 1] })).toThrow(/headLayerZ/);
    expect(() => layerDistillationLoss(input.teacherHiddenStates, input.studentHiddenStates, transform, { teacherLayers: [12] })).toThrow(/teacherLayers/);
  });
});
