/* SPDX-License-Identifier: MIT */
/*
 * sched.c - the scheduler: chooses each step's batch.
 *
 * A step runs at most step_seqs sequences (engine.step_seqs; by default all
 * that run). Choosing them has two parts:
 *   1. Fairness first: no runnable sequence is passed over more than
 *      max_skip consecutive steps. A sequence skipped s times has a deadline
 *      of max_skip - s steps; the scheduler takes, earliest deadline first,
 *      the fewest sequences that keep every later deadline meetable (for
 *      every D: at most step_seqs * D of those due within D steps may be
 *      left). The engine admits at most step_seqs * (max_skip + 1)
 *      sequences, so the bound can always be kept (sched__admit_limit).
 *   2. The policy fills the rest: fcfs takes decoding sequences, then
 *      prompts, in admission order; regroup (regroup.c) takes the sequences
 *      whose predicted experts overlap the group most.
 * Admission (engine.c) is in arrival order under fcfs; under regroup a
 * later request may go first when its prompt matches a running sequence,
 * at most admit_bound later requests ahead of any waiting one (regroup.c).
 * Then tokens: one per chosen decoding sequence, and the chosen prompts
 * share what is left of the step's token budget (engine.batch_tokens) in
 * admission order, each at least one token.
 *
 * A sequence gets KV blocks for its tokens before it joins the batch; when
 * the pool is exhausted the most recently admitted other sequence is
 * preempted (its blocks are dropped, it is recomputed later), so older
 * requests always make progress and nothing deadlocks: a single sequence of
 * full context always fits (eng_init sizes the pool so). A chosen sequence
 * that must wait for blocks is passed over this step (the fairness bound
 * assumes the pool holds what is admitted).
 */
#include "engine/impl.h"

#include "common/log.h"
#include "engine/model.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int sched__init(struct sched_batch *b, struct engine *e)
{
    const size_t T = (size_t)e->p.batch_tokens, P = (size_t)e->p.parallel;
    struct sched_state *sc = &e->sc;
    memset(b, 0, sizeof *b);
    b->tok = malloc(T * sizeof *b->tok);
    b->pos = malloc(T * sizeof *b->pos);
    b->out_idx = malloc(P * sizeof *b->out_idx);
    b->tabs = malloc(T * sizeof *b->tabs);
    b->out_req = malloc(P * sizeof *b->out_req);
    b->seq = malloc(P * sizeof *b->seq);
    b->seq_take = malloc(P * sizeof *b->seq_take);
    sc->policy = e->p.sched;
    sc->step_seqs = e->p.step_seqs > 0 && e->p.step_seqs < e->p.parallel ? e->p.step_seqs : e->p.parallel;
    sc->max_skip = e->p.max_skip;
    int64_t lim = (int64_t)sc->step_seqs * ((int64_t)sc->max_skip + 1);
    sc->admit_limit = lim < e->p.parallel ? (int32_t)lim : e->p.parallel;
    sc->st.max_skip = (uint32_t)sc->max_skip;
    /* A waiting request may see at most one running set's worth of later
     * requests admitted ahead of it (regroup admission, regroup.c). */
    sc->admit_bound = sc->admit_limit;
    sc->st.admit_bound = (uint32_t)sc->admit_bound;
    sc->sig_step = -1; /* no step yet: the first admission gets its signature budget */
    sc->n_layer = e->m->hp.n_layer;
    sc->n_expert = e->m->hp.n_expert;
    sc->k = e->m->hp.n_expert_used;
    sc->words = (sc->n_expert + 63) / 64;
    const size_t LW = (size_t)(sc->n_layer ? sc->n_layer : 1) * (sc->words ? sc->words : 1);
    sc->cand = malloc(P * sizeof *sc->cand);
    sc->picked = malloc(P * sizeof *sc->picked);
    sc->uni = malloc(LW * sizeof *sc->uni);
    sc->res = malloc(LW * sizeof *sc->res);
    sc->seen = malloc((sc->words ? sc->words : 1) * sizeof *sc->seen);
    if (sc->policy == ENG_SCHED_REGROUP && sc->n_expert) {
        const size_t E = e->m->hp.n_embd;
        sc->pg_tok = malloc(P * sizeof *sc->pg_tok);
        sc->pg_req = malloc(P * sizeof *sc->pg_req);
        sc->pg_x = malloc(P * E * sizeof(float));
        sc->pg_xn = malloc(P * E * sizeof(float));
        sc->pg_logits = malloc(P * sc->n_expert * sizeof(float));
        sc->pg_bits = malloc(P * LW * sizeof *sc->pg_bits);
        sc->sig_cnt = malloc((size_t)sc->n_layer * sc->n_expert * sizeof *sc->sig_cnt);
        if (!sc->pg_tok || !sc->pg_req || !sc->pg_x || !sc->pg_xn || !sc->pg_logits || !sc->pg_bits ||
            !sc->sig_cnt) {
            sched__free(b, e);
            return -ENOMEM;
        }
    }
    if (!b->tok || !b->pos || !b->out_idx || !b->tabs || !b->out_req || !b->seq || !b->seq_take || !sc->cand ||
        !sc->picked || !sc->uni || !sc->res || !sc->seen) {
        sched__free(b, e);
        return -ENOMEM;
    }
    return 0;
}

