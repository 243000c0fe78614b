/* SPDX-License-Identifier: MIT */
/*
 * impl.h - declarations private to the CPU backend (kernels/cpu/): the
 * table of SIMD kernels chosen at run time from CPUID, and the thread pool.
 * Nothing outside kernels/cpu/ (and its tests and benchmarks) includes this.
 */
#ifndef MOED_KERNELS_CPU_IMPL_H
#define MOED_KERNELS_CPU_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/quant.h"

/* ---- kernels ---- */

enum be_cpu_isa {
    BE_CPU_ISA_SCALAR = 0,  /* the reference kernels of quant.c */
    BE_CPU_ISA_AVX2,        /* AVX2 + FMA + F16C */
    BE_CPU_ISA_AVX512,      /* AVX-512 F/BW/DQ/VL */
    BE_CPU_ISA_AVX512VNNI,  /* AVX-512 plus VNNI and BF16 */
    BE_CPU_ISA_COUNT
};

/*
 * Dot products of one weight row x (type t, n values) with n_y activation
 * rows (t's vec_dot_type), the j-th at y + j * y_stride bytes:
 * s[j] = dot(x, y_j), 1 <= n_y <= BE_CPU_MAX_NY. Reading x once for several
 * activation rows is what makes prefill and batches compute-efficient.
 */
#define BE_CPU_MAX_NY 4
typedef void (*be_cpu_dot_fn)(int64_t n, const void *x, const void *y, size_t y_stride, int n_y,
                              float *s);
/* Converts n floats to an activation type (Q8_0, Q8_1, Q8_K, F16, BF16). */
typedef void (*be_cpu_act_fn)(const float *x, void *y, int64_t n);

/*
 * Prefill GEMM on packed panels, for the weight types where it pays:
 * pack() unpacks and interleaves BE_CPU_GEMM_ROWS weight rows (n_rows of
 * them real, 1 <= n_rows <= BE_CPU_GEMM_ROWS, w_stride bytes apart; the rest
 * padded with zeros) of n values into a panel of bytes_per_blk bytes per
 * weight block, written at a 64-byte-aligned panel; run() then computes
 * s[j * s_stride + r] = dot(row r, y_j) for r < n_rows and the n_y
 * (1 <= n_y <= BE_CPU_GEMM_NY) activation rows y_j at y + j * y_stride.
 * Each result is bit-identical to the same table's dot[] of that row and
 * activation row, at any n_y: both follow one float order per (row, token).
 * A panel is reused for every token group, so the packing is paid once per
 * row for the whole batch.
 */
#define BE_CPU_GEMM_ROWS 16
#define BE_CPU_GEMM_NY 8
typedef void (*be_cpu_pack_fn)(const void *w, size_t w_stride, int n_rows, int64_t n, void *panel);
typedef void (*be_cpu_gemm_fn)(int64_t n, const void *panel, const void *y, size_t y_stride,
                               int n_y, float *s, size_t s_stride, int n_rows);
/* run() that also prefetches pf_len bytes at pf meanwhile (the next panel). */
typedef void (*be_cpu_gemm_pf_fn)(int64_t n, const void *panel, const void *y, size_t y_stride, int n_y,
                                  float *s, size_t s_stride, int n_rows, const void *pf, size_t pf_len);
struct be_cpu_gemm {
    be_cpu_pack_fn pack; /* NULL = no GEMM for this type: use dot */
    be_cpu_gemm_fn run;
    uint32_t bytes_per_blk; /* panel bytes per weight block of the type */
    be_cpu_gemm_pf_fn run_pf; /* stored[] only (required there): run() prefetching the next panel */
};

/*
 * Small batches on the weight rows as stored, for the types where it pays:
 * rows() computes s[j * s_stride + r] = dot(row r, y_j) for r < n_rows (rows
 * w_stride bytes apart, n values each) and the n_y >= 1 activation rows
 * y_j at y + j * y_stride (in groups of up to 8 per decoded row), each result
 * bit-identical to the same table's dot[] of that row and activation row.
 * Unlike the GEMM it needs no panel memory and no packing pass, which is
 * what a few tokens per weight row (MoE experts in a batch) want.
 */
