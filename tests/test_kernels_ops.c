/* SPDX-License-Identifier: MIT */
/*
 * test_kernels_ops.c - every op of the CPU backend, at 1 and 2 threads,
 * against a plain reference computed here in double precision, and the
 * thread pool it runs on.
 *
 * Tolerances are per dtype and stated beside each check; they are what float
 * accumulation in a different order can explain, and far below what a wrong
 * index, scale or block layout produces. Matmul results must also be
 * bit-identical at 1 and 2 threads (the MoE output-identity tests of the
 * engine depend on ops being deterministic), and a token's row must be the
 * same bits whatever the batch around it (n_tok = 1, 4, 8, 13, 64: the
 * dot path, the GEMM path and their token-group tails).
 */
#include "tests/testutil.h"

#include "kernels/backend.h"
#include "kernels/cpu/impl.h"
#include "kernels/quant.h"

#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static const int g_threads[] = {1, 2};
#define N_THREADS_CASES 2

static struct be *make_be(int n_threads, int64_t n_tok_max, int64_t n_in_max, int64_t n_ctx_max)
{
    struct be *be = NULL;
    struct be_cpu_params p = {.n_threads = n_threads};
    ASSERT_OK(be_cpu_init(&be, &p));
    ASSERT_OK(be->ops->reserve(be, n_tok_max, n_in_max, n_ctx_max));
    return be;
}

static void fill_rand(float *x, int64_t n, uint64_t *s, float amp)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = amp * test_rand_f(s);
}

/* ---- pool ---- */

struct pool_probe {
    _Atomic int *hits;
    int n_threads;
    _Atomic int bad_thread;
};

static void probe_task(void *ctx, int64_t task, int thread_id)
{
    struct pool_probe *pp = ctx;
    if (thread_id < 0 || thread_id >= pp->n_threads)
        atomic_store(&pp->bad_thread, 1);
    atomic_fetch_add(&pp->hits[task], 1);
}

static void test_pool(void **state)
{
    (void)state;
    static const int threads[] = {1, 2, 3, 5};
    static const int64_t counts[] = {0, 1, 2, 3, 4, 7, 1000, 100000};
    _Atomic int *hits = calloc(100000, sizeof *hits);
    for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++) {
        struct be_cpu_pool *pool = NULL;
        ASSERT_OK(be_cpu__pool_init(&pool, threads[ti]));
        assert_int_equal(be_cpu__pool_threads(pool), threads[ti]);
        struct pool_probe pp = {.hits = hits, .n_threads = threads[ti]};
        for (int rep = 0; rep < 3; rep++) {
            for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
                int64_t n = counts[ci];
                memset(hits, 0, 100000 * sizeof *hits);
                be_cpu__pool_run(pool, probe_task, &pp, n);
                for (int64_t i = 0; i < n; i++)
                    if (hits[i] != 1)
                        fail_msg("threads %d tasks %lld: task %lld ran %d times", threads[ti],
                                 (long long)n, (long long)i, (int)hits[i]);
            }
        }
        /* Many small runs back to back, including after the workers slept. */
        for (int rep = 0; rep < 20000; rep++) {
            int64_t n = 1 + rep % 5;
            memset(hits, 0, 8 * sizeof *hits);
            be_cpu__pool_run(pool, probe_task, &pp, n);
            for (int64_t i = 0; i < n; i++)
                if (hits[i] != 1)
                    fail_msg("threads %d run %d: task %lld ran %d times", threads[ti], rep,
                             (long long)i, (int)hits[i]);
            if (rep % 5000 == 4999)
                usleep(2000); /* let the workers fall asleep */
        }
        assert_int_equal(atomic_load(&pp.bad_thread), 0);
        be_cpu__pool_free(pool);
    }
    be_cpu__pool_free(NULL);
    assert_true(be_cpu__cpu_count() >= 1);
    free(hits);
}

/* ---- matmul ---- */

static const enum be_type g_wtypes[] = {
    BE_TYPE_F32,  BE_TYPE_F16,  BE_TYPE_BF16, BE_TYPE_Q8_0, BE_TYPE_Q4_0,
    BE_TYPE_Q4_1, BE_TYPE_Q5_0, BE_TYPE_Q5_1, BE_TYPE_Q2_K, BE_TYPE_Q3_K,
    BE_TYPE_Q4_K, BE_TYPE_Q5_K, BE_TYPE_Q6_K, BE_TYPE_IQ4_NL, BE_TYPE_IQ4_XS,
};

/* The Q8_1 partner's min term uses the block's stored s (f16) instead of
 * d * sum(qs): the difference the reference dot product has by definition. */
static double q8_1_min_correction(enum be_type wt, const void *w, const void *a, int64_t n)
{
    double corr = 0;
    const struct block_q8_1 *y = a;
    for (int64_t b = 0; b < n / 32; b++) {
        float m = wt == BE_TYPE_Q4_1 ? be_f16_to_f32(((const struct block_q4_1 *)w)[b].m)
                                     : be_f16_to_f32(((const struct block_q5_1 *)w)[b].m);
        int sum = 0;
        for (int i = 0; i < 32; i++)
            sum += y[b].qs[i];
        corr += (double)m * ((double)be_f16_to_f32(y[b].s) - (double)be_f16_to_f32(y[b].d) * sum);
    }
    return corr;
}

