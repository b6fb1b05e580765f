// Topiary native GEMM: C = op(A) x op(B) (+ bias row) for row-major float32 matrices, batched, multi-threaded,
// written for the memory tfjs's wasm backend already holds (the caller passes Float32Array views of
// the wasm heap, so nothing is copied). Goto-style blocking: B is packed in KC x NR panels, A in
// MR x KC panels (transposes are absorbed by the packing), and a register-blocked MR x NR micro-kernel
// written with GCC vector extensions (AVX-512 with -march=native on this machine, AVX2 elsewhere).
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool.h"
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

// Flush-to-zero and denormals-are-zero for the duration of a kernel. Softmax and GELU produce values
// below FLT_MIN (about 1e-38) once activations spread out, and x86 handles every product with such a
// value through a microcode assist, ~100x slower: a movement-pruning step went from 1.4 s to 20 s.
// The caller's mode is restored, so JavaScript on the calling thread keeps IEEE semantics.
unsigned topiary_fast_fp_begin(void) {
#if defined(__SSE__)
  unsigned old = _mm_getcsr();
  _mm_setcsr(old | 0x8040);
  return old;
#else
  return 0;
#endif
}
void topiary_fast_fp_end(unsigned old) {
#if defined(__SSE__)
  _mm_setcsr(old);
#else
  (void)old;
#endif
}

#define MR 8
#define NR 32
#define KC 256
#define MC 128
#define NC 1024

_Static_assert(TOPIARY_SCRATCH_BYTES >= sizeof(float) * (MC * KC + KC * NC), "pool scratch holds both packing buffers");

typedef float v16 __attribute__((vector_size(64)));

typedef struct {
  const float *a, *b;
  float *c;
  int m, n, k;          // op(A) is m x k, op(B) is k x n
  int trans_a, trans_b; // A stored k x m when trans_a; B stored n x k when trans_b
  const float *bias;    // optional, n values added to every row of C (a linear layer's bias)
} gemm_args;


// Packs rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) into MR-row panels, zero-padded. The layout
// test is hoisted out of the loops: stored row-major, each panel is an MR x kc transpose of MR row
// streams; stored transposed (k x m), each packed row is a contiguous run of A.
static void pack_a(const gemm_args *g, int i0, int mc, int p0, int kc, float *dst) {
  for (int ip = 0; ip < mc; ip += MR) {
    int mr = mc - ip < MR ? mc - ip : MR;
    if (g->trans_a) {
      const float *src = g->a + (size_t)p0 * g->m + i0 + ip;
      for (int p = 0; p < kc; p++, src += g->m, dst += MR) {
        for (int i = 0; i < mr; i++) dst[i] = src[i];
        for (int i = mr; i < MR; i++) dst[i] = 0.f;
      }
    } else if (mr == MR) {
      const float *rows = g->a + (size_t)(i0 + ip) * g->k + p0;
      const size_t ld = (size_t)g->k;
      for (int p = 0; p < kc; p++, dst += MR)
        for (int i = 0; i < MR; i++) dst[i] = rows[i * ld + p];
    } else {
      const float *rows = g->a + (size_t)(i0 + ip) * g->k + p0;
      const size_t ld = (size_t)g->k;
      for (int p = 0; p < kc; p++, dst += MR) {
        for (int i = 0; i < mr; i++) dst[i] = rows[i * ld + p];
        for (int i = mr; i < MR; i++) dst[i] = 0.f;
      }
    }
  }
}

// Packs rows [p0, p0+kc) x cols [j0, j0+nc) of op(B) into NR-column panels, zero-padded. Stored
// k x n, a packed row is a contiguous run of B; stored transposed (n x k), column j of op(B) is row j
// of B, read as a stream and scattered with stride NR.
static void pack_b(const gemm_args *g, int p0, int kc, int j0, int nc, float *dst) {
  for (int jp = 0; jp < nc; jp += NR) {
    int nr = nc - jp < NR ? nc - jp : NR;
    if (!g->trans_b) {
      const float *src = g->b + (size_t)p0 * g->n + j0 + jp;
      for (int p = 0; p < kc; p++, src += g->n, dst += NR) {
        if (nr == NR) {
          memcpy(dst, src, NR * sizeof(float));
        } else {
          for (int j = 0; j < nr; j++) dst[j] = src[j];
          for (int j = nr; j < NR; j++) dst[j] = 0.f;
        }
      }
    } else {
      for (int j = 0; j < nr; j++) {
        const float *col = g->b + (size_t)(j0 + jp + j) * g->k + p0;
        for (int p = 0; p < kc; p++) dst[(size_t)p * NR + j] = col[p];
      }
      for (int j = nr; j < NR; j++)
        for (int p = 0; p < kc; p++) dst[(size_t)p * NR + j] = 0.f;
      dst += (size_t)kc * NR;
    }
  }
}

