/* SPDX-License-Identifier: MIT */
/*
 * test_kernels_simd.c - the SIMD kernels of kernels/cpu/ (impl.h) against
 * the scalar reference of quant.c, at every ISA level this CPU supports
 * (the others are skipped, saying so).
 *
 *  - dot: every weight type, rows of 1, 3 and 17 blocks (more lengths for
 *    the float types, whose tails are per value), n_y = 1..4 activation rows
 *    y_stride bytes apart (larger than a row, and only 2-byte aligned where
 *    the block allows). Tolerance: |simd - ref| <= 1e-5 * sum|x_i * y_i|.
 *    Both sides compute the same exact integer sums per block; they differ
 *    only in the order and precision of the float accumulation of the block
 *    terms (float32 lanes vs the reference's double), an error of a few
 *    float32 ulps of the sum of magnitudes, far below 1e-5 of it for rows of
 *    this length; a wrong nibble, scale or block is far above it.
 *    Every n_y must also give each row the bits it gets alone (n_y = 1):
 *    the matmul's batch invariance rests on it.
 *  - gemm: where a level has a packed-panel GEMM (impl.h), every row of a
 *    full and a partial panel against n_y = 1..8 activation rows must equal
 *    that level's dot of the row alone bit for bit (and so the reference
 *    within the dot tolerance, checked too), and write nothing else.
 *  - rows: where a level has a small-batch kernel on the rows as stored
 *    (impl.h), every result for 1..19 rows against 1..19 tokens must equal
 *    that level's dot of the row and token alone bit for bit (and so the
 *    reference within the dot tolerance), and write nothing else.
 *  - act: the F32 -> Q8_0, Q8_1, Q8_K, F16, BF16 converters must be byte-
 *    identical to be_quant_row() on random rows, ties (values exactly half a
 *    quantization step), zeros, tiny and huge values, and for F16/BF16 also
 *    inf, NaN, subnormals and overflow (not for the Q8 types, where the
 *    reference's int cast of inf/NaN is undefined behaviour).
 *  - negative controls: a perturbed dot result and a flipped byte must fail
 *    the same comparisons.
 */
#include "kernels/cpu/impl.h"
#include "kernels/quant.h"
#include "tests/testutil.h"

#include <float.h>
#include <stdbool.h>
#include <string.h>

#define DOT_REL_TOL 1e-5

static const enum be_type g_weight_types[] = {
    BE_TYPE_F32,  BE_TYPE_F16,  BE_TYPE_BF16, BE_TYPE_Q4_0, BE_TYPE_Q4_1,
    BE_TYPE_Q5_0, BE_TYPE_Q5_1, BE_TYPE_Q8_0, BE_TYPE_Q2_K, BE_TYPE_Q3_K,
    BE_TYPE_Q4_K, BE_TYPE_Q5_K, BE_TYPE_Q6_K, BE_TYPE_IQ4_NL, BE_TYPE_IQ4_XS,
};
#define N_WEIGHT_TYPES (sizeof g_weight_types / sizeof g_weight_types[0])

static const enum be_type g_act_types[] = {
    BE_TYPE_Q8_0, BE_TYPE_Q8_1, BE_TYPE_Q8_K, BE_TYPE_F16, BE_TYPE_BF16,
};
#define N_ACT_TYPES (sizeof g_act_types / sizeof g_act_types[0])

static const enum be_cpu_isa g_levels[BE_CPU_ISA_COUNT] = {
    BE_CPU_ISA_SCALAR, BE_CPU_ISA_AVX2, BE_CPU_ISA_AVX512, BE_CPU_ISA_AVX512VNNI,
};
static const char *const g_level_names[BE_CPU_ISA_COUNT] = {
    "scalar", "avx2", "avx512", "avx512vnni",
};

/* ---- comparisons (shared by the tests and their negative controls) ---- */

/* True when a SIMD dot result is within DOT_REL_TOL * mag of the reference,
 * mag = sum |x_i * y_i| of the dequantized rows. */
static bool dot_close(float got, float ref, double mag)
{
    return fabs((double)got - (double)ref) <= DOT_REL_TOL * mag;
}

/* Returns -1 when equal, else the first differing byte. */
static long bytes_diff(const void *a, const void *b, size_t n)
{
    const uint8_t *p = a, *q = b;
    for (size_t i = 0; i < n; i++)
        if (p[i] != q[i])
            return (long)i;
    return -1;
}

/* ---- helpers ---- */

