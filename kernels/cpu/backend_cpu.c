/* SPDX-License-Identifier: MIT */
/*
 * backend_cpu.c - the CPU backend: every op of kernels/backend.h on the
 * SIMD kernel table of kernels/cpu/kernels.c (chosen from CPUID at init),
 * the small vector loops of ops_avx2.c, and the thread pool of pool.c.
 *
 * The plain scalar code this file used to hold (quant.c's be_vec_dot_ref,
 * be_dequant_row, the loops below) stays the semantic reference: every op
 * here matches it within float tolerances (tests/test_kernels_ops.c).
 *
 * Invariants a reader must know:
 *  - No op allocates; scratch memory (converted activations, per-thread
 *    attention buffers and GEMM panels) is sized by reserve(), which the
 *    engine calls once at start with the largest batch and row it will use.
 *  - Results do not depend on thread scheduling: every output element is
 *    computed by exactly one task, in an order fixed by the op's shape, and a
 *    task's result does not depend on which thread runs it. The matmul token
 *    groups (of BE_CPU_MAX_NY) are fixed by token index, so the result is
 *    even the same for every thread count.
 *  - Matmul reads each weight row once per group of up to 4 tokens; for
 *    many tokens it walks an L2-sized tile of rows once per token group, so
 *    the weights come from memory once per op. From 3 tokens on, types with
 *    a GEMM (Q4_K, Q5_K, Q6_K, Q8_0 at the VNNI level) instead pack each tile
 *    into 16-row panels in per-thread memory and run the GEMM on them, 8
 *    tokens at a time; the GEMM gives each (row, token) the bits of the dot
 *    kernel, so a token's output is the same in every batch (n_tok = 1
 *    included) and at every thread count. A prepacked matrix (be_ops.prepack)
 *    and rewritten experts (be_ops.expert_pack) run that GEMM on stored
 *    panels at every token count, with the same bits.
 */
#include "kernels/backend.h"

#include "common/log.h"
#include "common/mem.h"
#include "kernels/cpu/impl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Weight bytes of one matmul tile: walked once per token group, so it
 * should stay in L2 together with the activations being streamed past. */
#define MM_TILE_BYTES (256 * 1024)
/* The same for the packed panels of the GEMM path (per thread). */
#define MM_PACK_BYTES (256 * 1024)
/* From this many tokens on, types with a GEMM (impl.h) pack their rows
 * into panels once per tile and run the GEMM on them; below, packing costs
 * more than it saves (measured on Zen 4: at 2 tokens the dot path is 10-30 %
 * faster, at 3 the GEMM 20-30 %). The result is the same bits either way. */
#define MM_GEMM_MIN_TOK 3
/* From this many tokens up to MM_ROWS_MAX_TOK, types with a small-batch
 * kernel (impl.h's rows) use it instead of the dot kernel or the GEMM: it
 * decodes 4 rows at once into registers and runs up to 8 tokens on them,
 * no panel pass through memory. Measured on Zen 5 (1024-wide rows from
 * DRAM, one thread, ns per row): Q6_K 16 tokens 106 vs the GEMM's 114, 32
 * tokens 206 vs 165; Q4_K 16 tokens 84 vs 99, 32 tokens 168 vs 147; Q8_0
 * 8 tokens 98 vs 121, 16 tokens 184 vs 187. At one token the dot kernel
 * stays, for matrices without stored panels (prepacked ones read those at
 * every token count, below). */
#define MM_ROWS_MIN_TOK 2
/* A prepacked matrix (cpu_prepack) runs the GEMM on its stored panels
 * (kernels' stored[]: Q4_K, Q6_K at their own size) at every token count,
 * one included. Single-stream decode, medium Q4_K_M, 2 threads, three
 * alternating runs of 3 rounds: 162.1 tokens/s with one token on the rows
 * as stored (the AVX2 dot kernel for Q4_K: 29 ns a 1024-wide row in cache,
 * against 5.5 for the panel), 179.4 with the Q4_K panels, 185.7 with all.
 * (A session before, with the panels' f32 d, unaligned super-blocks and no
 * non-temporal prefetch, one token on the Q6_K output panels had measured
 * slower: 136.5 against 144.0.) */
#define MM_ROWS_MAX_TOK 16
/* Below this many weight bytes per thread, a matmul is split in exactly
 * one task per thread; above, in a few per thread so that a slow thread
 * can be helped. */
#define MM_SPLIT_FINE_BYTES (512 * 1024)
/* Software prefetch of the weight row this many bytes (at least 2 rows)
 * ahead while the current one is dotted: the hardware prefetcher alone
 * leaves single-stream decode ~7 % short of the bandwidth it reaches then. */
#define MM_PREFETCH_BYTES 2048
/* Elementwise ops run on one thread below this many values: a 16-token
 * decode step's norms and RoPE (16 x 1024 values) run on all threads, one
 * token's (1024) stay on the caller. Was 32768, which left the 16-token
 * ones serial while the workers spun; 4096 measured +0.2 to +2 % 16-stream
 * throughput on the medium model (three alternating runs, Zen 5, 2 threads). */
#define EW_PAR_MIN 4096
/* Attention positions handled per softmax rescale. */
#define ATT_CHUNK 128
/* Attention tasks a thread: each a run of (token, kv head) items, the
 * next item's keys requested while the current one computes. 16 tokens x
 * 96 positions (f16, 4 KV heads of 64) from DRAM: 98 us a call with one
 * item a task, 87-88 with 2 tasks a thread, 91-92 with 4, 92-93 with 16
 * (three alternating runs); 4 leaves room for sequences of unequal
 * length. */
#ifndef ATT_TASKS_PER_THREAD
#define ATT_TASKS_PER_THREAD 4
#endif

/* The small vector loops: plain versions below, AVX2 ones in ops_avx2.c,
 * AVX-512 ones (where 16 lanes pay) in ops_avx512.c. */
struct prims {
    void (*attn_scores)(enum be_type t, const float *q, int n_g, int hd, const void *const *rows,
                        int cn, float *s, int64_t s_stride, float scale);
    void (*attn_acc)(enum be_type t, float *acc, int n_g, int hd, const float *w, int64_t w_stride,
                     const void *const *rows, int cn);
    float (*exp_shift)(float *x, float mx, int64_t n);
    void (*swiglu)(float *y, const float *g, const float *u, int64_t n);
    void (*axpy)(float *y, const float *x, float a, int64_t n);
    void (*scale)(float *y, float a, int64_t n);
    double (*sumsq)(const float *x, int64_t n);
    void (*scale_mul)(float *y, const float *x, const float *w, float s, int64_t n);
};

struct cpu_ctx {
    int n_threads;
    struct be_cpu_pool *pool;
    const struct be_cpu_kernels *kern;
    struct prims pr;
    void *act;          /* activations converted to a vec_dot type */
    size_t act_bytes;
    float *scratch;     /* n_threads * scratch_len floats, per-thread attention buffers */
    size_t scratch_len; /* floats per thread */
    struct be_cpu_moe_scratch moe; /* the grouped MoE op's scratch */
    uint8_t *pack;      /* n_threads * pack_len bytes, per-thread matmul GEMM panels */
    size_t pack_len;    /* bytes per thread, a multiple of 64 */
    struct pp_entry *pp; /* prepacked weights (cpu_prepack), n_pp of them */
    int n_pp, cap_pp;
};

