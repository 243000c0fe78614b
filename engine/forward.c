/* SPDX-License-Identifier: MIT */
/*
 * forward.c - the forward pass of every supported architecture, written once
 * and parameterized by the model's architecture row (engine/arch.h):
 *
 *   x = embed(tokens)
 *   per layer:  h = x + Wo . attention(rope(qk_norm(Wq.n + bq)), rope(...), Wv.n + bv)
 *                   where n = rmsnorm(x, attn_norm)
 *               x = h + ffn(rmsnorm(h, ffn_norm))
 *   ffn: dense SwiGLU, or MoE: softmax router, top-k (renormalized or not),
 *        each selected expert applied once to all its tokens (grouped), plus
 *        the shared expert with its sigmoid gate where the architecture has one
 *   logits = output . rmsnorm(x, output_norm)
 *
 * Invariant: fwd_decode() allocates nothing; all buffers are sized in
 * fwd_init() for n_tok_max tokens.
 */
#include "engine/forward.h"

#include "cache/store.h"
#include "predictor/score.h"
#include "predictor/trace.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fwd {
    const struct model *m;
    struct be *be;
    struct fwd_params p;
    struct be_kv_layer *kv; /* per layer */
    void *kv_mem;
    struct be_rope rope;
    fwd_route_cb route_cb;
    void *route_ud;
    struct fwd_stats st;

    /* scratch, n_tok_max rows each */
    float *x, *xn, *q, *k, *v, *att, *tmp;
    float *router;          /* n_tok x n_expert */
    int32_t *topk_id;       /* n_tok x k */
    float *topk_w;
    int32_t *ex_cnt;        /* n_expert */
    int32_t *ex_tok;        /* n_expert x n_tok: token indexes per expert */
    float *ex_w;            /* n_expert x n_tok: their weights */
    float *ex_x, *ex_g, *ex_u, *ex_d; /* gathered rows for one expert */
    float *ffn_out;
    float *shexp_gate;      /* n_tok */
    const void **moe_gate, **moe_up, **moe_down; /* n_expert: active experts' slices */
    int32_t *pair_tok;      /* n_tok x k */
    float *pair_w;
    float *out_rows;        /* n_tok x n_embd (rows whose logits are wanted) */
    int32_t *n_kv;          /* n_tok */
    int64_t *slots;         /* n_tok */

    /* expert store path (p.xs) */
    struct xs_handle *xh;   /* n_expert: active experts' handles */
    uint8_t *xstate;        /* n_expert: enum xstep */
    int32_t *act_e, *act_off; /* n_expert (+1): active experts and their first pair */
    int32_t *w_off, *w_tok; /* a wave's offsets (n_expert + 1) and pairs' tokens */
    float *w_w;
    const float **d_ptr;    /* n_tok x k: each pair's output row */
    float *pair_d;          /* n_tok x k x n_embd */
    float *zero_row;        /* n_embd zeros: a failed pair's output */
    uint64_t xs_seen;
    int *tok_err;           /* n_tok: the token's failure (0 = none) */
    char fail_msg[320];
    bool any_fail;

    /* prediction (p.pred / p.pregate / p.trace) */
    uint32_t D, M, KP;      /* lookahead, pre-gating ids kept, k' */
    int32_t *ids_all;       /* n_tok x n_layer x k: the router's choices (-1: not MoE) */
    float *w_all;           /* n_tok x n_layer x k */
    int32_t *pg;            /* n_tok x n_layer x D x M: pre-gating at layer L for L+d */
    int32_t *pred_out;      /* n_tok x n_layer x D x KP: the predictor's lists */
    float *pg_xn, *pg_logits; /* n_tok x n_embd, n_tok x n_expert */
    uint32_t *votes;        /* n_expert */
    int32_t *plist;         /* n_expert */
    const uint32_t *cur_seq;
    uint32_t cur_step;
    bool predicting;        /* this step */
};

enum xstep { X_WANTED, X_PENDING, X_READY, X_DONE, X_FAILED };

static void *zalloc(size_t n, int *fail)
{
    void *p = calloc(1, n ? n : 1);
    if (!p)
        *fail = 1;
    return p;
}

/* The backend's batch-layout copy of a dense matrix (absent ones skipped). */
static int prepack_w(struct fwd *f, const struct model_weight *w)
{
    if (!w->data || w->n_out <= 1)
        return 0;
    int64_t n = f->be->ops->prepack(f->be, w->data, w->type, w->n_in, w->n_out);
    if (n < 0)
        return (int)n;
    f->st.prepacked_bytes += (uint64_t)n;
    return 0;
}

