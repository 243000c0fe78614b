/* SPDX-License-Identifier: MIT */
/*
 * kv.h - the paged KV cache's block manager, with prefix reuse.
 *
 * The KV memory itself (one pool of n_blocks x block_size token rows per
 * layer) belongs to the forward pass (engine/forward.h); this module decides
 * which blocks each sequence uses. Blocks are content-addressed: a full block
 * is identified by the hash of its tokens and of the block before it, so two
 * sequences that share a prefix share its blocks (reference counted). When a
 * sequence ends its full blocks stay cached (LRU) until the pool needs them;
 * a later sequence with the same prefix attaches them instead of recomputing.
 * A prefix that ends inside a cached block is reused by copying that block's
 * first rows into a fresh block (copy-on-write), so a second chat turn
 * recomputes exactly its new tokens.
 *
 * Threading: used by the engine thread only.
 */
#ifndef MOED_ENGINE_KV_H
#define MOED_ENGINE_KV_H

#include <stdbool.h>
#include <stdint.h>

struct kv_params {
    int32_t n_blocks;
    int32_t block_size;
    bool prefix_cache;
};

struct kv_stats {
    int32_t n_blocks;
    int32_t used;       /* referenced by at least one sequence */
    int32_t cached;     /* unreferenced but holding reusable content */
    int32_t free;       /* empty */
    uint64_t hit_tokens;/* prompt tokens reused from the cache, in total */
    uint64_t evictions; /* cached blocks reclaimed */
};

struct kv_seq {
    int32_t *blocks;    /* block table, n_alloc entries */
    int32_t n_alloc;    /* blocks held */
    int32_t cap;        /* capacity of blocks[] (max_tokens / block_size rounded up) */
    int32_t n_tokens;   /* positions whose K/V are written */
    int32_t *tokens;    /* the token at each written position (cap * block_size) */
};

/* A row copy the caller must perform on the KV memory before using the
 * sequence: rows [0, n_rows) of block src into block dst (n_rows 0 = none). */
struct kv_copy {
    int32_t src, dst, n_rows;
};

struct kv;

int kv_init(struct kv **out, const struct kv_params *p);
void kv_free(struct kv *kv);

/* Prepares an empty sequence able to hold max_tokens positions. */
int kv_seq_init(struct kv_seq *s, const struct kv *kv, int32_t max_tokens);
/* Releases the sequence's blocks (full ones stay cached) and frees it. */
void kv_seq_free(struct kv *kv, struct kv_seq *s);

/*
 * For a new sequence: attaches the longest cached prefix of tokens[0..n) of
 * at most n-1 tokens (the last prompt token is always computed, for its
 * logits). Returns the number of tokens reused (s->n_tokens), or < 0
 * (-ENOSPC when no block is free for a copy-on-write; then nothing is
 * attached). *copy says which rows to copy first.
 */
int kv_seq_attach_prefix(struct kv *kv, struct kv_seq *s, const int32_t *tokens, int32_t n,
                         struct kv_copy *copy);

/* Makes sure blocks exist for positions [0, n_total); takes free blocks,
 * then evicts the least recently used cached ones. Returns 0 or -ENOSPC
 * (nothing changed). */
int kv_seq_reserve(struct kv *kv, struct kv_seq *s, int32_t n_total);

/* Records that positions [s->n_tokens, s->n_tokens + n) now hold tokens;
 * blocks that become full are entered into the prefix cache. */
void kv_seq_commit(struct kv *kv, struct kv_seq *s, const int32_t *tokens, int32_t n);

/* Blocks that kv_seq_reserve() could still obtain (free + cached). */
int32_t kv_available(const struct kv *kv);
void kv_get_stats(const struct kv *kv, struct kv_stats *st);

#endif
