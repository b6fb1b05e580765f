// A persistent worker pool for the native kernels. Starting and joining a thread costs ~43 us here
// and a GEMM worker used to allocate its 1.2 MB packing buffers on every call; a training step makes
// ~250 parallel calls, and a pruned model's small products gained nothing from a second thread.
#ifndef TOPIARY_POOL_H
#define TOPIARY_POOL_H
#include <stddef.h>

// Runs fn(ctx, tid, threads, scratch) for tid in [0, threads), tid 0 on the calling thread.
// `scratch` is a per-thread buffer of at least TOPIARY_SCRATCH_BYTES (64-byte aligned) that stays
// allocated between calls. When another thread is using the pool (Node worker threads share the
// addon), the caller runs every tid itself with a scratch buffer of its own.
typedef void (*topiary_task)(void *ctx, int tid, int threads, void *scratch);
void topiary_pool_run(int threads, topiary_task fn, void *ctx);

#define TOPIARY_SCRATCH_BYTES ((size_t)(128 * 256 + 256 * 1024) * sizeof(float))

int topiary_threads(void); // the thread count set by setThreads (gemm.c)
unsigned topiary_fast_fp_begin(void);
void topiary_fast_fp_end(unsigned old);
#endif