/* A weight matrix kept packed in GEMM panels, for batches (cpu_prepack). */
struct pp_entry {
    const void *w;       /* the matrix as the caller passes it to matmul */
    enum be_type wt;
    int64_t n_in, n_out;
    uint8_t *pk;         /* its panels, panel bytes apart */
    size_t panel, bytes;
};

/* ---- plain vector loops (the reference, and the fallback without AVX2) ---- */

/* Element i of a KV row (F32, F16 or Q8_0), as be_dequant_row() gives it. */
static float kv_at(enum be_type t, const void *row, int i)
{
    if (t == BE_TYPE_F32)
        return ((const float *)row)[i];
    if (t == BE_TYPE_F16)
        return be_f16_to_f32(((const be_f16_t *)row)[i]);
    const struct block_q8_0 *b = (const struct block_q8_0 *)row + i / QK8_0;
    return be_f16_to_f32(b->d) * (float)b->qs[i % QK8_0];
}

static void attn_scores_plain(enum be_type t, const float *q, int n_g, int hd, const void *const *rows,
                              int cn, float *s, int64_t s_stride, float scale)
{
    for (int p = 0; p < cn; p++)
        for (int g = 0; g < n_g; g++) {
            float sum = 0;
            for (int i = 0; i < hd; i++)
                sum += q[(int64_t)g * hd + i] * kv_at(t, rows[p], i);
            s[g * s_stride + p] = sum * scale;
        }
}

static void attn_acc_plain(enum be_type t, float *acc, int n_g, int hd, const float *w,
                           int64_t w_stride, const void *const *rows, int cn)
{
    for (int g = 0; g < n_g; g++)
        for (int p = 0; p < cn; p++)
            for (int i = 0; i < hd; i++)
                acc[(int64_t)g * hd + i] += w[g * w_stride + p] * kv_at(t, rows[p], i);
}

static float exp_shift_plain(float *x, float mx, int64_t n)
{
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    return sum;
}

