/* SPDX-License-Identifier: MIT */
/*
 * mem.h - memory for large, long-lived arrays streamed from DRAM.
 */
#ifndef MOED_COMMON_MEM_H
#define MOED_COMMON_MEM_H

#include <stddef.h>

/* n bytes (free() releases them). From 4 MiB on they are 2 MiB aligned and
 * asked for transparent huge pages, which the system gives only on request
 * where THP is in "madvise" mode: 512x fewer TLB entries for tensors read
 * every decode step (the expert stacks, the output matrix, its panels).
 * NULL when out of memory. */
void *mem_alloc_large(size_t n);

#endif
