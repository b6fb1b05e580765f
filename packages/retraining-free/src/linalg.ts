import { CholeskyDecomposition, Matrix } from 'ml-matrix';

export interface ScaleSolution {
  /** Solution of the damped problem, in float64; `undefined` when the solve failed. */
  x?: Float64Array;
  ok: boolean;
}

/**
 * The reference's `lsmr_cupy_solver`: given the normal equations `ATA x = ATB` of a least-squares
 * problem for mask scales, solve for the change from the all-ones mask, `x = 1 + d`, with
 * `d = argmin ||ATA d - (ATB - ATA 1)||^2 + damp^2 ||d||^2` (LSMR with `damp=1` on the square system),
 * so scales that the data do not determine stay near 1. Solved in closed form,
 * `(ATA^2 + damp^2 I) d = ATA b'`, by Cholesky in float64 (the squared system needs the precision).
 * A 1x1 system is divided directly, as the reference does. `ok` is false when the matrix is not
 * positive definite or the solution is not finite (the reference's `istop >= 3`).
 */
export function dampedScaleSolve(ata: Float64Array, atb: Float64Array, n: number, damp = 1): ScaleSolution {
  if (ata.length !== n * n || atb.length !== n) throw new Error(`dampedScaleSolve: expected a ${n}x${n} matrix and ${n} values, got ${ata.length} and ${atb.length}`);
  const b = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += ata[i * n + j]!;
    b[i] = atb[i]! - s;
  }
  let d: Float64Array;
  if (n === 1) d = Float64Array.of(b[0]! / ata[0]!);
  else {
    // Symmetrize: accumulated float32 products may differ in the last bit across the diagonal.
    const rows: number[][] = [];
    for (let i = 0; i < n; i++) {
      const r = new Array<number>(n);
      for (let j = 0; j < n; j++) r[j] = 0.5 * (ata[i * n + j]! + ata[j * n + i]!);
      rows.push(r);
    }
    const M = new Matrix(rows);
    const normal = M.mmul(M);
    for (let i = 0; i < n; i++) normal.set(i, i, normal.get(i, i) + damp * damp);
    const rhs = M.mmul(Matrix.columnVector(Array.from(b)));
    const chol = new CholeskyDecomposition(normal);
    if (!chol.isPositiveDefinite()) return { ok: false };
    d = Float64Array.from(chol.solve(rhs).getColumn(0));
  }
  const x = d.map((v) => v + 1);
  if (!x.every(Number.isFinite)) return { ok: false };
  return { x, ok: true };
}