// C tile (+)= A panel x B panel; on the first k block (not accumulate) C = product + bias (when given).
static void micro(int kc, const float *restrict a, const float *restrict b, float *c, int ldc, int mr, int nr, int accumulate, const float *bias) {
  v16 acc[MR][2];
  memset(acc, 0, sizeof acc);
  for (int p = 0; p < kc; p++) {
    v16 b0 = *(const v16 *)(b + p * NR);
    v16 b1 = *(const v16 *)(b + p * NR + 16);
    const float *ap = a + p * MR;
    for (int i = 0; i < MR; i++) {
      acc[i][0] += b0 * ap[i];
      acc[i][1] += b1 * ap[i];
    }
  }
  if (!accumulate && bias) {
    float tile_bias[NR] __attribute__((aligned(64)));
    for (int j = 0; j < NR; j++) tile_bias[j] = j < nr ? bias[j] : 0.f;
    v16 b0, b1;
    memcpy(&b0, tile_bias, 64);
    memcpy(&b1, tile_bias + 16, 64);
    for (int i = 0; i < MR; i++) {
      acc[i][0] += b0;
      acc[i][1] += b1;
    }
  }
  if (mr == MR && nr == NR) {
    for (int i = 0; i < MR; i++) {
      float *row = c + (size_t)i * ldc;
      v16 c0, c1;
      if (accumulate) {
        memcpy(&c0, row, 64);
        memcpy(&c1, row + 16, 64);
        c0 += acc[i][0];
        c1 += acc[i][1];
      } else {
        c0 = acc[i][0];
        c1 = acc[i][1];
      }
      memcpy(row, &c0, 64);
      memcpy(row + 16, &c1, 64);
    }
  } else {
    float tile[MR][NR] __attribute__((aligned(64)));
    memcpy(tile, acc, sizeof tile);
    for (int i = 0; i < mr; i++)
      for (int j = 0; j < nr; j++) c[(size_t)i * ldc + j] = accumulate ? c[(size_t)i * ldc + j] + tile[i][j] : tile[i][j];
  }
}

// C[i_begin:i_end, j_begin:j_end] of one matrix product.
static void gemm_block(const gemm_args *g, int i_begin, int i_end, int j_begin, int j_end, float *pa, float *pb) {
  for (int j0 = j_begin; j0 < j_end; j0 += NC) {
    int nc = j_end - j0 < NC ? j_end - j0 : NC;
    for (int p0 = 0; p0 < g->k; p0 += KC) {
      int kc = g->k - p0 < KC ? g->k - p0 : KC;
      pack_b(g, p0, kc, j0, nc, pb);
      for (int i0 = i_begin; i0 < i_end; i0 += MC) {
        int mc = i_end - i0 < MC ? i_end - i0 : MC;
        pack_a(g, i0, mc, p0, kc, pa);
        for (int jp = 0; jp < nc; jp += NR) {
          for (int ip = 0; ip < mc; ip += MR) {
            micro(kc, pa + (size_t)ip * kc, pb + (size_t)jp * kc, g->c + (size_t)(i0 + ip) * g->n + j0 + jp, g->n,
                  mc - ip < MR ? mc - ip : MR, nc - jp < NR ? nc - jp : NR, p0 > 0, g->bias ? g->bias + j0 + jp : NULL);
          }
        }
      }
    }
  }
  if (g->k == 0)
    for (int i = i_begin; i < i_end; i++)
      for (int j = j_begin; j < j_end; j++) g->c[(size_t)i * g->n + j] = g->bias ? g->bias[j] : 0.f;
}

typedef struct {
  const float *a, *b;
  float *c;
  int batch, stride_a, stride_b; // stride 0 broadcasts a single matrix over the batch
  int m, n, k, trans_a, trans_b;
  const float *bias;  // optional, n values
  int b_begin, b_end; // batch range of this worker
  int i_begin, i_end; // row range of this worker
  int j_begin, j_end; // column range of this worker
} work;

// A pool task: worker tid computes its part w[tid], packing into the pool's per-thread scratch.
static void run_work(void *ctx, int tid, int threads, void *scratch) {
  (void)threads;
  const work *w = (const work *)ctx + tid;
  float *pa = scratch;
  float *pb = pa + MC * KC;
  for (int i = w->b_begin; i < w->b_end; i++) {
    gemm_args g = {w->a + (size_t)i * w->stride_a, w->b + (size_t)i * w->stride_b, w->c + (size_t)i * w->m * w->n, w->m, w->n, w->k, w->trans_a, w->trans_b, w->bias};
    gemm_block(&g, w->i_begin, w->i_end, w->j_begin, w->j_end, pa, pb);
  }
}

static int max_threads = 0;
int topiary_threads(void) { return max_threads; }
napi_value topiary_register_fused(napi_env env, napi_value exports); // fused.c

