/* SPDX-License-Identifier: MIT */
/*
 * dot_avx2.c - AVX2/FMA/F16C dot products of every weight type with its
 * activation type (1 to 4 activation rows per weight row), and the
 * activation converters F32 -> Q8_0, Q8_1, Q8_K, F16, BF16 (see impl.h).
 *
 * The Makefile compiles this file with -mavx2 -mfma -mf16c; kernels.c calls
 * be_cpu__dot_avx2_fill() only after CPUID said those instructions run.
 * dot_avx512.c includes this file to reuse the 256-bit kernels at the
 * AVX-512 levels (with DOT_VNNI defined, the int8 and int16 multiply-adds
 * become VNNI's vpdpbusd / vpdpwssd); it then sets DOT256_FILL.
 *
 * Invariants a reader must know:
 *  - Each weight block is loaded and unpacked once and then multiplied with
 *    the same block of all n_y activation rows; n_y is a compile-time
 *    constant inside the bodies (DOT_ENTRY), so the row loops unroll.
 *  - Integer sums stay exact inside a block (or a K-quant super-block) and
 *    are scaled in float32 with FMA, as llama.cpp does; only the float
 *    summation order differs from be_vec_dot_ref().
 *  - K-quant canonical order (Q4_K, Q5_K, Q6_K): each super-block is first
 *    reduced to exact integers, S = sum_s sc[s] * dot_s (Q6_K's -32 offset
 *    included) and for Q4_K/Q5_K M = sum_s min[s] * bsum_s, and then each
 *    (row, token) takes one float step per super-block, in order:
 *    acc = fma(d * yd, (float)S, acc), accm = fma(dmin * yd, (float)M, accm),
 *    result acc - accm (Q6_K: acc). The packed-panel GEMM of dot_avx512.c
 *    does the same steps lane by lane, so dot and GEMM give the same bits;
 *    a change to one must be made to the other.
 *  - The activation converters are bit-identical to be_quant_row(): same
 *    float operations in the same order, rounding done exactly (roundf's
 *    half-away-from-zero rebuilt from trunc, Q8_K's rint by vroundps), and
 *    only order-independent reductions (max, integer sums). Nothing here
 *    multiplies and adds in one C expression where a fused multiply-add
 *    would change a rounded result.
 *  - Rows are only 2-byte aligned (blocks are packed): every load is
 *    unaligned.
 */
#include "kernels/cpu/impl.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#if defined(__clang__) && !defined(DOT_TARGET_PUSHED)
/* Builds that do not pass the Makefile's ISA flags (the fuzzers) still
 * compile this file; the functions are only called after CPUID checks. */
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#define DOT256_CLANG_POP 1
#endif

#ifndef DOT256_FILL
#define DOT256_FILL be_cpu__dot_avx2_fill
#define DOT256_LINKAGE
void be_cpu__dot_avx2_fill(struct be_cpu_kernels *k);
#endif

#define HOT static inline __attribute__((always_inline))
/* The loops over the n_y activation rows must unroll (n_y is a constant in
 * each body) so that the per-row accumulators stay in registers: -O2 alone
 * kept them in a stack array, and every multiply-add then waited on a store
 * and a reload (Q8_0 at 4 rows spent most of its time there). */
#define UNROLL_NY _Pragma("GCC unroll 8")

/* ---- helpers ---- */

HOT __m256i loadu256(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

HOT __m128i loadu128(const void *p)
{
    return _mm_loadu_si128((const __m128i *)p);
}

HOT float f16f(be_f16_t h)
{
    return _cvtsh_ss(h);
}

HOT float hsum256_ps(__m256 v)
{
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

HOT float hsum128_ps(__m128 r)
{
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

HOT int hsum256_epi32(__m256i v)
{
    __m128i r = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0x4e));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0xb1));
    return _mm_cvtsi128_si32(r);
}

