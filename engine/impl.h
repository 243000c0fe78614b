/* SPDX-License-Identifier: MIT */
/*
 * impl.h - declarations private to engine/: the engine and request structs
 * shared by engine.c and sched.c. Nothing outside engine/ includes this.
 */
#ifndef MOED_ENGINE_IMPL_H
#define MOED_ENGINE_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "predictor/path.h"
#include "predictor/score.h"
#include "predictor/trace.h"
#include "engine/kv.h"
#include "engine/vocab.h"

enum eng_req_state { RS_WAITING, RS_RUNNING, RS_DONE };

struct eng_req {
    struct engine *e;
    atomic_int refs;              /* the caller's and the engine's */
    atomic_bool cancel;
    struct eng_req *next;         /* inbox link */
    struct eng_req_params rp;     /* owned copies of the caller's arrays */
    size_t max_stop_len;
    eng_notify_fn notify;
    void *ud;
    /* output channel, under mu */
    pthread_mutex_t mu;
    /* held while notify runs; released (set by eng_release) ends notifies */
    pthread_mutex_t notify_mu;
    bool released;
    struct eng_event *ev;
    int32_t head_ev, n_ev, cap_ev;
    /* engine-thread state */
    enum eng_req_state state;
    bool notify_pending;
    struct kv_seq kv;
    int32_t *tokens;              /* prompt then generated, ctx entries */
    int32_t n_tok, n_done, n_prompt, n_gen;
    int32_t cached_tokens;        /* reused at first admission; -1 before */
    uint64_t admit_order;
    int32_t skipped;              /* consecutive steps passed over while runnable */
    /* The experts its next token is expected to use: per model layer, a
     * bitset of sched_state.words words (the top-k ids of its last computed
     * token, engine/regroup.c); NULL until the scheduler first sees it. */
    uint64_t *pred;
    bool pred_known;              /* pred holds a routing (false before its first step) */
    int32_t pred_pos;             /* pred was pre-gated for the token at this position (-1: not) */
    /* regroup: the prompt's signature, the experts its tokens use most at
     * every layer (top-k of pre-gating counts; regroup.c), NULL until
     * computed; and how many later requests were admitted ahead of it. */
    uint64_t *sig;
    int32_t overtaken;
    struct sampler *smp;
    struct vocab_detok detok;
    char *detok_buf;
    size_t detok_cap;
    char *hold;                   /* text held back: may start a stop string */
    size_t hold_len, hold_cap;
    char *think_hold;             /* text held back: may start a think tag */
    size_t think_len, think_cap;
    bool in_think, stopped_by_string;
    size_t ev_text_cap, ev_reason_cap; /* capacities of the event being built */
    double t_submit, t_start, t_first;
};

/* The batch of one step, built by the scheduler. */
struct sched_batch {
    int32_t n_tok, n_out, n_seq;
    int32_t *tok, *pos, *out_idx;
    int32_t **tabs;               /* per token: its sequence's block table */
    struct eng_req **out_req;     /* per output row */
    struct eng_req **seq;         /* sequences in the batch */
    int32_t *seq_take;            /* tokens each contributes */
};

/* Supplies the predicted experts of sequence r at MoE layer `layer`: a bitset
 * of sched_state.words words, or NULL when unknown (treated as overlapping
 * nothing). The default reads r->pred (temporal locality); the predictor may
 * install a better one (engine thread; the result is valid until the next
 * call). */
typedef const uint64_t *(*sched_pred_fn)(void *ud, const struct eng_req *r, uint32_t layer);

