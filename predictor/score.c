/* SPDX-License-Identifier: MIT */
/*
 * score.c - precision/recall counters per (distance, target layer).
 *
 * Invariant: cell (d, layer) lives at index (d - 1) * n_layer + layer of each
 * counter array; lists are short (k' ids), so set intersection is a pairwise
 * scan rather than a bitmap, which keeps the add path free of allocation for
 * any expert count.
 */
#include "predictor/score.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct pred_score {
    uint32_t n_layer, lookahead;
    uint64_t *tp, *n_pred, *n_actual, *n_lists; /* lookahead x n_layer */
};

int pred_score_init(struct pred_score **out, uint32_t n_layer, uint32_t lookahead)
{
    *out = NULL;
    if (n_layer == 0 || lookahead == 0)
        return ERR_INVALID;
    struct pred_score *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    size_t n = (size_t)n_layer * lookahead;
    s->n_layer = n_layer;
    s->lookahead = lookahead;
    s->tp = calloc(n, 8);
    s->n_pred = calloc(n, 8);
    s->n_actual = calloc(n, 8);
    s->n_lists = calloc(n, 8);
    if (!s->tp || !s->n_pred || !s->n_actual || !s->n_lists) {
        pred_score_free(s);
        return -ENOMEM;
    }
    *out = s;
    return 0;
}

void pred_score_free(struct pred_score *s)
{
    if (!s)
        return;
    free(s->tp);
    free(s->n_pred);
    free(s->n_actual);
    free(s->n_lists);
    free(s);
}

void pred_score_reset(struct pred_score *s)
{
    size_t n = (size_t)s->n_layer * s->lookahead * 8;
    memset(s->tp, 0, n);
    memset(s->n_pred, 0, n);
    memset(s->n_actual, 0, n);
    memset(s->n_lists, 0, n);
}

/* True when v appears in a[0..n) before index n (a repeat). */
static bool seen_before(const int32_t *a, uint32_t n, int32_t v)
{
    for (uint32_t i = 0; i < n; i++)
        if (a[i] == v)
            return true;
    return false;
}

void pred_score_add(struct pred_score *s, uint32_t d, uint32_t layer, const int32_t *pred,
                    uint32_t n_pred, const int32_t *actual, uint32_t n_actual)
{
    ASSERT(d >= 1 && d <= s->lookahead && layer < s->n_layer);
    size_t c = (size_t)(d - 1) * s->n_layer + layer;
    uint64_t np = 0, na = 0, tp = 0;
    for (uint32_t i = 0; i < n_pred; i++) {
        if (pred[i] < 0 || seen_before(pred, i, pred[i]))
            continue;
        np++;
        for (uint32_t j = 0; j < n_actual; j++)
            if (actual[j] == pred[i]) {
                tp++;
                break;
            }
    }
    for (uint32_t j = 0; j < n_actual; j++)
        if (actual[j] >= 0 && !seen_before(actual, j, actual[j]))
            na++;
    s->tp[c] += tp;
    s->n_pred[c] += np;
    s->n_actual[c] += na;
    s->n_lists[c]++;
}

struct pred_score_total pred_score_get(const struct pred_score *s, uint32_t d, int32_t layer)
{
    struct pred_score_total t = {0};
    uint32_t d0 = d ? d : 1, d1 = d ? d : s->lookahead;
    for (uint32_t dd = d0; dd <= d1 && dd <= s->lookahead; dd++)
        for (uint32_t l = 0; l < s->n_layer; l++) {
            if (layer >= 0 && (uint32_t)layer != l)
                continue;
            size_t c = (size_t)(dd - 1) * s->n_layer + l;
            t.tp += s->tp[c];
            t.n_pred += s->n_pred[c];
            t.n_actual += s->n_actual[c];
            t.n_lists += s->n_lists[c];
        }
    t.precision = t.n_pred ? (double)t.tp / (double)t.n_pred : 0;
    t.recall = t.n_actual ? (double)t.tp / (double)t.n_actual : 0;
    return t;
}