/* acc + sum of 4 products u * s per int32 lane (u unsigned, s signed bytes). */
HOT __m256i dp_u8s8(__m256i acc, __m256i u, __m256i s)
{
#ifdef DOT_VNNI
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

/* acc + sum of 2 products a * b per int32 lane (signed int16). */
HOT __m256i dp_i16(__m256i acc, __m256i a, __m256i b)
{
#ifdef DOT_VNNI
    return _mm256_dpwssd_epi32(acc, a, b);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

/* Signed weights w times signed activations y: |w| * (y with w's sign). */
HOT __m256i dp_s8s8(__m256i acc, __m256i aw, __m256i w, __m256i y)
{
    return dp_u8s8(acc, aw, _mm256_sign_epi8(y, w));
}

/* 16 bytes of nibbles -> 32 values 0..15: low nibbles (values 0-15) first,
 * the ggml order of the 32-value blocks. */
HOT __m256i nibbles32(const uint8_t *qs)
{
    const __m128i q = loadu128(qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0f));
}

/* 32 bits (little-endian) -> 32 bytes, 0xff where the bit is set. */
HOT __m256i bits_to_bytes(const uint8_t *p)
{
    uint32_t x32;
    memcpy(&x32, p, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* int16 lanes 0-7 = a (values 0-15 of a maddubs), lanes 8-15 = b. */
HOT __m256i scale_pair(int a, int b)
{
    return _mm256_set_m128i(_mm_set1_epi16((short)b), _mm_set1_epi16((short)a));
}

/* Dispatches to name##_body with n_y as a constant so its loops unroll. */
#define DOT_ENTRY(name)                                                                    \
    static void name(int64_t n, const void *x, const void *y, size_t ys, int n_y, float *s) \
    {                                                                                      \
        switch (n_y) {                                                                     \
        case 1: name##_body(n, x, y, ys, 1, s); break;                                     \
        case 2: name##_body(n, x, y, ys, 2, s); break;                                     \
        case 3: name##_body(n, x, y, ys, 3, s); break;                                     \
        default: name##_body(n, x, y, ys, 4, s); break;                                    \
        }                                                                                  \
    }

#define Y_ROWS(T, y, vy, ys, ny)                                                           \
    const T *y[BE_CPU_MAX_NY];                                                             \
    for (int j_ = 0; j_ < (ny); j_++)                                                      \
        y[j_] = (const T *)((const uint8_t *)(vy) + (size_t)j_ * (ys))

/* ---- float types ---- */

HOT __m256 f16x8(const be_f16_t *p)
{
    return _mm256_cvtph_ps(loadu128(p));
}

HOT __m256 bf16x8(const be_bf16_t *p)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(loadu128(p)), 16));
}

HOT float bf16f(be_bf16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One body for the three float types: LOAD8 converts 8 values to f32. */
#define FLOAT_BODY(name, T, LOAD8, GET1)                                                   \
    HOT void name##_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny, \
                         float *s)                                                         \
    {                                                                                      \
        const T *x = vx;                                                                   \
        Y_ROWS(T, y, vy, ys, ny);                                                          \
        __m256 a0[BE_CPU_MAX_NY], a1[BE_CPU_MAX_NY];                                       \
        UNROLL_NY for (int j = 0; j < ny; j++)                                                       \
            a0[j] = a1[j] = _mm256_setzero_ps();                                           \
        int64_t i = 0;                                                                     \
        for (; i + 16 <= n; i += 16) { /* hot */                                           \
            const __m256 x0 = LOAD8(x + i), x1 = LOAD8(x + i + 8);                         \
            UNROLL_NY for (int j = 0; j < ny; j++) {                                                 \
                a0[j] = _mm256_fmadd_ps(x0, LOAD8(y[j] + i), a0[j]);                       \
                a1[j] = _mm256_fmadd_ps(x1, LOAD8(y[j] + i + 8), a1[j]);                   \
            }                                                                              \
        }                                                                                  \
        for (; i + 8 <= n; i += 8) {                                                       \
            const __m256 x0 = LOAD8(x + i);                                                \
            UNROLL_NY for (int j = 0; j < ny; j++)                                                   \
                a0[j] = _mm256_fmadd_ps(x0, LOAD8(y[j] + i), a0[j]);                       \
        }                                                                                  \
        UNROLL_NY for (int j = 0; j < ny; j++) {                                                     \
            float t = hsum256_ps(_mm256_add_ps(a0[j], a1[j]));                             \
            for (int64_t k = i; k < n; k++)                                                \
                t += GET1(x[k]) * GET1(y[j][k]);                                           \
            s[j] = t;                                                                      \
        }                                                                                  \
    }

#define F32_GET1(v) (v)
FLOAT_BODY(d256_f32, float, _mm256_loadu_ps, F32_GET1)
FLOAT_BODY(d256_f16, be_f16_t, f16x8, f16f)
FLOAT_BODY(d256_bf16, be_bf16_t, bf16x8, bf16f)
DOT_ENTRY(d256_f32)
DOT_ENTRY(d256_f16)
DOT_ENTRY(d256_bf16)

/* ---- 32-value blocks ---- */

