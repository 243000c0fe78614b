/* SPDX-License-Identifier: MIT */
/*
 * moe.c - the CPU backend's grouped MoE layer (be_ops.moe_ffn): all active
 * experts of one layer for a whole batch in four parallel phases, instead of
 * three small matmuls per expert:
 *   1. each token's row of x is converted to the gate/up activation format
 *      once and copied to each of its (expert, token) pairs' slots, a
 *      contiguous block per expert, so that the dot kernels see an expert's
 *      tokens side by side;
 *   2. gate and up: tasks are (expert, chunk of n_ff rows); each weight row
 *      is decoded once for all the tokens routed to that expert;
 *   3. h = silu(g) * u per (expert, token) pair, converted to the down
 *      activation format (by the gate/up task itself when one task covers
 *      an expert's whole n_ff);
 *   4. down: tasks are (expert, chunk of n_embd rows);
 *   5. each token sums its experts' outputs, weighted, in increasing expert
 *      order.
 * Invariants: every output element is computed by exactly one task, with the
 * same kernel calls whatever the thread count; a (expert, token) result does
 * not depend on which other tokens share the expert (the dot kernels are
 * bit-identical for every n_y), so a token's output does not depend on the
 * rest of the batch. No allocation: scratch is sized by reserve_moe().
 */
#include "kernels/cpu/impl.h"

#include "kernels/backend.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct moe_job {
    const struct be_moe_layer *l;
    const struct be_cpu_kernels *k;
    be_cpu_swiglu_fn swiglu;
    const float *x;
    float *y;
    int64_t n_tok;
    uint8_t *xa;           /* per pair: x row in the gate/up activation format */
    size_t xa_row;
    uint8_t *xb;           /* per pair: x row in the up format when it differs from gate's */
    size_t xb_row;
    float *g, *u;          /* per pair: n_ff */
    uint8_t *ha;           /* per pair: h in the down activation format */
    size_t ha_row;
    float *d;              /* per pair: n_embd */
    int32_t *tok_first;    /* per token: its first pair in tok_pairs */
    int32_t *tok_pairs;    /* pairs grouped by token, in increasing expert order */
    int32_t *order;        /* active experts by decreasing token count: the task order */
    int64_t chunk_ff, chunk_e;
    uint8_t *pack;         /* per-thread GEMM panel memory (pack_len bytes each), or NULL */
    size_t pack_len;
    int64_t tasks_per_ex_ff, tasks_per_ex_e;
};

/* From this many tokens on an expert, types with a GEMM pack their rows
 * into panels: measured on Zen 4 (1024 and 512 wide rows in cache), pack +
 * run of a 16-row panel costs less than the dot kernel from 2 tokens on
 * for Q4_K, Q6_K and Q8_0 (Q4_K: 22 vs 39 ns a row at 2 tokens, Q8_0: 30
 * vs 40). At one token the dot kernel is kept: it streams the weights and
 * single-stream decode measured slower with the GEMM there. */
#define MOE_GEMM_MIN_TOK 2
/* Up to this many tokens on an expert, types with a small-batch kernel
 * (impl.h's rows: Q4_K, Q6_K, Q8_0 at the VNNI level) use it before either
 * of the above, at any token count from 1: it decodes 4 rows at once into
 * registers with no panel pass through memory. Measured on Zen 5, one
 * thread, rows from DRAM, ns a row at 1/2/3 tokens: Q4_K (1024 wide) 18 /
 * 19 / 22 vs dot 36 / 49 / 52 and pack + GEMM 33 / 45 / 54; Q6_K (512 wide)
 * 12 / - / 15 vs dot 16 / 19 / 23 and GEMM 17 / 19 / 19; Q8_0 (1024 wide)
 * 29 / 33 / 39 vs dot 36 / 46 / 59 and GEMM 59 / 71 / 80. On medium-q4_k_m
 * this made single-stream decode ~9 % faster too (rows vs dot at 1 token). */
#define MOE_ROWS_MAX_TOK 16
/* Experts rewritten by expert_pack: the fused gate/up requests each
 * matrix's first panel at once, non-temporal as be_cpu__stored_run does. */
#define MOE_PF_LOC 0
/* Prefetch distance of the dot path (backend_cpu.c's MM_PREFETCH_BYTES). */
#define MOE_PREFETCH_BYTES 2048

