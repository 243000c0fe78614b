/* SPDX-License-Identifier: MIT */
/*
 * quant.c - the plain scalar conversions of kernels/quant.h: dequantize every
 * type moed reads, quantize the types it writes, and the reference dot
 * product of a weight row with an 8-bit (or float) activation row.
 *
 * This is the CPU reference: every faster kernel (SIMD, CUDA) is tested
 * against these functions, so they are written to be read, not to be fast.
 *
 * Invariants a reader must know:
 *  - The block layouts are GGUF's (ggml's), bit for bit. A value's place in a
 *    block follows ggml's packing, which is not always the obvious one (for
 *    example Q4_0 keeps value j in the low nibble of byte j and value j+16 in
 *    its high nibble).
 *  - The activation quantizers (Q8_0, Q8_1, Q8_K) compute the scale and round
 *    exactly as llama.cpp's quantize_row_q8_*_ref do, so logits can be
 *    compared with llama.cpp. Q4_0/Q4_1/Q5_0/Q5_1 also follow llama.cpp's
 *    reference quantizers; the K-quant and IQ4 weight quantizers are moed's
 *    own (valid blocks, small error, no importance matrix).
 *  - be_vec_dot_ref() sums integer products inside a block and multiplies by
 *    the block scales, as the integer reference does; it equals
 *    dot(dequant(x), dequant(y)) up to float rounding order, except that the
 *    Q8_1 partner uses the block's stored s (= d * sum(qs), rounded to f16)
 *    for the weight's min term, as llama.cpp does.
 */
#include "kernels/quant.h"

#include "common/log.h"

#include <float.h>
#include <math.h>
#include <string.h>

const int8_t be_iq4nl_values[16] = {
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
};

/* ---- small helpers ---- */

static inline float f16_get(be_f16_t h)
{
    return be_f16_to_f32(h);
}

/* llama.cpp's nearest_int() adds 1.5 * 2^23 and reads the mantissa, which
 * rounds half to even in the default rounding mode; rintf() is the same. */
static inline int nearest_int(float v)
{
    return (int)rintf(v);
}

static inline int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The value of x with the largest magnitude, sign kept (0 for all zeros). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    return max;
}

/* Index of the IQ4 level nearest to v (ties to the lower level). */
static int iq4_best_index(float v)
{
    int best = 0;
    float best_err = fabsf(v - be_iq4nl_values[0]);
    for (int k = 1; k < 16; k++) {
        float err = fabsf(v - be_iq4nl_values[k]);
        if (err < best_err) {
            best_err = err;
            best = k;
        }
    }
    return best;
}

/* Q4_K/Q5_K pack 8 six-bit scales and 8 six-bit mins into 12 bytes: bytes
 * 0-3 hold scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7, bytes
 * 4-7 the same for the mins, bytes 8-11 the low 4 bits of scale (low nibble)
 * and min (high nibble) 4-7. */
static void k4_scale_min_get(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void k4_scale_min_put(uint8_t *s, const int *sc, const int *m)
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)((m[j] & 63) | ((m[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4));
    }
}

/* Q3_K packs 16 six-bit scales (stored +32) into 12 bytes: the low 4 bits of
 * scale j are in byte j % 8 (low nibble for j < 8, high nibble after), the
 * top 2 bits in byte 8 + j % 4 at bit 2 * (j / 4). Returns scale - 32. */
static int q3k_scale_get(const uint8_t *s, int j)
{
    int lo = j < 8 ? s[j] & 0x0f : s[j - 8] >> 4;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

static void q3k_scale_put(uint8_t *s, const int *sc) /* sc in [-32, 31] */
{
    memset(s, 0, 12);
    for (int j = 0; j < 16; j++) {
        int v = sc[j] + 32;
        if (j < 8)
            s[j] |= (uint8_t)(v & 0x0f);
        else
            s[j - 8] |= (uint8_t)((v & 0x0f) << 4);
        s[8 + j % 4] |= (uint8_t)((v >> 4) << (2 * (j / 4)));
    }
}

static int iq4xs_scale_get(const struct block_iq4_xs *b, int ib)
{
    int lo = (b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
    int hi = (b->scales_h >> (2 * ib)) & 3;
    return (lo | (hi << 4)) - 32;
}

/* ---- dequantization: 32-value blocks ---- */

static void dequant_q4_0(const struct block_q4_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        float d = f16_get(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * ((b[i].qs[j] & 0x0f) - 8);
            y[j + 16] = d * ((b[i].qs[j] >> 4) - 8);
        }
    }
}

static void dequant_q4_1(const struct block_q4_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        float d = f16_get(b[i].d), m = f16_get(b[i].m);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (b[i].qs[j] & 0x0f) + m;
            y[j + 16] = d * (b[i].qs[j] >> 4) + m;
        }
    }
}

/* Q5_0/Q5_1: bit j of the little-endian 32-bit qh is the fifth bit of value j. */
static void dequant_q5_0(const struct block_q5_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        float d = f16_get(b[i].d);
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4);
        for (int j = 0; j < 16; j++) {
            int lo = (b[i].qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
            int hi = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = d * (lo - 16);
            y[j + 16] = d * (hi - 16);
        }
    }
}

static void dequant_q5_1(const struct block_q5_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        float d = f16_get(b[i].d), m = f16_get(b[i].m);
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4);
        for (int j = 0; j < 16; j++) {
            int lo = (b[i].qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
            int hi = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = d * lo + m;
            y[j + 16] = d * hi + m;
        }
    }
}

static void dequant_q8_0(const struct block_q8_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        float d = f16_get(b[i].d);
        for (int j = 0; j < 32; j++)
            y[j] = d * b[i].qs[j];
    }
}

