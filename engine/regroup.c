/* SPDX-License-Identifier: MIT */
/*
 * regroup.c - the regrouping policy and the routing figures it feeds on.
 *
 * When more sequences are runnable than one step holds, regroup forms the
 * step from those whose predicted experts overlap most, so that a step
 * activates fewer distinct experts (each expert's weights are read once per
 * step however many tokens use it) and, with the expert store, loads fewer.
 * Greedy: the group starts from the sequences the fairness bound requires
 * (sched.c) or else the most-starved one; then it repeatedly adds the
 * sequence whose predicted experts add the least cost to the group's union,
 * an expert already in the union costing nothing, a resident one
 * REGROUP_COST_RESIDENT and one that must be loaded REGROUP_COST_MISS. A
 * sequence with no prediction yet (a prompt before its first chunk) counts
 * as overlapping nothing. Ties go to the longer-waiting, then older one.
 *
 * Predictions: each candidate's next token (the next prompt token, or the
 * one just sampled) pre-gated through every layer's router (refresh_pregate),
 * which overwrites what the route observer records in eng_req.pred (the
 * experts the sequence's last computed token used: the fallback).
 * sched_state.pred_fn lets the predictor (or a test) supply others.
 *
 * Admission: when more requests wait than there are places, regroup admits
 * first the waiting request whose prompt signature (the experts its tokens
 * pre-gate to most often, per layer) shares most experts with a running
 * sequence's. What a request is about decides its experts for many tokens,
 * so requests admitted together keep forming cheap steps: on the planted
 * model the running set holds a few topics with several requests each
 * instead of one request of every topic. Bound: a waiting request sees at
 * most admit_bound (one running set) later requests admitted ahead of it; a
 * preempted request goes back first, as under fcfs.
 *
 * Invariant: everything here runs on the engine thread; the observer runs
 * inside fwd_decode of the batch sched__build formed (e->batch), whose
 * tokens are the batch sequences' tokens in order.
 */
#include "engine/impl.h"

#include "engine/model.h"
#include "kernels/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define REGROUP_COST_RESIDENT 1
#define REGROUP_COST_MISS 4 /* a load from the file costs about four weight reads from memory */

static const uint32_t k_distinct_le[ENG_DISTINCT_BUCKETS - 1] = {1,  2,  4,  8,   12,  16,  24, 32,
                                                                 48, 64, 96, 128, 192, 256, 512};

uint32_t eng_distinct_le(int i)
{
    return i >= 0 && i < ENG_DISTINCT_BUCKETS - 1 ? k_distinct_le[i] : 0;
}

static const uint64_t *pred_default(void *ud, const struct eng_req *r, uint32_t layer)
{
    const struct sched_state *sc = ud;
    return r->pred && r->pred_known ? r->pred + (size_t)layer * sc->words : NULL;
}

/* ---- route observer ---- */

void sched__on_route(void *ud, uint32_t layer, int32_t n_tok, int32_t k, const int32_t *ids,
                     const float *weights)
{
    (void)weights;
    struct engine *e = ud;
    struct sched_state *sc = &e->sc;
    const struct sched_batch *b = &e->batch;
    const uint32_t W = sc->words, N = sc->n_expert;
    if (layer >= sc->n_layer || k <= 0)
        return;
    /* Distinct experts of the layer this step, and uniform routing's. */
    memset(sc->seen, 0, W * sizeof *sc->seen);
    for (int32_t t = 0; t < n_tok * k; t++)
        if (ids[t] >= 0 && (uint32_t)ids[t] < N)
            sc->seen[ids[t] / 64] |= 1ull << (ids[t] % 64);
    uint32_t d = 0;
    for (uint32_t w = 0; w < W; w++)
        d += (uint32_t)__builtin_popcountll(sc->seen[w]);
    int bkt = 0;
    while (bkt < ENG_DISTINCT_BUCKETS - 1 && d > k_distinct_le[bkt])
        bkt++;
    sc->st.distinct_hist[bkt]++;
    sc->st.layer_steps++;
    sc->st.distinct_sum += d;
    double uni = N ? N * (1.0 - pow(1.0 - (double)k / N, n_tok)) : 0;
    sc->st.uniform_sum += uni;
    if (n_tok == b->n_tok && b->n_tok == b->n_seq) {
        sc->st.decode_layer_steps++;
        sc->st.decode_distinct_sum += d;
        sc->st.decode_uniform_sum += uni;
    }
    /* Each batch sequence's prediction: its last token's experts. */
    if (n_tok != b->n_tok)
        return; /* not the scheduler's batch */
    int32_t t_end = 0;
    for (int32_t i = 0; i < b->n_seq; i++) {
        struct eng_req *r = b->seq[i];
        t_end += b->seq_take[i];
        if (!r->pred) {
            r->pred = calloc((size_t)sc->n_layer * W, sizeof *r->pred);
            if (!r->pred)
                continue; /* no prediction: it overlaps nothing */
        }
        uint64_t *p = r->pred + (size_t)layer * W;
        memset(p, 0, W * sizeof *p);
        const int32_t *last = ids + (size_t)(t_end - 1) * k;
        for (int32_t j = 0; j < k; j++)
            if (last[j] >= 0 && (uint32_t)last[j] < N)
                p[last[j] / 64] |= 1ull << (last[j] % 64);
        r->pred_known = true;
    }
}

