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
 * be_cpu__dot_avx512_fill(). The VNNI level also has the prefill GEMM of
 * Q4_K, Q5_K, Q6_K and Q8_0 on packed 16-row panels (impl.h's be_cpu_gemm): one
 * vpdpbusd there does 4 values of 16 rows, where the dot kernels need a
 * vpmaddubsw and a vpdpwssd for 2 values of 16 lanes of one row.
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

/* Lane (128-bit) k of the result: the sums of a, b, c and d over their
 * lane k, in that order (4 x 4 int32 -> 4 sums per lane). */
HOT __m512i sum4_lanes_epi32(__m512i a, __m512i b, __m512i c, __m512i d)
{
    const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

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
        UNROLL_NY for (int j = 0; j < ny; j++)                                                       \
            a0[j] = a1[j] = _mm512_setzero_ps();                                           \
        const __mmask16 all = 0xffff;                                                      \
        int64_t i = 0;                                                                     \
        for (; i + 32 <= n; i += 32) { /* hot */                                           \
            const __m512 x0 = LOAD16(x + i, all), x1 = LOAD16(x + i + 16, all);            \
            UNROLL_NY for (int j = 0; j < ny; j++) {                                                 \
                a0[j] = _mm512_fmadd_ps(x0, LOAD16(y[j] + i, all), a0[j]);                 \
                a1[j] = _mm512_fmadd_ps(x1, LOAD16(y[j] + i + 16, all), a1[j]);            \
            }                                                                              \
        }                                                                                  \
        for (; i < n; i += 16) {                                                           \
            const __mmask16 m = n - i >= 16 ? all : (__mmask16)((1u << (n - i)) - 1);      \
            const __m512 x0 = LOAD16(x + i, m);                                            \
            UNROLL_NY for (int j = 0; j < ny; j++)                                                   \
                a0[j] = _mm512_fmadd_ps(x0, LOAD16(y[j] + i, m), a0[j]);                   \
        }                                                                                  \
        UNROLL_NY for (int j = 0; j < ny; j++)                                                       \
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
    UNROLL_NY for (int j = 0; j < ny; j++)
        a0[j] = a1[j] = _mm512_setzero_ps();
    const __mmask32 all = 0xffffffffu;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) { /* hot */
        const __m512bh x0 = bf16x32(x + i, all), x1 = bf16x32(x + i + 32, all);
        UNROLL_NY for (int j = 0; j < ny; j++) {
            a0[j] = _mm512_dpbf16_ps(a0[j], x0, bf16x32(y[j] + i, all));
            a1[j] = _mm512_dpbf16_ps(a1[j], x1, bf16x32(y[j] + i + 32, all));
        }
    }
    for (; i < n; i += 32) {
        const __mmask32 m = n - i >= 32 ? all : (__mmask32)((1u << (n - i)) - 1);
        const __m512bh x0 = bf16x32(x + i, m);
        UNROLL_NY for (int j = 0; j < ny; j++)
            a0[j] = _mm512_dpbf16_ps(a0[j], x0, bf16x32(y[j] + i, m));
    }
    UNROLL_NY for (int j = 0; j < ny; j++)
        s[j] = _mm512_reduce_add_ps(_mm512_add_ps(a0[j], a1[j]));
}
#else
FLOAT512_BODY(d512_bf16, be_bf16_t, bf16x16)
#endif
DOT_ENTRY(d512_bf16)

/* The sum of 16 floats in one fixed tree (GCC's _mm512_reduce_add_ps):
 * halves of 8, then of 4, then lanes {0,2} and {1,3}, then those two. The
 * Q8_0 GEMM repeats it lane by lane, so it is spelled out here rather than
 * left to the compiler's intrinsic. */
HOT float hsum512_tree(__m512 a)
{
    const __m256 t3 = _mm256_add_ps(_mm512_extractf32x8_ps(a, 1), _mm512_castps512_ps256(a));
    const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, 0x4e));
    return _mm_cvtss_f32(_mm_add_ss(t8, _mm_movehdup_ps(t8)));
}

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
        UNROLL_NY for (int j = 0; j < ny; j++)                                                       \
            acc[j] = _mm512_setzero_ps();                                                  \
        const int64_t nb = n / 32;                                                         \
        int64_t i = 0;                                                                     \
        for (; i + 2 <= nb; i += 2) { /* hot */                                            \
            const __m512i w = cat256(UNPACK(&x[i]), UNPACK(&x[i + 1]));                    \
            const __m512i aw = _mm512_abs_epi8(w);                                         \
            const __mmask64 neg = _mm512_movepi8_mask(w);                                  \
            const float d0 = f16f(x[i].d), d1 = f16f(x[i + 1].d);                          \
            UNROLL_NY for (int j = 0; j < ny; j++) {                                                 \
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
        UNROLL_NY for (int j = 0; j < ny; j++)                                                       \
            s[j] = hsum512_tree(acc[j]) + t[j];                                            \
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
    __m128 acc[BE_CPU_MAX_NY]; /* lane 0, in the K-quant canonical order */
    UNROLL_NY for (int j = 0; j < ny; j++)
        acc[j] = _mm_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f), m3 = _mm512_set1_epi8(3);
    /* int16 lane l of a zmm of 64 values belongs to sub-block l / 8. */
    const __m512i sub_idx = _mm512_srli_epi16(
        _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14,
                         13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 3);
    for (int64_t i = 0; i < n / QK_K; i++) { /* hot */
        const __m256i sc16 = _mm256_cvtepi8_epi16(loadu128(x[i].scales));
        const __m512i sc512 = _mm512_castsi256_si512(sc16);
        __m512i sumi[BE_CPU_MAX_NY];
        UNROLL_NY for (int j = 0; j < ny; j++) { /* the -32 offset: -32 * sum(sc[s] * bsums[s]) */
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
            UNROLL_NY for (int j = 0; j < ny; j++) {
                const int8_t *q8 = y[j][i].qs + 128 * h;
                sumi[j] = dp512_i16(sumi[j], _mm512_maddubs_epi16(wa, _mm512_loadu_si512(q8)), sa);
                sumi[j] = dp512_i16(sumi[j], _mm512_maddubs_epi16(wb, _mm512_loadu_si512(q8 + 64)), sb);
            }
        }
        const float dx = f16f(x[i].d);
        UNROLL_NY for (int j = 0; j < ny; j++)
            acc[j] = _mm_fmadd_ss(_mm_set_ss(dx * y[j][i].d),
                                  _mm_cvtsi32_ss(_mm_setzero_ps(), _mm512_reduce_add_epi32(sumi[j])), acc[j]);
    }
    UNROLL_NY for (int j = 0; j < ny; j++)
        s[j] = _mm_cvtss_f32(acc[j]);
}
DOT_ENTRY(d512_q6_k)

#ifdef DOT_VNNI
/* ---- K-quant GEMM on packed panels ----
 *
 * A panel holds BE_CPU_GEMM_ROWS = 16 weight rows, unpacked and interleaved
 * so that one zmm has 4 consecutive values of each of the 16 rows (row r in
 * int32 lane r). vpdpbusd of such a register with 4 activation bytes
 * broadcast to every lane then adds the partial dot products of 16 rows at
 * once; the 6-bit (or 8-bit) sub-block scales, a different one per lane,
 * are applied once per sub-block with vpmulld. Every lane thus computes the
 * same exact integer S (and M) per super-block as the dot kernels, and the
 * float steps per (row, token) are the canonical ones of dot_avx2.c, so a
 * panel's results are bit-identical to dot[t] with any n_y.
 *
 * Layout of one super-block (256 values) of a panel, KP_SB(nsub) bytes:
 *   uint8_t q[64][16][4]    value 4g + k of row r at q[g][r][k] (unsigned)
 *   int32_t sc[nsub][16]    sub-block scales (nsub = 8 or 16)
 *   int16_t cm[8][16][2]    pairs multiplied with bsums[2u], bsums[2u + 1]:
 *                           Q4_K/Q5_K (min u, min u), Q6_K (-32 sc[2u],
 *                           -32 sc[2u + 1]), the -32 offset of the values
 *   float   d[16], dmin[16] (dmin 0 for Q6_K)
 * Rows past n_rows are zero. Sizes are multiples of 64 so that a panel
 * packed at a 64-byte boundary keeps every zmm aligned. */

#define KP_Q 4096
/* The token and group loops must unroll so that the per-token sums stay in
 * registers; -O2 alone keeps them in a stack array. */
#define UNROLL _Pragma("GCC unroll 16")
#define KP_SB(nsub) (KP_Q + 64 * (nsub) + 512 + 128)

/* r[k] lane m -> r[m] lane k, for 16 x 16 int32: 4x4 transposes inside
 * the 128-bit lanes of each group of 4 rows, then a 4x4 transpose of the
 * 128-bit lanes. */
HOT void tr16x16(__m512i r[16])
{
    __m512i u[16];
    UNROLL
    for (int q = 0; q < 4; q++) {
        const __m512i t0 = _mm512_unpacklo_epi32(r[4 * q], r[4 * q + 1]);
        const __m512i t1 = _mm512_unpackhi_epi32(r[4 * q], r[4 * q + 1]);
        const __m512i t2 = _mm512_unpacklo_epi32(r[4 * q + 2], r[4 * q + 3]);
        const __m512i t3 = _mm512_unpackhi_epi32(r[4 * q + 2], r[4 * q + 3]);
        /* u[4q + k] lane L: dword 4L + k of rows 4q .. 4q+3 */
        u[4 * q] = _mm512_unpacklo_epi64(t0, t2);
        u[4 * q + 1] = _mm512_unpackhi_epi64(t0, t2);
        u[4 * q + 2] = _mm512_unpacklo_epi64(t1, t3);
        u[4 * q + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
    UNROLL
    for (int k = 0; k < 4; k++) {
        const __m512i x0 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x44);
        const __m512i x1 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xee);
        const __m512i x2 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x44);
        const __m512i x3 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xee);
        r[k] = _mm512_shuffle_i32x4(x0, x2, 0x88);
        r[4 + k] = _mm512_shuffle_i32x4(x0, x2, 0xdd);
        r[8 + k] = _mm512_shuffle_i32x4(x1, x3, 0x88);
        r[12 + k] = _mm512_shuffle_i32x4(x1, x3, 0xdd);
    }
}

