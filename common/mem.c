/* SPDX-License-Identifier: MIT */
#include "common/mem.h"

#include <stdlib.h>
#include <sys/mman.h>

#define MEM_HUGE_MIN (4u << 20)

void *mem_alloc_large(size_t n)
{
    if (n < MEM_HUGE_MIN)
        return malloc(n ? n : 1);
    const size_t a = 2u << 20, r = (n + a - 1) / a * a;
    void *p = aligned_alloc(a, r);
#ifdef MADV_HUGEPAGE
    if (p) /* whole 2 MiB pages only: the tail past n is never touched */
        (void)madvise(p, n / a * a, MADV_HUGEPAGE); /* advisory: no huge pages is fine */
#endif
    return p;
}