static void dequant_q8_1(const struct block_q8_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        float d = f16_get(b[i].d);
        for (int j = 0; j < 32; j++)
            y[j] = d * b[i].qs[j];
    }
}

static void dequant_iq4_nl(const struct block_iq4_nl *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        float d = f16_get(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * be_iq4nl_values[b[i].qs[j] & 0x0f];
            y[j + 16] = d * be_iq4nl_values[b[i].qs[j] >> 4];
        }
    }
}

/* ---- dequantization: 256-value super-blocks ---- */

/* Q2_K and Q3_K share the 2-bit layout: each 128-value half uses 32 bytes;
 * value 32*k + l of the half is in byte l at bits 2k..2k+1. Sub-block (16
 * values) s uses scales[s]. */
static void dequant_q2_k(const struct block_q2_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = f16_get(b[i].d), dmin = f16_get(b[i].dmin);
        for (int e = 0; e < QK_K; e++) {
            int half = e / 128, k = (e % 128) / 32, l = e % 32;
            int q = (b[i].qs[32 * half + l] >> (2 * k)) & 3;
            uint8_t sc = b[i].scales[e / 16];
            y[e] = d * (sc & 0x0f) * q - dmin * (sc >> 4);
        }
        y += QK_K;
    }
}

/* Q3_K: the third bit of value e is bit e / 32 of hmask[e % 32]; a cleared
 * bit means the 2-bit value is offset by -4. */
static void dequant_q3_k(const struct block_q3_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = f16_get(b[i].d);
        int sc[16];
        for (int s = 0; s < 16; s++)
            sc[s] = q3k_scale_get(b[i].scales, s);
        for (int e = 0; e < QK_K; e++) {
            int half = e / 128, k = (e % 128) / 32, l = e % 32;
            int q = (b[i].qs[32 * half + l] >> (2 * k)) & 3;
            if (!(b[i].hmask[l] & (1u << (e / 32))))
                q -= 4;
            y[e] = d * sc[e / 16] * q;
        }
        y += QK_K;
    }
}

/* Q4_K: each 64-value chunk p uses qs[32p .. 32p+31]: low nibbles are values
 * 64p .. 64p+31 (sub-block 2p), high nibbles the next 32 (sub-block 2p+1). */
static void dequant_q4_k(const struct block_q4_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = f16_get(b[i].d), dmin = f16_get(b[i].dmin);
        for (int s = 0; s < 8; s++) {
            int sc, m;
            k4_scale_min_get(b[i].scales, s, &sc, &m);
            const uint8_t *q = b[i].qs + 32 * (s / 2);
            int shift = 4 * (s % 2);
            for (int l = 0; l < 32; l++)
                y[32 * s + l] = d * sc * ((q[l] >> shift) & 0x0f) - dmin * m;
        }
        y += QK_K;
    }
}

/* Q5_K: as Q4_K, plus the fifth bit of value 32s + l in bit s of qh[l]. */
static void dequant_q5_k(const struct block_q5_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = f16_get(b[i].d), dmin = f16_get(b[i].dmin);
        for (int s = 0; s < 8; s++) {
            int sc, m;
            k4_scale_min_get(b[i].scales, s, &sc, &m);
            const uint8_t *q = b[i].qs + 32 * (s / 2);
            int shift = 4 * (s % 2);
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> shift) & 0x0f) | (((b[i].qh[l] >> s) & 1) << 4);
                y[32 * s + l] = d * sc * v - dmin * m;
            }
        }
        y += QK_K;
    }
}

/* Q6_K: each 128-value half h uses ql[64h .. 64h+63] and qh[32h .. 32h+31].
 * Value 128h + 32k + l: low 4 bits from ql[64h + l + 32*(k&1)] (low nibble
 * for k < 2, high nibble otherwise), high 2 bits from qh[32h + l] at bits
 * 2k..2k+1; stored with +32. Sub-block (16 values) s uses scales[s]. */
static void dequant_q6_k(const struct block_q6_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = f16_get(b[i].d);
        for (int e = 0; e < QK_K; e++) {
            int h = e / 128, k = (e % 128) / 32, l = e % 32;
            uint8_t lo_byte = b[i].ql[64 * h + l + 32 * (k & 1)];
            int lo = k < 2 ? lo_byte & 0x0f : lo_byte >> 4;
            int hi = (b[i].qh[32 * h + l] >> (2 * k)) & 3;
            y[e] = d * b[i].scales[e / 16] * ((lo | (hi << 4)) - 32);
        }
        y += QK_K;
    }
}

static void dequant_q8_k(const struct block_q8_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK_K)
        for (int j = 0; j < QK_K; j++)
            y[j] = b[i].d * b[i].qs[j];
}

/* IQ4_XS: 8 sub-blocks of 32, each laid out like an IQ4_NL block (value j in
 * the low nibble of byte j, value j+16 in its high nibble). */
static void dequant_iq4_xs(const struct block_iq4_xs *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = f16_get(b[i].d);
        for (int ib = 0; ib < 8; ib++) {
            float dl = d * iq4xs_scale_get(&b[i], ib);
            const uint8_t *q = b[i].qs + 16 * ib;
            for (int j = 0; j < 16; j++) {
                y[32 * ib + j] = dl * be_iq4nl_values[q[j] & 0x0f];
                y[32 * ib + j + 16] = dl * be_iq4nl_values[q[j] >> 4];
            }
        }
        y += QK_K;
    }
}

