/* SPDX-License-Identifier: MIT */
/*
 * path.c - the routing-path predictor (scoring documented in path.h).
 *
 * Invariant: every table and scratch vector is sized at init from the
 * params; predict and update only read and write them. Popularity decay is
 * applied lazily: instead of multiplying every count by the decay per token,
 * the increment grows by 1/decay and everything is rescaled when it gets
 * large, which keeps update O(n_layer x k) instead of O(n_layer x n_expert).
 */
#include "predictor/path.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct seq_slot {
    uint32_t seq;
    bool live;
    uint32_t n;      /* tokens in the ring (<= recent) */
    uint32_t head;   /* next ring position to write */
    uint64_t tick;   /* last update, for eviction */
};

struct pred_path {
    struct pred_path_params p;
    uint32_t *trans;     /* n_layer x E x E: T_L[i][j] */
    uint64_t *row_sum;   /* n_layer x E */
    double *pop;         /* n_layer x E, scaled by the lazy decay */
    double *pop_total;   /* n_layer */
    double pop_inc;
    bool *moe;           /* n_layer: a layer seen with experts */
    struct seq_slot *seqs;   /* max_seqs */
    int32_t *ring;       /* max_seqs x recent x n_layer x k */
    uint64_t tick;
    uint32_t last_slot;  /* lookup shortcut */
    double *chain, *next, *score; /* E each: scratch */
};

struct pred_path_params pred_path_params_default(void)
{
    struct pred_path_params p = {
        .recent = 4, .max_seqs = 256, .pop_decay = 0.999f,
        .w_trans = 1.0f, .w_recent = 0.5f, .w_pop = 0.1f,
        .w_pregate = 0.5f, .pregate_decay = 0.8f,
    };
    return p;
}

int pred_path_init(struct pred_path **out, const struct pred_path_params *p)
{
    *out = NULL;
    if (p->n_layer == 0 || p->n_expert == 0 || p->k == 0 || p->k > p->n_expert ||
        p->lookahead >= p->n_layer || p->recent == 0 || p->max_seqs == 0 ||
        !(p->pop_decay > 0 && p->pop_decay <= 1) || p->w_trans < 0 || p->w_recent < 0 ||
        p->w_pop < 0 || !(p->w_pregate >= 0 && p->w_pregate <= 1) ||
        !(p->pregate_decay >= 0 && p->pregate_decay <= 1))
        return ERR_INVALID;
    struct pred_path *pp = calloc(1, sizeof *pp);
    if (!pp)
        return -ENOMEM;
    const size_t L = p->n_layer, E = p->n_expert;
    pp->p = *p;
    pp->trans = calloc(L * E * E, sizeof *pp->trans);
    pp->row_sum = calloc(L * E, sizeof *pp->row_sum);
    pp->pop = calloc(L * E, sizeof *pp->pop);
    pp->pop_total = calloc(L, sizeof *pp->pop_total);
    pp->moe = calloc(L, sizeof *pp->moe);
    pp->seqs = calloc(p->max_seqs, sizeof *pp->seqs);
    pp->ring = calloc((size_t)p->max_seqs * p->recent * L * p->k, sizeof *pp->ring);
    pp->chain = calloc(E, sizeof(double));
    pp->next = calloc(E, sizeof(double));
    pp->score = calloc(E, sizeof(double));
    if (!pp->trans || !pp->row_sum || !pp->pop || !pp->pop_total || !pp->moe || !pp->seqs ||
        !pp->ring || !pp->chain || !pp->next || !pp->score) {
        pred_path_free(pp);
        return -ENOMEM;
    }
    pp->pop_inc = 1.0;
    *out = pp;
    return 0;
}

void pred_path_free(struct pred_path *pp)
{
    if (!pp)
        return;
    free(pp->trans);
    free(pp->row_sum);
    free(pp->pop);
    free(pp->pop_total);
    free(pp->moe);
    free(pp->seqs);
    free(pp->ring);
    free(pp->chain);
    free(pp->next);
    free(pp->score);
    free(pp);
}

uint32_t pred_path_transition(const struct pred_path *pp, uint32_t layer, uint32_t i, uint32_t j)
{
    const size_t E = pp->p.n_expert;
    if (layer >= pp->p.n_layer || i >= E || j >= E)
        return 0;
    return pp->trans[((size_t)layer * E + i) * E + j];
}