int fwd_init(struct fwd **out, const struct model *m, struct be *be, const struct fwd_params *p)
{
    const struct model_hparams *hp = &m->hp;
    struct fwd *f = calloc(1, sizeof *f);
    int fail = 0;

    *out = NULL;
    if (!f)
        return -ENOMEM;
    f->m = m;
    f->be = be;
    f->p = *p;
    if (p->kv_type != BE_TYPE_F32 && p->kv_type != BE_TYPE_F16 && p->kv_type != BE_TYPE_Q8_0) {
        free(f);
        return ERR_INVALID;
    }
    const int64_t T = p->n_tok_max, E = hp->n_embd;
    const int64_t Q = (int64_t)hp->n_head * hp->head_dim;
    const int64_t KV = (int64_t)hp->n_head_kv * hp->head_dim;
    int64_t ff = hp->n_ff;
    if (hp->n_ff_exp > ff)
        ff = hp->n_ff_exp;
    if (hp->n_ff_shexp > ff)
        ff = hp->n_ff_shexp;
    const int64_t NE = hp->n_expert ? hp->n_expert : 1, K = hp->n_expert_used ? hp->n_expert_used : 1;
    int64_t widest = E > Q ? E : Q;
    if (ff > widest)
        widest = ff;

    f->x = zalloc((size_t)(T * E) * 4, &fail);
    f->xn = zalloc((size_t)(T * E) * 4, &fail);
    f->q = zalloc((size_t)(T * Q) * 4, &fail);
    f->k = zalloc((size_t)(T * KV) * 4, &fail);
    f->v = zalloc((size_t)(T * KV) * 4, &fail);
    f->att = zalloc((size_t)(T * Q) * 4, &fail);
    f->tmp = zalloc((size_t)(T * widest) * 4, &fail);
    f->router = zalloc((size_t)(T * NE) * 4, &fail);
    f->topk_id = zalloc((size_t)(T * K) * 4, &fail);
    f->topk_w = zalloc((size_t)(T * K) * 4, &fail);
    f->ex_cnt = zalloc((size_t)NE * 4, &fail);
    f->ex_tok = zalloc((size_t)(NE * T) * 4, &fail);
    f->ex_w = zalloc((size_t)(NE * T) * 4, &fail);
    f->ex_x = zalloc((size_t)(T * E) * 4, &fail);
    f->ex_g = zalloc((size_t)(T * ff) * 4, &fail);
    f->ex_u = zalloc((size_t)(T * ff) * 4, &fail);
    f->ex_d = zalloc((size_t)(T * E) * 4, &fail);
    f->ffn_out = zalloc((size_t)(T * E) * 4, &fail);
    f->shexp_gate = zalloc((size_t)T * 4, &fail);
    f->out_rows = zalloc((size_t)(T * E) * 4, &fail);
    f->n_kv = zalloc((size_t)T * 4, &fail);
    f->slots = zalloc((size_t)T * 8, &fail);
    f->kv = zalloc(hp->n_layer * sizeof *f->kv, &fail);
    f->moe_gate = zalloc((size_t)NE * sizeof(void *), &fail);
    f->moe_up = zalloc((size_t)NE * sizeof(void *), &fail);
    f->moe_down = zalloc((size_t)NE * sizeof(void *), &fail);
    f->pair_tok = zalloc((size_t)(T * K) * 4, &fail);
    f->pair_w = zalloc((size_t)(T * K) * 4, &fail);
    f->tok_err = zalloc((size_t)T * sizeof(int), &fail);
    f->act_e = zalloc((size_t)NE * 4, &fail);
    f->act_off = zalloc((size_t)(NE + 1) * 4, &fail);
    if (p->xs) {
        if (!be->ops->moe_ffn || !be->ops->moe_combine) {
            fwd_free(f);
            return ERR_INVALID;
        }
        f->xh = zalloc((size_t)NE * sizeof *f->xh, &fail);
        f->xstate = zalloc((size_t)NE, &fail);
        f->w_off = zalloc((size_t)(NE + 1) * 4, &fail);
        f->w_tok = zalloc((size_t)(T * K) * 4, &fail);
        f->w_w = zalloc((size_t)(T * K) * 4, &fail);
        f->d_ptr = zalloc((size_t)(T * K) * sizeof(float *), &fail);
        f->pair_d = zalloc((size_t)(T * K * E) * 4, &fail);
        f->zero_row = zalloc((size_t)E * 4, &fail);
    }
    if (hp->n_expert && (p->pred || p->pregate || p->trace)) {
        const size_t NL = hp->n_layer;
        f->D = p->lookahead;
        f->KP = p->k_pred ? p->k_pred : (uint32_t)K;
        if (f->KP > hp->n_expert)
            f->KP = hp->n_expert;
        f->M = p->pregate_m ? p->pregate_m : 2 * (uint32_t)K;
        if (f->M < f->KP)
            f->M = f->KP;
        if (f->M > hp->n_expert)
            f->M = hp->n_expert;
        f->ids_all = zalloc((size_t)T * NL * (size_t)K * 4, &fail);
        f->w_all = zalloc((size_t)T * NL * (size_t)K * 4, &fail);
        f->pg = zalloc((size_t)T * NL * (f->D ? f->D : 1) * f->M * 4, &fail);
        f->pred_out = zalloc((size_t)T * NL * (f->D ? f->D : 1) * f->KP * 4, &fail);
        f->pg_xn = zalloc((size_t)(T * E) * 4, &fail);
        f->pg_logits = zalloc((size_t)(T * NE) * 4, &fail);
        f->votes = zalloc((size_t)NE * 4, &fail);
        f->plist = zalloc((size_t)NE * 4, &fail);
    }
    if (fail)
        goto oom;

    /* KV pool: per layer, K then V, kv_blocks * block_size rows each. */
    size_t row_bytes = be_row_size(p->kv_type, KV);
    size_t rows = (size_t)p->kv_blocks * (size_t)p->kv_block_size;
    size_t per_layer = rows * row_bytes;
    f->kv_mem = malloc(per_layer * 2 * hp->n_layer + 64);
    if (!f->kv_mem)
        goto oom;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        f->kv[l].type = p->kv_type;
        f->kv[l].block_size = p->kv_block_size;
        f->kv[l].row_bytes = row_bytes;
        f->kv[l].k = (uint8_t *)f->kv_mem + per_layer * 2 * l;
        f->kv[l].v = (uint8_t *)f->kv_mem + per_layer * (2 * l + 1);
    }
    if (be->ops->reserve(be, T, widest, p->n_ctx) < 0)
        goto oom;
    if (hp->n_expert && be->ops->moe_ffn && be->ops->reserve_moe &&
        be->ops->reserve_moe(be, T * K, hp->n_ff_exp, E) < 0)
        goto oom;

    if (p->prepack && be->ops->prepack) {
        if (prepack_w(f, &m->output) < 0)
            goto oom;
        for (uint32_t l = 0; l < hp->n_layer; l++) {
            const struct model_layer *L = &m->layers[l];
            const struct model_weight *lw[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->ffn_gate, &L->ffn_up,
                                               &L->ffn_down, &L->gate_shexp, &L->up_shexp, &L->down_shexp};
            for (size_t i = 0; i < sizeof lw / sizeof *lw; i++)
                if (prepack_w(f, lw[i]) < 0)
                    goto oom;
        }
    }

    f->rope.mode = m->arch->rope == ARCH_ROPE_NORM ? BE_ROPE_NORM : BE_ROPE_NEOX;
    if (p->mutate & FWD_MUTATE_ROPE_STYLE)
        f->rope.mode = f->rope.mode == BE_ROPE_NORM ? BE_ROPE_NEOX : BE_ROPE_NORM;
    f->rope.n_rot = (int32_t)hp->n_rot;
    f->rope.base = hp->rope_base;
    f->rope.freq_scale = hp->rope_freq_scale;
    f->rope.ext_factor = hp->yarn_ext_factor;
    f->rope.attn_factor = hp->yarn_attn_factor;
    f->rope.beta_fast = hp->yarn_beta_fast;
    f->rope.beta_slow = hp->yarn_beta_slow;
    f->rope.n_ctx_orig = (int32_t)hp->n_ctx_orig;
    *out = f;
    return 0;