static const struct be_cpu_kernels *level_get(void **state)
{
    enum be_cpu_isa isa = *(const enum be_cpu_isa *)*state;
    const struct be_cpu_kernels *k = be_cpu__kernels(isa);
    if (!k)
        printf("SKIP level %s: this CPU does not support it (best: %s)\n", g_level_names[isa],
               g_level_names[be_cpu__isa_detect()]);
    return k;
}

static size_t align_of(enum be_type t) /* of the block struct */
{
    return t == BE_TYPE_F32 || t == BE_TYPE_Q8_K ? 4 : 2;
}

/* Random floats in [-scale, scale), with a different magnitude per 32. */
static void fill_random(float *x, int64_t n, float scale, uint64_t *rng)
{
    for (int64_t i = 0; i < n; i++) {
        float blk = 0.25f + (float)((i / 32) % 4); /* 0.25 .. 3.25 */
        x[i] = scale * blk * test_rand_f(rng);
    }
}

static double mag_get(enum be_type t, const void *xq, enum be_type vt, const void *yq, int64_t n,
                      float *xd, float *yd)
{
    be_dequant_row(t, xq, xd, n);
    be_dequant_row(vt, yq, yd, n);
    double mag = 0.0;
    for (int64_t i = 0; i < n; i++)
        mag += fabs((double)xd[i] * yd[i]);
    return mag;
}

/* ---- dot ---- */

static int g_dot_checks;

/* One weight type, one row length: every n_y from 1 to 4. */
static void dot_case(const struct be_cpu_kernels *k, enum be_type t, int64_t n, uint64_t *rng)
{
    const struct be_type_info *ti = be_type_info(t);
    const enum be_type vt = ti->vec_dot_type;
    const size_t xa = align_of(t), ya = align_of(vt);
    const size_t x_size = be_row_size(t, n), y_row = be_row_size(vt, n);
    const size_t ys = y_row + 3 * ya; /* larger than a row, not a multiple of 32 */
    uint8_t *xbuf = malloc(x_size + 64), *ybuf = malloc(ys * BE_CPU_MAX_NY + 64);
    float *xf = malloc((size_t)n * sizeof(float)), *yf = malloc((size_t)n * sizeof(float));
    float *xd = malloc((size_t)n * sizeof(float)), *yd = malloc((size_t)n * sizeof(float));
    assert_non_null(xbuf);
    assert_non_null(ybuf);
    /* Offsets of the alignment only: malloc gives 16, so rows start 2 (or 4)
     * bytes past it. */
    uint8_t *xq = xbuf + xa, *y0 = ybuf + ya;

    fill_random(xf, n, 1.0f, rng);
    be_quant_row(t, xf, xq, n);
    double mag[BE_CPU_MAX_NY];
    float ref[BE_CPU_MAX_NY];
    for (int j = 0; j < BE_CPU_MAX_NY; j++) {
        fill_random(yf, n, 0.5f + j, rng);
        be_quant_row(vt, yf, y0 + j * ys, n);
        ref[j] = be_vec_dot_ref(t, n, xq, y0 + j * ys);
        mag[j] = mag_get(t, xq, vt, y0 + j * ys, n, xd, yd);
    }
    for (int ny = 1; ny <= BE_CPU_MAX_NY; ny++) {
        float got[BE_CPU_MAX_NY + 1];
        for (int j = 0; j <= BE_CPU_MAX_NY; j++)
            got[j] = NAN;
        k->dot[t](n, xq, y0, ys, ny, got);
        float alone[BE_CPU_MAX_NY];
        for (int j = 0; j < ny; j++)
            k->dot[t](n, xq, y0 + j * ys, ys, 1, &alone[j]);
        if (memcmp(got, alone, (size_t)ny * sizeof(float)) != 0)
            fail_msg("%s dot %s n=%lld n_y=%d: a row differs from its n_y = 1 bits", k->isa_name,
                     ti->name, (long long)n, ny);
        for (int j = 0; j < ny; j++) {
            if (!dot_close(got[j], ref[j], mag[j]))
                fail_msg("%s dot %s n=%lld n_y=%d row %d: got %.9g, ref %.9g, |diff| %g > %g * %g",
                         k->isa_name, ti->name, (long long)n, ny, j, got[j], ref[j],
                         fabs((double)got[j] - ref[j]), DOT_REL_TOL, mag[j]);
            g_dot_checks++;
        }
        for (int j = ny; j <= BE_CPU_MAX_NY; j++)
            if (!isnan(got[j]))
                fail_msg("%s dot %s n_y=%d wrote s[%d]", k->isa_name, ti->name, ny, j);
    }
    free(xbuf);
    free(ybuf);
    free(xf);
    free(yf);
    free(xd);
    free(yd);
}