/* Rows [r0, r1) of matrix w (type wt, n_in wide) against np contiguous
 * activation rows (act_stride bytes apart); results into
 * out[p * out_stride + r]. With MOE_GEMM_MIN_TOK or more rows and a GEMM for the type,
 * 16-row panels are packed once into this thread's panel memory and run
 * against groups of up to 8 activation rows; otherwise each weight row is
 * decoded once per group of BE_CPU_MAX_NY rows. When the matrix was
 * rewritten by expert_pack (packed), its stored panels run at every token
 * count. All give the same bits (impl.h), so the result never depends on
 * how many tokens share the expert. */
static void rows_dot(const struct moe_job *j, int tid, enum be_type wt, const void *w, bool packed, int64_t n_in,
                     int64_t r0, int64_t r1, const uint8_t *act, size_t act_stride, int32_t np,
                     float *out, int64_t out_stride)
{
    const struct be_cpu_kernels *k = j->k;
    const size_t wrow = be_row_size(wt, n_in);
    const struct be_cpu_gemm *g = &k->gemm[wt];
    if (packed) { /* stored panels of 16 * wrow bytes; r0 is a whole panel (the task chunks are) */
        be_cpu__stored_run(&k->stored[wt], n_in, w, (size_t)BE_CPU_GEMM_ROWS * wrow, r0, r1, act, act_stride, np,
                           out, (size_t)out_stride);
        return;
    }
    if (k->rows[wt] && np <= MOE_ROWS_MAX_TOK) {
        k->rows[wt](n_in, (const uint8_t *)w + (size_t)r0 * wrow, wrow, (int)(r1 - r0), act, act_stride, np,
                    out + r0, (size_t)out_stride);
        return;
    }
    if (np >= MOE_GEMM_MIN_TOK && g->pack && j->pack) {
        const size_t panel = ((size_t)g->bytes_per_blk * (size_t)(n_in / be_type_info(wt)->blck) + 63) / 64 * 64;
        if (panel <= j->pack_len) {
            uint8_t *pk = j->pack + (size_t)tid * j->pack_len;
            for (int64_t o = r0; o < r1; o += BE_CPU_GEMM_ROWS) {
                const int nr = r1 - o < BE_CPU_GEMM_ROWS ? (int)(r1 - o) : BE_CPU_GEMM_ROWS;
                /* The next panel's rows (contiguous) come from memory while
                 * this one is packed and run: the expert's weights are read
                 * from DRAM once per step. Measured on Zen 4 (Q4_K, 2
                 * tokens, one thread streaming): 76 ns a row without, 36
                 * with; two or four panels ahead were slower (46, 61). */
                const int64_t o2 = o + BE_CPU_GEMM_ROWS;
                if (o2 < r1) {
                    const int64_t e2 = o2 + BE_CPU_GEMM_ROWS < r1 ? o2 + BE_CPU_GEMM_ROWS : r1;
                    const uint8_t *pf = (const uint8_t *)w + (size_t)o2 * wrow;
                    for (size_t b = 0; b < (size_t)(e2 - o2) * wrow; b += 64)
                        __builtin_prefetch(pf + b, 0, 3);
                }
                g->pack((const uint8_t *)w + (size_t)o * wrow, wrow, nr, n_in, pk);
                for (int32_t t0 = 0; t0 < np; t0 += BE_CPU_GEMM_NY) {
                    const int ny = np - t0 < BE_CPU_GEMM_NY ? np - t0 : BE_CPU_GEMM_NY;
                    g->run(n_in, pk, act + (size_t)t0 * act_stride, act_stride, ny,
                           out + (int64_t)t0 * out_stride + o, (size_t)out_stride, nr);
                }
            }
            return;
        }
    }
    be_cpu_dot_fn dot = k->dot[wt];
    float s[BE_CPU_MAX_NY];
    /* Software prefetch MOE_PREFETCH_BYTES (at least 2 rows) ahead, as the
     * dense matmul does: the expert's rows come from DRAM. */
    const int64_t pf_rows = wrow >= MOE_PREFETCH_BYTES / 2 ? 2 : (int64_t)((MOE_PREFETCH_BYTES + wrow - 1) / wrow);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *wr = (const uint8_t *)w + (size_t)r * wrow;
        if (r + pf_rows < r1)
            for (size_t b = 0; b < wrow; b += 64)
                __builtin_prefetch(wr + (size_t)pf_rows * wrow + b, 0, 3);
        for (int32_t p = 0; p < np;) {
            int32_t n_y = np - p < BE_CPU_MAX_NY ? np - p : BE_CPU_MAX_NY;
            dot(n_in, wr, act + (size_t)p * act_stride, act_stride, n_y, s);
            for (int32_t q = 0; q < n_y; q++)
                out[(int64_t)(p + q) * out_stride + r] = s[q];
            p += n_y;
        }
    }
}

