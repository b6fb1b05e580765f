// Topiary native elementwise and fused kernels, on the wasm heap like the GEMM (the caller passes
// Float32Array views of tfjs's wasm memory; outputs are tensors tfjs already allocated). Every kernel
// is a plain loop GCC vectorizes with -march=native, split over the worker pool's threads when it is
// large enough. Formulas follow tfjs's reference kernels (cpu backend) in float32:
//   gelu        y = 0.5 x (1 + erf(x / sqrt 2)), erf as tfjs's (Abramowitz-Stegun 7.1.26)
//   layerNorm   y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis (two-pass moments),
//               optionally of x + res (the residual add fused in, recomputed in the backward pass)
//   softmax     y = softmax(scale * s + mask) over the last axis, mask a per-row-group additive vector
//   adamw       m' = b1 m + (1-b1) g; v' = b2 v + (1-b2) g^2; p' = decay p - lr (m'/bc1) / (sqrt(v'/bc2) + eps)
//   binary      add/sub/mul/div with one side broadcast as a suffix (row, scalar) or per row (column)
//   transpose   [A, B, C, D] -> [A, C, B, D] as row copies (attention's head split and merge)
//   sumSquares  sum of x^2 in double (the global gradient norm for clipping)
//   colSum      sums over leading axes ([rows, cols] -> [cols]), double accumulators as tfjs's cpu Sum
//   dropout     tf.dropout's multiplier floor(u + keep) / keep with u from tfjs's own generator
//               (seedrandom's Alea, same values in the same order), so masks equal tf.dropout's
//   attention   (softmax(scale q k^T + mask) * mult) v per example and head on [B, T, heads * d],
//               and the gradients of q, k and v
#include <math.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

typedef void (*chunk_fn)(void *ctx, long begin, long end, int tid);

typedef struct {
  chunk_fn fn;
  void *ctx;
  long n;
} split;

static void run_chunk(void *arg, int tid, int threads, void *scratch) {
  (void)scratch;
  split *sp = arg;
  sp->fn(sp->ctx, sp->n * tid / threads, sp->n * (tid + 1) / threads, tid);
}

// Splits [0, n) into at most topiary_threads() contiguous chunks of at least min_chunk items, run by
// the worker pool. Returns the number of threads used (per-thread partial results are indexed by tid).
static int parallel(long n, long min_chunk, chunk_fn fn, void *ctx) {
  int threads = topiary_threads();
  long by_size = min_chunk > 0 ? n / min_chunk : n;
  if (by_size < threads) threads = by_size < 1 ? 1 : (int)by_size;
  if (threads > 16) threads = 16;
  split sp = {fn, ctx, n};
  topiary_pool_run(threads, run_chunk, &sp);
  return threads;
}

#define ELEMS_PER_THREAD 65536L

// expf to ~1 ulp (Cephes), branch-free so loops over it vectorize.
static inline float exp_f(float x) {
  x = x < -87.33654f ? -87.33654f : x > 88.37626f ? 88.37626f : x;
  // Round to nearest with the 1.5 * 2^23 trick (|x log2 e| < 2^22), which vectorizes everywhere.
  float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  union {
    int32_t i;
    float f;
  } s = {.i = ((int32_t)n + 127) << 23};
  return p * s.f;
}

// erf as tfjs computes it (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7).
static inline float erf_f(float x) {
  const float p = 0.3275911f, a1 = 0.254829592f, a2 = -0.284496736f, a3 = 1.421413741f, a4 = -1.453152027f, a5 = 1.061405429f;
  float v = fabsf(x);
  float t = 1.0f / (1.0f + p * v);
  float y = 1.0f - (((((a5 * t + a4) * t) + a3) * t + a2) * t + a1) * t * exp_f(-v * v);
  return x < 0.f ? -y : y;
}

// ---- Row reductions ------------------------------------------------------------------------------
// GCC keeps a float sum in source order unless told it may reassociate (-ffast-math), which makes a
// reduction one serial add chain of about 4 cycles an element. These keep 16 independent partial sums
// in a vector instead (rounding differs from tfjs's order by a few ulp).

typedef float lanes __attribute__((vector_size(64)));
typedef int32_t lane_mask __attribute__((vector_size(64)));
#define LANES 16

static inline lanes load_lanes(const float *p) {
  lanes v;
  memcpy(&v, p, sizeof v);
  return v;
}

static inline float sum_lanes(lanes v) {
  float s = 0.f;
  for (int i = 0; i < LANES; i++) s += v[i];
  return s;
}

static inline float row_sum(const float *x, long n) {
  lanes acc = {0};
  long j = 0;
  for (; j + LANES <= n; j += LANES) acc += load_lanes(x + j);
  float s = sum_lanes(acc);
  for (; j < n; j++) s += x[j];
  return s;
}

// sum (x - mean)^2
static inline float row_sq_dev(const float *x, float mean, long n) {
  lanes acc = {0};
  long j = 0;
  for (; j + LANES <= n; j += LANES) {
    lanes d = load_lanes(x + j) - mean;
    acc += d * d;
  }
  float s = sum_lanes(acc);
  for (; j < n; j++) s += (x[j] - mean) * (x[j] - mean);
  return s;
}

static inline float row_dot(const float *a, const float *b, long n) {
  lanes acc = {0};
  long j = 0;
  for (; j + LANES <= n; j += LANES) acc += load_lanes(a + j) * load_lanes(b + j);
  float s = sum_lanes(acc);
  for (; j < n; j++) s += a[j] * b[j];
  return s;
}

static inline float row_max(const float *x, long n) {
  lanes acc;
  long j = 0;
  float m = -INFINITY;
  if (n >= LANES) {
    acc = load_lanes(x);
    for (j = LANES; j + LANES <= n; j += LANES) {
      lanes v = load_lanes(x + j);
      lane_mask gt = v > acc; // C has no vector ?: (GCC allows it in C++ only)
      acc = (lanes)(((lane_mask)v & gt) | ((lane_mask)acc & ~gt));
    }
    for (int i = 0; i < LANES; i++) m = acc[i] > m ? acc[i] : m;
  }
  for (; j < n; j++) m = x[j] > m ? x[j] : m;
  return m;
}

// ---- GELU ----------------------------------------------------------------------------------------

typedef struct {
  const float *x, *dy;
  float *y;
} gelu_ctx;

static void gelu_fwd_chunk(void *arg, long b, long e, int tid) {
  (void)tid;
  gelu_ctx *c = arg;
  const float *restrict x = c->x;
  float *restrict y = c->y;
  for (long i = b; i < e; i++) y[i] = 0.5f * x[i] * (1.0f + erf_f(x[i] * 0.70710678118654752f));
}