static void test_dot(void **state)
{
    const struct be_cpu_kernels *k = level_get(state);
    if (!k) {
        skip();
        return;
    }
    uint64_t rng = 0x1234567u + (uint64_t)*(const enum be_cpu_isa *)*state;
    int before = g_dot_checks;
    for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        enum be_type t = g_weight_types[ti];
        assert_non_null(k->dot[t]);
        const int64_t blck = be_type_info(t)->blck;
        static const int64_t blocks[] = {1, 3, 17};
        for (size_t b = 0; b < 3; b++)
            dot_case(k, t, blocks[b] * blck, &rng);
        if (blck == 1) { /* float types: main loops and every tail length */
            static const int64_t extra[] = {8, 16, 31, 32, 33, 63, 64, 100, 545, 4096 + 13};
            for (size_t e = 0; e < sizeof extra / sizeof extra[0]; e++)
                dot_case(k, t, extra[e], &rng);
        }
        if (blck == 32) /* an even count too: two blocks per 512-bit step */
            dot_case(k, t, 16 * blck, &rng);
    }
    printf("level %s: %d dot comparisons, %zu weight types\n", k->isa_name,
           g_dot_checks - before, N_WEIGHT_TYPES);
}

/* ---- gemm ---- */

static int g_gemm_checks;

/* One weight type, one row length: a panel of n_rows rows against n_y =
 * 1..BE_CPU_GEMM_NY activation rows; g is the type's gemm[] (prefill
 * panels) or stored[] (prepacked matrices) entry, both held to dot[]'s bits. */
static void gemm_case(const struct be_cpu_kernels *k, const struct be_cpu_gemm *g, enum be_type t, int64_t n,
                      int n_rows, uint64_t *rng)
{
    const struct be_type_info *ti = be_type_info(t);
    const enum be_type vt = ti->vec_dot_type;
    const size_t wrow = be_row_size(t, n) + 2 * align_of(t); /* rows apart by more than a row */
    const size_t y_row = be_row_size(vt, n), ys = y_row + 3 * align_of(vt);
    const size_t panel = (size_t)g->bytes_per_blk * (size_t)(n / ti->blck);
    const size_t ss = BE_CPU_GEMM_ROWS + 3; /* result stride, more than a panel */
    uint8_t *w = malloc(wrow * BE_CPU_GEMM_ROWS + 64), *ybuf = malloc(ys * BE_CPU_GEMM_NY + 64);
    uint8_t *pk = aligned_alloc(64, (panel + 63) / 64 * 64);
    float *xf = malloc((size_t)n * sizeof(float)), *xd = malloc((size_t)n * sizeof(float)),
          *yd = malloc((size_t)n * sizeof(float));
    float *got = malloc(ss * (BE_CPU_GEMM_NY + 1) * sizeof(float));
    assert_non_null(w);
    assert_non_null(ybuf);
    assert_non_null(pk);
    uint8_t *y0 = ybuf + align_of(vt);

    for (int r = 0; r < n_rows; r++) {
        fill_random(xf, n, 1.0f + r, rng);
        be_quant_row(t, xf, w + align_of(t) + r * wrow, n);
    }
    for (int j = 0; j < BE_CPU_GEMM_NY; j++) {
        fill_random(xf, n, 0.5f + j, rng);
        be_quant_row(vt, xf, y0 + j * ys, n);
    }
    memset(pk, 0xa5, panel); /* stale bytes must not reach a result */
    g->pack(w + align_of(t), wrow, n_rows, n, pk);
    for (int ny = 1; ny <= BE_CPU_GEMM_NY; ny++) {
        for (size_t i = 0; i < ss * (BE_CPU_GEMM_NY + 1); i++)
            got[i] = NAN;
        g->run(n, pk, y0, ys, ny, got, ss, n_rows);
        for (int j = 0; j <= BE_CPU_GEMM_NY; j++) {
            for (size_t r = 0; r < ss; r++) {
                const float v = got[j * ss + r];
                if (j >= ny || r >= (size_t)n_rows) {
                    if (!isnan(v))
                        fail_msg("%s gemm %s n_y=%d n_rows=%d wrote s[%d][%zu]", k->isa_name,
                                 ti->name, ny, n_rows, j, r);
                    continue;
                }
                const uint8_t *xr = w + align_of(t) + r * wrow, *yr = y0 + j * ys;
                float alone;
                k->dot[t](n, xr, yr, ys, 1, &alone);
                if (memcmp(&v, &alone, sizeof v) != 0)
                    fail_msg("%s gemm %s n=%lld n_y=%d row %zu token %d: %.9g, dot alone %.9g",
                             k->isa_name, ti->name, (long long)n, ny, r, j, v, alone);
                const float ref = be_vec_dot_ref(t, n, xr, yr);
                const double mag = mag_get(t, xr, vt, yr, n, xd, yd);
                if (!dot_close(v, ref, mag))
                    fail_msg("%s gemm %s n=%lld row %zu token %d: got %.9g, ref %.9g", k->isa_name,
                             ti->name, (long long)n, r, j, v, ref);
                g_gemm_checks++;
            }
        }
    }
    /* Negative control: a changed weight row changes its bits. */
    uint8_t *x0 = w + align_of(t);
    float before = got[0], after = NAN;
    fill_random(xf, n, 7.0f, rng);
    be_quant_row(t, xf, x0, n);
    g->pack(x0, wrow, n_rows, n, pk);
    g->run(n, pk, y0, ys, 1, &after, ss, 1);
    assert_true(memcmp(&before, &after, sizeof after) != 0);
    free(w);
    free(ybuf);
    free(pk);
    free(xf);
    free(xd);
    free(yd);
    free(got);
}

