/* SPDX-License-Identifier: MIT */
/*
 * ops_avx2.c - AVX2/FMA/F16C versions of the small vector loops of
 * backend_cpu.c: the attention inner loops (GQA score and value
 * accumulation, KV row conversion, the softmax exponential), SwiGLU, axpy
 * and the RMS norm.
 *
 * Compiled with -mavx2 -mfma -mf16c (the Makefile does it for *_avx2.c) and
 * called only after be_cpu__isa_detect() reported AVX2 or better.
 *
 * Invariant: each function computes the same thing as the plain loop of the
 * same name in backend_cpu.c, only in a different rounding order, and never
 * depends on the thread it runs on; exp is a Cephes-style polynomial within
 * 2 ulp of expf on the range used.
 */
#include "kernels/cpu/impl.h"

#include <immintrin.h>
#include <math.h>

/* ---- helpers ---- */

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* exp(x) for 8 lanes: range reduction by ln 2 in two parts, a degree-6
 * polynomial, and 2^n built in the exponent bits; 0 below -87.3, capped at exp(88). */
static inline __m256 exp8(__m256 x)
{
    const __m256 hi = _mm256_set1_ps(88.0f), lo = _mm256_set1_ps(-87.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);
}

/* ---- attention ---- */

/* Values i..i+7 of a KV row of type T (a constant after inlining). */
static inline __attribute__((always_inline)) __m256 kv_load8(enum be_type T, const void *row, int i)
{
    if (T == BE_TYPE_F32)
        return _mm256_loadu_ps((const float *)row + i);
    if (T == BE_TYPE_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    const struct block_q8_0 *b = (const struct block_q8_0 *)row + i / QK8_0;
    __m256 d = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(b->d))));
    __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + i % QK8_0)));
    return _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
}

/* NB query heads (a constant) against one key row: NB accumulators, so the
 * key row is loaded and converted once for the block. hd % 8 == 0. The head
 * loops are unrolled by pragma: at -O2 gcc would otherwise keep acc[] in
 * memory. */
static inline __attribute__((always_inline)) void scores_blk(enum be_type T, int NB, const float *q,
                                                             int hd, const void *row, float *s,
                                                             int64_t s_stride, float scale)
{
    __m256 acc[8];
#pragma GCC unroll 8
    for (int g = 0; g < NB; g++)
        acc[g] = _mm256_setzero_ps();
    for (int i = 0; i < hd; i += 8) {
        __m256 k = kv_load8(T, row, i);
#pragma GCC unroll 8
        for (int g = 0; g < NB; g++)
            acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (int64_t)g * hd + i), k, acc[g]);
    }
#pragma GCC unroll 8
    for (int g = 0; g < NB; g++)
        s[g * s_stride] = hsum(acc[g]) * scale;
}

static inline __attribute__((always_inline)) void scores_t(enum be_type T, const float *q, int n_g,
                                                           int hd, const void *const *rows, int cn,
                                                           float *s, int64_t s_stride, float scale)
{
    /* hot: each key row once per block of 8 heads */
    for (int p = 0; p < cn; p++) {
        int g = 0;
        for (; g + 8 <= n_g; g += 8)
            scores_blk(T, 8, q + (int64_t)g * hd, hd, rows[p], s + g * s_stride + p, s_stride, scale);
        for (; g + 4 <= n_g; g += 4)
            scores_blk(T, 4, q + (int64_t)g * hd, hd, rows[p], s + g * s_stride + p, s_stride, scale);
        for (; g < n_g; g++)
            scores_blk(T, 1, q + (int64_t)g * hd, hd, rows[p], s + g * s_stride + p, s_stride, scale);
    }
}

/* Scalar element i of a KV row, for head sizes that are not a multiple of 8. */
static float kv_at(enum be_type t, const void *row, int i)
{
    if (t == BE_TYPE_F32)
        return ((const float *)row)[i];
    if (t == BE_TYPE_F16)
        return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(((const uint16_t *)row)[i])));
    const struct block_q8_0 *b = (const struct block_q8_0 *)row + i / QK8_0;
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(b->d))) * (float)b->qs[i % QK8_0];
}

void be_cpu__attn_scores_avx2(enum be_type t, const float *q, int n_g, int hd,
                              const void *const *rows, int cn, float *s, int64_t s_stride,
                              float scale)
{
    if (hd % 8 != 0) {
        for (int p = 0; p < cn; p++)
            for (int g = 0; g < n_g; g++) {
                float sum = 0;
                for (int i = 0; i < hd; i++)
                    sum += q[(int64_t)g * hd + i] * kv_at(t, rows[p], i);
                s[g * s_stride + p] = sum * scale;
            }
        return;
    }
    switch (t) {
    case BE_TYPE_F32: scores_t(BE_TYPE_F32, q, n_g, hd, rows, cn, s, s_stride, scale); break;
    case BE_TYPE_F16: scores_t(BE_TYPE_F16, q, n_g, hd, rows, cn, s, s_stride, scale); break;
    default: scores_t(BE_TYPE_Q8_0, q, n_g, hd, rows, cn, s, s_stride, scale); break;
    }
}