/* The value bytes of one 64-value chunk c of a super-block of a panel from
 * v[r], row r's 64 values of the chunk. The rows are decoded straight into
 * registers: going through a row buffer in memory made every 64-byte
 * reload of two 32-byte stores miss store forwarding. */
HOT void kp_chunk_store(uint8_t *p, int c, __m512i v[16])
{
    tr16x16(v);
    UNROLL
    for (int m = 0; m < 16; m++)
        _mm512_store_si512(p + 64 * (16 * c + m), v[m]);
}

/* 32 bytes of nibbles -> 64 values 0..15: the low nibbles, then the high. */
HOT __m512i kp_nibbles64(const uint8_t *qs)
{
    const __m512i b = _mm512_broadcast_i64x4(loadu256(qs));
    return _mm512_and_si512(_mm512_mask_srli_epi16(b, (__mmask32)0xffff0000u, b, 4), _mm512_set1_epi8(0x0f));
}

/* Q4_K (HAS_QH 0) and Q5_K (HAS_QH 1) rows into a panel: chunk c of a
 * super-block is qs[32c..32c+31] (low nibbles: values 64c.., high: 64c+32..)
 * with Q5_K's fifth bits 2c (low) and 2c+1 (high) of qh; the scales of 16
 * rows are decoded together, lane r from row r's 12 scale bytes. */
#define K4_PACK(name, BT, HAS_QH)                                                          \
    static void name(const void *vw, size_t wrow, int n_rows, int64_t n, void *vdst)       \
    {                                                                                      \
        const int64_t nb = n / QK_K;                                                       \
        uint8_t *dst = vdst;                                                               \
        _Alignas(64) uint32_t raw[3][16];                                                  \
        for (int64_t i = 0; i < nb; i++) {                                                 \
            uint8_t *p = dst + i * KP_SB(8);                                               \
            float *dp = (float *)(void *)(p + KP_Q + 64 * 8 + 512);                        \
            const BT *x[16];                                                               \
            for (int r = 0; r < 16; r++) {                                                 \
                if (r >= n_rows) {                                                         \
                    raw[0][r] = raw[1][r] = raw[2][r] = 0;                                 \
                    dp[r] = dp[16 + r] = 0.0f;                                             \
                    continue;                                                              \
                }                                                                          \
                x[r] = (const BT *)(const void *)((const uint8_t *)vw + (size_t)r * wrow) + i; \
                memcpy(&raw[0][r], x[r]->scales, 4);                                       \
                memcpy(&raw[1][r], x[r]->scales + 4, 4);                                   \
                memcpy(&raw[2][r], x[r]->scales + 8, 4);                                   \
                dp[r] = f16f(x[r]->d);                                                     \
                dp[16 + r] = f16f(x[r]->dmin);                                             \
            }                                                                              \
            UNROLL                                                                         \
            for (int c = 0; c < 4; c++) {                                                  \
                __m512i v[16];                                                             \
                UNROLL                                                                     \
                for (int r = 0; r < 16; r++) {                                             \
                    if (r >= n_rows) {                                                     \
                        v[r] = _mm512_setzero_si512();                                     \
                        continue;                                                          \
                    }                                                                      \
                    v[r] = kp_nibbles64(x[r]->qs + 32 * c);                                \
                    if (HAS_QH) {                                                          \
                        const __m512i hb = _mm512_broadcast_i64x4(                         \
                            loadu256(((const struct block_q5_K *)(const void *)x[r])->qh)); \
                        const __m512i cnt = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * c)), \
                                                               _mm256_set1_epi16((short)(2 * c + 1)), 1); \
                        const __m512i hbit = _mm512_and_si512(_mm512_srlv_epi16(hb, cnt), _mm512_set1_epi8(1)); \
                        v[r] = _mm512_or_si512(v[r], _mm512_slli_epi16(hbit, 4));          \
                    }                                                                      \
                }                                                                          \
                kp_chunk_store(p, c, v);                                                   \
            }                                                                              \
            kp_k4_scales_store(p, raw);                                                    \
        }                                                                                  \
    }

/* k4_scales_decode() on 16 rows at once: sc[s] and (min, min) pairs. */
HOT void kp_k4_scales_store(uint8_t *p, uint32_t raw[3][16])
{
    const __m512i u0 = _mm512_load_si512(raw[0]), u1 = _mm512_load_si512(raw[1]),
                  u2 = _mm512_load_si512(raw[2]);
    const __m512i k1 = _mm512_set1_epi32(0x3f3f3f3f), k2 = _mm512_set1_epi32(0x0f0f0f0f),
                  k3 = _mm512_set1_epi32(0x03030303), ff = _mm512_set1_epi32(0xff);
    const __m512i sc03 = _mm512_and_si512(u0, k1);
    const __m512i sc47 = _mm512_or_si512(_mm512_and_si512(u2, k2),
                                         _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), k3), 4));
    const __m512i mn03 = _mm512_and_si512(u1, k1);
    const __m512i mn47 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), k2),
                                         _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), k3), 4));
    uint8_t *scp = p + KP_Q, *cmp = p + KP_Q + 64 * 8;
    UNROLL
    for (int k = 0; k < 4; k++) {
        const __m512i a = _mm512_and_si512(_mm512_srli_epi32(sc03, 8 * k), ff);
        const __m512i b = _mm512_and_si512(_mm512_srli_epi32(sc47, 8 * k), ff);
        const __m512i ma = _mm512_and_si512(_mm512_srli_epi32(mn03, 8 * k), ff);
        const __m512i mb = _mm512_and_si512(_mm512_srli_epi32(mn47, 8 * k), ff);
        _mm512_store_si512(scp + 64 * k, a);
        _mm512_store_si512(scp + 64 * (4 + k), b);
        _mm512_store_si512(cmp + 64 * k, _mm512_or_si512(ma, _mm512_slli_epi32(ma, 16)));
        _mm512_store_si512(cmp + 64 * (4 + k), _mm512_or_si512(mb, _mm512_slli_epi32(mb, 16)));
    }
}

K4_PACK(kp_pack_q4_k, struct block_q4_K, 0)
K4_PACK(kp_pack_q5_k, struct block_q5_K, 1)

/* Q6_K rows into a panel: chunk c of a super-block is half h = c / 2 of
 * the block, ql[64h..64h+63] (low nibbles for even c, high for odd) with the
 * 2-bit highs from qh[32h..32h+31] at bits 4 (c & 1) and 4 (c & 1) + 2. */
static void kp_pack_q6_k(const void *vw, size_t wrow, int n_rows, int64_t n, void *vdst)
{
    const int64_t nb = n / QK_K;
    uint8_t *dst = vdst;
    const __m512i m4 = _mm512_set1_epi8(0x0f), m3 = _mm512_set1_epi8(3);
    for (int64_t i = 0; i < nb; i++) {
        uint8_t *p = dst + i * KP_SB(16);
        float *dp = (float *)(void *)(p + KP_Q + 64 * 16 + 512);
        __m512i sc[16];
        const struct block_q6_K *x[16];
        for (int r = 0; r < 16; r++) {
            if (r >= n_rows) {
                sc[r] = _mm512_setzero_si512();
                dp[r] = dp[16 + r] = 0.0f;
                continue;
            }
            x[r] = (const struct block_q6_K *)(const void *)((const uint8_t *)vw + (size_t)r * wrow) + i;
            sc[r] = _mm512_cvtepi8_epi32(loadu128(x[r]->scales));
            dp[r] = f16f(x[r]->d);
            dp[16 + r] = 0.0f;
        }
        UNROLL
        for (int c = 0; c < 4; c++) {
            const int h = c >> 1, odd = c & 1;
            __m512i v[16];
            UNROLL
            for (int r = 0; r < 16; r++) {
                if (r >= n_rows) {
                    v[r] = _mm512_setzero_si512();
                    continue;
                }
                __m512i q = _mm512_loadu_si512(x[r]->ql + 64 * h);
                __m512i hb = _mm512_broadcast_i64x4(loadu256(x[r]->qh + 32 * h));
                if (odd) {
                    q = _mm512_srli_epi16(q, 4);
                    hb = _mm512_srli_epi16(hb, 4);
                }
                const __m512i h2 = _mm512_and_si512(_mm512_mask_srli_epi16(hb, (__mmask32)0xffff0000u, hb, 2), m3);
                v[r] = _mm512_or_si512(_mm512_and_si512(q, m4), _mm512_slli_epi16(h2, 4));
            }
            kp_chunk_store(p, c, v);
        }
        tr16x16(sc); /* sc[s] lane r: scale s of row r */
        uint8_t *scp = p + KP_Q, *cmp = p + KP_Q + 64 * 16;
        const __m512i lo16 = _mm512_set1_epi32(0xffff);
        UNROLL
        for (int s = 0; s < 16; s++)
            _mm512_store_si512(scp + 64 * s, sc[s]);
        UNROLL
        for (int u = 0; u < 8; u++) {
            const __m512i a = _mm512_slli_epi32(sc[2 * u], 5), b = _mm512_slli_epi32(sc[2 * u + 1], 5);
            const __m512i na = _mm512_sub_epi32(_mm512_setzero_si512(), a);
            const __m512i nb2 = _mm512_sub_epi32(_mm512_setzero_si512(), b);
            _mm512_store_si512(cmp + 64 * u, _mm512_or_si512(_mm512_and_si512(na, lo16), _mm512_slli_epi32(nb2, 16)));
        }
    }
}

HOT uint16_t ld16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

HOT int32_t ld32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* One panel against ny tokens: s[t * ss + r] for r < n_rows. NSUB 8 with
 * mins (Q4_K, Q5_K) or 16 with the offset folded into S (Q6_K). */