HOT void d256_q8_0_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny,
                        float *s)
{
    const struct block_q8_0 *x = vx;
    Y_ROWS(struct block_q8_0, y, vy, ys, ny);
    __m256 acc[BE_CPU_MAX_NY];
    UNROLL_NY for (int j = 0; j < ny; j++)
        acc[j] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) { /* hot */
        const __m256i w = loadu256(x[i].qs);
        const __m256i aw = _mm256_sign_epi8(w, w);
        const float dx = f16f(x[i].d);
        UNROLL_NY for (int j = 0; j < ny; j++) {
            const __m256i p = dp_s8s8(_mm256_setzero_si256(), aw, w, loadu256(y[j][i].qs));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * f16f(y[j][i].d)), _mm256_cvtepi32_ps(p),
                                     acc[j]);
        }
    }
    UNROLL_NY for (int j = 0; j < ny; j++)
        s[j] = hsum256_ps(acc[j]);
}
DOT_ENTRY(d256_q8_0)

/* Signed 32-value blocks against Q8_0: UNPACK(block) gives the 32 signed
 * weights in value order. */
#define SIGNED32_BODY(name, BT, UNPACK)                                                    \
    HOT void name##_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny, \
                         float *s)                                                         \
    {                                                                                      \
        const BT *x = vx;                                                                  \
        Y_ROWS(struct block_q8_0, y, vy, ys, ny);                                          \
        __m256 acc[BE_CPU_MAX_NY];                                                         \
        UNROLL_NY for (int j = 0; j < ny; j++)                                                       \
            acc[j] = _mm256_setzero_ps();                                                  \
        for (int64_t i = 0; i < n / 32; i++) { /* hot */                                   \
            const __m256i w = UNPACK(&x[i]);                                               \
            const __m256i aw = _mm256_sign_epi8(w, w);                                     \
            const float dx = f16f(x[i].d);                                                 \
            UNROLL_NY for (int j = 0; j < ny; j++) {                                                 \
                const __m256i p = dp_s8s8(_mm256_setzero_si256(), aw, w, loadu256(y[j][i].qs)); \
                acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * f16f(y[j][i].d)),             \
                                         _mm256_cvtepi32_ps(p), acc[j]);                   \
            }                                                                              \
        }                                                                                  \
        UNROLL_NY for (int j = 0; j < ny; j++)                                                       \
            s[j] = hsum256_ps(acc[j]);                                                     \
    }

HOT __m256i unpack_q4_0(const struct block_q4_0 *b)
{
    return _mm256_sub_epi8(nibbles32(b->qs), _mm256_set1_epi8(8));
}

/* Q5_0: value - 16 = nibble | 0xf0 (as int8) where the fifth bit is clear. */
HOT __m256i unpack_q5_0(const struct block_q5_0 *b)
{
    const __m256i hi = _mm256_andnot_si256(bits_to_bytes(b->qh), _mm256_set1_epi8((char)0xf0));
    return _mm256_or_si256(nibbles32(b->qs), hi);
}

HOT __m256i unpack_iq4_nl(const struct block_iq4_nl *b)
{
    const __m256i tbl = _mm256_broadcastsi128_si256(loadu128(be_iq4nl_values));
    return _mm256_shuffle_epi8(tbl, nibbles32(b->qs));
}

SIGNED32_BODY(d256_q4_0, struct block_q4_0, unpack_q4_0)
SIGNED32_BODY(d256_q5_0, struct block_q5_0, unpack_q5_0)
SIGNED32_BODY(d256_iq4_nl, struct block_iq4_nl, unpack_iq4_nl)
DOT_ENTRY(d256_q4_0)
DOT_ENTRY(d256_q5_0)
DOT_ENTRY(d256_iq4_nl)

/* Unsigned 32-value blocks with a min against Q8_1: d*dy*sum(q*qy) + m*s. */
#define MIN32_BODY(name, BT, UNPACK)                                                       \
    HOT void name##_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny, \
                         float *s)                                                         \
    {                                                                                      \
        const BT *x = vx;                                                                  \
        Y_ROWS(struct block_q8_1, y, vy, ys, ny);                                          \
        __m256 acc[BE_CPU_MAX_NY];                                                         \
        float accm[BE_CPU_MAX_NY];                                                         \
        UNROLL_NY for (int j = 0; j < ny; j++) {                                                     \
            acc[j] = _mm256_setzero_ps();                                                  \
            accm[j] = 0.0f;                                                                \
        }                                                                                  \
        for (int64_t i = 0; i < n / 32; i++) { /* hot */                                   \
            const __m256i w = UNPACK(&x[i]);                                               \
            const float dx = f16f(x[i].d), mx = f16f(x[i].m);                              \
            UNROLL_NY for (int j = 0; j < ny; j++) {                                                 \
                const __m256i p = dp_u8s8(_mm256_setzero_si256(), w, loadu256(y[j][i].qs)); \
                acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * f16f(y[j][i].d)),             \
                                         _mm256_cvtepi32_ps(p), acc[j]);                   \
                accm[j] += mx * f16f(y[j][i].s);                                           \
            }                                                                              \
        }                                                                                  \
        UNROLL_NY for (int j = 0; j < ny; j++)                                                       \
            s[j] = hsum256_ps(acc[j]) + accm[j];                                           \
    }