oom:
    fwd_free(f);
    return -ENOMEM;
}

void fwd_free(struct fwd *f)
{
    if (!f)
        return;
    float *bufs[] = {f->x, f->xn, f->q, f->k, f->v, f->att, f->tmp, f->router, f->topk_w,
                     f->ex_w, f->ex_x, f->ex_g, f->ex_u, f->ex_d, f->ffn_out, f->shexp_gate,
                     f->out_rows};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(f->topk_id);
    free(f->moe_gate);
    free(f->moe_up);
    free(f->moe_down);
    free(f->pair_tok);
    free(f->pair_w);
    free(f->ex_cnt);
    free(f->ex_tok);
    free(f->tok_err);
    free(f->xh);
    free(f->xstate);
    free(f->act_e);
    free(f->act_off);
    free(f->w_off);
    free(f->w_tok);
    free(f->w_w);
    free(f->d_ptr);
    free(f->pair_d);
    free(f->zero_row);
    free(f->ids_all);
    free(f->w_all);
    free(f->pg);
    free(f->pred_out);
    free(f->pg_xn);
    free(f->pg_logits);
    free(f->votes);
    free(f->plist);
    free(f->n_kv);
    free(f->slots);
    free(f->kv);
    free(f->kv_mem);
    free(f);
}

int fwd_token_error(const struct fwd *f, int32_t t, const char **msg)
{
    if (!f->any_fail || t < 0 || t >= f->p.n_tok_max || !f->tok_err[t])
        return 0;
    if (msg)
        *msg = f->fail_msg;
    return f->tok_err[t];
}

const struct fwd_stats *fwd_get_stats(const struct fwd *f) { return &f->st; }

void fwd_kv_copy(struct fwd *f, int32_t src, int32_t dst, int32_t n_rows)
{
    ASSERT(src >= 0 && src < f->p.kv_blocks && dst >= 0 && dst < f->p.kv_blocks);
    ASSERT(n_rows >= 0 && n_rows <= f->p.kv_block_size);
    for (uint32_t l = 0; l < f->m->hp.n_layer; l++) {
        const struct be_kv_layer *kv = &f->kv[l];
        size_t blk = (size_t)kv->block_size * kv->row_bytes, n = (size_t)n_rows * kv->row_bytes;
        memcpy((uint8_t *)kv->k + (size_t)dst * blk, (uint8_t *)kv->k + (size_t)src * blk, n);
        memcpy((uint8_t *)kv->v + (size_t)dst * blk, (uint8_t *)kv->v + (size_t)src * blk, n);
    }
}

void fwd_set_route_cb(struct fwd *f, fwd_route_cb cb, void *ud)
{
    f->route_cb = cb;
    f->route_ud = ud;
}

/* ---- pieces ---- */

static void add_bias(float *y, const struct model_weight *b, int64_t n_tok)
{
    if (!b->t)
        return;
    const float *bv = b->data;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t i = 0; i < b->n_in; i++)
            y[t * b->n_in + i] += bv[i];
}

static void matmul_w(struct fwd *f, float *y, const struct model_weight *w, const float *x, int64_t n_tok)
{
    f->be->ops->matmul(f->be, y, w->data, w->type, w->n_in, w->n_out, x, n_tok);
}