HOT void kgemm_body(int64_t n, const uint8_t *pk, const void *vy, size_t ys, const int ny,
                    float *s, size_t ss, int n_rows, const int nsub)
{
    const struct block_q8_K *y[BE_CPU_GEMM_NY];
    UNROLL
    for (int t = 0; t < ny; t++)
        y[t] = (const struct block_q8_K *)(const void *)((const uint8_t *)vy + (size_t)t * ys);
    const int has_min = nsub == 8, G = 64 / nsub;
    __m512 acc[BE_CPU_GEMM_NY], accm[BE_CPU_GEMM_NY];
    UNROLL
    for (int t = 0; t < ny; t++)
        acc[t] = accm[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) { /* hot */
        const uint8_t *p = pk + i * KP_SB(nsub);
        const uint8_t *scp = p + KP_Q, *cmp = p + KP_Q + 64 * nsub;
        const float *dp = (const float *)(const void *)(cmp + 512);
        __m512i S[BE_CPU_GEMM_NY], C[BE_CPU_GEMM_NY];
        UNROLL
        for (int t = 0; t < ny; t++)
            S[t] = C[t] = _mm512_setzero_si512();
        for (int sb = 0; sb < nsub; sb++) {
            __m512i is[BE_CPU_GEMM_NY];
            UNROLL
            for (int t = 0; t < ny; t++)
                is[t] = _mm512_setzero_si512();
            UNROLL
            for (int g = 0; g < G; g++) {
                const int k = sb * G + g;
                const __m512i w = _mm512_load_si512(p + 64 * k);
                UNROLL
                for (int t = 0; t < ny; t++)
                    is[t] = _mm512_dpbusd_epi32(is[t], w, _mm512_set1_epi32(ld32(y[t][i].qs + 4 * k)));
            }
            const __m512i scv = _mm512_load_si512(scp + 64 * sb);
            UNROLL
            for (int t = 0; t < ny; t++)
                S[t] = _mm512_add_epi32(S[t], _mm512_mullo_epi32(is[t], scv));
        }
        UNROLL
        for (int u = 0; u < 8; u++) {
            const __m512i cmv = _mm512_load_si512(cmp + 64 * u);
            UNROLL
            for (int t = 0; t < ny; t++)
                C[t] = _mm512_dpwssd_epi32(C[t], cmv, _mm512_set1_epi32(ld32(y[t][i].bsums + 2 * u)));
        }
        const __m512 dv = _mm512_load_ps(dp), dmv = _mm512_load_ps(dp + 16);
        UNROLL
        for (int t = 0; t < ny; t++) {
            const __m512 yd = _mm512_set1_ps(y[t][i].d);
            if (has_min) {
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dv, yd), _mm512_cvtepi32_ps(S[t]), acc[t]);
                accm[t] = _mm512_fmadd_ps(_mm512_mul_ps(dmv, yd), _mm512_cvtepi32_ps(C[t]), accm[t]);
            } else {
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dv, yd),
                                         _mm512_cvtepi32_ps(_mm512_add_epi32(S[t], C[t])), acc[t]);
            }
        }
    }
    const __mmask16 m = n_rows >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n_rows) - 1);
    UNROLL
    for (int t = 0; t < ny; t++)
        _mm512_mask_storeu_ps(s + (size_t)t * ss, m, has_min ? _mm512_sub_ps(acc[t], accm[t]) : acc[t]);
}

#define KGEMM_ENTRY(name, NSUB)                                                            \
    static void name(int64_t n, const void *pk, const void *y, size_t ys, int n_y, float *s, \
                     size_t ss, int n_rows)                                                \
    {                                                                                      \
        switch (n_y) {                                                                     \
        case 1: kgemm_body(n, pk, y, ys, 1, s, ss, n_rows, NSUB); break;                   \
        case 2: kgemm_body(n, pk, y, ys, 2, s, ss, n_rows, NSUB); break;                   \
        case 3: kgemm_body(n, pk, y, ys, 3, s, ss, n_rows, NSUB); break;                   \
        case 4: kgemm_body(n, pk, y, ys, 4, s, ss, n_rows, NSUB); break;                   \
        case 5: kgemm_body(n, pk, y, ys, 5, s, ss, n_rows, NSUB); break;                   \
        case 6: kgemm_body(n, pk, y, ys, 6, s, ss, n_rows, NSUB); break;                   \
        case 7: kgemm_body(n, pk, y, ys, 7, s, ss, n_rows, NSUB); break;                   \
        default: kgemm_body(n, pk, y, ys, 8, s, ss, n_rows, NSUB); break;                  \
        }                                                                                  \
    }

KGEMM_ENTRY(kgemm_k4, 8)
KGEMM_ENTRY(kgemm_k6, 16)

/* vpdpbusd / vpdpwssd with the dword at p broadcast to 16 lanes as an
 * embedded {1to16} memory operand: one instruction where the compiler
 * emits a separate vpbroadcastd load before each (the stored panels' inner
 * loops issue one per 64 multiply-adds). */
typedef int32_t i32u __attribute__((may_alias, aligned(1)));
HOT __m512i dpbusd_bc(__m512i acc, __m512i w, const void *p)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const i32u *)p));
    return acc;
}
HOT __m512i dpwssd_bc(__m512i acc, __m512i w, const void *p)
{
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const i32u *)p));
    return acc;
}

/* ---- Q6_K stored panels: the GEMM of kgemm_k6 at Q6_K's size ----
 *
 * The panels above spend a byte per 6-bit value (plus int32 scales): fine
 * in per-thread L2 tiles, but a matrix kept packed (be_ops.prepack) is read
 * from DRAM every step, where 1.41 bytes per value measured no faster than
 * the rows kernel on 0.82. This panel keeps the values at 6 bits, in the
 * lanes kgemm uses (lane r = row r, 4 consecutive values per chunk), so the
 * unpacking is a few shifts and masks per chunk, shared by the token group.
 * A panel of 16 rows and nb super-blocks: nb x P6_Q bytes of values, then
 * nb x 256 of scales, then nb x 32 of d (so that every 64-byte load is
 * aligned when the panel is); for super-block i:
 *   nib[32][64]  chunks 2j (low nibbles) and 2j + 1 (high nibbles)
 *   hi[16][64]   the 2 high bits of chunks 4m .. 4m + 3 at bits 0, 2, 4, 6
 *   sc[8][16][2] int8 scales 2u and 2u + 1 of row r
 *   d[16]        f16, as in the rows (its f32 value is exact)
 * P6_SB = 3360 bytes a super-block: exactly 16 rows of Q6_K, so that a
 * matrix can also be rewritten in place (be_ops.expert_pack). The integer
 * sums and the float steps are kgemm_k6's, so each (row, token) has the
 * bits of dot[Q6_K] (test_kernels: test_prepacked). */
HOT void rw_prefetch(const uint8_t *p, size_t len, int64_t i, int64_t nb);
#define P6_NIB 0
#define P6_HI 2048
#define P6_Q 3072
#define P6_SB 3360
/* super-block i's values, scales and d in a panel of nb */
#define P6_QAT(pk, i) ((pk) + (size_t)(i) * P6_Q)
#define P6_SCAT(pk, i, nb) ((pk) + (size_t)(nb) * P6_Q + (size_t)(i) * 256)
#define P6_DAT(pk, i, nb) ((pk) + (size_t)(nb) * (P6_Q + 256) + (size_t)(i) * 32)

static void p6_pack(const void *vw, size_t wrow, int n_rows, int64_t n, void *vdst)
{
    const int64_t nb = n / QK_K;
    uint8_t *dst = vdst;
    memset(dst, 0, (size_t)nb * P6_SB);
    for (int r = 0; r < n_rows; r++) {
        const struct block_q6_K *x = (const struct block_q6_K *)(const void *)((const uint8_t *)vw + (size_t)r * wrow);
        for (int64_t i = 0; i < nb; i++) {
            uint8_t *p = P6_QAT(dst, i);
            uint8_t q[QK_K];
            for (int h = 0; h < 2; h++) { /* ggml's Q6_K order: 128 values per half */
                const uint8_t *ql = x[i].ql + 64 * h, *qh = x[i].qh + 32 * h;
                for (int l = 0; l < 32; l++) {
                    q[128 * h + l] = (uint8_t)((ql[l] & 15) | ((qh[l] & 3) << 4));
                    q[128 * h + l + 32] = (uint8_t)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4));
                    q[128 * h + l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                    q[128 * h + l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
                }
            }
            for (int k = 0; k < QK_K; k++) {
                const int c = k / 4, b = k % 4;
                p[P6_NIB + 64 * (c / 2) + 4 * r + b] |= (uint8_t)((q[k] & 15) << (4 * (c % 2)));
                p[P6_HI + 64 * (c / 4) + 4 * r + b] |= (uint8_t)((q[k] >> 4) << (2 * (c % 4)));
            }
            for (int sb = 0; sb < 16; sb++)
                P6_SCAT(dst, i, nb)[32 * (sb / 2) + 2 * r + sb % 2] = (uint8_t)x[i].scales[sb];
            memcpy(P6_DAT(dst, i, nb) + 2 * r, &x[i].d, 2);
        }
    }
}

/* One stored panel against ny <= 8 tokens (kgemm_body's steps for Q6_K). */
HOT void p6_body(int64_t n, const uint8_t *pk, const void *vy, size_t ys, const int ny, float *s, size_t ss,
                 int n_rows, const uint8_t *pf, size_t pf_len)
{
    const struct block_q8_K *y[BE_CPU_GEMM_NY];
    UNROLL
    for (int t = 0; t < ny; t++)
        y[t] = (const struct block_q8_K *)(const void *)((const uint8_t *)vy + (size_t)t * ys);
    const __m512i m0f = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    const int64_t nb = n / QK_K;
    __m512 acc[BE_CPU_GEMM_NY];
    UNROLL
    for (int t = 0; t < ny; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) { /* hot */
        const uint8_t *p = P6_QAT(pk, i), *scp = P6_SCAT(pk, i, nb);
        __m512i S[BE_CPU_GEMM_NY];
        UNROLL
        for (int t = 0; t < ny; t++)
            S[t] = _mm512_setzero_si512();
        for (int u = 0; u < 8; u++) {
            if (pf) /* the next panel, a slice per 32 values */
                rw_prefetch(pf, pf_len, 8 * i + u, 8 * nb);
            /* lane r: (scale 2u, scale 2u + 1) of row r as int16 */
            const __m512i sc2 = _mm512_cvtepi8_epi16(loadu256(scp + 32 * u));
            const __m512i cmv = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(sc2, 5));
            UNROLL
            for (int t = 0; t < ny; t++) /* the -32 offset, as kgemm's C */
                S[t] = dpwssd_bc(S[t], cmv, y[t][i].bsums + 2 * u);
            const __m512i H0 = _mm512_loadu_si512(p + P6_HI + 64 * (2 * u));
            const __m512i H1 = _mm512_loadu_si512(p + P6_HI + 64 * (2 * u + 1));
            UNROLL
            for (int half = 0; half < 2; half++) { /* sub-block 2u + half: chunks 8u + 4 half .. + 3 */
                const __m512i H = half ? H1 : H0;
                const __m512i N0 = _mm512_loadu_si512(p + P6_NIB + 64 * (4 * u + 2 * half));
                const __m512i N1 = _mm512_loadu_si512(p + P6_NIB + 64 * (4 * u + 2 * half + 1));
                __m512i w[4];
                w[0] = _mm512_or_si512(_mm512_and_si512(N0, m0f), _mm512_and_si512(_mm512_slli_epi16(H, 4), m30));
                w[1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(N0, 4), m0f),
                                       _mm512_and_si512(_mm512_slli_epi16(H, 2), m30));
                w[2] = _mm512_or_si512(_mm512_and_si512(N1, m0f), _mm512_and_si512(H, m30));
                w[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(N1, 4), m0f),
                                       _mm512_and_si512(_mm512_srli_epi16(H, 2), m30));
                const __m512i scv = half ? _mm512_srai_epi32(sc2, 16)
                                         : _mm512_srai_epi32(_mm512_slli_epi32(sc2, 16), 16);
                const int k0 = 8 * u + 4 * half;
                UNROLL
                for (int t = 0; t < ny; t++) {
                    __m512i is = dpbusd_bc(_mm512_setzero_si512(), w[0], y[t][i].qs + 4 * k0);
                    UNROLL
                    for (int g = 1; g < 4; g++)
                        is = dpbusd_bc(is, w[g], y[t][i].qs + 4 * (k0 + g));
                    S[t] = _mm512_add_epi32(S[t], _mm512_mullo_epi32(is, scv));
                }
            }
        }
        const __m512 dv = _mm512_cvtph_ps(loadu256(P6_DAT(pk, i, nb)));
        UNROLL
        for (int t = 0; t < ny; t++)
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dv, _mm512_set1_ps(y[t][i].d)), _mm512_cvtepi32_ps(S[t]), acc[t]);
    }
    const __mmask16 m = n_rows >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n_rows) - 1);
    UNROLL
    for (int t = 0; t < ny; t++)
        _mm512_mask_storeu_ps(s + (size_t)t * ss, m, acc[t]);
}

