/* SPDX-License-Identifier: MIT */
/*
 * path.h - the routing-path predictor: online statistics of which experts
 * tokens use, merged with pre-gating into one ranked list per future layer.
 *
 * Learned online from the router's actual choices (pred_path_update after
 * each token):
 *   (a) transitions T_L[i][j]: tokens that used expert i at layer L and
 *       expert j at layer L+1 (every pair of the two top-k sets counts once);
 *   (b) recency: per sequence, the experts it used at each layer in its last
 *       `recent` tokens (a ring per sequence; at most max_seqs sequences,
 *       the least recently updated one is evicted);
 *   (c) popularity: per layer expert counts, optionally decayed.
 *
 * Prediction for a token at layer L (experts S_L known), for d = 1..D:
 *   path score   s_d(j) = w_trans * P_d(j) + w_recent * R(j) + w_pop * Q(j)
 *     P_1(j) = sum over i in S_L of P(j | i) at L (rows of T_L normalised
 *              with add-one smoothing), P_d = P_{d-1} chained through the
 *              normalised T of layer L+d-1; P_d sums to |S_L|;
 *     R(j)   = share of the sequence's last `recent` tokens that used j at
 *              layer L+d, times k (sums to at most k);
 *     Q(j)   = popularity of j at layer L+d over the layer's total, times k.
 *   pregate score g_d(j) = (m - rank) / (m (m + 1) / 2) * k for a list entry
 *              at rank 0..m-1 (best first), 0 otherwise (sums to k).
 *   combined      c_d(j) = a_d * g_d(j) + (1 - a_d) * s_d(j),
 *              a_d = w_pregate * pregate_decay^(d-1); a list that is all -1
 *              (not recorded) gives a_d = 0, i.e. the path score alone.
 * Modes: PRED_MODE_PREGATE ranks by g_d only, PRED_MODE_PATH by s_d only,
 * PRED_MODE_COMBINED by c_d. Ranking is by score, descending, ties broken by
 * the lower expert id, so results are deterministic; only ids with a
 * positive score are listed. Layers past the last layer, and layers never
 * seen with experts in an update (non-MoE layers; every layer of a fresh
 * predictor), yield -1 entries in path mode.
 *
 * Memory: T is n_layer x n_expert x n_expert u32, plus max_seqs x recent x
 * n_layer x k ids; all allocated at init. predict and update never allocate.
 * Threading: one thread at a time per struct pred_path.
 */
#ifndef MOED_PREDICTOR_PATH_H
#define MOED_PREDICTOR_PATH_H

#include <stdint.h>

enum pred_mode {
    PRED_MODE_PREGATE = 0,
    PRED_MODE_PATH,
    PRED_MODE_COMBINED,
};

struct pred_path_params {
    uint32_t n_layer, n_expert;
    uint32_t k;           /* experts per token (the router's top-k) */
    uint32_t lookahead;   /* D: most layers ahead a prediction reaches */
    uint32_t recent;      /* tokens per sequence in the recency ring (default 4) */
    uint32_t max_seqs;    /* sequences tracked at once (default 256) */
    float pop_decay;      /* per token, in (0, 1]; 1 = plain counts (default 0.999) */
    float w_trans, w_recent, w_pop; /* path score weights (defaults 1, 0.5, 0.1) */
    float w_pregate;      /* a_1, the pregate share at d = 1 (default 0.5) */
    float pregate_decay;  /* a_d = w_pregate * pregate_decay^(d-1) (default 0.8) */
};

/* Defaults as documented above; the shape fields are 0 and must be set. */
struct pred_path_params pred_path_params_default(void);

struct pred_path;

/* Returns 0, ERR_INVALID for a bad shape or weight, or -ENOMEM; *out is NULL
 * on failure. p is copied. */
int pred_path_init(struct pred_path **out, const struct pred_path_params *p);
/* NULL does nothing. */
void pred_path_free(struct pred_path *pp);

/*
 * Predicts, for the token of sequence seq at layer `layer`, the experts of
 * layers layer+1 .. layer+n_d (n_d <= lookahead). cur: the token's k experts
 * at `layer` (-1 entries ignored). pregate: NULL, or n_d lists of m ids, list
 * d-1 for layer+d, best first, -1 padded. Writes n_d x k_pred ids to out
 * (row d-1 for layer+d, best first; -1 where nothing is predicted).
 * Returns 0, or ERR_INVALID for a bad argument (k_pred > n_expert, layer out
 * of range, n_d > lookahead). Does not allocate.
 */
int pred_path_predict(struct pred_path *pp, enum pred_mode mode, uint32_t seq, uint32_t layer,
                      const int32_t *cur, const int32_t *pregate, uint32_t m, uint32_t n_d,
                      uint32_t k_pred, int32_t *out);

/* Learns from one token of sequence seq: ids holds its n_layer x k chosen
 * experts (-1 for non-MoE layers). Call after the token's forward pass. */
void pred_path_update(struct pred_path *pp, uint32_t seq, const int32_t *ids);

/* T_L[i][j] as counted so far (for tests and tools). */
uint32_t pred_path_transition(const struct pred_path *pp, uint32_t layer, uint32_t i, uint32_t j);

/* Drops a finished sequence's recency ring (optional; old sequences are also
 * evicted when the table is full). */
void pred_path_seq_end(struct pred_path *pp, uint32_t seq);

#endif
