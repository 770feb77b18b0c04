/* Fused CPU kernels for DeepFM's embedding side, called by MindSpore as "aot" Custom ops.
 *
 * Why: at batch 16000 the embedding side of a step is a dozen memory-bound passes over
 * (batch, 39, 80) floats (gather, scale, squares, sums, their gradients, a scatter into the
 * table gradient), each 50-80 ms on a 2-core CPU. These kernels make it one pass forward
 * and two backward. The maths is the network's (deepfm_lib.models.blocks.FieldEmbedding.from_rows and LinearTerm.from_rows); only
 * the order of some float sums differs. The interface is MindSpore's aot one: inputs then
 * outputs in params, with their shapes; a non-zero return makes MindSpore raise.
 *
 * Threads are plain pthreads started per call (tens of microseconds against kernels of tens
 * of milliseconds): OpenMP teams spin after a region and took cores from MindSpore's own
 * kernels. Every sum is done in a fixed order, so results do not depend on the threads.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_K 1024    /* embedding width bound for the per-sample scratch */
#define MAX_THREADS 64

typedef void (*work_fn)(void *ctx, int t, int nt);

typedef struct {
  work_fn fn;
  void *ctx;
  int t, nt;
} job_t;

static void *job_main(void *arg) {
  job_t *job = (job_t *)arg;
  job->fn(job->ctx, job->t, job->nt);
  return NULL;
}

static int thread_count(void) {
  const char *env = getenv("DEEPFM_KERNEL_THREADS");
  int n = env ? atoi(env) : 0;
  if (n <= 0) {
    cpu_set_t set;
    n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  }
  return n < 1 ? 1 : (n > MAX_THREADS ? MAX_THREADS : n);
}