/* A stored panel's entry points: the body with the token count as a
 * constant (its loops unroll over the tokens), with and without the
 * prefetch of the next panel. */
#define STORED_ENTRY(name, body)                                                           \
    static void name##_run_pf(int64_t n, const void *pk, const void *y, size_t ys, int n_y, float *s, \
                              size_t ss, int n_rows, const void *pf, size_t pf_len)      \
    {                                                                                      \
        switch (n_y) {                                                                     \
        case 1: body(n, pk, y, ys, 1, s, ss, n_rows, pf, pf_len); break;                   \
        case 2: body(n, pk, y, ys, 2, s, ss, n_rows, pf, pf_len); break;                   \
        case 3: body(n, pk, y, ys, 3, s, ss, n_rows, pf, pf_len); break;                   \
        case 4: body(n, pk, y, ys, 4, s, ss, n_rows, pf, pf_len); break;                   \
        case 5: body(n, pk, y, ys, 5, s, ss, n_rows, pf, pf_len); break;                   \
        case 6: body(n, pk, y, ys, 6, s, ss, n_rows, pf, pf_len); break;                   \
        case 7: body(n, pk, y, ys, 7, s, ss, n_rows, pf, pf_len); break;                   \
        default: body(n, pk, y, ys, 8, s, ss, n_rows, pf, pf_len); break;                  \
        }                                                                                  \
    }                                                                                      \
    static void name##_run(int64_t n, const void *pk, const void *y, size_t ys, int n_y, float *s, size_t ss, \
                           int n_rows)                                                     \
    {                                                                                      \
        name##_run_pf(n, pk, y, ys, n_y, s, ss, n_rows, NULL, 0);                          \
    }

STORED_ENTRY(p6, p6_body)

/* ---- Q4_K stored panels: the GEMM of kgemm_k4 at Q4_K's size ----
 *
 * As the Q6_K panel above: values in kgemm's lanes (lane r = row r, 4
 * consecutive values per chunk), here at 4 bits. One super-block of 16
 * rows, P4_SB bytes:
 *   nib[32][64]  chunks 2j (low nibbles) and 2j + 1 (high nibbles)
 *   sc[3][16][4] the 12 scale bytes of row r as stored (6-bit scales and
 *                mins), decoded for the 16 rows at once
 *   d[16], dmin[16] f16, as in the rows
 * 2304 bytes: exactly 16 rows of Q4_K, so a matrix can be rewritten in
 * place. The integer sums and the float steps are kgemm_k4's, so each
 * (row, token) has the bits of dot[Q4_K]. */
#define P4_NIB 0
#define P4_SC 2048
#define P4_D 2240
#define P4_DMIN 2272
#define P4_SB 2304

static void p4_pack(const void *vw, size_t wrow, int n_rows, int64_t n, void *vdst)
{
    const int64_t nb = n / QK_K;
    uint8_t *dst = vdst;
    memset(dst, 0, (size_t)nb * P4_SB);
    for (int r = 0; r < n_rows; r++) {
        const struct block_q4_K *x = (const struct block_q4_K *)(const void *)((const uint8_t *)vw + (size_t)r * wrow);
        for (int64_t i = 0; i < nb; i++) {
            uint8_t *p = dst + i * P4_SB;
            uint8_t q[QK_K];
            for (int j = 0; j < 4; j++) /* ggml's Q4_K order: 64 values per 32 bytes */
                for (int l = 0; l < 32; l++) {
                    q[64 * j + l] = x[i].qs[32 * j + l] & 15;
                    q[64 * j + 32 + l] = x[i].qs[32 * j + l] >> 4;
                }
            for (int k = 0; k < QK_K; k++) {
                const int c = k / 4, b = k % 4;
                p[P4_NIB + 64 * (c / 2) + 4 * r + b] |= (uint8_t)(q[k] << (4 * (c % 2)));
            }
            for (int u = 0; u < 3; u++)
                memcpy(p + P4_SC + 64 * u + 4 * r, x[i].scales + 4 * u, 4);
            memcpy(p + P4_D + 2 * r, &x[i].d, 2);
            memcpy(p + P4_DMIN + 2 * r, &x[i].dmin, 2);
        }
    }
}

/* One stored panel against ny <= 8 tokens (kgemm_body's steps for Q4_K). */
HOT void p4_body(int64_t n, const uint8_t *pk, const void *vy, size_t ys, const int ny, float *s, size_t ss,
                 int n_rows, const uint8_t *pf, size_t pf_len)
{
    const struct block_q8_K *y[BE_CPU_GEMM_NY];
    UNROLL
    for (int t = 0; t < ny; t++)
        y[t] = (const struct block_q8_K *)(const void *)((const uint8_t *)vy + (size_t)t * ys);
    const __m512i m0f = _mm512_set1_epi8(0x0f), ff = _mm512_set1_epi32(0xff);
    const int64_t nb = n / QK_K;
    __m512 acc[BE_CPU_GEMM_NY], accm[BE_CPU_GEMM_NY];
    UNROLL
    for (int t = 0; t < ny; t++)
        acc[t] = accm[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) { /* hot */
        const uint8_t *p = pk + i * P4_SB;
        /* kp_k4_scales_store()'s decode, lane r = row r */
        const __m512i u0 = _mm512_loadu_si512(p + P4_SC), u1 = _mm512_loadu_si512(p + P4_SC + 64),
                      u2 = _mm512_loadu_si512(p + P4_SC + 128);
        const __m512i k1 = _mm512_set1_epi32(0x3f3f3f3f), k2 = _mm512_set1_epi32(0x0f0f0f0f),
                      k3 = _mm512_set1_epi32(0x03030303);
        const __m512i sc[2] = {_mm512_and_si512(u0, k1),
                               _mm512_or_si512(_mm512_and_si512(u2, k2),
                                               _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), k3), 4))};
        const __m512i mn[2] = {_mm512_and_si512(u1, k1),
                               _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), k2),
                                               _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), k3), 4))};
        __m512i S[BE_CPU_GEMM_NY], C[BE_CPU_GEMM_NY];
        UNROLL
        for (int t = 0; t < ny; t++)
            S[t] = C[t] = _mm512_setzero_si512();
        for (int sb = 0; sb < 8; sb++) {
            if (pf) /* the next panel, a slice per 32 values */
                rw_prefetch(pf, pf_len, 8 * i + sb, 8 * nb);
            const __m512i ma = _mm512_and_si512(_mm512_srli_epi32(mn[sb >> 2], 8 * (sb & 3)), ff);
            const __m512i cmv = _mm512_or_si512(ma, _mm512_slli_epi32(ma, 16));
            const __m512i scv = _mm512_and_si512(_mm512_srli_epi32(sc[sb >> 2], 8 * (sb & 3)), ff);
            __m512i w[8];
            UNROLL
            for (int j = 0; j < 4; j++) {
                const __m512i N = _mm512_loadu_si512(p + P4_NIB + 64 * (4 * sb + j));
                w[2 * j] = _mm512_and_si512(N, m0f);
                w[2 * j + 1] = _mm512_and_si512(_mm512_srli_epi16(N, 4), m0f);
            }
            UNROLL
            for (int t = 0; t < ny; t++) {
                const int8_t *q8 = y[t][i].qs + 32 * sb;
                __m512i is = dpbusd_bc(_mm512_setzero_si512(), w[0], q8);
                UNROLL
                for (int g = 1; g < 8; g++)
                    is = dpbusd_bc(is, w[g], q8 + 4 * g);
                S[t] = _mm512_add_epi32(S[t], _mm512_mullo_epi32(is, scv));
                C[t] = dpwssd_bc(C[t], cmv, y[t][i].bsums + 2 * sb);
            }
        }
        const __m512 dv = _mm512_cvtph_ps(loadu256(p + P4_D)), dmv = _mm512_cvtph_ps(loadu256(p + P4_DMIN));
        UNROLL
        for (int t = 0; t < ny; t++) {
            const __m512 yd = _mm512_set1_ps(y[t][i].d);
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dv, yd), _mm512_cvtepi32_ps(S[t]), acc[t]);
            accm[t] = _mm512_fmadd_ps(_mm512_mul_ps(dmv, yd), _mm512_cvtepi32_ps(C[t]), accm[t]);
        }
    }
    const __mmask16 m = n_rows >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n_rows) - 1);
    UNROLL
    for (int t = 0; t < ny; t++)
        _mm512_mask_storeu_ps(s + (size_t)t * ss, m, _mm512_sub_ps(acc[t], accm[t]));
}