/* Scheduler state (sched.c, regroup.c); engine thread only. */
struct sched_state {
    enum eng_sched policy;
    int32_t step_seqs;            /* most sequences per step (resolved: 1..parallel) */
    int32_t max_skip;
    int32_t admit_limit;          /* most admitted sequences: min(parallel, step_seqs * (max_skip + 1)) */
    uint32_t n_layer, n_expert, k, words; /* words: uint64_t per layer bitset */
    sched_pred_fn pred_fn;
    void *pred_ud;
    /* scratch, sized parallel or n_layer x words */
    struct sched_cand *cand;      /* parallel */
    bool *picked;                 /* parallel, by running index */
    uint64_t *uni;                /* n_layer x words: experts of the batch being formed */
    uint64_t *res;                /* n_layer x words: experts resident at the start of the step */
    uint64_t *seen;               /* words: one layer's distinct experts (route observer) */
    /* pre-gating of the sequences' next tokens (regroup.c), parallel rows */
    int32_t *pg_tok;
    struct eng_req **pg_req;
    float *pg_x, *pg_xn, *pg_logits;
    uint64_t *pg_bits;            /* parallel x n_layer x words: pre-gated experts per token */
    float *sig_cnt;               /* n_layer x n_expert: a signature's counts (exact) */
    int32_t admit_bound;          /* most later requests admitted ahead of a waiting one */
    int64_t sig_step;             /* the step sig_left counts for */
    int32_t sig_left;             /* tokens waiting requests' signatures may still pre-gate this step */
    struct eng_sched_stats st;
};

struct engine {
    struct eng_params p;
    struct model *m;
    struct vocab *v;
    struct be *be;
    struct fwd *f;
    struct kv *kv;
    struct xstore *xs;            /* NULL when every expert is resident */
    struct pred_path *pred;       /* NULL: no prediction */
    struct pred_score *score;
    struct trace_writer *trace;
    uint32_t lookahead;           /* prediction distances (predictor or trace) */
    uint64_t *score_snap;         /* lookahead x n_layer x {tp, n_pred, n_actual}, under mu */
    uint32_t *tok_seq;            /* per batch token: its request's admit order (prediction, traces) */
    struct plan plan;
    int32_t ctx;
    pthread_t th;
    pthread_mutex_t mu;           /* inbox, stopping, met */
    pthread_cond_t cv;
    bool stopping;
    struct eng_req *inbox_head, *inbox_tail;
    int32_t n_inbox;
    int32_t n_waiting_pub;        /* n_waiting as last published under mu (for eng_submit) */
    /* engine thread only */
    struct eng_req **running;     /* in admission order */
    int32_t n_running;
    struct eng_req **waiting;     /* FIFO (preempted ones at the front) */
    int32_t n_waiting;
    uint64_t admit_counter;
    struct sched_batch batch;
    struct sched_state sc;
    float *logits;                /* parallel x n_vocab */
    uint64_t steps, step_tokens, prompt_tokens, generated_tokens, preemptions, requests_done;
    int32_t last_batch_tokens, last_batch_seqs;
    struct eng_metrics met;       /* snapshot, under mu */
    bool met_fresh;               /* the step already published met (engine thread) */
};

double eng__now(void);
void eng__notify(struct eng_req *r);
/* Drops running[i]'s KV blocks and puts it at the front of the queue. */
void eng__preempt(struct engine *e, int32_t i);

/* sched.c */
int sched__init(struct sched_batch *b, struct engine *e);
void sched__free(struct sched_batch *b, struct engine *e);
/* Sequences the engine may admit (hold KV) at once. */
int32_t sched__admit_limit(const struct engine *e);
/* Fills b with this step's work: up to step_seqs sequences chosen by the
 * policy (those the max_skip bound requires first), a token of each decoding
 * one and chunks of the prompts within the token budget; reserves their KV
 * blocks, preempting the most recently admitted sequences when the pool is
 * full. Updates every running sequence's skip count. */
void sched__build(struct engine *e, struct sched_batch *b);

/* regroup.c */
struct sched_cand {
    int32_t i;                    /* index in e->running */
    int32_t deadline;             /* steps it may still be passed over */
    uint64_t admit;
};
/* Route observer (fwd_route_cb; ud is the engine): records each batch
 * sequence's last token's experts and the distinct-expert figures. */
void sched__on_route(void *ud, uint32_t layer, int32_t n_tok, int32_t k, const int32_t *ids,
                     const float *weights);
/* Regroup: marks up to `want` more of the running sequences in picked[]
 * (those already marked form the start of the group); returns how many it
 * marked. */
int32_t regroup__pick(struct engine *e, int32_t want);
/* The index in e->waiting of the request to admit next (regroup policy):
 * the one whose prompt shares most experts with a running sequence's,
 * within the admission bound. */
int32_t regroup__admit_pick(struct engine *e);

#endif