static void swiglu_plain(float *y, const float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void axpy_plain(float *y, const float *x, float a, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void scale_plain(float *y, float a, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] *= a;
}

static double sumsq_plain(const float *x, int64_t n)
{
    double ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    return ss;
}

static void scale_mul_plain(float *y, const float *x, const float *w, float s, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * s * (w ? w[i] : 1.0f);
}

static const struct prims g_prims_plain = {
    attn_scores_plain, attn_acc_plain, exp_shift_plain, swiglu_plain,
    axpy_plain, scale_plain, sumsq_plain, scale_mul_plain,
};

static const struct prims g_prims_avx2 = {
    be_cpu__attn_scores_avx2, be_cpu__attn_acc_avx2, be_cpu__exp_shift_avx2, be_cpu__swiglu_avx2, be_cpu__axpy_avx2, be_cpu__scale_avx2,
    be_cpu__sumsq_avx2, be_cpu__scale_mul_avx2,
};

static const struct prims g_prims_avx512 = {
    be_cpu__attn_scores_avx512, be_cpu__attn_acc_avx512, be_cpu__exp_shift_avx2, be_cpu__swiglu_avx512, be_cpu__axpy_avx2, be_cpu__scale_avx2,
    be_cpu__sumsq_avx2, be_cpu__scale_mul_avx2,
};

/* ---- context ---- */

static void cpu_free(struct be *be)
{
    struct cpu_ctx *c = be->ctx;
    be_cpu__pool_free(c->pool);
    free(c->act);
    free(c->scratch);
    free(c->pack);
    free(c->moe.mem);
    for (int i = 0; i < c->n_pp; i++)
        free(c->pp[i].pk);
    free(c->pp);
    free(c);
    free(be);
}

static int grow(void **p, size_t *have, size_t want)
{
    if (want <= *have)
        return 0;
    void *q = aligned_alloc(64, (want + 63) / 64 * 64);
    if (!q)
        return -ENOMEM;
    free(*p);
    *p = q;
    *have = want;
    return 0;
}

static int cpu_reserve(struct be *be, int64_t n_tok_max, int64_t n_in_max, int64_t n_ctx_max)
{
    struct cpu_ctx *c = be->ctx;
    /* The widest activation format is f32 (4 bytes per value); Q8_K takes
     * 292/256 and Q8_1 36/32 bytes per value, both less. */
    size_t act = (size_t)n_tok_max * (size_t)n_in_max * 4 + 64;
    int rc = grow(&c->act, &c->act_bytes, act);
    /* Per thread: the attention scores of a chunk of positions for the
     * query heads of one KV head (at most n_in_max / head_dim of them). */
    size_t per = (size_t)ATT_CHUNK * 64 + (size_t)n_in_max;
    if (rc == 0 && per > c->scratch_len) {
        size_t have = c->scratch_len * (size_t)c->n_threads * sizeof(float);
        rc = grow((void **)&c->scratch, &have, per * (size_t)c->n_threads * sizeof(float));
        if (rc == 0)
            c->scratch_len = per;
    }
    /* Per thread: the GEMM panels of one matmul tile, at least one panel
     * of the longest row (at most 23 bytes per value: Q6_K's 5760 per 256). */
    size_t pack = (size_t)n_in_max * 23 > MM_PACK_BYTES ? (size_t)n_in_max * 23 : MM_PACK_BYTES;
    pack = (pack + 63) / 64 * 64;
    if (rc == 0 && pack > c->pack_len) {
        size_t have = c->pack_len * (size_t)c->n_threads;
        rc = grow((void **)&c->pack, &have, pack * (size_t)c->n_threads);
        if (rc == 0)
            c->pack_len = pack;
    }
    (void)n_ctx_max;
    return rc;
}

/* ---- matmul ---- */

struct mm_job {
    struct cpu_ctx *c;
    be_cpu_dot_fn dot;   /* NULL: be_vec_dot_ref */
    be_cpu_rows_fn rows; /* non-NULL: the small-batch path */
    const struct be_cpu_gemm *gemm; /* non-NULL: the GEMM path */
    size_t panel;        /* bytes of one GEMM panel */
    be_cpu_act_fn actf;  /* NULL: be_quant_row */
    enum be_type wt, vt;
    float *y;
    const uint8_t *w;
    const float *x;
    const uint8_t *act;
    int64_t n_in, n_out, n_tok;
    size_t wrow, arow;
    int64_t rows_per_task; /* rows of one task */
    int64_t tile_rows;     /* rows walked once per token group */
    int64_t toks_per_task; /* activation conversion */
    int64_t pf_rows;       /* prefetch distance in rows */
};

static void mm_convert_task(void *ctx, int64_t task, int thread_id)
{
    (void)thread_id;
    const struct mm_job *j = ctx;
    int64_t t0 = task * j->toks_per_task, t1 = t0 + j->toks_per_task;
    if (t1 > j->n_tok)
        t1 = j->n_tok;
    uint8_t *dst = (uint8_t *)j->act;
    for (int64_t t = t0; t < t1; t++) {
        if (j->actf)
            j->actf(j->x + t * j->n_in, dst + t * j->arow, j->n_in);
        else
            be_quant_row(j->vt, j->x + t * j->n_in, dst + t * j->arow, j->n_in);
    }
}

static void mm_rows_task(void *ctx, int64_t task, int thread_id)
{
    (void)thread_id;
    const struct mm_job *j = ctx;
    const int64_t r0 = task * j->rows_per_task;
    const int64_t r1 = r0 + j->rows_per_task < j->n_out ? r0 + j->rows_per_task : j->n_out;
    const int64_t n_out = j->n_out, n_tok = j->n_tok;
    float s[BE_CPU_MAX_NY];
    if (j->rows) { /* all tokens at once; the kernel prefetches the rows */
        j->rows(j->n_in, j->w + r0 * j->wrow, j->wrow, (int)(r1 - r0), j->act, j->arow, (int)n_tok, j->y + r0,
                (size_t)n_out);
        return;
    }

    for (int64_t tr0 = r0; tr0 < r1; tr0 += j->tile_rows) {
        const int64_t tr1 = tr0 + j->tile_rows < r1 ? tr0 + j->tile_rows : r1;
        for (int64_t t0 = 0; t0 < n_tok; t0 += BE_CPU_MAX_NY) {
            const int ny = n_tok - t0 < BE_CPU_MAX_NY ? (int)(n_tok - t0) : BE_CPU_MAX_NY;
            const uint8_t *a = j->act + t0 * j->arow;
            float *yt = j->y + t0 * n_out;
            /* hot: each weight row of the tile once, against ny tokens */
            if (j->dot) {
                for (int64_t o = tr0; o < tr1; o++) {
                    /* The first token group reads the tile from memory. */
                    if (t0 == 0 && o + j->pf_rows < tr1) {
                        const uint8_t *pf = j->w + (o + j->pf_rows) * j->wrow;
                        for (size_t b = 0; b < j->wrow; b += 64)
                            __builtin_prefetch(pf + b, 0, 3);
                    }
                    j->dot(j->n_in, j->w + o * j->wrow, a, j->arow, ny, s);
                    for (int k = 0; k < ny; k++)
                        yt[k * n_out + o] = s[k];
                }
            } else {
                for (int64_t o = tr0; o < tr1; o++)
                    for (int k = 0; k < ny; k++)
                        yt[k * n_out + o] = be_vec_dot_ref(j->wt, j->n_in, j->w + o * j->wrow,
                                                           a + k * j->arow);
            }
        }
    }
}

/* The GEMM path: a task's rows in tiles of whole panels; each tile is
 * packed into this thread's panel memory once and then run against every
 * group of BE_CPU_GEMM_NY tokens. */
static void mm_gemm_task(void *ctx, int64_t task, int thread_id)
{
    const struct mm_job *j = ctx;
    const int64_t r0 = task * j->rows_per_task;
    const int64_t r1 = r0 + j->rows_per_task < j->n_out ? r0 + j->rows_per_task : j->n_out;
    const int64_t n_out = j->n_out, n_tok = j->n_tok;
    uint8_t *pk = j->c->pack + (size_t)thread_id * j->c->pack_len;
    const struct be_cpu_gemm *g = j->gemm;

    for (int64_t tr0 = r0; tr0 < r1; tr0 += j->tile_rows) {
        const int64_t tr1 = tr0 + j->tile_rows < r1 ? tr0 + j->tile_rows : r1;
        const int64_t np = (tr1 - tr0 + BE_CPU_GEMM_ROWS - 1) / BE_CPU_GEMM_ROWS;
        for (int64_t p = 0; p < np; p++) {
            const int64_t o = tr0 + p * BE_CPU_GEMM_ROWS;
            const int nr = tr1 - o < BE_CPU_GEMM_ROWS ? (int)(tr1 - o) : BE_CPU_GEMM_ROWS;
            /* The next panel's rows (contiguous) come from memory while
             * this one is packed. */
            const int64_t o2 = o + BE_CPU_GEMM_ROWS;
            if (o2 < r1) {
                const int64_t e2 = o2 + BE_CPU_GEMM_ROWS < r1 ? o2 + BE_CPU_GEMM_ROWS : r1;
                const uint8_t *pf = j->w + o2 * j->wrow;
                for (size_t b = 0; b < (size_t)(e2 - o2) * j->wrow; b += 64)
                    __builtin_prefetch(pf + b, 0, 3);
            }
            g->pack(j->w + o * j->wrow, j->wrow, nr, j->n_in, pk + p * j->panel);
        }
        for (int64_t t0 = 0; t0 < n_tok; t0 += BE_CPU_GEMM_NY) {
            const int ny = n_tok - t0 < BE_CPU_GEMM_NY ? (int)(n_tok - t0) : BE_CPU_GEMM_NY;
            const uint8_t *a = j->act + t0 * j->arow;
            /* hot: every panel of the tile against ny tokens */
            for (int64_t p = 0; p < np; p++) {
                const int64_t o = tr0 + p * BE_CPU_GEMM_ROWS;
                const int nr = tr1 - o < BE_CPU_GEMM_ROWS ? (int)(tr1 - o) : BE_CPU_GEMM_ROWS;
                g->run(j->n_in, pk + p * j->panel, a, j->arow, ny, j->y + t0 * n_out + o,
                       (size_t)n_out, nr);
            }
        }
    }
}

/* ---- prepacked weights ---- */

/* The prepacked GEMM path: a task's panels, each against every group of
 * BE_CPU_GEMM_NY tokens while it is in L1/L2, the next panel prefetched
 * meanwhile (the panels of a task are one contiguous stream). */
struct pp_job {
    const struct be_cpu_gemm *g;
    const struct pp_entry *e;
    const uint8_t *act;
    size_t arow;
    float *y;
    int64_t n_tok, panels_per_task, n_panels;
};

/* Task task's panels [*p0, *p1) of n_panels, per_task each. */
static void pp_span(int64_t task, int64_t per_task, int64_t n_panels, int64_t *p0, int64_t *p1)
{
    *p0 = task * per_task;
    *p1 = *p0 + per_task < n_panels ? *p0 + per_task : n_panels;
}

/* Panels per task for about n_tasks tasks; *n_tasks becomes the exact count. */
static int64_t pp_split(int64_t n_panels, int64_t *n_tasks)
{
    if (*n_tasks > n_panels)
        *n_tasks = n_panels;
    const int64_t per = (n_panels + *n_tasks - 1) / *n_tasks;
    *n_tasks = (n_panels + per - 1) / per;
    return per;
}

/* Rows of panel p (the last may be partial). */
static int pp_rows(const struct pp_entry *e, int64_t p)
{
    const int64_t o = p * BE_CPU_GEMM_ROWS;
    return e->n_out - o < BE_CPU_GEMM_ROWS ? (int)(e->n_out - o) : BE_CPU_GEMM_ROWS;
}

void be_cpu__stored_run(const struct be_cpu_gemm *g, int64_t n_in, const uint8_t *pk, size_t panel, int64_t r0,
                        int64_t r1, const uint8_t *act, size_t arow, int64_t n_tok, float *y, size_t ys)
{
    const uint8_t *pw = pk + (size_t)(r0 / BE_CPU_GEMM_ROWS) * panel;
    if (r0 < r1) /* the first panel's lines all at once */
        for (size_t b = 0; b < panel; b += 64)
            __builtin_prefetch(pw + b, 0, 0);
    for (int64_t o = r0; o < r1; o += BE_CPU_GEMM_ROWS, pw += panel) {
        const int nr = r1 - o < BE_CPU_GEMM_ROWS ? (int)(r1 - o) : BE_CPU_GEMM_ROWS;
        /* the next panel, spread over this one's first token group */
        const uint8_t *pf = o + BE_CPU_GEMM_ROWS < r1 ? pw + panel : NULL;
        for (int64_t t0 = 0; t0 < n_tok; t0 += BE_CPU_GEMM_NY) {
            const int ny = n_tok - t0 < BE_CPU_GEMM_NY ? (int)(n_tok - t0) : BE_CPU_GEMM_NY;
            g->run_pf(n_in, pw, act + (size_t)t0 * arow, arow, ny, y + (size_t)t0 * ys + o, ys, nr,
                      t0 == 0 ? pf : NULL, panel);
        }
    }
}

static void mm_pp_task(void *ctx, int64_t task, int thread_id)
{
    (void)thread_id;
    const struct pp_job *j = ctx;
    const struct pp_entry *e = j->e;
    int64_t p0, p1;
    pp_span(task, j->panels_per_task, j->n_panels, &p0, &p1);
    const int64_t r1 = p1 * BE_CPU_GEMM_ROWS < e->n_out ? p1 * BE_CPU_GEMM_ROWS : e->n_out;
    be_cpu__stored_run(j->g, e->n_in, e->pk, e->panel, p0 * BE_CPU_GEMM_ROWS, r1, j->act, j->arow, j->n_tok, j->y,
                       (size_t)e->n_out);
}

static const struct pp_entry *pp_find(const struct cpu_ctx *c, const void *w, enum be_type wt, int64_t n_in,
                                      int64_t n_out)
{
    for (int i = 0; i < c->n_pp; i++)
        if (c->pp[i].w == w && c->pp[i].wt == wt && c->pp[i].n_in == n_in && c->pp[i].n_out == n_out)
            return &c->pp[i];
    return NULL;
}

struct pp_pack_job {
    const struct be_cpu_gemm *g;
    struct pp_entry *e;
    size_t wrow;
    int64_t panels_per_task, n_panels;
};

static void pp_pack_task(void *ctx, int64_t task, int thread_id)
{
    (void)thread_id;
    const struct pp_pack_job *j = ctx;
    struct pp_entry *e = j->e;
    int64_t p0, p1;
    pp_span(task, j->panels_per_task, j->n_panels, &p0, &p1);
    for (int64_t p = p0; p < p1; p++)
        j->g->pack((const uint8_t *)e->w + (size_t)p * BE_CPU_GEMM_ROWS * j->wrow, j->wrow, pp_rows(e, p), e->n_in,
                   e->pk + (size_t)p * e->panel);
}

static int64_t cpu_prepack(struct be *be, const void *w, enum be_type wt, int64_t n_in, int64_t n_out)
{
    struct cpu_ctx *c = be->ctx;
    const struct be_type_info *ti = be_type_info(wt);
    const struct be_cpu_gemm *g = c->kern ? &c->kern->stored[wt] : NULL;
    if (!ti || !g || !g->pack || !g->run_pf || n_in <= 0 || n_in % ti->blck || n_out <= 0)
        return 0;
    if (pp_find(c, w, wt, n_in, n_out))
        return 0;
    if (c->n_pp == c->cap_pp) {
        int cap = c->cap_pp ? 2 * c->cap_pp : 16;
        struct pp_entry *q = realloc(c->pp, (size_t)cap * sizeof *q);
        if (!q)
            return -ENOMEM;
        c->pp = q;
        c->cap_pp = cap;
    }
    struct pp_entry e = {.w = w, .wt = wt, .n_in = n_in, .n_out = n_out};
    e.panel = ((size_t)g->bytes_per_blk * (size_t)(n_in / ti->blck) + 63) / 64 * 64;
    const int64_t n_panels = (n_out + BE_CPU_GEMM_ROWS - 1) / BE_CPU_GEMM_ROWS;
    e.bytes = e.panel * (size_t)n_panels;
    e.pk = mem_alloc_large(e.bytes); /* the kernels load unaligned */
    if (!e.pk)
        return -ENOMEM;
    struct pp_pack_job j = {.g = g, .e = &e, .wrow = be_row_size(wt, n_in), .n_panels = n_panels};
    int64_t n_tasks = c->n_threads * 4;
    j.panels_per_task = pp_split(n_panels, &n_tasks);
    be_cpu__pool_run(c->pool, pp_pack_task, &j, n_tasks);
    c->pp[c->n_pp++] = e;
    return (int64_t)e.bytes;
}

/* Activations: converted once into c->act (the weight type's format), in
 * parallel over tokens for a batch; F32 is used as it is. */
static void mm_convert(struct cpu_ctx *c, struct mm_job *j)
{
    const int nt = c->n_threads;
    if (j->vt == BE_TYPE_F32) {
        j->act = (const uint8_t *)j->x;
        return;
    }
    ASSERT((size_t)j->n_tok * j->arow <= c->act_bytes);
    j->act = c->act;
    j->actf = c->kern ? c->kern->act[j->vt] : NULL;
    j->toks_per_task = j->n_tok;
    int64_t n_conv = 1;
    if (nt > 1 && j->n_tok * j->n_in >= 8192) {
        n_conv = j->n_tok < nt * 4 ? j->n_tok : nt * 4;
        j->toks_per_task = (j->n_tok + n_conv - 1) / n_conv;
        n_conv = (j->n_tok + j->toks_per_task - 1) / j->toks_per_task;
    }
    be_cpu__pool_run(c->pool, mm_convert_task, j, n_conv);
}

/* Tasks for a prepacked matrix: about one per 2 MiB, 4 to 16 per thread
 * (as the rows path). */
static int64_t pp_tasks(const struct cpu_ctx *c, const struct pp_entry *pe)
{
    const int64_t nt = c->n_threads;
    int64_t n_tasks = (int64_t)(pe->bytes / (2u << 20));
    return n_tasks < nt * 4 ? nt * 4 : n_tasks > nt * 16 ? nt * 16 : n_tasks;
}

/* matmul_n: several prepacked matrices on the same activations, converted
 * once, their tasks in one pool run (one barrier, not three, and the
 * threads balance across the matrices). */
struct ppn_job {
    struct pp_job m[BE_MATMUL_N_MAX];
    int64_t first[BE_MATMUL_N_MAX + 1]; /* task range of matrix i */
    int n;
};

static void mm_ppn_task(void *ctx, int64_t task, int thread_id)
{
    const struct ppn_job *j = ctx;
    int i = 0;
    while (task >= j->first[i + 1])
        i++;
    mm_pp_task((void *)&j->m[i], task - j->first[i], thread_id);
}

static void cpu_matmul(struct be *be, float *y, const void *w, enum be_type wt, int64_t n_in,
                       int64_t n_out, const float *x, int64_t n_tok);

static void cpu_matmul_n(struct be *be, int n, const struct be_mm *mm, int64_t n_in, const float *x, int64_t n_tok)
{
    struct cpu_ctx *c = be->ctx;
    const struct pp_entry *pe[BE_MATMUL_N_MAX];
    bool all = n >= 1 && n <= BE_MATMUL_N_MAX && n_tok >= 1 && c->kern;
    for (int i = 0; all && i < n; i++) {
        pe[i] = pp_find(c, mm[i].w, mm[i].wt, n_in, mm[i].n_out);
        all = pe[i] && be_type_info(mm[i].wt)->vec_dot_type == be_type_info(mm[0].wt)->vec_dot_type;
    }
    if (!all) {
        for (int i = 0; i < n; i++)
            cpu_matmul(be, mm[i].y, mm[i].w, mm[i].wt, n_in, mm[i].n_out, x, n_tok);
        return;
    }
    const enum be_type vt = be_type_info(mm[0].wt)->vec_dot_type;
    struct mm_job cj = {.c = c, .vt = vt, .x = x, .n_in = n_in, .n_tok = n_tok, .arow = be_row_size(vt, n_in)};
    mm_convert(c, &cj);
    struct ppn_job j = {.n = n};
    j.first[0] = 0;
    for (int i = 0; i < n; i++) {
        j.m[i] = (struct pp_job){.g = &c->kern->stored[mm[i].wt], .e = pe[i], .act = cj.act, .arow = cj.arow,
                                 .y = mm[i].y, .n_tok = n_tok,
                                 .n_panels = (mm[i].n_out + BE_CPU_GEMM_ROWS - 1) / BE_CPU_GEMM_ROWS};
        int64_t n_tasks = pp_tasks(c, pe[i]);
        j.m[i].panels_per_task = pp_split(j.m[i].n_panels, &n_tasks);
        j.first[i + 1] = j.first[i] + n_tasks;
    }
    be_cpu__pool_run(c->pool, mm_ppn_task, &j, j.first[n]);
}

static void cpu_matmul(struct be *be, float *y, const void *w, enum be_type wt, int64_t n_in,
                       int64_t n_out, const float *x, int64_t n_tok)
{
    struct cpu_ctx *c = be->ctx;
    const struct be_type_info *ti = be_type_info(wt);
    ASSERT(ti != NULL && n_in % ti->blck == 0);
    const int nt = c->n_threads;
    struct mm_job j = {
        .c = c,
        .dot = c->kern ? c->kern->dot[wt] : NULL,
        .wt = wt,
        .vt = ti->vec_dot_type,
        .y = y,
        .w = w,
        .x = x,
        .n_in = n_in,
        .n_out = n_out,
        .n_tok = n_tok,
        .wrow = be_row_size(wt, n_in),
        .arow = be_row_size(ti->vec_dot_type, n_in),
    };
    if (n_tok <= 0 || n_out <= 0)
        return;
    mm_convert(c, &j);

    const struct pp_entry *pe = pp_find(c, w, wt, n_in, n_out);
    if (pe) {
        struct pp_job pj = {.g = &c->kern->stored[wt], .e = pe, .act = j.act, .arow = j.arow, .y = y,
                            .n_tok = n_tok, .n_panels = (n_out + BE_CPU_GEMM_ROWS - 1) / BE_CPU_GEMM_ROWS};
        int64_t n_tasks = pp_tasks(c, pe);
        pj.panels_per_task = pp_split(pj.n_panels, &n_tasks);
        be_cpu__pool_run(c->pool, mm_pp_task, &pj, n_tasks);
        return;
    }

    /* GEMM: tasks and tiles of whole panels, the tile's panels within
     * this thread's pack memory. */
    const struct be_cpu_gemm *g = c->kern ? &c->kern->gemm[wt] : NULL;
    const bool small = c->kern && c->kern->rows[wt] && n_tok >= MM_ROWS_MIN_TOK && n_tok <= MM_ROWS_MAX_TOK;
    if (g && g->pack && n_tok >= MM_GEMM_MIN_TOK && c->pack && !small) {
        j.gemm = g;
        j.panel = (size_t)g->bytes_per_blk * (size_t)(n_in / ti->blck);
        j.panel = (j.panel + 63) / 64 * 64;
        ASSERT(j.panel <= c->pack_len);
        const int64_t n_panels = (n_out + BE_CPU_GEMM_ROWS - 1) / BE_CPU_GEMM_ROWS;
        const int64_t tile_panels = (int64_t)(c->pack_len / j.panel);
        const int64_t n_tiles = (n_panels + tile_panels - 1) / tile_panels;
        int64_t n_tasks = n_tiles > nt * 2 ? n_tiles : nt * 2;
        if (n_tasks > n_panels)
            n_tasks = n_panels;
        const int64_t ppt = (n_panels + n_tasks - 1) / n_tasks;
        j.rows_per_task = ppt * BE_CPU_GEMM_ROWS;
        j.tile_rows = (ppt < tile_panels ? ppt : tile_panels) * BE_CPU_GEMM_ROWS;
        n_tasks = (n_out + j.rows_per_task - 1) / j.rows_per_task;
        be_cpu__pool_run(c->pool, mm_gemm_task, &j, n_tasks);
        return;
    }

    if (small)
        j.rows = c->kern->rows[wt];

    j.pf_rows = (int64_t)((MM_PREFETCH_BYTES + j.wrow - 1) / j.wrow);
    if (j.pf_rows < 2)
        j.pf_rows = 2;

    /* Rows: an even split; tiles of rows for many tokens. */
    const size_t bytes = (size_t)n_out * j.wrow;
    int64_t n_tasks = nt;
    if (n_tok > BE_CPU_MAX_NY && !j.rows) {
        j.tile_rows = (int64_t)(MM_TILE_BYTES / j.wrow);
        if (j.tile_rows < 1)
            j.tile_rows = 1;
        int64_t n_tiles = (n_out + j.tile_rows - 1) / j.tile_rows;
        n_tasks = n_tiles > nt * 2 ? n_tiles : nt * 2;
    } else if (j.rows && bytes / (size_t)nt > MM_SPLIT_FINE_BYTES) {
        /* Small batches are compute-bound: at 16 tokens the output matrix
         * took 8 tasks of ~16 MB, and the thread finishing first waited up
         * to one of them; tasks of ~2 MB or more keep the prefetch going. */
        n_tasks = (int64_t)(bytes / (2u << 20));
        n_tasks = n_tasks < nt * 4 ? nt * 4 : n_tasks > nt * 16 ? nt * 16 : n_tasks;
    } else if (bytes / (size_t)nt > MM_SPLIT_FINE_BYTES) {
        n_tasks = nt * 4;
    }
    if (n_tasks > n_out)
        n_tasks = n_out;
    j.rows_per_task = (n_out + n_tasks - 1) / n_tasks;
    if (j.rows) /* whole groups of the 4 rows the kernel decodes together */
        j.rows_per_task = (j.rows_per_task + 3) / 4 * 4;
    if (n_tok <= BE_CPU_MAX_NY || j.tile_rows > j.rows_per_task)
        j.tile_rows = j.rows_per_task;
    n_tasks = (n_out + j.rows_per_task - 1) / j.rows_per_task;
    be_cpu__pool_run(c->pool, mm_rows_task, &j, n_tasks);
}

/* ---- elementwise ---- */

struct ew_job {
    struct cpu_ctx *c;
    float *y;
    const float *a, *b;
    float s;
    int64_t n, per_task; /* values (or rows) */
    int64_t row_len;
    float eps;
};

/* Tasks for n items: one when small, else a few per thread (aligned to 16). */
static int64_t ew_split(const struct cpu_ctx *c, int64_t n, int64_t work, int64_t *per_task)
{
    int64_t n_tasks = 1;
    if (n <= 0) {
        *per_task = 1;
        return 0;
    }
    if (c->n_threads > 1 && work >= EW_PAR_MIN)
        n_tasks = c->n_threads * 2 < n ? c->n_threads * 2 : n;
    *per_task = (n + n_tasks - 1) / n_tasks;
    if (n_tasks > 1 && *per_task > 16)
        *per_task = (*per_task + 15) / 16 * 16;
    return (n + *per_task - 1) / *per_task;
}

static void ew_range(const struct ew_job *j, int64_t task, int64_t *i0, int64_t *len)
{
    *i0 = task * j->per_task;
    *len = *i0 + j->per_task < j->n ? j->per_task : j->n - *i0;
}

static void rmsnorm_task(void *ctx, int64_t task, int thread_id)
{
    (void)thread_id;
    const struct ew_job *j = ctx;
    int64_t r0, nr;
    ew_range(j, task, &r0, &nr);
    const int64_t n = j->row_len;
    for (int64_t r = r0; r < r0 + nr; r++) {
        double ss = j->c->pr.sumsq(j->a + r * n, n);
        float scale = (float)(1.0 / sqrt(ss / (double)n + j->eps));
        j->c->pr.scale_mul(j->y + r * n, j->a + r * n, j->b, scale, n);
    }
}

static void cpu_rmsnorm(struct be *be, float *y, const float *x, const float *w, int64_t n,
                        int64_t n_rows, float eps)
{
    struct cpu_ctx *c = be->ctx;
    struct ew_job j = {.c = c, .y = y, .a = x, .b = w, .n = n_rows, .row_len = n, .eps = eps};
    int64_t n_tasks = ew_split(c, n_rows, n_rows * n, &j.per_task);
    be_cpu__pool_run(c->pool, rmsnorm_task, &j, n_tasks);
}

static void swiglu_task(void *ctx, int64_t task, int thread_id)
{
    (void)thread_id;
    const struct ew_job *j = ctx;
    int64_t i0, len;
    ew_range(j, task, &i0, &len);
    j->c->pr.swiglu(j->y + i0, j->a + i0, j->b + i0, len);
}

static void cpu_swiglu(struct be *be, float *y, const float *g, const float *u, int64_t n)
{
    struct cpu_ctx *c = be->ctx;
    struct ew_job j = {.c = c, .y = y, .a = g, .b = u, .n = n};
    int64_t n_tasks = ew_split(c, n, n, &j.per_task);
    be_cpu__pool_run(c->pool, swiglu_task, &j, n_tasks);
}

static void axpy_task(void *ctx, int64_t task, int thread_id)
{
    (void)thread_id;
    const struct ew_job *j = ctx;
    int64_t i0, len;
    ew_range(j, task, &i0, &len);
    j->c->pr.axpy(j->y + i0, j->a + i0, j->s, len);
}

static void cpu_axpy(struct be *be, float *y, const float *x, float a, int64_t n)
{
    struct cpu_ctx *c = be->ctx;
    struct ew_job j = {.c = c, .y = y, .a = x, .s = a, .n = n};
    int64_t n_tasks = ew_split(c, n, n, &j.per_task);
    be_cpu__pool_run(c->pool, axpy_task, &j, n_tasks);
}

static void cpu_get_rows(struct be *be, float *y, const void *table, enum be_type t, int64_t n_cols,
                         const int32_t *ids, int64_t n)
{
    (void)be;
    size_t rb = be_row_size(t, n_cols);
    for (int64_t i = 0; i < n; i++)
        be_dequant_row(t, (const uint8_t *)table + (size_t)ids[i] * rb, y + i * n_cols, n_cols);
}

/* ---- RoPE ---- */

struct rope_job {
    float *x;
    int32_t n_head, head_dim;
    const int32_t *pos;
    const struct be_rope *r;
    float theta_scale, corr0, corr1;
    int64_t n_tok, per_task;
};

static float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base)
{
    return (float)n_dims * logf((float)n_ctx_orig / (n_rot * 2.0f * (float)M_PI)) / (2.0f * logf(base));
}

