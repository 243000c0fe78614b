/* SPDX-License-Identifier: MIT */
/*
 * score.h - accuracy accounting of expert predictions, and the prefetch
 * counters the expert store fills.
 *
 * For every lookahead distance d (1..D) and target layer, a prediction (a
 * set of expert ids) is compared with the set the router chose: true
 * positives, ids predicted, ids chosen. Precision = tp / predicted, recall =
 * tp / actual. Depends on common/ only; no allocation after init.
 * Threading: one thread at a time per struct pred_score.
 */
#ifndef MOED_PREDICTOR_SCORE_H
#define MOED_PREDICTOR_SCORE_H

#include <stdint.h>

struct pred_score;

/* Counters of one (distance, layer) cell, or a sum of cells. precision and
 * recall are 0 when their denominator is 0. */
struct pred_score_total {
    uint64_t tp;        /* predicted ids that were chosen */
    uint64_t n_pred;    /* distinct ids predicted */
    uint64_t n_actual;  /* distinct ids chosen */
    uint64_t n_lists;   /* predictions scored */
    double precision;
    double recall;
};

/* Creates counters for n_layer target layers and distances 1..lookahead.
 * Returns 0, ERR_INVALID or -ENOMEM; *out is NULL on failure. */
int pred_score_init(struct pred_score **out, uint32_t n_layer, uint32_t lookahead);
/* NULL does nothing. */
void pred_score_free(struct pred_score *s);
void pred_score_reset(struct pred_score *s);

/*
 * Scores one prediction made d layers ahead for target layer `layer`: pred
 * (n_pred ids) against actual (n_actual ids). Ids < 0 are ignored, and so
 * are repeats within a list (sets are compared, pairwise: lists are short).
 * d outside 1..lookahead or layer out of range is a bug (ASSERT).
 */
void pred_score_add(struct pred_score *s, uint32_t d, uint32_t layer, const int32_t *pred,
                    uint32_t n_pred, const int32_t *actual, uint32_t n_actual);

/* Totals for distance d (1..lookahead) and one target layer, or every layer
 * when layer < 0. d == 0 sums over every distance. */
struct pred_score_total pred_score_get(const struct pred_score *s, uint32_t d, int32_t layer);

/* Counters of prefetches, filled by the expert store (or the replay
 * simulator). A prefetch is `issued` when it starts a load of an expert that
 * was not resident; it ends as exactly one of `used` (the expert was accessed
 * before it was evicted) or `wasted` (evicted, or still unused at the end,
 * without an access). `late` counts used prefetches whose load had not
 * completed when the access came (the replay simulator has no clock and
 * leaves it 0). */
struct pred_prefetch_stats {
    uint64_t issued;
    uint64_t used;
    uint64_t late;
    uint64_t wasted;
};

#endif