// d/dx [x Phi(x)] = Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi).
static void gelu_bwd_chunk(void *arg, long b, long e, int tid) {
  (void)tid;
  gelu_ctx *c = arg;
  const float *restrict x = c->x;
  const float *restrict dy = c->dy;
  float *restrict dx = c->y;
  for (long i = b; i < e; i++) {
    float xi = x[i];
    float cdf = 0.5f * (1.0f + erf_f(xi * 0.70710678118654752f));
    float pdf = 0.39894228040143268f * exp_f(-0.5f * xi * xi);
    dx[i] = dy[i] * (cdf + xi * pdf);
  }
}

// ---- LayerNorm over the last axis ----------------------------------------------------------------

typedef struct {
  const float *x, *res, *gamma, *beta, *dy, *mean, *rstd; // res: optional residual, normalizes x + res
  float *y, *mean_out, *rstd_out, *dgamma_part, *dbeta_part;
  long cols;
  float eps;
} ln_ctx;

static void ln_fwd_chunk(void *arg, long b, long e, int tid) {
  (void)tid;
  ln_ctx *c = arg;
  const long n = c->cols;
  const float *restrict gamma = c->gamma;
  const float *restrict beta = c->beta;
  for (long r = b; r < e; r++) {
    const float *x = c->x + r * n;
    float *y = c->y + r * n;
    if (c->res) {
      const float *restrict res = c->res + r * n;
      for (long j = 0; j < n; j++) y[j] = x[j] + res[j];
      x = y; // normalized in place below (each element read before it is written)
    }
    float mean = row_sum(x, n) / (float)n;
    float q = row_sq_dev(x, mean, n);
    float rstd = 1.0f / sqrtf(q / (float)n + c->eps);
    for (long j = 0; j < n; j++) y[j] = (x[j] - mean) * rstd * gamma[j] + beta[j];
    c->mean_out[r] = mean;
    c->rstd_out[r] = rstd;
  }
}

// dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy gamma; dgamma = sum dy xhat; dbeta = sum dy.
static void ln_bwd_chunk(void *arg, long b, long e, int tid) {
  ln_ctx *c = arg;
  const long n = c->cols;
  const float *restrict gamma = c->gamma;
  float *restrict dgamma = c->dgamma_part + tid * n;
  float *restrict dbeta = c->dbeta_part + tid * n;
  float *sum = c->res ? malloc(sizeof(float) * n) : NULL;
  for (long j = 0; j < n; j++) dgamma[j] = dbeta[j] = 0.f;
  for (long r = b; r < e; r++) {
    const float *restrict x = c->x + r * n;
    if (sum) {
      const float *restrict res = c->res + r * n;
      for (long j = 0; j < n; j++) sum[j] = x[j] + res[j];
      x = sum;
    }
    const float *restrict dy = c->dy + r * n;
    float *restrict dx = c->y + r * n;
    const float mean = c->mean[r], rstd = c->rstd[r];
    lanes ag = {0}, agx = {0};
    long j = 0;
    for (; j + LANES <= n; j += LANES) {
      lanes xhat = (load_lanes(x + j) - mean) * rstd, d = load_lanes(dy + j);
      lanes g = d * load_lanes(gamma + j);
      ag += g;
      agx += g * xhat;
    }
    float sg = sum_lanes(ag), sgx = sum_lanes(agx);
    for (; j < n; j++) {
      float xhat = (x[j] - mean) * rstd, g = dy[j] * gamma[j];
      sg += g;
      sgx += g * xhat;
    }
    for (j = 0; j < n; j++) {
      float xhat = (x[j] - mean) * rstd;
      dgamma[j] += dy[j] * xhat;
      dbeta[j] += dy[j];
    }
    sg /= (float)n;
    sgx /= (float)n;
    for (long j = 0; j < n; j++) {
      float xhat = (x[j] - mean) * rstd;
      dx[j] = rstd * (dy[j] * gamma[j] - sg - xhat * sgx);
    }
  }
  free(sum);
}

// ---- Softmax over the last axis of scale * s + mask ----------------------------------------------

typedef struct {
  const float *s, *mask, *y, *dy;
  float *out;
  long cols, rows_per_mask;
  float scale;
} sm_ctx;

static void sm_fwd_chunk(void *arg, long b, long e, int tid) {
  (void)tid;
  sm_ctx *c = arg;
  const long n = c->cols;
  for (long r = b; r < e; r++) {
    const float *restrict s = c->s + r * n;
    const float *restrict mask = c->mask ? c->mask + (r / c->rows_per_mask) * n : NULL;
    float *restrict y = c->out + r * n;
    if (mask)
      for (long j = 0; j < n; j++) y[j] = s[j] * c->scale + mask[j];
    else
      for (long j = 0; j < n; j++) y[j] = s[j] * c->scale;
    float mx = row_max(y, n);
    for (long j = 0; j < n; j++) y[j] = exp_f(y[j] - mx);
    float inv = 1.0f / row_sum(y, n);
    for (long j = 0; j < n; j++) y[j] *= inv;
  }
}

// ds = scale * y (dy - sum(dy y)).
static void sm_bwd_chunk(void *arg, long b, long e, int tid) {
  (void)tid;
  sm_ctx *c = arg;
  const long n = c->cols;
  for (long r = b; r < e; r++) {
    const float *restrict y = c->y + r * n;
    const float *restrict dy = c->dy + r * n;
    float *restrict ds = c->out + r * n;
    float dot = row_dot(dy, y, n);
    for (long j = 0; j < n; j++) ds[j] = c->scale * (y[j] * (dy[j] - dot));
  }
}

// ---- AdamW ---------------------------------------------------------------------------------------

typedef struct {
  const float *p, *g, *m, *v;
  float *p2, *m2, *v2;
  float lr, b1, b2, eps, bc1, bc2, decay, sign;
} adam_ctx;

static void adam_chunk(void *arg, long b, long e, int tid) {
  (void)tid;
  adam_ctx *c = arg;
  const float *restrict p = c->p, *restrict g = c->g, *restrict m = c->m, *restrict v = c->v;
  float *restrict p2 = c->p2, *restrict m2 = c->m2, *restrict v2 = c->v2;
  const float b1 = c->b1, b2 = c->b2, c1 = 1.0f - c->b1, c2 = 1.0f - c->b2, sign = c->sign;
  for (long i = b; i < e; i++) {
    float gi = sign * g[i];
    float mi = m[i] * b1 + gi * c1;
    float vi = v[i] * b2 + (gi * gi) * c2;
    float update = (mi / c->bc1) / (sqrtf(vi / c->bc2) + c->eps);
    m2[i] = mi;
    v2[i] = vi;
    p2[i] = p[i] * c->decay - update * c->lr;
  }
}