static void test_gemm(void **state)
{
    const struct be_cpu_kernels *k = level_get(state);
    if (!k) {
        skip();
        return;
    }
    if (*(const enum be_cpu_isa *)*state == BE_CPU_ISA_AVX512VNNI) /* the prefill types */
        assert_true(k->gemm[BE_TYPE_Q4_K].pack && k->gemm[BE_TYPE_Q5_K].pack &&
                    k->gemm[BE_TYPE_Q6_K].pack && k->gemm[BE_TYPE_Q8_0].pack);
    if (*(const enum be_cpu_isa *)*state == BE_CPU_ISA_AVX512VNNI) /* Q4_K_M's types: what expert_pack rewrites */
        assert_true(k->stored[BE_TYPE_Q4_K].pack != NULL && k->stored[BE_TYPE_Q6_K].pack != NULL);
    uint64_t rng = 0x9e3779b9u + (uint64_t)*(const enum be_cpu_isa *)*state;
    for (int stored = 0; stored < 2; stored++) {
        int before = g_gemm_checks, n_types = 0;
        for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
            enum be_type t = g_weight_types[ti];
            const struct be_cpu_gemm *g = stored ? &k->stored[t] : &k->gemm[t];
            if (!g->pack)
                continue;
            assert_non_null(g->run);
            n_types++;
            const int64_t blck = be_type_info(t)->blck;
            static const int64_t blocks[] = {1, 2, 3, 17, 32}; /* Q8_0: odd tails and none */
            static const int rows[] = {BE_CPU_GEMM_ROWS, 5, 1};
            for (size_t b = 0; b < 5; b++)
                for (size_t r = 0; r < 3; r++)
                    gemm_case(k, g, t, blocks[b] * blck, rows[r], &rng);
        }
        printf("level %s: %d %s comparisons, %d weight types\n", k->isa_name, g_gemm_checks - before,
               stored ? "stored-panel" : "gemm", n_types);
    }
}

/* ---- rows (small batches on the rows as stored) ---- */

static int g_rows_checks;

/* One weight type, one row length, n_rows rows (apart by more than a row)
 * against n_y = 1..RW_MAX_NY activation rows: every result must equal that
 * level's dot of the row and token alone bit for bit (the batch invariance
 * of the MoE and the matmul rests on it) and the reference within the dot
 * tolerance, and nothing else may be written. n_y crosses the kernel's
 * groups of 8 tokens; n_rows its groups of 4 rows and its prefetch. */