void be_dequant_row(enum be_type t, const void *src, float *dst, int64_t n)
{
    const struct be_type_info *ti = be_type_info(t);
    ASSERT(ti != NULL && n % ti->blck == 0);
    int64_t nb = n / ti->blck;
    switch (t) {
    case BE_TYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case BE_TYPE_F16: {
        const be_f16_t *h = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = be_f16_to_f32(h[i]);
        break;
    }
    case BE_TYPE_BF16: {
        const be_bf16_t *h = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = be_bf16_to_f32(h[i]);
        break;
    }
    case BE_TYPE_Q4_0: dequant_q4_0(src, dst, nb); break;
    case BE_TYPE_Q4_1: dequant_q4_1(src, dst, nb); break;
    case BE_TYPE_Q5_0: dequant_q5_0(src, dst, nb); break;
    case BE_TYPE_Q5_1: dequant_q5_1(src, dst, nb); break;
    case BE_TYPE_Q8_0: dequant_q8_0(src, dst, nb); break;
    case BE_TYPE_Q8_1: dequant_q8_1(src, dst, nb); break;
    case BE_TYPE_Q2_K: dequant_q2_k(src, dst, nb); break;
    case BE_TYPE_Q3_K: dequant_q3_k(src, dst, nb); break;
    case BE_TYPE_Q4_K: dequant_q4_k(src, dst, nb); break;
    case BE_TYPE_Q5_K: dequant_q5_k(src, dst, nb); break;
    case BE_TYPE_Q6_K: dequant_q6_k(src, dst, nb); break;
    case BE_TYPE_Q8_K: dequant_q8_k(src, dst, nb); break;
    case BE_TYPE_IQ4_NL: dequant_iq4_nl(src, dst, nb); break;
    case BE_TYPE_IQ4_XS: dequant_iq4_xs(src, dst, nb); break;
    default:
        ASSERT(!"be_dequant_row: unknown type");
    }
}

/* ---- quantization: llama.cpp's reference formulas (32-value blocks) ---- */

/* Q4_0: d = -(signed absmax)/8 so the extreme value maps to level 0 and the
 * others to trunc(x/d + 8.5) capped at 15, exactly as llama.cpp writes it. */
static void quant_q4_0(const float *x, struct block_q4_0 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float d = signed_absmax(x, 32) / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = be_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int lo = clamp_int((int8_t)(x[j] * id + 8.5f), 0, 15);
            int hi = clamp_int((int8_t)(x[j + 16] * id + 8.5f), 0, 15);
            b[i].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

static void min_max(const float *x, int n, float *mn, float *mx)
{
    *mn = FLT_MAX;
    *mx = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < *mn)
            *mn = x[j];
        if (x[j] > *mx)
            *mx = x[j];
    }
}

static void quant_q4_1(const float *x, struct block_q4_1 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float mn, mx;
        min_max(x, 32, &mn, &mx);
        float d = (mx - mn) / 15.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = be_f32_to_f16(d);
        b[i].m = be_f32_to_f16(mn);
        for (int j = 0; j < 16; j++) {
            int lo = clamp_int((int8_t)((x[j] - mn) * id + 0.5f), 0, 15);
            int hi = clamp_int((int8_t)((x[j + 16] - mn) * id + 0.5f), 0, 15);
            b[i].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

static void q5_pack(const int *q, uint8_t *qs, uint8_t *qh_bytes)
{
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
        qh |= (uint32_t)((q[j] >> 4) & 1) << j;
        qh |= (uint32_t)((q[j + 16] >> 4) & 1) << (j + 16);
    }
    memcpy(qh_bytes, &qh, 4);
}

static void quant_q5_0(const float *x, struct block_q5_0 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float d = signed_absmax(x, 32) / -16.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        int q[32];
        b[i].d = be_f32_to_f16(d);
        for (int j = 0; j < 32; j++)
            q[j] = clamp_int((int8_t)(x[j] * id + 16.5f), 0, 31);
        q5_pack(q, b[i].qs, b[i].qh);
    }
}

static void quant_q5_1(const float *x, struct block_q5_1 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float mn, mx;
        min_max(x, 32, &mn, &mx);
        float d = (mx - mn) / 31.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        int q[32];
        b[i].d = be_f32_to_f16(d);
        b[i].m = be_f32_to_f16(mn);
        for (int j = 0; j < 32; j++)
            q[j] = clamp_int((int)((x[j] - mn) * id + 0.5f), 0, 31);
        q5_pack(q, b[i].qs, b[i].qh);
    }
}

/* Q8_0 and Q8_1 (activations): d = amax/127, q = roundf(x / d), which rounds
 * half away from zero; Q8_1 also stores s = d * sum(q). */
