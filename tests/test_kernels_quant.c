/* SPDX-License-Identifier: MIT */
/*
 * test_kernels_quant.c - the type table, the f16/bf16 conversions and the
 * plain CPU conversions of kernels/cpu/quant.c.
 *
 * The block formats are checked against a second, independent statement of
 * GGUF's layouts written here in the most literal way: every field is read by
 * byte offset and bit position (lit_value()), never through the structs or the
 * library's helpers. Quantizers are checked by round trips with per-type error
 * bounds and, for the activation types, against llama.cpp's formulas on known
 * inputs. be_vec_dot_ref() is checked against the double-precision dot of the
 * dequantized rows. Negative controls show the checks can fail.
 */
#include "tests/testutil.h"

#include "kernels/quant.h"

#include <string.h>

/* ---- literal statement of the formats ---- */

/* The spec's 16 IQ4 levels, written out again. */
static const int k_iq4_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

/* count bits of p, starting at bit first_bit of byte `byte` (LSB first, and
 * running on into the following bytes), assembled one bit at a time. */
static unsigned lit_bits(const uint8_t *p, int byte, int first_bit, int count)
{
    unsigned v = 0;
    for (int k = 0; k < count; k++) {
        int bit = first_bit + k;
        v |= (unsigned)((p[byte + bit / 8] >> (bit % 8)) & 1) << k;
    }
    return v;
}

/* IEEE half from its two little-endian bytes, by the textbook formula. */
static double lit_f16(const uint8_t *p, int off)
{
    unsigned h = p[off] | (unsigned)p[off + 1] << 8;
    int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
    double v;
    if (exp == 0)
        v = ldexp(man, -24);
    else if (exp == 31)
        v = man ? NAN : INFINITY;
    else
        v = ldexp(1024 + man, exp - 25);
    return sign ? -v : v;
}

static double lit_f32(const uint8_t *p, int off)
{
    float f;
    memcpy(&f, p + off, 4);
    return f;
}

static int lit_i8(const uint8_t *p, int off)
{
    return (int8_t)p[off];
}

/* Value e of the block at p, and in *mag the sum of the magnitudes of its
 * terms (the scale of its float rounding error). */
