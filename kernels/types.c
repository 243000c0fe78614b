/* SPDX-License-Identifier: MIT */
/*
 * types.c - the table of tensor types and the half-precision conversions.
 * The block sizes are facts of the GGUF format; a wrong entry here would make
 * every offset in a model file wrong, so tests check them against the structs.
 */
#include "kernels/quant.h"

#include <stdio.h>
#include <string.h>

#define T(id, nm, b, sz, vd, q, w) [id] = {nm, b, sz, vd, q, w}
static const struct be_type_info g_types[BE_TYPE_COUNT] = {
    T(BE_TYPE_F32, "f32", 1, 4, BE_TYPE_F32, false, true),
    T(BE_TYPE_F16, "f16", 1, 2, BE_TYPE_F16, false, true),
    T(BE_TYPE_BF16, "bf16", 1, 2, BE_TYPE_BF16, false, true),
    T(BE_TYPE_Q4_0, "q4_0", QK4_0, sizeof(struct block_q4_0), BE_TYPE_Q8_0, true, true),
    T(BE_TYPE_Q4_1, "q4_1", QK4_1, sizeof(struct block_q4_1), BE_TYPE_Q8_1, true, true),
    T(BE_TYPE_Q5_0, "q5_0", QK5_0, sizeof(struct block_q5_0), BE_TYPE_Q8_0, true, true),
    T(BE_TYPE_Q5_1, "q5_1", QK5_1, sizeof(struct block_q5_1), BE_TYPE_Q8_1, true, true),
    T(BE_TYPE_Q8_0, "q8_0", QK8_0, sizeof(struct block_q8_0), BE_TYPE_Q8_0, true, true),
    T(BE_TYPE_Q8_1, "q8_1", QK8_1, sizeof(struct block_q8_1), BE_TYPE_Q8_1, true, false),
    T(BE_TYPE_Q2_K, "q2_K", QK_K, sizeof(struct block_q2_K), BE_TYPE_Q8_K, true, true),
    T(BE_TYPE_Q3_K, "q3_K", QK_K, sizeof(struct block_q3_K), BE_TYPE_Q8_K, true, true),
    T(BE_TYPE_Q4_K, "q4_K", QK_K, sizeof(struct block_q4_K), BE_TYPE_Q8_K, true, true),
    T(BE_TYPE_Q5_K, "q5_K", QK_K, sizeof(struct block_q5_K), BE_TYPE_Q8_K, true, true),
    T(BE_TYPE_Q6_K, "q6_K", QK_K, sizeof(struct block_q6_K), BE_TYPE_Q8_K, true, true),
    T(BE_TYPE_Q8_K, "q8_K", QK_K, sizeof(struct block_q8_K), BE_TYPE_Q8_K, true, false),
    T(BE_TYPE_IQ4_NL, "iq4_nl", QK4_NL, sizeof(struct block_iq4_nl), BE_TYPE_Q8_0, true, true),
    T(BE_TYPE_IQ4_XS, "iq4_xs", QK_K, sizeof(struct block_iq4_xs), BE_TYPE_Q8_K, true, true),
};
#undef T

/* Names of the ggml ids moed does not support, for error messages. */
static const char *const g_other_names[BE_TYPE_COUNT] = {
    [4] = "q4_2 (removed)", [5] = "q4_3 (removed)", [16] = "iq2_xxs", [17] = "iq2_xs",
    [18] = "iq3_xxs", [19] = "iq1_s", [21] = "iq3_s", [22] = "iq2_s", [24] = "i8",
    [25] = "i16", [26] = "i32", [27] = "i64", [28] = "f64", [29] = "iq1_m",
    [34] = "tq1_0", [35] = "tq2_0", [39] = "mxfp4",
};

const struct be_type_info *be_type_info(uint32_t t)
{
    if (t >= BE_TYPE_COUNT || g_types[t].name == NULL)
        return NULL;
    return &g_types[t];
}

const char *be_type_name(uint32_t t)
{
    static __thread char buf[32];
    const struct be_type_info *ti = be_type_info(t);
    if (ti)
        return ti->name;
    if (t < BE_TYPE_COUNT && g_other_names[t])
        return g_other_names[t];
    snprintf(buf, sizeof buf, "type %u", t);
    return buf;
}

size_t be_row_size(enum be_type t, int64_t n)
{
    const struct be_type_info *ti = be_type_info(t);
    return ti ? (size_t)(n / ti->blck) * ti->size : 0;
}

/* ---- half precision ---- */

float be_f16_to_f32(be_f16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalize */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

be_f16_t be_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t exp = (x >> 23) & 0xff;
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) /* inf or nan */
        return (be_f16_t)(sign | 0x7c00 | (man ? 0x200 | (man >> 13) : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31)
        return (be_f16_t)(sign | 0x7c00);
    if (e <= 0) { /* subnormal or zero */
        if (e < -10)
            return (be_f16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (be_f16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
        half++; /* may carry into the exponent, which is correct rounding */
    return (be_f16_t)half;
}

float be_bf16_to_f32(be_bf16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

be_bf16_t be_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) /* nan: keep it quiet */
        return (be_bf16_t)((x >> 16) | 64);
    return (be_bf16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}