static void quant_q8_0(const float *x, struct block_q8_0 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = be_f32_to_f16(d);
        for (int j = 0; j < 32; j++)
            b[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void quant_q8_1(const float *x, struct block_q8_1 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        b[i].d = be_f32_to_f16(d);
        for (int j = 0; j < 32; j++) {
            b[i].qs[j] = (int8_t)roundf(x[j] * id);
            sum += b[i].qs[j];
        }
        b[i].s = be_f32_to_f16((float)sum * d);
    }
}

/* Q8_K (activations): the signed absmax maps to -127 (iscale = -127/max),
 * rounding is half to even, the top is capped at 127, d = 1/iscale (so d is
 * negative when the absmax value is positive), bsums are the sums of each 16
 * values. */
static void quant_q8_k(const float *x, struct block_q8_K *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float max = signed_absmax(x, QK_K);
        if (max == 0.0f) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = nearest_int(iscale * x[j]);
            b[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++)
                sum += b[i].qs[16 * g + j];
            b[i].bsums[g] = (int16_t)sum;
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ---- quantization: fitting one sub-block (K-quants, IQ4) ----
 *
 * These search a few candidate scales, round every value to a level with the
 * candidate, then solve least squares for the best scale (and offset) given
 * those levels, keeping the candidate with the smallest squared error. The
 * fitted scales are quantized afterwards, and the levels chosen again with
 * the stored scales, so the blocks stay consistent. */

/* Fits x ~ scale * L + off with L in [0, nmax] and off <= 0 (K-quants store
 * the offset as a non-negative "min" that is subtracted). */
static void fit_scale_offset(const float *x, int n, int nmax, float *scale_out,
                             float *min_out)
{
    float mn, mx;
    min_max(x, n, &mn, &mx);
    if (mn > 0.0f)
        mn = 0.0f;
    if (mx <= mn) { /* all values equal and <= 0 */
        *scale_out = 0.0f;
        *min_out = -mn;
        return;
    }
    float best_scale = (mx - mn) / nmax, best_off = mn, best_err = 0.0f;
    for (int j = 0; j < n; j++) {
        int l = clamp_int(nearest_int((x[j] - mn) / best_scale), 0, nmax);
        float diff = best_scale * l + best_off - x[j];
        best_err += diff * diff;
    }
    for (int step = 0; step <= 20; step++) {
        float iscale = (nmax - 1.0f + 0.1f * step) / (mx - mn);
        double sl = 0, sl2 = 0, sx = 0, sxl = 0;
        int l_buf[QK_K];
        for (int j = 0; j < n; j++) {
            int l = clamp_int(nearest_int((x[j] - mn) * iscale), 0, nmax);
            l_buf[j] = l;
            sl += l;
            sl2 += (double)l * l;
            sx += x[j];
            sxl += (double)x[j] * l;
        }
        double det = n * sl2 - sl * sl;
        if (det <= 0)
            continue;
        float scale = (float)((n * sxl - sx * sl) / det);
        float off = (float)((sl2 * sx - sl * sxl) / det);
        if (off > 0.0f) { /* the format cannot add: refit through zero */
            off = 0.0f;
            scale = (float)(sxl / sl2);
        }
        if (scale <= 0.0f)
            continue;
        float err = 0.0f;
        for (int j = 0; j < n; j++) {
            float diff = scale * l_buf[j] + off - x[j];
            err += diff * diff;
        }
        if (err < best_err) {
            best_err = err;
            best_scale = scale;
            best_off = off;
        }
    }
    *scale_out = best_scale;
    *min_out = -best_off;
}

/* Fits x ~ scale * L with L in [-nmax, nmax-1]; the scale may be negative
 * (the value of largest magnitude maps to -nmax, the level with no partner). */
static float fit_scale_sym(const float *x, int n, int nmax)
{
    float max = signed_absmax(x, n);
    if (max == 0.0f)
        return 0.0f;
    float best_scale = -max / nmax, best_score = -1.0f;
    for (int step = -9; step <= 9; step++) {
        float iscale = -(nmax + 0.1f * step) / max;
        float sxl = 0.0f, sl2 = 0.0f;
        for (int j = 0; j < n; j++) {
            int l = clamp_int(nearest_int(iscale * x[j]), -nmax, nmax - 1);
            sxl += x[j] * l;
            sl2 += (float)(l * l);
        }
        /* The squared error is sum(x^2) - sxl^2 / sl2 at the best scale. */
        if (sl2 > 0.0f && sxl * sxl / sl2 > best_score) {
            best_score = sxl * sxl / sl2;
            best_scale = sxl / sl2;
        }
    }
    return best_scale;
}

/* Fits x ~ scale * be_iq4nl_values[L]; the sign of the scale is searched too
 * because the levels are not symmetric. */
static float fit_scale_iq4(const float *x, int n)
{
    float max = signed_absmax(x, n);
    if (max == 0.0f)
        return 0.0f;
    float best_scale = max / be_iq4nl_values[0], best_score = -1.0f;
    for (int side = 0; side < 2; side++) {
        for (int step = 0; step <= 20; step++) {
            float top = side == 0 ? -127.0f + step : 113.0f - step;
            float iscale = top / max;
            float sxv = 0.0f, sv2 = 0.0f;
            for (int j = 0; j < n; j++) {
                int v = be_iq4nl_values[iq4_best_index(iscale * x[j])];
                sxv += x[j] * v;
                sv2 += (float)(v * v);
            }
            if (sv2 > 0.0f && sxv * sxv / sv2 > best_score) {
                best_score = sxv * sxv / sv2;
                best_scale = sxv / sv2;
            }
        }
    }
    return best_scale;
}

/* Rounds d to f16, one step away from zero when the rounding made it smaller
 * than needed (|max / d| > qlim would clip the largest scale), and never to 0
 * for a non-zero d. Small scales land on f16 subnormals, where a step is a
 * large fraction of d, so this matters for rows of small values. */
static be_f16_t f16_scale_covering(float d, float max, float qlim)
{
    be_f16_t h = be_f32_to_f16(d);
    if ((h & 0x7fff) == 0 || fabsf(max / f16_get(h)) > qlim)
        h++; /* sign-magnitude: the next larger magnitude, same sign */
    return h;
}

/* Quantizes per-sub-block scales s[0..n) into signed integers in [qmin, qmax]
 * with one shared step d (the sign trick: the scale of largest magnitude maps
 * to qmin); the integers are computed from d as stored (f16). Returns d. */
static float quant_scales_signed(const float *s, int n, int qmin, int qmax, int *q,
                                 be_f16_t *d_out)
{
    float max = signed_absmax(s, n);
    if (max == 0.0f) {
        for (int j = 0; j < n; j++)
            q[j] = 0;
        *d_out = be_f32_to_f16(0.0f);
        return 0.0f;
    }
    *d_out = f16_scale_covering(max / qmin, max, (float)-qmin);
    float d = f16_get(*d_out);
    for (int j = 0; j < n; j++)
        q[j] = clamp_int(nearest_int(s[j] / d), qmin, qmax);
    return d;
}

/* Quantizes non-negative values v[0..n) to integers in [0, qmax] with one
 * shared step d = max/qmax (as stored, f16). Returns d. */
static float quant_scales_unsigned(const float *v, int n, int qmax, int *q,
                                   be_f16_t *d_out)
{
    float max = 0.0f;
    for (int j = 0; j < n; j++)
        max = fmaxf(max, v[j]);
    if (max == 0.0f) {
        for (int j = 0; j < n; j++)
            q[j] = 0;
        *d_out = be_f32_to_f16(0.0f);
        return 0.0f;
    }
    *d_out = f16_scale_covering(max / qmax, max, (float)qmax);
    float d = f16_get(*d_out);
    for (int j = 0; j < n; j++)
        q[j] = clamp_int(nearest_int(v[j] / d), 0, qmax);
    return d;
}

/* Packs 256 2-bit values the Q2_K/Q3_K way (see dequant_q2_k). */
static void pack_2bit(const int *l, uint8_t *qs)
{
    for (int half = 0; half < 2; half++)
        for (int j = 0; j < 32; j++) {
            const int *p = l + 128 * half + j;
            qs[32 * half + j] =
                (uint8_t)((p[0] & 3) | ((p[32] & 3) << 2) | ((p[64] & 3) << 4) | ((p[96] & 3) << 6));
        }
}

/* ---- quantization: K-quants and IQ4 (moed's own, no importance matrix) ---- */

static void quant_q2_k(const float *x, struct block_q2_K *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float sc[16], mn[16];
        int qsc[16], qmn[16], l[QK_K];
        for (int s = 0; s < 16; s++)
            fit_scale_offset(x + 16 * s, 16, 3, &sc[s], &mn[s]);
        float d = quant_scales_unsigned(sc, 16, 15, qsc, &b[i].d);
        float dmin = quant_scales_unsigned(mn, 16, 15, qmn, &b[i].dmin);
        for (int s = 0; s < 16; s++) {
            b[i].scales[s] = (uint8_t)(qsc[s] | (qmn[s] << 4));
            float ds = d * qsc[s], ms = dmin * qmn[s];
            for (int j = 16 * s; j < 16 * s + 16; j++)
                l[j] = ds > 0.0f ? clamp_int(nearest_int((x[j] + ms) / ds), 0, 3) : 0;
        }
        pack_2bit(l, b[i].qs);
    }
}

static void quant_q3_k(const float *x, struct block_q3_K *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float sc[16];
        int qsc[16], l[QK_K];
        for (int s = 0; s < 16; s++)
            sc[s] = fit_scale_sym(x + 16 * s, 16, 4);
        float d = quant_scales_signed(sc, 16, -32, 31, qsc, &b[i].d);
        q3k_scale_put(b[i].scales, qsc);
        memset(b[i].hmask, 0, sizeof b[i].hmask);
        for (int j = 0; j < QK_K; j++) {
            float ds = d * qsc[j / 16];
            int v = ds != 0.0f ? clamp_int(nearest_int(x[j] / ds), -4, 3) : 0;
            /* Stored as v + 4: the low 2 bits in qs, the third bit in hmask. */
            if (v + 4 > 3)
                b[i].hmask[j % 32] |= (uint8_t)(1u << (j / 32));
            l[j] = (v + 4) & 3;
        }
        pack_2bit(l, b[i].qs);
    }
}