STORED_ENTRY(p4, p4_body)

/* ---- Q8_0 GEMM on packed panels ----
 *
 * The dot kernel above (d512_q8_0) keeps 16 float lanes per (row, token):
 * lane l of block pair q accumulates fma(d_b * dy_b, p, acc) with p the
 * exact sum of the 4 products of group l (l < 8: block 2q, bytes 4l..4l+3;
 * l >= 8: block 2q+1), and the 16 lanes are summed by hsum512_tree at the
 * end, plus an odd last block through the 256-bit body. The GEMM keeps the
 * same 16 partial sums, as 16 registers whose lanes are the panel's 16 rows,
 * so each (row, token) sees the same float steps and the same tree: the
 * same bits as dot[Q8_0] at any n_y.
 *
 * vpdpbusd multiplies unsigned by signed bytes, so the panel stores the
 * weights plus 128 (w ^ 0x80) and each group's sum starts at
 * -128 * (sum of its 4 activation bytes), computed once per token and
 * panel: the integer p is exact either way.
 *
 * Layout, per pair of blocks (1152 bytes = 2 x bytes_per_blk):
 *   uint8_t q[16][16][4]   group l of row r at q[l][r] (w ^ 0x80)
 *   float   d[2][16]       the two blocks' scales of each row
 * then for an odd block count the last block of each row as it is
 * (16 x 34 bytes). */
#define Q8P_PAIR 1152

static void kp_pack_q8_0(const void *vw, size_t wrow, int n_rows, int64_t n, void *vdst)
{
    const int64_t nb = n / 32, np2 = nb / 2;
    uint8_t *dst = vdst;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int64_t q = 0; q < np2; q++) {
        uint8_t *p = dst + q * Q8P_PAIR;
        float *dp = (float *)(void *)(p + 1024);
        __m512i v[16];
        UNROLL
        for (int r = 0; r < 16; r++) {
            if (r >= n_rows) {
                v[r] = _mm512_setzero_si512();
                dp[r] = dp[16 + r] = 0.0f;
                continue;
            }
            const struct block_q8_0 *x =
                (const struct block_q8_0 *)(const void *)((const uint8_t *)vw + (size_t)r * wrow) + 2 * q;
            v[r] = _mm512_xor_si512(cat256(loadu256(x[0].qs), loadu256(x[1].qs)), flip);
            dp[r] = f16f(x[0].d);
            dp[16 + r] = f16f(x[1].d);
        }
        tr16x16(v);
        UNROLL
        for (int m = 0; m < 16; m++)
            _mm512_store_si512(p + 64 * m, v[m]);
    }
    if (nb & 1) {
        uint8_t *t = dst + np2 * Q8P_PAIR;
        for (int r = 0; r < 16; r++) {
            if (r < n_rows)
                memcpy(t + 34 * r, (const uint8_t *)vw + (size_t)r * wrow + (size_t)(nb - 1) * 34, 34);
            else
                memset(t + 34 * r, 0, 34);
        }
    }
}

/* One panel against one token row y: out[r] for the 16 rows. negc is
 * scratch for n / 4 int32. hot */
HOT void q8gemm_one(int64_t n, const uint8_t *pk, const struct block_q8_0 *y, int32_t *negc,
                    __m512 *out)
{
    const int64_t nb = n / 32, np2 = nb / 2;
    const __m512i k128 = _mm512_set1_epi8((char)0x80);
    for (int64_t q = 0; q < np2; q++) { /* -128 * (sum of each group's 4 bytes) */
        const __m512i yv = cat256(loadu256(y[2 * q].qs), loadu256(y[2 * q + 1].qs));
        const __m512i c = _mm512_dpbusd_epi32(_mm512_setzero_si512(), k128, yv);
        _mm512_storeu_si512(negc + 16 * q, _mm512_sub_epi32(_mm512_setzero_si512(), c));
    }
    __m512 acc[16];
    UNROLL
    for (int l = 0; l < 16; l++)
        acc[l] = _mm512_setzero_ps();
    for (int64_t q = 0; q < np2; q++) { /* hot */
        const uint8_t *p = pk + q * Q8P_PAIR;
        const float *dp = (const float *)(const void *)(p + 1024);
        const __m512 s0 = _mm512_mul_ps(_mm512_load_ps(dp), _mm512_set1_ps(f16f(y[2 * q].d)));
        const __m512 s1 = _mm512_mul_ps(_mm512_load_ps(dp + 16), _mm512_set1_ps(f16f(y[2 * q + 1].d)));
        UNROLL
        for (int l = 0; l < 16; l++) {
            const int8_t *yq = l < 8 ? y[2 * q].qs + 4 * l : y[2 * q + 1].qs + 4 * (l - 8);
            const __m512i pi = _mm512_dpbusd_epi32(_mm512_set1_epi32(negc[16 * q + l]),
                                                   _mm512_load_si512(p + 64 * l), _mm512_set1_epi32(ld32(yq)));
            acc[l] = _mm512_fmadd_ps(l < 8 ? s0 : s1, _mm512_cvtepi32_ps(pi), acc[l]);
        }
    }
    /* hsum512_tree, lane by lane */
    __m512 t3[8], t6[4];
    UNROLL
    for (int i = 0; i < 8; i++)
        t3[i] = _mm512_add_ps(acc[8 + i], acc[i]);
    UNROLL
    for (int i = 0; i < 4; i++)
        t6[i] = _mm512_add_ps(t3[4 + i], t3[i]);
    *out = _mm512_add_ps(_mm512_add_ps(t6[0], t6[2]), _mm512_add_ps(t6[1], t6[3]));
}

static void q8gemm(int64_t n, const void *vpk, const void *vy, size_t ys, int n_y, float *s, size_t ss,
                   int n_rows)
{
    const int64_t nb = n / 32;
    const uint8_t *pk = vpk;
    int32_t negc[n / 4 + 16];
    const __mmask16 m = n_rows >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n_rows) - 1);
    for (int t = 0; t < n_y; t++) {
        const struct block_q8_0 *y = (const struct block_q8_0 *)(const void *)((const uint8_t *)vy + (size_t)t * ys);
        __m512 r;
        q8gemm_one(n, pk, y, negc, &r);
        _Alignas(64) float tail[16] = {0};
        if (nb & 1) {
            const uint8_t *tb = pk + (nb / 2) * Q8P_PAIR;
            for (int i = 0; i < n_rows; i++)
                d256_q8_0_body(32, tb + 34 * i, &y[nb - 1], ys, 1, &tail[i]);
        }
        _mm512_mask_storeu_ps(s + (size_t)t * ss, m, _mm512_add_ps(r, _mm512_load_ps(tail)));
    }
}

/* ---- small batches on the rows as stored (Q4_K, Q6_K, Q8_0) ----
 *
 * For a few tokens per weight row (a MoE expert at a 16-sequence decode step
 * serves 2 or 3) the panel GEMM's pack, an unpack + 16 x 16 transpose +
 * store per 64 values of every row, costs several times its run, and the
 * dot kernels pay a scale multiply per 32 values per token. Here 4 rows are
 * decoded together straight into registers, row r in 128-bit lane r (16
 * bytes of each row at the same offset, loaded with inserts: no transpose),
 * and one vpdpbusd against the token's 16 activation bytes broadcast to the
 * 4 lanes adds 4 products per int32 lane. A lane's sum over one sub-block
 * (Q4_K: 2 vpdpbusd, at most 8 * 15 * 128 in magnitude; Q6_K: 1, at most
 * 4 * 63 * 128) fits in int16, so the sums of two sub-blocks are packed
 * (vpackssdw, never saturating) and scaled by one vpdpwssd with their two
 * scales. Each super-block's S (and M) is therefore the same exact integer
 * as in the dot kernels, and the float steps per (row, token) are the
 * canonical ones (dot_avx2.c), lane (row, token) of one register: the same
 * bits as dot[t] of the same table, whatever n_y and however the rows are
 * grouped. Rows are prefetched RW_PF_BYTES ahead, a slice per super-block,
 * so that the loads overlap the arithmetic. */

/* How far ahead (bytes, rounded up to whole 4-row groups) rows are
 * prefetched while a group is computed. Measured on Zen 5, one thread, rows
 * from DRAM: 512-wide Q6_K at 3 tokens 22.5 ns a row with 2 groups ahead
 * (3.4 KB), 14.8 with 8 KB, no better further; 1024-wide Q4_K ~21 at any. */
/* Locality hint of those prefetches (and of the stored panels' next-panel
 * prefetch): 0, non-temporal. Weights are read once per step; measured
 * (Zen 5, 2 threads, medium Q4_K_M, MoE layer from DRAM, 5 alternating
 * runs) 0.99 against 1.00 ms a layer at 16 tokens and 0.136 against 0.145
 * at one; in the engine 16-stream decode 606 against 582 tokens/s (4 runs). */
#ifndef RW_PF_LOC
#define RW_PF_LOC 0
#endif
#ifndef RW_PF_BYTES
#define RW_PF_BYTES 8192
#endif
/* Tokens per decoded row group: 8 keeps the per-token sums in registers. */
#define RW_NY 8

/* 16 bytes at offset off of the 4 rows at p, p + w1, p + w2, p + w3:
 * row r in 128-bit lane r. */
HOT __m512i rw_load4(const uint8_t *p, size_t w1, size_t w2, size_t w3, size_t off)
{
    __m512i v = _mm512_castsi128_si512(loadu128(p + off));
    v = _mm512_inserti32x4(v, loadu128(p + w1 + off), 1);
    v = _mm512_inserti32x4(v, loadu128(p + w2 + off), 2);
    return _mm512_inserti32x4(v, loadu128(p + w3 + off), 3);
}

/* The 64 bytes at offset off of the same 4 rows, as v[k] = 16 bytes
 * off + 16 k of row r in 128-bit lane r: 4 loads and a 4 x 4 transpose of
 * 128-bit lanes, 8 shuffles where 16 loads would need 12 inserts. */
