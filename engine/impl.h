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
    int32_t skipped;              /* steps passed over while runnable */
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
    float *logits;                /* parallel x n_vocab */
    uint64_t steps, step_tokens, prompt_tokens, generated_tokens, preemptions, requests_done;
    int32_t last_batch_tokens, last_batch_seqs;
    struct eng_metrics met;       /* snapshot, under mu */
};

double eng__now(void);
void eng__notify(struct eng_req *r);
/* Drops running[i]'s KV blocks and puts it at the front of the queue. */
void eng__preempt(struct engine *e, int32_t i);

/* sched.c */
int sched__init(struct sched_batch *b, const struct engine *e);
void sched__free(struct sched_batch *b);
/* Fills b with this step's work: a token of every decoding sequence, then
 * prompt chunks within the token budget; reserves their KV blocks,
 * preempting the most recently admitted sequences when the pool is full. */
void sched__build(struct engine *e, struct sched_batch *b);

#endif