/* Shared by Q4_K (nmax 15) and Q5_K (nmax 31): 8 sub-blocks of 32 with a
 * 6-bit scale and a 6-bit min each; fills levels l[256]. */
static void quant_k4_common(const float *x, int nmax, be_f16_t *d_out, be_f16_t *dmin_out,
                            uint8_t *scales, int *l)
{
    float sc[8], mn[8];
    int qsc[8], qmn[8];
    for (int s = 0; s < 8; s++)
        fit_scale_offset(x + 32 * s, 32, nmax, &sc[s], &mn[s]);
    float d = quant_scales_unsigned(sc, 8, 63, qsc, d_out);
    float dmin = quant_scales_unsigned(mn, 8, 63, qmn, dmin_out);
    k4_scale_min_put(scales, qsc, qmn);
    for (int s = 0; s < 8; s++) {
        float ds = d * qsc[s], ms = dmin * qmn[s];
        for (int j = 32 * s; j < 32 * s + 32; j++)
            l[j] = ds > 0.0f ? clamp_int(nearest_int((x[j] + ms) / ds), 0, nmax) : 0;
    }
}

static void quant_q4_k(const float *x, struct block_q4_K *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        int l[QK_K];
        quant_k4_common(x, 15, &b[i].d, &b[i].dmin, b[i].scales, l);
        for (int p = 0; p < 4; p++)
            for (int j = 0; j < 32; j++)
                b[i].qs[32 * p + j] = (uint8_t)(l[64 * p + j] | (l[64 * p + 32 + j] << 4));
    }
}

static void quant_q5_k(const float *x, struct block_q5_K *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        int l[QK_K];
        quant_k4_common(x, 31, &b[i].d, &b[i].dmin, b[i].scales, l);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int p = 0; p < 4; p++)
            for (int j = 0; j < 32; j++) {
                int lo = l[64 * p + j], hi = l[64 * p + 32 + j];
                b[i].qs[32 * p + j] = (uint8_t)((lo & 0x0f) | ((hi & 0x0f) << 4));
            }
        for (int j = 0; j < QK_K; j++)
            b[i].qh[j % 32] |= (uint8_t)(((l[j] >> 4) & 1) << (j / 32));
    }
}

