import { Matrix, SingularValueDecomposition } from 'ml-matrix';

/** Singular values (descending) and vectors of a row-major `[rows, cols]` matrix (ml-matrix's Golub-Kahan SVD). */
export function svd(data: ArrayLike<number>, rows: number, cols: number): { s: number[]; u: Matrix; v: Matrix } {
  const m = new Matrix(rows, cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) m.set(i, j, data[i * cols + j]!);
  // ml-matrix wants rows >= cols for its thin decomposition; autoTranspose handles wide matrices.
  const d = new SingularValueDecomposition(m, { computeLeftSingularVectors: true, computeRightSingularVectors: true, autoTranspose: true });
  return { s: d.diagonal, u: d.leftSingularVectors, v: d.rightSingularVectors };
}

/**
 * Rank-r factors of a linear weight `W` `[in, out]` (the stored layout, `y = x W`): `W ~ V U` with
 * `V` `[in, r]` and `U` `[r, out]`, each carrying sqrt of the singular values. With `outWeights`
 * (FWSVD's per-output importance I_i: the rows of Hugging Face's `[out, in]` weight, the columns
 * here), the SVD is of `W diag(sqrt I)` and `U` is unweighted afterwards, so the factorization
 * minimises `sum_i I_i ||W[:, i] - (V U)[:, i]||^2` (Hsu et al. 2022, eq. 4-5).
 */
export function lowRankFactors(w: ArrayLike<number>, inDim: number, outDim: number, rank: number, outWeights?: ArrayLike<number>): { v: Float32Array; u: Float32Array; s: number[] } {
  const scale = outWeights ? Array.from(outWeights, (x) => Math.sqrt(Math.max(x, 0))) : undefined;
  if (scale) {
    // Output units with zero Fisher (never used on the sampled data) get the smallest positive weight,
    // so the unweighting stays finite.
    const pos = scale.filter((x) => x > 0);
    const floor = pos.length > 0 ? Math.min(...pos) : 1;
    for (let i = 0; i < scale.length; i++) if (!(scale[i]! > 0)) scale[i] = floor;
  }
  const weighted = new Float64Array(inDim * outDim);
  for (let i = 0; i < inDim; i++) for (let j = 0; j < outDim; j++) weighted[i * outDim + j] = w[i * outDim + j]! * (scale ? scale[j]! : 1);
  const { s, u, v } = svd(weighted, inDim, outDim);
  const r = Math.min(rank, s.length);
  const V = new Float32Array(inDim * r);
  const U = new Float32Array(r * outDim);
  for (let k = 0; k < r; k++) {
    const root = Math.sqrt(s[k]!);
    for (let i = 0; i < inDim; i++) V[i * r + k] = u.get(i, k) * root;
    for (let j = 0; j < outDim; j++) U[k * outDim + j] = (v.get(j, k) * root) / (scale ? scale[j]! : 1);
  }
  return { v: V, u: U, s };
}

/** A layer to allocate a rank for: its singular values and dimensions. */
export interface RankCandidate {
  name: string;
  s: number[];
  inDim: number;
  outDim: number;
}

/** The largest rank at which `r (in + out)` is still below the dense `in out`. */
export const maxUsefulRank = (inDim: number, outDim: number) => Math.max(1, Math.floor((inDim * outDim - 1) / (inDim + outDim)));

/**
 * Ranks for `layers` whose factors fit `budget` parameters (`sum r (in + out)`), by retained spectral
 * energy: every layer starts at rank 1, then the singular direction with the largest share of its
 * layer's energy per parameter (`s_k^2 / ||W||^2 / (in + out)`) is added, greedily, while the budget
 * allows. Shares rather than raw `s^2` so that layers of different scales compete fairly.
 */
export function allocateRanks(layers: RankCandidate[], budget: number): Record<string, number> {
  const ranks: Record<string, number> = {};
  let used = 0;
  const energy = layers.map((l) => l.s.reduce((a, x) => a + x * x, 0) || 1);
  for (const l of layers) {
    ranks[l.name] = 1;
    used += l.inDim + l.outDim;
  }
  if (used > budget) throw new Error(`svd: option 'paramRatio' leaves ${budget} parameters, below rank 1 for every chosen layer (${used})`);
  for (;;) {
    let best = -1;
    let bestGain = -Infinity;
    layers.forEach((l, i) => {
      const r = ranks[l.name]!;
      if (r >= Math.min(l.s.length, maxUsefulRank(l.inDim, l.outDim))) return;
      const cost = l.inDim + l.outDim;
      if (used + cost > budget) return;
      const gain = (l.s[r]! * l.s[r]!) / energy[i]! / cost;
      if (gain > bestGain) {
        bestGain = gain;
        best = i;
      }
    });
    if (best < 0) return ranks;
    const l = layers[best]!;
    ranks[l.name]!++;
    used += l.inDim + l.outDim;
  }
}

/**
 * Rank-r factors of a tall table `W` `[rows, cols]` (rows >> cols: a word embedding, vocab x hidden):
 * `W ~ U V` with `U` `[rows, r]` and `V` `[r, cols]`, each carrying sqrt of the singular values. The
 * right singular vectors come from ml-matrix's SVD of the small Gram matrix `W^T W` `[cols, cols]`
 * (float64), `U = W Q_r S_r^-1/2`: so `U V = W Q_r Q_r^T`, the projection on the top-r right singular
 * subspace, which is the best rank-r approximation (Eckart-Young). A direct SVD of a 30522 x 256
 * table took two minutes here; this takes seconds.
 */
export function tallFactors(w: ArrayLike<number>, rows: number, cols: number, rank: number): { u: Float32Array; v: Float32Array; s: number[] } {
  const gram = new Float64Array(cols * cols);
  const row = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) row[j] = w[i * cols + j]!;
    for (let j = 0; j < cols; j++) {
      const x = row[j]!;
      if (x === 0) continue;
      const base = j * cols;
      for (let k = j; k < cols; k++) gram[base + k]! += x * row[k]!;
    }
  }
  for (let j = 0; j < cols; j++) for (let k = 0; k < j; k++) gram[j * cols + k] = gram[k * cols + j]!;
  const g = new Matrix(cols, cols);
  for (let j = 0; j < cols; j++) for (let k = 0; k < cols; k++) g.set(j, k, gram[j * cols + k]!);
  const d = new SingularValueDecomposition(g, { computeLeftSingularVectors: false, computeRightSingularVectors: true });
  // Eigenvalues of W^T W are the squared singular values of W.
  const s = d.diagonal.map((x) => Math.sqrt(Math.max(x, 0)));
  const q = d.rightSingularVectors;
  const r = Math.min(rank, cols, rows);
  const U = new Float32Array(rows * r);
  const V = new Float32Array(r * cols);
  const qr = new Float64Array(cols * r); // Q_r S_r^-1/2, [cols, r]
  for (let k = 0; k < r; k++) {
    const root = Math.sqrt(s[k]!);
    for (let j = 0; j < cols; j++) {
      V[k * cols + j] = q.get(j, k) * root;
      // A zero singular value: W q_k = 0, its column of U is zero.
      qr[j * r + k] = root > 0 ? q.get(j, k) / root : 0;
    }
  }
  const acc = new Float64Array(r);
  for (let i = 0; i < rows; i++) {
    acc.fill(0);
    for (let j = 0; j < cols; j++) {
      const x = w[i * cols + j]!;
      if (x === 0) continue;
      for (let k = 0; k < r; k++) acc[k]! += x * qr[j * r + k]!;
    }
    for (let k = 0; k < r; k++) U[i * r + k] = acc[k]!;
  }
  return { u: U, v: V, s };
}
