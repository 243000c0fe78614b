/* SPDX-License-Identifier: MIT */
/*
 * kv.c - block manager of the paged KV cache with content-addressed prefix
 * reuse (see kv.h for the model).
 *
 * Invariants:
 *  - Every block is in exactly one state: FREE (on the free stack), USED
 *    (ref > 0) or CACHED (ref == 0, content kept, on the LRU list).
 *  - A block in the full-block index is full and immutable; its key is the
 *    chain hash of its tokens and of every block before it.
 *  - A block in the child index (keyed by the chain hash of the block before
 *    it) is either full or the partial tail of a finished sequence; it is
 *    only ever read, and reused partially by copying rows into a fresh block.
 */
#include "engine/kv.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { ST_FREE, ST_USED, ST_CACHED };

#define ROOT_HASH 0x6d6f65642d6b7621ull

struct kv {
    struct kv_params p;
    int32_t *ref;
    uint8_t *state;
    int32_t *rows;        /* valid rows */
    int32_t *tokens;      /* n_blocks x block_size */
    uint64_t *hash;       /* chain hash (valid when full and indexed) */
    uint64_t *parent;     /* chain hash of the block before */
    uint8_t *in_full;     /* in the full-block index */
    uint8_t *in_child;    /* in the child index */
    /* indexes: bucket heads and per-block next links */
    int32_t n_buckets;
    int32_t *full_head, *full_next;
    int32_t *child_head, *child_next;
    /* free stack */
    int32_t *free_stack;
    int32_t n_free;
    /* LRU of cached blocks: lru_prev/lru_next, head = oldest */
    int32_t *lru_prev, *lru_next;
    int32_t lru_head, lru_tail, n_cached;
    uint64_t hit_tokens, evictions;
};

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

static uint64_t chain_hash(uint64_t parent, const int32_t *tok, int32_t n)
{
    uint64_t h = mix(parent, (uint64_t)n);
    for (int32_t i = 0; i < n; i++)
        h = mix(h, (uint32_t)tok[i]);
    return h;
}

/* ---- indexes ---- */

static int32_t bucket(const struct kv *kv, uint64_t h) { return (int32_t)(h & (uint64_t)(kv->n_buckets - 1)); }

static void index_add(struct kv *kv, int32_t *head, int32_t *next, uint64_t key, int32_t b)
{
    int32_t k = bucket(kv, key);
    next[b] = head[k];
    head[k] = b;
}

static void index_del(struct kv *kv, int32_t *head, int32_t *next, uint64_t key, int32_t b)
{
    int32_t *pp = &head[bucket(kv, key)];
    while (*pp >= 0 && *pp != b)
        pp = &next[*pp];
    if (*pp == b)
        *pp = next[b];
}

static void unindex(struct kv *kv, int32_t b)
{
    if (kv->in_full[b])
        index_del(kv, kv->full_head, kv->full_next, kv->hash[b], b);
    if (kv->in_child[b])
        index_del(kv, kv->child_head, kv->child_next, kv->parent[b], b);
    kv->in_full[b] = kv->in_child[b] = 0;
}

/* ---- LRU ---- */

static void lru_remove(struct kv *kv, int32_t b)
{
    int32_t p = kv->lru_prev[b], n = kv->lru_next[b];
    if (p >= 0) kv->lru_next[p] = n; else kv->lru_head = n;
    if (n >= 0) kv->lru_prev[n] = p; else kv->lru_tail = p;
    kv->n_cached--;
}

static void lru_push(struct kv *kv, int32_t b) /* most recent at the tail */
{
    kv->lru_prev[b] = kv->lru_tail;
    kv->lru_next[b] = -1;
    if (kv->lru_tail >= 0) kv->lru_next[kv->lru_tail] = b; else kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_cached++;
}

/* ---- block states ---- */

static int32_t take_block(struct kv *kv)
{
    int32_t b;
    if (kv->n_free > 0) {
        b = kv->free_stack[--kv->n_free];
    } else if (kv->lru_head >= 0) {
        b = kv->lru_head;
        lru_remove(kv, b);
        unindex(kv, b);
        kv->evictions++;
    } else {
        return -1;
    }
    kv->state[b] = ST_USED;
    kv->ref[b] = 1;
    kv->rows[b] = 0;
    return b;
}

static void ref_block(struct kv *kv, int32_t b)
{
    if (kv->state[b] == ST_CACHED) {
        lru_remove(kv, b);
        kv->state[b] = ST_USED;
    }
    kv->ref[b]++;
}

static void unref_block(struct kv *kv, int32_t b)
{
    ASSERT(kv->ref[b] > 0);
    if (--kv->ref[b] > 0)
        return;
    if (kv->in_full[b] || kv->in_child[b]) {
        kv->state[b] = ST_CACHED;
        lru_push(kv, b);
    } else {
        kv->state[b] = ST_FREE;
        kv->free_stack[kv->n_free++] = b;
    }
}

/* ---- public ---- */