/* Two or three matrices on the same activations: one backend call where it
 * has matmul_n (the same bits as separate matmuls). */
static void matmul_w3(struct fwd *f, float *y0, const struct model_weight *w0, float *y1,
                      const struct model_weight *w1, float *y2, const struct model_weight *w2, const float *x,
                      int64_t n_tok)
{
    const struct be_ops *ops = f->be->ops;
    if (!ops->matmul_n) {
        matmul_w(f, y0, w0, x, n_tok);
        matmul_w(f, y1, w1, x, n_tok);
        if (w2)
            matmul_w(f, y2, w2, x, n_tok);
        return;
    }
    const struct be_mm mm[3] = {{y0, w0->data, w0->type, w0->n_out},
                                {y1, w1->data, w1->type, w1->n_out},
                                {y2, w2 ? w2->data : NULL, w2 ? w2->type : BE_TYPE_F32, w2 ? w2->n_out : 0}};
    ops->matmul_n(f->be, w2 ? 3 : 2, mm, w0->n_in, x, n_tok);
}

static void qk_norm(struct fwd *f, const struct model_layer *L, int64_t n)
{
    const struct model_hparams *hp = &f->m->hp;
    const struct be_ops *ops = f->be->ops;
    const int64_t Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
    if (f->m->arch->qk_norm == ARCH_QK_NORM_HEAD) {
        ops->rmsnorm(f->be, f->q, f->q, L->q_norm.data, hp->head_dim, n * hp->n_head, hp->eps);
        ops->rmsnorm(f->be, f->k, f->k, L->k_norm.data, hp->head_dim, n * hp->n_head_kv, hp->eps);
    } else if (f->m->arch->qk_norm == ARCH_QK_NORM_FULL) {
        ops->rmsnorm(f->be, f->q, f->q, L->q_norm.data, Q, n, hp->eps);
        ops->rmsnorm(f->be, f->k, f->k, L->k_norm.data, KV, n, hp->eps);
    }
}

/* x[i] += d[i] (the residual adds): restrict so that it vectorizes; the
 * loop through f-> pointers reloaded both per value. */
static void add_rows(float *restrict x, const float *restrict d, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] += d[i];
}

static void attention_block(struct fwd *f, uint32_t il, const struct fwd_batch *b)
{
    const struct model *m = f->m;
    const struct model_hparams *hp = &m->hp;
    const struct model_layer *L = &m->layers[il];
    const struct be_ops *ops = f->be->ops;
    const int64_t n = b->n_tok, E = hp->n_embd;
    const int64_t KV = (int64_t)hp->n_head_kv * hp->head_dim;

    ops->rmsnorm(f->be, f->xn, f->x, L->attn_norm.data, E, n, hp->eps);
    matmul_w3(f, f->q, &L->wq, f->k, &L->wk, f->v, &L->wv, f->xn, n);
    add_bias(f->q, &L->bq, n);
    add_bias(f->k, &L->bk, n);
    add_bias(f->v, &L->bv, n);
    const bool late = f->p.mutate & FWD_MUTATE_QK_NORM_AFTER_ROPE;
    if (!late)
        qk_norm(f, L, n);
    ops->rope(f->be, f->q, n, (int32_t)hp->n_head, (int32_t)hp->head_dim, b->pos, &f->rope);
    ops->rope(f->be, f->k, n, (int32_t)hp->n_head_kv, (int32_t)hp->head_dim, b->pos, &f->rope);
    if (late)
        qk_norm(f, L, n);
    ops->kv_store(f->be, &f->kv[il], f->k, f->v, n, KV, f->slots);

    struct be_attn a = {
        .n_head = (int32_t)hp->n_head,
        .n_head_kv = (int32_t)hp->n_head_kv,
        .head_dim = (int32_t)hp->head_dim,
        .scale = 1.0f / sqrtf((float)hp->head_dim),
        .kv = &f->kv[il],
        .block_tab = b->block_tab,
        .n_kv = f->n_kv,
    };
    ops->attention(f->be, f->att, f->q, n, &a);
    matmul_w(f, f->tmp, &L->wo, f->att, n);
    add_rows(f->x, f->tmp, n * E);
}

static void dense_ffn(struct fwd *f, const struct model_weight *gate, const struct model_weight *up,
                      const struct model_weight *down, const float *x, float *out, int64_t n)
{
    const int64_t ff = gate->n_out;
    matmul_w3(f, f->ex_g, gate, f->ex_u, up, NULL, NULL, x, n);
    f->be->ops->swiglu(f->be, f->ex_g, f->ex_g, f->ex_u, n * ff);
    matmul_w(f, out, down, f->ex_g, n);
}