// ---- Binary elementwise with broadcasting --------------------------------------------------------

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV };
enum { BC_SAME, BC_B_SUFFIX, BC_A_SUFFIX, BC_B_PER_ROW, BC_A_PER_ROW };

typedef struct {
  const float *a, *b;
  float *out;
  long inner; // suffix length (BC_*_SUFFIX) or row length (BC_*_PER_ROW)
  int op, mode;
} bin_ctx;

#define BIN_LOOP(EXPR)                                                                                  \
  switch (c->mode) {                                                                                    \
  case BC_SAME:                                                                                         \
    for (long i = bg; i < e; i++) { float x = a[i], y = bb[i]; out[i] = (EXPR); }                       \
    break;                                                                                              \
  case BC_B_SUFFIX:                                                                                     \
    for (long r = bg / c->inner; r * c->inner < e; r++) {                                               \
      long lo = r * c->inner > bg ? r * c->inner : bg, hi = (r + 1) * c->inner < e ? (r + 1) * c->inner : e; \
      const float *restrict br = bb - r * c->inner;                                                     \
      for (long i = lo; i < hi; i++) { float x = a[i], y = br[i]; out[i] = (EXPR); }                    \
    }                                                                                                   \
    break;                                                                                              \
  case BC_A_SUFFIX:                                                                                     \
    for (long r = bg / c->inner; r * c->inner < e; r++) {                                               \
      long lo = r * c->inner > bg ? r * c->inner : bg, hi = (r + 1) * c->inner < e ? (r + 1) * c->inner : e; \
      const float *restrict ar = a - r * c->inner;                                                      \
      for (long i = lo; i < hi; i++) { float x = ar[i], y = bb[i]; out[i] = (EXPR); }                   \
    }                                                                                                   \
    break;                                                                                              \
  case BC_B_PER_ROW:                                                                                    \
    for (long r = bg / c->inner; r * c->inner < e; r++) {                                               \
      long lo = r * c->inner > bg ? r * c->inner : bg, hi = (r + 1) * c->inner < e ? (r + 1) * c->inner : e; \
      const float y = bb[r];                                                                            \
      for (long i = lo; i < hi; i++) { float x = a[i]; out[i] = (EXPR); }                               \
    }                                                                                                   \
    break;                                                                                              \
  case BC_A_PER_ROW:                                                                                    \
    for (long r = bg / c->inner; r * c->inner < e; r++) {                                               \
      long lo = r * c->inner > bg ? r * c->inner : bg, hi = (r + 1) * c->inner < e ? (r + 1) * c->inner : e; \
      const float x = a[r];                                                                             \
      for (long i = lo; i < hi; i++) { float y = bb[i]; out[i] = (EXPR); }                              \
    }                                                                                                   \
    break;                                                                                              \
  }

static void bin_chunk(void *arg, long bg, long e, int tid) {
  (void)tid;
  bin_ctx *c = arg;
  const float *restrict a = c->a, *restrict bb = c->b;
  float *restrict out = c->out;
  switch (c->op) {
  case OP_ADD: BIN_LOOP(x + y) break;
  case OP_SUB: BIN_LOOP(x - y) break;
  case OP_MUL: BIN_LOOP(x * y) break;
  case OP_DIV: BIN_LOOP(x / y) break;
  }
}

// ---- Column sums (sum over leading axes) ---------------------------------------------------------

typedef struct {
  const float *x;
  float *out;
  long rows, cols;
} colsum_ctx;

static void colsum_chunk(void *arg, long b, long e, int tid) {
  (void)tid;
  colsum_ctx *c = arg;
  double acc[256];
  for (long j0 = b; j0 < e; j0 += 256) {
    long w = e - j0 < 256 ? e - j0 : 256;
    for (long j = 0; j < w; j++) acc[j] = 0.0;
    for (long r = 0; r < c->rows; r++) {
      const float *restrict row = c->x + r * c->cols + j0;
      for (long j = 0; j < w; j++) acc[j] += row[j];
    }
    for (long j = 0; j < w; j++) c->out[j0 + j] = (float)acc[j];
  }
}

// ---- Sum of squares (global gradient norm) ------------------------------------------------------

typedef struct {
  const float *x;
  double part[16];
} sumsq_ctx;

static void sumsq_chunk(void *arg, long b, long e, int tid) {
  sumsq_ctx *c = arg;
  const float *restrict x = c->x;
  double acc[8] = {0};
  long i = b;
  for (; i + 8 <= e; i += 8)
    for (int j = 0; j < 8; j++) acc[j] += (double)x[i + j] * x[i + j];
  double s = 0;
  for (; i < e; i++) s += (double)x[i] * x[i];
  for (int j = 0; j < 8; j++) s += acc[j];
  c->part[tid] = s;
}

// ---- Transpose [A, B, C, D] -> [A, C, B, D] (attention's head split and merge) --------------------

typedef struct {
  const float *x;
  float *out;
  long b, c, d;
} perm_ctx;

static void perm_chunk(void *arg, long begin, long end, int tid) {
  (void)tid;
  perm_ctx *p = arg;
  for (long row = begin; row < end; row++) { // row = (a, b, c) of the input
    long cc = row % p->c, bb = (row / p->c) % p->b, aa = row / (p->c * p->b);
    memcpy(p->out + ((aa * p->c + cc) * p->b + bb) * p->d, p->x + row * p->d, sizeof(float) * (size_t)p->d);
  }
}

// ---- Dropout with tfjs's Alea stream -------------------------------------------------------------

// seedrandom's Alea computes t = 2091639 s0 + c 2^-32, c = floor(t), s = t - c in doubles, with every
// s a multiple of 2^-32 and t < 2^53: exactly a lag-3 multiply-with-carry generator on 32-bit
// integers, x = (a x[-3] + c) mod 2^32, c = (a x[-3] + c) / 2^32. In integers the only serial
// dependence is the carry (an add and a shift), about 3x faster than the double recurrence.
// Writes the raw 32-bit outputs, u = x 2^-32, to `out`.
static void alea_fill(uint32_t *restrict out, size_t n, uint32_t x0, uint32_t x1, uint32_t x2, uint32_t c) {
  uint64_t carry = c;
  size_t i = 0;
  // Three steps per iteration, so the lag-3 state stays in place instead of rotating registers.
  for (; i + 3 <= n; i += 3) {
    uint64_t t = 2091639u * (uint64_t)x0 + carry;
    x0 = (uint32_t)t;
    carry = t >> 32;
    t = 2091639u * (uint64_t)x1 + carry;
    x1 = (uint32_t)t;
    carry = t >> 32;
    t = 2091639u * (uint64_t)x2 + carry;
    x2 = (uint32_t)t;
    carry = t >> 32;
    out[i] = x0;
    out[i + 1] = x1;
    out[i + 2] = x2;
  }
  for (; i < n; i++) {
    uint64_t t = 2091639u * (uint64_t)x0 + carry;
    carry = t >> 32;
    x0 = x1;
    x1 = x2;
    x2 = (uint32_t)t;
    out[i] = x2;
  }
}

