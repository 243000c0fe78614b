/* SPDX-License-Identifier: MIT */
/*
 * dot_avx512.c - AVX-512 (F/BW/DQ/VL) dot products: 512-bit kernels for
 * F32, F16, BF16, Q8_0, Q4_0, Q5_0, IQ4_NL and Q6_K; every other type and
 * the activation converters reuse the 256-bit code of dot_avx2.c, included
 * here and so compiled for this level (EVEX encoding, 32 registers, and
 * with DOT_VNNI its VNNI multiply-adds). Q4_K/Q5_K stay 256-bit: a 512-bit
 * version measured no faster at n_y = 1 and slower at n_y = 4 (the nibble
 * halves must be joined with a cross-lane insert per 64 values).
 *
 * dot_vnni_avx512.c includes this file with DOT_VNNI defined: the int8 and
 * int16 multiply-adds become vpdpbusd / vpdpwssd and BF16 uses vdpbf16ps;
 * that table is be_cpu__dot_avx512vnni_fill(), this one
 * be_cpu__dot_avx512_fill().
 *
 * Invariants a reader must know:
 *  - The Makefile compiles *_avx512.c with VNNI and BF16 enabled, but the
 *    plain AVX-512 level must also run on CPUs without them (Skylake-X), so
 *    without DOT_VNNI the file turns them off with a target pragma before
 *    any header: the compiler then cannot emit them, not even when it
 *    auto-vectorizes a scalar loop.
 *  - As in dot_avx2.c: weights are unpacked once per block for all n_y rows,
 *    integer sums are exact per block, scaling is float32 FMA, loads are
 *    unaligned. 32-value blocks are taken two at a time (one zmm); an odd
 *    last block goes through the 256-bit body.
 */
#if defined(__x86_64__) || defined(__i386__)

#if !defined(DOT_VNNI) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("no-avx512vnni,no-avx512bf16")
#endif

#include "kernels/cpu/impl.h"

#include <immintrin.h>
#include <string.h>

#if defined(__clang__)
#ifdef DOT_VNNI
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16"))), apply_to = function)
#else
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl"))), apply_to = function)
#endif
#define DOT_TARGET_PUSHED 1
#endif

#ifdef DOT_VNNI
#define DOT512_FILL be_cpu__dot_avx512vnni_fill
#else
#define DOT512_FILL be_cpu__dot_avx512_fill
#endif
void DOT512_FILL(struct be_cpu_kernels *k);

/* The 256-bit kernels, compiled again for this level. */
#define DOT256_FILL dot256_fill
#define DOT256_LINKAGE static
#include "kernels/cpu/dot_avx2.c"

/* ---- helpers ---- */

HOT __m512i dp512_u8s8(__m512i acc, __m512i u, __m512i s)
{
#ifdef DOT_VNNI
    return _mm512_dpbusd_epi32(acc, u, s);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#endif
}

HOT __m512i dp512_i16(__m512i acc, __m512i a, __m512i b)
{
#ifdef DOT_VNNI
    return _mm512_dpwssd_epi32(acc, a, b);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
}