static void check_matmul(enum be_type wt, int64_t n_in, int64_t n_out, uint64_t seed)
{
    static const int64_t toks[] = {1, 3, 4, 5, 17, 64};
    const int64_t n_tok_max = 64;
    const struct be_type_info *ti = be_type_info(wt);
    const enum be_type vt = ti->vec_dot_type;
    const size_t wrow = be_row_size(wt, n_in), arow = be_row_size(vt, n_in);
    uint64_t s = seed;

    float *wf = malloc((size_t)n_out * n_in * sizeof(float));
    uint8_t *w = malloc((size_t)n_out * wrow);
    double *wd = malloc((size_t)n_out * n_in * sizeof(double));
    float *x = malloc((size_t)n_tok_max * n_in * sizeof(float));
    uint8_t *xa = malloc((size_t)n_tok_max * arow);
    double *xd = malloc((size_t)n_tok_max * n_in * sizeof(double));
    float *tmp = malloc((size_t)n_in * sizeof(float));
    float *y[N_THREADS_CASES];

    fill_rand(wf, n_out * n_in, &s, 1.0f);
    fill_rand(x, n_tok_max * n_in, &s, 2.0f);
    for (int64_t o = 0; o < n_out; o++) {
        be_quant_row(wt, wf + o * n_in, w + o * wrow, n_in);
        be_dequant_row(wt, w + o * wrow, tmp, n_in);
        for (int64_t i = 0; i < n_in; i++)
            wd[o * n_in + i] = tmp[i];
    }
    for (int64_t t = 0; t < n_tok_max; t++) {
        be_quant_row(vt, x + t * n_in, xa + t * arow, n_in);
        be_dequant_row(vt, xa + t * arow, tmp, n_in);
        for (int64_t i = 0; i < n_in; i++)
            xd[t * n_in + i] = tmp[i];
    }

    for (size_t ki = 0; ki < sizeof toks / sizeof toks[0]; ki++) {
        const int64_t n_tok = toks[ki];
        for (int th = 0; th < N_THREADS_CASES; th++) {
            struct be *be = make_be(g_threads[th], n_tok_max, n_in, 16);
            y[th] = malloc((size_t)n_tok * n_out * sizeof(float));
            be->ops->matmul(be, y[th], w, wt, n_in, n_out, x, n_tok);
            be_free(be);
            for (int64_t t = 0; t < n_tok; t++) {
                for (int64_t o = 0; o < n_out; o++) {
                    double ref = 0, mag = 0;
                    for (int64_t i = 0; i < n_in; i++) {
                        double p = wd[o * n_in + i] * xd[t * n_in + i];
                        ref += p;
                        mag += fabs(p);
                    }
                    if (vt == BE_TYPE_Q8_1)
                        ref += q8_1_min_correction(wt, w + o * wrow, xa + t * arow, n_in);
                    /* 1e-4 of sum|w*x|: float accumulation over n_in terms */
                    double tol = 1e-4 * mag + 1e-6;
                    double got = y[th][t * n_out + o];
                    if (!(fabs(got - ref) <= tol))
                        fail_msg("matmul %s n_in %lld n_out %lld n_tok %lld threads %d: y[%lld][%lld] = %.7g, "
                                 "ref %.7g, |diff| %.3g > tol %.3g",
                                 ti->name, (long long)n_in, (long long)n_out, (long long)n_tok,
                                 g_threads[th], (long long)t, (long long)o, got, ref,
                                 fabs(got - ref), tol);
                }
            }
        }
        /* Deterministic: the same bits at every thread count. */
        if (memcmp(y[0], y[1], (size_t)n_tok * n_out * sizeof(float)) != 0)
            fail_msg("matmul %s n_tok %lld: 1 and 2 threads differ", ti->name, (long long)n_tok);
        for (int th = 0; th < N_THREADS_CASES; th++)
            free(y[th]);
    }
    free(wf);
    free(w);
    free(wd);
    free(x);
    free(xa);
    free(xd);
    free(tmp);
}

static void test_matmul_types(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof g_wtypes / sizeof g_wtypes[0]; i++) {
        check_matmul(g_wtypes[i], 512, 37, 1000 + i);
        check_matmul(g_wtypes[i], 256, 1, 2000 + i);
    }
}

static void test_matmul_shapes(void **state)
{
    (void)state;
    /* Several L2 tiles of rows, odd row counts, an n_in no block divides. */
    check_matmul(BE_TYPE_F32, 1024, 301, 7);
    check_matmul(BE_TYPE_F32, 67, 13, 8);
    check_matmul(BE_TYPE_Q8_0, 2048, 263, 9);
    check_matmul(BE_TYPE_Q4_K, 1024, 129, 10);
}

/* A random n_out x n_in matrix of type wt (its floats in *wf, quantized
 * rows in *w) and n_tok_max random activation rows (*x). */
static void mm_operands(enum be_type wt, int64_t n_in, int64_t n_out, int64_t n_tok_max, uint64_t *s, float **wf,
                        uint8_t **w, float **x)
{
    const size_t wrow = be_row_size(wt, n_in);
    *wf = malloc((size_t)n_out * n_in * sizeof(float));
    *w = malloc((size_t)n_out * wrow);
    *x = malloc((size_t)n_tok_max * n_in * sizeof(float));
    assert_true(*wf && *w && *x);
    fill_rand(*wf, n_out * n_in, s, 1.0f);
    fill_rand(*x, n_tok_max * n_in, s, 2.0f);
    for (int64_t o = 0; o < n_out; o++)
        be_quant_row(wt, *wf + o * n_in, *w + o * wrow, n_in);
}

/* Batch invariance: each token's output row of a matmul over n_tok tokens
 * equals, bit for bit, the row the token gets in a matmul of its own. */
static void check_matmul_batch(enum be_type wt, int64_t n_in, int64_t n_out, uint64_t seed)
{
    static const int64_t toks[] = {1, 4, 8, 13, 64};
    const int64_t n_tok_max = 64;
    const struct be_type_info *ti = be_type_info(wt);
    uint64_t s = seed;
    float *wf, *x;
    uint8_t *w;
    mm_operands(wt, n_in, n_out, n_tok_max, &s, &wf, &w, &x);
    float *alone = malloc((size_t)n_tok_max * n_out * sizeof(float));
    float *y = malloc((size_t)n_tok_max * n_out * sizeof(float));
    for (int th = 0; th < N_THREADS_CASES; th++) {
        struct be *be = make_be(g_threads[th], n_tok_max, n_in, 16);
        if (th == 0)
            for (int64_t t = 0; t < n_tok_max; t++)
                be->ops->matmul(be, alone + t * n_out, w, wt, n_in, n_out, x + t * n_in, 1);
        for (size_t ki = 0; ki < sizeof toks / sizeof toks[0]; ki++) {
            const int64_t n_tok = toks[ki];
            be->ops->matmul(be, y, w, wt, n_in, n_out, x, n_tok);
            for (int64_t t = 0; t < n_tok; t++)
                if (memcmp(y + t * n_out, alone + t * n_out, (size_t)n_out * sizeof(float)) != 0)
                    fail_msg("matmul %s n_in %lld n_out %lld: token %lld of n_tok %lld at %d threads "
                             "differs from its n_tok = 1 row",
                             ti->name, (long long)n_in, (long long)n_out, (long long)t,
                             (long long)n_tok, g_threads[th]);
        }
        be_free(be);
    }
    free(wf);
    free(w);
    free(x);
    free(alone);
    free(y);
}

static void test_matmul_batch_invariance(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof g_wtypes / sizeof g_wtypes[0]; i++)
        check_matmul_batch(g_wtypes[i], 512, 37, 3000 + i);
    /* Many panels and tasks, a partial last panel, long rows. */
    check_matmul_batch(BE_TYPE_Q4_K, 2048, 301, 11);
    check_matmul_batch(BE_TYPE_Q6_K, 1024, 263, 12);
    check_matmul_batch(BE_TYPE_Q5_K, 256, 1000, 13);
}

/* be_ops.prepack: a matrix kept in the batch layout gives the same bits as
 * the matrix as stored, at every token count and thread count; and the copy
 * is what matmul reads (changing the original afterwards changes nothing). */
