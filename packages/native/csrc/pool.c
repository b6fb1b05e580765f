// Persistent worker pool (see pool.h). Workers wait for a job generation number: they spin briefly
// after each job, because kernels arrive back to back (tens of microseconds apart inside a training
// step), then sleep on a futex so an idle process costs nothing. Off Linux, threads start per call.
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#if defined(__linux__)
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define MAX_THREADS 16
// ~100 us of pause instructions before a worker sleeps; the caller spins longer for its workers,
// which finish within microseconds of it on balanced splits.
#define WORKER_SPINS 4000
#define CALLER_SPINS 200000

static void *scratch_of[MAX_THREADS];

static void *alloc_scratch(void) {
  void *buf = aligned_alloc(64, TOPIARY_SCRATCH_BYTES);
  if (!buf) {
    fprintf(stderr, "@topiary/native: out of memory for a %zu-byte kernel buffer\n", TOPIARY_SCRATCH_BYTES);
    abort();
  }
  return buf;
}

static void *scratch(int tid) {
  if (!scratch_of[tid]) scratch_of[tid] = alloc_scratch();
  return scratch_of[tid];
}

// Runs every tid on the calling thread with buffers of its own (the pool is busy).
static void run_serial(int threads, topiary_task fn, void *ctx) {
  void *buf = alloc_scratch();
  unsigned csr = topiary_fast_fp_begin();
  for (int t = 0; t < threads; t++) fn(ctx, t, threads, buf);
  topiary_fast_fp_end(csr);
  free(buf);
}

static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;

// One thread: the caller, with the persistent buffer of tid 0. Returns 0 when the pool is busy.
static int run_alone(topiary_task fn, void *ctx) {
  if (pthread_mutex_trylock(&busy) != 0) return 0;
  unsigned csr = topiary_fast_fp_begin();
  fn(ctx, 0, 1, scratch(0));
  topiary_fast_fp_end(csr);
  pthread_mutex_unlock(&busy);
  return 1;
}

// Clamps the thread count; runs the call on the caller when one thread is asked for or the pool is
// busy and returns 1, else returns 0 with the pool locked for the caller.
static int run_without_pool(int *threads, topiary_task fn, void *ctx) {
  *threads = *threads < 1 ? 1 : *threads > MAX_THREADS ? MAX_THREADS : *threads;
  if (*threads == 1 && run_alone(fn, ctx)) return 1;
  if (*threads == 1 || pthread_mutex_trylock(&busy) != 0) {
    run_serial(*threads, fn, ctx);
    return 1;
  }
  return 0;
}

#if defined(__linux__)

static atomic_int generation, pending, sleepers, caller_waiting;
static topiary_task job_fn;
static void *job_ctx;
static int job_threads;
static int workers;                   // started so far; worker w runs tid w + 1
static int start_generation[MAX_THREADS]; // the generation when a worker was started (it waits for the next)

static void futex_wait(atomic_int *addr, int expected) { syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0); }
static void futex_wake(atomic_int *addr, int count) { syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0); }

static void *worker(void *arg) {
  int tid = (int)(long)arg;
  void *buf = scratch(tid);
  topiary_fast_fp_begin(); // a pool thread runs only kernels: flush denormals for good
  int seen = start_generation[tid];
  for (;;) {
    int g, spins = 0;
    while ((g = atomic_load_explicit(&generation, memory_order_acquire)) == seen) {
      if (++spins < WORKER_SPINS) {
        cpu_relax();
        continue;
      }
      // Registered as a sleeper before the last check: the caller bumps the generation and then
      // reads `sleepers`, so either it wakes us or futex_wait sees the new generation and returns.
      atomic_fetch_add(&sleepers, 1);
      futex_wait(&generation, seen);
      atomic_fetch_sub(&sleepers, 1);
      spins = 0;
    }
    seen = g;
    if (tid < job_threads) job_fn(job_ctx, tid, job_threads, buf);
    if (atomic_fetch_sub_explicit(&pending, 1, memory_order_acq_rel) == 1 && atomic_load(&caller_waiting)) futex_wake(&pending, 1);
  }
  return NULL;
}

void topiary_pool_run(int threads, topiary_task fn, void *ctx) {
  if (run_without_pool(&threads, fn, ctx)) return;
  while (workers < threads - 1) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    start_generation[workers + 1] = atomic_load(&generation);
    int ok = pthread_create(&t, &attr, worker, (void *)(long)(workers + 1)) == 0;
    pthread_attr_destroy(&attr);
    if (!ok) break;
    workers++;
  }
  job_fn = fn;
  job_ctx = ctx;
  job_threads = threads;
  atomic_store(&pending, workers);
  atomic_fetch_add_explicit(&generation, 1, memory_order_release);
  if (atomic_load(&sleepers) > 0) futex_wake(&generation, INT_MAX);
  unsigned csr = topiary_fast_fp_begin();
  fn(ctx, 0, threads, scratch(0));
  for (int t = workers + 1; t < threads; t++) fn(ctx, t, threads, scratch(0)); // workers that could not start
  topiary_fast_fp_end(csr);
  for (int spins = 0; atomic_load_explicit(&pending, memory_order_acquire) > 0 && spins < CALLER_SPINS; spins++) cpu_relax();
  int left;
  if ((left = atomic_load(&pending)) > 0) {
    atomic_store(&caller_waiting, 1);
    while ((left = atomic_load(&pending)) > 0) futex_wait(&pending, left);
    atomic_store(&caller_waiting, 0);
  }
  atomic_thread_fence(memory_order_acquire);
  pthread_mutex_unlock(&busy);
}

#else // not Linux: a thread per call, each with the scratch buffer of its tid

typedef struct {
  topiary_task fn;
  void *ctx;
  int tid, threads;
} call;

static void *run_call(void *arg) {
  call *c = arg;
  unsigned csr = topiary_fast_fp_begin();
  c->fn(c->ctx, c->tid, c->threads, scratch(c->tid));
  topiary_fast_fp_end(csr);
  return NULL;
}

void topiary_pool_run(int threads, topiary_task fn, void *ctx) {
  if (run_without_pool(&threads, fn, ctx)) return;
  call c[MAX_THREADS];
  pthread_t tid[MAX_THREADS];
  int started = 1;
  for (int t = 0; t < threads; t++) c[t] = (call){fn, ctx, t, threads};
  for (int t = 1; t < threads; t++, started++)
    if (pthread_create(&tid[t], NULL, run_call, &c[t]) != 0) break;
  run_call(&c[0]);
  for (int t = started; t < threads; t++) run_call(&c[t]); // threads that could not start
  for (int t = 1; t < started; t++) pthread_join(tid[t], NULL);
  pthread_mutex_unlock(&busy);
}
#endif