/* ---- the greedy ---- */

static void union_add(struct sched_state *sc, sched_pred_fn fn, void *ud, const struct eng_req *r)
{
    for (uint32_t l = 0; l < sc->n_layer; l++) {
        const uint64_t *p = fn(ud, r, l);
        if (p)
            for (uint32_t w = 0; w < sc->words; w++)
                sc->uni[(size_t)l * sc->words + w] |= p[w];
    }
}

/* Cost of adding r to the group; -1 when r has no prediction. */
static int64_t add_cost(const struct sched_state *sc, sched_pred_fn fn, void *ud, const struct eng_req *r)
{
    int64_t c = 0;
    bool known = false;
    for (uint32_t l = 0; l < sc->n_layer; l++) {
        const uint64_t *p = fn(ud, r, l);
        if (!p)
            continue;
        known = true;
        const uint64_t *u = sc->uni + (size_t)l * sc->words, *rs = sc->res + (size_t)l * sc->words;
        for (uint32_t w = 0; w < sc->words; w++) {
            uint64_t fresh = p[w] & ~u[w];
            c += REGROUP_COST_RESIDENT * __builtin_popcountll(fresh & rs[w]) +
                 REGROUP_COST_MISS * __builtin_popcountll(fresh & ~rs[w]);
        }
    }
    return known ? c : -1;
}

/* Sets in bitset p the k largest of x[0..n) that exceed `floor` (ties to
 * the lower index): k rounds of argmax, k and n being small. */
static void topk_bits(const float *x, int64_t n, uint32_t k, float floor, uint64_t *p)
{
    for (uint32_t j = 0; j < k; j++) {
        int64_t best = -1;
        for (int64_t i = 0; i < n; i++)
            if (x[i] > floor && !(p[i / 64] >> (i % 64) & 1) && (best < 0 || x[i] > x[best]))
                best = i;
        if (best < 0)
            return;
        p[best / 64] |= 1ull << (best % 64);
    }
}

/* Pre-gating: n tokens (n <= parallel) by their embeddings through every
 * MoE layer's FFN norm and router, top-k per layer, into sc->pg_bits (token
 * t's layer l at (t * n_layer + l) * words; zero at dense layers). The
 * residual stream drifts slowly through the layers, so the embedding already
 * says much of where a token will go (the fact the predictor's pre-gating
 * uses one layer at a time). */
static void pregate_tokens(struct engine *e, const int32_t *tok, int32_t n)
{
    struct sched_state *sc = &e->sc;
    const struct model *m = e->m;
    const int64_t E = m->hp.n_embd, NE = sc->n_expert;
    const struct be_ops *ops = e->be->ops;
    const size_t W = sc->words;
    memset(sc->pg_bits, 0, (size_t)n * sc->n_layer * W * sizeof *sc->pg_bits);
    ops->get_rows(e->be, sc->pg_x, m->tok_embd.data, m->tok_embd.type, E, tok, n);
    for (uint32_t l = 0; l < sc->n_layer; l++) {
        const struct model_layer *L = &m->layers[l];
        if (!L->moe)
            continue;
        ops->rmsnorm(e->be, sc->pg_xn, sc->pg_x, L->ffn_norm.data, E, n, m->hp.eps);
        ops->matmul(e->be, sc->pg_logits, L->gate_inp.data, L->gate_inp.type, E, NE, sc->pg_xn, n);
        for (int32_t t = 0; t < n; t++)
            topk_bits(sc->pg_logits + (size_t)t * NE, NE, sc->k, -INFINITY,
                      sc->pg_bits + ((size_t)t * sc->n_layer + l) * W);
    }
}

