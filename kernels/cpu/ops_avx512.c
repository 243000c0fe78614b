/* SPDX-License-Identifier: MIT */
/*
 * ops_avx512.c - AVX-512 versions of the vector primitives of backend_cpu.c
 * where 16 lanes pay: SwiGLU (its exponential dominates the MoE layer's
 * elementwise phase, once per expert and token).
 *
 * Compiled with the Makefile's AVX512_FLAGS (*_avx512.c) and called only
 * after be_cpu__isa_detect() reported AVX-512 or better.
 *
 * Invariant: as ops_avx2.c, each function computes what the plain loop of
 * the same name computes, in another rounding order; the exponential is the
 * same Cephes-style polynomial as ops_avx2.c's exp8, so the two agree to the
 * last bit lane by lane, and never depends on the thread it runs on.
 */
#include "kernels/cpu/impl.h"

#include <immintrin.h>
#include <math.h>

/* exp(x) for 16 lanes: exp8 of ops_avx2.c, same constants and operations. */
static inline __m512 exp16(__m512 x)
{
    const __m512 hi = _mm512_set1_ps(88.0f), lo = _mm512_set1_ps(-87.3f);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    const __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
    return _mm512_maskz_mov_ps((__mmask16)~under, y);
}

void be_cpu__swiglu_avx512(float *y, const float *g, const float *u, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 gv = _mm512_loadu_ps(g + i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        const __m512 sg = _mm512_div_ps(gv, _mm512_add_ps(one, e));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(sg, _mm512_loadu_ps(u + i)));
    }
    if (i < n) /* the tail, masked: the same lanes' arithmetic */
    {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        const __m512 sg = _mm512_div_ps(gv, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(sg, _mm512_maskz_loadu_ps(m, u + i)));
    }
}

/* ---- attention ----
 *
 * As ops_avx2.c's, 16 values at a time (hd % 16 == 0; other head sizes take
 * the AVX2 versions). Scores: a block of H heads x R key rows (H R = 16)
 * keeps its 16 dot products in 16 registers, and one transposing reduction
 * turns them into one register of 16 scores, where the AVX2 version pays a
 * horizontal sum per (head, row). */

/* Values i..i+15 of a KV row of type T (a constant after inlining). */
static inline __attribute__((always_inline)) __m512 kv_load16(enum be_type T, const void *row, int i)
{
    if (T == BE_TYPE_F32)
        return _mm512_loadu_ps((const float *)row + i);
    if (T == BE_TYPE_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)((const uint16_t *)row + i)));
    const struct block_q8_0 *b = (const struct block_q8_0 *)row + i / QK8_0;
    const __m512 d = _mm512_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(b->d))));
    const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(b->qs + i % QK8_0)));
    return _mm512_mul_ps(d, _mm512_cvtepi32_ps(q));
}

/* lane (128-bit) k of the result: the sums of a, b, c, d over their lane k */
static inline __m512 reduce4_ps(__m512 a, __m512 b, __m512 c, __m512 d)
{
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
}

/* Element e of the result: the sum of the 16 lanes of v[e]. */
static inline __m512 reduce16_ps(const __m512 v[16])
{
    const __m512 r0 = reduce4_ps(v[0], v[1], v[2], v[3]), r1 = reduce4_ps(v[4], v[5], v[6], v[7]);
    const __m512 r2 = reduce4_ps(v[8], v[9], v[10], v[11]), r3 = reduce4_ps(v[12], v[13], v[14], v[15]);
    const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(r0, r1, 0x44), _mm512_shuffle_f32x4(r0, r1, 0xee));
    const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(r2, r3, 0x44), _mm512_shuffle_f32x4(r2, r3, 0xee));
    return _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xdd));
}

/* H heads (q, hd apart) against the key rows p0..p0+R-1 (R = 16 / H; rows
 * past cn repeat the last one and are not stored). */
static inline __attribute__((always_inline)) void scores_blk16(enum be_type T, const int H, const float *q, int hd,
                                                               const void *const *rows, int p0, int cn, float *s,
                                                               int64_t s_stride, float scale)
{
    const int R = 16 / H;
    const void *rw[16];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
        rw[r] = rows[p0 + r < cn ? p0 + r : cn - 1];
    __m512 acc[16];
#pragma GCC unroll 16
    for (int e = 0; e < 16; e++)
        acc[e] = _mm512_setzero_ps();
    for (int i = 0; i < hd; i += 16) {
        __m512 qv[4];
#pragma GCC unroll 4
        for (int h = 0; h < H; h++)
            qv[h] = _mm512_loadu_ps(q + (int64_t)h * hd + i);
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            const __m512 k = kv_load16(T, rw[r], i);
#pragma GCC unroll 4
            for (int h = 0; h < H; h++)
                acc[h * R + r] = _mm512_fmadd_ps(qv[h], k, acc[h * R + r]);
        }
    }
    const __m512 sv = _mm512_mul_ps(reduce16_ps(acc), _mm512_set1_ps(scale)); /* element h R + r */
    const int nv = cn - p0 < R ? cn - p0 : R;
    const __mmask16 m = (__mmask16)((1u << nv) - 1);
    _Alignas(64) float o[16];
    _mm512_store_ps(o, sv);
#pragma GCC unroll 4
    for (int h = 0; h < H; h++)
        _mm512_mask_storeu_ps(s + h * s_stride + p0, m, _mm512_maskz_loadu_ps(m, o + h * R));
}