/* NB heads' accumulators for 8 values of the head kept in registers while
 * the chunk's value rows stream past: no load/store of acc per row. */
static inline __attribute__((always_inline)) void acc_blk(enum be_type T, int NB, float *acc, int hd,
                                                          const float *w, int64_t w_stride,
                                                          const void *const *rows, int cn)
{
    for (int i = 0; i < hd; i += 8) {
        __m256 a[8];
#pragma GCC unroll 8
        for (int g = 0; g < NB; g++)
            a[g] = _mm256_loadu_ps(acc + (int64_t)g * hd + i);
        for (int p = 0; p < cn; p++) {
            __m256 v = kv_load8(T, rows[p], i);
#pragma GCC unroll 8
            for (int g = 0; g < NB; g++)
                a[g] = _mm256_fmadd_ps(_mm256_broadcast_ss(w + g * w_stride + p), v, a[g]);
        }
#pragma GCC unroll 8
        for (int g = 0; g < NB; g++)
            _mm256_storeu_ps(acc + (int64_t)g * hd + i, a[g]);
    }
}

static inline __attribute__((always_inline)) void acc_t(enum be_type T, float *acc, int n_g, int hd,
                                                        const float *w, int64_t w_stride,
                                                        const void *const *rows, int cn)
{
    /* hot: each value row once per block of 8 heads and 8 values */
    int g = 0;
    for (; g + 8 <= n_g; g += 8)
        acc_blk(T, 8, acc + (int64_t)g * hd, hd, w + g * w_stride, w_stride, rows, cn);
    for (; g + 4 <= n_g; g += 4)
        acc_blk(T, 4, acc + (int64_t)g * hd, hd, w + g * w_stride, w_stride, rows, cn);
    for (; g < n_g; g++)
        acc_blk(T, 1, acc + (int64_t)g * hd, hd, w + g * w_stride, w_stride, rows, cn);
}

void be_cpu__attn_acc_avx2(enum be_type t, float *acc, int n_g, int hd, const float *w,
                           int64_t w_stride, const void *const *rows, int cn)
{
    if (hd % 8 != 0) {
        for (int g = 0; g < n_g; g++)
            for (int p = 0; p < cn; p++)
                for (int i = 0; i < hd; i++)
                    acc[(int64_t)g * hd + i] += w[g * w_stride + p] * kv_at(t, rows[p], i);
        return;
    }
    switch (t) {
    case BE_TYPE_F32: acc_t(BE_TYPE_F32, acc, n_g, hd, w, w_stride, rows, cn); break;
    case BE_TYPE_F16: acc_t(BE_TYPE_F16, acc, n_g, hd, w, w_stride, rows, cn); break;
    default: acc_t(BE_TYPE_Q8_0, acc, n_g, hd, w, w_stride, rows, cn); break;
    }
}

float be_cpu__exp_shift_avx2(float *x, float mx, int64_t n)
{
    const __m256 m = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum(acc);
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    return sum;
}

/* ---- elementwise ---- */

void be_cpu__swiglu_avx2(float *y, const float *g, const float *u, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        __m256 sg = _mm256_div_ps(gv, _mm256_add_ps(one, e));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(sg, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void be_cpu__axpy_avx2(float *y, const float *x, float a, int64_t n)
{
    const __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

void be_cpu__scale_avx2(float *y, float a, int64_t n)
{
    const __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(av, _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] *= a;
}

double be_cpu__sumsq_avx2(const float *x, int64_t n)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        a0 = _mm256_fmadd_pd(lo, lo, a0);
        a1 = _mm256_fmadd_pd(hi, hi, a1);
    }
    __m256d a = _mm256_add_pd(a0, a1);
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    double sum = _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
    for (; i < n; i++)
        sum += (double)x[i] * x[i];
    return sum;
}

void be_cpu__scale_mul_avx2(float *y, const float *x, const float *w, float s, int64_t n)
{
    const __m256 sv = _mm256_set1_ps(s);
    int64_t i = 0;
    if (w) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv),
                                                  _mm256_loadu_ps(w + i)));
        for (; i < n; i++)
            y[i] = x[i] * s * w[i];
    } else {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), sv));
        for (; i < n; i++)
            y[i] = x[i] * s;
    }
}
