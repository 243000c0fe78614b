/* SPDX-License-Identifier: MIT */
/*
 * simcache.h - a simulated expert cache for replaying routing traces: which
 * experts are resident, what each access costs, and how prefetches end.
 * It models policy only (no data, no clock); the live store is cache/.
 *
 * Keys are dense ids in [0, n_keys) (the replay tool uses layer * n_expert +
 * expert); each key has a byte size, and the cache holds at most
 * capacity_bytes of resident keys.
 *
 * Semantics (SIMCACHE_LRU):
 *   - access(key): a hit if resident (it becomes most recent); otherwise a
 *     miss that loads it (bytes_loaded += size), evicting least recently used
 *     unprotected, unpinned entries until it fits. If only protected entries
 *     remain, the least recent protected one is evicted too (a demand load
 *     never waits, so protection cannot deadlock). If the key alone exceeds
 *     the capacity, it is counted as a miss and not kept.
 *   - prefetch(key): if resident, it becomes most recent and protected;
 *     otherwise it is loaded as most recent and protected (issued++), evicting
 *     only unprotected, unpinned entries; if none can make room, nothing is
 *     loaded and 0 is returned.
 *   - unprotect(key): the protection ends (the caller does this when the
 *     predicted layer has run for the batch that predicted it).
 *   - pin(key): loads it (counted in bytes_loaded) and never evicts it.
 *   A prefetched entry counts `used` at its first access and `wasted` if it
 *   is evicted first or is still unused at simcache_finish().
 * SIMCACHE_LFU: as LRU, but the victim is the entry with the fewest accesses
 * so far (counted over the whole run, resident or not), ties to the least
 * recent; O(resident) per eviction.
 *
 * All memory is allocated at init; no call allocates afterwards.
 */
#ifndef MOED_PREDICTOR_SIMCACHE_H
#define MOED_PREDICTOR_SIMCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "predictor/score.h"

enum simcache_evict {
    SIMCACHE_LRU = 0,
    SIMCACHE_LFU,
};

struct simcache_params {
    uint32_t n_keys;
    const uint64_t *key_bytes;  /* n_keys, borrowed for init only (copied) */
    uint64_t capacity_bytes;
    enum simcache_evict evict;
};

struct simcache_stats {
    uint64_t accesses, hits, misses;
    uint64_t bytes_loaded;        /* demand loads + prefetches + pins */
    uint64_t bytes_prefetched;    /* part of bytes_loaded */
    struct pred_prefetch_stats pf;
};

struct simcache;

/* Returns 0, ERR_INVALID or -ENOMEM; *out is NULL on failure. */
int simcache_init(struct simcache **out, const struct simcache_params *p);
/* NULL does nothing. */
void simcache_free(struct simcache *c);

/* Returns true on a hit. */
bool simcache_access(struct simcache *c, uint32_t key);
/* Returns 1 when a load was issued, 0 when resident already or no room. */
int simcache_prefetch(struct simcache *c, uint32_t key);
void simcache_unprotect(struct simcache *c, uint32_t key);
/* Returns 0, or ERR_BUSY when pinned entries would exceed the capacity. */
int simcache_pin(struct simcache *c, uint32_t key);
bool simcache_resident(const struct simcache *c, uint32_t key);
/* Counts prefetched entries never used as wasted; call once at the end. */
void simcache_finish(struct simcache *c);
const struct simcache_stats *simcache_get_stats(const struct simcache *c);

/*
 * Belady's optimal replacement (MIN) over a whole access string: on a miss
 * with no room, evict the resident key whose next access is farthest in the
 * future (never accessed again counts as infinitely far; ties: the higher
 * key). keys[0..n) in [0, n_keys). Fills st (accesses, hits, misses,
 * bytes_loaded). Allocates O(n + n_keys) working memory. Returns 0,
 * ERR_INVALID or -ENOMEM.
 */
int simcache_belady(const uint32_t *keys, size_t n, uint32_t n_keys, const uint64_t *key_bytes,
                    uint64_t capacity_bytes, struct simcache_stats *st);

#endif