HOT __m256i unpack_q4_1(const struct block_q4_1 *b)
{
    return nibbles32(b->qs);
}

HOT __m256i unpack_q5_1(const struct block_q5_1 *b)
{
    const __m256i hi = _mm256_and_si256(bits_to_bytes(b->qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(nibbles32(b->qs), hi);
}

MIN32_BODY(d256_q4_1, struct block_q4_1, unpack_q4_1)
MIN32_BODY(d256_q5_1, struct block_q5_1, unpack_q5_1)
DOT_ENTRY(d256_q4_1)
DOT_ENTRY(d256_q5_1)

/* ---- K-quants (256-value super-blocks) against Q8_K ---- */

/* The 8 six-bit scales (bytes 0-7) and mins (bytes 8-15) of Q4_K/Q5_K. */
HOT void k4_scales_decode(const uint8_t *s12, uint32_t utmp[4])
{
    const uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
    memcpy(utmp, s12, 12);
    utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
    const uint32_t uaux = utmp[1] & kmask1;
    utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
    utmp[2] = uaux;
    utmp[0] &= kmask1;
}

/* min term of Q4_K/Q5_K: mins[s] * (bsums[2s] + bsums[2s+1]), 4 int32 lanes. */
HOT __m128i k4_min_dot(__m128i mins16, const int16_t *bsums)
{
    const __m256i bs = loadu256(bsums);
    const __m128i q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    return _mm_madd_epi16(mins16, q8s);
}

/* Q4_K (HAS_QH 0) and Q5_K (HAS_QH 1): 4 chunks of 64 values, low nibbles
 * of the 32 bytes are sub-block 2p, high nibbles sub-block 2p+1.
 * The float steps follow the K-quant canonical order (see the top of the
 * file): per super-block the exact integer sums S = sum sc[s] * dot_s and
 * M = sum mins[s] * bsum_s, then acc = fma(d * yd, S, acc) and
 * accm = fma(dmin * yd, M, accm) in lanes 0 and 2 of one register (1 and 3
 * are copies); the result is acc - accm. */
#define K4_BODY(name, BT, HAS_QH)                                                          \
    HOT void name##_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny, \
                         float *s)                                                         \
    {                                                                                      \
        const BT *x = vx;                                                                  \
        Y_ROWS(struct block_q8_K, y, vy, ys, ny);                                          \
        __m128 acc[BE_CPU_MAX_NY]; /* lane 0: acc, lane 2: accm */                         \
        UNROLL_NY for (int j = 0; j < ny; j++)                                                       \
            acc[j] = _mm_setzero_ps();                                                     \
        const __m256i m4 = _mm256_set1_epi8(0x0f);                                         \
        for (int64_t i = 0; i < n / QK_K; i++) { /* hot */                                 \
            uint32_t utmp[4];                                                              \
            k4_scales_decode(x[i].scales, utmp);                                           \
            const uint8_t *sc = (const uint8_t *)utmp;                                     \
            const __m128i mins16 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)utmp[3], (int)utmp[2])); \
            const float dx = f16f(x[i].d), dmx = f16f(x[i].dmin);                          \
            __m256i sumi[BE_CPU_MAX_NY];                                                   \
            UNROLL_NY for (int j = 0; j < ny; j++)                                                   \
                sumi[j] = _mm256_setzero_si256();                                          \
            __m256i hv = _mm256_setzero_si256();                                           \
            if (HAS_QH)                                                                    \
                hv = loadu256(((const struct block_q5_K *)(const void *)&x[i])->qh);       \
            for (int p = 0; p < 4; p++) {                                                  \
                const __m256i q = loadu256(x[i].qs + 32 * p);                              \
                __m256i lo = _mm256_and_si256(q, m4);                                      \
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);                \
                if (HAS_QH) {                                                              \
                    const __m256i one = _mm256_set1_epi8(1);                               \
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hv, one), 4)); \
                    hv = _mm256_srli_epi16(hv, 1);                                         \
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(hv, one), 4)); \
                    hv = _mm256_srli_epi16(hv, 1);                                         \
                }                                                                          \
                const __m256i sl = _mm256_set1_epi16(sc[2 * p]);                           \
                const __m256i sh = _mm256_set1_epi16(sc[2 * p + 1]);                       \
                UNROLL_NY for (int j = 0; j < ny; j++) {                                             \
                    const int8_t *q8 = y[j][i].qs + 64 * p;                                \
                    sumi[j] = dp_i16(sumi[j], _mm256_maddubs_epi16(lo, loadu256(q8)), sl); \
                    sumi[j] = dp_i16(sumi[j], _mm256_maddubs_epi16(hi, loadu256(q8 + 32)), sh); \
                }                                                                          \
            }                                                                              \
            const __m128 dxm = _mm_setr_ps(dx, dx, dmx, dmx);                              \
            UNROLL_NY for (int j = 0; j < ny; j++) {                                                 \
                const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sumi[j]),          \
                                                 _mm256_extracti128_si256(sumi[j], 1));    \
                const __m128i mn4 = k4_min_dot(mins16, y[j][i].bsums);                     \
                __m128i sm = _mm_add_epi32(_mm_unpacklo_epi64(s4, mn4), _mm_unpackhi_epi64(s4, mn4)); \
                sm = _mm_add_epi32(sm, _mm_shuffle_epi32(sm, 0xb1)); /* S, S, M, M */      \
                const __m128 dd = _mm_mul_ps(dxm, _mm_set1_ps(y[j][i].d));                 \
                acc[j] = _mm_fmadd_ps(dd, _mm_cvtepi32_ps(sm), acc[j]);                    \
            }                                                                              \
        }                                                                                  \
        UNROLL_NY for (int j = 0; j < ny; j++)                                                       \
            s[j] = _mm_cvtss_f32(acc[j]) - _mm_cvtss_f32(_mm_movehl_ps(acc[j], acc[j]));   \
    }

