/* SPDX-License-Identifier: MIT */
/*
 * simcache.c - the simulated expert cache and Belady's MIN (see simcache.h).
 *
 * Invariant: resident entries form one doubly-linked list, most recent at
 * head; every per-key array is sized n_keys at init. Eviction walks from the
 * tail, so an LRU victim is found in O(1) unless protected entries sit at
 * the tail.
 */
#include "predictor/simcache.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { F_RESIDENT = 1, F_PROTECTED = 2, F_PINNED = 4, F_PF_UNUSED = 8 };

struct simcache {
    struct simcache_params p;
    uint64_t *bytes;     /* n_keys */
    uint64_t *freq;      /* n_keys: accesses so far (LFU) */
    int32_t *prev, *next;/* n_keys: list links, -1 ends */
    uint8_t *flags;      /* n_keys: F_* */
    int32_t head, tail;  /* most / least recent resident */
    uint64_t used_bytes;
    struct simcache_stats st;
};

int simcache_init(struct simcache **out, const struct simcache_params *p)
{
    *out = NULL;
    if (p->n_keys == 0 || !p->key_bytes || p->n_keys > INT32_MAX)
        return ERR_INVALID;
    struct simcache *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->p = *p;
    c->bytes = malloc((size_t)p->n_keys * 8);
    c->freq = calloc(p->n_keys, 8);
    c->prev = malloc((size_t)p->n_keys * 4);
    c->next = malloc((size_t)p->n_keys * 4);
    c->flags = calloc(p->n_keys, 1);
    if (!c->bytes || !c->freq || !c->prev || !c->next || !c->flags) {
        simcache_free(c);
        return -ENOMEM;
    }
    memcpy(c->bytes, p->key_bytes, (size_t)p->n_keys * 8);
    c->p.key_bytes = c->bytes;
    c->head = c->tail = -1;
    *out = c;
    return 0;
}

void simcache_free(struct simcache *c)
{
    if (!c)
        return;
    free(c->bytes);
    free(c->freq);
    free(c->prev);
    free(c->next);
    free(c->flags);
    free(c);
}

static void list_unlink(struct simcache *c, int32_t k)
{
    if (c->prev[k] >= 0) c->next[c->prev[k]] = c->next[k]; else c->head = c->next[k];
    if (c->next[k] >= 0) c->prev[c->next[k]] = c->prev[k]; else c->tail = c->prev[k];
}

static void list_push_head(struct simcache *c, int32_t k)
{
    c->prev[k] = -1;
    c->next[k] = c->head;
    if (c->head >= 0)
        c->prev[c->head] = k;
    c->head = k;
    if (c->tail < 0)
        c->tail = k;
}

static void evict(struct simcache *c, int32_t k)
{
    list_unlink(c, k);
    if (c->flags[k] & F_PF_UNUSED)
        c->st.pf.wasted++;
    c->flags[k] = 0;
    c->used_bytes -= c->bytes[k];
}

/* Victim for the policy, skipping pinned and (unless allow_protected)
 * protected entries; -1 if none. */
static int32_t pick_victim(const struct simcache *c, bool allow_protected)
{
    uint8_t skip = F_PINNED | (allow_protected ? 0 : F_PROTECTED);
    int32_t best = -1;
    for (int32_t k = c->tail; k >= 0; k = c->prev[k]) {
        if (c->flags[k] & skip)
            continue;
        if (c->p.evict == SIMCACHE_LRU)
            return k;
        if (best < 0 || c->freq[k] < c->freq[best])
            best = k;
    }
    return best;
}

/* Makes room for need bytes; false if it cannot. */
static bool make_room(struct simcache *c, uint64_t need, bool allow_protected)
{
    while (c->used_bytes + need > c->p.capacity_bytes) {
        int32_t v = pick_victim(c, false);
        if (v < 0 && allow_protected)
            v = pick_victim(c, true);
        if (v < 0)
            return false;
        evict(c, v);
    }
    return true;
}

static void insert(struct simcache *c, int32_t k, uint8_t flags)
{
    c->flags[k] = F_RESIDENT | flags;
    c->used_bytes += c->bytes[k];
    c->st.bytes_loaded += c->bytes[k];
    list_push_head(c, k);
}

bool simcache_access(struct simcache *c, uint32_t key)
{
    ASSERT(key < c->p.n_keys);
    int32_t k = (int32_t)key;
    c->st.accesses++;
    c->freq[k]++;
    if (c->flags[k] & F_RESIDENT) {
        c->st.hits++;
        if (c->flags[k] & F_PF_UNUSED) {
            c->st.pf.used++;
            c->flags[k] &= (uint8_t)~F_PF_UNUSED;
        }
        list_unlink(c, k);
        list_push_head(c, k);
        return true;
    }
    c->st.misses++;
    if (c->bytes[k] > c->p.capacity_bytes || !make_room(c, c->bytes[k], true)) {
        c->st.bytes_loaded += c->bytes[k]; /* streamed through, not kept */
        return false;
    }
    insert(c, k, 0);
    return false;
}