typedef void (*be_cpu_rows_fn)(int64_t n, const void *w, size_t w_stride, int n_rows, const void *y,
                               size_t y_stride, int n_y, float *s, size_t s_stride);

struct be_cpu_kernels {
    const char *isa_name;
    be_cpu_dot_fn dot[BE_TYPE_COUNT]; /* by weight type; NULL = not available */
    be_cpu_act_fn act[BE_TYPE_COUNT]; /* by activation type */
    struct be_cpu_gemm gemm[BE_TYPE_COUNT]; /* by weight type; set only together with dot[] */
    be_cpu_rows_fn rows[BE_TYPE_COUNT];     /* by weight type, NULL = none; set only together with dot[] */
    /* Panels for a matrix kept packed (be_ops.prepack), read from memory on
     * every use: the GEMM's contract, at about the type's own size. */
    struct be_cpu_gemm stored[BE_TYPE_COUNT];
};

/* Rows [r0, r1) (r0 a multiple of BE_CPU_GEMM_ROWS) of a matrix kept as g's
 * stored panels, panel bytes apart from pk, against n_tok activation rows
 * arow bytes apart: y[t * ys + r]. The first panel is requested at once,
 * each next one during its predecessor's first token group, non-temporal
 * (the weights are read once a step). Two, three or four panels ahead
 * measured slower (Zen 5, MoE layer at 16 tokens from DRAM: 0.94-0.97 ms
 * with one, 0.97 / 1.00 / 1.05 with 2 / 3 / 4). Prepacked matrices and
 * rewritten experts both run here. (backend_cpu.c) */
void be_cpu__stored_run(const struct be_cpu_gemm *g, int64_t n_in, const uint8_t *pk, size_t panel, int64_t r0,
                        int64_t r1, const uint8_t *act, size_t arow, int64_t n_tok, float *y, size_t ys);

/* The best ISA this CPU supports (CPUID and the OS's saved register state). */
enum be_cpu_isa be_cpu__isa_detect(void);
/* The kernels of one ISA level, with any missing entry filled from the
 * level below; NULL when the CPU lacks that ISA. */
const struct be_cpu_kernels *be_cpu__kernels(enum be_cpu_isa isa);

/* ---- thread pool: kernels/cpu/pool.c ---- */

/* Runs task number `task` (0 <= task < n_tasks) of one pool_run call on the
 * thread numbered thread_id (0 = the caller, 1.. = workers; < the pool's
 * thread count, so it can index per-thread scratch memory). */
typedef void (*be_cpu_task_fn)(void *ctx, int64_t task, int thread_id);

struct be_cpu_pool;

/* The CPUs this process may use: its affinity mask, capped by the cgroup
 * CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us) rounded up; at least 1. */
int be_cpu__cpu_count(void);
/* Creates a pool of n_threads threads in all, the caller of pool_run
 * included (so n_threads - 1 workers are started); n_threads <= 0 means
 * be_cpu__cpu_count(). Returns 0, -ENOMEM, or -errno of pthread_create;
 * on failure *out is NULL. */
int be_cpu__pool_init(struct be_cpu_pool **out, int n_threads);
/* Stops and joins the workers and frees the pool; NULL does nothing. Must
 * not be called while a pool_run is in progress. */
void be_cpu__pool_free(struct be_cpu_pool *pool);
/* Threads in the pool, the caller included. */
int be_cpu__pool_threads(const struct be_cpu_pool *pool);
/* Runs fn(ctx, task, thread_id) once for every task in [0, n_tasks), split
 * among the calling thread and the workers, and returns when all are done.
 * Which thread runs which task is not fixed, so fn must make each task's
 * result independent of the thread. One caller at a time (not reentrant);
 * never allocates or locks. n_tasks < 2^31. */
void be_cpu__pool_run(struct be_cpu_pool *pool, be_cpu_task_fn fn, void *ctx, int64_t n_tasks);

/* ---- vector primitives of backend_cpu.c, AVX2+FMA+F16C: kernels/cpu/ops_avx2.c ----
 * Called only when be_cpu__isa_detect() >= BE_CPU_ISA_AVX2; each matches the
 * plain loop of the same name in backend_cpu.c up to float rounding order. */