static void check_prepacked(enum be_type wt, int64_t n_in, int64_t n_out, uint64_t seed, int *n_packed)
{
    static const int64_t toks[] = {1, 2, 3, 8, 9, 16, 17, 64};
    const int64_t n_tok_max = 64;
    const size_t wrow = be_row_size(wt, n_in);
    uint64_t s = seed;
    float *wf, *x;
    uint8_t *w;
    mm_operands(wt, n_in, n_out, n_tok_max, &s, &wf, &w, &x);
    float *want = malloc((size_t)n_tok_max * n_out * sizeof(float));
    float *got = malloc((size_t)n_tok_max * n_out * sizeof(float));
    for (int th = 0; th < N_THREADS_CASES; th++) {
        struct be *plain = make_be(g_threads[th], n_tok_max, n_in, 16);
        struct be *pp = make_be(g_threads[th], n_tok_max, n_in, 16);
        assert_non_null(pp->ops->prepack);
        const int64_t bytes = pp->ops->prepack(pp, w, wt, n_in, n_out);
        assert_true(bytes >= 0);
        if (bytes > 0) {
            /* about the type's own size: at most a panel's padding more */
            assert_true((size_t)bytes <= (size_t)n_out * wrow * 11 / 10 + 16 * wrow + 4096);
            assert_int_equal(pp->ops->prepack(pp, w, wt, n_in, n_out), 0); /* once per matrix */
            if (th == 0)
                (*n_packed)++;
        }
        for (size_t ki = 0; ki < sizeof toks / sizeof toks[0]; ki++) {
            const int64_t n_tok = toks[ki];
            plain->ops->matmul(plain, want, w, wt, n_in, n_out, x, n_tok);
            pp->ops->matmul(pp, got, w, wt, n_in, n_out, x, n_tok);
            if (memcmp(want, got, (size_t)n_tok * n_out * sizeof(float)) != 0)
                fail_msg("prepacked %s n_in %lld n_out %lld n_tok %lld threads %d differs from the matrix as stored",
                         be_type_name(wt), (long long)n_in, (long long)n_out, (long long)n_tok, g_threads[th]);
        }
        if (bytes > 0) { /* negative control: the stored copy is the one read */
            uint8_t *w2 = malloc((size_t)n_out * wrow);
            memcpy(w2, w, (size_t)n_out * wrow);
            float *wf2 = malloc((size_t)n_in * sizeof(float));
            for (int64_t o = 0; o < n_out; o++) {
                fill_rand(wf2, n_in, &s, 1.0f);
                be_quant_row(wt, wf2, w + o * wrow, n_in);
            }
            free(wf2);
            for (int64_t n_tok = 1; n_tok <= 16; n_tok += 15) { /* one token reads the copy too */
                pp->ops->matmul(pp, got, w, wt, n_in, n_out, x, n_tok);
                plain->ops->matmul(plain, want, w, wt, n_in, n_out, x, n_tok);
                assert_true(memcmp(want, got, (size_t)n_tok * n_out * sizeof(float)) != 0);
            }
            memcpy(w, w2, (size_t)n_out * wrow);
            free(w2);
        }
        be_free(plain);
        be_free(pp);
    }
    free(wf);
    free(w);
    free(x);
    free(want);
    free(got);
}

static void test_matmul_prepacked(void **state)
{
    (void)state;
    int n_packed = 0;
    for (size_t i = 0; i < sizeof g_wtypes / sizeof g_wtypes[0]; i++)
        check_prepacked(g_wtypes[i], 512, 37, 4000 + i, &n_packed);
    /* the output matrix's shape class: many panels and tasks, a partial last panel */
    check_prepacked(BE_TYPE_Q6_K, 1024, 1000 + 7, 21, &n_packed);
    check_prepacked(BE_TYPE_Q6_K, 256, 1, 22, &n_packed);
    /* where this CPU's kernels have a stored panel, the op must use it
     * (else every comparison above was plain matmul against itself) */
    const struct be_cpu_kernels *k = be_cpu__kernels(be_cpu__isa_detect());
    if (k && k->stored[BE_TYPE_Q6_K].pack) {
        int want = 2;
        for (size_t i = 0; i < sizeof g_wtypes / sizeof g_wtypes[0]; i++)
            want += k->stored[g_wtypes[i]].pack != NULL;
        assert_int_equal(n_packed, want);
    }
    printf("prepacked: %d matrices kept in the batch layout (0 without AVX-512 VNNI)\n", n_packed);
}

/* be_ops.matmul_n: three matrices on the same activations (the attention
 * projections' shape: Q4_K, Q4_K, Q6_K, q 1024 and k, v 256 rows) give the
 * bits of three matmul calls, with all three prepacked (one shared run),
 * with one not (the fallback), at several token counts. */
static void test_matmul_n(void **state)
{
    (void)state;
    static const enum be_type types[3] = {BE_TYPE_Q4_K, BE_TYPE_Q4_K, BE_TYPE_Q6_K};
    static const int64_t n_outs[3] = {1024, 256, 256}, toks[] = {1, 2, 5, 16, 33};
    const int64_t n_in = 512, n_tok_max = 33;
    uint64_t s = 77;
    float *wf[3], *x[3], *want[3], *got[3];
    uint8_t *w[3];
    for (int i = 0; i < 3; i++) {
        mm_operands(types[i], n_in, n_outs[i], n_tok_max, &s, &wf[i], &w[i], &x[i]);
        want[i] = malloc((size_t)n_tok_max * n_outs[i] * sizeof(float));
        got[i] = malloc((size_t)n_tok_max * n_outs[i] * sizeof(float));
    }
    for (int th = 0; th < N_THREADS_CASES; th++) {
        for (int n_pp = 2; n_pp <= 3; n_pp++) { /* the first n_pp matrices prepacked */
            struct be *be = make_be(g_threads[th], n_tok_max, n_in, 16);
            assert_non_null(be->ops->matmul_n);
            for (int i = 0; i < n_pp; i++)
                assert_true(be->ops->prepack(be, w[i], types[i], n_in, n_outs[i]) >= 0);
            for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++) {
                const int64_t n_tok = toks[k];
                struct be_mm mm[3];
                for (int i = 0; i < 3; i++) {
                    be->ops->matmul(be, want[i], w[i], types[i], n_in, n_outs[i], x[0], n_tok);
                    memset(got[i], 0xff, (size_t)n_tok * n_outs[i] * sizeof(float));
                    mm[i] = (struct be_mm){got[i], w[i], types[i], n_outs[i]};
                }
                be->ops->matmul_n(be, 3, mm, n_in, x[0], n_tok);
                for (int i = 0; i < 3; i++)
                    if (memcmp(want[i], got[i], (size_t)n_tok * n_outs[i] * sizeof(float)) != 0)
                        fail_msg("matmul_n matrix %d (%s), %lld tokens, %d prepacked, threads %d: other bits than "
                                 "matmul", i, be_type_name(types[i]), (long long)n_tok, n_pp, g_threads[th]);
            }
            be_free(be);
        }
    }
    for (int i = 0; i < 3; i++) {
        free(wf[i]);
        free(w[i]);
        free(x[i]);
        free(want[i]);
        free(got[i]);
    }
}

/* ---- attention ---- */

struct attn_case {
    int32_t n_head, n_head_kv, head_dim, block_size;
    enum be_type kv_type;
    double tol; /* absolute, outputs are O(1) */
};

