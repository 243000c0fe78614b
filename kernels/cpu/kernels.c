/* SPDX-License-Identifier: MIT */
/*
 * kernels.c - picks the CPU's dot-product and activation-quantization
 * kernels at run time: CPUID detection of the instruction sets (with the
 * OS's saved register state checked through XGETBV) and one table of kernels
 * per ISA level (see impl.h).
 *
 * Invariants a reader must know:
 *  - This file is compiled with no ISA flags; it only calls into the
 *    *_avx2.c / *_avx512.c files after CPUID said their instructions run here.
 *  - The tables are built once, on first use, under pthread_once, and are
 *    read-only afterwards, so any thread may use them.
 *  - Level SCALAR wraps the reference code of quant.c; every entry a higher
 *    level leaves NULL is copied from the level below, so each table of a
 *    supported level is complete for every type quant.c knows.
 *  - be_cpu__kernels() hands out any level the CPU supports (tests compare
 *    every level with the reference); there is no environment override.
 */
#include "kernels/cpu/impl.h"

#include <pthread.h>
#include <stdbool.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define KERNELS_X86 1
/* The table fillers of the SIMD files (dot_avx2.c, dot_avx512.c,
 * dot_vnni_avx512.c); each sets the entries it has and leaves the rest. */
void be_cpu__dot_avx2_fill(struct be_cpu_kernels *k);
void be_cpu__dot_avx512_fill(struct be_cpu_kernels *k);
void be_cpu__dot_avx512vnni_fill(struct be_cpu_kernels *k);
#endif

/* ---- scalar level: wrappers around the reference ---- */