/* Softmax over the router logits, then the top k (ties: lower id first). */
static void route(struct fwd *f, uint32_t il, int64_t n)
{
    const struct model_hparams *hp = &f->m->hp;
    const int64_t NE = hp->n_expert, K = hp->n_expert_used;
    uint64_t taken[(NE + 63) / 64]; /* the experts already chosen (NE <= 4096, model.c) */
    for (int64_t t = 0; t < n; t++) {
        float *r = f->router + t * NE;
        float mx = -INFINITY;
        for (int64_t e = 0; e < NE; e++)
            if (r[e] > mx)
                mx = r[e];
        double sum = 0;
        for (int64_t e = 0; e < NE; e++) {
            r[e] = expf(r[e] - mx);
            sum += r[e];
        }
        for (int64_t e = 0; e < NE; e++)
            r[e] = (float)(r[e] / sum);
        int32_t *ids = f->topk_id + t * K;
        float *w = f->topk_w + t * K;
        memset(taken, 0, sizeof taken);
        for (int64_t j = 0; j < K; j++) {
            int32_t best = -1;
            for (int64_t e = 0; e < NE; e++)
                if (!(taken[e / 64] >> (e % 64) & 1) && (best < 0 || r[e] > r[best]))
                    best = (int32_t)e;
            taken[best / 64] |= 1ull << (best % 64);
            ids[j] = best;
            w[j] = r[best];
        }
        if (f->m->arch->norm_topk != !!(f->p.mutate & FWD_MUTATE_TOPK_RENORM)) {
            double s = 0;
            for (int64_t j = 0; j < K; j++)
                s += w[j];
            for (int64_t j = 0; j < K; j++)
                w[j] = (float)(w[j] / s);
        }
    }
    if (f->route_cb)
        f->route_cb(f->route_ud, il, (int32_t)n, (int32_t)K, f->topk_id, f->topk_w);
}

/* ---- prediction ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define IDS(f, t, l) ((f)->ids_all + (((size_t)(t) * (f)->m->hp.n_layer + (l)) * (f)->m->hp.n_expert_used))
#define PG(f, t, l, d) ((f)->pg + ((((size_t)(t) * (f)->m->hp.n_layer + (l)) * (f)->D + (d)) * (f)->M))
#define PRED(f, t, l, d) ((f)->pred_out + ((((size_t)(t) * (f)->m->hp.n_layer + (l)) * (f)->D + (d)) * (f)->KP))

/* Top m of n scores into ids (best first; ties to the lower id). */
static void top_m(const float *x, int64_t n, uint32_t m, int32_t *ids)
{
    uint32_t c = 0;
    for (int64_t e = 0; e < n; e++) {
        if (c == m && !(x[e] > x[ids[m - 1]]))
            continue;
        uint32_t i = c < m ? c++ : m - 1;
        while (i > 0 && x[e] > x[ids[i - 1]]) {
            ids[i] = ids[i - 1];
            i--;
        }
        ids[i] = (int32_t)e;
    }
    for (; c < m; c++)
        ids[c] = -1;
}

/* At layer il (x: the residual stream after its attention, or its input
 * with pregate_input): the routers of layers il+1 .. il+D on x, each after
 * its own FFN norm. */
static void pregate(struct fwd *f, uint32_t il, int64_t n)
{
    const struct model *m = f->m;
    const int64_t E = m->hp.n_embd, NE = m->hp.n_expert;
    double t0 = now_s();
    for (uint32_t d = 0; d < f->D; d++) {
        uint32_t j = il + 1 + d;
        if (j >= m->hp.n_layer || !m->layers[j].moe) {
            for (int64_t t = 0; t < n; t++)
                for (uint32_t i = 0; i < f->M; i++)
                    PG(f, t, il, d)[i] = -1;
            continue;
        }
        f->be->ops->rmsnorm(f->be, f->pg_xn, f->x, m->layers[j].ffn_norm.data, E, n, m->hp.eps);
        matmul_w(f, f->pg_logits, &m->layers[j].gate_inp, f->pg_xn, n);
        for (int64_t t = 0; t < n; t++)
            top_m(f->pg_logits + t * NE, NE, f->M, PG(f, t, il, d));
    }
    f->st.pregate_seconds += now_s() - t0;
}

/* The predictor's lists for layers il+1 .. il+D, and the batch's votes
 * prefetched into the store (and protected), nearest layer first. */
static void predict_prefetch(struct fwd *f, uint32_t il, int64_t n)
{
    const struct model *m = f->m;
    const uint32_t NL = m->hp.n_layer, NE = m->hp.n_expert;
    double t0 = now_s();
    uint32_t nd = f->D;
    if (il + nd >= NL)
        nd = NL - 1 - il;
    if (nd == 0)
        return;
    for (int64_t t = 0; t < n; t++) {
        const uint32_t seq = f->cur_seq ? f->cur_seq[t] : 0;
        if (pred_path_predict(f->p.pred, f->p.pred_mode, seq, il, IDS(f, t, il), f->p.pregate || f->p.pred_mode != PRED_MODE_PATH ? PG(f, t, il, 0) : NULL,
                              f->M, nd, f->KP, PRED(f, t, il, 0)) < 0)
            for (uint32_t i = 0; i < nd * f->KP; i++)
                PRED(f, t, il, 0)[i] = -1;
    }
    if (f->p.xs) {
        for (uint32_t d = 0; d < nd && d < f->p.prefetch_depth; d++) {
            const uint32_t j = il + 1 + d;
            if (!m->layers[j].moe)
                continue;
            memset(f->votes, 0, NE * sizeof *f->votes);
            for (int64_t t = 0; t < n; t++)
                for (uint32_t i = 0; i < f->KP; i++) {
                    int32_t e = PRED(f, t, il, d)[i];
                    if (e >= 0)
                        f->votes[e] += f->KP - i; /* earlier ranks weigh more */
                }
            uint32_t c = 0;
            for (uint32_t e = 0; e < NE; e++)
                if (f->votes[e])
                    f->plist[c++] = (int32_t)e;
            /* most votes first (insertion sort: c <= n_expert) */
            for (uint32_t a = 1; a < c; a++) {
                int32_t v = f->plist[a];
                uint32_t b = a;
                while (b > 0 && f->votes[f->plist[b - 1]] < f->votes[v]) {
                    f->plist[b] = f->plist[b - 1];
                    b--;
                }
                f->plist[b] = v;
            }
            xs_prefetch(f->p.xs, j, f->plist, (int)c, (int)(1 + d), f->p.prefetch_bytes);
        }
    }
    f->st.predict_seconds += now_s() - t0;
}