static double lit_value(enum be_type t, const uint8_t *p, int e, double *mag)
{
    double d, m, v;
    int q, sc, mn, s, k, ib;
    *mag = 0;
    switch (t) {
    case BE_TYPE_F32:
        v = lit_f32(p, 0);
        *mag = fabs(v);
        return v;
    case BE_TYPE_F16:
        v = lit_f16(p, 0);
        *mag = fabs(v);
        return v;
    case BE_TYPE_BF16: {
        uint32_t u = (uint32_t)lit_bits(p, 0, 0, 16) << 16;
        float f;
        memcpy(&f, &u, 4);
        *mag = fabs(f);
        return f;
    }
    case BE_TYPE_Q4_0: /* d f16 @0, 16 bytes of nibbles @2 (value e<16 low nibble of byte e) */
        d = lit_f16(p, 0);
        q = (int)lit_bits(p, 2 + e % 16, 4 * (e / 16), 4) - 8;
        *mag = fabs(d * q);
        return d * q;
    case BE_TYPE_Q4_1: /* d @0, m @2, nibbles @4; value = d q + m */
        d = lit_f16(p, 0);
        m = lit_f16(p, 2);
        q = (int)lit_bits(p, 4 + e % 16, 4 * (e / 16), 4);
        *mag = fabs(d * q) + fabs(m);
        return d * q + m;
    case BE_TYPE_Q5_0: /* d @0, 32 high bits @2 (bit e), nibbles @6 */
        d = lit_f16(p, 0);
        q = (int)(lit_bits(p, 6 + e % 16, 4 * (e / 16), 4) | lit_bits(p, 2, e, 1) << 4) - 16;
        *mag = fabs(d * q);
        return d * q;
    case BE_TYPE_Q5_1: /* d @0, m @2, high bits @4, nibbles @8 */
        d = lit_f16(p, 0);
        m = lit_f16(p, 2);
        q = (int)(lit_bits(p, 8 + e % 16, 4 * (e / 16), 4) | lit_bits(p, 4, e, 1) << 4);
        *mag = fabs(d * q) + fabs(m);
        return d * q + m;
    case BE_TYPE_Q8_0: /* d @0, int8 @2 */
        d = lit_f16(p, 0);
        *mag = fabs(d * lit_i8(p, 2 + e));
        return d * lit_i8(p, 2 + e);
    case BE_TYPE_Q8_1: /* d @0, s @2, int8 @4 */
        d = lit_f16(p, 0);
        *mag = fabs(d * lit_i8(p, 4 + e));
        return d * lit_i8(p, 4 + e);
    case BE_TYPE_Q2_K:
        /* scales @0 (16 bytes: scale low nibble, min high nibble, per 16
         * values), qs @16 (value e: byte 32*(e/128) + e%32, bits 2*((e%128)/32)),
         * d @80, dmin @82. */
        d = lit_f16(p, 80);
        m = lit_f16(p, 82);
        sc = (int)lit_bits(p, e / 16, 0, 4);
        mn = (int)lit_bits(p, e / 16, 4, 4);
        q = (int)lit_bits(p, 16 + 32 * (e / 128) + e % 32, 2 * ((e % 128) / 32), 2);
        *mag = fabs(d * sc * q) + fabs(m * mn);
        return d * sc * q - m * mn;
    case BE_TYPE_Q3_K:
        /* hmask @0 (value e: byte e%32, bit e/32; 0 means -4), qs @32 as
         * Q2_K, scales @96 (6 bits, -32: low 4 bits in the low nibble of byte
         * s for s<8, high nibble of byte s-8 otherwise; high 2 bits in byte
         * 8 + s%4 at bit 2*(s/4)), d @108. */
        d = lit_f16(p, 108);
        s = e / 16;
        sc = (int)((s < 8 ? lit_bits(p, 96 + s, 0, 4) : lit_bits(p, 96 + s - 8, 4, 4)) |
                   lit_bits(p, 96 + 8 + s % 4, 2 * (s / 4), 2) << 4) - 32;
        q = (int)lit_bits(p, 32 + 32 * (e / 128) + e % 32, 2 * ((e % 128) / 32), 2);
        q += 4 * (int)lit_bits(p, e % 32, e / 32, 1) - 4;
        *mag = fabs(d * sc * q);
        return d * sc * q;
    case BE_TYPE_Q4_K:
    case BE_TYPE_Q5_K:
        /* d @0, dmin @2, scales @4 (12 bytes, see below), Q5_K: qh @16 (value
         * e: byte e%32, bit e/32), qs @16 (Q4_K) / @48 (Q5_K): value e in
         * byte 32*(e/64) + e%32, low nibble when (e/32) is even. */
        d = lit_f16(p, 0);
        m = lit_f16(p, 2);
        s = e / 32;
        if (s < 4) { /* 6 low bits of bytes s and s+4 */
            sc = (int)lit_bits(p, 4 + s, 0, 6);
            mn = (int)lit_bits(p, 4 + s + 4, 0, 6);
        } else { /* low 4 from byte s+4's nibbles, high 2 from bits 6-7 of s-4 and s */
            sc = (int)(lit_bits(p, 4 + s + 4, 0, 4) | lit_bits(p, 4 + s - 4, 6, 2) << 4);
            mn = (int)(lit_bits(p, 4 + s + 4, 4, 4) | lit_bits(p, 4 + s, 6, 2) << 4);
        }
        if (t == BE_TYPE_Q4_K) {
            q = (int)lit_bits(p, 16 + 32 * (e / 64) + e % 32, 4 * (s % 2), 4);
        } else {
            q = (int)(lit_bits(p, 48 + 32 * (e / 64) + e % 32, 4 * (s % 2), 4) |
                      lit_bits(p, 16 + e % 32, e / 32, 1) << 4);
        }
        *mag = fabs(d * sc * q) + fabs(m * mn);
        return d * sc * q - m * mn;
    case BE_TYPE_Q6_K:
        /* ql @0, qh @128, scales @192 (int8 per 16 values), d @208. Value e =
         * 128h + 32k + l: low 4 bits in ql[64h + l + 32*(k odd)] (low nibble
         * for k < 2), high 2 bits in qh[32h + l] at bit 2k; stored +32. */
        d = lit_f16(p, 208);
        k = (e % 128) / 32;
        q = (int)(lit_bits(p, 64 * (e / 128) + e % 32 + 32 * (k % 2), 4 * (k / 2), 4) |
                  lit_bits(p, 128 + 32 * (e / 128) + e % 32, 2 * k, 2) << 4) - 32;
        sc = lit_i8(p, 192 + e / 16);
        *mag = fabs(d * sc * q);
        return d * sc * q;
    case BE_TYPE_Q8_K: /* d f32 @0, int8 @4, bsums @260 */
        d = lit_f32(p, 0);
        *mag = fabs(d * lit_i8(p, 4 + e));
        return d * lit_i8(p, 4 + e);
    case BE_TYPE_IQ4_NL: /* d @0, nibbles @2 as Q4_0, indexing the levels */
        d = lit_f16(p, 0);
        v = d * k_iq4_levels[lit_bits(p, 2 + e % 16, 4 * (e / 16), 4)];
        *mag = fabs(v);
        return v;
    case BE_TYPE_IQ4_XS:
        /* d @0, scales_h @2 (u16, bits 2ib..2ib+1), scales_l @4 (nibble ib%2
         * of byte ib/2), qs @8: sub-block ib of 32 laid out as IQ4_NL. */
        d = lit_f16(p, 0);
        ib = e / 32;
        sc = (int)(lit_bits(p, 4 + ib / 2, 4 * (ib % 2), 4) | lit_bits(p, 2, 2 * ib, 2) << 4) - 32;
        q = k_iq4_levels[lit_bits(p, 8 + 16 * ib + (e % 32) % 16, 4 * ((e % 32) / 16), 4)];
        *mag = fabs(d * sc * q);
        return d * sc * q;
    default:
        fail_msg("no literal definition for type %d", t);
        return 0;
    }
}

/* ---- the types and their test facts ---- */

struct tt {
    enum be_type t;
    int blck;
    size_t bytes;      /* expected block size, from the format */
    int f16_off[2];    /* f16 fields to keep finite in random blocks (-1: none) */
    int scale_byte;    /* a byte of a scale, corrupted by the negative control */
    double rt_bound;   /* round trip: max RMS(err)/RMS(x); 0 when not quantizable */
};

/* Round-trip bounds on RMS(dequant(quant(x)) - x) / RMS(x), over the rows of
 * test_round_trip (uniform, heavy-tailed with 4x outliers, and all-positive;
 * magnitudes 1e-3, 1 and 100). Measured worst cases (uniform / heavy-tailed /
 * positive) are in the comments; each bound is that worst case times ~1.3.
 * A real bug (a wrong shift, nibble, sign or scale bit) puts the error near
 * or above 100%, far over any bound. For uniform rows an ideal b-bit uniform
 * quantizer of a 2A-wide range gives RMS err/RMS x = 2^-b * 2 / sqrt(12) /
 * (1/sqrt(3)) = 2^-b, e.g. 0.0625 at 4 bits, which the measured values track.
 * The float types are bounded by their rounding: f16 keeps every value within
 * 2^-11 relative, bf16 within 2^-8; f32 is exact. */