int kv_init(struct kv **out, const struct kv_params *p)
{
    *out = NULL;
    if (p->n_blocks <= 0 || p->block_size <= 0)
        return -EINVAL;
    struct kv *kv = calloc(1, sizeof *kv);
    if (!kv)
        return -ENOMEM;
    const size_t n = (size_t)p->n_blocks;
    kv->p = *p;
    kv->n_buckets = 1;
    while (kv->n_buckets < p->n_blocks * 2)
        kv->n_buckets <<= 1;
    kv->ref = calloc(n, sizeof *kv->ref);
    kv->state = calloc(n, 1);
    kv->rows = calloc(n, sizeof *kv->rows);
    kv->tokens = calloc(n * (size_t)p->block_size, sizeof *kv->tokens);
    kv->hash = calloc(n, sizeof *kv->hash);
    kv->parent = calloc(n, sizeof *kv->parent);
    kv->in_full = calloc(n, 1);
    kv->in_child = calloc(n, 1);
    kv->full_head = malloc((size_t)kv->n_buckets * sizeof(int32_t));
    kv->child_head = malloc((size_t)kv->n_buckets * sizeof(int32_t));
    kv->full_next = calloc(n, sizeof(int32_t));
    kv->child_next = calloc(n, sizeof(int32_t));
    kv->free_stack = calloc(n, sizeof(int32_t));
    kv->lru_prev = calloc(n, sizeof(int32_t));
    kv->lru_next = calloc(n, sizeof(int32_t));
    if (!kv->ref || !kv->state || !kv->rows || !kv->tokens || !kv->hash || !kv->parent ||
        !kv->in_full || !kv->in_child || !kv->full_head || !kv->child_head || !kv->full_next ||
        !kv->child_next || !kv->free_stack || !kv->lru_prev || !kv->lru_next) {
        kv_free(kv);
        return -ENOMEM;
    }
    for (int32_t i = 0; i < kv->n_buckets; i++)
        kv->full_head[i] = kv->child_head[i] = -1;
    for (int32_t i = 0; i < p->n_blocks; i++)
        kv->free_stack[i] = p->n_blocks - 1 - i; /* block 0 handed out first */
    kv->n_free = p->n_blocks;
    kv->lru_head = kv->lru_tail = -1;
    *out = kv;
    return 0;
}

void kv_free(struct kv *kv)
{
    if (!kv)
        return;
    free(kv->ref); free(kv->state); free(kv->rows); free(kv->tokens); free(kv->hash);
    free(kv->parent); free(kv->in_full); free(kv->in_child); free(kv->full_head);
    free(kv->child_head); free(kv->full_next); free(kv->child_next); free(kv->free_stack);
    free(kv->lru_prev); free(kv->lru_next);
    free(kv);
}

int kv_seq_init(struct kv_seq *s, const struct kv *kv, int32_t max_tokens)
{
    memset(s, 0, sizeof *s);
    if (max_tokens <= 0)
        return -EINVAL;
    s->cap = (max_tokens + kv->p.block_size - 1) / kv->p.block_size;
    s->blocks = malloc((size_t)s->cap * sizeof *s->blocks);
    s->tokens = malloc((size_t)s->cap * (size_t)kv->p.block_size * sizeof *s->tokens);
    if (!s->blocks || !s->tokens) {
        free(s->blocks);
        free(s->tokens);
        memset(s, 0, sizeof *s);
        return -ENOMEM;
    }
    return 0;
}

static uint64_t seq_parent_hash(const struct kv *kv, const struct kv_seq *s, int32_t blk)
{
    uint64_t h = ROOT_HASH;
    for (int32_t i = 0; i < blk; i++)
        h = chain_hash(h, s->tokens + (size_t)i * kv->p.block_size, kv->p.block_size);
    return h;
}

void kv_seq_free(struct kv *kv, struct kv_seq *s)
{
    if (!s->blocks)
        return;
    const int32_t bs = kv->p.block_size;
    /* Index the partial tail so a continuation can reuse it, then release
     * from the last block to the first: parents end up more recently used
     * than their children and are evicted after them. */
    if (kv->p.prefix_cache && s->n_alloc > 0) {
        int32_t last = (s->n_tokens - 1) / bs;
        int32_t rows = s->n_tokens - last * bs;
        if (s->n_tokens > 0 && rows < bs && last < s->n_alloc) {
            int32_t b = s->blocks[last];
            if (kv->ref[b] == 1 && !kv->in_child[b]) {
                kv->parent[b] = seq_parent_hash(kv, s, last);
                kv->rows[b] = rows;
                memcpy(kv->tokens + (size_t)b * bs, s->tokens + (size_t)last * bs, (size_t)rows * sizeof(int32_t));
                index_add(kv, kv->child_head, kv->child_next, kv->parent[b], b);
                kv->in_child[b] = 1;
            }
        }
    }
    for (int32_t i = s->n_alloc - 1; i >= 0; i--)
        unref_block(kv, s->blocks[i]);
    free(s->blocks);
    free(s->tokens);
    memset(s, 0, sizeof *s);
}