static void rope_task(void *ctx, int64_t task, int thread_id)
{
    (void)thread_id;
    const struct rope_job *j = ctx;
    const struct be_rope *r = j->r;
    const int n_dims = r->n_rot;
    int64_t t1 = (task + 1) * j->per_task < j->n_tok ? (task + 1) * j->per_task : j->n_tok;
    for (int64_t t = task * j->per_task; t < t1; t++) {
        float theta = (float)j->pos[t];
        for (int i0 = 0; i0 < n_dims; i0 += 2) {
            /* YaRN: mix interpolated and extrapolated angles by dimension. */
            float theta_interp = r->freq_scale * theta;
            float th = theta_interp;
            float mscale = r->attn_factor;
            if (r->ext_factor != 0.0f) {
                float y = ((float)i0 / 2 - j->corr0) / fmaxf(0.001f, j->corr1 - j->corr0);
                float ramp = 1.0f - fminf(1.0f, fmaxf(0.0f, y));
                float mix = ramp * r->ext_factor;
                th = theta_interp * (1 - mix) + theta * mix;
                mscale *= 1.0f + 0.1f * logf(1.0f / r->freq_scale);
            }
            float cs = cosf(th) * mscale, sn = sinf(th) * mscale;
            theta *= j->theta_scale;
            int a = r->mode == BE_ROPE_NORM ? i0 : i0 / 2;
            int b = r->mode == BE_ROPE_NORM ? i0 + 1 : i0 / 2 + n_dims / 2;
            for (int32_t h = 0; h < j->n_head; h++) {
                float *v = j->x + (t * j->n_head + h) * j->head_dim;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * cs - x1 * sn;
                v[b] = x0 * sn + x1 * cs;
            }
        }
    }
}