HOT void rw_load4x4(const uint8_t *p, size_t w1, size_t w2, size_t w3, size_t off, __m512i v[4])
{
    const __m512i r0 = _mm512_loadu_si512(p + off), r1 = _mm512_loadu_si512(p + w1 + off);
    const __m512i r2 = _mm512_loadu_si512(p + w2 + off), r3 = _mm512_loadu_si512(p + w3 + off);
    const __m512i a = _mm512_shuffle_i64x2(r0, r1, 0x44), b = _mm512_shuffle_i64x2(r0, r1, 0xee);
    const __m512i c = _mm512_shuffle_i64x2(r2, r3, 0x44), d = _mm512_shuffle_i64x2(r2, r3, 0xee);
    v[0] = _mm512_shuffle_i64x2(a, c, 0x88);
    v[1] = _mm512_shuffle_i64x2(a, c, 0xdd);
    v[2] = _mm512_shuffle_i64x2(b, d, 0x88);
    v[3] = _mm512_shuffle_i64x2(b, d, 0xdd);
}

/* The same for 32 bytes: v[k] = 16 bytes off + 16 k, k < 2. */
HOT void rw_load4x2(const uint8_t *p, size_t w1, size_t w2, size_t w3, size_t off, __m512i v[2])
{
    const __m512i a = _mm512_inserti64x4(_mm512_castsi256_si512(loadu256(p + off)), loadu256(p + w1 + off), 1);
    const __m512i b = _mm512_inserti64x4(_mm512_castsi256_si512(loadu256(p + w2 + off)), loadu256(p + w3 + off), 1);
    v[0] = _mm512_shuffle_i64x2(a, b, 0x88);
    v[1] = _mm512_shuffle_i64x2(a, b, 0xdd);
}

/* r[t] lanes (row q, j): the 4 int32 partial sums of row q, token t ->
 * lanes (row q, t): their totals, for the tokens t0..t0+3 (0 past ny). */
HOT __m512i rw_reduce(const __m512i r[RW_NY], const int t0, const int ny)
{
    const __m512i z = _mm512_setzero_si512();
    return sum4_lanes_epi32(r[t0], ny > t0 + 1 ? r[t0 + 1] : z, ny > t0 + 2 ? r[t0 + 2] : z,
                            ny > t0 + 3 ? r[t0 + 3] : z);
}

/* Super-block scales of the tokens t0..t0+3, lane (row q, t) = y_t d. */
HOT __m512 rw_yd(const struct block_q8_K *const y[RW_NY], int64_t i, const int t0, const int ny)
{
    return _mm512_broadcast_f32x4(_mm_setr_ps(y[t0][i].d, ny > t0 + 1 ? y[t0 + 1][i].d : 0.0f,
                                              ny > t0 + 2 ? y[t0 + 2][i].d : 0.0f,
                                              ny > t0 + 3 ? y[t0 + 3][i].d : 0.0f));
}

/* Lane (row q, t) of v[t0 / 4] to s[t * ss + q] for t < ny, q < nr. */
HOT void rw_store(const __m512 *v, float *s, size_t ss, const int ny, int nr)
{
    _Alignas(64) float o[RW_NY / 4][16];
    UNROLL
    for (int g = 0; g < (ny + 3) / 4; g++)
        _mm512_store_ps(o[g], v[g]);
    for (int q = 0; q < nr; q++)
        UNROLL
        for (int t = 0; t < ny; t++)
            s[(size_t)t * ss + q] = o[t / 4][4 * q + t % 4];
}

/* Prefetch slice i of nb of the bytes [p, p + len). */
HOT void rw_prefetch(const uint8_t *p, size_t len, int64_t i, int64_t nb)
{
    const size_t a = (size_t)i * len / (size_t)nb & ~(size_t)63, b = (size_t)(i + 1) * len / (size_t)nb;
    for (size_t o = a; o < b; o += 64)
        __builtin_prefetch(p + o, 0, RW_PF_LOC);
}

/* A K-quant small-batch body's operands: the ny token rows y[t] (ys bytes
 * apart) and the offsets of rows 1-3 from row 0, 0 for rows past nr (row 0
 * is read again in their place and not stored). */
HOT void rw_setup(const uint8_t *vy, size_t ys, const int ny, const struct block_q8_K *y[RW_NY], size_t ws, int nr,
                  size_t *w1, size_t *w2, size_t *w3)
{
    UNROLL
    for (int t = 0; t < ny; t++)
        y[t] = (const struct block_q8_K *)(const void *)(vy + (size_t)t * ys);
    *w1 = nr > 1 ? ws : 0;
    *w2 = nr > 2 ? 2 * ws : 0;
    *w3 = nr > 3 ? 3 * ws : 0;
}

/* Q4_K: 4 rows (nr of them real: the others repeat row 0 and are not
 * stored) against ny tokens. pf/pf_len: bytes to prefetch meanwhile. */
HOT void rw_q4_k_body(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *vy, size_t ys,
                      const int ny, float *s, size_t ss, const uint8_t *pf, size_t pf_len)
{
    const struct block_q8_K *y[RW_NY];
    size_t w1, w2, w3;
    rw_setup(vy, ys, ny, y, ws, nr, &w1, &w2, &w3);
    const int64_t nb = n / QK_K;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    /* pshufb patterns of the decoded scale bytes (sc 0-7, min 8-15) to int16 */
    __m512i scx[4];
    UNROLL
    for (int p = 0; p < 4; p++)
        scx[p] = _mm512_broadcast_i32x4(_mm_setr_epi8((char)(2 * p), -1, (char)(2 * p), -1, (char)(2 * p), -1,
                                                      (char)(2 * p), -1, (char)(2 * p + 1), -1, (char)(2 * p + 1),
                                                      -1, (char)(2 * p + 1), -1, (char)(2 * p + 1), -1));
    const __m512i mxa = _mm512_broadcast_i32x4(_mm_setr_epi8(8, -1, 8, -1, 9, -1, 9, -1, 10, -1, 10, -1, 11, -1, 11, -1));
    const __m512i mxb = _mm512_broadcast_i32x4(_mm_setr_epi8(12, -1, 12, -1, 13, -1, 13, -1, 14, -1, 14, -1, 15, -1, 15, -1));
    const __m512i sh = _mm512_setr_epi32(0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4);
    __m512 acc[RW_NY / 4], accm[RW_NY / 4];
    UNROLL
    for (int g = 0; g < (ny + 3) / 4; g++)
        acc[g] = accm[g] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) { /* hot */
        const uint8_t *x0 = w + (size_t)i * sizeof(struct block_q4_K);
        if (pf)
            rw_prefetch(pf, pf_len, i, nb);
        /* k4_scales_decode() of the 4 rows: lane dwords u0 u1 u2 (the 12
         * scale bytes; the 4 after them are the first qs bytes) ->
         * sc 0-3, sc 4-7, min 0-3, min 4-7. */
        __m512i sv = _mm512_castsi128_si512(loadu128(x0 + 4));
        sv = _mm512_inserti32x4(sv, loadu128(x0 + w1 + 4), 1);
        sv = _mm512_inserti32x4(sv, loadu128(x0 + w2 + 4), 2);
        sv = _mm512_inserti32x4(sv, loadu128(x0 + w3 + 4), 3);
        const __m512i A = _mm512_srlv_epi32(_mm512_shuffle_epi32(sv, (_MM_PERM_ENUM)0x98 /* 0 2 1 2 */), sh);
        const __m512i B = _mm512_shuffle_epi32(sv, (_MM_PERM_ENUM)0x50 /* 0 0 1 1 */);
        const __m512i r02 = _mm512_and_si512(A, _mm512_set1_epi32(0x3f3f3f3f));
        const __m512i r13 = _mm512_or_si512(_mm512_and_si512(A, _mm512_set1_epi32(0x0f0f0f0f)),
                                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(B, 6),
                                                                               _mm512_set1_epi32(0x03030303)), 4));
        const __m512i scm = _mm512_mask_blend_epi32(0xaaaa, r02, r13);
        __m512i S[RW_NY], M[RW_NY];
        UNROLL
        for (int t = 0; t < ny; t++) {
            const __m512i bA = _mm512_broadcast_i32x4(loadu128(y[t][i].bsums));
            const __m512i bB = _mm512_broadcast_i32x4(loadu128(y[t][i].bsums + 8));
            M[t] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(scm, mxa), bA),
                                       _mm512_shuffle_epi8(scm, mxb), bB);
            S[t] = _mm512_setzero_si512();
        }
        __m512i qv[2][4];
        rw_load4x4(x0, w1, w2, w3, offsetof(struct block_q4_K, qs), qv[0]);
        rw_load4x4(x0, w1, w2, w3, offsetof(struct block_q4_K, qs) + 64, qv[1]);
        UNROLL
        for (int p = 0; p < 4; p++) {
            const __m512i v0 = qv[p >> 1][2 * (p & 1)], v1 = qv[p >> 1][2 * (p & 1) + 1];
            const __m512i l0 = _mm512_and_si512(v0, m4), h0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4);
            const __m512i l1 = _mm512_and_si512(v1, m4), h1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4);
            const __m512i scp = _mm512_shuffle_epi8(scm, scx[p]);
            UNROLL
            for (int t = 0; t < ny; t++) {
                const int8_t *q8 = y[t][i].qs + 64 * p;
                __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), l0, _mm512_broadcast_i32x4(loadu128(q8)));
                a = _mm512_dpbusd_epi32(a, l1, _mm512_broadcast_i32x4(loadu128(q8 + 16)));
                __m512i b = _mm512_dpbusd_epi32(_mm512_setzero_si512(), h0, _mm512_broadcast_i32x4(loadu128(q8 + 32)));
                b = _mm512_dpbusd_epi32(b, h1, _mm512_broadcast_i32x4(loadu128(q8 + 48)));
                S[t] = _mm512_dpwssd_epi32(S[t], _mm512_packs_epi32(a, b), scp);
            }
        }
        /* d, dmin of the 4 rows -> lanes (row q, t) */
        const __m128i dh = _mm_setr_epi32((int)ld32(x0), (int)ld32(x0 + w1), (int)ld32(x0 + w2), (int)ld32(x0 + w3));
        const __m512 dd = _mm512_castps256_ps512(_mm256_cvtph_ps(dh)); /* d0 dmin0 d1 dmin1 ... */
        const __m512i di = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
        const __m512 dv = _mm512_permutexvar_ps(di, dd);
        const __m512 dmv = _mm512_permutexvar_ps(_mm512_add_epi32(di, _mm512_set1_epi32(1)), dd);
        UNROLL
        for (int g = 0; g < (ny + 3) / 4; g++) {
            const __m512 yd = rw_yd(y, i, 4 * g, ny);
            acc[g] = _mm512_fmadd_ps(_mm512_mul_ps(dv, yd), _mm512_cvtepi32_ps(rw_reduce(S, 4 * g, ny)), acc[g]);
            accm[g] = _mm512_fmadd_ps(_mm512_mul_ps(dmv, yd), _mm512_cvtepi32_ps(rw_reduce(M, 4 * g, ny)), accm[g]);
        }
    }
    UNROLL
    for (int g = 0; g < (ny + 3) / 4; g++)
        acc[g] = _mm512_sub_ps(acc[g], accm[g]);
    rw_store(acc, s, ss, ny, nr);
}