K4_BODY(d256_q4_k, struct block_q4_K, 0)
K4_BODY(d256_q5_k, struct block_q5_K, 1)
DOT_ENTRY(d256_q4_k)
DOT_ENTRY(d256_q5_k)

/* Q6_K: per half h, 4 vectors of 32 unsigned 6-bit values (stored +32);
 * the -32 is applied once per super-block through the bsums. */
HOT void d256_q6_k_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny,
                        float *s)
{
    const struct block_q6_K *x = vx;
    Y_ROWS(struct block_q8_K, y, vy, ys, ny);
    __m128 acc[BE_CPU_MAX_NY]; /* lane 0 */
    UNROLL_NY for (int j = 0; j < ny; j++)
        acc[j] = _mm_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < n / QK_K; i++) { /* hot */
        const int8_t *sc = x[i].scales;
        const __m256i sc16 = _mm256_cvtepi8_epi16(loadu128(sc));
        __m256i sumi[BE_CPU_MAX_NY];
        UNROLL_NY for (int j = 0; j < ny; j++) /* the -32 offset: -32 * sum(sc[s] * bsums[s]) */
            sumi[j] = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_setzero_si256(),
                                                         _mm256_madd_epi16(sc16, loadu256(y[j][i].bsums))), 5);
        for (int h = 0; h < 2; h++) {
            const __m256i qa = loadu256(x[i].ql + 64 * h), qb = loadu256(x[i].ql + 64 * h + 32);
            const __m256i qh = loadu256(x[i].qh + 32 * h);
            for (int k = 0; k < 4; k++) {
                const __m256i l4 = _mm256_and_si256(k < 2 ? (k == 0 ? qa : qb)
                                                          : _mm256_srli_epi16(k == 2 ? qa : qb, 4), m4);
                const __m256i h2 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m3);
                const __m256i w = _mm256_or_si256(l4, _mm256_slli_epi16(h2, 4));
                const int sb = 8 * h + 2 * k;
                const __m256i scv = scale_pair(sc[sb], sc[sb + 1]);
                UNROLL_NY for (int j = 0; j < ny; j++) {
                    const __m256i p16 = _mm256_maddubs_epi16(w, loadu256(y[j][i].qs + 128 * h + 32 * k));
                    sumi[j] = dp_i16(sumi[j], p16, scv);
                }
            }
        }
        const float dx = f16f(x[i].d);
        UNROLL_NY for (int j = 0; j < ny; j++) /* canonical order: one exact S per super-block */
            acc[j] = _mm_fmadd_ss(_mm_set_ss(dx * y[j][i].d), _mm_cvtsi32_ss(_mm_setzero_ps(), hsum256_epi32(sumi[j])),
                                  acc[j]);
    }
    UNROLL_NY for (int j = 0; j < ny; j++)
        s[j] = _mm_cvtss_f32(acc[j]);
}
DOT_ENTRY(d256_q6_k)

