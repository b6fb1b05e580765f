import { describe, expect, it } from 'vitest';
import { dampedScaleSolve } from './linalg.js';

describe('damped least squares for mask scales', () => {
  it('without damping solves the normal equations (2x2 by Cramer\'s rule)', () => {
    const ata = Float64Array.from([4, 1, 1, 3]);
    const atb = Float64Array.from([1, 2]);
    const det = 4 * 3 - 1 * 1;
    const want = [(1 * 3 - 1 * 2) / det, (4 * 2 - 1 * 1) / det];
    const { x, ok } = dampedScaleSolve(ata, atb, 2, 0);
    expect(ok).toBe(true);
    want.forEach((w, i) => expect(x![i]).toBeCloseTo(w, 12));
  });

  it('with damping d solves (M^2 + d^2 I)(x - 1) = M (b - M 1), the LSMR problem in closed form', () => {
    let s = 3;
    const r = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
    const n = 6;
    const R = Array.from({ length: n * 4 }, () => r());
    const M = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let t = 0; t < 4; t++) M[i * n + j]! += R[i * 4 + t]! * R[j * 4 + t]!; // rank 4: singular
    const b = Float64Array.from({ length: n }, () => r());
    const { x, ok } = dampedScaleSolve(M, b, n, 1);
    expect(ok).toBe(true);
    const d = Array.from(x!, (v) => v - 1);
    const rhs = b.map((bi, i) => bi - Array.from({ length: n }, (_, j) => M[i * n + j]!).reduce((a, v) => a + v, 0));
    const mv = (v: ArrayLike<number>) => Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => M[i * n + j]! * v[j]!).reduce((a, q) => a + q, 0));
    const lhs = mv(mv(d)).map((v, i) => v + d[i]!);
    const mb = mv(rhs);
    lhs.forEach((v, i) => expect(v).toBeCloseTo(mb[i]!, 9));
    // Undamped, the singular system fails instead of returning garbage.
    expect(dampedScaleSolve(M, b, n, 0).ok).toBe(false);
    // 1x1: divided directly, as the reference.
    expect(dampedScaleSolve(Float64Array.of(2), Float64Array.of(3), 1).x![0]).toBeCloseTo(1 + (3 - 2) / 2, 12);
  });
});