static void quant_q6_k(const float *x, struct block_q6_K *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float sc[16];
        int qsc[16];
        for (int s = 0; s < 16; s++)
            sc[s] = fit_scale_sym(x + 16 * s, 16, 32);
        float d = quant_scales_signed(sc, 16, -128, 127, qsc, &b[i].d);
        for (int s = 0; s < 16; s++)
            b[i].scales[s] = (int8_t)qsc[s];
        memset(b[i].ql, 0, sizeof b[i].ql);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int e = 0; e < QK_K; e++) {
            float ds = d * qsc[e / 16];
            int v = ds != 0.0f ? clamp_int(nearest_int(x[e] / ds), -32, 31) : 0;
            int u = v + 32; /* stored 6-bit value, see dequant_q6_k */
            int h = e / 128, k = (e % 128) / 32, j = e % 32;
            b[i].ql[64 * h + j + 32 * (k & 1)] |= (uint8_t)((u & 0x0f) << (k < 2 ? 0 : 4));
            b[i].qh[32 * h + j] |= (uint8_t)((u >> 4) << (2 * k));
        }
    }
}

/* Levels of one 32-value IQ4 sub-block with step ds; index 8 (level 1, the
 * one nearest zero) when ds is 0, where any level dequantizes to 0. */
static void iq4_levels(const float *x, float ds, uint8_t *qs)
{
    for (int j = 0; j < 16; j++) {
        int lo = ds != 0.0f ? iq4_best_index(x[j] / ds) : 8;
        int hi = ds != 0.0f ? iq4_best_index(x[j + 16] / ds) : 8;
        qs[j] = (uint8_t)(lo | (hi << 4));
    }
}

static void quant_iq4_nl(const float *x, struct block_iq4_nl *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += 32) {
        b[i].d = be_f32_to_f16(fit_scale_iq4(x, 32));
        iq4_levels(x, f16_get(b[i].d), b[i].qs);
    }
}

static void quant_iq4_xs(const float *x, struct block_iq4_xs *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float sc[8];
        int qsc[8];
        for (int s = 0; s < 8; s++)
            sc[s] = fit_scale_iq4(x + 32 * s, 32);
        float d = quant_scales_signed(sc, 8, -32, 31, qsc, &b[i].d);
        b[i].scales_h = 0;
        memset(b[i].scales_l, 0, sizeof b[i].scales_l);
        for (int s = 0; s < 8; s++) {
            int v = qsc[s] + 32;
            b[i].scales_l[s / 2] |= (uint8_t)((v & 0x0f) << (4 * (s % 2)));
            b[i].scales_h |= (uint16_t)((v >> 4) << (2 * s));
            iq4_levels(x + 32 * s, d * qsc[s], b[i].qs + 16 * s);
        }
    }
}

bool be_type_can_quant(enum be_type t)
{
    switch (t) {
    case BE_TYPE_F32: case BE_TYPE_F16: case BE_TYPE_BF16:
    case BE_TYPE_Q4_0: case BE_TYPE_Q4_1: case BE_TYPE_Q5_0: case BE_TYPE_Q5_1:
    case BE_TYPE_Q8_0: case BE_TYPE_Q8_1:
    case BE_TYPE_Q2_K: case BE_TYPE_Q3_K: case BE_TYPE_Q4_K: case BE_TYPE_Q5_K:
    case BE_TYPE_Q6_K: case BE_TYPE_Q8_K:
    case BE_TYPE_IQ4_NL: case BE_TYPE_IQ4_XS:
        return true;
    default:
        return false;
    }
}

size_t be_quant_row(enum be_type t, const float *src, void *dst, int64_t n)
{
    const struct be_type_info *ti = be_type_info(t);
    ASSERT(ti != NULL && be_type_can_quant(t) && n % ti->blck == 0);
    int64_t nb = n / ti->blck;
    switch (t) {
    case BE_TYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case BE_TYPE_F16: {
        be_f16_t *h = dst;
        for (int64_t i = 0; i < n; i++)
            h[i] = be_f32_to_f16(src[i]);
        break;
    }
    case BE_TYPE_BF16: {
        be_bf16_t *h = dst;
        for (int64_t i = 0; i < n; i++)
            h[i] = be_f32_to_bf16(src[i]);
        break;
    }
    case BE_TYPE_Q4_0: quant_q4_0(src, dst, nb); break;
    case BE_TYPE_Q4_1: quant_q4_1(src, dst, nb); break;
    case BE_TYPE_Q5_0: quant_q5_0(src, dst, nb); break;
    case BE_TYPE_Q5_1: quant_q5_1(src, dst, nb); break;
    case BE_TYPE_Q8_0: quant_q8_0(src, dst, nb); break;
    case BE_TYPE_Q8_1: quant_q8_1(src, dst, nb); break;
    case BE_TYPE_Q2_K: quant_q2_k(src, dst, nb); break;
    case BE_TYPE_Q3_K: quant_q3_k(src, dst, nb); break;
    case BE_TYPE_Q4_K: quant_q4_k(src, dst, nb); break;
    case BE_TYPE_Q5_K: quant_q5_k(src, dst, nb); break;
    case BE_TYPE_Q6_K: quant_q6_k(src, dst, nb); break;
    case BE_TYPE_Q8_K: quant_q8_k(src, dst, nb); break;
    case BE_TYPE_IQ4_NL: quant_iq4_nl(src, dst, nb); break;
    case BE_TYPE_IQ4_XS: quant_iq4_xs(src, dst, nb); break;
    default:
        ASSERT(!"be_quant_row: type cannot be quantized");
    }
    return be_row_size(t, n);
}