/* Scores the lists made d layers before il against il's choices. */
static void score_layer(struct fwd *f, uint32_t il, int64_t n)
{
    const uint32_t K = f->m->hp.n_expert_used;
    for (uint32_t d = 1; d <= f->D && d <= il; d++) {
        if (!f->m->layers[il - d].moe)
            continue;
        for (int64_t t = 0; t < n; t++)
            pred_score_add(f->p.score, d, il, PRED(f, t, il - d, d - 1), f->KP, IDS(f, t, il), K);
    }
}

/* Runs the ready experts of the layer (xstate X_READY) as one wave: their
 * output rows go to pair_d from row *base on; then they are released. */
static void run_wave(struct fwd *f, uint32_t il, int64_t n, int32_t n_act, int32_t *base)
{
    const struct model_layer *L = &f->m->layers[il];
    const int64_t E = f->m->hp.n_embd;
    int32_t a = 0, p = 0;
    for (int32_t i = 0; i < n_act; i++) {
        if (f->xstate[i] != X_READY)
            continue;
        f->moe_gate[a] = f->xh[i].data[0];
        f->moe_up[a] = f->xh[i].data[1];
        f->moe_down[a] = f->xh[i].data[2];
        f->w_off[a] = p;
        for (int32_t q = f->act_off[i]; q < f->act_off[i + 1]; q++, p++) {
            f->w_tok[p] = f->pair_tok[q];
            f->w_w[p] = f->pair_w[q];
            f->d_ptr[q] = f->pair_d + (size_t)(*base + p) * (size_t)E;
        }
        a++;
    }
    f->w_off[a] = p;
    struct be_moe_layer ml = {
        .n_embd = E, .n_ff = f->m->hp.n_ff_exp, .gate_type = L->gate_exps.type, .up_type = L->up_exps.type,
        .down_type = L->down_exps.type, .n_active = a, .gate = f->moe_gate, .up = f->moe_up,
        .down = f->moe_down, .offset = f->w_off, .tok = f->w_tok, .weight = f->w_w,
        .d_out = f->pair_d + (size_t)*base * (size_t)E,
    };
    f->be->ops->moe_ffn(f->be, NULL, f->xn, n, &ml);
    f->st.expert_waves++;
    *base += p;
    for (int32_t i = 0; i < n_act; i++)
        if (f->xstate[i] == X_READY) {
            xs_release(f->p.xs, &f->xh[i]);
            f->xstate[i] = X_DONE;
        }
}

static void fail_expert(struct fwd *f, int32_t i, int rc, const char *msg)
{
    f->xstate[i] = X_FAILED;
    for (int32_t q = f->act_off[i]; q < f->act_off[i + 1]; q++) {
        f->d_ptr[q] = f->zero_row;
        if (!f->tok_err[f->pair_tok[q]])
            f->tok_err[f->pair_tok[q]] = rc;
    }
    if (!f->any_fail)
        snprintf(f->fail_msg, sizeof f->fail_msg, "%s", msg);
    f->any_fail = true;
}

/* The experts of one layer through the expert store: acquire all (loads
 * start for the missing ones), compute those ready in waves while the
 * others arrive, and sum every token's outputs in increasing expert order
 * (the bits of the all-resident path). A layer needing more experts than
 * the cache has slots runs in more waves; an expert that cannot be loaded
 * fails only its tokens. */
static void moe_store(struct fwd *f, uint32_t il, int64_t n, int32_t n_act)
{
    struct xstore *xs = f->p.xs;
    char msg[320];
    int32_t base = 0, left = n_act;
    bool first = true;
    for (int32_t i = 0; i < n_act; i++)
        f->xstate[i] = X_WANTED;
    while (left > 0) {
        bool noslot = false;
        int32_t n_ready = 0, n_pending = 0;
        for (int32_t i = 0; i < n_act; i++) {
            int rc;
            if (f->xstate[i] == X_WANTED && !noslot) {
                rc = xs_acquire(xs, il, (uint32_t)f->act_e[i], &f->xh[i], msg, sizeof msg);
                if (rc == XS_NOSLOT)
                    noslot = true;
                else if (rc < 0) {
                    fail_expert(f, i, rc, msg);
                    left--;
                } else
                    f->xstate[i] = rc == XS_READY ? X_READY : X_PENDING;
            } else if (f->xstate[i] == X_PENDING) {
                rc = xs_check(xs, &f->xh[i], msg, sizeof msg);
                if (rc < 0) {
                    fail_expert(f, i, rc, msg);
                    left--;
                } else if (rc == XS_READY)
                    f->xstate[i] = X_READY;
            }
            n_ready += f->xstate[i] == X_READY;
            n_pending += f->xstate[i] == X_PENDING;
        }
        if (first && f->predicting) {
            /* this layer's loads are queued first: now the next layers' */
            predict_prefetch(f, il, n);
            first = false;
        }
        if (n_ready > 0) {
            run_wave(f, il, n, n_act, &base);
            left -= n_ready;
        } else if (n_pending > 0 || (noslot && xs_in_flight(xs) > 0)) {
            /* (every free slot may be taken by prefetches still loading) */
            xs_wait(xs, &f->xs_seen);
        } else if (left > 0) {
            /* Nothing held, nothing loading, and still no slot: the cache
             * cannot make progress (its slots are pinned by someone else). */
            snprintf(msg, sizeof msg, "expert cache has no free slot for layer %u", il);
            for (int32_t i = 0; i < n_act; i++)
                if (f->xstate[i] == X_WANTED) {
                    fail_expert(f, i, ERR_BUSY, msg);
                    left--;
                }
        }
    }
    const int32_t P = f->act_off[n_act];
    f->be->ops->moe_combine(f->be, f->ffn_out, n, f->m->hp.n_embd, P, f->pair_tok, f->pair_w, f->d_ptr);
    if (f->predicting)
        xs_unprotect_layer(xs, il); /* its predicted experts have been used */
}