static const struct tt k_types[] = {
    {BE_TYPE_F32, 1, 4, {-1, -1}, 3, 1e-12},
    {BE_TYPE_F16, 1, 2, {-1, -1}, 1, 0x1p-11},       /* 0.00022 */
    {BE_TYPE_BF16, 1, 2, {-1, -1}, 1, 0x1p-8},       /* 0.00175 */
    {BE_TYPE_Q4_0, 32, 18, {0, -1}, 1, 0.155},       /* 0.067 / 0.119 / 0.053 */
    {BE_TYPE_Q4_1, 32, 20, {0, 2}, 1, 0.13},         /* 0.066 / 0.101 / 0.017 */
    {BE_TYPE_Q5_0, 32, 22, {0, -1}, 1, 0.10},        /* 0.034 / 0.079 / 0.026 */
    {BE_TYPE_Q5_1, 32, 24, {0, 2}, 1, 0.057},        /* 0.033 / 0.044 / 0.0085 */
    {BE_TYPE_Q8_0, 32, 34, {0, -1}, 1, 0.013},       /* 0.0046 / 0.0100 / 0.0034 */
    {BE_TYPE_Q8_1, 32, 36, {0, 2}, 1, 0.013},        /* 0.0045 / 0.0087 / 0.0035 */
    {BE_TYPE_Q2_K, 256, 84, {80, 82}, 0, 0.39},      /* 0.229 / 0.300 / 0.112 */
    {BE_TYPE_Q3_K, 256, 110, {108, -1}, 96, 0.23},   /* 0.121 / 0.178 / 0.085 */
    {BE_TYPE_Q4_K, 256, 144, {0, 2}, 4, 0.115},      /* 0.056 / 0.088 / 0.025 */
    {BE_TYPE_Q5_K, 256, 176, {0, 2}, 4, 0.058},      /* 0.028 / 0.045 / 0.012 */
    {BE_TYPE_Q6_K, 256, 210, {208, -1}, 192, 0.031}, /* 0.013 / 0.024 / 0.011 */
    {BE_TYPE_Q8_K, 256, 292, {-1, -1}, 2, 0.021},    /* 0.0040 / 0.0158 / 0.0033 */
    {BE_TYPE_IQ4_NL, 32, 18, {0, -1}, 1, 0.12},      /* 0.064 / 0.093 / 0.058 */
    {BE_TYPE_IQ4_XS, 256, 136, {0, -1}, 4, 0.13},    /* 0.064 / 0.099 / 0.058 */
};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

/* Fills nblk blocks of type t with random bytes, then makes the scales finite
 * and moderate (random sign, magnitude in [0.25, 2)); float types get random
 * finite values. */
static void random_blocks(const struct tt *ty, uint8_t *buf, int64_t nblk, uint64_t *rng)
{
    for (size_t i = 0; i < (size_t)nblk * ty->bytes; i++)
        buf[i] = (uint8_t)test_rand_u64(rng);
    for (int64_t b = 0; b < nblk; b++) {
        uint8_t *p = buf + b * ty->bytes;
        float r = test_rand_f(rng);
        float v = (r < 0 ? -1.0f : 1.0f) * (0.25f + 1.75f * fabsf(r));
        if (ty->t == BE_TYPE_F32 || ty->t == BE_TYPE_Q8_K) {
            memcpy(p, &v, 4);
        } else if (ty->t == BE_TYPE_F16) {
            be_f16_t h = be_f32_to_f16(v);
            memcpy(p, &h, 2);
        } else if (ty->t == BE_TYPE_BF16) {
            be_bf16_t h = be_f32_to_bf16(v);
            memcpy(p, &h, 2);
        }
        for (int f = 0; f < 2; f++) {
            if (ty->f16_off[f] < 0)
                continue;
            r = test_rand_f(rng);
            be_f16_t h = be_f32_to_f16((r < 0 ? -1.0f : 1.0f) * (0.25f + 1.75f * fabsf(r)));
            memcpy(p + ty->f16_off[f], &h, 2);
        }
    }
}

/* Number of values of got[] (nblk blocks) that differ from the literal
 * definition by more than float rounding (1e-6 of the terms' magnitudes). */
static int check_blocks(const struct tt *ty, const uint8_t *blocks, int64_t nblk, const float *got,
                        bool verbose)
{
    int bad = 0;
    for (int64_t b = 0; b < nblk; b++) {
        for (int e = 0; e < ty->blck; e++) {
            double mag;
            double want = lit_value(ty->t, blocks + b * ty->bytes, e, &mag);
            double have = got[b * ty->blck + e];
            if (!(fabs(have - want) <= 1e-6 * mag + 1e-30)) {
                if (verbose && bad < 3)
                    print_message("  %s block %lld value %d: got %.9g want %.9g\n",
                                  be_type_name(ty->t), (long long)b, e, have, want);
                bad++;
            }
        }
    }
    return bad;
}

/* ---- 1. type table and half precision ---- */