typedef struct {
  const float *x;
  float *y, *mult; // mult holds the generator's raw outputs on entry
  float keep;
} dropout_ctx;

// mult = floor(u + keep) / keep, y = x * mult. u = x 2^-32 rounded to float32 is (float)x 2^-32 (a
// power-of-two scale commutes with rounding), so the sum is the float32 sum tfjs's Add computes.
static void dropout_chunk(void *arg, long b, long e, int tid) {
  (void)tid;
  dropout_ctx *c = arg;
  const uint32_t *bits = (const uint32_t *)c->mult; // read and overwritten in place, element by element
  float *mult = c->mult;
  float *restrict y = c->y;
  const float *restrict x = c->x;
  const float keep = c->keep;
  if (!x) { // the mask alone (fused attention applies it itself)
    for (long i = b; i < e; i++) mult[i] = floorf((float)bits[i] * 2.3283064365386963e-10f + keep) / keep;
    return;
  }
  for (long i = b; i < e; i++) {
    float m = floorf((float)bits[i] * 2.3283064365386963e-10f + keep) / keep;
    mult[i] = m;
    y[i] = x[i] * m;
  }
}

// ---- Attention core ------------------------------------------------------------------------------
// ctx = (softmax(scale Q K^T + mask) * mult) V for every (example, head), and its gradients. Q, K, V,
// ctx and their gradients are [B, T, A] with A = heads * d, as the linear layers produce and consume
// them: head h of example b is the T x d block at b T A + h d with row stride A, so the head split and
// merge (two transposes each way) disappear, and one head's work stays in L1/L2. probs (before dropout,
// saved for the backward pass) and mult (dropout's multiplier, or none) are [B, heads, T, T]; mask is
// an additive [B, T] over keys.

typedef struct {
  const float *q, *k, *v, *mask, *mult, *probs, *dctx;
  float *ctx, *probs_out, *dq, *dk, *dv;
  long T, heads, d;
  float scale;
} att_ctx;

// Head `task` = b * heads + h: its first row in a [B, T, A] tensor.
static inline long head_offset(const att_ctx *c, long task) { return (task / c->heads) * c->T * c->heads * c->d + (task % c->heads) * c->d; }

static inline long pad16(long n) { return (n + 15) & ~15L; }
static inline void store_lanes(float *p, lanes v) { memcpy(p, &v, sizeof v); }

// out[0, cols) = sum_e x[e * xs] M[e, 0 : cols) for M row-major with row stride ldm, cols a multiple of
// 16 (M zero-padded). Four vectors of columns at a time stay in registers over the whole sum, so each
// multiply-add costs one load; every product of a head's attention is one of these per row.
static void row_times(float *restrict out, const float *restrict x, long xs, long n, const float *restrict m, long ldm, long cols) {
  long c0 = 0;
  for (; c0 + 64 <= cols; c0 += 64) {
    lanes a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (long e = 0; e < n; e++) {
      const float xe = x[e * xs], *r = m + e * ldm + c0;
      a0 += xe * load_lanes(r);
      a1 += xe * load_lanes(r + 16);
      a2 += xe * load_lanes(r + 32);
      a3 += xe * load_lanes(r + 48);
    }
    store_lanes(out + c0, a0);
    store_lanes(out + c0 + 16, a1);
    store_lanes(out + c0 + 32, a2);
    store_lanes(out + c0 + 48, a3);
  }
  for (; c0 < cols; c0 += 16) {
    lanes a = {0};
    for (long e = 0; e < n; e++) a += x[e * xs] * load_lanes(m + e * ldm + c0);
    store_lanes(out + c0, a);
  }
}

// A head's T x d block (row stride A) copied to dst: as is with rows padded to dp (zeros), or
// transposed to d x Tp.
static void head_pack(const float *src, long A, long T, long d, float *dst, long dp) {
  for (long j = 0; j < T; j++) {
    memcpy(dst + j * dp, src + j * A, sizeof(float) * (size_t)d);
    for (long e = d; e < dp; e++) dst[j * dp + e] = 0.f;
  }
}
static void head_pack_t(const float *src, long A, long T, long d, float *dst, long Tp) {
  for (long e = 0; e < d; e++) {
    for (long j = 0; j < T; j++) dst[e * Tp + j] = src[j * A + e];
    for (long j = T; j < Tp; j++) dst[e * Tp + j] = 0.f;
  }
}

static void att_fwd_chunk(void *arg, long begin, long end, int tid) {
  (void)tid;
  att_ctx *c = arg;
  const long T = c->T, d = c->d, A = c->heads * d, Tp = pad16(T), dp = pad16(d);
  float *kt = malloc(sizeof(float) * (size_t)(d * Tp + T * dp + Tp + Tp + dp));
  float *vp = kt + d * Tp, *row = vp + T * dp, *pd = row + Tp, *out = pd + Tp;
  for (long task = begin; task < end; task++) {
    const long off = head_offset(c, task);
    const float *q = c->q + off;
    const float *mask = c->mask ? c->mask + (task / c->heads) * T : NULL;
    const float *mult = c->mult ? c->mult + task * T * T : NULL;
    float *probs = c->probs_out + task * T * T, *ctx = c->ctx + off;
    head_pack_t(c->k + off, A, T, d, kt, Tp);
    head_pack(c->v + off, A, T, d, vp, dp);
    for (long j = T; j < Tp; j++) pd[j] = 0.f;
    for (long i = 0; i < T; i++) {
      row_times(row, q + i * A, 1, d, kt, Tp, Tp);
      float *p = probs + i * T;
      if (mask)
        for (long j = 0; j < T; j++) p[j] = row[j] * c->scale + mask[j];
      else
        for (long j = 0; j < T; j++) p[j] = row[j] * c->scale;
      const float mx = row_max(p, T);
      for (long j = 0; j < T; j++) p[j] = exp_f(p[j] - mx);
      const float inv = 1.0f / row_sum(p, T);
      for (long j = 0; j < T; j++) p[j] *= inv;
      if (mult)
        for (long j = 0; j < T; j++) pd[j] = p[j] * mult[i * T + j];
      else
        memcpy(pd, p, sizeof(float) * (size_t)T);
      row_times(out, pd, 1, T, vp, dp, dp);
      memcpy(ctx + i * A, out, sizeof(float) * (size_t)d);
    }
  }
  free(kt);
}