#define SCALAR_DOT(T)                                                                      \
    static void scalar_dot_##T(int64_t n, const void *x, const void *y, size_t y_stride,   \
                               int n_y, float *s)                                          \
    {                                                                                      \
        for (int j = 0; j < n_y; j++)                                                      \
            s[j] = be_vec_dot_ref(BE_TYPE_##T, n, x, (const uint8_t *)y + (size_t)j * y_stride); \
    }
#define SCALAR_ACT(T)                                                                      \
    static void scalar_act_##T(const float *x, void *y, int64_t n)                         \
    {                                                                                      \
        be_quant_row(BE_TYPE_##T, x, y, n);                                                \
    }

SCALAR_DOT(F32)
SCALAR_DOT(F16)
SCALAR_DOT(BF16)
SCALAR_DOT(Q4_0)
SCALAR_DOT(Q4_1)
SCALAR_DOT(Q5_0)
SCALAR_DOT(Q5_1)
SCALAR_DOT(Q8_0)
SCALAR_DOT(Q8_1)
SCALAR_DOT(Q2_K)
SCALAR_DOT(Q3_K)
SCALAR_DOT(Q4_K)
SCALAR_DOT(Q5_K)
SCALAR_DOT(Q6_K)
SCALAR_DOT(Q8_K)
SCALAR_DOT(IQ4_NL)
SCALAR_DOT(IQ4_XS)

SCALAR_ACT(F32)
SCALAR_ACT(F16)
SCALAR_ACT(BF16)
SCALAR_ACT(Q8_0)
SCALAR_ACT(Q8_1)
SCALAR_ACT(Q8_K)

static void scalar_fill(struct be_cpu_kernels *k)
{
    k->dot[BE_TYPE_F32] = scalar_dot_F32;
    k->dot[BE_TYPE_F16] = scalar_dot_F16;
    k->dot[BE_TYPE_BF16] = scalar_dot_BF16;
    k->dot[BE_TYPE_Q4_0] = scalar_dot_Q4_0;
    k->dot[BE_TYPE_Q4_1] = scalar_dot_Q4_1;
    k->dot[BE_TYPE_Q5_0] = scalar_dot_Q5_0;
    k->dot[BE_TYPE_Q5_1] = scalar_dot_Q5_1;
    k->dot[BE_TYPE_Q8_0] = scalar_dot_Q8_0;
    k->dot[BE_TYPE_Q8_1] = scalar_dot_Q8_1;
    k->dot[BE_TYPE_Q2_K] = scalar_dot_Q2_K;
    k->dot[BE_TYPE_Q3_K] = scalar_dot_Q3_K;
    k->dot[BE_TYPE_Q4_K] = scalar_dot_Q4_K;
    k->dot[BE_TYPE_Q5_K] = scalar_dot_Q5_K;
    k->dot[BE_TYPE_Q6_K] = scalar_dot_Q6_K;
    k->dot[BE_TYPE_Q8_K] = scalar_dot_Q8_K;
    k->dot[BE_TYPE_IQ4_NL] = scalar_dot_IQ4_NL;
    k->dot[BE_TYPE_IQ4_XS] = scalar_dot_IQ4_XS;
    k->act[BE_TYPE_F32] = scalar_act_F32;
    k->act[BE_TYPE_F16] = scalar_act_F16;
    k->act[BE_TYPE_BF16] = scalar_act_BF16;
    k->act[BE_TYPE_Q8_0] = scalar_act_Q8_0;
    k->act[BE_TYPE_Q8_1] = scalar_act_Q8_1;
    k->act[BE_TYPE_Q8_K] = scalar_act_Q8_K;
}

/* ---- detection ---- */

#ifdef KERNELS_X86
/* XCR0: which register files the OS saves on a context switch. */
static uint64_t xcr0_get(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static enum be_cpu_isa isa_probe(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d))
        return BE_CPU_ISA_SCALAR;
    bool osxsave = c & (1u << 27), avx = c & (1u << 28);
    bool fma = c & (1u << 12), f16c = c & (1u << 29);
    if (!osxsave || !avx || !fma || !f16c)
        return BE_CPU_ISA_SCALAR;
    uint64_t xcr0 = xcr0_get();
    if ((xcr0 & 0x6) != 0x6) /* XMM and YMM state */
        return BE_CPU_ISA_SCALAR;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 7 || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return BE_CPU_ISA_SCALAR;
    bool avx2 = b & (1u << 5);
    if (!avx2)
        return BE_CPU_ISA_SCALAR;
    bool avx512 = (b & (1u << 16)) /* F */ && (b & (1u << 17)) /* DQ */ &&
                  (b & (1u << 30)) /* BW */ && (b & (1u << 31)) /* VL */ &&
                  (xcr0 & 0xe6) == 0xe6; /* opmask, ZMM0-15 upper, ZMM16-31 */
    if (!avx512)
        return BE_CPU_ISA_AVX2;
    bool vnni = c & (1u << 11);
    unsigned a1, b1, c1, d1;
    bool bf16 = __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && (a1 & (1u << 5));
    return vnni && bf16 ? BE_CPU_ISA_AVX512VNNI : BE_CPU_ISA_AVX512;
}
#else
static enum be_cpu_isa isa_probe(void)
{
    return BE_CPU_ISA_SCALAR;
}
#endif

/* ---- tables ---- */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static enum be_cpu_isa g_isa;
static struct be_cpu_kernels g_kernels[BE_CPU_ISA_COUNT];

static const char *const g_isa_names[BE_CPU_ISA_COUNT] = {
    [BE_CPU_ISA_SCALAR] = "scalar",
    [BE_CPU_ISA_AVX2] = "avx2",
    [BE_CPU_ISA_AVX512] = "avx512",
    [BE_CPU_ISA_AVX512VNNI] = "avx512vnni",
};

static void tables_build(void)
{
    g_isa = isa_probe();
    for (int l = 0; l <= (int)g_isa; l++) {
        struct be_cpu_kernels *k = &g_kernels[l];
        k->isa_name = g_isa_names[l];
        switch (l) {
        case BE_CPU_ISA_SCALAR: scalar_fill(k); break;
#ifdef KERNELS_X86
        case BE_CPU_ISA_AVX2: be_cpu__dot_avx2_fill(k); break;
        case BE_CPU_ISA_AVX512: be_cpu__dot_avx512_fill(k); break;
        case BE_CPU_ISA_AVX512VNNI: be_cpu__dot_avx512vnni_fill(k); break;
#endif
        default: break;
        }
        if (l == 0)
            continue;
        for (int t = 0; t < BE_TYPE_COUNT; t++) { /* fill the gaps from below */
            if (!k->dot[t]) { /* a GEMM only ever goes with its level's own dot */
                k->dot[t] = g_kernels[l - 1].dot[t];
                k->gemm[t] = g_kernels[l - 1].gemm[t];
                k->rows[t] = g_kernels[l - 1].rows[t];
                k->stored[t] = g_kernels[l - 1].stored[t];
            }
            if (!k->act[t])
                k->act[t] = g_kernels[l - 1].act[t];
        }
    }
}

enum be_cpu_isa be_cpu__isa_detect(void)
{
    pthread_once(&g_once, tables_build);
    return g_isa;
}

const struct be_cpu_kernels *be_cpu__kernels(enum be_cpu_isa isa)
{
    pthread_once(&g_once, tables_build);
    if ((int)isa < 0 || isa > g_isa)
        return NULL;
    return &g_kernels[isa];
}