/* fn(ctx, t, nt) for t in 0..nt-1, the last on the calling thread. */
static void parallel(work_fn fn, void *ctx) {
  const int nt = thread_count();
  pthread_t tid[MAX_THREADS];
  job_t jobs[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  for (int t = 0; t < nt; t++) jobs[t] = (job_t){fn, ctx, t, nt};
  for (int t = 0; t < nt - 1; t++) started[t] = pthread_create(&tid[t], NULL, job_main, &jobs[t]) == 0;
  for (int t = 0; t < nt - 1; t++)
    if (!started[t]) fn(ctx, t, nt); /* no thread to be had: do its share here */
  fn(ctx, nt - 1, nt);
  for (int t = 0; t < nt - 1; t++)
    if (started[t]) pthread_join(tid[t], NULL);
}

/* ---------------------------------------------------------------- forward */

typedef struct {
  const int32_t *ids;
  const float *x, *V, *w;
  float *h, *s, *lin, *sq;
  int64_t b, F, N, K;
  int bad[MAX_THREADS];
} fwd_ctx;

static void fwd_part(void *arg, int t, int nt) {
  fwd_ctx *c = (fwd_ctx *)arg;
  const int64_t F = c->F, K = c->K, N = c->N;
  const int64_t lo = c->b * t / nt, hi = c->b * (t + 1) / nt;
  for (int64_t i = lo; i < hi; i++) {
    float *restrict si = c->s + i * K;
    float *restrict hi_row = c->h + i * F * K;
    float qk[MAX_K]; /* per-k partial sums of squares: keeps the inner loop vectorisable */
    float l = 0.0f, q = 0.0f;
    for (int64_t k = 0; k < K; k++) si[k] = qk[k] = 0.0f;
    for (int64_t f = 0; f < F; f++) {
      const int64_t id = c->ids[i * F + f];
      float *restrict e = hi_row + f * K;
      if (id < 0 || id >= N) {
        c->bad[t] = 1;
        for (int64_t k = 0; k < K; k++) e[k] = 0.0f;
        continue;
      }
      const float xf = c->x[i * F + f];
      const float *restrict row = c->V + id * K;
      for (int64_t k = 0; k < K; k++) {
        const float v = row[k] * xf;
        e[k] = v;
        si[k] += v;
        qk[k] += v * v;
      }
      l += c->w[id] * xf;
    }
    for (int64_t k = 0; k < K; k++) q += qk[k];
    c->lin[i] = l;
    c->sq[i] = q;
  }
}

/* ids (b, F) int32, x (b, F), V (N, K), w (N, 1) ->
 *   h (b, F*K) = V[id] * x per field, s (b, K) = sum_f h_f, lin (b, 1) = sum_f w[id] x,
 *   sq (b, 1) = sum h^2. Returns 3 if an id is outside the tables. */
int DeepfmEmbedForward(int nparam, void **params, int *ndims, int64_t **shapes,
                       const char **dtypes, void *stream, void *extra) {
  (void)ndims; (void)dtypes; (void)stream; (void)extra;
  if (nparam != 8) return 1;
  fwd_ctx c = {(const int32_t *)params[0], (const float *)params[1], (const float *)params[2],
               (const float *)params[3], (float *)params[4], (float *)params[5],
               (float *)params[6], (float *)params[7], shapes[0][0], shapes[0][1],
               shapes[2][0], shapes[2][1], {0}};
  if (c.K > MAX_K) return 2;
  parallel(fwd_part, &c);
  for (int t = 0; t < MAX_THREADS; t++)
    if (c.bad[t]) return 3;
  return 0;
}

/* ---------------------------------------------------------------- backward */

typedef struct {
  const int32_t *ids;
  const float *x, *h, *dh, *ds, *dlin, *dsq, *V, *w;
  float l2s;
  float *gV, *gw;
  int64_t b, F, N, K;
  double sumsq[MAX_THREADS];
  int bad[MAX_THREADS];
} bwd_ctx;

/* gV = l2s V, gw = l2s w, and this part's sum of squares of both tables. */
static void bwd_init_part(void *arg, int t, int nt) {
  bwd_ctx *c = (bwd_ctx *)arg;
  const int64_t K = c->K, lo = c->N * t / nt, hi = c->N * (t + 1) / nt;
  double total = 0.0;
  for (int64_t r = lo; r < hi; r++) {
    const float *restrict v = c->V + r * K;
    float *restrict g = c->gV + r * K;
    float q = c->w[r] * c->w[r];
    for (int64_t k = 0; k < K; k++) {
      g[k] = c->l2s * v[k];
      q += v[k] * v[k];
    }
    c->gw[r] = c->l2s * c->w[r];
    total += q;
  }
  c->sumsq[t] = total;
}

/* Adds the rows' gradients x * (dh + ds + 2 dsq h) into gV (and x * dlin into gw) for the
 * ids this thread owns (id % nt == t), in batch order: no atomics, a fixed order. */
static void bwd_scatter_part(void *arg, int t, int nt) {
  bwd_ctx *c = (bwd_ctx *)arg;
  const int64_t F = c->F, K = c->K, N = c->N;
  for (int64_t i = 0; i < c->b; i++) {
    const float *restrict dsi = c->ds + i * K;
    const float two_dsq = 2.0f * c->dsq[i];
    for (int64_t f = 0; f < F; f++) {
      const int64_t id = c->ids[i * F + f];
      if (id < 0 || id >= N) {
        c->bad[t] = 1;
        continue;
      }
      if (id % nt != t) continue;
      const float xf = c->x[i * F + f];
      const float *restrict hf = c->h + (i * F + f) * K;
      const float *restrict dhf = c->dh + (i * F + f) * K;
      float *restrict g = c->gV + id * K;
      for (int64_t k = 0; k < K; k++) g[k] += xf * (dhf[k] + dsi[k] + two_dsq * hf[k]);
      c->gw[id] += xf * c->dlin[i];
    }
  }
}

/* Inputs ids, x, h, dh (b, F*K), ds (b, K), dlin (b, 1), dsq (b, 1), V, w, l2s (1,);
 * outputs gV = l2s V + scatter_add(x * (dh + ds + 2 dsq h)), gw = l2s w + scatter_add(x dlin)
 * and sumsq (1,) = sum V^2 + sum w^2 (accumulated in double). */
int DeepfmEmbedBackward(int nparam, void **params, int *ndims, int64_t **shapes,
                        const char **dtypes, void *stream, void *extra) {
  (void)ndims; (void)dtypes; (void)stream; (void)extra;
  if (nparam != 13) return 1;
  bwd_ctx c = {(const int32_t *)params[0],
               (const float *)params[1],
               (const float *)params[2],
               (const float *)params[3],
               (const float *)params[4],
               (const float *)params[5],
               (const float *)params[6],
               (const float *)params[7],
               (const float *)params[8],
               *(const float *)params[9],
               (float *)params[10],
               (float *)params[11],
               shapes[0][0],
               shapes[0][1],
               shapes[7][0],
               shapes[7][1],
               {0},
               {0}};
  parallel(bwd_init_part, &c);
  double total = 0.0;
  for (int t = 0; t < MAX_THREADS; t++) total += c.sumsq[t];
  *(float *)params[12] = (float)total;
  parallel(bwd_scatter_part, &c);
  for (int t = 0; t < MAX_THREADS; t++)
    if (c.bad[t]) return 3;
  return 0;
}

/* ------------------------------------------------------------ row gradients (lazy Adam) */

typedef struct {
  const int32_t *ids;
  const float *x, *h, *dh, *ds, *dlin, *dsq;
  float *gv, *gw;
  int64_t b, F, K;
} rows_ctx;

static void rows_part(void *arg, int t, int nt) {
  rows_ctx *c = (rows_ctx *)arg;
  const int64_t F = c->F, K = c->K;
  const int64_t lo = c->b * t / nt, hi = c->b * (t + 1) / nt;
  for (int64_t i = lo; i < hi; i++) {
    const float *restrict dsi = c->ds + i * K;
    const float two_dsq = 2.0f * c->dsq[i];
    for (int64_t f = 0; f < F; f++) {
      const int64_t p = i * F + f;
      const float xf = c->x[p];
      const float *restrict hf = c->h + p * K, *restrict dhf = c->dh + p * K;
      float *restrict g = c->gv + p * K;
      for (int64_t k = 0; k < K; k++) g[k] = xf * (dhf[k] + dsi[k] + two_dsq * hf[k]);
      c->gw[p] = xf * c->dlin[i];
    }
  }
}

/* The gradient of each gathered row, for the lazy_adam update, which sums repeated ids
 * itself: inputs ids, x, h, dh, ds, dlin, dsq as for the backward;
 * outputs gv (b*F, K) = x * (dh + ds + 2 dsq h), gw (b*F, 1) = x * dlin. */
int DeepfmEmbedRowGrads(int nparam, void **params, int *ndims, int64_t **shapes,
                        const char **dtypes, void *stream, void *extra) {
  (void)ndims; (void)dtypes; (void)stream; (void)extra;
  if (nparam != 9) return 1;
  rows_ctx c = {(const int32_t *)params[0], (const float *)params[1], (const float *)params[2],
                (const float *)params[3],   (const float *)params[4], (const float *)params[5],
                (const float *)params[6],   (float *)params[7],       (float *)params[8],
                shapes[0][0],               shapes[0][1],             shapes[4][1]};
  parallel(rows_part, &c);
  return 0;
}