/* Scores of a chunk of cn key rows for the n_g query heads that share them:
 * s[g * s_stride + p] = scale * dot(q + g * hd, K_p) for g < n_g, p < cn,
 * where K_p is hd values of type t (F32, F16 or Q8_0; hd a multiple of 32
 * for Q8_0) at rows[p], converted on the fly. */
void be_cpu__attn_scores_avx2(enum be_type t, const float *q, int n_g, int hd,
                              const void *const *rows, int cn, float *s, int64_t s_stride,
                              float scale);
/* acc[g * hd + i] += sum_p w[g * w_stride + p] * V_p[i] for g < n_g, i < hd,
 * the value rows V_p as above; the sum over p is taken in order of p. */
void be_cpu__attn_acc_avx2(enum be_type t, float *acc, int n_g, int hd, const float *w,
                           int64_t w_stride, const void *const *rows, int cn);
/* x[i] = exp(x[i] - mx); returns the sum of the new x. */
float be_cpu__exp_shift_avx2(float *x, float mx, int64_t n);
/* y[i] = silu(g[i]) * u[i]. */
void be_cpu__swiglu_avx2(float *y, const float *g, const float *u, int64_t n);
/* y[i] += a * x[i]. */
void be_cpu__axpy_avx2(float *y, const float *x, float a, int64_t n);
/* y[i] *= a. */
void be_cpu__scale_avx2(float *y, float a, int64_t n);
/* The sum of x[i]^2, accumulated in double. */
double be_cpu__sumsq_avx2(const float *x, int64_t n);
/* y[i] = x[i] * s * (w ? w[i] : 1). */
void be_cpu__scale_mul_avx2(float *y, const float *x, const float *w, float s, int64_t n);

/* ---- the same where AVX-512 pays (kernels/cpu/ops_avx512.c), called only when
 * be_cpu__isa_detect() >= BE_CPU_ISA_AVX512 ---- */

/* be_cpu__swiglu_avx2 in 16 lanes, the tail masked instead of scalar. */
void be_cpu__swiglu_avx512(float *y, const float *g, const float *u, int64_t n);
/* be_cpu__attn_scores_avx2 and be_cpu__attn_acc_avx2 in 16 lanes (head
 * sizes not a multiple of 16 go to those). */
void be_cpu__attn_scores_avx512(enum be_type t, const float *q, int n_g, int hd, const void *const *rows, int cn,
                                float *s, int64_t s_stride, float scale);
void be_cpu__attn_acc_avx512(enum be_type t, float *acc, int n_g, int hd, const float *w, int64_t w_stride,
                             const void *const *rows, int cn);

/* ---- grouped MoE layer (moe.c) ---- */

struct be_moe_layer;
struct be_cpu_pool;

/* Scratch of the grouped MoE op; grown by be_cpu__moe_reserve only. */
struct be_cpu_moe_scratch {
    void *mem;
    size_t bytes;
};

/* Sizes s for at most n_pairs (expert, token) pairs of n_tok tokens. */
int be_cpu__moe_reserve(struct be_cpu_moe_scratch *s, int64_t n_pairs, int64_t n_tok, int64_t n_ff,
                        int64_t n_embd);
/* y[i] = silu(g[i]) * u[i] (the backend's best version, y may be g). */
typedef void (*be_cpu_swiglu_fn)(float *y, const float *g, const float *u, int64_t n);
/* be_ops.moe_ffn on the CPU (see backend.h); pack is the per-thread GEMM
 * panel memory (pack_len bytes per thread) or NULL; swiglu the backend's
 * elementwise SwiGLU, so that the grouped layer and the per-expert path
 * agree. */
void be_cpu__moe_ffn(struct be_cpu_pool *pool, const struct be_cpu_kernels *k, be_cpu_swiglu_fn swiglu,
                     struct be_cpu_moe_scratch *s, uint8_t *pack, size_t pack_len, float *y,
                     const float *x, int64_t n_tok, const struct be_moe_layer *l);
/* be_ops.moe_combine on the CPU. */
void be_cpu__moe_combine(struct be_cpu_pool *pool, struct be_cpu_moe_scratch *s, float *y, int64_t n_tok,
                         int64_t n_embd, int32_t n_pairs, const int32_t *tok, const float *weight,
                         const float *const *d);

#endif