static void moe_ffn(struct fwd *f, uint32_t il, int64_t n)
{
    const struct model *m = f->m;
    const struct model_hparams *hp = &m->hp;
    const struct model_layer *L = &m->layers[il];
    const struct be_ops *ops = f->be->ops;
    const int64_t E = hp->n_embd, NE = hp->n_expert, K = hp->n_expert_used, FF = hp->n_ff_exp;

    matmul_w(f, f->router, &L->gate_inp, f->xn, n);
    route(f, il, n);
    if (f->ids_all) {
        for (int64_t t = 0; t < n; t++) {
            memcpy(IDS(f, t, il), f->topk_id + t * K, (size_t)K * 4);
            memcpy(f->w_all + ((size_t)t * hp->n_layer + il) * (size_t)K, f->topk_w + t * K, (size_t)K * 4);
        }
        if (f->p.score && f->predicting)
            score_layer(f, il, n);
        if (f->D && !f->p.pregate_input && (f->p.pregate || (f->p.pred && f->p.pred_mode != PRED_MODE_PATH)))
            pregate(f, il, n);
        if (f->predicting && !f->p.xs)
            predict_prefetch(f, il, n);
    }

    /* Group the batch's tokens by expert. */
    memset(f->ex_cnt, 0, (size_t)NE * sizeof *f->ex_cnt);
    for (int64_t t = 0; t < n; t++) {
        for (int64_t j = 0; j < K; j++) {
            int32_t e = f->topk_id[t * K + j];
            int32_t c = f->ex_cnt[e]++;
            f->ex_tok[e * n + c] = (int32_t)t;
            f->ex_w[e * n + c] = f->topk_w[t * K + j];
        }
    }
    memset(f->ffn_out, 0, (size_t)(n * E) * sizeof(float));
    /* The active experts in increasing id, each with its (token, weight)
     * pairs: act_off[a] .. act_off[a+1]-1 of pair_tok/pair_w. */
    int32_t a = 0, p = 0;
    for (int64_t e = 0; e < NE; e++) {
        const int32_t c = f->ex_cnt[e];
        if (c == 0)
            continue;
        f->act_e[a] = (int32_t)e;
        f->act_off[a] = p;
        for (int32_t i = 0; i < c; i++, p++) {
            f->pair_tok[p] = f->ex_tok[e * n + i];
            f->pair_w[p] = f->ex_w[e * n + i];
        }
        a++;
        f->st.expert_weight_reads++;
        f->st.expert_token_rows += (uint64_t)c;
        f->st.last_distinct_experts++;
    }
    f->act_off[a] = p;
    if (f->p.xs) {
        moe_store(f, il, n, a);
    } else if (ops->moe_ffn) {
        /* The whole layer in one call. */
        struct be_moe_layer ml = {
            .n_embd = E, .n_ff = FF, .gate_type = L->gate_exps.type, .up_type = L->up_exps.type,
            .down_type = L->down_exps.type, .gate = f->moe_gate, .up = f->moe_up, .down = f->moe_down,
            .offset = f->act_off, .tok = f->pair_tok, .weight = f->pair_w,
            .gate_packed = L->gate_exps.packed, .up_packed = L->up_exps.packed, .down_packed = L->down_exps.packed,
        };
        for (int32_t i = 0; i < a; i++) {
            f->moe_gate[i] = model_expert_data(&L->gate_exps, (uint32_t)f->act_e[i]);
            f->moe_up[i] = model_expert_data(&L->up_exps, (uint32_t)f->act_e[i]);
            f->moe_down[i] = model_expert_data(&L->down_exps, (uint32_t)f->act_e[i]);
        }
        ml.n_active = a;
        ops->moe_ffn(f->be, f->ffn_out, f->xn, n, &ml);
    } else {
        /* (expert_pack comes only with moe_ffn: these are as in the file) */
        ASSERT(!L->gate_exps.packed && !L->up_exps.packed && !L->down_exps.packed);
        for (int64_t e = 0; e < NE; e++) {
            const int32_t c = f->ex_cnt[e];
            if (c == 0)
                continue;
            for (int32_t i = 0; i < c; i++)
                memcpy(f->ex_x + (int64_t)i * E, f->xn + (int64_t)f->ex_tok[e * n + i] * E, (size_t)E * 4);
            /* Each selected expert's three matrices are read once for all its tokens. */
            ops->matmul(f->be, f->ex_g, model_expert_data(&L->gate_exps, (uint32_t)e), L->gate_exps.type,
                        E, FF, f->ex_x, c);
            ops->matmul(f->be, f->ex_u, model_expert_data(&L->up_exps, (uint32_t)e), L->up_exps.type,
                        E, FF, f->ex_x, c);
            ops->swiglu(f->be, f->ex_g, f->ex_g, f->ex_u, (int64_t)c * FF);
            ops->matmul(f->be, f->ex_d, model_expert_data(&L->down_exps, (uint32_t)e), L->down_exps.type,
                        FF, E, f->ex_g, c);
            for (int32_t i = 0; i < c; i++)
                ops->axpy(f->be, f->ffn_out + (int64_t)f->ex_tok[e * n + i] * E, f->ex_d + (int64_t)i * E,
                          f->ex_w[e * n + i], E);
        }
    }
    if (L->gate_shexp.t) {
        matmul_w(f, f->shexp_gate, &L->gate_inp_shexp, f->xn, n);
        dense_ffn(f, &L->gate_shexp, &L->up_shexp, &L->down_shexp, f->xn, f->tmp, n);
        for (int64_t t = 0; t < n; t++) {
            float g = 1.0f / (1.0f + expf(-f->shexp_gate[t]));
            ops->axpy(f->be, f->ffn_out + t * E, f->tmp + t * E, g, E);
        }
    }
}