void sched__free(struct sched_batch *b, struct engine *e)
{
    free(b->tok);
    free(b->pos);
    free(b->out_idx);
    free(b->tabs);
    free(b->out_req);
    free(b->seq);
    free(b->seq_take);
    memset(b, 0, sizeof *b);
    struct sched_state *sc = &e->sc;
    free(sc->cand);
    free(sc->picked);
    free(sc->uni);
    free(sc->res);
    free(sc->seen);
    free(sc->pg_tok);
    free(sc->pg_req);
    free(sc->pg_x);
    free(sc->pg_xn);
    free(sc->pg_logits);
    free(sc->pg_bits);
    free(sc->sig_cnt);
    sc->pg_bits = NULL;
    sc->sig_cnt = NULL;
    sc->pg_tok = NULL;
    sc->pg_req = NULL;
    sc->pg_x = sc->pg_xn = sc->pg_logits = NULL;
    sc->cand = NULL;
    sc->picked = NULL;
    sc->uni = sc->res = sc->seen = NULL;
}

int32_t sched__admit_limit(const struct engine *e) { return e->sc.admit_limit; }

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

/* ---- choosing the sequences ---- */

static int cand_cmp(const void *a, const void *b)
{
    const struct sched_cand *x = a, *y = b;
    if (x->deadline != y->deadline)
        return x->deadline < y->deadline ? -1 : 1;
    return x->admit < y->admit ? -1 : x->admit > y->admit;
}

/* Marks in picked[] the sequences the fairness bound requires this step
 * (earliest deadline first, the fewest that keep every later deadline
 * meetable) and returns their number. Leaves sc->cand sorted by deadline. */
static int32_t pick_due(struct engine *e, int32_t S)
{
    struct sched_state *sc = &e->sc;
    const int32_t R = e->n_running;
    for (int32_t i = 0; i < R; i++) {
        struct eng_req *r = e->running[i];
        int32_t d = sc->max_skip - r->skipped;
        sc->cand[i] = (struct sched_cand){.i = i, .deadline = d > 0 ? d : 0, .admit = r->admit_order};
    }
    qsort(sc->cand, (size_t)R, sizeof *sc->cand, cand_cmp);
    /* Of the c_D sequences due within D steps, at most S * D may be left. */
    int64_t m = 0;
    for (int32_t j = 0; j < R; j++) {
        if (j + 1 < R && sc->cand[j + 1].deadline == sc->cand[j].deadline)
            continue;
        int64_t need = (int64_t)(j + 1) - (int64_t)S * sc->cand[j].deadline;
        if (need > m)
            m = need;
    }
    if (m > S)
        m = S; /* only when blocks ran short earlier: the bound slips */
    for (int32_t j = 0; j < m; j++)
        sc->picked[sc->cand[j].i] = true;
    return (int32_t)m;
}

/* fcfs: decoding sequences, then prompts, in admission order. */
static int32_t fcfs_pick(struct engine *e, int32_t want)
{
    int32_t n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int32_t i = 0; i < e->n_running && n < want; i++) {
            struct eng_req *r = e->running[i];
            bool decoding = r->n_tok - r->n_done == 1;
            if (!e->sc.picked[i] && decoding == (pass == 0)) {
                e->sc.picked[i] = true;
                n++;
            }
        }
    return n;
}

void sched__build(struct engine *e, struct sched_batch *b)
{
    struct sched_state *sc = &e->sc;
restart:
    b->n_tok = b->n_out = b->n_seq = 0;
    const int32_t R = e->n_running;
    const int32_t S = R < sc->step_seqs ? R : sc->step_seqs;
    memset(sc->picked, 0, (size_t)R * sizeof *sc->picked);
    int32_t n_due = 0;
    if (S == R) {
        for (int32_t i = 0; i < R; i++)
            sc->picked[i] = true;
    } else {
        n_due = pick_due(e, S);
        int32_t n_pick = n_due;
        if (sc->policy == ENG_SCHED_REGROUP)
            n_pick += regroup__pick(e, S - n_pick);
        fcfs_pick(e, S - n_pick); /* fills what regroup left (nothing, normally) */
    }
    /* Tokens: one per chosen decoding sequence, then the chosen prompts
     * share the rest of the budget in admission order, at least one each. */
    int32_t budget = e->p.batch_tokens, n_prompts = 0;
    for (int32_t i = 0; i < R; i++)
        n_prompts += sc->picked[i] && e->running[i]->n_tok - e->running[i]->n_done > 1;
    for (int pass = 0; pass < 2; pass++) {
        for (int32_t i = 0; i < e->n_running && budget > 0; i++) {
            struct eng_req *r = e->running[i];
            int32_t want = r->n_tok - r->n_done;
            if (!sc->picked[i] || want <= 0 || (pass == 0) != (want == 1))
                continue;
            int32_t room = budget - (pass == 1 ? n_prompts - 1 : 0);
            int32_t take = want < room ? want : room;
            if (take < 1)
                take = 1;
            if (pass == 1)
                n_prompts--;
            int rc = reserve(e, r, r->n_done + take);
            if (rc < 0)
                goto restart; /* a sequence was preempted: choose again */
            if (rc == 0)
                continue;     /* waits for blocks held by older sequences */
            add(b, r, take);
            budget -= take;
        }
    }
    if (b->n_tok == 0)
        return;
    /* Skip counts: in the batch resets, passed over counts up. */
    for (int32_t i = 0; i < e->n_running; i++)
        e->running[i]->skipped++;
    for (int32_t i = 0; i < b->n_seq; i++)
        b->seq[i]->skipped = 0;
    for (int32_t i = 0; i < e->n_running; i++) {
        int32_t s = e->running[i]->skipped;
        if (s > 0)
            sc->st.seq_skips++;
        if ((uint32_t)s > sc->st.max_wait_steps)
            sc->st.max_wait_steps = (uint32_t)s;
    }
    sc->st.forced += (uint64_t)n_due;
    sc->st.steps_chosen += S < R;
    if (sc->policy == ENG_SCHED_REGROUP)
        sc->st.steps_regroup++;
    else
        sc->st.steps_fcfs++;
}