/* Q6_K: 4 rows (as in Q4_K) against ny tokens. In half h, the 16 bytes u
 * of ql (0-3) give values 16u.. (low nibbles, sub-block 8h + u) and
 * 64 + 16u.. (high, 8h + 4 + u); their 2 high bits are in qh bytes
 * 16 (u % 2).. at bits 2 (u / 2) (low) and 4 + 2 (u / 2) (high). The -32
 * offset enters S once per super-block through the bsums, as in d512_q6_k. */
HOT void rw_q6_k_body(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *vy, size_t ys,
                      const int ny, float *s, size_t ss, const uint8_t *pf, size_t pf_len)
{
    const struct block_q8_K *y[RW_NY];
    size_t w1, w2, w3;
    rw_setup(vy, ys, ny, y, ws, nr, &w1, &w2, &w3);
    const int64_t nb = n / QK_K;
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30), m03 = _mm512_set1_epi8(0x03),
                  m0c = _mm512_set1_epi8(0x0c);
    __m512 acc[RW_NY / 4];
    UNROLL
    for (int g = 0; g < (ny + 3) / 4; g++)
        acc[g] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) { /* hot */
        const uint8_t *x0 = w + (size_t)i * sizeof(struct block_q6_K);
        if (pf)
            rw_prefetch(pf, pf_len, i, nb);
        const __m512i sc = rw_load4(x0, w1, w2, w3, offsetof(struct block_q6_K, scales));
        /* the 16 scales of each row as int16: ca 0-7, cb 8-15 (each byte
         * doubled, then shifted down arithmetically) */
        const __m512i ca = _mm512_srai_epi16(_mm512_unpacklo_epi8(sc, sc), 8);
        const __m512i cb = _mm512_srai_epi16(_mm512_unpackhi_epi8(sc, sc), 8);
        const __m512i ca32 = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(ca, 5));
        const __m512i cb32 = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(cb, 5));
        __m512i S[RW_NY];
        UNROLL
        for (int t = 0; t < ny; t++) /* the -32 offset: -32 * sum(sc[s] * bsums[s]) */
            S[t] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(_mm512_setzero_si512(), ca32,
                                                           _mm512_broadcast_i32x4(loadu128(y[t][i].bsums))),
                                       cb32, _mm512_broadcast_i32x4(loadu128(y[t][i].bsums + 8)));
        UNROLL
        for (int h = 0; h < 2; h++) {
            __m512i Hv[2], Lv[4];
            rw_load4x2(x0, w1, w2, w3, offsetof(struct block_q6_K, qh) + 32 * (size_t)h, Hv);
            rw_load4x4(x0, w1, w2, w3, offsetof(struct block_q6_K, ql) + 64 * (size_t)h, Lv);
            UNROLL
            for (int u = 0; u < 4; u++) {
                const __m512i L = Lv[u];
                const __m512i H = Hv[u & 1];
                const __m512i bl = u < 2 ? _mm512_slli_epi16(_mm512_and_si512(H, m03), 4)
                                         : _mm512_slli_epi16(_mm512_and_si512(H, m0c), 2);
                const __m512i bh = u < 2 ? _mm512_and_si512(H, m30) : _mm512_and_si512(_mm512_srli_epi16(H, 2), m30);
                const __m512i lo = _mm512_or_si512(_mm512_and_si512(L, m4), bl);
                const __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4), bh);
                /* int16 lanes: scale 8h + u (x4), then 8h + 4 + u (x4) */
                const char a0 = (char)(2 * u), a1 = (char)(2 * u + 1), b0 = (char)(2 * u + 8), b1 = (char)(2 * u + 9);
                const __m512i scp = _mm512_shuffle_epi8(h ? cb : ca, _mm512_broadcast_i32x4(_mm_setr_epi8(
                                                        a0, a1, a0, a1, a0, a1, a0, a1, b0, b1, b0, b1, b0, b1, b0, b1)));
                UNROLL
                for (int t = 0; t < ny; t++) {
                    const int8_t *q8 = y[t][i].qs + 128 * h + 16 * u;
                    const __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_broadcast_i32x4(loadu128(q8)));
                    const __m512i b = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, _mm512_broadcast_i32x4(loadu128(q8 + 64)));
                    S[t] = _mm512_dpwssd_epi32(S[t], _mm512_packs_epi32(a, b), scp);
                }
            }
        }
        const size_t od = offsetof(struct block_q6_K, d);
        const __m128i dh = _mm_setr_epi16((short)ld16(x0 + od), (short)ld16(x0 + w1 + od), (short)ld16(x0 + w2 + od),
                                          (short)ld16(x0 + w3 + od), 0, 0, 0, 0);
        const __m512 dv = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                                _mm512_castps128_ps512(_mm_cvtph_ps(dh)));
        UNROLL
        for (int g = 0; g < (ny + 3) / 4; g++)
            acc[g] = _mm512_fmadd_ps(_mm512_mul_ps(dv, rw_yd(y, i, 4 * g, ny)),
                                     _mm512_cvtepi32_ps(rw_reduce(S, 4 * g, ny)), acc[g]);
    }
    rw_store(acc, s, ss, ny, nr);
}

/* The first rows of a call, up to where the running prefetch starts
 * (rows pf_rows on): requested all at once at entry, so that their misses
 * overlap instead of arriving a super-block's worth at a time, as demand
 * loads. A MoE expert's rows are a new stream per call (three per expert
 * and layer). Measured on Zen 5, medium Q4_K_M, 2 threads, 4 alternating
 * runs: 16-stream decode 468 -> 485 tokens/s (+3.5 %), one stream +1 %.
 * Asking, at a task's start, for the head of the task after it as well
 * measured no better (440 vs 448), and was left out. */
HOT void rw_prefetch_head(const uint8_t *w, size_t ws, int n_rows, int pf_rows)
{
    const size_t len = (size_t)(n_rows < pf_rows ? n_rows : pf_rows) * ws;
    for (size_t o = 0; o < len; o += 64)
        __builtin_prefetch(w + o, 0, 3);
}

/* Rows in groups of 4, each against every group of up to RW_NY tokens while
 * it is in L1; the row group RW_PF_BYTES ahead is prefetched meanwhile
 * (only within the n_rows given). */
#define RW_ENTRY(name, BT)                                                                 \
    static void name(int64_t n, const void *vw, size_t ws, int n_rows, const void *vy, size_t ys, \
                     int n_y, float *s, size_t ss)                                          \
    {                                                                                      \
        const uint8_t *w = vw;                                                             \
        const int pf_groups = (int)((RW_PF_BYTES + 4 * ws - 1) / (4 * ws));                \
        rw_prefetch_head(w, ws, n_rows, 4 * pf_groups);                                    \
        for (int r = 0; r < n_rows; r += 4) {                                              \
            const int nr = n_rows - r < 4 ? n_rows - r : 4;                                \
            const int pr = r + 4 * pf_groups;                                              \
            const uint8_t *pf = pr < n_rows ? w + (size_t)pr * ws : NULL;                  \
            const size_t pl = pf ? (size_t)(n_rows - pr < 4 ? n_rows - pr : 4) * ws : 0;   \
            const uint8_t *wr = w + (size_t)r * ws;                                        \
            for (int t0 = 0; t0 < n_y; t0 += RW_NY) {                                      \
                const uint8_t *yt = (const uint8_t *)vy + (size_t)t0 * ys;                 \
                float *st = s + (size_t)t0 * ss + r;                                       \
                switch (n_y - t0) {                                                        \
                case 1: name##_body(n, wr, ws, nr, yt, ys, 1, st, ss, pf, pl); break;      \
                case 2: name##_body(n, wr, ws, nr, yt, ys, 2, st, ss, pf, pl); break;      \
                case 3: name##_body(n, wr, ws, nr, yt, ys, 3, st, ss, pf, pl); break;      \
                case 4: name##_body(n, wr, ws, nr, yt, ys, 4, st, ss, pf, pl); break;      \
                case 5: name##_body(n, wr, ws, nr, yt, ys, 5, st, ss, pf, pl); break;      \
                case 6: name##_body(n, wr, ws, nr, yt, ys, 6, st, ss, pf, pl); break;      \
                case 7: name##_body(n, wr, ws, nr, yt, ys, 7, st, ss, pf, pl); break;      \
                default: name##_body(n, wr, ws, nr, yt, ys, 8, st, ss, pf, pl); break;     \
                }                                                                          \
                pf = NULL; /* the first token group brought it */                          \
            }                                                                              \
        }                                                                                  \
    }

/* Q8_0: 4 rows against ny <= 4 tokens, with the float order of d512_q8_0:
 * per (row, token) 16 float lanes, lane l of block pair q accumulating
 * fma(d_b * dy_b, p_l, acc) with p_l the exact sum of the 4 products of
 * group l, then hsum512_tree. Here the 16-byte segment g of a block pair
 * (g < 2: block 2q, else 2q + 1) holds lanes 4g..4g+3, so acc[t][g] lane
 * (row, j) is canonical lane 4g + j of that row. vpdpbusd needs unsigned
 * weights: they are taken + 128 (w ^ 0x80) and each group's sum starts at
 * negc = -128 * (sum of its 4 activation bytes), per token, computed by the
 * caller once for all rows. nb must be even (the caller checks). */