/* ---- reference dot products ----
 *
 * Each returns the sum over blocks of (integer sum inside the block) times the
 * block scales, accumulated in double. The weight is x, the activation y. */

/* Hot in tests only: the 32-value blocks against Q8_0 / Q8_1. */
static float vec_dot_q4_0_q8_0(int64_t nb, const struct block_q4_0 *x, const struct block_q8_0 *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += ((x[i].qs[j] & 0x0f) - 8) * y[i].qs[j];
            sumi += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        }
        sum += (float)sumi * f16_get(x[i].d) * f16_get(y[i].d);
    }
    return (float)sum;
}

/* With a min m: sum((d q + m) * dy qy) = d dy sum(q qy) + m * (dy sum(qy)),
 * and the last factor is the activation's stored s. */
static float vec_dot_q4_1_q8_1(int64_t nb, const struct block_q4_1 *x, const struct block_q8_1 *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += (x[i].qs[j] & 0x0f) * y[i].qs[j];
            sumi += (x[i].qs[j] >> 4) * y[i].qs[j + 16];
        }
        sum += (float)sumi * f16_get(x[i].d) * f16_get(y[i].d) +
               f16_get(x[i].m) * f16_get(y[i].s);
    }
    return (float)sum;
}

static float vec_dot_q5_0_q8_0(int64_t nb, const struct block_q5_0 *x, const struct block_q8_0 *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (x[i].qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
            int hi = (x[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            sumi += (lo - 16) * y[i].qs[j] + (hi - 16) * y[i].qs[j + 16];
        }
        sum += (float)sumi * f16_get(x[i].d) * f16_get(y[i].d);
    }
    return (float)sum;
}

static float vec_dot_q5_1_q8_1(int64_t nb, const struct block_q5_1 *x, const struct block_q8_1 *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (x[i].qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
            int hi = (x[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            sumi += lo * y[i].qs[j] + hi * y[i].qs[j + 16];
        }
        sum += (float)sumi * f16_get(x[i].d) * f16_get(y[i].d) +
               f16_get(x[i].m) * f16_get(y[i].s);
    }
    return (float)sum;
}

static float vec_dot_q8_0_q8_0(int64_t nb, const struct block_q8_0 *x, const struct block_q8_0 *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++)
            sumi += x[i].qs[j] * y[i].qs[j];
        sum += (float)sumi * f16_get(x[i].d) * f16_get(y[i].d);
    }
    return (float)sum;
}

/* Q8_1 is an activation type; its own dot is the plain one (s unused). */
static float vec_dot_q8_1_q8_1(int64_t nb, const struct block_q8_1 *x, const struct block_q8_1 *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++)
            sumi += x[i].qs[j] * y[i].qs[j];
        sum += (float)sumi * f16_get(x[i].d) * f16_get(y[i].d);
    }
    return (float)sum;
}

static float vec_dot_iq4_nl_q8_0(int64_t nb, const struct block_iq4_nl *x, const struct block_q8_0 *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += be_iq4nl_values[x[i].qs[j] & 0x0f] * y[i].qs[j];
            sumi += be_iq4nl_values[x[i].qs[j] >> 4] * y[i].qs[j + 16];
        }
        sum += (float)sumi * f16_get(x[i].d) * f16_get(y[i].d);
    }
    return (float)sum;
}

/* Q2_K: value = d*sc*q - dmin*m per 16-value sub-block. The min term uses the
 * activation's bsums: sum(m * dy * qy) = dy * m * bsums[s]. */
static float vec_dot_q2_k_q8_k(int64_t nb, const struct block_q2_K *x, const struct block_q8_K *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0, sumi_min = 0;
        for (int s = 0; s < 16; s++) {
            int sc = x[i].scales[s] & 0x0f, m = x[i].scales[s] >> 4;
            int acc = 0;
            for (int e = 16 * s; e < 16 * s + 16; e++) {
                int half = e / 128, k = (e % 128) / 32, l = e % 32;
                acc += ((x[i].qs[32 * half + l] >> (2 * k)) & 3) * y[i].qs[e];
            }
            sumi += sc * acc;
            sumi_min += m * y[i].bsums[s];
        }
        sum += y[i].d * f16_get(x[i].d) * (float)sumi -
               y[i].d * f16_get(x[i].dmin) * (float)sumi_min;
    }
    return (float)sum;
}

static float vec_dot_q3_k_q8_k(int64_t nb, const struct block_q3_K *x, const struct block_q8_K *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int s = 0; s < 16; s++) {
            int acc = 0;
            for (int e = 16 * s; e < 16 * s + 16; e++) {
                int half = e / 128, k = (e % 128) / 32, l = e % 32;
                int q = (x[i].qs[32 * half + l] >> (2 * k)) & 3;
                if (!(x[i].hmask[l] & (1u << (e / 32))))
                    q -= 4;
                acc += q * y[i].qs[e];
            }
            sumi += q3k_scale_get(x[i].scales, s) * acc;
        }
        sum += y[i].d * f16_get(x[i].d) * (float)sumi;
    }
    return (float)sum;
}

/* Q4_K/Q5_K: the min of sub-block s (32 values) meets bsums[2s] + bsums[2s+1]. */
static float vec_dot_q4_k_q8_k(int64_t nb, const struct block_q4_K *x, const struct block_q8_K *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0, sumi_min = 0;
        for (int s = 0; s < 8; s++) {
            int sc, m, acc = 0;
            k4_scale_min_get(x[i].scales, s, &sc, &m);
            const uint8_t *q = x[i].qs + 32 * (s / 2);
            int shift = 4 * (s % 2);
            for (int l = 0; l < 32; l++)
                acc += ((q[l] >> shift) & 0x0f) * y[i].qs[32 * s + l];
            sumi += sc * acc;
            sumi_min += m * (y[i].bsums[2 * s] + y[i].bsums[2 * s + 1]);
        }
        sum += y[i].d * f16_get(x[i].d) * (float)sumi -
               y[i].d * f16_get(x[i].dmin) * (float)sumi_min;
    }
    return (float)sum;
}