/* Q2_K: 2-bit unsigned values, 4-bit scale and min per 16 values. */
HOT void d256_q2_k_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny,
                        float *s)
{
    const struct block_q2_K *x = vx;
    Y_ROWS(struct block_q8_K, y, vy, ys, ny);
    __m256 acc[BE_CPU_MAX_NY];
    UNROLL_NY for (int j = 0; j < ny; j++)
        acc[j] = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < n / QK_K; i++) { /* hot */
        const __m128i s8 = loadu128(x[i].scales);
        const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s8, 4), _mm_set1_epi8(0x0f)));
        uint8_t sc[16];
        for (int k = 0; k < 16; k++)
            sc[k] = x[i].scales[k] & 0x0f;
        __m256i sumi[BE_CPU_MAX_NY];
        UNROLL_NY for (int j = 0; j < ny; j++)
            sumi[j] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i qv = loadu256(x[i].qs + 32 * h);
            for (int k = 0; k < 4; k++) {
                const __m256i w = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * k), m3);
                const int sb = 8 * h + 2 * k;
                const __m256i scv = scale_pair(sc[sb], sc[sb + 1]);
                UNROLL_NY for (int j = 0; j < ny; j++) {
                    const __m256i p16 = _mm256_maddubs_epi16(w, loadu256(y[j][i].qs + 128 * h + 32 * k));
                    sumi[j] = dp_i16(sumi[j], p16, scv);
                }
            }
        }
        const float dx = f16f(x[i].d), dmx = f16f(x[i].dmin);
        UNROLL_NY for (int j = 0; j < ny; j++) {
            const float yd = y[j][i].d;
            const __m256i mn = _mm256_madd_epi16(mins16, loadu256(y[j][i].bsums));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * yd), _mm256_cvtepi32_ps(sumi[j]), acc[j]);
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(-dmx * yd), _mm256_cvtepi32_ps(mn), acc[j]);
        }
    }
    UNROLL_NY for (int j = 0; j < ny; j++)
        s[j] = hsum256_ps(acc[j]);
}
DOT_ENTRY(d256_q2_k)

/* Q3_K: 3-bit values (2 low bits in qs, the third in hmask; stored +4), the
 * -4 applied through the bsums; 16 signed 6-bit scales. */
HOT void d256_q3_k_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny,
                        float *s)
{
    const struct block_q3_K *x = vx;
    Y_ROWS(struct block_q8_K, y, vy, ys, ny);
    __m256 acc[BE_CPU_MAX_NY];
    UNROLL_NY for (int j = 0; j < ny; j++)
        acc[j] = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    for (int64_t i = 0; i < n / QK_K; i++) { /* hot */
        const uint8_t *s12 = x[i].scales;
        int8_t sc[16];
        for (int k = 0; k < 16; k++) {
            int lo = k < 8 ? s12[k] & 0x0f : s12[k - 8] >> 4;
            int hi = (s12[8 + k % 4] >> (2 * (k / 4))) & 3;
            sc[k] = (int8_t)((lo | (hi << 4)) - 32);
        }
        const __m256i sc16 = _mm256_cvtepi8_epi16(loadu128(sc));
        __m256i sumi[BE_CPU_MAX_NY];
        UNROLL_NY for (int j = 0; j < ny; j++) /* the -4 offset: -4 * sum(sc[s] * bsums[s]) */
            sumi[j] = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_setzero_si256(),
                                                         _mm256_madd_epi16(sc16, loadu256(y[j][i].bsums))), 2);
        const __m256i hm = loadu256(x[i].hmask);
        for (int h = 0; h < 2; h++) {
            const __m256i qv = loadu256(x[i].qs + 32 * h);
            for (int k = 0; k < 4; k++) {
                const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * k), m3);
                const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), one);
                const __m256i w = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2));
                const int sb = 8 * h + 2 * k;
                const __m256i scv = scale_pair(sc[sb], sc[sb + 1]);
                UNROLL_NY for (int j = 0; j < ny; j++) {
                    const __m256i p16 = _mm256_maddubs_epi16(w, loadu256(y[j][i].qs + 128 * h + 32 * k));
                    sumi[j] = dp_i16(sumi[j], p16, scv);
                }
            }
        }
        const float dx = f16f(x[i].d);
        UNROLL_NY for (int j = 0; j < ny; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[j][i].d), _mm256_cvtepi32_ps(sumi[j]), acc[j]);
    }
    UNROLL_NY for (int j = 0; j < ny; j++)
        s[j] = hsum256_ps(acc[j]);
}
DOT_ENTRY(d256_q3_k)