static void convert(const struct be_cpu_kernels *k, enum be_type at, const float *x, uint8_t *dst, int64_t n)
{
    if (at == BE_TYPE_F32)
        memcpy(dst, x, (size_t)n * 4);
    else
        k->act[at](x, dst, n);
}

/* Token t's row of x, converted once into its first pair's slot and copied
 * to its other pairs' (a token has up to k pairs; converting per pair
 * repeated the same quantization k times). */
static void conv_x_task(void *ctx, int64_t t, int tid)
{
    (void)tid;
    struct moe_job *j = ctx;
    const struct be_moe_layer *l = j->l;
    const int32_t q0 = j->tok_first[t], q1 = j->tok_first[t + 1];
    if (q0 == q1)
        return;
    const float *x = j->x + t * l->n_embd;
    const int32_t p0 = j->tok_pairs[q0];
    convert(j->k, be_type_info(l->gate_type)->vec_dot_type, x, j->xa + (size_t)p0 * j->xa_row, l->n_embd);
    if (j->xb)
        convert(j->k, be_type_info(l->up_type)->vec_dot_type, x, j->xb + (size_t)p0 * j->xb_row, l->n_embd);
    for (int32_t q = q0 + 1; q < q1; q++) {
        const int32_t p = j->tok_pairs[q];
        memcpy(j->xa + (size_t)p * j->xa_row, j->xa + (size_t)p0 * j->xa_row, j->xa_row);
        if (j->xb)
            memcpy(j->xb + (size_t)p * j->xb_row, j->xb + (size_t)p0 * j->xb_row, j->xb_row);
    }
}

static void swiglu_task(void *ctx, int64_t p, int tid)
{
    (void)tid;
    struct moe_job *j = ctx;
    const struct be_moe_layer *l = j->l;
    float *g = j->g + (size_t)p * l->n_ff;
    const float *u = j->u + (size_t)p * l->n_ff;
    j->swiglu(g, g, u, l->n_ff);
    convert(j->k, be_type_info(l->down_type)->vec_dot_type, g, j->ha + (size_t)p * j->ha_row, l->n_ff);
}

/* Gate and up of expert a when both were rewritten by expert_pack and one
 * task has all n_ff rows: per 16-row panel and token group, gate and up
 * into a small buffer and h = silu(g) * u straight into g's rows (the same
 * values as the separate phases: the same kernels, swiglu per element), so
 * u is never written nor g and u read back; then h in the down format. */
static void gate_up_packed(const struct moe_job *j, int64_t a, int32_t p0, int32_t np)
{
    const struct be_moe_layer *l = j->l;
    const struct be_cpu_gemm *gg = &j->k->stored[l->gate_type], *ug = &j->k->stored[l->up_type];
    const int64_t E = l->n_embd, FF = l->n_ff;
    const size_t gpanel = (size_t)BE_CPU_GEMM_ROWS * be_row_size(l->gate_type, E),
                 upanel = (size_t)BE_CPU_GEMM_ROWS * be_row_size(l->up_type, E);
    const uint8_t *gw = l->gate[a], *uw = l->up[a];
    const uint8_t *xa = j->xa + (size_t)p0 * j->xa_row;
    const uint8_t *xb = j->xb ? j->xb + (size_t)p0 * j->xb_row : xa;
    const size_t xbr = j->xb ? j->xb_row : j->xa_row;
    _Alignas(64) float gt[BE_CPU_GEMM_NY][BE_CPU_GEMM_ROWS], ut[BE_CPU_GEMM_NY][BE_CPU_GEMM_ROWS];
    for (size_t b = 0; b < gpanel; b += 64)
        __builtin_prefetch(gw + b, 0, MOE_PF_LOC);
    for (size_t b = 0; b < upanel; b += 64)
        __builtin_prefetch(uw + b, 0, MOE_PF_LOC);
    for (int64_t o = 0; o < FF; o += BE_CPU_GEMM_ROWS, gw += gpanel, uw += upanel) {
        const int nr = FF - o < BE_CPU_GEMM_ROWS ? (int)(FF - o) : BE_CPU_GEMM_ROWS;
        const bool more = o + BE_CPU_GEMM_ROWS < FF;
        for (int32_t t0 = 0; t0 < np; t0 += BE_CPU_GEMM_NY) {
            const int ny = np - t0 < BE_CPU_GEMM_NY ? np - t0 : BE_CPU_GEMM_NY;
            gg->run_pf(E, gw, xa + (size_t)t0 * j->xa_row, j->xa_row, ny, &gt[0][0], BE_CPU_GEMM_ROWS, nr,
                       t0 == 0 && more ? gw + gpanel : NULL, gpanel);
            ug->run_pf(E, uw, xb + (size_t)t0 * xbr, xbr, ny, &ut[0][0], BE_CPU_GEMM_ROWS, nr,
                       t0 == 0 && more ? uw + upanel : NULL, upanel);
            for (int t = 0; t < ny; t++)
                j->swiglu(j->g + (size_t)(p0 + t0 + t) * FF + o, gt[t], ut[t], nr);
        }
    }
    for (int32_t p = p0; p < p0 + np; p++)
        convert(j->k, be_type_info(l->down_type)->vec_dot_type, j->g + (size_t)p * FF,
                j->ha + (size_t)p * j->ha_row, FF);
}