static void cpu_rope(struct be *be, float *x, int64_t n_tok, int32_t n_head, int32_t head_dim,
                     const int32_t *pos, const struct be_rope *r)
{
    struct cpu_ctx *c = be->ctx;
    const int n_dims = r->n_rot;
    struct rope_job j = {
        .x = x, .n_head = n_head, .head_dim = head_dim, .pos = pos, .r = r, .n_tok = n_tok,
        .theta_scale = powf(r->base, -2.0f / (float)n_dims),
    };
    if (r->ext_factor != 0.0f) {
        j.corr0 = fmaxf(0.0f, floorf(yarn_corr_dim(n_dims, r->n_ctx_orig, r->beta_fast, r->base)));
        j.corr1 = fminf((float)(n_dims - 1), ceilf(yarn_corr_dim(n_dims, r->n_ctx_orig, r->beta_slow, r->base)));
    }
    int64_t n_tasks = 1;
    j.per_task = n_tok;
    if (c->n_threads > 1 && n_tok * n_head * n_dims >= EW_PAR_MIN) {
        n_tasks = n_tok < c->n_threads * 2 ? n_tok : c->n_threads * 2;
        j.per_task = (n_tok + n_tasks - 1) / n_tasks;
        n_tasks = (n_tok + j.per_task - 1) / j.per_task;
    }
    be_cpu__pool_run(c->pool, rope_task, &j, n_tasks);
}