static inline __attribute__((always_inline)) void scores16_t(enum be_type T, const float *q, int n_g, int hd,
                                                             const void *const *rows, int cn, float *s,
                                                             int64_t s_stride, float scale)
{
    int g = 0;
    for (; g + 4 <= n_g; g += 4)
        for (int p = 0; p < cn; p += 4)
            scores_blk16(T, 4, q + (int64_t)g * hd, hd, rows, p, cn, s + g * s_stride, s_stride, scale);
    for (; g + 2 <= n_g; g += 2)
        for (int p = 0; p < cn; p += 8)
            scores_blk16(T, 2, q + (int64_t)g * hd, hd, rows, p, cn, s + g * s_stride, s_stride, scale);
    for (; g < n_g; g++)
        for (int p = 0; p < cn; p += 16)
            scores_blk16(T, 1, q + (int64_t)g * hd, hd, rows, p, cn, s + g * s_stride, s_stride, scale);
}

void be_cpu__attn_scores_avx512(enum be_type t, const float *q, int n_g, int hd, const void *const *rows, int cn,
                                float *s, int64_t s_stride, float scale)
{
    if (hd % 16 != 0) {
        be_cpu__attn_scores_avx2(t, q, n_g, hd, rows, cn, s, s_stride, scale);
        return;
    }
    switch (t) {
    case BE_TYPE_F32: scores16_t(BE_TYPE_F32, q, n_g, hd, rows, cn, s, s_stride, scale); break;
    case BE_TYPE_F16: scores16_t(BE_TYPE_F16, q, n_g, hd, rows, cn, s, s_stride, scale); break;
    default: scores16_t(BE_TYPE_Q8_0, q, n_g, hd, rows, cn, s, s_stride, scale); break;
    }
}

/* Weighted values: NB heads x IB blocks of 16 values of acc in registers
 * while the chunk's value rows stream past, each row's IB blocks loaded
 * and converted once for the NB heads; the sum over p in order of p. */
static inline __attribute__((always_inline)) void acc_blk16(enum be_type T, const int NB, const int IB, float *acc,
                                                            int hd, int i0, const float *w, int64_t w_stride,
                                                            const void *const *rows, int cn)
{
    __m512 a[4][4];
#pragma GCC unroll 4
    for (int g = 0; g < NB; g++)
#pragma GCC unroll 4
        for (int b = 0; b < IB; b++)
            a[g][b] = _mm512_loadu_ps(acc + (int64_t)g * hd + i0 + 16 * b);
    for (int p = 0; p < cn; p++) {
        __m512 v[4];
#pragma GCC unroll 4
        for (int b = 0; b < IB; b++)
            v[b] = kv_load16(T, rows[p], i0 + 16 * b);
#pragma GCC unroll 4
        for (int g = 0; g < NB; g++) {
            const __m512 wv = _mm512_set1_ps(w[g * w_stride + p]);
#pragma GCC unroll 4
            for (int b = 0; b < IB; b++)
                a[g][b] = _mm512_fmadd_ps(wv, v[b], a[g][b]);
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < NB; g++)
#pragma GCC unroll 4
        for (int b = 0; b < IB; b++)
            _mm512_storeu_ps(acc + (int64_t)g * hd + i0 + 16 * b, a[g][b]);
}

/* acc_blk16 with the head count nb (4, 2 or 1) as a constant. */
static inline __attribute__((always_inline)) void acc_blk16_nb(enum be_type T, int nb, const int IB, float *acc, int hd,
                                                               int i0, const float *w, int64_t w_stride,
                                                               const void *const *rows, int cn)
{
    if (nb == 4)
        acc_blk16(T, 4, IB, acc, hd, i0, w, w_stride, rows, cn);
    else if (nb == 2)
        acc_blk16(T, 2, IB, acc, hd, i0, w, w_stride, rows, cn);
    else
        acc_blk16(T, 1, IB, acc, hd, i0, w, w_stride, rows, cn);
}

static inline __attribute__((always_inline)) void acc16_t(enum be_type T, float *acc, int n_g, int hd, const float *w,
                                                          int64_t w_stride, const void *const *rows, int cn)
{
    for (int g = 0; g < n_g;) {
        const int nb = n_g - g >= 4 ? 4 : n_g - g >= 2 ? 2 : 1;
        float *ag = acc + (int64_t)g * hd;
        const float *wg = w + g * w_stride;
        int i = 0;
        for (; i + 64 <= hd; i += 64)
            acc_blk16_nb(T, nb, 4, ag, hd, i, wg, w_stride, rows, cn);
        for (; i < hd; i += 16)
            acc_blk16_nb(T, nb, 1, ag, hd, i, wg, w_stride, rows, cn);
        g += nb;
    }
}

void be_cpu__attn_acc_avx512(enum be_type t, float *acc, int n_g, int hd, const float *w, int64_t w_stride,
                             const void *const *rows, int cn)
{
    if (hd % 16 != 0) {
        be_cpu__attn_acc_avx2(t, acc, n_g, hd, w, w_stride, rows, cn);
        return;
    }
    switch (t) {
    case BE_TYPE_F32: acc16_t(BE_TYPE_F32, acc, n_g, hd, w, w_stride, rows, cn); break;
    case BE_TYPE_F16: acc16_t(BE_TYPE_F16, acc, n_g, hd, w, w_stride, rows, cn); break;
    default: acc16_t(BE_TYPE_Q8_0, acc, n_g, hd, w, w_stride, rows, cn); break;
    }
}
