/* SPDX-License-Identifier: MIT */
/*
 * forward.h - the forward pass: one batch of tokens (from one or several
 * sequences, at any positions) through every layer, producing logits for
 * the requested rows. Written once for every architecture; the differences
 * are read from the model's struct arch_desc.
 *
 * The KV cache is a pool of blocks per layer owned by struct fwd; which
 * blocks a sequence uses is decided by the caller (engine/kv.c) and passed
 * in each batch as block tables and slots.
 *
 * Threading: a struct fwd is used by one thread at a time (the engine thread).
 */
#ifndef MOED_ENGINE_FORWARD_H
#define MOED_ENGINE_FORWARD_H

#include <stdint.h>

#include "engine/model.h"
#include "kernels/backend.h"
#include "predictor/path.h"

struct pred_score;
struct trace_writer;

struct fwd_params {
    int32_t n_tok_max;    /* most tokens in one batch */
    int32_t n_ctx;        /* most positions of one sequence */
    int32_t kv_blocks;    /* blocks in the KV pool */
    int32_t kv_block_size;/* tokens per block */
    enum be_type kv_type; /* F32, F16 or Q8_0 */
    uint32_t mutate;      /* FWD_MUTATE_* bits: deliberate bugs for negative-control tests, 0 normally */
    /* Expert store (borrowed): when set, experts are acquired from it per
     * layer instead of read from the model (which then holds none), the
     * resident ones computed while the others load; NULL = all resident. */
    struct xstore *xs;
    /* Expert prediction (predictor/). At layer L, after its attention, the
     * routers of layers L+1 .. L+lookahead are applied to the hidden state
     * (each after its own FFN norm: pre-gating); with pred set, its mode
     * merges that with the path statistics into k_pred experts per future
     * layer and token, the batch's votes are prefetched into xs (priority =
     * distance, at most prefetch_bytes per layer; protected until their
     * layer has run) and scored against the router's choices in score. */
    struct pred_path *pred;       /* borrowed; NULL = no prediction */
    enum pred_mode pred_mode;
    struct pred_score *score;     /* borrowed, may be NULL */
    uint32_t lookahead;           /* distances predicted (pre-gated) */
    uint32_t k_pred;              /* k': experts predicted per future layer (0 = the router's k) */
    uint32_t pregate_m;           /* ids kept per pre-gating list (>= k_pred; 0 = 2k) */
    size_t prefetch_bytes;        /* prefetch budget per layer and step (0 = unlimited) */
    uint32_t prefetch_depth;      /* distances prefetched (<= lookahead; further ones are only scored) */
    bool pregate;                 /* compute pre-gating (implied by pred in pregate/combined mode) */
    bool pregate_input;           /* pre-gate on layer L's input instead of after its attention */
    struct trace_writer *trace;   /* borrowed: each token's routing and pre-gating */
    /* Keep the dense matrices (attention, output, dense and shared FFN) a
     * second time in the backend's batch layout (be_ops.prepack), which the
     * CPU backend reads at every token count; prepacked_bytes in the stats
     * says what it took. */
    bool prepack;
};

/* Deliberate errors that the reference tests must detect (negative controls). */
enum fwd_mutate {
    FWD_MUTATE_ROPE_STYLE = 1,       /* use the other RoPE pairing */
    FWD_MUTATE_QK_NORM_AFTER_ROPE = 2, /* apply the q/k norm after RoPE instead of before */
    FWD_MUTATE_TOPK_RENORM = 4,      /* flip whether top-k weights are renormalized */
};

struct fwd_batch {
    int32_t n_tok;
    const int32_t *tok;               /* token ids */
    const int32_t *pos;               /* positions */
    const int32_t *const *block_tab;  /* per token: its sequence's block table */
    int32_t n_out;                    /* rows whose logits are wanted */
    const int32_t *out_idx;           /* indexes into the batch, n_out of them */
    const uint32_t *seq;              /* per token: its sequence's id (NULL: all 0); prediction, traces */
    uint32_t step;                    /* the caller's step number (traces) */
};

/* Counters of the last fwd_decode (and running totals). */
struct fwd_stats {
    uint64_t steps;
    uint64_t tokens;
    uint64_t expert_weight_reads;     /* expert matrices applied (once per expert per layer per step) */
    uint64_t expert_token_rows;       /* token rows computed by experts */
    uint32_t last_distinct_experts;   /* distinct experts in the last step, all layers */
    uint64_t expert_waves;            /* expert store: computations of a layer's experts (>= MoE layers x steps) */
    double pregate_seconds;           /* time spent pre-gating */
    double predict_seconds;           /* time spent merging predictions and prefetching */
    uint64_t trace_errors;            /* trace records that could not be written */
    uint64_t prepacked_bytes;         /* the dense matrices' batch-layout copies (fwd_params.prepack) */
};

struct fwd;

/* Creates the pass for model m on backend be (both borrowed; they must
 * outlive it). Allocates the KV pool and all scratch memory. */
int fwd_init(struct fwd **out, const struct model *m, struct be *be, const struct fwd_params *p);
void fwd_free(struct fwd *f);

/* Runs a batch; writes n_out rows of n_vocab logits. Returns 0 or < 0.
 * With an expert store, an expert that cannot be loaded fails only the
 * tokens routed to it: fwd_decode still returns 0 and fwd_token_error()
 * names them (their logits are garbage); the others are exact. */
int fwd_decode(struct fwd *f, const struct fwd_batch *b, float *logits);
/* After fwd_decode: 0 when batch token t is fine, else the error of the
 * expert load that failed it, with a message in *msg (valid until the next
 * fwd_decode). */
int fwd_token_error(const struct fwd *f, int32_t t, const char **msg);

const struct fwd_stats *fwd_get_stats(const struct fwd *f);

/* Copies rows [0, n_rows) of KV block src to block dst in every layer (the
 * copy-on-write of a partly reused prefix block). */
void fwd_kv_copy(struct fwd *f, int32_t src, int32_t dst, int32_t n_rows);

/* Optional observer of routing decisions, called per MoE layer per step with
 * the top-k expert ids and weights of every token (n_tok x k). */
typedef void (*fwd_route_cb)(void *ud, uint32_t layer, int32_t n_tok, int32_t k,
                             const int32_t *ids, const float *weights);
void fwd_set_route_cb(struct fwd *f, fwd_route_cb cb, void *ud);

#endif