#define RW_MAX_NY 19
static void rows_case(const struct be_cpu_kernels *k, enum be_type t, int64_t n, int n_rows, uint64_t *rng)
{
    const struct be_type_info *ti = be_type_info(t);
    const enum be_type vt = ti->vec_dot_type;
    const size_t wrow = be_row_size(t, n) + 2 * align_of(t);
    const size_t ys = be_row_size(vt, n) + 3 * align_of(vt);
    const size_t ss = (size_t)n_rows + 3; /* result stride, more than the rows */
    uint8_t *w = malloc(wrow * (size_t)n_rows + 64), *ybuf = malloc(ys * RW_MAX_NY + 64);
    float *xf = malloc((size_t)n * sizeof(float)), *xd = malloc((size_t)n * sizeof(float)),
          *yd = malloc((size_t)n * sizeof(float));
    float *got = malloc(ss * (RW_MAX_NY + 1) * sizeof(float));
    float *alone = malloc((size_t)n_rows * RW_MAX_NY * sizeof(float));
    assert_non_null(w);
    assert_non_null(ybuf);
    assert_non_null(got);
    assert_non_null(alone);
    uint8_t *w0 = w + align_of(t), *y0 = ybuf + align_of(vt);
    for (int r = 0; r < n_rows; r++) {
        fill_random(xf, n, 1.0f + (float)(r % 5), rng);
        be_quant_row(t, xf, w0 + r * wrow, n);
    }
    for (int j = 0; j < RW_MAX_NY; j++) {
        fill_random(xf, n, 0.5f + (float)(j % 7), rng);
        be_quant_row(vt, xf, y0 + j * ys, n);
    }
    for (int r = 0; r < n_rows; r++)
        for (int j = 0; j < RW_MAX_NY; j++) {
            const uint8_t *xr = w0 + r * wrow, *yr = y0 + j * ys;
            k->dot[t](n, xr, yr, ys, 1, &alone[r * RW_MAX_NY + j]);
            const float ref = be_vec_dot_ref(t, n, xr, yr);
            const double mag = mag_get(t, xr, vt, yr, n, xd, yd);
            if (!dot_close(alone[r * RW_MAX_NY + j], ref, mag))
                fail_msg("%s dot %s n=%lld row %d token %d: got %.9g, ref %.9g", k->isa_name, ti->name,
                         (long long)n, r, j, alone[r * RW_MAX_NY + j], ref);
        }
    for (int ny = 1; ny <= RW_MAX_NY; ny++) {
        for (size_t i = 0; i < ss * (RW_MAX_NY + 1); i++)
            got[i] = NAN;
        k->rows[t](n, w0, wrow, n_rows, y0, ys, ny, got, ss);
        for (int j = 0; j <= RW_MAX_NY; j++)
            for (size_t r = 0; r < ss; r++) {
                const float v = got[j * ss + r];
                if (j >= ny || r >= (size_t)n_rows) {
                    if (!isnan(v))
                        fail_msg("%s rows %s n_y=%d n_rows=%d wrote s[%d][%zu]", k->isa_name, ti->name, ny,
                                 n_rows, j, r);
                    continue;
                }
                const float a = alone[r * RW_MAX_NY + j];
                if (memcmp(&v, &a, sizeof v) != 0)
                    fail_msg("%s rows %s n=%lld n_rows=%d n_y=%d row %zu token %d: %.9g, dot alone %.9g",
                             k->isa_name, ti->name, (long long)n, n_rows, ny, r, j, v, a);
                g_rows_checks++;
            }
    }
    /* Negative control: a changed weight row changes its bits, and only its. */
    const int rc = n_rows - 1;
    fill_random(xf, n, 7.0f, rng);
    be_quant_row(t, xf, w0 + rc * wrow, n);
    k->rows[t](n, w0, wrow, n_rows, y0, ys, 1, got, ss);
    assert_true(memcmp(&got[rc], &alone[rc * RW_MAX_NY], sizeof(float)) != 0);
    if (n_rows > 1)
        assert_memory_equal(&got[0], &alone[0], sizeof(float));
    free(w);
    free(ybuf);
    free(xf);
    free(xd);
    free(yd);
    free(got);
    free(alone);
}