/* IQ4_XS: 8 sub-blocks of 32 laid out like IQ4_NL, 6-bit signed scales. */
HOT void d256_iq4_xs_body(int64_t n, const void *vx, const void *vy, size_t ys, const int ny,
                          float *s)
{
    const struct block_iq4_xs *x = vx;
    Y_ROWS(struct block_q8_K, y, vy, ys, ny);
    __m256 acc[BE_CPU_MAX_NY];
    UNROLL_NY for (int j = 0; j < ny; j++)
        acc[j] = _mm256_setzero_ps();
    const __m256i tbl = _mm256_broadcastsi128_si256(loadu128(be_iq4nl_values));
    for (int64_t i = 0; i < n / QK_K; i++) { /* hot */
        __m256i sumi[BE_CPU_MAX_NY];
        UNROLL_NY for (int j = 0; j < ny; j++)
            sumi[j] = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            const int ls = (((x[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f) |
                            (((x[i].scales_h >> (2 * ib)) & 3) << 4)) - 32;
            const __m256i w = _mm256_shuffle_epi8(tbl, nibbles32(x[i].qs + 16 * ib));
            const __m256i aw = _mm256_sign_epi8(w, w);
            const __m256i scv = _mm256_set1_epi16((short)ls);
            UNROLL_NY for (int j = 0; j < ny; j++) {
                const __m256i sy = _mm256_sign_epi8(loadu256(y[j][i].qs + 32 * ib), w);
                sumi[j] = dp_i16(sumi[j], _mm256_maddubs_epi16(aw, sy), scv);
            }
        }
        const float dx = f16f(x[i].d);
        UNROLL_NY for (int j = 0; j < ny; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[j][i].d), _mm256_cvtepi32_ps(sumi[j]), acc[j]);
    }
    UNROLL_NY for (int j = 0; j < ny; j++)
        s[j] = hsum256_ps(acc[j]);
}
DOT_ENTRY(d256_iq4_xs)

/* ---- activation converters (bit-identical to be_quant_row) ---- */

HOT float hmax256_ps(__m256 v)
{
    __m128 r = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_max_ps(r, _mm_movehl_ps(r, r));
    r = _mm_max_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* roundf(): half away from zero, exact: trunc(|v|), plus one when the
 * (exactly computed) fraction is at least 0.5, with v's sign put back. */
HOT __m256 round_away(__m256 v)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 av = _mm256_andnot_ps(sign, v);
    const __m256 t = _mm256_round_ps(av, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 up = _mm256_cmp_ps(_mm256_sub_ps(av, t), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 r = _mm256_add_ps(t, _mm256_and_ps(up, _mm256_set1_ps(1.0f)));
    return _mm256_or_ps(r, _mm256_and_ps(v, sign));
}

/* 4 x 8 int32 -> 32 bytes in order, keeping the low byte of each (what the
 * C cast to int8_t does). */
HOT __m256i pack_low_bytes(__m256i a, __m256i b, __m256i c, __m256i d)
{
    const __m256i ff = _mm256_set1_epi32(0xff);
    const __m256i ab = _mm256_packus_epi32(_mm256_and_si256(a, ff), _mm256_and_si256(b, ff));
    const __m256i cd = _mm256_packus_epi32(_mm256_and_si256(c, ff), _mm256_and_si256(d, ff));
    return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* One 32-value block of Q8_0/Q8_1: d = amax / 127, q = roundf(x * (1/d)).
 * Returns sum(q) (Q8_1's s needs it). */
HOT int q8_block(const float *x, be_f16_t *d_out, int8_t *qs, float *d_f32)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4];
    __m256 amaxv = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amaxv = _mm256_max_ps(amaxv, _mm256_andnot_ps(sign, v[k]));
    }
    const float amax = hmax256_ps(amaxv);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    *d_out = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    *d_f32 = d;
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; k++)
        q[k] = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v[k], idv)));
    _mm256_storeu_si256((__m256i *)qs, pack_low_bytes(q[0], q[1], q[2], q[3]));
    __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    return hsum256_epi32(sum);
}

static void a256_q8_0(const float *x, void *vy, int64_t n)
{
    struct block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        float d;
        q8_block(x + 32 * i, &y[i].d, y[i].qs, &d);
    }
}

static void a256_q8_1(const float *x, void *vy, int64_t n)
{
    struct block_q8_1 *y = vy;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        float d;
        const int sum = q8_block(x + 32 * i, &y[i].d, y[i].qs, &d);
        y[i].s = _cvtss_sh((float)sum * d, _MM_FROUND_TO_NEAREST_INT);
    }
}

