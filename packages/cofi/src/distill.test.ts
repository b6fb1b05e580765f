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

/**
 * The reference's version-4 matching, computed here in float64 from the golden's inputs (plain loops,
 * not Topiary's tfjs code): the MSE of every teacher layer against every transformed student layer,
 * then from the last teacher layer to the first, `indexes = argsort(loss)`, the first of
 * `indexes[(indexes < last) & existing]` ('reference': the existence mask indexed by rank, as CoFiPruning
 * does) or of the existing layers below `last` ('layer'), else `last` again.
 */
function referenceMatching(headLayerZ?: number[], rule: 'reference' | 'layer' = 'reference'): { alignment: number[]; layerLoss: number } {
  const i = G.inputs;
  const W: number[][] = i.layer_transformation_weight;
  const b: number[] = i.layer_transformation_bias;
  const teacher: number[][][][] = i.teacher_hidden_states.slice(1);
  const student: number[][][][] = i.student_hidden_states.slice(1);
  const transformed = student.map((layer) => layer.map((seq) => seq.map((x) => b.map((bo, o) => x.reduce((acc, xi, k) => acc + xi * W[o]![k]!, bo)))));
  const mse = (t: number[][][], s: number[][][]) => {
    let sum = 0;
    let n = 0;
    t.forEach((seq, bi) => seq.forEach((row, ti) => row.forEach((v, h) => ((sum += (v - s[bi]![ti]![h]!) ** 2), n++))));
    return sum / n;
  };
  const layers: number[] = G.settings.teacher_layers;
  const loss = layers.map((t) => transformed.map((s) => mse(teacher[t]!, s)));
  const S = student.length;
  const existing = headLayerZ?.map((z) => z !== 0);
  const alignment: number[] = [];
  let last = S;
  for (let k = layers.length - 1; k >= 0; k--) {
    const row = loss[k]!;
    const indexes = row.map((_, s) => s).sort((p, q) => row[p]! - row[q]!);
    const align = indexes.filter((s, rank) => s < last && (!existing || (rule === 'reference' ? existing[rank]! : existing[s]!)));
    const pick = align.length > 0 ? align[0]! : last;
    alignment.unshift(pick);
    last = pick;
  }
  return { alignment, layerLoss: alignment.reduce((acc, s, k) => acc + loss[k]![s]!, 0) };
}

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
    // The float64 matching reproduces the golden's loss, and Topiary picks the same layers.
    const ref = referenceMatching();
    expect(rel(ref.layerLoss, want.layer_loss), 'reference layer_loss').toBeLessThan(1e-9);
    expect(r.alignment).toEqual(ref.alignment);
    // Ordered matching: non-decreasing, each below the student's layer count.
    r.alignment.forEach((s, k) => expect(s).toBeLessThanOrEqual(r.alignment[k + 1] ?? G.inputs.student_hidden_states.length - 2));
  });

  it('with head_layer_z, the reference rule (existence mask applied to the loss ranking)', () => {
    const z: number[] = G.inputs.head_layer_z;
    const r = run(z);
    const want = G.with_head_layer_z;
    expect(rel(r.layer, want.layer_loss), 'layer_loss').toBeLessThan(REL);
    expect(rel(r.kd, want.kd_loss), 'kd_loss').toBeLessThan(REL);
    expect(rel(r.total, want.total), 'total').toBeLessThan(REL);
    // The reference skips the candidate whose RANK is a removed layer's index (and may still match a removed layer).
    const ref = referenceMatching(z, 'reference');
    expect(rel(ref.layerLoss, want.layer_loss), 'reference layer_loss').toBeLessThan(1e-9);
    expect(r.alignment).toEqual(ref.alignment);
  });

  it("with head_layer_z, the 'layer' rule never matches a removed layer", () => {
    const z: number[] = G.inputs.head_layer_z;
    const r = run(z, 'layer');
    const ref = referenceMatching(z, 'layer');
    expect(r.alignment).toEqual(ref.alignment);
    expect(rel(r.layer, ref.layerLoss)).toBeLessThan(REL);
    for (const s of r.alignment) expect(z[s], `student layer ${s}`).not.toBe(0);
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