/* ---- sequences ---- */

/* Slot index of seq, or -1. O(max_seqs), with a shortcut for repeats. */
static int32_t seq_find(struct pred_path *pp, uint32_t seq)
{
    struct seq_slot *s = &pp->seqs[pp->last_slot];
    if (s->live && s->seq == seq)
        return (int32_t)pp->last_slot;
    for (uint32_t i = 0; i < pp->p.max_seqs; i++)
        if (pp->seqs[i].live && pp->seqs[i].seq == seq) {
            pp->last_slot = i;
            return (int32_t)i;
        }
    return -1;
}

/* Finds or creates the slot of seq, evicting the least recently updated. */
static uint32_t seq_get(struct pred_path *pp, uint32_t seq)
{
    int32_t f = seq_find(pp, seq);
    if (f >= 0)
        return (uint32_t)f;
    uint32_t best = 0;
    for (uint32_t i = 0; i < pp->p.max_seqs; i++) {
        if (!pp->seqs[i].live) {
            best = i;
            break;
        }
        if (pp->seqs[i].tick < pp->seqs[best].tick)
            best = i;
    }
    pp->seqs[best] = (struct seq_slot){.seq = seq, .live = true};
    pp->last_slot = best;
    return best;
}

void pred_path_seq_end(struct pred_path *pp, uint32_t seq)
{
    int32_t f = seq_find(pp, seq);
    if (f >= 0)
        pp->seqs[f].live = false;
}

static int32_t *ring_at(struct pred_path *pp, uint32_t slot, uint32_t r)
{
    const struct pred_path_params *p = &pp->p;
    return pp->ring + (((size_t)slot * p->recent + r) * p->n_layer) * p->k;
}

/* ---- update ---- */

void pred_path_update(struct pred_path *pp, uint32_t seq, const int32_t *ids)
{
    const struct pred_path_params *p = &pp->p;
    const uint32_t K = p->k, E = p->n_expert;
    for (uint32_t l = 0; l < p->n_layer; l++) {
        const int32_t *a = ids + (size_t)l * K;
        for (uint32_t x = 0; x < K; x++) {
            if (a[x] < 0 || a[x] >= (int32_t)E)
                continue;
            pp->moe[l] = true;
            pp->pop[(size_t)l * E + a[x]] += pp->pop_inc;
            pp->pop_total[l] += pp->pop_inc;
            if (l + 1 >= p->n_layer)
                continue;
            const int32_t *b = a + K;
            for (uint32_t y = 0; y < K; y++) {
                if (b[y] < 0 || b[y] >= (int32_t)E)
                    continue;
                pp->trans[((size_t)l * E + a[x]) * E + b[y]]++;
                pp->row_sum[(size_t)l * E + a[x]]++;
            }
        }
    }
    if (p->pop_decay < 1) {
        pp->pop_inc /= p->pop_decay;
        if (pp->pop_inc > 1e100) {
            double s = 1.0 / pp->pop_inc;
            for (size_t i = 0; i < (size_t)p->n_layer * E; i++)
                pp->pop[i] *= s;
            for (uint32_t l = 0; l < p->n_layer; l++)
                pp->pop_total[l] *= s;
            pp->pop_inc = 1.0;
        }
    }
    uint32_t slot = seq_get(pp, seq);
    struct seq_slot *s = &pp->seqs[slot];
    memcpy(ring_at(pp, slot, s->head), ids, (size_t)p->n_layer * K * sizeof *ids);
    s->head = (s->head + 1) % p->recent;
    if (s->n < p->recent)
        s->n++;
    s->tick = ++pp->tick;
}

/* ---- predict ---- */

/* next = chain pushed through layer a's row-normalised transitions, with
 * add-one smoothing spread evenly over the experts. Hot: O(E^2). */
static void chain_step(struct pred_path *pp, uint32_t a)
{
    const uint32_t E = pp->p.n_expert;
    memset(pp->next, 0, E * sizeof(double));
    for (uint32_t i = 0; i < E; i++) {
        double x = pp->chain[i];
        if (x == 0)
            continue;
        const uint32_t *row = pp->trans + ((size_t)a * E + i) * E;
        double inv = x / ((double)pp->row_sum[(size_t)a * E + i] + 1.0), u = 1.0 / E;
        for (uint32_t j = 0; j < E; j++)
            pp->next[j] += ((double)row[j] + u) * inv;
    }
    double *t = pp->chain;
    pp->chain = pp->next;
    pp->next = t;
}