HOT __m512i cat256(__m256i lo, __m256i hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

HOT __m512 cat_set1_ps(float lo, float hi)
{
    return _mm512_insertf32x8(_mm512_set1_ps(lo), _mm256_set1_ps(hi), 1);
}

HOT __m512i cat_set1_epi16(int lo, int hi)
{
    return _mm512_inserti64x4(_mm512_set1_epi16((short)lo), _mm256_set1_epi16((short)hi), 1);
}

/* ---- float types ---- */

HOT __m512 f32x16(const float *p, __mmask16 m)
{
    return _mm512_maskz_loadu_ps(m, p);
}

HOT __m512 f16x16(const be_f16_t *p, __mmask16 m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

HOT __m512 bf16x16(const be_bf16_t *p, __mmask16 m)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

/* LOAD16(p, mask) converts up to 16 values to f32 (masked-off lanes 0). */
#define FLOAT512_BODY(name, T, LOAD16)                                                     \
    HOT void name##_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny, \
                         float *s)                                                         \
    {                                                                                      \
        const T *x = vx;                                                                   \
        Y_ROWS(T, y, vy, ys, ny);                                                          \
        __m512 a0[BE_CPU_MAX_NY], a1[BE_CPU_MAX_NY];                                       \
        for (int j = 0; j < ny; j++)                                                       \
            a0[j] = a1[j] = _mm512_setzero_ps();                                           \
        const __mmask16 all = 0xffff;                                                      \
        int64_t i = 0;                                                                     \
        for (; i + 32 <= n; i += 32) { /* hot */                                           \
            const __m512 x0 = LOAD16(x + i, all), x1 = LOAD16(x + i + 16, all);            \
            for (int j = 0; j < ny; j++) {                                                 \
                a0[j] = _mm512_fmadd_ps(x0, LOAD16(y[j] + i, all), a0[j]);                 \
                a1[j] = _mm512_fmadd_ps(x1, LOAD16(y[j] + i + 16, all), a1[j]);            \
            }                                                                              \
        }                                                                                  \
        for (; i < n; i += 16) {                                                           \
            const __mmask16 m = n - i >= 16 ? all : (__mmask16)((1u << (n - i)) - 1);      \
            const __m512 x0 = LOAD16(x + i, m);                                            \
            for (int j = 0; j < ny; j++)                                                   \
                a0[j] = _mm512_fmadd_ps(x0, LOAD16(y[j] + i, m), a0[j]);                   \
        }                                                                                  \
        for (int j = 0; j < ny; j++)                                                       \
            s[j] = _mm512_reduce_add_ps(_mm512_add_ps(a0[j], a1[j]));                      \
    }

FLOAT512_BODY(d512_f32, float, f32x16)
FLOAT512_BODY(d512_f16, be_f16_t, f16x16)
DOT_ENTRY(d512_f32)
DOT_ENTRY(d512_f16)

#ifdef DOT_VNNI
/* BF16 pairs multiplied and summed into f32 by vdpbf16ps, 32 values a step. */
HOT __m512bh bf16x32(const be_bf16_t *p, __mmask32 m)
{
    return (__m512bh)_mm512_maskz_loadu_epi16(m, p);
}

HOT void d512_bf16_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny,
                        float *s)
{
    const be_bf16_t *x = vx;
    Y_ROWS(be_bf16_t, y, vy, ys, ny);
    __m512 a0[BE_CPU_MAX_NY], a1[BE_CPU_MAX_NY];
    for (int j = 0; j < ny; j++)
        a0[j] = a1[j] = _mm512_setzero_ps();
    const __mmask32 all = 0xffffffffu;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) { /* hot */
        const __m512bh x0 = bf16x32(x + i, all), x1 = bf16x32(x + i + 32, all);
        for (int j = 0; j < ny; j++) {
            a0[j] = _mm512_dpbf16_ps(a0[j], x0, bf16x32(y[j] + i, all));
            a1[j] = _mm512_dpbf16_ps(a1[j], x1, bf16x32(y[j] + i + 32, all));
        }
    }
    for (; i < n; i += 32) {
        const __mmask32 m = n - i >= 32 ? all : (__mmask32)((1u << (n - i)) - 1);
        const __m512bh x0 = bf16x32(x + i, m);
        for (int j = 0; j < ny; j++)
            a0[j] = _mm512_dpbf16_ps(a0[j], x0, bf16x32(y[j] + i, m));
    }
    for (int j = 0; j < ny; j++)
        s[j] = _mm512_reduce_add_ps(_mm512_add_ps(a0[j], a1[j]));
}
#else
FLOAT512_BODY(d512_bf16, be_bf16_t, bf16x16)
#endif
DOT_ENTRY(d512_bf16)

/* ---- signed 32-value blocks against Q8_0, two blocks per zmm ---- */

HOT __m256i unpack_q8_0(const struct block_q8_0 *b)
{
    return loadu256(b->qs);
}

#define SIGNED32_512_BODY(name, BT, UNPACK, TAIL)                                          \
    HOT void name##_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny, \
                         float *s)                                                         \
    {                                                                                      \
        const BT *x = vx;                                                                  \
        Y_ROWS(struct block_q8_0, y, vy, ys, ny);                                          \
        __m512 acc[BE_CPU_MAX_NY];                                                         \
        for (int j = 0; j < ny; j++)                                                       \
            acc[j] = _mm512_setzero_ps();                                                  \
        const int64_t nb = n / 32;                                                         \
        int64_t i = 0;                                                                     \
        for (; i + 2 <= nb; i += 2) { /* hot */                                            \
            const __m512i w = cat256(UNPACK(&x[i]), UNPACK(&x[i + 1]));                    \
            const __m512i aw = _mm512_abs_epi8(w);                                         \
            const __mmask64 neg = _mm512_movepi8_mask(w);                                  \
            const float d0 = f16f(x[i].d), d1 = f16f(x[i + 1].d);                          \
            for (int j = 0; j < ny; j++) {                                                 \
                __m512i yv = cat256(loadu256(y[j][i].qs), loadu256(y[j][i + 1].qs));       \
                yv = _mm512_mask_sub_epi8(yv, neg, _mm512_setzero_si512(), yv);            \
                const __m512i p = dp512_u8s8(_mm512_setzero_si512(), aw, yv);              \
                const __m512 sc = cat_set1_ps(d0 * f16f(y[j][i].d), d1 * f16f(y[j][i + 1].d)); \
                acc[j] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p), acc[j]);               \
            }                                                                              \
        }                                                                                  \
        float t[BE_CPU_MAX_NY] = {0};                                                      \
        if (i < nb)                                                                        \
            TAIL##_body(32, &x[i], &y[0][i], ys, ny, t);                                   \
        for (int j = 0; j < ny; j++)                                                       \
            s[j] = _mm512_reduce_add_ps(acc[j]) + t[j];                                    \
    }