int kv_seq_attach_prefix(struct kv *kv, struct kv_seq *s, const int32_t *tokens, int32_t n,
                         struct kv_copy *copy)
{
    const int32_t bs = kv->p.block_size;
    copy->src = copy->dst = -1;
    copy->n_rows = 0;
    ASSERT(s->n_alloc == 0 && s->n_tokens == 0);
    if (!kv->p.prefix_cache || n <= 1)
        return 0;
    const int32_t limit = n - 1; /* the last prompt token is always computed */
    uint64_t h = ROOT_HASH;
    int32_t done = 0;
    /* Full blocks, by chain hash. */
    while (done + bs <= limit && s->n_alloc < s->cap) {
        uint64_t hh = chain_hash(h, tokens + done, bs);
        int32_t b = kv->full_head[bucket(kv, hh)];
        while (b >= 0 && !(kv->hash[b] == hh && kv->parent[b] == h &&
                           memcmp(kv->tokens + (size_t)b * bs, tokens + done, (size_t)bs * 4) == 0))
            b = kv->full_next[b];
        if (b < 0)
            break;
        ref_block(kv, b);
        s->blocks[s->n_alloc++] = b;
        memcpy(s->tokens + done, tokens + done, (size_t)bs * 4);
        done += bs;
        h = hh;
    }
    /* Then the best partial match among the children of the last block
     * (full blocks are children too, so a prefix that ends inside a full
     * cached block is found here). */
    int32_t best = -1, best_rows = 0;
    if (done < limit && s->n_alloc < s->cap) {
        for (int32_t b = kv->child_head[bucket(kv, h)]; b >= 0; b = kv->child_next[b]) {
            if (kv->parent[b] != h)
                continue;
            int32_t r = 0, max = kv->rows[b] < limit - done ? kv->rows[b] : limit - done;
            while (r < max && kv->tokens[(size_t)b * bs + r] == tokens[done + r])
                r++;
            if (r > best_rows) {
                best_rows = r;
                best = b;
            }
        }
    }
    if (best >= 0) {
        ref_block(kv, best); /* keep it from being evicted by take_block */
        int32_t dst = take_block(kv);
        unref_block(kv, best);
        if (dst < 0) {
            for (int32_t i = s->n_alloc - 1; i >= 0; i--)
                unref_block(kv, s->blocks[i]);
            s->n_alloc = 0;
            return -ENOSPC;
        }
        s->blocks[s->n_alloc++] = dst;
        memcpy(s->tokens + done, tokens + done, (size_t)best_rows * 4);
        copy->src = best;
        copy->dst = dst;
        copy->n_rows = best_rows;
        kv->rows[dst] = best_rows;
        done += best_rows;
    }
    s->n_tokens = done;
    kv->hit_tokens += (uint64_t)done;
    return done;
}

int kv_seq_reserve(struct kv *kv, struct kv_seq *s, int32_t n_total)
{
    const int32_t bs = kv->p.block_size;
    int32_t need = (n_total + bs - 1) / bs;
    if (need > s->cap)
        return -ENOSPC;
    if (need - s->n_alloc > kv->n_free + kv->n_cached)
        return -ENOSPC;
    while (s->n_alloc < need) {
        int32_t b = take_block(kv);
        ASSERT(b >= 0);
        s->blocks[s->n_alloc++] = b;
    }
    return 0;
}

void kv_seq_commit(struct kv *kv, struct kv_seq *s, const int32_t *tokens, int32_t n)
{
    const int32_t bs = kv->p.block_size;
    ASSERT(s->n_tokens + n <= s->n_alloc * bs);
    for (int32_t i = 0; i < n; i++) {
        int32_t p = s->n_tokens + i;
        s->tokens[p] = tokens[i];
        int32_t blk = p / bs, b = s->blocks[blk];
        kv->tokens[(size_t)b * bs + p % bs] = tokens[i];
        kv->rows[b] = p % bs + 1;
        if (p % bs == bs - 1 && kv->p.prefix_cache && !kv->in_full[b] && kv->ref[b] == 1) {
            uint64_t parent = seq_parent_hash(kv, s, blk);
            uint64_t hh = chain_hash(parent, s->tokens + (size_t)blk * bs, bs);
            /* Index it unless an identical block is already there. */
            int32_t o = kv->full_head[bucket(kv, hh)];
            while (o >= 0 && kv->hash[o] != hh)
                o = kv->full_next[o];
            if (o < 0) {
                kv->hash[b] = hh;
                kv->parent[b] = parent;
                index_add(kv, kv->full_head, kv->full_next, hh, b);
                kv->in_full[b] = 1;
                index_add(kv, kv->child_head, kv->child_next, parent, b);
                kv->in_child[b] = 1;
            }
        }
    }
    s->n_tokens += n;
}

int32_t kv_available(const struct kv *kv) { return kv->n_free + kv->n_cached; }

void kv_get_stats(const struct kv *kv, struct kv_stats *st)
{
    st->n_blocks = kv->p.n_blocks;
    st->free = kv->n_free;
    st->cached = kv->n_cached;
    st->used = kv->p.n_blocks - kv->n_free - kv->n_cached;
    st->hit_tokens = kv->hit_tokens;
    st->evictions = kv->evictions;
}