/* Writes the k_pred best ids with a positive score (ties: lower id). */
static void take_best(const double *score, uint32_t E, uint32_t k_pred, int32_t *out)
{
    for (uint32_t r = 0; r < k_pred; r++) {
        int32_t best = -1;
        for (uint32_t j = 0; j < E; j++) {
            if (!(score[j] > 0))
                continue;
            bool taken = false;
            for (uint32_t q = 0; q < r; q++)
                taken |= out[q] == (int32_t)j;
            if (!taken && (best < 0 || score[j] > score[best]))
                best = (int32_t)j;
        }
        out[r] = best;
    }
}

int pred_path_predict(struct pred_path *pp, enum pred_mode mode, uint32_t seq, uint32_t layer,
                      const int32_t *cur, const int32_t *pregate, uint32_t m, uint32_t n_d,
                      uint32_t k_pred, int32_t *out)
{
    const struct pred_path_params *p = &pp->p;
    const uint32_t E = p->n_expert, K = p->k;
    if (layer >= p->n_layer || n_d > p->lookahead || k_pred > E || (pregate && m > E))
        return ERR_INVALID;
    for (size_t i = 0; i < (size_t)n_d * k_pred; i++)
        out[i] = -1;
    bool use_path = mode != PRED_MODE_PREGATE, use_pg = mode != PRED_MODE_PATH;
    int32_t slot = use_path ? seq_find(pp, seq) : -1;
    if (use_path) {
        memset(pp->chain, 0, E * sizeof(double));
        for (uint32_t x = 0; x < K; x++)
            if (cur[x] >= 0 && cur[x] < (int32_t)E)
                pp->chain[cur[x]] += 1.0;
    }
    for (uint32_t d = 1; d <= n_d; d++) {
        uint32_t t = layer + d;
        if (t >= p->n_layer)
            break;
        if (use_path)
            chain_step(pp, t - 1);
        if (!pp->moe[t] && !(use_pg && pregate))
            continue;
        double *sc = pp->score;
        memset(sc, 0, E * sizeof(double));
        /* Pregate share a_d: 1 in pregate mode, 0 in path mode or without a list. */
        const int32_t *list = pregate ? pregate + (size_t)(d - 1) * m : NULL;
        bool have_list = false;
        for (uint32_t r = 0; list && r < m; r++)
            have_list |= list[r] >= 0 && list[r] < (int32_t)E;
        double a = 0;
        if (mode == PRED_MODE_PREGATE)
            a = 1;
        else if (mode == PRED_MODE_COMBINED && have_list)
            a = p->w_pregate * pow(p->pregate_decay, (double)(d - 1));
        if (a > 0 && have_list) {
            double norm = (double)K / ((double)m * (m + 1) / 2.0);
            for (uint32_t r = 0; r < m; r++)
                if (list[r] >= 0 && list[r] < (int32_t)E && sc[list[r]] == 0)
                    sc[list[r]] = a * (double)(m - r) * norm;
        }
        if (a < 1 && pp->moe[t]) {
            double b = 1 - a;
            double rw = 0;
            uint32_t n_recent = slot >= 0 ? pp->seqs[slot].n : 0;
            if (n_recent)
                rw = b * p->w_recent / (double)n_recent;
            double qw = pp->pop_total[t] > 0 ? b * p->w_pop * K / pp->pop_total[t] : 0;
            for (uint32_t j = 0; j < E; j++)
                sc[j] += b * p->w_trans * pp->chain[j] + qw * pp->pop[(size_t)t * E + j];
            for (uint32_t r = 0; r < n_recent; r++) {
                const int32_t *ids = ring_at(pp, (uint32_t)slot, r) + (size_t)t * K;
                for (uint32_t x = 0; x < K; x++)
                    if (ids[x] >= 0 && ids[x] < (int32_t)E)
                        sc[ids[x]] += rw;
            }
        }
        take_best(sc, E, k_pred, out + (size_t)(d - 1) * k_pred);
    }
    return 0;
}