/* Token t of the batch: sequence tok_seq[t] at position tok_pos[t]. */
static const int g_seq_len[] = {37, 5, 300};
static const int g_tok_seq[] = {0, 0, 0, 1, 2, 2, 2, 0};
static const int g_tok_pos[] = {36, 20, 0, 4, 299, 128, 127, 35};
#define ATT_N_TOK 8
#define ATT_N_BLOCKS 64

static void check_attention(const struct attn_case *ac, uint64_t seed)
{
    const int32_t hd = ac->head_dim, nh = ac->n_head, nkv = ac->n_head_kv, bs = ac->block_size;
    const int64_t row_len = (int64_t)nkv * hd;
    const size_t row_bytes = be_row_size(ac->kv_type, row_len);
    const int64_t n_slots = (int64_t)ATT_N_BLOCKS * bs;
    uint64_t s = seed;
    uint8_t *kc = calloc((size_t)n_slots, row_bytes), *vc = calloc((size_t)n_slots, row_bytes);
    struct be_kv_layer kv = {.type = ac->kv_type, .block_size = bs, .row_bytes = row_bytes, .k = kc, .v = vc};

    /* Block tables: a shuffled, non-contiguous assignment of pool blocks. */
    int32_t perm[ATT_N_BLOCKS];
    for (int i = 0; i < ATT_N_BLOCKS; i++)
        perm[i] = i;
    for (int i = ATT_N_BLOCKS - 1; i > 0; i--) {
        int k = (int)(test_rand_u64(&s) % (uint64_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[k];
        perm[k] = t;
    }
    int32_t tabs[3][ATT_N_BLOCKS];
    int used = 0;
    float *row = malloc((size_t)row_len * sizeof(float));
    for (int q = 0; q < 3; q++) {
        int nb = (g_seq_len[q] + bs - 1) / bs;
        for (int b = 0; b < nb; b++)
            tabs[q][b] = perm[used++];
        assert_true(used <= ATT_N_BLOCKS);
        for (int p = 0; p < g_seq_len[q]; p++) {
            int64_t slot = (int64_t)tabs[q][p / bs] * bs + p % bs;
            fill_rand(row, row_len, &s, 1.0f);
            be_quant_row(ac->kv_type, row, kc + slot * row_bytes, row_len);
            fill_rand(row, row_len, &s, 1.0f);
            be_quant_row(ac->kv_type, row, vc + slot * row_bytes, row_len);
        }
    }
    const int32_t *bt[ATT_N_TOK];
    int32_t n_kv[ATT_N_TOK];
    for (int t = 0; t < ATT_N_TOK; t++) {
        bt[t] = tabs[g_tok_seq[t]];
        n_kv[t] = g_tok_pos[t] + 1;
    }
    float *q = malloc((size_t)ATT_N_TOK * nh * hd * sizeof(float));
    /* Large enough logits that the softmax is peaked and the running max moves. */
    fill_rand(q, (int64_t)ATT_N_TOK * nh * hd, &s, 3.0f);
    struct be_attn a = {.n_head = nh, .n_head_kv = nkv, .head_dim = hd,
                        .scale = 1.0f / sqrtf((float)hd), .kv = &kv, .block_tab = bt, .n_kv = n_kv};

    /* Reference: two passes in double over the dequantized cache. */
    double *ref = calloc((size_t)ATT_N_TOK * nh * hd, sizeof(double));
    float *kf = malloc((size_t)row_len * sizeof(float)), *vf = malloc((size_t)row_len * sizeof(float));
    double *sc = malloc(400 * sizeof(double));
    for (int t = 0; t < ATT_N_TOK; t++) {
        for (int h = 0; h < nh; h++) {
            int kh = h / (nh / nkv);
            const float *qh = q + ((int64_t)t * nh + h) * hd;
            double mx = -INFINITY, sum = 0;
            for (int p = 0; p < n_kv[t]; p++) {
                int64_t slot = (int64_t)bt[t][p / bs] * bs + p % bs;
                be_dequant_row(ac->kv_type, kc + slot * row_bytes, kf, row_len);
                double d = 0;
                for (int i = 0; i < hd; i++)
                    d += (double)qh[i] * kf[kh * hd + i];
                sc[p] = d * a.scale;
                mx = sc[p] > mx ? sc[p] : mx;
            }
            for (int p = 0; p < n_kv[t]; p++)
                sum += (sc[p] = exp(sc[p] - mx));
            double *o = ref + ((int64_t)t * nh + h) * hd;
            for (int p = 0; p < n_kv[t]; p++) {
                int64_t slot = (int64_t)bt[t][p / bs] * bs + p % bs;
                be_dequant_row(ac->kv_type, vc + slot * row_bytes, vf, row_len);
                for (int i = 0; i < hd; i++)
                    o[i] += sc[p] / sum * vf[kh * hd + i];
            }
        }
    }

    float *out[N_THREADS_CASES];
    for (int th = 0; th < N_THREADS_CASES; th++) {
        struct be *be = make_be(g_threads[th], ATT_N_TOK, (int64_t)nh * hd, 512);
        out[th] = malloc((size_t)ATT_N_TOK * nh * hd * sizeof(float));
        memset(out[th], 0xff, (size_t)ATT_N_TOK * nh * hd * sizeof(float)); /* NaN */
        be->ops->attention(be, out[th], q, ATT_N_TOK, &a);
        be_free(be);
        for (int64_t i = 0; i < (int64_t)ATT_N_TOK * nh * hd; i++)
            if (!(fabs(out[th][i] - ref[i]) <= ac->tol))
                fail_msg("attention %s heads %d/%d hd %d threads %d: out[%lld] = %.7g, ref %.7g, "
                         "|diff| %.3g > tol %.3g",
                         be_type_name(ac->kv_type), nh, nkv, hd, g_threads[th], (long long)i,
                         out[th][i], ref[i], fabs(out[th][i] - ref[i]), ac->tol);
    }
    if (memcmp(out[0], out[1], (size_t)ATT_N_TOK * nh * hd * sizeof(float)) != 0)
        fail_msg("attention %s: 1 and 2 threads differ", be_type_name(ac->kv_type));
    for (int th = 0; th < N_THREADS_CASES; th++)
        free(out[th]);
    free(kc);
    free(vc);
    free(row);
    free(q);
    free(ref);
    free(kf);
    free(vf);
    free(sc);
}

static void test_attention(void **state)
{
    (void)state;
    /* The reference reads the same stored (converted) cache, so only the
     * arithmetic differs: 1e-5 absolute for every KV type. */
    const struct attn_case cases[] = {
        {8, 2, 64, 16, BE_TYPE_F32, 1e-5},
        {8, 2, 64, 16, BE_TYPE_F16, 1e-5},
        {8, 2, 64, 16, BE_TYPE_Q8_0, 1e-5},
        {4, 4, 32, 32, BE_TYPE_F16, 1e-5},  /* no GQA */
        {16, 2, 128, 8, BE_TYPE_F32, 1e-5}, /* groups of 8 */
        {6, 3, 96, 16, BE_TYPE_Q8_0, 1e-5},
        {6, 1, 48, 16, BE_TYPE_F16, 1e-5}, /* 4 + 2 heads, 3 blocks of 16 values */
        {3, 1, 40, 16, BE_TYPE_F32, 1e-5}, /* 2 + 1 heads; 40 is no multiple of 16 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_attention(&cases[i], 300 + i);
}

/* ---- RoPE ---- */

static double yarn_corr_dim_d(int n_dims, int n_ctx_orig, double n_rot, double base)
{
    return n_dims * log(n_ctx_orig / (n_rot * 2 * M_PI)) / (2 * log(base));
}

static void check_rope(const struct be_rope *r, int32_t n_head, int32_t hd, uint64_t seed)
{
    const int64_t n_tok = 64;
    const int64_t n = n_tok * n_head * hd;
    uint64_t s = seed;
    float *x = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
    double *ref = malloc((size_t)n * sizeof(double));
    int32_t pos[64];
    for (int t = 0; t < n_tok; t++)
        pos[t] = (int32_t)(test_rand_u64(&s) % 600);
    fill_rand(x, n, &s, 1.0f);

    const int nd = r->n_rot;
    double corr0 = 0, corr1 = 0;
    if (r->ext_factor != 0) {
        corr0 = fmax(0, floor(yarn_corr_dim_d(nd, r->n_ctx_orig, r->beta_fast, r->base)));
        corr1 = fmin(nd - 1, ceil(yarn_corr_dim_d(nd, r->n_ctx_orig, r->beta_slow, r->base)));
    }
    for (int64_t i = 0; i < n; i++)
        ref[i] = x[i];
    for (int t = 0; t < n_tok; t++) {
        for (int i0 = 0; i0 < nd; i0 += 2) {
            double theta = pos[t] * pow(r->base, -(double)i0 / nd);
            double th = r->freq_scale * theta, msc = r->attn_factor;
            if (r->ext_factor != 0) {
                double yy = (i0 / 2 - corr0) / fmax(0.001, corr1 - corr0);
                double mix = (1 - fmin(1, fmax(0, yy))) * r->ext_factor;
                th = r->freq_scale * theta * (1 - mix) + theta * mix;
                msc *= 1 + 0.1 * log(1.0 / r->freq_scale);
            }
            int ia = r->mode == BE_ROPE_NORM ? i0 : i0 / 2;
            int ib = r->mode == BE_ROPE_NORM ? i0 + 1 : i0 / 2 + nd / 2;
            for (int h = 0; h < n_head; h++) {
                double *v = ref + ((int64_t)t * n_head + h) * hd;
                double x0 = v[ia], x1 = v[ib];
                v[ia] = (x0 * cos(th) - x1 * sin(th)) * msc;
                v[ib] = (x0 * sin(th) + x1 * cos(th)) * msc;
            }
        }
    }
    for (int th = 0; th < N_THREADS_CASES; th++) {
        struct be *be = make_be(g_threads[th], n_tok, (int64_t)n_head * hd, 16);
        memcpy(y, x, (size_t)n * sizeof(float));
        be->ops->rope(be, y, n_tok, n_head, hd, pos, r);
        be_free(be);
        for (int64_t i = 0; i < n; i++) {
            int t = (int)(i / ((int64_t)n_head * hd));
            /* The float angle (pos * base^(-i/d) by repeated products, as
             * ggml computes it) is off by ~1e-7 * pos radians. */
            double tol = 1e-5 + 4e-7 * pos[t];
            if (!(fabs(y[i] - ref[i]) <= tol))
                fail_msg("rope mode %d ext %g threads %d: y[%lld] = %.7g, ref %.7g (pos %d)",
                         r->mode, r->ext_factor, g_threads[th], (long long)i, y[i], ref[i], pos[t]);
        }
    }
    free(x);
    free(y);
    free(ref);
}

static void test_rope(void **state)
{
    (void)state;
    struct be_rope r = {.mode = BE_ROPE_NORM, .n_rot = 64, .base = 10000.0f, .freq_scale = 1.0f,
                        .attn_factor = 1.0f, .beta_fast = 32.0f, .beta_slow = 1.0f, .n_ctx_orig = 4096};
    check_rope(&r, 8, 64, 1);
    r.mode = BE_ROPE_NEOX;
    check_rope(&r, 8, 64, 2);
    r.n_rot = 32; /* partial rotation: the rest of the head stays */
    check_rope(&r, 4, 64, 3);
    r.mode = BE_ROPE_NORM;
    check_rope(&r, 4, 64, 4);
    /* YaRN */
    struct be_rope y = {.mode = BE_ROPE_NEOX, .n_rot = 128, .base = 1000000.0f, .freq_scale = 0.25f,
                        .ext_factor = 1.0f, .attn_factor = 1.0f, .beta_fast = 32.0f, .beta_slow = 1.0f,
                        .n_ctx_orig = 32768};
    check_rope(&y, 4, 128, 5);
    y.mode = BE_ROPE_NORM;
    y.ext_factor = 0.5f;
    y.attn_factor = 0.9f;
    check_rope(&y, 4, 128, 6);
}

/* ---- elementwise ---- */

static void test_rmsnorm(void **state)
{
    (void)state;
    const int64_t n = 1024, rows = 64;
    uint64_t s = 11;
    float *x = malloc(n * rows * sizeof(float)), *w = malloc(n * sizeof(float));
    float *y = malloc(n * rows * sizeof(float));
    fill_rand(x, n * rows, &s, 3.0f);
    fill_rand(w, n, &s, 2.0f);
    for (int th = 0; th < N_THREADS_CASES; th++) {
        for (int use_w = 0; use_w < 2; use_w++) {
            for (int64_t nr = 1; nr <= rows; nr += rows - 1) {
                struct be *be = make_be(g_threads[th], rows, n, 16);
                be->ops->rmsnorm(be, y, x, use_w ? w : NULL, n, nr, 1e-6f);
                for (int64_t r = 0; r < nr; r++) {
                    double ss = 0;
                    for (int64_t i = 0; i < n; i++)
                        ss += (double)x[r * n + i] * x[r * n + i];
                    double sc = 1 / sqrt(ss / n + 1e-6);
                    for (int64_t i = 0; i < n; i++) {
                        double ref = x[r * n + i] * sc * (use_w ? w[i] : 1);
                        ASSERT_NEAR(y[r * n + i], ref, 2e-6 * fabs(ref) + 1e-7); /* f32: ~3 ulp */
                    }
                }
                /* In place. */
                float *z = malloc(n * nr * sizeof(float));
                memcpy(z, x, n * nr * sizeof(float));
                be->ops->rmsnorm(be, z, z, use_w ? w : NULL, n, nr, 1e-6f);
                assert_memory_equal(z, y, n * nr * sizeof(float));
                free(z);
                be_free(be);
            }
        }
    }
    free(x);
    free(w);
    free(y);
}

static void test_swiglu_axpy(void **state)
{
    (void)state;
    static const int64_t sizes[] = {1, 7, 8, 33, 1000, 100003};
    uint64_t s = 12;
    const int64_t nmax = 100003;
    float *g = malloc(nmax * sizeof(float)), *u = malloc(nmax * sizeof(float));
    float *y = malloc(nmax * sizeof(float)), *y0 = malloc(nmax * sizeof(float));
    fill_rand(g, nmax, &s, 12.0f);
    fill_rand(u, nmax, &s, 2.0f);
    g[0] = -100.0f; /* exp overflows here in float */
    g[1] = 100.0f;
    fill_rand(y0, nmax, &s, 1.0f);
    for (int th = 0; th < N_THREADS_CASES; th++) {
        struct be *be = make_be(g_threads[th], 1, 16, 16);
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            int64_t n = sizes[k];
            be->ops->swiglu(be, y, g, u, n);
            for (int64_t i = 0; i < n; i++) {
                double ref = g[i] / (1 + exp(-(double)g[i])) * u[i];
                ASSERT_NEAR(y[i], ref, 1e-6 * fabs(ref) + 1e-30); /* f32 with exp: ~8 ulp */
            }
            memcpy(y, y0, n * sizeof(float));
            be->ops->axpy(be, y, u, -0.75f, n);
            for (int64_t i = 0; i < n; i++) {
                double ref = (double)y0[i] - 0.75 * u[i];
                ASSERT_NEAR(y[i], ref, 2e-7 * (fabs(y0[i]) + fabs(0.75 * u[i]))); /* one rounding */
            }
        }
        be_free(be);
    }
    free(g);
    free(u);
    free(y);
    free(y0);
}

static void test_get_rows(void **state)
{
    (void)state;
    static const enum be_type types[] = {BE_TYPE_F32, BE_TYPE_F16, BE_TYPE_BF16, BE_TYPE_Q8_0,
                                         BE_TYPE_Q4_K, BE_TYPE_Q6_K};
    const int64_t n_cols = 512, n_rows = 20;
    const int32_t ids[] = {3, 0, 19, 3, 7};
    uint64_t s = 13;
    float *src = malloc(n_rows * n_cols * sizeof(float)), *y = malloc(5 * n_cols * sizeof(float));
    float *ref = malloc(n_cols * sizeof(float));
    fill_rand(src, n_rows * n_cols, &s, 1.0f);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        size_t rb = be_row_size(types[k], n_cols);
        uint8_t *tab = malloc(rb * n_rows);
        for (int64_t r = 0; r < n_rows; r++)
            be_quant_row(types[k], src + r * n_cols, tab + r * rb, n_cols);
        for (int th = 0; th < N_THREADS_CASES; th++) {
            struct be *be = make_be(g_threads[th], 1, n_cols, 16);
            be->ops->get_rows(be, y, tab, types[k], n_cols, ids, 5);
            be_free(be);
            for (int i = 0; i < 5; i++) {
                be_dequant_row(types[k], tab + (size_t)ids[i] * rb, ref, n_cols);
                assert_memory_equal(y + i * n_cols, ref, n_cols * sizeof(float)); /* exact */
            }
        }
        free(tab);
    }
    free(src);
    free(y);
    free(ref);
}

static void test_kv_store(void **state)
{
    (void)state;
    static const enum be_type types[] = {BE_TYPE_F32, BE_TYPE_F16, BE_TYPE_Q8_0};
    const int64_t row_len = 512, n_tok = 80, n_slots = 256;
    uint64_t s = 14;
    float *k = malloc(n_tok * row_len * sizeof(float)), *v = malloc(n_tok * row_len * sizeof(float));
    float *back = malloc(row_len * sizeof(float));
    int64_t slots[80];
    for (int t = 0; t < n_tok; t++)
        slots[t] = (t * 97 + 13) % n_slots; /* distinct, scattered */
    fill_rand(k, n_tok * row_len, &s, 4.0f);
    fill_rand(v, n_tok * row_len, &s, 0.5f);
    for (size_t ti = 0; ti < 3; ti++) {
        const enum be_type t = types[ti];
        size_t rb = be_row_size(t, row_len);
        for (int th = 0; th < N_THREADS_CASES; th++) {
            uint8_t *kc = calloc(n_slots, rb), *vc = calloc(n_slots, rb);
            struct be_kv_layer kv = {.type = t, .block_size = 16, .row_bytes = rb, .k = kc, .v = vc};
            struct be *be = make_be(g_threads[th], n_tok, row_len, 16);
            be->ops->kv_store(be, &kv, k, v, n_tok, row_len, slots);
            be_free(be);
            for (int tok = 0; tok < n_tok; tok++) {
                for (int which = 0; which < 2; which++) {
                    const float *src = (which ? v : k) + tok * row_len;
                    be_dequant_row(t, (which ? vc : kc) + slots[tok] * rb, back, row_len);
                    for (int64_t i = 0; i < row_len; i++) {
                        double tol;
                        if (t == BE_TYPE_F32) {
                            tol = 0;
                        } else if (t == BE_TYPE_F16) {
                            tol = fabs(src[i]) * (1.0 / 2048) + 1e-7; /* half an f16 ulp */
                        } else { /* Q8_0: half a step of the scale amax/127, plus the
                                  * f16 rounding of the scale times 127 */
                            double amax = 0;
                            int64_t b0 = i / 32 * 32;
                            for (int64_t jj = b0; jj < b0 + 32; jj++)
                                amax = fmax(amax, fabs(src[jj]));
                            tol = amax / 127 * (0.5 + 127.0 / 2048) * (1 + 1e-3) + 1e-6;
                        }
                        if (!(fabs(back[i] - src[i]) <= tol))
                            fail_msg("kv_store %s threads %d tok %d: %g stored as %g", be_type_name(t),
                                     g_threads[th], tok, src[i], back[i]);
                    }
                }
            }
            /* Slots not written stay zero. */
            for (int64_t sl = 0; sl < n_slots; sl++) {
                bool written = false;
                for (int tok = 0; tok < n_tok; tok++)
                    written |= slots[tok] == sl;
                if (!written)
                    for (size_t b = 0; b < rb; b++)
                        assert_int_equal(kc[sl * rb + b] | vc[sl * rb + b], 0);
            }
            free(kc);
            free(vc);
        }
    }
    free(k);
    free(v);
    free(back);
}

/* ---- grouped MoE layer ---- */

/* Copies of the n_ex experts of one matrix (n_out rows of n_in), rewritten
 * by expert_pack; *rc gets its answer, which must be 1 exactly where this
 * CPU's kernels have a stored panel of the type (the rows' own size). */
static uint8_t *packed_copy(struct be *be, const uint8_t *w, enum be_type t, int64_t n_in, int64_t n_out, int n_ex,
                            int *rc)
{
    const size_t bytes = (size_t)n_ex * (size_t)n_out * be_row_size(t, n_in);
    uint8_t *c = malloc(bytes);
    memcpy(c, w, bytes);
    *rc = be->ops->expert_pack(be, c, t, n_in, n_out, n_ex);
    const struct be_cpu_kernels *k = be_cpu__kernels(be_cpu__isa_detect());
    assert_int_equal(*rc, k && k->stored[t].pack ? 1 : 0);
    if (*rc == 1) /* a real rewrite, not the rows as they were */
        assert_true(memcmp(c, w, bytes) != 0);
    else
        assert_memory_equal(c, w, bytes);
    return c;
}

/* expert_pack: the layer l (its experts at gw/uw/dw, NE of them) computed
 * from rewritten copies must give y's bits; then every token on experts 0
 * and 1 (T tokens each: a full token group of 8 and a partial one), packed
 * against as stored. */
static void check_moe_packed(struct be *be, const struct be_moe_layer *l, const uint8_t *gw, const uint8_t *uw,
                             const uint8_t *dw, int n_ex, const float *x, const float *y)
{
    const int64_t E = l->n_embd, FF = l->n_ff, T = l->offset[l->n_active] / 2;
    int rg, ru, rd;
    uint8_t *g2 = packed_copy(be, gw, l->gate_type, E, FF, n_ex, &rg);
    uint8_t *u2 = packed_copy(be, uw, l->up_type, E, FF, n_ex, &ru);
    uint8_t *d2 = packed_copy(be, dw, l->down_type, FF, E, n_ex, &rd);
    const size_t gs = (size_t)FF * be_row_size(l->gate_type, E), us = (size_t)FF * be_row_size(l->up_type, E),
                 ds = (size_t)E * be_row_size(l->down_type, FF);
    const void *gp[16], *up[16], *dp[16];
    assert_true(l->n_active <= 16);
    for (int32_t a = 0; a < l->n_active; a++) {
        gp[a] = g2 + ((const uint8_t *)l->gate[a] - gw);
        up[a] = u2 + ((const uint8_t *)l->up[a] - uw);
        dp[a] = d2 + ((const uint8_t *)l->down[a] - dw);
    }
    struct be_moe_layer lp = *l;
    lp.gate = gp;
    lp.up = up;
    lp.down = dp;
    lp.gate_packed = rg == 1;
    lp.up_packed = ru == 1;
    lp.down_packed = rd == 1;
    float *yp = calloc((size_t)T * E, sizeof(float)), *ys = calloc((size_t)T * E, sizeof(float));
    be->ops->moe_ffn(be, yp, x, T, &lp);
    if (memcmp(yp, y, sizeof(float) * (size_t)T * E) != 0)
        fail_msg("moe %s/%s: experts rewritten by expert_pack give other bits", be_type_info(l->gate_type)->name,
                 be_type_info(l->down_type)->name);
    /* every token on experts 0 and 1 */
    int32_t off[3] = {0, (int32_t)T, 2 * (int32_t)T}, tok[64];
    float wt[64];
    assert_true(2 * T <= 64);
    for (int32_t p = 0; p < 2 * T; p++) {
        tok[p] = p % (int32_t)T;
        wt[p] = 0.3f + 0.05f * (float)(p % 7);
    }
    const void *g0[2] = {gw, gw + gs}, *u0[2] = {uw, uw + us}, *d0[2] = {dw, dw + ds};
    const void *g1[2] = {g2, g2 + gs}, *u1[2] = {u2, u2 + us}, *d1[2] = {d2, d2 + ds};
    struct be_moe_layer la = {.n_embd = E, .n_ff = FF, .gate_type = l->gate_type, .up_type = l->up_type,
                              .down_type = l->down_type, .n_active = 2, .gate = g0, .up = u0, .down = d0,
                              .offset = off, .tok = tok, .weight = wt};
    memset(ys, 0, sizeof(float) * (size_t)T * E);
    be->ops->moe_ffn(be, ys, x, T, &la);
    struct be_moe_layer lb = la;
    lb.gate = g1;
    lb.up = u1;
    lb.down = d1;
    lb.gate_packed = lp.gate_packed;
    lb.up_packed = lp.up_packed;
    lb.down_packed = lp.down_packed;
    memset(yp, 0, sizeof(float) * (size_t)T * E);
    be->ops->moe_ffn(be, yp, x, T, &lb);
    if (memcmp(yp, ys, sizeof(float) * (size_t)T * E) != 0)
        fail_msg("moe %s/%s, %lld tokens an expert: rewritten experts give other bits",
                 be_type_info(l->gate_type)->name, be_type_info(l->down_type)->name, (long long)T);
    free(g2);
    free(u2);
    free(d2);
    free(yp);
    free(ys);
}

/* moe_ffn against a double-precision reference built from the dequantized
 * weights, and its d_out + moe_combine form (experts in two waves, the
 * second wave first) against one call, bit for bit. Routing: 11 tokens, 2
 * experts each, over 6 experts; expert 0 gets 5 tokens (the GEMM path),
 * expert 5 one (the dot path), expert 3 none. */
static void check_moe(enum be_type gt, enum be_type ut, enum be_type dt, int n_threads)
{
    enum { NE = 6, T = 11, K = 2, E = 256, FF = 512 };
    static const int route[T][K] = {{0, 1}, {0, 2}, {1, 4}, {0, 4}, {2, 1}, {0, 5},
                                    {4, 2}, {1, 0}, {2, 4}, {1, 2}, {4, 1}};
    uint64_t s = 1234 + (uint64_t)gt * 7 + (uint64_t)dt;
    const size_t gr = be_row_size(gt, E), ur = be_row_size(ut, E), dr = be_row_size(dt, FF);
    uint8_t *gw = malloc(NE * FF * gr), *uw = malloc(NE * FF * ur), *dw = malloc(NE * E * dr);
    double *gd = malloc(sizeof(double) * NE * FF * E), *ud = malloc(sizeof(double) * NE * FF * E),
           *dd = malloc(sizeof(double) * NE * E * FF);
    float *row = malloc(sizeof(float) * FF), *tmp = malloc(sizeof(float) * FF);
    for (int e = 0; e < NE; e++) {
        for (int o = 0; o < FF; o++) {
            fill_rand(row, E, &s, 0.2f);
            be_quant_row(gt, row, gw + (e * FF + o) * gr, E);
            be_dequant_row(gt, gw + (e * FF + o) * gr, tmp, E);
            for (int i = 0; i < E; i++)
                gd[((size_t)e * FF + o) * E + i] = tmp[i];
            fill_rand(row, E, &s, 0.2f);
            be_quant_row(ut, row, uw + (e * FF + o) * ur, E);
            be_dequant_row(ut, uw + (e * FF + o) * ur, tmp, E);
            for (int i = 0; i < E; i++)
                ud[((size_t)e * FF + o) * E + i] = tmp[i];
        }
        for (int o = 0; o < E; o++) {
            fill_rand(row, FF, &s, 0.2f);
            be_quant_row(dt, row, dw + (e * E + o) * dr, FF);
            be_dequant_row(dt, dw + (e * E + o) * dr, tmp, FF);
            for (int i = 0; i < FF; i++)
                dd[((size_t)e * E + o) * FF + i] = tmp[i];
        }
    }
    float *x = malloc(sizeof(float) * T * E);
    fill_rand(x, T * E, &s, 1.0f);
    float wt[T][K];
    for (int t = 0; t < T; t++)
        for (int j = 0; j < K; j++)
            wt[t][j] = 0.25f + 0.5f * (float)((t * 7 + j * 3) % 5) / 5.0f;

    /* Pairs grouped by expert, experts in increasing id. */
    const void *gp[NE], *upp[NE], *dp[NE];
    int32_t off[NE + 1], tok[T * K], active_id[NE];
    float pw[T * K];
    int32_t na = 0, np = 0;
    for (int e = 0; e < NE; e++) {
        int32_t first = np;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < K; j++)
                if (route[t][j] == e) {
                    tok[np] = t;
                    pw[np++] = wt[t][j];
                }
        if (np == first)
            continue;
        gp[na] = gw + (size_t)e * FF * gr;
        upp[na] = uw + (size_t)e * FF * ur;
        dp[na] = dw + (size_t)e * E * dr;
        active_id[na] = e;
        off[na++] = first;
    }
    off[na] = np;

    struct be *be = make_be(n_threads, T, FF, 16);
    ASSERT_OK(be->ops->reserve_moe(be, T * K, FF, E));
    float *y = calloc((size_t)T * E, sizeof(float));
    struct be_moe_layer l = {.n_embd = E, .n_ff = FF, .gate_type = gt, .up_type = ut, .down_type = dt,
                             .n_active = na, .gate = gp, .up = upp, .down = dp, .offset = off,
                             .tok = tok, .weight = pw};
    be->ops->moe_ffn(be, y, x, T, &l);

    /* Reference: activations rounded to the kernels' formats as they are. */
    const enum be_type gvt = be_type_info(gt)->vec_dot_type, dvt = be_type_info(dt)->vec_dot_type;
    uint8_t *qa = malloc(be_row_size(BE_TYPE_F32, FF) + 64);
    const enum be_type uvt = be_type_info(ut)->vec_dot_type;
    float *xr = malloc(sizeof(float) * E), *xu = malloc(sizeof(float) * E), *hr = malloc(sizeof(float) * FF);
    for (int t = 0; t < T; t++) {
        for (int pass = 0; pass < 2; pass++) {
            enum be_type vt = pass ? uvt : gvt;
            float *dst = pass ? xu : xr;
            if (vt == BE_TYPE_F32) {
                memcpy(dst, x + t * E, sizeof(float) * E);
            } else {
                be_quant_row(vt, x + t * E, qa, E);
                be_dequant_row(vt, qa, dst, E);
            }
        }
        for (int o = 0; o < E; o++) {
            double ref = 0, mag = 0;
            for (int j = 0; j < K; j++) {
                const int e = route[t][j];
                for (int f = 0; f < FF; f++) {
                    double g = 0, u = 0;
                    for (int i = 0; i < E; i++) {
                        g += gd[((size_t)e * FF + f) * E + i] * xr[i];
                        u += ud[((size_t)e * FF + f) * E + i] * xu[i];
                    }
                    hr[f] = (float)(g / (1.0 + exp(-g)) * u);
                }
                if (dvt != BE_TYPE_F32) {
                    be_quant_row(dvt, hr, qa, FF);
                    be_dequant_row(dvt, qa, hr, FF);
                }
                for (int f = 0; f < FF; f++) {
                    double p = wt[t][j] * dd[((size_t)e * E + o) * FF + f] * hr[f];
                    ref += p;
                    mag += fabs(p);
                }
            }
            /* 1e-3 of sum|terms|: float accumulation plus h landing on the
             * other side of a rounding step now and then; a wrong expert,
             * token or weight is off by the whole magnitude. */
            const double tol = 1e-3 * mag + 1e-6;
            if (!(fabs(y[t * E + o] - ref) <= tol))
                fail_msg("moe %s/%s/%s threads %d: y[%d][%d] = %.7g, ref %.7g (tol %.3g)",
                         be_type_info(gt)->name, be_type_info(ut)->name, be_type_info(dt)->name, n_threads,
                         t, o, y[t * E + o], ref, tol);
        }
        /* only a few tokens in double precision: the loop above is O(E*FF*E) */
        if (t == 3)
            t = T - 2;
    }

    /* d_out in two waves, the later experts first, then moe_combine. */
    float *d = malloc(sizeof(float) * T * K * E);
    const int32_t split = na / 2;
    for (int wave = 0; wave < 2; wave++) {
        int32_t a0 = wave == 0 ? split : 0, a1 = wave == 0 ? na : split;
        int32_t loff[NE + 1];
        for (int32_t a = a0; a <= a1; a++)
            loff[a - a0] = off[a] - off[a0];
        struct be_moe_layer lw = l;
        lw.n_active = a1 - a0;
        lw.gate = gp + a0;
        lw.up = upp + a0;
        lw.down = dp + a0;
        lw.offset = loff;
        lw.tok = tok + off[a0];
        lw.weight = pw + off[a0];
        lw.d_out = d + (size_t)off[a0] * E;
        be->ops->moe_ffn(be, NULL, x, T, &lw);
    }
    const float *drows[T * K];
    for (int p = 0; p < np; p++)
        drows[p] = d + (size_t)p * E;
    float *y2 = calloc((size_t)T * E, sizeof(float));
    be->ops->moe_combine(be, y2, T, E, np, tok, pw, drows);
    if (memcmp(y, y2, sizeof(float) * T * E) != 0)
        fail_msg("moe %s: waves + moe_combine differ from one moe_ffn call", be_type_info(gt)->name);
    (void)active_id;
    check_moe_packed(be, &l, gw, uw, dw, NE, x, y);
    be_free(be);
    free(gw); free(uw); free(dw); free(gd); free(ud); free(dd); free(row); free(tmp);
    free(x); free(y); free(y2); free(d); free(qa); free(xr); free(xu); free(hr);
}

static void test_moe(void **state)
{
    (void)state;
    for (int th = 0; th < N_THREADS_CASES; th++) {
        check_moe(BE_TYPE_Q4_K, BE_TYPE_Q4_K, BE_TYPE_Q6_K, g_threads[th]);
        check_moe(BE_TYPE_Q8_0, BE_TYPE_Q8_0, BE_TYPE_Q8_0, g_threads[th]);
        check_moe(BE_TYPE_F16, BE_TYPE_F16, BE_TYPE_F16, g_threads[th]);
        check_moe(BE_TYPE_Q5_K, BE_TYPE_Q4_0, BE_TYPE_Q8_0, g_threads[th]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_matmul_types),
        cmocka_unit_test(test_matmul_shapes),
        cmocka_unit_test(test_matmul_batch_invariance),
        cmocka_unit_test(test_matmul_prepacked),
        cmocka_unit_test(test_matmul_n),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_swiglu_axpy),
        cmocka_unit_test(test_get_rows),
        cmocka_unit_test(test_kv_store),
        cmocka_unit_test(test_moe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