/* Each candidate's prediction for the step: its next token (known once the
 * last one was sampled, or the next prompt token) pre-gated. Replaces the
 * last token's experts; computed once per token, for all the stale
 * candidates in one batch. */
static void refresh_pregate(struct engine *e)
{
    struct sched_state *sc = &e->sc;
    const size_t LW = (size_t)sc->n_layer * sc->words;
    int32_t n = 0;
    for (int32_t i = 0; i < e->n_running; i++) {
        struct eng_req *r = e->running[i];
        if (r->n_done >= r->n_tok || (r->pred && r->pred_pos == r->n_done))
            continue;
        if (!r->pred && !(r->pred = calloc(LW, sizeof *r->pred)))
            continue;
        sc->pg_tok[n] = r->tokens[r->n_done];
        sc->pg_req[n++] = r;
    }
    if (n == 0)
        return;
    pregate_tokens(e, sc->pg_tok, n);
    for (int32_t t = 0; t < n; t++) {
        memcpy(sc->pg_req[t]->pred, sc->pg_bits + (size_t)t * LW, LW * sizeof *sc->pg_bits);
        sc->pg_req[t]->pred_pos = sc->pg_req[t]->n_done;
        sc->pg_req[t]->pred_known = true;
    }
}

/* ---- admission ---- */

/* Prompt tokens a signature samples (evenly spread over the prompt). */
#define REGROUP_SIG_TOKENS 32

static int32_t sig_tokens(const struct eng_req *r)
{
    const int32_t np = r->n_prompt > 0 ? r->n_prompt : r->n_tok;
    return np < REGROUP_SIG_TOKENS ? np : REGROUP_SIG_TOKENS;
}

/* r's signature: at every layer, the k experts its sampled prompt tokens
 * pre-gate to most often (ties to the lower id). What a request is about
 * decides its experts for many tokens (topic), so requests with similar
 * signatures keep sharing experts as they decode. -ENOMEM leaves it NULL.
 * Returns the tokens pre-gated (0 when a prediction hook supplied it). */
static int32_t compute_sig(struct engine *e, struct eng_req *r)
{
    struct sched_state *sc = &e->sc;
    const size_t W = sc->words, LW = (size_t)sc->n_layer * W;
    const uint32_t NE = sc->n_expert;
    if (!(r->sig = calloc(LW, sizeof *r->sig)))
        return 0;
    if (sc->pred_fn) { /* a prediction hook knows better (tests install one) */
        for (uint32_t l = 0; l < sc->n_layer; l++) {
            const uint64_t *p = sc->pred_fn(sc->pred_ud, r, l);
            if (p)
                memcpy(r->sig + (size_t)l * W, p, W * sizeof *p);
        }
        return 0;
    }
    const int32_t np = r->n_prompt > 0 ? r->n_prompt : r->n_tok;
    const int32_t m = sig_tokens(r);
    const int32_t P = e->p.parallel;
    memset(sc->sig_cnt, 0, (size_t)sc->n_layer * NE * sizeof *sc->sig_cnt);
    for (int32_t c0 = 0; c0 < m; c0 += P) {
        const int32_t n = m - c0 < P ? m - c0 : P;
        for (int32_t i = 0; i < n; i++)
            sc->pg_tok[i] = r->tokens[(int64_t)(c0 + i) * np / m];
        pregate_tokens(e, sc->pg_tok, n);
        for (int32_t t = 0; t < n; t++)
            for (uint32_t l = 0; l < sc->n_layer; l++) {
                const uint64_t *p = sc->pg_bits + ((size_t)t * sc->n_layer + l) * W;
                for (uint32_t x = 0; x < NE; x++)
                    sc->sig_cnt[(size_t)l * NE + x] += (float)(p[x / 64] >> (x % 64) & 1);
            }
    }
    for (uint32_t l = 0; l < sc->n_layer; l++) /* experts never chosen stay out */
        topk_bits(sc->sig_cnt + (size_t)l * NE, NE, sc->k, 0.0f, r->sig + (size_t)l * W);
    return m;
}

static int64_t sig_overlap(const struct sched_state *sc, const uint64_t *a, const uint64_t *b)
{
    int64_t o = 0;
    for (size_t w = 0; w < (size_t)sc->n_layer * sc->words; w++)
        o += __builtin_popcountll(a[w] & b[w]);
    return o;
}