/* ---- KV cache ---- */

struct kvs_job {
    const struct be_kv_layer *kv;
    const float *k, *v;
    int64_t row_len, per_task, n_tok;
    const int64_t *slots;
    be_cpu_act_fn conv; /* NULL: be_quant_row */
};

static void kv_store_task(void *ctx, int64_t task, int thread_id)
{
    (void)thread_id;
    const struct kvs_job *j = ctx;
    const struct be_kv_layer *kv = j->kv;
    int64_t t1 = (task + 1) * j->per_task < j->n_tok ? (task + 1) * j->per_task : j->n_tok;
    for (int64_t t = task * j->per_task; t < t1; t++) {
        uint8_t *kd = (uint8_t *)kv->k + (size_t)j->slots[t] * kv->row_bytes;
        uint8_t *vd = (uint8_t *)kv->v + (size_t)j->slots[t] * kv->row_bytes;
        const float *ks = j->k + t * j->row_len, *vs = j->v + t * j->row_len;
        if (kv->type == BE_TYPE_F32) {
            memcpy(kd, ks, (size_t)j->row_len * 4);
            memcpy(vd, vs, (size_t)j->row_len * 4);
        } else if (j->conv) {
            j->conv(ks, kd, j->row_len);
            j->conv(vs, vd, j->row_len);
        } else {
            be_quant_row(kv->type, ks, kd, j->row_len);
            be_quant_row(kv->type, vs, vd, j->row_len);
        }
    }
}