// With P the probabilities and Pd = P * mult: dV = Pd^T dctx; dP = (dctx V^T) * mult;
// dS = scale P (dP - rowsum(dP P)); dQ = dS K; dK = dS^T Q.
static void att_bwd_chunk(void *arg, long begin, long end, int tid) {
  (void)tid;
  att_ctx *c = arg;
  const long T = c->T, d = c->d, A = c->heads * d, Tp = pad16(T), dp = pad16(d);
  float *vt = malloc(sizeof(float) * (size_t)(d * Tp + 3 * T * dp + 2 * T * Tp + dp));
  float *gp = vt + d * Tp, *kp = gp + T * dp, *qp = kp + T * dp, *pdm = qp + T * dp, *dsm = pdm + T * Tp, *out = dsm + T * Tp;
  for (long task = begin; task < end; task++) {
    const long off = head_offset(c, task);
    const float *probs = c->probs + task * T * T, *mult = c->mult ? c->mult + task * T * T : NULL;
    head_pack_t(c->v + off, A, T, d, vt, Tp);
    head_pack(c->dctx + off, A, T, d, gp, dp);
    head_pack(c->k + off, A, T, d, kp, dp);
    head_pack(c->q + off, A, T, d, qp, dp);
    for (long i = 0; i < T; i++) {
      const float *p = probs + i * T, *m = mult ? mult + i * T : NULL;
      float *pd = pdm + i * Tp, *ds = dsm + i * Tp;
      for (long j = 0; j < T; j++) pd[j] = m ? p[j] * m[j] : p[j];
      for (long j = T; j < Tp; j++) pd[j] = ds[j] = 0.f;
      row_times(ds, gp + i * dp, 1, d, vt, Tp, Tp); // dPd row (dctx V^T)
      if (m)
        for (long j = 0; j < T; j++) ds[j] *= m[j];
      const float dot = row_dot(ds, p, T);
      for (long j = 0; j < T; j++) ds[j] = c->scale * (p[j] * (ds[j] - dot));
    }
    for (long i = 0; i < T; i++) { // dQ rows
      row_times(out, dsm + i * Tp, 1, T, kp, dp, dp);
      memcpy(c->dq + off + i * A, out, sizeof(float) * (size_t)d);
    }
    for (long j = 0; j < T; j++) { // dK and dV rows: columns of dS and Pd
      row_times(out, dsm + j, Tp, T, qp, dp, dp);
      memcpy(c->dk + off + j * A, out, sizeof(float) * (size_t)d);
      row_times(out, pdm + j, Tp, T, gp, dp, dp);
      memcpy(c->dv + off + j * A, out, sizeof(float) * (size_t)d);
    }
  }
  free(vt);
}

// ---- Node-API glue -------------------------------------------------------------------------------

#define CHECK(call)                                                   \
  if ((call) != napi_ok) {                                            \
    napi_throw_error(env, NULL, "topiary-native: N-API call failed"); \
    return NULL;                                                      \
  }

static int f32(napi_env env, napi_value v, float **data, size_t *length, const char *fn, int index) {
  bool is_ta = false;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  if (napi_is_typedarray(env, v, &is_ta) == napi_ok && is_ta &&
      napi_get_typedarray_info(env, v, &type, length, (void **)data, &ab, &offset) == napi_ok && type == napi_float32_array)
    return 1;
  char msg[96];
  snprintf(msg, sizeof msg, "%s: argument %d must be a Float32Array", fn, index);
  napi_throw_type_error(env, NULL, msg);
  return 0;
}

static int args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, const char *usage) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want) {
    napi_throw_type_error(env, NULL, usage);
    return 0;
  }
  return 1;
}

static int num(napi_env env, napi_value v, double *out) {
  if (napi_get_value_double(env, v, out) == napi_ok) return 1;
  napi_throw_type_error(env, NULL, "topiary-native: expected a number");
  return 0;
}

static napi_value range_error(napi_env env, const char *msg) {
  napi_throw_range_error(env, NULL, msg);
  return NULL;
}

// gelu(x, y) / geluGrad(x, dy, dx)
static napi_value js_gelu(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!args(env, info, 2, argv, "gelu(x, y): expected 2 arguments")) return NULL;
  float *x, *y;
  size_t nx, ny;
  if (!f32(env, argv[0], &x, &nx, "gelu", 0) || !f32(env, argv[1], &y, &ny, "gelu", 1)) return NULL;
  if (ny < nx) return range_error(env, "gelu: y is shorter than x");
  gelu_ctx c = {x, NULL, y};
  parallel((long)nx, ELEMS_PER_THREAD / 4, gelu_fwd_chunk, &c);
  return NULL;
}

static napi_value js_gelu_grad(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!args(env, info, 3, argv, "geluGrad(x, dy, dx): expected 3 arguments")) return NULL;
  float *x, *dy, *dx;
  size_t nx, ndy, ndx;
  if (!f32(env, argv[0], &x, &nx, "geluGrad", 0) || !f32(env, argv[1], &dy, &ndy, "geluGrad", 1) || !f32(env, argv[2], &dx, &ndx, "geluGrad", 2)) return NULL;
  if (ndy < nx || ndx < nx) return range_error(env, "geluGrad: dy and dx must be as long as x");
  gelu_ctx c = {x, dy, dx};
  parallel((long)nx, ELEMS_PER_THREAD / 4, gelu_bwd_chunk, &c);
  return NULL;
}

// Reads argument i as an optional Float32Array (null or undefined: absent).
static int opt_f32(napi_env env, napi_value v, float **data, size_t *length, const char *fn, int index) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t == napi_null || t == napi_undefined) {
    *data = NULL;
    *length = 0;
    return 1;
  }
  return f32(env, v, data, length, fn, index);
}

// Reads the first `count` arguments as float32 arrays into p/n; with `optional`, a '?' at index i lets
// argument i be null (p[i] NULL, n[i] 0).
static int f32_args(napi_env env, napi_value *argv, int count, const char *fn, const char *optional, float **p, size_t *n) {
  for (int i = 0; i < count; i++) {
    p[i] = NULL;
    n[i] = 0;
    if (!(optional && optional[i] == '?' ? opt_f32(env, argv[i], &p[i], &n[i], fn, i) : f32(env, argv[i], &p[i], &n[i], fn, i))) return 0;
  }
  return 1;
}