static void test_rows(void **state)
{
    const struct be_cpu_kernels *k = level_get(state);
    if (!k) {
        skip();
        return;
    }
    if (*(const enum be_cpu_isa *)*state == BE_CPU_ISA_AVX512VNNI) /* the MoE types */
        assert_true(k->rows[BE_TYPE_Q4_K] && k->rows[BE_TYPE_Q6_K] && k->rows[BE_TYPE_Q8_0]);
    uint64_t rng = 0x7f4a7c15u + (uint64_t)*(const enum be_cpu_isa *)*state;
    int before = g_rows_checks, n_types = 0;
    for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        enum be_type t = g_weight_types[ti];
        if (!k->rows[t])
            continue;
        assert_non_null(k->dot[t]);
        n_types++;
        const int64_t blck = be_type_info(t)->blck;
        static const int64_t blocks[] = {1, 2, 3, 4}; /* Q8_0: odd block counts too */
        static const int rows[] = {1, 2, 3, 4, 5, 7, 13, 19};
        for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++)
            for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
                rows_case(k, t, blocks[b] * blck, rows[r], &rng);
    }
    printf("level %s: %d rows comparisons, %d weight types\n", k->isa_name, g_rows_checks - before, n_types);
}

/* ---- act ---- */

#define ACT_N (3 * QK_K)

enum act_kind {
    ACT_RANDOM, ACT_TIES, ACT_TIES_SCALED, ACT_ZEROS, ACT_SIGNED_ZEROS, ACT_MIXED_ZERO_BLOCKS,
    ACT_TINY, ACT_HUGE, ACT_MAX_SIGN, ACT_HALF_TIES, ACT_SPECIALS, ACT_KIND_COUNT
};
static const char *const g_act_kind_names[ACT_KIND_COUNT] = {
    "random", "ties", "scaled ties", "zeros", "signed zeros", "mixed zero blocks",
    "tiny", "huge", "max sign", "f16/bf16 ties", "inf/nan/subnormal",
};

/* Fills one test row; returns false when the kind does not apply to t. */
static bool act_row(enum act_kind kind, enum be_type t, float *x, uint64_t *rng)
{
    bool is_q8 = t == BE_TYPE_Q8_0 || t == BE_TYPE_Q8_1 || t == BE_TYPE_Q8_K;
    switch (kind) {
    case ACT_RANDOM:
        fill_random(x, ACT_N, 1.0f, rng);
        return true;
    case ACT_TIES:
    case ACT_TIES_SCALED: {
        /* Each 32 (and so each 256) holds +-127 once, so the Q8_0/Q8_K step
         * is exactly 1 (times a power of two): every k + 0.5 is a tie. */
        float scale = kind == ACT_TIES ? 1.0f : 0.03125f;
        for (int i = 0; i < ACT_N; i++) {
            int k = (int)(test_rand_u64(rng) % 127);
            float v = (float)k + 0.5f;
            x[i] = scale * ((test_rand_u64(rng) & 1) ? -v : v);
        }
        for (int b = 0; b < ACT_N; b += 32)
            x[b + (int)(test_rand_u64(rng) % 32)] = scale * ((b / 32) % 3 == 0 ? -127.0f : 127.0f);
        return true;
    }
    case ACT_ZEROS:
        memset(x, 0, ACT_N * sizeof(float));
        return true;
    case ACT_SIGNED_ZEROS:
        for (int i = 0; i < ACT_N; i++)
            x[i] = (i % 3) ? -0.0f : 0.0f;
        return true;
    case ACT_MIXED_ZERO_BLOCKS:
        fill_random(x, ACT_N, 1.0f, rng);
        memset(x, 0, 32 * sizeof(float));
        memset(x + QK_K, 0, QK_K * sizeof(float));
        return true;
    case ACT_TINY: /* amax stays normal enough that 1/d is finite */
        fill_random(x, ACT_N, 1e-30f, rng);
        for (int i = 5; i < ACT_N; i += 7)
            x[i] = 1e-40f * test_rand_f(rng); /* subnormal values among them */
        return true;
    case ACT_HUGE:
        fill_random(x, ACT_N, 1e30f, rng);
        for (int i = 3; i < ACT_N; i += 64)
            x[i] = 3e38f * test_rand_f(rng);
        return true;
    case ACT_MAX_SIGN: /* +a and -a both present: the first one sets Q8_K's sign */
        fill_random(x, ACT_N, 1.0f, rng);
        for (int b = 0; b < ACT_N; b += QK_K) {
            int i0 = b + 10 + (int)(test_rand_u64(rng) % 100), i1 = i0 + 1 + (int)(test_rand_u64(rng) % 100);
            float a = 7.0f + (float)b;
            x[i0] = (b / QK_K) % 2 ? a : -a;
            x[i1] = -x[i0];
        }
        return true;
    case ACT_HALF_TIES:
        if (is_q8)
            return false;
        for (int i = 0; i < ACT_N; i++) {
            int e = (int)(test_rand_u64(rng) % 40) - 25; /* f16 subnormal to normal */
            if (t == BE_TYPE_F16) {
                int m = 1024 + (int)(test_rand_u64(rng) % 1024);
                x[i] = ldexpf((float)m + 0.5f, e - 10);
            } else {
                int m = 128 + (int)(test_rand_u64(rng) % 128);
                x[i] = ldexpf((float)m + 0.5f, e * 4 - 7);
            }
            if (test_rand_u64(rng) & 1)
                x[i] = -x[i];
        }
        return true;
    case ACT_SPECIALS: {
        if (is_q8)
            return false;
        static const float special[] = {
            INFINITY, -INFINITY, 65504.0f, 65519.0f, 65520.0f, 1e6f, -1e30f, FLT_MAX,
            6e-8f, 3e-8f, 2.98e-8f, 1e-9f, 1e-40f, -1e-45f, FLT_MIN, 6.1e-5f,
        };
        fill_random(x, ACT_N, 1.0f, rng);
        for (int i = 0; i < ACT_N; i += 3)
            x[i] = special[(i / 3) % (sizeof special / sizeof special[0])];
        uint32_t qnan = 0x7fc12345u, snan = 0x7f812345u, nnan = 0xffc00001u;
        memcpy(&x[1], &qnan, 4);
        memcpy(&x[4], &snan, 4);
        memcpy(&x[ACT_N - 2], &nnan, 4); /* in the scalar tail of odd lengths too */
        return true;
    }
    default:
        return false;
    }
}