static void gate_up_task(void *ctx, int64_t task, int tid)
{
    struct moe_job *j = ctx;
    const struct be_moe_layer *l = j->l;
    int64_t a = j->order[task / j->tasks_per_ex_ff], c = task % j->tasks_per_ex_ff;
    int64_t r0 = c * j->chunk_ff, r1 = r0 + j->chunk_ff < l->n_ff ? r0 + j->chunk_ff : l->n_ff;
    int32_t p0 = l->offset[a], np = l->offset[a + 1] - p0;
    if (l->gate_packed && l->up_packed && j->tasks_per_ex_ff == 1) {
        gate_up_packed(j, a, p0, np);
        return;
    }
    rows_dot(j, tid, l->gate_type, l->gate[a], l->gate_packed, l->n_embd, r0, r1, j->xa + (size_t)p0 * j->xa_row, j->xa_row,
             np, j->g + (size_t)p0 * l->n_ff, l->n_ff);
    if (j->xb)
        rows_dot(j, tid, l->up_type, l->up[a], l->up_packed, l->n_embd, r0, r1, j->xb + (size_t)p0 * j->xb_row, j->xb_row,
                 np, j->u + (size_t)p0 * l->n_ff, l->n_ff);
    else
        rows_dot(j, tid, l->up_type, l->up[a], l->up_packed, l->n_embd, r0, r1, j->xa + (size_t)p0 * j->xa_row, j->xa_row,
                 np, j->u + (size_t)p0 * l->n_ff, l->n_ff);
    /* A task that computed whole rows of g and u finishes its pairs' phase
     * 3 itself, while they are in cache, and the phase's own run (a pool
     * barrier, 27-50 us a layer at 16 tokens) is skipped. */
    if (j->tasks_per_ex_ff == 1)
        for (int32_t p = p0; p < p0 + np; p++)
            swiglu_task(j, p, tid);
}

static void down_task(void *ctx, int64_t task, int tid)
{
    struct moe_job *j = ctx;
    const struct be_moe_layer *l = j->l;
    int64_t a = j->order[task / j->tasks_per_ex_e], c = task % j->tasks_per_ex_e;
    int64_t r0 = c * j->chunk_e, r1 = r0 + j->chunk_e < l->n_embd ? r0 + j->chunk_e : l->n_embd;
    int32_t p0 = l->offset[a], np = l->offset[a + 1] - p0;
    rows_dot(j, tid, l->down_type, l->down[a], l->down_packed, l->n_ff, r0, r1, j->ha + (size_t)p0 * j->ha_row, j->ha_row,
             np, j->d + (size_t)p0 * l->n_embd, l->n_embd);
}

/* The one weighted sum of expert outputs (moe_ffn and moe_combine share it,
 * so that their results are the same bits). */
typedef float moe_v4 __attribute__((vector_size(16), aligned(4), may_alias));
static inline void add_weighted(float *y, float w, const float *d, int64_t n)
{
    /* 4 lanes at a time (the scalar loop was not vectorized: y and d may
     * alias); the same multiply, then add, per value. */
    int64_t i = 0;
    const moe_v4 wv = {w, w, w, w};
    for (; i + 8 <= n; i += 8) {
        moe_v4 *yv = (moe_v4 *)(void *)(y + i);
        const moe_v4 *dv = (const moe_v4 *)(const void *)(d + i);
        const moe_v4 a = dv[0] * wv, b = dv[1] * wv;
        yv[0] += a;
        yv[1] += b;
    }
    for (; i < n; i++)
        y[i] += w * d[i];
}