// layerNorm(x, res|null, gamma, beta, y, mean, rstd, rows, cols, eps): LayerNorm of x (+ res).
static napi_value js_layer_norm(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  if (!args(env, info, 10, argv, "layerNorm(x, res, gamma, beta, y, mean, rstd, rows, cols, eps): expected 10 arguments")) return NULL;
  float *p[7];
  size_t n[7];
  if (!f32_args(env, argv, 7, "layerNorm", ".?.....", p, n)) return NULL;
  double rows, cols, eps;
  if (!num(env, argv[7], &rows) || !num(env, argv[8], &cols) || !num(env, argv[9], &eps)) return NULL;
  size_t r = (size_t)rows, k = (size_t)cols;
  if (rows < 0 || cols < 1 || n[0] < r * k || (p[1] && n[1] < r * k) || n[4] < r * k || n[2] < k || n[3] < k || n[5] < r || n[6] < r)
    return range_error(env, "layerNorm: shapes do not fit the arrays");
  ln_ctx c = {.x = p[0], .res = p[1], .gamma = p[2], .beta = p[3], .y = p[4], .mean_out = p[5], .rstd_out = p[6], .cols = (long)k, .eps = (float)eps};
  parallel((long)r, ELEMS_PER_THREAD / (long)k + 1, ln_fwd_chunk, &c);
  return NULL;
}

// layerNormGrad(dy, x, res|null, gamma, mean, rstd, dx, dgamma, dbeta, rows, cols)
static napi_value js_layer_norm_grad(napi_env env, napi_callback_info info) {
  napi_value argv[11];
  if (!args(env, info, 11, argv, "layerNormGrad(dy, x, res, gamma, mean, rstd, dx, dgamma, dbeta, rows, cols): expected 11 arguments")) return NULL;
  float *p[9];
  size_t n[9];
  if (!f32_args(env, argv, 9, "layerNormGrad", "..?......", p, n)) return NULL;
  double rows, cols;
  if (!num(env, argv[9], &rows) || !num(env, argv[10], &cols)) return NULL;
  size_t r = (size_t)rows, k = (size_t)cols;
  if (rows < 0 || cols < 1 || n[0] < r * k || n[1] < r * k || (p[2] && n[2] < r * k) || n[6] < r * k || n[3] < k || n[7] < k || n[8] < k || n[4] < r || n[5] < r)
    return range_error(env, "layerNormGrad: shapes do not fit the arrays");
  float *part = calloc(2 * 16 * k, sizeof(float));
  if (!part) return range_error(env, "layerNormGrad: out of memory");
  ln_ctx c = {.dy = p[0], .x = p[1], .res = p[2], .gamma = p[3], .mean = p[4], .rstd = p[5], .y = p[6], .dgamma_part = part, .dbeta_part = part + 16 * k, .cols = (long)k};
  int threads = parallel((long)r, ELEMS_PER_THREAD / (long)k + 1, ln_bwd_chunk, &c);
  float *dgamma = p[7], *dbeta = p[8];
  for (size_t j = 0; j < k; j++) {
    float g = 0.f, b = 0.f;
    for (int t = 0; t < threads; t++) {
      g += c.dgamma_part[t * k + j];
      b += c.dbeta_part[t * k + j];
    }
    dgamma[j] = g;
    dbeta[j] = b;
  }
  free(part);
  return NULL;
}

// softmax(s, mask|null, y, rows, cols, rowsPerMask, scale) / softmaxGrad(y, dy, ds, rows, cols, scale)
static napi_value js_softmax(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!args(env, info, 7, argv, "softmax(s, mask, y, rows, cols, rowsPerMask, scale): expected 7 arguments")) return NULL;
  float *s, *mask = NULL, *y;
  size_t ns, nm = 0, ny;
  napi_valuetype t;
  CHECK(napi_typeof(env, argv[1], &t));
  if (!f32(env, argv[0], &s, &ns, "softmax", 0) || !f32(env, argv[2], &y, &ny, "softmax", 2)) return NULL;
  if (t != napi_null && t != napi_undefined && !f32(env, argv[1], &mask, &nm, "softmax", 1)) return NULL;
  double rows, cols, rpm, scale;
  if (!num(env, argv[3], &rows) || !num(env, argv[4], &cols) || !num(env, argv[5], &rpm) || !num(env, argv[6], &scale)) return NULL;
  size_t r = (size_t)rows, k = (size_t)cols, g = (size_t)rpm;
  if (rows < 0 || cols < 1 || rpm < 1 || ns < r * k || ny < r * k || (mask && nm < ((r + g - 1) / g) * k))
    return range_error(env, "softmax: shapes do not fit the arrays");
  sm_ctx c = {.s = s, .mask = mask, .out = y, .cols = (long)k, .rows_per_mask = (long)g, .scale = (float)scale};
  parallel((long)r, ELEMS_PER_THREAD / 4 / (long)k + 1, sm_fwd_chunk, &c);
  return NULL;
}

static napi_value js_softmax_grad(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (!args(env, info, 6, argv, "softmaxGrad(y, dy, ds, rows, cols, scale): expected 6 arguments")) return NULL;
  float *p[3];
  size_t n[3];
  if (!f32_args(env, argv, 3, "softmaxGrad", NULL, p, n)) return NULL;
  double rows, cols, scale;
  if (!num(env, argv[3], &rows) || !num(env, argv[4], &cols) || !num(env, argv[5], &scale)) return NULL;
  size_t r = (size_t)rows, k = (size_t)cols;
  if (rows < 0 || cols < 1 || n[0] < r * k || n[1] < r * k || n[2] < r * k) return range_error(env, "softmaxGrad: shapes do not fit the arrays");
  sm_ctx c = {.y = p[0], .dy = p[1], .out = p[2], .cols = (long)k, .scale = (float)scale};
  parallel((long)r, ELEMS_PER_THREAD / (long)k + 1, sm_bwd_chunk, &c);
  return NULL;
}

