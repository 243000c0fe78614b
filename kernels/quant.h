/* SPDX-License-Identifier: MIT */
/*
 * quant.h - tensor types: the one list used everywhere (GGUF reader, model
 * writer, CPU and GPU kernels), their block layouts, and the plain CPU
 * conversions (dequantize, quantize) and dot products.
 *
 * Type ids are GGUF's (the ggml_type numbering), so a value read from a file
 * can be used directly. Quantized types are stored in blocks of be_type_info()
 * ->blck values taking ->size bytes; a row of n values (n a multiple of the
 * block) takes be_row_size() bytes.
 *
 * Dot products follow the standard practice of 8-bit activations: the weight
 * row (type t) is multiplied with an activation row that was first converted
 * to info->vec_dot_type (Q8_0 for the 32-blocks, Q8_1 for Q4_1/Q5_1, Q8_K for
 * the K-quants and IQ4_XS, F16/BF16/F32 for the float types).
 */
#ifndef MOED_KERNELS_QUANT_H
#define MOED_KERNELS_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum be_type {
    BE_TYPE_F32 = 0,
    BE_TYPE_F16 = 1,
    BE_TYPE_Q4_0 = 2,
    BE_TYPE_Q4_1 = 3,
    BE_TYPE_Q5_0 = 6,
    BE_TYPE_Q5_1 = 7,
    BE_TYPE_Q8_0 = 8,
    BE_TYPE_Q8_1 = 9,   /* activations only */
    BE_TYPE_Q2_K = 10,
    BE_TYPE_Q3_K = 11,
    BE_TYPE_Q4_K = 12,
    BE_TYPE_Q5_K = 13,
    BE_TYPE_Q6_K = 14,
    BE_TYPE_Q8_K = 15,  /* activations only */
    BE_TYPE_IQ4_NL = 20,
    BE_TYPE_IQ4_XS = 23,
    BE_TYPE_BF16 = 30,
    BE_TYPE_COUNT = 40, /* upper bound of ids (not a type) */
};

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK4_NL 32
#define QK_K 256
#define K_SCALE_SIZE 12

/* ---- block layouts (facts of the GGUF format; little-endian, packed) ---- */

typedef uint16_t be_f16_t;  /* IEEE half, stored bits */
typedef uint16_t be_bf16_t; /* bfloat16, stored bits */

struct block_q4_0 { be_f16_t d; uint8_t qs[QK4_0 / 2]; };
struct block_q4_1 { be_f16_t d, m; uint8_t qs[QK4_1 / 2]; };
struct block_q5_0 { be_f16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; };
struct block_q5_1 { be_f16_t d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; };
struct block_q8_0 { be_f16_t d; int8_t qs[QK8_0]; };
struct block_q8_1 { be_f16_t d, s; int8_t qs[QK8_1]; }; /* s = d * sum(qs) */
struct block_q2_K { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; be_f16_t d, dmin; };
struct block_q3_K { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; be_f16_t d; };
struct block_q4_K { be_f16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; };
struct block_q5_K { be_f16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; };
struct block_q6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; be_f16_t d; };
struct block_q8_K { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; };
struct block_iq4_nl { be_f16_t d; uint8_t qs[QK4_NL / 2]; };
struct block_iq4_xs { be_f16_t d; uint16_t scales_h; uint8_t scales_l[QK_K / 64]; uint8_t qs[QK_K / 2]; };

/* The 16 non-linear levels of IQ4_NL and IQ4_XS. */
extern const int8_t be_iq4nl_values[16];

struct be_type_info {
    const char *name;          /* "q4_K" style, as GGUF tools print it */
    int32_t blck;              /* values per block */
    size_t size;               /* bytes per block */
    enum be_type vec_dot_type; /* activation type of the dot product */
    bool is_quant;
    bool weight;               /* may appear as a weight in a model file */
};

/* Returns the type's facts, or NULL when t is not a type moed knows. */
const struct be_type_info *be_type_info(uint32_t t);
/* Returns the name of any ggml type id, known or not ("type 17" style for
 * unknown ones; the string is static for known ids, thread-local otherwise). */
const char *be_type_name(uint32_t t);
/* Bytes of a row of n values; n must be a multiple of the block size. */
size_t be_row_size(enum be_type t, int64_t n);

/* ---- half-precision conversions ---- */
float be_f16_to_f32(be_f16_t h);
be_f16_t be_f32_to_f16(float f);   /* round to nearest even */
float be_bf16_to_f32(be_bf16_t h);
be_bf16_t be_f32_to_bf16(float f); /* round to nearest even, NaN kept quiet */

/* ---- plain (reference) conversions and dot products: kernels/cpu/quant.c ---- */

/* Converts n values (a multiple of the block size) of type t to float. */
void be_dequant_row(enum be_type t, const void *src, float *dst, int64_t n);
/* True when be_quant_row() can produce type t. */
bool be_type_can_quant(enum be_type t);
/* Quantizes n floats (a multiple of the block size) into type t; returns the
 * bytes written (be_row_size(t, n)). t must satisfy be_type_can_quant(). */
size_t be_quant_row(enum be_type t, const float *src, void *dst, int64_t n);
/* Dot product of a weight row x (type t, n values) with an activation row y
 * already converted to be_type_info(t)->vec_dot_type; plain scalar code, the
 * reference every faster kernel is tested against. */
float be_vec_dot_ref(enum be_type t, int64_t n, const void *x, const void *y);

#endif