static void combine_task(void *ctx, int64_t t, int tid)
{
    (void)tid;
    struct moe_job *j = ctx;
    const struct be_moe_layer *l = j->l;
    float *y = j->y + t * l->n_embd;
    for (int32_t q = j->tok_first[t]; q < j->tok_first[t + 1]; q++) {
        int32_t p = j->tok_pairs[q];
        add_weighted(y, l->weight[p], j->d + (size_t)p * l->n_embd, l->n_embd);
    }
}

struct combine_job {
    float *y;
    int64_t n_embd;
    const int32_t *tok, *first, *pairs;
    const float *weight;
    const float *const *d;
};

static void combine_ext_task(void *ctx, int64_t t, int tid)
{
    (void)tid;
    struct combine_job *j = ctx;
    float *y = j->y + t * j->n_embd;
    for (int32_t q = j->first[t]; q < j->first[t + 1]; q++) {
        int32_t p = j->pairs[q];
        add_weighted(y, j->weight[p], j->d[p], j->n_embd);
    }
}

void be_cpu__moe_combine(struct be_cpu_pool *pool, struct be_cpu_moe_scratch *s, float *y, int64_t n_tok,
                         int64_t n_embd, int32_t n_pairs, const int32_t *tok, const float *weight,
                         const float *const *d)
{
    if (n_pairs <= 0)
        return;
    /* Index arrays after the op's other scratch would need its sizes; the
     * combine runs alone, so it uses the start of the scratch. */
    int32_t *first = s->mem, *pos = first + n_tok + 1, *pairs = pos + n_tok;
    ASSERT((size_t)(2 * n_tok + 1 + n_pairs) * 4 <= s->bytes);
    memset(first, 0, ((size_t)n_tok + 1) * 4);
    for (int32_t p = 0; p < n_pairs; p++)
        first[tok[p] + 1]++;
    for (int64_t t = 0; t < n_tok; t++)
        first[t + 1] += first[t];
    memcpy(pos, first, (size_t)n_tok * 4);
    for (int32_t p = 0; p < n_pairs; p++)
        pairs[pos[tok[p]]++] = p;
    struct combine_job j = {.y = y, .n_embd = n_embd, .tok = tok, .first = first, .pairs = pairs,
                            .weight = weight, .d = d};
    be_cpu__pool_run(pool, combine_ext_task, &j, n_tok);
}

int be_cpu__moe_reserve(struct be_cpu_moe_scratch *s, int64_t n_pairs, int64_t n_tok, int64_t n_ff,
                        int64_t n_embd)
{
    /* Activation rows take at most 4 bytes per value (f32). */
    size_t need = (size_t)n_pairs * (size_t)(2 * n_ff + n_embd) * 4   /* g, u, d */
                  + (size_t)n_pairs * (size_t)n_ff * 4 + 64          /* ha */
                  + 2 * ((size_t)n_pairs * (size_t)n_embd * 4 + 64)  /* xa, xb */
                  + ((size_t)n_tok * 2 + 1 + (size_t)n_pairs) * 4 + 64
                  + (size_t)n_pairs * 4 + 64;                       /* order (n_active <= n_pairs) */
    need = (need + 63) / 64 * 64;
    if (need <= s->bytes)
        return 0;
    void *m = aligned_alloc(64, need);
    if (!m)
        return -ENOMEM;
    free(s->mem);
    s->mem = m;
    s->bytes = need;
    return 0;
}