SIGNED32_512_BODY(d512_q8_0, struct block_q8_0, unpack_q8_0, d256_q8_0)
SIGNED32_512_BODY(d512_q4_0, struct block_q4_0, unpack_q4_0, d256_q4_0)
SIGNED32_512_BODY(d512_q5_0, struct block_q5_0, unpack_q5_0, d256_q5_0)
SIGNED32_512_BODY(d512_iq4_nl, struct block_iq4_nl, unpack_iq4_nl, d256_iq4_nl)
DOT_ENTRY(d512_q8_0)
DOT_ENTRY(d512_q4_0)
DOT_ENTRY(d512_q5_0)
DOT_ENTRY(d512_iq4_nl)

/* ---- K-quants ---- */

/* Q6_K: half h is two zmm: low nibbles of ql[64h..64h+63] (values 0-63 of
 * the half) and high nibbles (64-127), with the 2-bit highs from qh. */
HOT void d512_q6_k_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny,
                        float *s)
{
    const struct block_q6_K *x = vx;
    Y_ROWS(struct block_q8_K, y, vy, ys, ny);
    __m512 acc[BE_CPU_MAX_NY];
    for (int j = 0; j < ny; j++)
        acc[j] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f), m3 = _mm512_set1_epi8(3);
    /* int16 lane l of a zmm of 64 values belongs to sub-block l / 8. */
    const __m512i sub_idx = _mm512_srli_epi16(
        _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14,
                         13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 3);
    for (int64_t i = 0; i < n / QK_K; i++) { /* hot */
        const __m256i sc16 = _mm256_cvtepi8_epi16(loadu128(x[i].scales));
        const __m512i sc512 = _mm512_castsi256_si512(sc16);
        __m512i sumi[BE_CPU_MAX_NY];
        for (int j = 0; j < ny; j++) { /* the -32 offset: -32 * sum(sc[s] * bsums[s]) */
            const __m256i off = _mm256_madd_epi16(sc16, loadu256(y[j][i].bsums));
            sumi[j] = _mm512_zextsi256_si512(_mm256_slli_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), off), 5));
        }
        for (int h = 0; h < 2; h++) {
            const __m512i q4 = _mm512_loadu_si512(x[i].ql + 64 * h);
            const __m256i qh = loadu256(x[i].qh + 32 * h);
            const __m512i qh2 = cat256(qh, _mm256_srli_epi16(qh, 2));
            const __m512i wa = _mm512_or_si512(_mm512_and_si512(q4, m4),
                                               _mm512_slli_epi16(_mm512_and_si512(qh2, m3), 4));
            const __m512i wb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(q4, 4), m4),
                                               _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh2, 4), m3), 4));
            const __m512i sa = _mm512_permutexvar_epi16(_mm512_add_epi16(sub_idx, _mm512_set1_epi16((short)(8 * h))), sc512);
            const __m512i sb = _mm512_permutexvar_epi16(_mm512_add_epi16(sub_idx, _mm512_set1_epi16((short)(8 * h + 4))), sc512);
            for (int j = 0; j < ny; j++) {
                const int8_t *q8 = y[j][i].qs + 128 * h;
                sumi[j] = dp512_i16(sumi[j], _mm512_maddubs_epi16(wa, _mm512_loadu_si512(q8)), sa);
                sumi[j] = dp512_i16(sumi[j], _mm512_maddubs_epi16(wb, _mm512_loadu_si512(q8 + 64)), sb);
            }
        }
        const float dx = f16f(x[i].d);
        for (int j = 0; j < ny; j++)
            acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(dx * y[j][i].d), _mm512_cvtepi32_ps(sumi[j]), acc[j]);
    }
    for (int j = 0; j < ny; j++)
        s[j] = _mm512_reduce_add_ps(acc[j]);
}
DOT_ENTRY(d512_q6_k)

/* ---- table ---- */

void DOT512_FILL(struct be_cpu_kernels *k)
{
    dot256_fill(k);
    k->dot[BE_TYPE_F32] = d512_f32;
    k->dot[BE_TYPE_F16] = d512_f16;
    k->dot[BE_TYPE_BF16] = d512_bf16;
    k->dot[BE_TYPE_Q8_0] = d512_q8_0;
    k->dot[BE_TYPE_Q4_0] = d512_q4_0;
    k->dot[BE_TYPE_Q5_0] = d512_q5_0;
    k->dot[BE_TYPE_IQ4_NL] = d512_iq4_nl;
    k->dot[BE_TYPE_Q6_K] = d512_q6_k;
#ifdef DOT_VNNI
    /* Measured (Zen 4): IQ4_XS and Q3_K run slower with vpdpwssd, whose
     * latency chains their scaled sums; they keep the AVX-512 level's. */
    k->dot[BE_TYPE_IQ4_XS] = NULL;
    k->dot[BE_TYPE_Q3_K] = NULL;
#endif
}

#ifdef DOT_TARGET_PUSHED
#pragma clang attribute pop
#endif

#endif /* x86 */