int fwd_decode(struct fwd *f, const struct fwd_batch *b, float *logits)
{
    const struct model *m = f->m;
    const struct model_hparams *hp = &m->hp;
    const struct be_ops *ops = f->be->ops;
    const int64_t n = b->n_tok, E = hp->n_embd;

    if (n <= 0 || n > f->p.n_tok_max || b->n_out < 0 || b->n_out > n)
        return ERR_INVALID;
    for (int64_t t = 0; t < n; t++) {
        if (b->tok[t] < 0 || (uint32_t)b->tok[t] >= hp->n_vocab)
            return ERR_INVALID;
        if (b->pos[t] < 0 || b->pos[t] >= f->p.n_ctx)
            return ERR_CTX_FULL;
        int32_t blk = b->block_tab[t][b->pos[t] / f->p.kv_block_size];
        if (blk < 0 || blk >= f->p.kv_blocks)
            return ERR_INVALID;
        f->n_kv[t] = b->pos[t] + 1;
        f->slots[t] = (int64_t)blk * f->p.kv_block_size + b->pos[t] % f->p.kv_block_size;
    }
    f->st.last_distinct_experts = 0;
    f->cur_seq = b->seq;
    f->cur_step = b->step;
    f->predicting = f->p.pred != NULL && f->D > 0;
    if (f->ids_all)
        for (int64_t i = 0; i < n * (int64_t)hp->n_layer * hp->n_expert_used; i++)
            f->ids_all[i] = -1;
    if (f->any_fail) {
        memset(f->tok_err, 0, (size_t)n * sizeof *f->tok_err);
        f->any_fail = false;
    }

    ops->get_rows(f->be, f->x, m->tok_embd.data, m->tok_embd.type, E, b->tok, n);
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const struct model_layer *L = &m->layers[il];
        if (f->ids_all && f->D && f->p.pregate_input && L->moe &&
            (f->p.pregate || (f->p.pred && f->p.pred_mode != PRED_MODE_PATH)))
            pregate(f, il, n); /* on the layer's input, one attention earlier */
        attention_block(f, il, b);
        ops->rmsnorm(f->be, f->xn, f->x, L->ffn_norm.data, E, n, hp->eps);
        if (L->moe)
            moe_ffn(f, il, n);
        else
            dense_ffn(f, &L->ffn_gate, &L->ffn_up, &L->ffn_down, f->xn, f->ffn_out, n);
        add_rows(f->x, f->ffn_out, n * E);
    }
    for (int32_t i = 0; i < b->n_out; i++)
        memcpy(f->out_rows + (int64_t)i * E, f->x + (int64_t)b->out_idx[i] * E, (size_t)E * 4);
    if (b->n_out > 0) {
        ops->rmsnorm(f->be, f->out_rows, f->out_rows, m->output_norm.data, E, b->n_out, hp->eps);
        matmul_w(f, logits, &m->output, f->out_rows, b->n_out);
    }
    if (f->ids_all) {
        for (int64_t t = 0; t < n; t++) {
            const uint32_t seq = b->seq ? b->seq[t] : 0;
            if (f->p.pred)
                pred_path_update(f->p.pred, seq, IDS(f, t, 0));
            if (f->p.trace) {
                struct trace_token tt = {.step = b->step, .seq = seq, .pos = b->pos[t], .ids = IDS(f, t, 0),
                                         .w = f->w_all + (size_t)t * hp->n_layer * hp->n_expert_used,
                                         .pred = f->D ? PG(f, t, 0, 0) : NULL};
                if (trace_writer_write_token(f->p.trace, &tt) < 0)
                    f->st.trace_errors++;
            }
        }
    }
    f->st.steps++;
    f->st.tokens += (uint64_t)n;
    return 0;
}