static void cpu_kv_store(struct be *be, const struct be_kv_layer *kv, const float *k, const float *v,
                         int64_t n_tok, int64_t row_len, const int64_t *slots)
{
    struct cpu_ctx *c = be->ctx;
    ASSERT(kv->type == BE_TYPE_F32 || kv->type == BE_TYPE_F16 || kv->type == BE_TYPE_Q8_0);
    struct kvs_job j = {
        .kv = kv, .k = k, .v = v, .row_len = row_len, .n_tok = n_tok, .slots = slots,
        .conv = c->kern && kv->type != BE_TYPE_F32 ? c->kern->act[kv->type] : NULL,
        .per_task = n_tok,
    };
    int64_t n_tasks = 1;
    if (c->n_threads > 1 && n_tok * row_len >= EW_PAR_MIN) {
        n_tasks = n_tok < c->n_threads * 2 ? n_tok : c->n_threads * 2;
        j.per_task = (n_tok + n_tasks - 1) / n_tasks;
        n_tasks = (n_tok + j.per_task - 1) / j.per_task;
    }
    be_cpu__pool_run(c->pool, kv_store_task, &j, n_tasks);
}

/* ---- attention ---- */

struct attn_job {
    struct cpu_ctx *c;
    float *out;
    const float *q;
    const struct be_attn *a;
    int64_t n_items, per_task; /* items (token, kv head), per task */
};

/* Position p's row of a sequence (block table bt) in a KV pool, at byte
 * offset off, and in *n how many rows from there on (at most max) lie in
 * the same block, one row_bytes apart: one table look-up and division per
 * block, not per position. */
static const uint8_t *kv_run(const struct be_kv_layer *kv, const void *base, const int32_t *bt, int64_t p,
                             size_t off, int64_t max, int *n)
{
    const int64_t in = p % kv->block_size;
    *n = (int)(kv->block_size - in < max ? kv->block_size - in : max);
    return (const uint8_t *)base + ((size_t)bt[p / kv->block_size] * (size_t)kv->block_size + (size_t)in) *
                                       kv->row_bytes + off;
}

/* The keys of item `item`'s first chunk of positions (what its scores read
 * first), requested ahead. */
static void attn_prefetch_keys(const struct attn_job *j, int64_t item)
{
    const struct be_attn *a = j->a;
    const struct be_kv_layer *kv = a->kv;
    const int64_t t = item / a->n_head_kv;
    const int32_t kh = (int32_t)(item % a->n_head_kv);
    const size_t head_off = be_row_size(kv->type, (int64_t)kh * a->head_dim);
    const size_t seg = be_row_size(kv->type, a->head_dim);
    const int64_t n = a->n_kv[t] < ATT_CHUNK ? a->n_kv[t] : ATT_CHUNK;
    for (int64_t p = 0; p < n;) {
        int nr;
        const uint8_t *kr = kv_run(kv, kv->k, a->block_tab[t], p, head_off, n - p, &nr);
        for (int r = 0; r < nr; r++, p++, kr += kv->row_bytes)
            for (size_t b = 0; b < seg; b += 64)
                __builtin_prefetch(kr + b, 0, 3);
    }
}

static void attn_item(const struct attn_job *j, int64_t task, int thread_id);

/* A task is a run of consecutive items (token, kv head): the next item's
 * keys are requested before this one is computed, so that their misses
 * overlap its work instead of stalling the next item's first scores. */
static void attn_task(void *ctx, int64_t task, int thread_id)
{
    const struct attn_job *j = ctx;
    const int64_t i0 = task * j->per_task, i1 = i0 + j->per_task < j->n_items ? i0 + j->per_task : j->n_items;
    for (int64_t i = i0; i < i1; i++) {
        if (i + 1 < i1)
            attn_prefetch_keys(j, i + 1);
        attn_item(j, i, thread_id);
    }
}

/* One item: token t's query heads of kv head kh, over its visible
 * positions, with the softmax kept online per chunk of positions: the
 * running maximum m, sum l and the output accumulators are rescaled once
 * per chunk. */
static void attn_item(const struct attn_job *j, int64_t task, int thread_id)
{
    const struct be_attn *a = j->a;
    const struct be_kv_layer *kv = a->kv;
    const struct prims *pr = &j->c->pr;
    const int32_t hd = a->head_dim, n_g = a->n_head / a->n_head_kv;
    const int64_t t = task / a->n_head_kv;
    const int32_t kh = (int32_t)(task % a->n_head_kv);
    const int32_t *bt = a->block_tab[t];
    const int64_t n = a->n_kv[t];
    const float *q = j->q + (t * a->n_head + (int64_t)kh * n_g) * hd;
    float *acc = j->out + (t * a->n_head + (int64_t)kh * n_g) * hd;
    const size_t head_off = be_row_size(kv->type, (int64_t)kh * hd);

    float *sc = j->c->scratch + (size_t)thread_id * j->c->scratch_len;
    int64_t ch = (int64_t)j->c->scratch_len / n_g;
    if (ch > ATT_CHUNK)
        ch = ATT_CHUNK;
    ASSERT(ch >= 1);
    const void *rows[ATT_CHUNK], *vrows[ATT_CHUNK];
    const size_t seg = be_row_size(kv->type, hd);
    float m[n_g];
    double l[n_g];
    for (int g = 0; g < n_g; g++) {
        m[g] = -INFINITY;
        l[g] = 0;
    }
    memset(acc, 0, (size_t)n_g * hd * sizeof(float));

    for (int64_t p0 = 0; p0 < n; p0 += ch) {
        const int cn = (int)(n - p0 < ch ? n - p0 : ch);
        /* The head's slices of the rows are small and scattered over the
         * pool's blocks, which the hardware prefetcher does not follow:
         * request the chunk's keys now, so that their misses overlap
         * instead of being waited for one by one, and its values once the
         * scores are done (both at once measured slower: too many misses
         * in flight). A block's rows are consecutive (kv_run: 16 tokens
         * x 96 positions, in cache, 50 -> 43 us a call). */
        for (int i = 0; i < cn;) {
            int nr;
            const uint8_t *kr = kv_run(kv, kv->k, bt, p0 + i, head_off, cn - i, &nr);
            const uint8_t *vr = kv_run(kv, kv->v, bt, p0 + i, head_off, cn - i, &nr);
            for (int r = 0; r < nr; r++, i++, kr += kv->row_bytes, vr += kv->row_bytes) {
                rows[i] = kr;
                vrows[i] = vr;
                for (size_t b = 0; b < seg; b += 64)
                    __builtin_prefetch(kr + b, 0, 3);
            }
        }
        /* hot: scores of the chunk; each key row is read once for the group */
        pr->attn_scores(kv->type, q, n_g, hd, rows, cn, sc, ch, a->scale);
        for (int i = 0; i < cn; i++)
            for (size_t b = 0; b < seg; b += 64)
                __builtin_prefetch((const uint8_t *)vrows[i] + b, 0, 3);
        for (int g = 0; g < n_g; g++) {
            float *sg = sc + g * ch;
            float mx = m[g];
            for (int i = 0; i < cn; i++)
                mx = sg[i] > mx ? sg[i] : mx;
            if (mx > m[g]) {
                if (l[g] != 0) {
                    float alpha = expf(m[g] - mx);
                    l[g] *= alpha;
                    pr->scale(acc + (int64_t)g * hd, alpha, hd);
                }
                m[g] = mx;
            }
            l[g] += pr->exp_shift(sg, m[g], cn);
        }
        /* hot: the weighted values; each value row read once for the group */
        pr->attn_acc(kv->type, acc, n_g, hd, sc, ch, vrows, cn);
    }
    for (int g = 0; g < n_g; g++)
        pr->scale(acc + (int64_t)g * hd, l[g] > 0 ? (float)(1.0 / l[g]) : 0.0f, hd);
}

