/* SPDX-License-Identifier: MIT */
/*
 * dot_vnni_avx512.c - the AVX-512 VNNI + BF16 level: the kernels of
 * dot_avx512.c (and through it dot_avx2.c) compiled with DOT_VNNI, so int8
 * dot products use vpdpbusd, scaled int16 sums vpdpwssd and BF16 rows
 * vdpbf16ps. Its table is be_cpu__dot_avx512vnni_fill(); kernels.c calls it
 * only when CPUID reports AVX512_VNNI and AVX512_BF16.
 */
#define DOT_VNNI 1
#include "kernels/cpu/dot_avx512.c"