// adamw(p, g, m, v, pOut, mOut, vOut, lr, beta1, beta2, eps, bc1, bc2, decay, sign)
static napi_value js_adamw(napi_env env, napi_callback_info info) {
  napi_value argv[15];
  if (!args(env, info, 15, argv, "adamw(p, g, m, v, pOut, mOut, vOut, lr, beta1, beta2, eps, bc1, bc2, decay, sign): expected 15 arguments")) return NULL;
  float *p[7];
  size_t n[7];
  if (!f32_args(env, argv, 7, "adamw", NULL, p, n)) return NULL;
  double h[8];
  for (int i = 0; i < 8; i++)
    if (!num(env, argv[7 + i], &h[i])) return NULL;
  for (int i = 1; i < 7; i++)
    if (n[i] < n[0]) return range_error(env, "adamw: every array must be as long as p");
  adam_ctx c = {p[0], p[1], p[2], p[3], p[4], p[5], p[6], (float)h[0], (float)h[1], (float)h[2], (float)h[3], (float)h[4], (float)h[5], (float)h[6], (float)h[7]};
  parallel((long)n[0], ELEMS_PER_THREAD, adam_chunk, &c);
  return NULL;
}

// binary(op, mode, a, b, out, inner): op 0 add, 1 sub, 2 mul, 3 div; mode 0 same shape, 1 b repeats
// every `inner` (suffix broadcast, scalar when inner 1), 2 a repeats, 3 b is one value per row of
// `inner`, 4 a is one value per row.
static napi_value js_binary(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (!args(env, info, 6, argv, "binary(op, mode, a, b, out, inner): expected 6 arguments")) return NULL;
  int32_t op, mode;
  CHECK(napi_get_value_int32(env, argv[0], &op));
  CHECK(napi_get_value_int32(env, argv[1], &mode));
  float *a, *b, *out;
  size_t na, nb, nout;
  if (!f32(env, argv[2], &a, &na, "binary", 2) || !f32(env, argv[3], &b, &nb, "binary", 3) || !f32(env, argv[4], &out, &nout, "binary", 4)) return NULL;
  double inner_d;
  if (!num(env, argv[5], &inner_d)) return NULL;
  long inner = (long)inner_d, total = (long)nout;
  if (op < 0 || op > 3 || mode < 0 || mode > 4 || inner < 1) return range_error(env, "binary: bad op, mode or inner");
  int ok = 0;
  switch (mode) {
  case BC_SAME: ok = (long)na >= total && (long)nb >= total; break;
  case BC_B_SUFFIX: ok = (long)na >= total && (long)nb >= inner && total % inner == 0; break;
  case BC_A_SUFFIX: ok = (long)nb >= total && (long)na >= inner && total % inner == 0; break;
  case BC_B_PER_ROW: ok = (long)na >= total && total % inner == 0 && (long)nb >= total / inner; break;
  case BC_A_PER_ROW: ok = (long)nb >= total && total % inner == 0 && (long)na >= total / inner; break;
  }
  if (!ok) return range_error(env, "binary: shapes do not fit the arrays");
  // A scalar side is one value per row of the whole array: the inner loop then streams.
  if (inner == 1 && (mode == BC_B_SUFFIX || mode == BC_A_SUFFIX)) {
    mode = mode == BC_B_SUFFIX ? BC_B_PER_ROW : BC_A_PER_ROW;
    inner = total > 0 ? total : 1;
  }
  bin_ctx c = {a, b, out, inner, op, mode};
  parallel(total, ELEMS_PER_THREAD * 2, bin_chunk, &c);
  return NULL;
}

// colSum(x, out, rows, cols): out[j] = sum_r x[r, j]
static napi_value js_col_sum(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!args(env, info, 4, argv, "colSum(x, out, rows, cols): expected 4 arguments")) return NULL;
  float *x, *out;
  size_t nx, nout;
  if (!f32(env, argv[0], &x, &nx, "colSum", 0) || !f32(env, argv[1], &out, &nout, "colSum", 1)) return NULL;
  double rows, cols;
  if (!num(env, argv[2], &rows) || !num(env, argv[3], &cols)) return NULL;
  size_t r = (size_t)rows, k = (size_t)cols;
  if (rows < 0 || cols < 0 || nx < r * k || nout < k) return range_error(env, "colSum: shapes do not fit the arrays");
  colsum_ctx c = {x, out, (long)r, (long)k};
  // Columns split in 256-wide blocks between threads when the input is large.
  long per_thread = r * k >= 2 * ELEMS_PER_THREAD ? 256 : (long)k + 1;
  parallel((long)k, per_thread, colsum_chunk, &c);
  return NULL;
}

// dropout(x, y, mult, keep, s0, s1, s2, c): mult = floor(u + keep) / keep in float32 with u the
// float32 rounding of successive Alea doubles from state (s0, s1, s2, c); y = x * mult.
static napi_value js_dropout(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  if (!args(env, info, 8, argv, "dropout(x, y, mult, keep, s0, s1, s2, c): expected 8 arguments")) return NULL;
  float *x = NULL, *y = NULL, *mult;
  size_t nx = 0, ny = 0, nm;
  if (!opt_f32(env, argv[0], &x, &nx, "dropout", 0) || !opt_f32(env, argv[1], &y, &ny, "dropout", 1) || !f32(env, argv[2], &mult, &nm, "dropout", 2)) return NULL;
  double h[5];
  for (int i = 0; i < 5; i++)
    if (!num(env, argv[3 + i], &h[i])) return NULL;
  if (!x != !y) return range_error(env, "dropout: x and y are both given, or both null (the mask alone)");
  if (!x) nx = nm;
  if (ny < nx && x) return range_error(env, "dropout: y must be as long as x");
  if (nm < nx) return range_error(env, "dropout: mult must be as long as x");
  uint32_t state[4];
  for (int i = 0; i < 4; i++) {
    double v = i < 3 ? h[1 + i] * 4294967296.0 : h[4];
    if (!(v >= 0 && v < 4294967296.0) || v != (double)(uint32_t)v)
      return range_error(env, "dropout: s0, s1, s2 must be multiples of 2^-32 in [0, 1) and c an integer (an Alea state)");
    state[i] = (uint32_t)v;
  }
  alea_fill((uint32_t *)mult, nx, state[0], state[1], state[2], state[3]);
  dropout_ctx d = {x, y, mult, (float)h[0]};
  parallel((long)nx, ELEMS_PER_THREAD * 2, dropout_chunk, &d);
  return NULL;
}

// batch, seq, heads, headSize, scale; returns the batch in *batch.
static int att_dims(napi_env env, napi_value *argv, att_ctx *c, const char *fn, size_t *batch) {
  double h[5];
  for (int i = 0; i < 5; i++)
    if (!num(env, argv[i], &h[i])) return 0;
  if (h[0] < 0 || h[1] < 1 || h[2] < 1 || h[3] < 1) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s: batch, seq, heads and headSize must be positive", fn);
    napi_throw_range_error(env, NULL, msg);
    return 0;
  }
  *batch = (size_t)h[0];
  c->T = (long)h[1];
  c->heads = (long)h[2];
  c->d = (long)h[3];
  c->scale = (float)h[4];
  return 1;
}