static int g_act_checks;

static void test_act(void **state)
{
    const struct be_cpu_kernels *k = level_get(state);
    if (!k) {
        skip();
        return;
    }
    uint64_t rng = 0xabcdef1u + (uint64_t)*(const enum be_cpu_isa *)*state;
    float *x = malloc(ACT_N * sizeof(float) + 16);
    uint8_t *want = malloc(ACT_N * 4 + 64), *got = malloc(ACT_N * 4 + 64);
    int before = g_act_checks;
    for (size_t ai = 0; ai < N_ACT_TYPES; ai++) {
        enum be_type t = g_act_types[ai];
        assert_non_null(k->act[t]);
        for (int kind = 0; kind < ACT_KIND_COUNT; kind++) {
            if (!act_row(kind, t, x, &rng))
                continue;
            /* Full rows, and for the per-value types odd lengths (tails). */
            int64_t lens[3] = {ACT_N, ACT_N - 1, ACT_N - 15};
            int n_lens = be_type_info(t)->blck == 1 ? 3 : 1;
            for (int li = 0; li < n_lens; li++) {
                int64_t n = lens[li];
                size_t size = be_row_size(t, n), off = align_of(t);
                memset(want, 0xaa, ACT_N * 4 + 64);
                memset(got, 0xaa, ACT_N * 4 + 64);
                be_quant_row(t, x, want + off, n);
                k->act[t](x, got + off, n);
                long d = bytes_diff(want, got, ACT_N * 4 + 64); /* also: nothing past the row */
                if (d >= 0)
                    fail_msg("%s act %s (%s, n=%lld): byte %ld of %zu differs: want 0x%02x got 0x%02x",
                             k->isa_name, be_type_name(t), g_act_kind_names[kind], (long long)n,
                             d - (long)off, size, want[d], got[d]);
                g_act_checks++;
            }
        }
    }
    printf("level %s: %d act rows byte-identical\n", k->isa_name, g_act_checks - before);
    free(x);
    free(want);
    free(got);
}

/* ---- negative controls and the table ---- */