static void test_type_table(void **state)
{
    static const struct {
        enum be_type t;
        size_t sz;
    } structs[] = {
        {BE_TYPE_Q4_0, sizeof(struct block_q4_0)},   {BE_TYPE_Q4_1, sizeof(struct block_q4_1)},
        {BE_TYPE_Q5_0, sizeof(struct block_q5_0)},   {BE_TYPE_Q5_1, sizeof(struct block_q5_1)},
        {BE_TYPE_Q8_0, sizeof(struct block_q8_0)},   {BE_TYPE_Q8_1, sizeof(struct block_q8_1)},
        {BE_TYPE_Q2_K, sizeof(struct block_q2_K)},   {BE_TYPE_Q3_K, sizeof(struct block_q3_K)},
        {BE_TYPE_Q4_K, sizeof(struct block_q4_K)},   {BE_TYPE_Q5_K, sizeof(struct block_q5_K)},
        {BE_TYPE_Q6_K, sizeof(struct block_q6_K)},   {BE_TYPE_Q8_K, sizeof(struct block_q8_K)},
        {BE_TYPE_IQ4_NL, sizeof(struct block_iq4_nl)}, {BE_TYPE_IQ4_XS, sizeof(struct block_iq4_xs)},
    };
    for (size_t i = 0; i < sizeof structs / sizeof structs[0]; i++) {
        const struct be_type_info *ti = be_type_info(structs[i].t);
        assert_non_null(ti);
        assert_int_equal(ti->size, structs[i].sz);
    }
    for (size_t i = 0; i < N_TYPES; i++) {
        const struct be_type_info *ti = be_type_info(k_types[i].t);
        assert_non_null(ti);
        assert_int_equal(ti->size, k_types[i].bytes);
        assert_int_equal(ti->blck, k_types[i].blck);
        assert_int_equal(be_row_size(k_types[i].t, 3 * (int64_t)ti->blck), 3 * k_types[i].bytes);
        assert_true(be_type_can_quant(k_types[i].t));
    }
    /* vec_dot partners, as llama.cpp pairs them. */
    assert_int_equal(be_type_info(BE_TYPE_Q4_0)->vec_dot_type, BE_TYPE_Q8_0);
    assert_int_equal(be_type_info(BE_TYPE_Q5_0)->vec_dot_type, BE_TYPE_Q8_0);
    assert_int_equal(be_type_info(BE_TYPE_Q8_0)->vec_dot_type, BE_TYPE_Q8_0);
    assert_int_equal(be_type_info(BE_TYPE_IQ4_NL)->vec_dot_type, BE_TYPE_Q8_0);
    assert_int_equal(be_type_info(BE_TYPE_Q4_1)->vec_dot_type, BE_TYPE_Q8_1);
    assert_int_equal(be_type_info(BE_TYPE_Q5_1)->vec_dot_type, BE_TYPE_Q8_1);
    assert_int_equal(be_type_info(BE_TYPE_Q2_K)->vec_dot_type, BE_TYPE_Q8_K);
    assert_int_equal(be_type_info(BE_TYPE_Q6_K)->vec_dot_type, BE_TYPE_Q8_K);
    assert_int_equal(be_type_info(BE_TYPE_IQ4_XS)->vec_dot_type, BE_TYPE_Q8_K);
    assert_int_equal(be_type_info(BE_TYPE_F16)->vec_dot_type, BE_TYPE_F16);
    assert_int_equal(be_type_info(BE_TYPE_BF16)->vec_dot_type, BE_TYPE_BF16);
    assert_null(be_type_info(4));
    assert_null(be_type_info(BE_TYPE_COUNT));
    assert_false(be_type_can_quant((enum be_type)17));
    assert_string_equal(be_type_name(BE_TYPE_Q4_K), "q4_K");
    assert_string_equal(be_type_name(1000), "type 1000");
    for (int i = 0; i < 16; i++)
        assert_int_equal(be_iq4nl_values[i], k_iq4_levels[i]);
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_f16(void **state)
{
    /* Exact values. */
    assert_int_equal(be_f32_to_f16(0.0f), 0x0000);
    assert_int_equal(be_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(be_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(be_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(be_f32_to_f16(0.5f), 0x3800);
    assert_int_equal(be_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(be_f32_to_f16(0.1f), 0x2e66); /* 0.0999755859375 */
    /* Round to nearest even: 1 + 2^-11 is half an ulp above 1 (even: stays),
     * 1 + 3*2^-11 is halfway between 0x3c01 and 0x3c02 (goes to even 0x3c02). */
    assert_int_equal(be_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    assert_int_equal(be_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    assert_int_equal(be_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    assert_int_equal(be_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(be_f32_to_f16(65520.0f), 0x7c00); /* tie rounds up to inf */
    /* Subnormals. */
    assert_int_equal(be_f32_to_f16(0x1p-24f), 0x0001);
    assert_int_equal(be_f32_to_f16(0x1p-25f), 0x0000);      /* tie to even 0 */
    assert_int_equal(be_f32_to_f16(1.5f * 0x1p-25f), 0x0001);
    assert_int_equal(be_f32_to_f16(3 * 0x1p-25f), 0x0002);  /* tie 1|2 -> 2 */
    assert_int_equal(be_f32_to_f16(5 * 0x1p-25f), 0x0002);  /* tie 2|3 -> 2 */
    assert_int_equal(be_f32_to_f16(1023 * 0x1p-24f), 0x03ff);
    assert_int_equal(be_f32_to_f16(1023.5f * 0x1p-24f), 0x0400); /* into normal */
    assert_int_equal(be_f32_to_f16(0x1p-14f), 0x0400);
    assert_int_equal(be_f32_to_f16(-0x1p-30f), 0x8000);
    assert_true(be_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(be_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    assert_true(be_f16_to_f32(0x8000) == 0.0f && signbit(be_f16_to_f32(0x8000)));
    /* Inf and NaN. */
    assert_int_equal(be_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(be_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(be_f32_to_f16(1e10f), 0x7c00);
    be_f16_t hn = be_f32_to_f16(NAN);
    assert_true((hn & 0x7c00) == 0x7c00 && (hn & 0x03ff) != 0);
    hn = be_f32_to_f16(bits_f32(0x7f800001)); /* NaN with only a low payload bit */
    assert_true((hn & 0x7c00) == 0x7c00 && (hn & 0x03ff) != 0);
    assert_true(isinf(be_f16_to_f32(0x7c00)) && be_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(be_f16_to_f32(0xfc00)) && be_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(be_f16_to_f32(0x7e00)));
    /* Every half: decoding matches the textbook formula, and re-encoding a
     * decoded value gives the same bits (NaN only needs to stay NaN). */
    for (unsigned h = 0; h < 65536; h++) {
        uint8_t p[2] = {(uint8_t)h, (uint8_t)(h >> 8)};
        float f = be_f16_to_f32((be_f16_t)h);
        double want = lit_f16(p, 0);
        if (isnan(want)) {
            assert_true(isnan(f));
            be_f16_t back = be_f32_to_f16(f);
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0);
            continue;
        }
        if ((double)f != want || !!signbit(f) != !!signbit(want))
            fail_msg("f16 0x%04x decodes to %g, want %g", h, f, want);
        assert_int_equal(be_f32_to_f16(f), h);
    }
}

static void test_bf16(void **state)
{
    assert_int_equal(be_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(be_f32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(be_f32_to_bf16(bits_f32(0x3f808000)), 0x3f80); /* tie, even */
    assert_int_equal(be_f32_to_bf16(bits_f32(0x3f818000)), 0x3f82); /* tie, to even */
    assert_int_equal(be_f32_to_bf16(bits_f32(0x3f808001)), 0x3f81);
    assert_int_equal(be_f32_to_bf16(bits_f32(0x3f807fff)), 0x3f80);
    assert_int_equal(be_f32_to_bf16(bits_f32(0x00008000)), 0x0000); /* subnormal tie */
    assert_int_equal(be_f32_to_bf16(bits_f32(0x00018000)), 0x0002);
    assert_int_equal(be_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(be_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(be_f32_to_bf16(bits_f32(0x7f7fffff)), 0x7f80); /* rounds to inf */
    be_bf16_t n = be_f32_to_bf16(bits_f32(0x7f800001)); /* payload would be lost */
    assert_true((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
    assert_true(isnan(be_bf16_to_f32(be_f32_to_bf16(NAN))));
    assert_true(be_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(be_bf16_to_f32(0x0001) == bits_f32(0x00010000));
}

/* ---- 2. dequantization against the literal definition ---- */

static void test_dequant_handmade(void **state)
{
    uint8_t b[292];
    float y[256];

    /* Q4_0: d = 0.5; byte 0 = 0x9f: value 0 = (15-8)*0.5, value 16 = (9-8)*0.5. */
    memset(b, 0x88, sizeof b);
    b[0] = 0x00, b[1] = 0x38, b[2] = 0x9f;
    be_dequant_row(BE_TYPE_Q4_0, b, y, 32);
    assert_true(y[0] == 3.5f && y[16] == 0.5f && y[1] == 0.0f);

    /* Q4_1: d = 2, m = -1; value 17 = high nibble of byte 1 (0xc) -> 23. */
    memset(b, 0, sizeof b);
    b[1] = 0x40, b[3] = 0xbc, b[4 + 1] = 0xc0;
    be_dequant_row(BE_TYPE_Q4_1, b, y, 32);
    assert_true(y[17] == 23.0f && y[1] == -1.0f);

    /* Q5_0: d = 1; bit 20 of qh (byte 2 bit 4) and nibble 3 -> value 20 = 3;
     * value 4 (nibble 0, no high bit) = -16; value 3 high bit (bit 3 of byte 0). */
    memset(b, 0, sizeof b);
    b[1] = 0x3c, b[2 + 2] = 0x10, b[6 + 4] = 0x30, b[2] = 0x08, b[6 + 3] = 0x05;
    be_dequant_row(BE_TYPE_Q5_0, b, y, 32);
    assert_true(y[20] == 3.0f && y[4] == -16.0f && y[3] == 5.0f);

    /* Q5_1: d = 1, m = 0.5; value 31: bit 31 (byte 3 bit 7), high nibble of
     * byte 15 = 0xf -> 31.5. */
    memset(b, 0, sizeof b);
    b[1] = 0x3c, b[3] = 0x38, b[4 + 3] = 0x80, b[8 + 15] = 0xf0;
    be_dequant_row(BE_TYPE_Q5_1, b, y, 32);
    assert_true(y[31] == 31.5f && y[15] == 0.5f);

    /* Q8_1: d = 0.25, value 5 = -128 -> -32 (s is ignored). */
    memset(b, 0, sizeof b);
    b[1] = 0x34, b[2] = 0x12, b[4 + 5] = 0x80;
    be_dequant_row(BE_TYPE_Q8_1, b, y, 32);
    assert_true(y[5] == -32.0f);

    /* Q2_K: d = 0.5, dmin = 1; scales[7] = 0x3a (scale 10, min 3); value 114
     * = 16*7 + 2 sits in qs byte 18 at bits 6-7 (= 2): 0.5*10*2 - 3 = 7. */
    memset(b, 0, sizeof b);
    b[80] = 0x00, b[81] = 0x38, b[82] = 0x00, b[83] = 0x3c;
    b[7] = 0x3a, b[16 + 18] = 0x80;
    be_dequant_row(BE_TYPE_Q2_K, b, y, 256);
    assert_true(y[114] == 7.0f && y[112] == -3.0f && y[0] == 0.0f);

    /* Q3_K: d = 2; scale 10 = -5 stored 27 = 0b011011 (low 0xb in the high
     * nibble of scales[2], high 0b01 at bits 4-5 of scales[10]); value 161
     * (half 1, k 1, l 1): qs byte 32+1 bits 2-3 = 3, hmask[1] bit 5 clear
     * -> q = -1 -> 10; with the bit set q = 3 -> -30. */
    memset(b, 0, sizeof b);
    b[108] = 0x00, b[109] = 0x40;
    b[96 + 2] = 0xb0, b[96 + 10] = 0x10, b[32 + 33] = 0x0c;
    for (int s = 0; s < 16; s++) /* every other scale: 0b100000 -> 0 */
        if (s != 10)
            b[96 + 8 + s % 4] |= (uint8_t)(2u << (2 * (s / 4)));
    be_dequant_row(BE_TYPE_Q3_K, b, y, 256);
    assert_true(y[161] == 10.0f && y[160] == 40.0f && y[0] == 0.0f);
    b[1] |= 1u << 5;
    be_dequant_row(BE_TYPE_Q3_K, b, y, 256);
    assert_true(y[161] == -30.0f);

    /* Q4_K: d = 1, dmin = 0.5; sub-block 5 scale 33 = 0b100001 (low 1 in
     * scales[9] low nibble, high 0b10 in bits 6-7 of scales[1]), min 17 =
     * 0b010001 (low 1 in scales[9] high nibble, high 0b01 in bits 6-7 of
     * scales[5]); value 160 is the high nibble of qs[64] (= 7): 33*7 - 8.5. */
    memset(b, 0, sizeof b);
    b[1] = 0x3c, b[3] = 0x38;
    b[4 + 9] = 0x11, b[4 + 1] = 0x80, b[4 + 5] = 0x40, b[16 + 64] = 0x70;
    be_dequant_row(BE_TYPE_Q4_K, b, y, 256);
    assert_true(y[160] == 222.5f && y[161] == -8.5f && y[128] == 0.0f);

    /* Q5_K: same scales; the high bit of value 160 is qh[0] bit 5 -> 33*23 - 8.5. */
    memset(b, 0, sizeof b);
    b[1] = 0x3c, b[3] = 0x38;
    b[4 + 9] = 0x11, b[4 + 1] = 0x80, b[4 + 5] = 0x40, b[48 + 64] = 0x70, b[16] = 0x20;
    be_dequant_row(BE_TYPE_Q5_K, b, y, 256);
    assert_true(y[160] == 750.5f && y[161] == -8.5f);

    /* Q6_K: d = 0.25, scales[13] = -3; value 213 (h 1, k 2, l 21): low bits =
     * high nibble of ql[85] (0xa), high bits = bits 4-5 of qh[53] (3) -> 58,
     * minus 32 = 26 -> 0.25 * -3 * 26 = -19.5. */
    memset(b, 0, sizeof b);
    b[208] = 0x00, b[209] = 0x34, b[192 + 13] = 0xfd;
    b[85] = 0xa0, b[128 + 53] = 0x30;
    be_dequant_row(BE_TYPE_Q6_K, b, y, 256);
    assert_true(y[213] == -19.5f && y[212] == 0.25f * -3 * -32);

    /* Q8_K: d = 0.5 (float), value 7 = -100. */
    memset(b, 0, sizeof b);
    float half = 0.5f;
    memcpy(b, &half, 4);
    b[4 + 7] = (uint8_t)-100;
    be_dequant_row(BE_TYPE_Q8_K, b, y, 256);
    assert_true(y[7] == -50.0f);

    /* IQ4_NL: d = 2; value 16 = level of the high nibble of byte 0 (0xf: 113). */
    memset(b, 0, sizeof b);
    b[1] = 0x40, b[2] = 0xf8;
    be_dequant_row(BE_TYPE_IQ4_NL, b, y, 32);
    assert_true(y[16] == 226.0f && y[0] == 2.0f && y[1] == -254.0f);

    /* IQ4_XS: d = 0.5; sub-block 5 scale 40-32 = 8 (low 8 in the high nibble
     * of scales_l[2], high 0b10 at bits 10-11 of scales_h); value 180 (j 20)
     * = high nibble of qs[16*5 + 4] = 0xf -> 0.5 * 8 * 113 = 452. */
    memset(b, 0, sizeof b);
    b[1] = 0x38, b[4 + 2] = 0x80, b[2 + 1] = 0x08, b[8 + 84] = 0xf0;
    be_dequant_row(BE_TYPE_IQ4_XS, b, y, 256);
    assert_true(y[180] == 452.0f && y[164] == 0.5f * 8 * -127 && y[0] == 0.5f * -32 * -127);
}

static void test_dequant_random(void **state)
{
    uint64_t rng = 0x1234abcd;
    enum { NBLK = 7 };
    static uint8_t buf[NBLK * 292];
    static float y[NBLK * 256];
    for (int rep = 0; rep < 20; rep++) {
        for (size_t i = 0; i < N_TYPES; i++) {
            const struct tt *ty = &k_types[i];
            random_blocks(ty, buf, NBLK, &rng);
            be_dequant_row(ty->t, buf, y, (int64_t)NBLK * ty->blck);
            int bad = check_blocks(ty, buf, NBLK, y, true);
            if (bad)
                fail_msg("%s: %d values differ from the format definition", be_type_name(ty->t), bad);
        }
    }
}

/* 5. Negative control: a corrupted scale byte must be detected. */
static void test_negative_control(void **state)
{
    uint64_t rng = 99;
    static uint8_t buf[292], bad_buf[292];
    static float y[256];
    for (size_t i = 0; i < N_TYPES; i++) {
        const struct tt *ty = &k_types[i];
        random_blocks(ty, buf, 1, &rng);
        be_dequant_row(ty->t, buf, y, ty->blck);
        assert_int_equal(check_blocks(ty, buf, 1, y, true), 0);
        memcpy(bad_buf, buf, ty->bytes);
        bad_buf[ty->scale_byte] ^= 0x01;
        /* The definition read from the corrupted block disagrees with the
         * dequantization of the good one. */
        if (check_blocks(ty, bad_buf, 1, y, false) == 0)
            fail_msg("%s: corrupting byte %d went unnoticed", be_type_name(ty->t), ty->scale_byte);
    }
}

/* ---- 3. round trips and the activation quantizers ---- */

/* Row of n values: kind 0 uniform in [-scale, scale), kind 1 heavy-tailed
 * (sum of uniforms, every 37th value 4x), kind 2 uniform plus an offset (all
 * positive, exercises the mins). */
static void make_row(float *x, int64_t n, int kind, float scale, uint64_t *rng)
{
    for (int64_t i = 0; i < n; i++) {
        float v = test_rand_f(rng);
        if (kind == 1)
            v = (v + test_rand_f(rng) + test_rand_f(rng)) * (i % 37 == 0 ? 4.0f : 1.0f);
        else if (kind == 2)
            v = 0.5f * v + 1.0f;
        x[i] = v * scale;
    }
}

static void test_round_trip(void **state)
{
    uint64_t rng = 7;
    static float x[768], y[768];
    static uint8_t q[768 * 4];
    static const float scales[3] = {1e-3f, 1.0f, 100.0f};
    for (size_t i = 0; i < N_TYPES; i++) {
        const struct tt *ty = &k_types[i];
        double worst = 0;
        for (int nsel = 0; nsel < 2; nsel++) {
            int64_t n = nsel == 0 ? 768 : 160;
            if (n % ty->blck)
                continue;
            for (int kind = 0; kind < 3; kind++) {
                for (int s = 0; s < 3; s++) {
                    make_row(x, n, kind, scales[s], &rng);
                    size_t w = be_quant_row(ty->t, x, q, n);
                    assert_int_equal(w, be_row_size(ty->t, n));
                    be_dequant_row(ty->t, q, y, n);
                    double se = 0, sx = 0;
                    for (int64_t j = 0; j < n; j++) {
                        se += ((double)y[j] - x[j]) * ((double)y[j] - x[j]);
                        sx += (double)x[j] * x[j];
                    }
                    double rel = sqrt(se / sx);
                    if (rel > worst)
                        worst = rel;
                    if (!(rel < ty->rt_bound))
                        fail_msg("%s n=%lld kind %d scale %g: rms error %.4g of rms > %.4g",
                                 be_type_name(ty->t), (long long)n, kind, scales[s], rel,
                                 ty->rt_bound);
                    /* The blocks are valid: the literal definition agrees. */
                    assert_int_equal(check_blocks(ty, q, n / ty->blck, y, true), 0);
                }
            }
        }
        print_message("  round trip %-7s worst rms err/rms %.5f (bound %.4g)\n",
                      be_type_name(ty->t), worst, ty->rt_bound);
    }
    /* All-zero rows give all-zero blocks that dequantize to zeros. */
    memset(x, 0, sizeof x);
    for (size_t i = 0; i < N_TYPES; i++) {
        be_quant_row(k_types[i].t, x, q, 768);
        be_dequant_row(k_types[i].t, q, y, 768);
        for (int j = 0; j < 768; j++)
            assert_true(y[j] == 0.0f);
    }
}

static void test_q8_reference_formulas(void **state)
{
    float x[256];
    struct block_q8_0 b0;
    struct block_q8_1 b1;
    /* amax 63.5 -> d = 0.5, 1/d = 2: roundf rounds halves away from zero. */
    memset(x, 0, sizeof x);
    x[0] = 63.5f, x[1] = 0.25f, x[2] = -0.25f, x[3] = 0.75f, x[4] = 1.25f, x[5] = -1.25f;
    x[6] = -63.5f, x[7] = 0.2f, x[31] = 10.0f;
    static const int want[8] = {127, 1, -1, 2, 3, -3, -127, 0};
    be_quant_row(BE_TYPE_Q8_0, x, &b0, 32);
    assert_int_equal(b0.d, 0x3800);
    for (int j = 0; j < 8; j++)
        assert_int_equal(b0.qs[j], want[j]);
    assert_int_equal(b0.qs[31], 20);
    be_quant_row(BE_TYPE_Q8_1, x, &b1, 32);
    assert_int_equal(b1.d, 0x3800);
    assert_memory_equal(b1.qs, b0.qs, 32);
    /* s = d * sum(q) = 0.5 * (127+1-1+2+3-3-127+20) = 11. */
    assert_int_equal(b1.s, be_f32_to_f16(11.0f));
    /* A d that is not representable: d = 1/127 is stored rounded, but the
     * values use the exact 1/d = 127. */
    memset(x, 0, sizeof x);
    x[0] = 1.0f, x[1] = 0.5f / 127, x[2] = 1.5f / 127;
    be_quant_row(BE_TYPE_Q8_0, x, &b0, 32);
    assert_int_equal(b0.d, be_f32_to_f16(1.0f / 127));
    assert_int_equal(b0.qs[0], 127);
    assert_int_equal(b0.qs[1], (int)roundf(0.5f / 127 * (1.0f / (1.0f / 127))));
    assert_int_equal(b0.qs[2], (int)roundf(1.5f / 127 * (1.0f / (1.0f / 127))));

    /* Q8_K: the signed absmax -63.5 gives iscale = -127/-63.5 = 2, d = 0.5,
     * and nearest_int rounds halves to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2. */
    struct block_q8_K bk;
    memset(x, 0, sizeof x);
    x[0] = -63.5f, x[1] = 0.25f, x[2] = 0.75f, x[3] = 1.25f, x[4] = -1.25f, x[5] = 63.5f;
    x[16] = 3.0f, x[17] = 1.75f;
    be_quant_row(BE_TYPE_Q8_K, x, &bk, 256);
    assert_true(bk.d == 0.5f);
    static const int wantk[6] = {-127, 0, 2, 2, -2, 127};
    for (int j = 0; j < 6; j++)
        assert_int_equal(bk.qs[j], wantk[j]);
    assert_int_equal(bk.qs[16], 6);
    assert_int_equal(bk.qs[17], 4); /* 3.5 -> 4 (even) */
    assert_int_equal(bk.bsums[0], -127 + 0 + 2 + 2 - 2 + 127);
    assert_int_equal(bk.bsums[1], 10);
    /* A positive absmax maps to -127, so d is negative. */
    x[0] = 63.5f, x[5] = -63.5f;
    be_quant_row(BE_TYPE_Q8_K, x, &bk, 256);
    assert_true(bk.d == -0.5f);
    assert_int_equal(bk.qs[0], -127);
    assert_int_equal(bk.qs[5], 127);
    assert_int_equal(bk.qs[16], -6);
    /* Random rows: bsums are the sums of 16 values. */
    uint64_t rng = 5;
    static struct block_q8_K rows[3];
    static float xr[768];
    make_row(xr, 768, 1, 2.0f, &rng);
    be_quant_row(BE_TYPE_Q8_K, xr, rows, 768);
    for (int b = 0; b < 3; b++)
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++)
                sum += rows[b].qs[16 * g + j];
            assert_int_equal(rows[b].bsums[g], sum);
        }
    /* All zeros: d = 0, every q and bsum 0. */
    memset(x, 0, sizeof x);
    memset(&bk, 0x55, sizeof bk);
    be_quant_row(BE_TYPE_Q8_K, x, &bk, 256);
    assert_true(bk.d == 0.0f);
    for (int j = 0; j < 256; j++)
        assert_int_equal(bk.qs[j], 0);
    for (int g = 0; g < 16; g++)
        assert_int_equal(bk.bsums[g], 0);
}

/* ---- 4. dot products ---- */

/* Relative error of be_vec_dot_ref(t, x_ref, y) against the double dot of
 * dequant(x_def) and dequant(y), divided by sum |x_i y_i|. x_ref and x_def
 * are the same row except in the negative control. */
static double dot_rel_err(enum be_type t, int64_t n, const void *x_ref, const void *x_def,
                          const void *y)
{
    static float xf[2048], yf[2048];
    enum be_type vt = be_type_info(t)->vec_dot_type;
    be_dequant_row(t, x_def, xf, n);
    be_dequant_row(vt, y, yf, n);
    double want = 0, mag = 0;
    for (int64_t i = 0; i < n; i++) {
        want += (double)xf[i] * yf[i];
        mag += fabs((double)xf[i] * yf[i]);
    }
    if (t == BE_TYPE_Q4_1 || t == BE_TYPE_Q5_1) {
        /* llama.cpp (and the reference) take the min term from the stored
         * s = f16(d * sum(q)) rather than from the q: add that difference. */
        const struct block_q8_1 *yb = y;
        const uint8_t *xb = x_def;
        size_t xsz = be_type_info(t)->size;
        for (int64_t b = 0; b < n / 32; b++) {
            int sum = 0;
            for (int j = 0; j < 32; j++)
                sum += yb[b].qs[j];
            double m = lit_f16(xb + b * xsz, 2);
            want += m * (be_f16_to_f32(yb[b].s) - (double)be_f16_to_f32(yb[b].d) * sum);
        }
    }
    double got = be_vec_dot_ref(t, n, x_ref, y);
    return fabs(got - want) / (mag > 0 ? mag : 1);
}

static void test_vec_dot(void **state)
{
    uint64_t rng = 11;
    static float xf[2048], yf[2048];
    static uint8_t xq[2048 * 4], yq[2048 * 4], xbad[2048 * 4];
    /* Measured: at most 1.4e-8 (double accumulation). 1e-6 leaves room for
     * float accumulation and still sees an off-by-one in one block's integer
     * sum; a wrong scale or offset gives errors near 1. */
    const double tol = 1e-6;
    for (size_t i = 0; i < N_TYPES; i++) {
        const struct tt *ty = &k_types[i];
        enum be_type vt = be_type_info(ty->t)->vec_dot_type;
        /* Odd block counts, and a longer row. */
        int64_t ns[3];
        if (ty->blck == 256)
            ns[0] = 256, ns[1] = 768, ns[2] = 1280;
        else
            ns[0] = 32 * 5, ns[1] = 32 * 7, ns[2] = 2048;
        for (int k = 0; k < 3; k++) {
            int64_t n = ns[k];
            for (int src = 0; src < 2; src++) {
                if (src == 0) { /* a quantized random row */
                    make_row(xf, n, k % 3, 1.0f, &rng);
                    be_quant_row(ty->t, xf, xq, n);
                } else { /* random blocks: every bit pattern of the scales */
                    random_blocks(ty, xq, n / ty->blck, &rng);
                }
                make_row(yf, n, (k + 1) % 2, 3.0f, &rng);
                be_quant_row(vt, yf, yq, n);
                double rel = dot_rel_err(ty->t, n, xq, xq, yq);
                if (!(rel <= tol))
                    fail_msg("%s n=%lld src %d: dot rel err %.3g > %.1g", be_type_name(ty->t),
                             (long long)n, src, rel, tol);
                /* Negative control: the check fails when the definition is
                 * taken from a block with one scale byte corrupted. */
                size_t bytes = be_row_size(ty->t, n);
                memcpy(xbad, xq, bytes);
                xbad[ty->blck == 1 ? 1 : ty->bytes * (n / ty->blck / 2) + ty->scale_byte] ^= 0x01;
                if (ty->blck > 1 && dot_rel_err(ty->t, n, xq, xbad, yq) <= tol)
                    fail_msg("%s: corrupted scale went unnoticed by the dot check",
                             be_type_name(ty->t));
            }
        }
    }
    /* The float types accumulate exactly-converted values. */
    float a[64], b[64];
    for (int j = 0; j < 64; j++)
        a[j] = (float)(j - 20), b[j] = 0.5f * (float)j;
    be_f16_t ah[64], bh[64];
    be_quant_row(BE_TYPE_F16, a, ah, 64);
    be_quant_row(BE_TYPE_F16, b, bh, 64);
    double want = 0;
    for (int j = 0; j < 64; j++)
        want += (double)a[j] * b[j];
    assert_true(be_vec_dot_ref(BE_TYPE_F16, 64, ah, bh) == (float)want);
    assert_true(be_vec_dot_ref(BE_TYPE_F32, 64, a, b) == (float)want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_f16),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_dequant_handmade),
        cmocka_unit_test(test_dequant_random),
        cmocka_unit_test(test_negative_control),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_q8_reference_formulas),
        cmocka_unit_test(test_vec_dot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