HOT void rw_q8_0_body(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *vy, size_t ys,
                      const int ny, const int32_t *negc, float *s, size_t ss, const uint8_t *pf, size_t pf_len)
{
    const struct block_q8_0 *y[4];
    UNROLL
    for (int t = 0; t < ny; t++)
        y[t] = (const struct block_q8_0 *)(const void *)(vy + (size_t)t * ys);
    const size_t w1 = nr > 1 ? ws : 0, w2 = nr > 2 ? 2 * ws : 0, w3 = nr > 3 ? 3 * ws : 0;
    const int64_t nb = n / 32, np2 = nb / 2;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i di = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m512 acc[4][4];
    UNROLL
    for (int t = 0; t < ny; t++)
        UNROLL
        for (int g = 0; g < 4; g++)
            acc[t][g] = _mm512_setzero_ps();
    for (int64_t q = 0; q < np2; q++) { /* hot */
        if (pf)
            rw_prefetch(pf, pf_len, q, np2);
        UNROLL
        for (int b = 0; b < 2; b++) {
            const uint8_t *x0 = w + (size_t)(2 * q + b) * sizeof(struct block_q8_0);
            const __m128i dh = _mm_setr_epi16((short)ld16(x0), (short)ld16(x0 + w1), (short)ld16(x0 + w2),
                                              (short)ld16(x0 + w3), 0, 0, 0, 0);
            const __m512 dv = _mm512_permutexvar_ps(di, _mm512_castps128_ps512(_mm_cvtph_ps(dh)));
            const __m512i W0 = _mm512_xor_si512(rw_load4(x0, w1, w2, w3, 2), flip);
            const __m512i W1 = _mm512_xor_si512(rw_load4(x0, w1, w2, w3, 18), flip);
            UNROLL
            for (int t = 0; t < ny; t++) {
                const struct block_q8_0 *yb = &y[t][2 * q + b];
                const int32_t *nc = negc + (size_t)t * (size_t)(n / 4) + (size_t)(2 * q + b) * 8;
                const __m512 sc = _mm512_mul_ps(dv, _mm512_set1_ps(f16f(yb->d)));
                const __m512i p0 = _mm512_dpbusd_epi32(_mm512_broadcast_i32x4(loadu128(nc)), W0,
                                                       _mm512_broadcast_i32x4(loadu128(yb->qs)));
                const __m512i p1 = _mm512_dpbusd_epi32(_mm512_broadcast_i32x4(loadu128(nc + 4)), W1,
                                                       _mm512_broadcast_i32x4(loadu128(yb->qs + 16)));
                acc[t][2 * b] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p0), acc[t][2 * b]);
                acc[t][2 * b + 1] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p1), acc[t][2 * b + 1]);
            }
        }
    }
    /* hsum512_tree lane by lane: (l, l + 8), then (l, l + 4), then within 4 */
    _Alignas(64) float o[4][16];
    UNROLL
    for (int t = 0; t < ny; t++) {
        const __m512 t6 = _mm512_add_ps(_mm512_add_ps(acc[t][3], acc[t][1]), _mm512_add_ps(acc[t][2], acc[t][0]));
        const __m512 t8 = _mm512_add_ps(t6, _mm512_shuffle_ps(t6, t6, 0x4e));
        _mm512_store_ps(o[t], _mm512_add_ps(t8, _mm512_movehdup_ps(t8)));
    }
    for (int r = 0; r < nr; r++)
        UNROLL
        for (int t = 0; t < ny; t++)
            s[(size_t)t * ss + r] = o[t][4 * r] + 0.0f; /* + the (empty) odd tail, as d512_q8_0 */
}

/* Q8_0 rows: per 4-row group, tokens in groups of 4 (acc[4][4] fills the
 * registers); each token's negc once per call. Rows of an odd block count
 * take dot[] row by row. */
static void rw_q8_0(int64_t n, const void *vw, size_t ws, int n_rows, const void *vy, size_t ys, int n_y,
                    float *s, size_t ss)
{
    const uint8_t *w = vw;
    const int64_t nb = n / 32;
    if (nb & 1) {
        for (int r = 0; r < n_rows; r++)
            for (int t0 = 0; t0 < n_y; t0 += 4) {
                float o[4];
                const int ny = n_y - t0 < 4 ? n_y - t0 : 4;
                d512_q8_0(n, w + (size_t)r * ws, (const uint8_t *)vy + (size_t)t0 * ys, ys, ny, o);
                for (int t = 0; t < ny; t++)
                    s[(size_t)(t0 + t) * ss + r] = o[t];
            }
        return;
    }
    const __m512i k128 = _mm512_set1_epi8((char)0x80);
    for (int t0 = 0; t0 < n_y; t0 += 4) {
        const int nt = n_y - t0 < 4 ? n_y - t0 : 4;
        int32_t negc[4 * (n / 4)];
        for (int t = 0; t < nt; t++) {
            const struct block_q8_0 *yb = (const struct block_q8_0 *)(const void *)((const uint8_t *)vy + (size_t)(t0 + t) * ys);
            for (int64_t b = 0; b < nb; b++) {
                const __m256i c = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm512_castsi512_si256(k128), loadu256(yb[b].qs));
                _mm256_storeu_si256((__m256i *)(void *)(negc + (size_t)t * (size_t)(n / 4) + 8 * b),
                                    _mm256_sub_epi32(_mm256_setzero_si256(), c));
            }
        }
        const int pf_groups = (int)((RW_PF_BYTES + 4 * ws - 1) / (4 * ws));
        if (t0 == 0)
            rw_prefetch_head(w, ws, n_rows, 4 * pf_groups);
        const uint8_t *yt = (const uint8_t *)vy + (size_t)t0 * ys;
        for (int r = 0; r < n_rows; r += 4) {
            const int nr = n_rows - r < 4 ? n_rows - r : 4;
            const int pr = r + 4 * pf_groups;
            /* only the first token group reads the rows from memory */
            const uint8_t *pf = t0 == 0 && pr < n_rows ? w + (size_t)pr * ws : NULL;
            const size_t pl = pf ? (size_t)(n_rows - pr < 4 ? n_rows - pr : 4) * ws : 0;
            const uint8_t *wr = w + (size_t)r * ws;
            float *st = s + (size_t)t0 * ss + r;
            switch (nt) {
            case 1: rw_q8_0_body(n, wr, ws, nr, yt, ys, 1, negc, st, ss, pf, pl); break;
            case 2: rw_q8_0_body(n, wr, ws, nr, yt, ys, 2, negc, st, ss, pf, pl); break;
            case 3: rw_q8_0_body(n, wr, ws, nr, yt, ys, 3, negc, st, ss, pf, pl); break;
            default: rw_q8_0_body(n, wr, ws, nr, yt, ys, 4, negc, st, ss, pf, pl); break;
            }
        }
    }
}

RW_ENTRY(rw_q4_k, struct block_q4_K)
RW_ENTRY(rw_q6_k, struct block_q6_K)
#endif /* DOT_VNNI */

/* ---- activations: Q8_K in 16 lanes ----
 *
 * a256_q8_k's arithmetic (the same absmax scan, the first value of that
 * magnitude for the sign, the same multiply, round-half-even and cap, so
 * the same bytes), with one 16-value group per register: its 16 bytes are
 * one vpmovdb and the 16 bsums come out of one transposing reduction of the
 * 16 registers instead of 16 horizontal sums. */
static void a512_q8_k(const float *x, void *vy, int64_t n)
{
    struct block_q8_K *y = vy;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        __m512 amaxv = _mm512_setzero_ps();
        _Pragma("GCC unroll 16")
        for (int k = 0; k < 16; k++)
            amaxv = _mm512_max_ps(amaxv, _mm512_abs_ps(_mm512_loadu_ps(x + 16 * k)));
        const float amax = _mm512_reduce_max_ps(amaxv);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float max = 0.0f;
        const __m512 am = _mm512_set1_ps(amax);
        for (int k = 0; k < 16; k++) {
            const __mmask16 m = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + 16 * k)), am, _CMP_EQ_OQ);
            if (m) {
                max = x[16 * k + __builtin_ctz((unsigned)m)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m512 isv = _mm512_set1_ps(iscale), top = _mm512_set1_ps(127.0f);
        __m512i q[16];
        _Pragma("GCC unroll 16")
        for (int k = 0; k < 16; k++) {
            const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(isv, _mm512_loadu_ps(x + 16 * k)),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q[k] = _mm512_cvtps_epi32(_mm512_min_ps(r, top));
            _mm_storeu_si128((__m128i *)(void *)(y[i].qs + 16 * k), _mm512_cvtepi32_epi8(q[k]));
        }
        const __m512i r0 = sum4_lanes_epi32(q[0], q[1], q[2], q[3]), r1 = sum4_lanes_epi32(q[4], q[5], q[6], q[7]);
        const __m512i r2 = sum4_lanes_epi32(q[8], q[9], q[10], q[11]), r3 = sum4_lanes_epi32(q[12], q[13], q[14], q[15]);
        /* 4 x 4 transpose of the 128-bit lanes, added: element 4 j + m = bsum 4 j + m */
        const __m512i ab = _mm512_add_epi32(_mm512_shuffle_i64x2(r0, r1, 0x44), _mm512_shuffle_i64x2(r0, r1, 0xee));
        const __m512i cd = _mm512_add_epi32(_mm512_shuffle_i64x2(r2, r3, 0x44), _mm512_shuffle_i64x2(r2, r3, 0xee));
        const __m512i bs = _mm512_add_epi32(_mm512_shuffle_i64x2(ab, cd, 0x88), _mm512_shuffle_i64x2(ab, cd, 0xdd));
        _mm256_storeu_si256((__m256i *)(void *)y[i].bsums, _mm512_cvtepi32_epi16(bs));
        y[i].d = 1.0f / iscale;
    }
}

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
    k->act[BE_TYPE_Q8_K] = a512_q8_k;
#ifdef DOT_VNNI
    k->gemm[BE_TYPE_Q4_K] = (struct be_cpu_gemm){kp_pack_q4_k, kgemm_k4, KP_SB(8), NULL};
    k->gemm[BE_TYPE_Q5_K] = (struct be_cpu_gemm){kp_pack_q5_k, kgemm_k4, KP_SB(8), NULL};
    k->gemm[BE_TYPE_Q6_K] = (struct be_cpu_gemm){kp_pack_q6_k, kgemm_k6, KP_SB(16), NULL};
    k->gemm[BE_TYPE_Q8_0] = (struct be_cpu_gemm){kp_pack_q8_0, q8gemm, Q8P_PAIR / 2, NULL};
    k->stored[BE_TYPE_Q4_K] = (struct be_cpu_gemm){p4_pack, p4_run, P4_SB, p4_run_pf};
    k->stored[BE_TYPE_Q6_K] = (struct be_cpu_gemm){p6_pack, p6_run, P6_SB, p6_run_pf};
    k->rows[BE_TYPE_Q4_K] = rw_q4_k;
    k->rows[BE_TYPE_Q6_K] = rw_q6_k;
    k->rows[BE_TYPE_Q8_0] = rw_q8_0;
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
