/* SPDX-License-Identifier: MIT */
/*
 * sched.c - the scheduler: chooses each step's batch.
 *
 * Policy (fcfs): decoding sequences first, one token each, in admission
 * order; then chunks of pending prompts (and of preempted sequences being
 * recomputed) in admission order, within the step's token budget
 * (engine.batch_tokens). A sequence gets KV blocks for its tokens before it
 * joins the batch; when the pool is exhausted the most recently admitted
 * other sequence is preempted (its blocks are dropped, it is recomputed
 * later), so older requests always make progress and nothing deadlocks: a
 * single sequence of full context always fits (eng_init sizes the pool so).
 */
#include "engine/impl.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int sched__init(struct sched_batch *b, const struct engine *e)
{
    const size_t T = (size_t)e->p.batch_tokens, P = (size_t)e->p.parallel;
    memset(b, 0, sizeof *b);
    b->tok = malloc(T * sizeof *b->tok);
    b->pos = malloc(T * sizeof *b->pos);
    b->out_idx = malloc(P * sizeof *b->out_idx);
    b->tabs = malloc(T * sizeof *b->tabs);
    b->out_req = malloc(P * sizeof *b->out_req);
    b->seq = malloc(P * sizeof *b->seq);
    b->seq_take = malloc(P * sizeof *b->seq_take);
    if (!b->tok || !b->pos || !b->out_idx || !b->tabs || !b->out_req || !b->seq || !b->seq_take) {
        sched__free(b);
        return -ENOMEM;
    }
    return 0;
}

void sched__free(struct sched_batch *b)
{
    free(b->tok);
    free(b->pos);
    free(b->out_idx);
    free(b->tabs);
    free(b->out_req);
    free(b->seq);
    free(b->seq_take);
    memset(b, 0, sizeof *b);
}

/* Reserves blocks for r up to n_total positions. When the pool is full it
 * preempts the most recently admitted sequence newer than r and returns -1:
 * the caller rebuilds the batch (the victim may already be in it). Returns 1
 * when reserved, 0 when r must wait (no newer sequence to preempt). */
static int reserve(struct engine *e, struct eng_req *r, int32_t n_total)
{
    if (kv_seq_reserve(e->kv, &r->kv, n_total) == 0)
        return 1;
    for (int32_t i = e->n_running - 1; i >= 0; i--) {
        if (e->running[i]->admit_order > r->admit_order) {
            eng__preempt(e, i);
            return -1;
        }
    }
    return 0;
}

static void add(struct sched_batch *b, struct eng_req *r, int32_t take)
{
    for (int32_t k = 0; k < take; k++) {
        int32_t p = r->n_done + k;
        b->tok[b->n_tok] = r->tokens[p];
        b->pos[b->n_tok] = p;
        b->tabs[b->n_tok] = r->kv.blocks;
        b->n_tok++;
    }
    if (r->n_done + take == r->n_tok) { /* its last known token: sample after it */
        b->out_idx[b->n_out] = b->n_tok - 1;
        b->out_req[b->n_out] = r;
        b->n_out++;
    }
    b->seq[b->n_seq] = r;
    b->seq_take[b->n_seq] = take;
    b->n_seq++;
}

void sched__build(struct engine *e, struct sched_batch *b)
{
restart:
    b->n_tok = b->n_out = b->n_seq = 0;
    int32_t budget = e->p.batch_tokens;
    /* Pass 0: decoding sequences, one token each. Pass 1: prompt chunks. */
    for (int pass = 0; pass < 2; pass++) {
        for (int32_t i = 0; i < e->n_running && budget > 0; i++) {
            struct eng_req *r = e->running[i];
            int32_t want = r->n_tok - r->n_done;
            if (want <= 0 || (pass == 0) != (want == 1))
                continue;
            int32_t take = want < budget ? want : budget;
            int rc = reserve(e, r, r->n_done + take);
            if (rc < 0)
                goto restart; /* a sequence was preempted: build again */
            if (rc == 0)
                continue;     /* waits for blocks held by older sequences */
            add(b, r, take);
            budget -= take;
        }
    }
}
