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

void be_cpu__attn_scores_avx2(const float *q, int n_g, int hd, const float *k, float *s,
                              int64_t s_stride, float scale)
{
    /* hot: one key row against the n_g query heads that share it */
    for (int g = 0; g < n_g; g++) {
        const float *qg = q + (int64_t)g * hd;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int i = 0;
        for (; i + 16 <= hd; i += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i), _mm256_loadu_ps(k + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i + 8), _mm256_loadu_ps(k + i + 8), a1);
        }
        for (; i + 8 <= hd; i += 8)
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i), _mm256_loadu_ps(k + i), a0);
        float sum = hsum(_mm256_add_ps(a0, a1));
        for (; i < hd; i++)
            sum += qg[i] * k[i];
        s[g * s_stride] = sum * scale;
    }
}

void be_cpu__attn_acc_avx2(float *acc, int n_g, int hd, const float *w, int64_t w_stride,
                           const float *v)
{
    /* hot: one value row into the n_g heads' accumulators */
    for (int g = 0; g < n_g; g++) {
        float *ag = acc + (int64_t)g * hd;
        const float wg = w[g * w_stride];
        const __m256 wv = _mm256_set1_ps(wg);
        int i = 0;
        for (; i + 8 <= hd; i += 8)
            _mm256_storeu_ps(ag + i, _mm256_fmadd_ps(wv, _mm256_loadu_ps(v + i), _mm256_loadu_ps(ag + i)));
        for (; i < hd; i++)
            ag[i] += wg * v[i];
    }
}

void be_cpu__kv_to_f32_avx2(enum be_type t, const void *src, float *dst, int64_t n)
{
    if (t == BE_TYPE_F16) {
        const uint16_t *h = src;
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
        for (; i < n; i++)
            dst[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h[i])));
        return;
    }
    /* Q8_0 */
    const struct block_q8_0 *b = src;
    for (int64_t ib = 0; ib < n / QK8_0; ib++) {
        __m256 d = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(b[ib].d))));
        for (int j = 0; j < QK8_0; j += 8) {
            __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b[ib].qs + j)));
            _mm256_storeu_ps(dst + ib * QK8_0 + j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
        }
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