static void gemm(work base) {
  int threads = max_threads;
  double flops = 2.0 * base.batch * base.m * base.n * base.k;
  if (flops < 1e6) threads = 1; // waking a worker costs more than it saves on tiny products
  work w[16];
  if (threads > 16) threads = 16;
  int split_batch = base.batch >= threads;
  // Without enough matrices, split the larger of op(A) and op(B): each worker packs the whole of the
  // other operand, so splitting rows when m > n (activations x weights) packs the big one once.
  int split_rows = !split_batch && base.m > base.n;
  for (int t = 0; t < threads; t++) {
    w[t] = base;
    w[t].b_begin = 0;
    w[t].b_end = base.batch;
    w[t].i_begin = 0;
    w[t].i_end = base.m;
    w[t].j_begin = 0;
    w[t].j_end = base.n;
    if (split_batch) {
      w[t].b_begin = (int)((long)base.batch * t / threads);
      w[t].b_end = (int)((long)base.batch * (t + 1) / threads);
    } else if (split_rows) {
      int panels = (base.m + MR - 1) / MR;
      w[t].i_begin = (int)((long)panels * t / threads) * MR;
      w[t].i_end = (int)((long)panels * (t + 1) / threads) * MR;
      if (w[t].i_end > base.m) w[t].i_end = base.m;
    } else {
      int panels = (base.n + NR - 1) / NR;
      w[t].j_begin = (int)((long)panels * t / threads) * NR;
      w[t].j_end = (int)((long)panels * (t + 1) / threads) * NR;
      if (w[t].j_end > base.n) w[t].j_end = base.n;
    }
  }
  topiary_pool_run(threads, run_work, w);
}

#define CHECK(call)                                                   \
  if ((call) != napi_ok) {                                            \
    napi_throw_error(env, NULL, "topiary-native: N-API call failed"); \
    return NULL;                                                      \
  }

static int f32_view(napi_env env, napi_value v, float **data, size_t *length) {
  bool is_ta;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return 0;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, length, (void **)data, &ab, &offset) != napi_ok) return 0;
  return type == napi_float32_array;
}

// gemm(a, b, c, batch, batchA, batchB, m, n, k, transA, transB[, bias])
static napi_value js_gemm(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 11 && argc != 12) {
    napi_throw_type_error(env, NULL, "gemm(a, b, c, batch, batchA, batchB, m, n, k, transA, transB[, bias]): expected 11 or 12 arguments");
    return NULL;
  }
  float *a, *b, *c;
  size_t la, lb, lc;
  const char *names[3] = {"a", "b", "c"};
  float **ptrs[3] = {&a, &b, &c};
  size_t *lens[3] = {&la, &lb, &lc};
  for (int i = 0; i < 3; i++) {
    if (!f32_view(env, argv[i], ptrs[i], lens[i])) {
      char msg[96];
      snprintf(msg, sizeof msg, "gemm: argument '%s' must be a Float32Array", names[i]);
      napi_throw_type_error(env, NULL, msg);
      return NULL;
    }
  }
  int32_t d[6];
  for (int i = 0; i < 6; i++) CHECK(napi_get_value_int32(env, argv[3 + i], &d[i]));
  bool ta, tb;
  CHECK(napi_get_value_bool(env, argv[9], &ta));
  CHECK(napi_get_value_bool(env, argv[10], &tb));
  int batch = d[0], batch_a = d[1], batch_b = d[2], m = d[3], n = d[4], k = d[5];
  if (batch < 0 || m < 0 || n < 0 || k < 0 || (batch_a != 1 && batch_a != batch) || (batch_b != 1 && batch_b != batch) ||
      la < (size_t)batch_a * m * k || lb < (size_t)batch_b * k * n || lc < (size_t)batch * m * n) {
    napi_throw_range_error(env, NULL, "gemm: shapes do not fit the arrays (need a >= batchA*m*k, b >= batchB*k*n, c >= batch*m*n)");
    return NULL;
  }
  float *bias = NULL;
  if (argc == 12) {
    napi_valuetype t;
    CHECK(napi_typeof(env, argv[11], &t));
    if (t != napi_null && t != napi_undefined) {
      size_t lbias;
      if (!f32_view(env, argv[11], &bias, &lbias)) {
        napi_throw_type_error(env, NULL, "gemm: argument 'bias' must be a Float32Array");
        return NULL;
      }
      if (lbias < (size_t)n) {
        napi_throw_range_error(env, NULL, "gemm: bias is shorter than n");
        return NULL;
      }
    }
  }
  work w = {a, b, c, batch, batch_a == 1 ? 0 : m * k, batch_b == 1 ? 0 : k * n, m, n, k, ta, tb, bias, 0, batch, 0, m, 0, n};
  gemm(w);
  return NULL;
}

static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t t;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_int32(env, argv[0], &t));
  max_threads = t < 1 ? 1 : t > 16 ? 16 : t;
  napi_value out;
  CHECK(napi_create_int32(env, max_threads, &out));
  return out;
}

static napi_value js_get_threads(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  CHECK(napi_create_int32(env, max_threads, &out));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  max_threads = cpus < 1 ? 1 : cpus > 16 ? 16 : (int)cpus;
  napi_property_descriptor props[] = {
      {"gemm", NULL, js_gemm, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, js_set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"threads", NULL, NULL, js_get_threads, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, 3, props);
  return topiary_register_fused(env, exports);
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