int32_t regroup__admit_pick(struct engine *e)
{
    struct sched_state *sc = &e->sc;
    /* Arrival order where the bound or a preemption says so, or where there
     * is nothing to group with. A preempted request (started before) goes
     * back first, as under fcfs. */
    struct eng_req *head = e->waiting[0];
    if ((!sc->pg_tok && !sc->pred_fn) || e->n_waiting == 1 || e->n_running == 0 || head->t_start != 0 ||
        head->overtaken >= sc->admit_bound)
        return 0;
    /* The candidates: the oldest waiting requests, two running sets' worth
     * (a signature costs REGROUP_SIG_TOKENS pre-gated tokens, once). */
    int32_t nc = e->n_waiting < 2 * sc->admit_limit ? e->n_waiting : 2 * sc->admit_limit;
    /* New signatures per step: about a step's token budget of pre-gated
     * tokens (the routers alone), so that a burst of arrivals does not
     * stall the running sequences; the others get theirs in later steps. */
    if (sc->sig_step != (int64_t)e->steps) {
        sc->sig_step = (int64_t)e->steps;
        sc->sig_left = e->p.batch_tokens > REGROUP_SIG_TOKENS ? e->p.batch_tokens : REGROUP_SIG_TOKENS;
    }
    int32_t best = 0;
    int64_t best_o = -1;
    for (int32_t j = 0; j < nc; j++) {
        struct eng_req *w = e->waiting[j];
        if (w->t_start != 0)
            break; /* never overtake a preempted request */
        if (!w->sig && sc->sig_left > 0)
            sc->sig_left -= compute_sig(e, w);
        if (!w->sig)
            continue;
        int64_t o = 0;
        for (int32_t i = 0; i < e->n_running; i++) {
            struct eng_req *r = e->running[i];
            if (!r->sig)
                compute_sig(e, r);
            if (r->sig) {
                int64_t x = sig_overlap(sc, w->sig, r->sig);
                o = x > o ? x : o;
            }
        }
        if (o > best_o) { /* ties to the older */
            best_o = o;
            best = j;
        }
    }
    return best;
}

int32_t regroup__pick(struct engine *e, int32_t want)
{
    if (e->sc.pg_tok && !e->sc.pred_fn)
        refresh_pregate(e);
    struct sched_state *sc = &e->sc;
    sched_pred_fn fn = sc->pred_fn ? sc->pred_fn : pred_default;
    void *ud = sc->pred_fn ? sc->pred_ud : sc;
    const size_t LW = (size_t)sc->n_layer * sc->words;
    if (want <= 0 || LW == 0)
        return 0;
    /* Residency at the start of the step (every expert without a store). */
    if (e->xs) {
        memset(sc->res, 0, LW * sizeof *sc->res);
        for (uint32_t l = 0; l < sc->n_layer; l++) {
            if (!e->m->layers[l].moe)
                continue;
            for (uint32_t x = 0; x < sc->n_expert; x++)
                if (xs_resident(e->xs, l, x))
                    sc->res[(size_t)l * sc->words + x / 64] |= 1ull << (x % 64);
        }
    } else {
        memset(sc->res, 0xff, LW * sizeof *sc->res);
    }
    memset(sc->uni, 0, LW * sizeof *sc->uni);
    int32_t n_in = 0;
    for (int32_t i = 0; i < e->n_running; i++)
        if (sc->picked[i]) {
            union_add(sc, fn, ud, e->running[i]);
            n_in++;
        }
    int32_t n = 0;
    if (n_in == 0) {
        /* Start from the most-starved sequence: sc->cand is sorted by
         * deadline (sched.c pick_due), the longest-waiting first. */
        int32_t i = sc->cand[0].i;
        sc->picked[i] = true;
        union_add(sc, fn, ud, e->running[i]);
        if (add_cost(sc, fn, ud, e->running[i]) < 0)
            sc->st.unknown_picks++;
        n++;
    }
    while (n < want) {
        int32_t best = -1;
        int64_t best_cost = 0;
        for (int32_t j = 0; j < e->n_running; j++) {
            /* Walk in deadline order so that ties go to the longer-waiting. */
            int32_t i = sc->cand[j].i;
            if (sc->picked[i])
                continue;
            int64_t c = add_cost(sc, fn, ud, e->running[i]);
            if (c < 0)
                c = INT64_MAX; /* unknown: overlaps nothing */
            if (best < 0 || c < best_cost) {
                best = i;
                best_cost = c;
            }
        }
        if (best < 0)
            break;
        sc->picked[best] = true;
        if (best_cost == INT64_MAX)
            sc->st.unknown_picks++;
        else
            union_add(sc, fn, ud, e->running[best]);
        n++;
    }
    return n;
}