static float vec_dot_q5_k_q8_k(int64_t nb, const struct block_q5_K *x, const struct block_q8_K *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0, sumi_min = 0;
        for (int s = 0; s < 8; s++) {
            int sc, m, acc = 0;
            k4_scale_min_get(x[i].scales, s, &sc, &m);
            const uint8_t *q = x[i].qs + 32 * (s / 2);
            int shift = 4 * (s % 2);
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> shift) & 0x0f) | (((x[i].qh[l] >> s) & 1) << 4);
                acc += v * y[i].qs[32 * s + l];
            }
            sumi += sc * acc;
            sumi_min += m * (y[i].bsums[2 * s] + y[i].bsums[2 * s + 1]);
        }
        sum += y[i].d * f16_get(x[i].d) * (float)sumi -
               y[i].d * f16_get(x[i].dmin) * (float)sumi_min;
    }
    return (float)sum;
}

static float vec_dot_q6_k_q8_k(int64_t nb, const struct block_q6_K *x, const struct block_q8_K *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int s = 0; s < 16; s++) {
            int acc = 0;
            for (int e = 16 * s; e < 16 * s + 16; e++) {
                int h = e / 128, k = (e % 128) / 32, l = e % 32;
                uint8_t lo_byte = x[i].ql[64 * h + l + 32 * (k & 1)];
                int lo = k < 2 ? lo_byte & 0x0f : lo_byte >> 4;
                int hi = (x[i].qh[32 * h + l] >> (2 * k)) & 3;
                acc += ((lo | (hi << 4)) - 32) * y[i].qs[e];
            }
            sumi += x[i].scales[s] * acc;
        }
        sum += y[i].d * f16_get(x[i].d) * (float)sumi;
    }
    return (float)sum;
}

static float vec_dot_q8_k_q8_k(int64_t nb, const struct block_q8_K *x, const struct block_q8_K *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < QK_K; j++)
            sumi += x[i].qs[j] * y[i].qs[j];
        sum += x[i].d * y[i].d * (float)sumi;
    }
    return (float)sum;
}

static float vec_dot_iq4_xs_q8_k(int64_t nb, const struct block_iq4_xs *x, const struct block_q8_K *y)
{
    double sum = 0.0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t *q = x[i].qs + 16 * ib;
            const int8_t *q8 = y[i].qs + 32 * ib;
            int acc = 0;
            for (int j = 0; j < 16; j++) {
                acc += be_iq4nl_values[q[j] & 0x0f] * q8[j];
                acc += be_iq4nl_values[q[j] >> 4] * q8[j + 16];
            }
            sumi += iq4xs_scale_get(&x[i], ib) * acc;
        }
        sum += y[i].d * f16_get(x[i].d) * (float)sumi;
    }
    return (float)sum;
}

float be_vec_dot_ref(enum be_type t, int64_t n, const void *x, const void *y)
{
    const struct be_type_info *ti = be_type_info(t);
    ASSERT(ti != NULL && n % ti->blck == 0);
    int64_t nb = n / ti->blck;
    double sum = 0.0;
    switch (t) {
    case BE_TYPE_F32: {
        const float *a = x, *b = y;
        for (int64_t i = 0; i < n; i++)
            sum += (double)a[i] * b[i];
        return (float)sum;
    }
    case BE_TYPE_F16: {
        const be_f16_t *a = x, *b = y;
        for (int64_t i = 0; i < n; i++)
            sum += (double)be_f16_to_f32(a[i]) * be_f16_to_f32(b[i]);
        return (float)sum;
    }
    case BE_TYPE_BF16: {
        const be_bf16_t *a = x, *b = y;
        for (int64_t i = 0; i < n; i++)
            sum += (double)be_bf16_to_f32(a[i]) * be_bf16_to_f32(b[i]);
        return (float)sum;
    }
    case BE_TYPE_Q4_0: return vec_dot_q4_0_q8_0(nb, x, y);
    case BE_TYPE_Q4_1: return vec_dot_q4_1_q8_1(nb, x, y);
    case BE_TYPE_Q5_0: return vec_dot_q5_0_q8_0(nb, x, y);
    case BE_TYPE_Q5_1: return vec_dot_q5_1_q8_1(nb, x, y);
    case BE_TYPE_Q8_0: return vec_dot_q8_0_q8_0(nb, x, y);
    case BE_TYPE_Q8_1: return vec_dot_q8_1_q8_1(nb, x, y);
    case BE_TYPE_Q2_K: return vec_dot_q2_k_q8_k(nb, x, y);
    case BE_TYPE_Q3_K: return vec_dot_q3_k_q8_k(nb, x, y);
    case BE_TYPE_Q4_K: return vec_dot_q4_k_q8_k(nb, x, y);
    case BE_TYPE_Q5_K: return vec_dot_q5_k_q8_k(nb, x, y);
    case BE_TYPE_Q6_K: return vec_dot_q6_k_q8_k(nb, x, y);
    case BE_TYPE_Q8_K: return vec_dot_q8_k_q8_k(nb, x, y);
    case BE_TYPE_IQ4_NL: return vec_dot_iq4_nl_q8_0(nb, x, y);
    case BE_TYPE_IQ4_XS: return vec_dot_iq4_xs_q8_k(nb, x, y);
    default:
        ASSERT(!"be_vec_dot_ref: unknown type");
        return 0.0f;
    }
}