// One thread per head block, at least ~128K multiply-adds per thread.
static void att_run(att_ctx *c, long batch, chunk_fn fn) {
  long per_head = c->T * c->T * c->d;
  parallel(batch * c->heads, 131072 / per_head + 1, fn, c);
}

// attention(q, k, v, mask|null, mult|null, probs, ctx, batch, seq, heads, headSize, scale)
static napi_value js_attention(napi_env env, napi_callback_info info) {
  napi_value argv[12];
  if (!args(env, info, 12, argv, "attention(q, k, v, mask, mult, probs, ctx, batch, seq, heads, headSize, scale): expected 12 arguments")) return NULL;
  float *p[7];
  size_t n[7];
  if (!f32_args(env, argv, 7, "attention", "...??..", p, n)) return NULL;
  att_ctx c = {.q = p[0], .k = p[1], .v = p[2], .mask = p[3], .mult = p[4], .probs_out = p[5], .ctx = p[6]};
  size_t B;
  if (!att_dims(env, argv + 7, &c, "attention", &B)) return NULL;
  const size_t tokens = B * (size_t)(c.T * c.heads * c.d), scores = B * (size_t)(c.heads * c.T * c.T);
  if (n[0] < tokens || n[1] < tokens || n[2] < tokens || n[6] < tokens || n[5] < scores || (c.mult && n[4] < scores) || (c.mask && n[3] < B * (size_t)c.T))
    return range_error(env, "attention: shapes do not fit the arrays (q, k, v, ctx: batch*seq*heads*headSize; probs, mult: batch*heads*seq*seq; mask: batch*seq)");
  att_run(&c, (long)B, att_fwd_chunk);
  return NULL;
}

// attentionGrad(dctx, q, k, v, probs, mult|null, dq, dk, dv, batch, seq, heads, headSize, scale)
static napi_value js_attention_grad(napi_env env, napi_callback_info info) {
  napi_value argv[14];
  if (!args(env, info, 14, argv, "attentionGrad(dctx, q, k, v, probs, mult, dq, dk, dv, batch, seq, heads, headSize, scale): expected 14 arguments")) return NULL;
  float *p[9];
  size_t n[9];
  if (!f32_args(env, argv, 9, "attentionGrad", ".....?...", p, n)) return NULL;
  att_ctx c = {.dctx = p[0], .q = p[1], .k = p[2], .v = p[3], .probs = p[4], .mult = p[5], .dq = p[6], .dk = p[7], .dv = p[8]};
  size_t B;
  if (!att_dims(env, argv + 9, &c, "attentionGrad", &B)) return NULL;
  const size_t tokens = B * (size_t)(c.T * c.heads * c.d), scores = B * (size_t)(c.heads * c.T * c.T);
  for (int i = 0; i < 9; i++)
    if ((i == 4 || i == 5) ? (p[i] && n[i] < scores) : n[i] < tokens)
      return range_error(env, "attentionGrad: shapes do not fit the arrays (dctx, q, k, v, dq, dk, dv: batch*seq*heads*headSize; probs, mult: batch*heads*seq*seq)");
  att_run(&c, (long)B, att_bwd_chunk);
  return NULL;
}

// transpose0213(x, out, a, b, c, d): out[a, c, b, :] = x[a, b, c, :]
static napi_value js_transpose0213(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (!args(env, info, 6, argv, "transpose0213(x, out, a, b, c, d): expected 6 arguments")) return NULL;
  float *x, *out;
  size_t nx, nout;
  if (!f32(env, argv[0], &x, &nx, "transpose0213", 0) || !f32(env, argv[1], &out, &nout, "transpose0213", 1)) return NULL;
  double h[4];
  for (int i = 0; i < 4; i++)
    if (!num(env, argv[2 + i], &h[i])) return NULL;
  size_t total = (size_t)h[0] * (size_t)h[1] * (size_t)h[2] * (size_t)h[3];
  if (h[0] < 0 || h[1] < 1 || h[2] < 1 || h[3] < 1 || nx < total || nout < total) return range_error(env, "transpose0213: shapes do not fit the arrays");
  perm_ctx c = {x, out, (long)h[1], (long)h[2], (long)h[3]};
  parallel((long)(h[0] * h[1] * h[2]), ELEMS_PER_THREAD * 2 / (long)h[3] + 1, perm_chunk, &c);
  return NULL;
}

// sumSquares(x): sum of x^2 in double.
static napi_value js_sum_squares(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!args(env, info, 1, argv, "sumSquares(x): expected 1 argument")) return NULL;
  float *x;
  size_t nx;
  if (!f32(env, argv[0], &x, &nx, "sumSquares", 0)) return NULL;
  sumsq_ctx c = {.x = x};
  int threads = parallel((long)nx, ELEMS_PER_THREAD * 2, sumsq_chunk, &c);
  double s = 0;
  for (int t = 0; t < threads; t++) s += c.part[t];
  napi_value out;
  CHECK(napi_create_double(env, s, &out));
  return out;
}

napi_value topiary_register_fused(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"gelu", NULL, js_gelu, NULL, NULL, NULL, napi_default, NULL},
      {"geluGrad", NULL, js_gelu_grad, NULL, NULL, NULL, napi_default, NULL},
      {"layerNorm", NULL, js_layer_norm, NULL, NULL, NULL, napi_default, NULL},
      {"layerNormGrad", NULL, js_layer_norm_grad, NULL, NULL, NULL, napi_default, NULL},
      {"softmax", NULL, js_softmax, NULL, NULL, NULL, napi_default, NULL},
      {"softmaxGrad", NULL, js_softmax_grad, NULL, NULL, NULL, napi_default, NULL},
      {"adamw", NULL, js_adamw, NULL, NULL, NULL, napi_default, NULL},
      {"binary", NULL, js_binary, NULL, NULL, NULL, napi_default, NULL},
      {"colSum", NULL, js_col_sum, NULL, NULL, NULL, napi_default, NULL},
      {"sumSquares", NULL, js_sum_squares, NULL, NULL, NULL, napi_default, NULL},
      {"transpose0213", NULL, js_transpose0213, NULL, NULL, NULL, napi_default, NULL},
      {"dropout", NULL, js_dropout, NULL, NULL, NULL, napi_default, NULL},
      {"attention", NULL, js_attention, NULL, NULL, NULL, napi_default, NULL},
      {"attentionGrad", NULL, js_attention_grad, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