int simcache_prefetch(struct simcache *c, uint32_t key)
{
    ASSERT(key < c->p.n_keys);
    int32_t k = (int32_t)key;
    if (c->flags[k] & F_RESIDENT) {
        c->flags[k] |= F_PROTECTED;
        list_unlink(c, k);
        list_push_head(c, k);
        return 0;
    }
    if (c->bytes[k] > c->p.capacity_bytes || !make_room(c, c->bytes[k], false))
        return 0;
    insert(c, k, F_PROTECTED | F_PF_UNUSED);
    c->st.bytes_prefetched += c->bytes[k];
    c->st.pf.issued++;
    return 1;
}

void simcache_unprotect(struct simcache *c, uint32_t key)
{
    ASSERT(key < c->p.n_keys);
    c->flags[key] &= (uint8_t)~F_PROTECTED;
}

int simcache_pin(struct simcache *c, uint32_t key)
{
    ASSERT(key < c->p.n_keys);
    int32_t k = (int32_t)key;
    if (!(c->flags[k] & F_RESIDENT)) {
        if (c->bytes[k] > c->p.capacity_bytes || !make_room(c, c->bytes[k], false))
            return ERR_BUSY;
        insert(c, k, 0);
    }
    c->flags[k] |= F_PINNED;
    return 0;
}

bool simcache_resident(const struct simcache *c, uint32_t key)
{
    return key < c->p.n_keys && (c->flags[key] & F_RESIDENT);
}

void simcache_finish(struct simcache *c)
{
    for (int32_t k = c->head; k >= 0; k = c->next[k])
        if (c->flags[k] & F_PF_UNUSED) {
            c->st.pf.wasted++;
            c->flags[k] &= (uint8_t)~F_PF_UNUSED;
        }
}

const struct simcache_stats *simcache_get_stats(const struct simcache *c) { return &c->st; }

/* ---- Belady ---- */

struct heap_ent {
    size_t next_use;
    uint32_t key;
};

/* Max-heap by (next_use, key). */
static bool heap_less(const struct heap_ent *a, const struct heap_ent *b)
{
    return a->next_use < b->next_use || (a->next_use == b->next_use && a->key < b->key);
}

static void heap_push(struct heap_ent *h, size_t *n, struct heap_ent e)
{
    size_t i = (*n)++;
    h[i] = e;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!heap_less(&h[par], &h[i]))
            break;
        struct heap_ent t = h[par]; h[par] = h[i]; h[i] = t;
        i = par;
    }
}

static struct heap_ent heap_pop(struct heap_ent *h, size_t *n)
{
    struct heap_ent top = h[0];
    h[0] = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && heap_less(&h[m], &h[l])) m = l;
        if (r < *n && heap_less(&h[m], &h[r])) m = r;
        if (m == i)
            break;
        struct heap_ent t = h[m]; h[m] = h[i]; h[i] = t;
        i = m;
    }
    return top;
}

int simcache_belady(const uint32_t *keys, size_t n, uint32_t n_keys, const uint64_t *key_bytes,
                    uint64_t capacity_bytes, struct simcache_stats *st)
{
    memset(st, 0, sizeof *st);
    if (n_keys == 0)
        return ERR_INVALID;
    for (size_t i = 0; i < n; i++)
        if (keys[i] >= n_keys)
            return ERR_INVALID;
    size_t *next_use = malloc((n ? n : 1) * sizeof *next_use);
    size_t *last = malloc((size_t)n_keys * sizeof *last);
    size_t *cur = malloc((size_t)n_keys * sizeof *cur);   /* resident key's next use */
    uint8_t *res = calloc(n_keys, 1);
    struct heap_ent *h = malloc((n + 1) * sizeof *h);
    if (!next_use || !last || !cur || !res || !h) {
        free(next_use); free(last); free(cur); free(res); free(h);
        return -ENOMEM;
    }
    for (uint32_t k = 0; k < n_keys; k++)
        last[k] = SIZE_MAX;
    for (size_t i = n; i-- > 0;) {
        next_use[i] = last[keys[i]];
        last[keys[i]] = i;
    }
    size_t hn = 0;
    uint64_t used = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t k = keys[i];
        st->accesses++;
        if (res[k]) {
            st->hits++;
        } else {
            st->misses++;
            st->bytes_loaded += key_bytes[k];
            if (key_bytes[k] > capacity_bytes)
                continue;
            while (used + key_bytes[k] > capacity_bytes) {
                struct heap_ent e = heap_pop(h, &hn);  /* stale entries are skipped */
                if (!res[e.key] || cur[e.key] != e.next_use)
                    continue;
                res[e.key] = 0;
                used -= key_bytes[e.key];
            }
            res[k] = 1;
            used += key_bytes[k];
        }
        cur[k] = next_use[i];
        heap_push(h, &hn, (struct heap_ent){next_use[i], k});
    }
    free(next_use); free(last); free(cur); free(res); free(h);
    return 0;
}