/* Q8_K: the signed absmax (the first value of largest magnitude, as the
 * reference's scan keeps) maps to -127, rint rounding, top capped at 127. */
static void a256_q8_k(const float *x, void *vy, int64_t n)
{
    struct block_q8_K *y = vy;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        __m256 amaxv = _mm256_setzero_ps();
        for (int k = 0; k < 32; k++)
            amaxv = _mm256_max_ps(amaxv, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)));
        const float amax = hmax256_ps(amaxv);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float max = 0.0f;
        const __m256 am = _mm256_set1_ps(amax);
        for (int k = 0; k < 32; k++) {
            const __m256 v = _mm256_loadu_ps(x + 8 * k);
            const int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v), am, _CMP_EQ_OQ));
            if (m) {
                max = x[8 * k + __builtin_ctz((unsigned)m)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m256 isv = _mm256_set1_ps(iscale), top = _mm256_set1_ps(127.0f);
        for (int g = 0; g < QK_K / 32; g++) {
            __m256i q[4];
            for (int k = 0; k < 4; k++) {
                const __m256 v = _mm256_loadu_ps(x + 32 * g + 8 * k);
                const __m256 r = _mm256_round_ps(_mm256_mul_ps(isv, v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                q[k] = _mm256_cvtps_epi32(_mm256_min_ps(r, top));
            }
            _mm256_storeu_si256((__m256i *)(y[i].qs + 32 * g), pack_low_bytes(q[0], q[1], q[2], q[3]));
            y[i].bsums[2 * g] = (int16_t)hsum256_epi32(_mm256_add_epi32(q[0], q[1]));
            y[i].bsums[2 * g + 1] = (int16_t)hsum256_epi32(_mm256_add_epi32(q[2], q[3]));
        }
        y[i].d = 1.0f / iscale;
    }
}

static void a256_f16(const float *x, void *vy, int64_t n)
{
    be_f16_t *y = vy;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = be_f32_to_f16(x[i]);
}

/* bf16: round to nearest even on the bits, NaN kept quiet (as types.c). */
HOT __m256i bf16_round(__m256 v)
{
    const __m256i u = _mm256_castps_si256(v);
    const __m256i hi = _mm256_srli_epi32(u, 16);
    const __m256i bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(hi, _mm256_set1_epi32(1)));
    const __m256i rne = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                           _mm256_set1_epi32(0x7f800000));
    const __m256i qnan = _mm256_or_si256(hi, _mm256_set1_epi32(64));
    return _mm256_blendv_epi8(rne, qnan, nan);
}

static void a256_bf16(const float *x, void *vy, int64_t n)
{
    be_bf16_t *y = vy;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i a = bf16_round(_mm256_loadu_ps(x + i)), b = bf16_round(_mm256_loadu_ps(x + i + 8));
        _mm256_storeu_si256((__m256i *)(y + i), _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8));
    }
    for (; i < n; i++)
        y[i] = be_f32_to_bf16(x[i]);
}

/* ---- table ---- */

DOT256_LINKAGE void DOT256_FILL(struct be_cpu_kernels *k)
{
    k->dot[BE_TYPE_F32] = d256_f32;
    k->dot[BE_TYPE_F16] = d256_f16;
    k->dot[BE_TYPE_BF16] = d256_bf16;
    k->dot[BE_TYPE_Q4_0] = d256_q4_0;
    k->dot[BE_TYPE_Q4_1] = d256_q4_1;
    k->dot[BE_TYPE_Q5_0] = d256_q5_0;
    k->dot[BE_TYPE_Q5_1] = d256_q5_1;
    k->dot[BE_TYPE_Q8_0] = d256_q8_0;
    k->dot[BE_TYPE_Q2_K] = d256_q2_k;
    k->dot[BE_TYPE_Q3_K] = d256_q3_k;
    k->dot[BE_TYPE_Q4_K] = d256_q4_k;
    k->dot[BE_TYPE_Q5_K] = d256_q5_k;
    k->dot[BE_TYPE_Q6_K] = d256_q6_k;
    k->dot[BE_TYPE_IQ4_NL] = d256_iq4_nl;
    k->dot[BE_TYPE_IQ4_XS] = d256_iq4_xs;
    k->act[BE_TYPE_Q8_0] = a256_q8_0;
    k->act[BE_TYPE_Q8_1] = a256_q8_1;
    k->act[BE_TYPE_Q8_K] = a256_q8_k;
    k->act[BE_TYPE_F16] = a256_f16;
    k->act[BE_TYPE_BF16] = a256_bf16;
}

#ifdef DOT256_CLANG_POP
#pragma clang attribute pop
#undef DOT256_CLANG_POP
#endif

#endif /* x86 */