static void cpu_attention(struct be *be, float *out, const float *q, int64_t n_tok, const struct be_attn *a)
{
    struct cpu_ctx *c = be->ctx;
    ASSERT(a->n_head % a->n_head_kv == 0);
    ASSERT(a->kv->type == BE_TYPE_F32 || a->kv->type == BE_TYPE_F16 || a->kv->type == BE_TYPE_Q8_0);
    ASSERT(a->kv->type != BE_TYPE_Q8_0 || a->head_dim % QK8_0 == 0);
    ASSERT(c->scratch && c->scratch_len >= (size_t)(a->n_head / a->n_head_kv));
    struct attn_job j = {.c = c, .out = out, .q = q, .a = a, .n_items = n_tok * a->n_head_kv};
    /* about ATT_TASKS_PER_THREAD runs a thread (sequences differ in length) */
    int64_t n_tasks = (int64_t)c->n_threads * ATT_TASKS_PER_THREAD;
    if (n_tasks > j.n_items)
        n_tasks = j.n_items;
    j.per_task = (j.n_items + n_tasks - 1) / n_tasks;
    be_cpu__pool_run(c->pool, attn_task, &j, (j.n_items + j.per_task - 1) / j.per_task);
}

/* ---- experts rewritten in place (be_ops.expert_pack) ----
 *
 * Where a type's stored panel (kernels' stored[]) takes exactly the bytes
 * of its 16 rows (Q4_K, Q6_K at the VNNI level), a resident expert matrix
 * is rewritten panel by panel into it, so that moe_ffn runs the panel GEMM
 * on it at every token count with no second copy. Each panel's rows are
 * copied to the thread's scratch first, then packed over themselves. */
struct xp_job {
    const struct be_cpu_gemm *g;
    uint8_t *w, *tmp;          /* tmp: one panel per thread */
    size_t wrow, panel;
    int64_t n_in, panels_per_task, n_panels;
};

static void xp_pack_task(void *ctx, int64_t task, int thread_id)
{
    const struct xp_job *j = ctx;
    uint8_t *tmp = j->tmp + (size_t)thread_id * j->panel;
    int64_t p0, p1;
    pp_span(task, j->panels_per_task, j->n_panels, &p0, &p1);
    for (int64_t p = p0; p < p1; p++) {
        uint8_t *pw = j->w + (size_t)p * j->panel;
        memcpy(tmp, pw, j->panel);
        j->g->pack(tmp, j->wrow, BE_CPU_GEMM_ROWS, j->n_in, pw);
    }
}

static int cpu_expert_pack(struct be *be, void *w, enum be_type wt, int64_t n_in, int64_t n_out, int64_t n_experts)
{
    struct cpu_ctx *c = be->ctx;
    const struct be_type_info *ti = be_type_info(wt);
    const struct be_cpu_gemm *g = c->kern ? &c->kern->stored[wt] : NULL;
    if (!ti || !g || !g->pack || !g->run_pf || n_in <= 0 || n_in % ti->blck || n_out <= 0 ||
        n_out % BE_CPU_GEMM_ROWS || n_experts <= 0)
        return 0;
    const size_t wrow = be_row_size(wt, n_in), panel = (size_t)BE_CPU_GEMM_ROWS * wrow;
    if ((size_t)g->bytes_per_blk * (size_t)(n_in / ti->blck) != panel)
        return 0; /* not the rows' size: no room in place */
    struct xp_job j = {.g = g, .w = w, .wrow = wrow, .panel = panel, .n_in = n_in,
                       .n_panels = n_experts * (n_out / BE_CPU_GEMM_ROWS)};
    j.tmp = malloc(panel * (size_t)c->n_threads);
    if (!j.tmp)
        return -ENOMEM;
    int64_t n_tasks = c->n_threads * 16;
    j.panels_per_task = pp_split(j.n_panels, &n_tasks);
    be_cpu__pool_run(c->pool, xp_pack_task, &j, n_tasks);
    free(j.tmp);
    return 1;
}

static bool cpu_supports_type(struct be *be, enum be_type t)
{
    (void)be;
    const struct be_type_info *ti = be_type_info(t);
    return ti && ti->weight;
}

/* ---- grouped MoE layer (kernels/cpu/moe.c) ---- */

static int cpu_reserve_moe(struct be *be, int64_t n_pairs, int64_t n_ff, int64_t n_embd)
{
    struct cpu_ctx *c = be->ctx;
    return be_cpu__moe_reserve(&c->moe, n_pairs, n_pairs, n_ff, n_embd);
}

static void cpu_moe_combine(struct be *be, float *y, int64_t n_tok, int64_t n_embd, int32_t n_pairs,
                            const int32_t *tok, const float *weight, const float *const *d)
{
    struct cpu_ctx *c = be->ctx;
    ASSERT(c->moe.mem != NULL);
    be_cpu__moe_combine(c->pool, &c->moe, y, n_tok, n_embd, n_pairs, tok, weight, d);
}

static void cpu_moe_ffn(struct be *be, float *y, const float *x, int64_t n_tok, const struct be_moe_layer *l)
{
    struct cpu_ctx *c = be->ctx;
    ASSERT(c->kern != NULL && c->moe.mem != NULL);
    be_cpu__moe_ffn(c->pool, c->kern, c->pr.swiglu, &c->moe, c->pack, c->pack_len, y, x, n_tok, l);
}

static const struct be_ops g_cpu_ops = {
    .free = cpu_free,
    .reserve = cpu_reserve,
    .matmul = cpu_matmul,
    .matmul_n = cpu_matmul_n,
    .prepack = cpu_prepack,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .axpy = cpu_axpy,
    .get_rows = cpu_get_rows,
    .supports_type = cpu_supports_type,
    .reserve_moe = cpu_reserve_moe,
    .moe_ffn = cpu_moe_ffn,
    .moe_combine = cpu_moe_combine,
    .expert_pack = cpu_expert_pack,
};

int be_cpu_init(struct be **out, const struct be_cpu_params *p)
{
    struct be *be = calloc(1, sizeof *be);
    struct cpu_ctx *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!be || !c) {
        free(be);
        free(c);
        return -ENOMEM;
    }
    int rc = be_cpu__pool_init(&c->pool, p ? p->n_threads : 0);
    if (rc != 0) {
        free(be);
        free(c);
        return rc;
    }
    c->n_threads = be_cpu__pool_threads(c->pool);
    enum be_cpu_isa isa = be_cpu__isa_detect();
    c->kern = be_cpu__kernels(isa);
    for (int i = (int)isa - 1; !c->kern && i >= 0; i--)
        c->kern = be_cpu__kernels((enum be_cpu_isa)i);
    c->pr = isa >= BE_CPU_ISA_AVX512 ? g_prims_avx512 : isa >= BE_CPU_ISA_AVX2 ? g_prims_avx2 : g_prims_plain;
    log_info("cpu", "kernels %s, %d thread%s", c->kern ? c->kern->isa_name : "reference",
             c->n_threads, c->n_threads == 1 ? "" : "s");
    be->ops = &g_cpu_ops;
    be->ctx = c;
    be->name = "cpu";
    *out = be;
    return 0;
}