static void test_negative_control(void **state)
{
    (void)state;
    /* A real dot pair at the best level, then perturbed by 10x the tolerance. */
    const struct be_cpu_kernels *k = be_cpu__kernels(be_cpu__isa_detect());
    assert_non_null(k);
    const int64_t n = 3 * QK_K;
    uint64_t rng = 99;
    float xf[3 * QK_K], yf[3 * QK_K], xd[3 * QK_K], yd[3 * QK_K];
    struct block_q4_K xq[3];
    struct block_q8_K yq[3];
    fill_random(xf, n, 1.0f, &rng);
    fill_random(yf, n, 1.0f, &rng);
    be_quant_row(BE_TYPE_Q4_K, xf, xq, n);
    be_quant_row(BE_TYPE_Q8_K, yf, yq, n);
    float ref = be_vec_dot_ref(BE_TYPE_Q4_K, n, xq, yq), got;
    double mag = mag_get(BE_TYPE_Q4_K, xq, BE_TYPE_Q8_K, yq, n, xd, yd);
    k->dot[BE_TYPE_Q4_K](n, xq, yq, sizeof yq, 1, &got);
    assert_true(dot_close(got, ref, mag));
    assert_false(dot_close(got + (float)(10 * DOT_REL_TOL * mag), ref, mag));
    assert_false(dot_close(got - (float)(10 * DOT_REL_TOL * mag), ref, mag));
    /* One wrong nibble changes the result by far more than the tolerance. */
    xq[1].qs[7] ^= 0x30;
    float bad;
    k->dot[BE_TYPE_Q4_K](n, xq, yq, sizeof yq, 1, &bad);
    assert_false(dot_close(bad, ref, mag));

    uint8_t a[64], b[64];
    for (int i = 0; i < 64; i++)
        a[i] = b[i] = (uint8_t)i;
    assert_int_equal(bytes_diff(a, b, 64), -1);
    b[41] ^= 1;
    assert_int_equal(bytes_diff(a, b, 64), 41);
}

static void test_table(void **state)
{
    (void)state;
    enum be_cpu_isa best = be_cpu__isa_detect();
    printf("best ISA level: %s\n", g_level_names[best]);
    for (int l = 0; l < BE_CPU_ISA_COUNT; l++) {
        const struct be_cpu_kernels *k = be_cpu__kernels((enum be_cpu_isa)l);
        if (l > (int)best) {
            assert_null(k);
            continue;
        }
        assert_non_null(k);
        assert_string_equal(k->isa_name, g_level_names[l]);
        assert_ptr_equal(k, be_cpu__kernels((enum be_cpu_isa)l)); /* built once */
        for (int t = 0; t < BE_TYPE_COUNT; t++) {
            const struct be_type_info *ti = be_type_info((uint32_t)t);
            if (ti)
                assert_non_null(k->dot[t]);
        }
        if (l > 0) /* a SIMD level really replaces the reference for the main types */
            assert_true(k->dot[BE_TYPE_Q4_K] != be_cpu__kernels(BE_CPU_ISA_SCALAR)->dot[BE_TYPE_Q4_K] &&
                        k->act[BE_TYPE_Q8_K] != be_cpu__kernels(BE_CPU_ISA_SCALAR)->act[BE_TYPE_Q8_K]);
    }
    assert_null(be_cpu__kernels(BE_CPU_ISA_COUNT));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_negative_control),
        cmocka_unit_test_prestate(test_dot, (void *)&g_levels[BE_CPU_ISA_SCALAR]),
        cmocka_unit_test_prestate(test_dot, (void *)&g_levels[BE_CPU_ISA_AVX2]),
        cmocka_unit_test_prestate(test_dot, (void *)&g_levels[BE_CPU_ISA_AVX512]),
        cmocka_unit_test_prestate(test_dot, (void *)&g_levels[BE_CPU_ISA_AVX512VNNI]),
        cmocka_unit_test_prestate(test_gemm, (void *)&g_levels[BE_CPU_ISA_SCALAR]),
        cmocka_unit_test_prestate(test_gemm, (void *)&g_levels[BE_CPU_ISA_AVX2]),
        cmocka_unit_test_prestate(test_gemm, (void *)&g_levels[BE_CPU_ISA_AVX512]),
        cmocka_unit_test_prestate(test_gemm, (void *)&g_levels[BE_CPU_ISA_AVX512VNNI]),
        cmocka_unit_test_prestate(test_rows, (void *)&g_levels[BE_CPU_ISA_SCALAR]),
        cmocka_unit_test_prestate(test_rows, (void *)&g_levels[BE_CPU_ISA_AVX2]),
        cmocka_unit_test_prestate(test_rows, (void *)&g_levels[BE_CPU_ISA_AVX512]),
        cmocka_unit_test_prestate(test_rows, (void *)&g_levels[BE_CPU_ISA_AVX512VNNI]),
        cmocka_unit_test_prestate(test_act, (void *)&g_levels[BE_CPU_ISA_SCALAR]),
        cmocka_unit_test_prestate(test_act, (void *)&g_levels[BE_CPU_ISA_AVX2]),
        cmocka_unit_test_prestate(test_act, (void *)&g_levels[BE_CPU_ISA_AVX512]),
        cmocka_unit_test_prestate(test_act, (void *)&g_levels[BE_CPU_ISA_AVX512VNNI]),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