void be_cpu__moe_ffn(struct be_cpu_pool *pool, const struct be_cpu_kernels *k, be_cpu_swiglu_fn swiglu,
                     struct be_cpu_moe_scratch *s, uint8_t *pack, size_t pack_len, float *y,
                     const float *x, int64_t n_tok, const struct be_moe_layer *l)
{
    if (l->n_active == 0)
        return;
    const int64_t P = l->offset[l->n_active];
    struct moe_job j = {.l = l, .k = k, .swiglu = swiglu, .x = x, .y = y, .n_tok = n_tok, .pack = pack, .pack_len = pack_len};
    uint8_t *m = s->mem;
#define TAKE(ptr, type, bytes) (ptr = (type)m, m += ((size_t)(bytes) + 63) / 64 * 64)
    TAKE(j.g, float *, (size_t)P * (size_t)l->n_ff * 4);
    TAKE(j.u, float *, (size_t)P * (size_t)l->n_ff * 4);
    if (l->d_out)
        j.d = l->d_out;
    else
        TAKE(j.d, float *, (size_t)P * (size_t)l->n_embd * 4);
    j.ha_row = be_row_size(be_type_info(l->down_type)->vec_dot_type, l->n_ff);
    TAKE(j.ha, uint8_t *, (size_t)P * j.ha_row);
    j.xa_row = be_row_size(be_type_info(l->gate_type)->vec_dot_type, l->n_embd);
    TAKE(j.xa, uint8_t *, (size_t)P * j.xa_row);
    if (be_type_info(l->up_type)->vec_dot_type != be_type_info(l->gate_type)->vec_dot_type) {
        j.xb_row = be_row_size(be_type_info(l->up_type)->vec_dot_type, l->n_embd);
        TAKE(j.xb, uint8_t *, (size_t)P * j.xb_row);
    }
    int32_t *pos;
    TAKE(j.tok_first, int32_t *, ((size_t)n_tok + 1) * 4);
    TAKE(pos, int32_t *, (size_t)n_tok * 4);
    TAKE(j.tok_pairs, int32_t *, (size_t)P * 4);
    TAKE(j.order, int32_t *, (size_t)l->n_active * 4);
#undef TAKE
    ASSERT((size_t)(m - (uint8_t *)s->mem) <= s->bytes);

    /* Pairs grouped by token (counting sort), in increasing expert order. */
    memset(j.tok_first, 0, ((size_t)n_tok + 1) * 4);
    for (int64_t p = 0; p < P; p++)
        j.tok_first[l->tok[p] + 1]++;
    for (int64_t t = 0; t < n_tok; t++)
        j.tok_first[t + 1] += j.tok_first[t];
    memcpy(pos, j.tok_first, (size_t)n_tok * 4);
    for (int64_t p = 0; p < P; p++)
        j.tok_pairs[pos[l->tok[p]]++] = (int32_t)p;

    /* Experts with the most tokens first (insertion sort, ties by index):
     * tasks are claimed in order, so the last ones are the cheapest and the
     * threads finish a phase closer together. Which task computes what does
     * not change any result. */
    for (int32_t a = 0; a < l->n_active; a++) {
        const int32_t na = l->offset[a + 1] - l->offset[a];
        int32_t b = a;
        for (; b > 0 && l->offset[j.order[b - 1] + 1] - l->offset[j.order[b - 1]] < na; b--)
            j.order[b] = j.order[b - 1];
        j.order[b] = a;
    }

    /* Tasks: (expert, chunk of rows), chunks halved until there are a few
     * tasks per thread, so uneven expert loads still balance. */
    const int n_thr = be_cpu__pool_threads(pool);
    j.chunk_ff = l->n_ff;
    while (j.chunk_ff > 32 && (int64_t)l->n_active * ((l->n_ff + j.chunk_ff - 1) / j.chunk_ff) < 4 * n_thr)
        j.chunk_ff = ((j.chunk_ff + 1) / 2 + 15) / 16 * 16; /* whole GEMM panels */
    j.tasks_per_ex_ff = (l->n_ff + j.chunk_ff - 1) / j.chunk_ff;
    j.chunk_e = l->n_embd;
    while (j.chunk_e > 32 && (int64_t)l->n_active * ((l->n_embd + j.chunk_e - 1) / j.chunk_e) < 4 * n_thr)
        j.chunk_e = ((j.chunk_e + 1) / 2 + 15) / 16 * 16;
    j.tasks_per_ex_e = (l->n_embd + j.chunk_e - 1) / j.chunk_e;

    be_cpu__pool_run(pool, conv_x_task, &j, n_tok);
    be_cpu__pool_run(pool, gate_up_task, &j, l->n_active * j.tasks_per_ex_ff);
    if (j.tasks_per_ex_ff > 1)
        be_cpu__pool_run(pool, swiglu_task, &j, P);
    be_cpu__pool_run(pool, down_task, &j, l->n_active * j.tasks_per_ex_e);
    if (!l->d_out)
        be_cpu__pool_run(pool, combine_task, &j, n_tok);
}
