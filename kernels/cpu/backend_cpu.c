/* SPDX-License-Identifier: MIT */
/*
 * backend_cpu.c - the CPU backend: the reference implementation of every op
 * in kernels/backend.h, on plain scalar kernels (kernels/cpu/quant.c).
 *
 * Invariant: no op allocates; scratch memory is sized by reserve(), which the
 * engine calls once at start with the largest batch and row it will use.
 */
#include "kernels/backend.h"

#include "common/log.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cpu_ctx {
    int n_threads;
    void *act;         /* activations converted to a vec_dot type */
    size_t act_bytes;
    float *row;        /* one dequantized KV row */
    size_t row_len;
    float *scores;     /* attention scores of one head */
    size_t scores_len;
};

static void cpu_free(struct be *be)
{
    struct cpu_ctx *c = be->ctx;
    free(c->act);
    free(c->row);
    free(c->scores);
    free(c);
    free(be);
}

static int grow(void **p, size_t *have, size_t want)
{
    if (want <= *have)
        return 0;
    void *q = realloc(*p, want);
    if (!q)
        return -ENOMEM;
    *p = q;
    *have = want;
    return 0;
}

static int cpu_reserve(struct be *be, int64_t n_tok_max, int64_t n_in_max, int64_t n_ctx_max)
{
    struct cpu_ctx *c = be->ctx;
    /* The widest activation format is f32 (4 bytes per value); Q8_K takes
     * 292/256 and Q8_1 36/32 bytes per value, both less. */
    size_t act = (size_t)n_tok_max * (size_t)n_in_max * 4 + 64;
    int rc = grow(&c->act, &c->act_bytes, act);
    if (rc == 0)
        rc = grow((void **)&c->row, &c->row_len, (size_t)n_in_max * sizeof(float) * 2);
    if (rc == 0)
        rc = grow((void **)&c->scores, &c->scores_len, (size_t)n_ctx_max * sizeof(float));
    return rc;
}

/* ---- matmul ---- */

static void cpu_matmul(struct be *be, float *y, const void *w, enum be_type wt, int64_t n_in,
                       int64_t n_out, const float *x, int64_t n_tok)
{
    struct cpu_ctx *c = be->ctx;
    const struct be_type_info *ti = be_type_info(wt);
    enum be_type vt = ti->vec_dot_type;
    size_t wrow = be_row_size(wt, n_in);
    size_t arow = be_row_size(vt, n_in);
    const void *act = x;

    ASSERT((size_t)n_tok * arow <= c->act_bytes);
    if (vt != BE_TYPE_F32) {
        for (int64_t t = 0; t < n_tok; t++)
            be_quant_row(vt, x + t * n_in, (uint8_t *)c->act + t * arow, n_in);
        act = c->act;
    }
    /* hot: every weight row once, dotted with every token's activations */
    for (int64_t o = 0; o < n_out; o++) {
        const void *wr = (const uint8_t *)w + o * wrow;
        for (int64_t t = 0; t < n_tok; t++)
            y[t * n_out + o] = be_vec_dot_ref(wt, n_in, wr, (const uint8_t *)act + t * arow);
    }
}

/* ---- elementwise ---- */

static void cpu_rmsnorm(struct be *be, float *y, const float *x, const float *w, int64_t n,
                        int64_t n_rows, float eps)
{
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        double ss = 0;
        for (int64_t i = 0; i < n; i++)
            ss += (double)xr[i] * xr[i];
        float scale = (float)(1.0 / sqrt(ss / (double)n + eps));
        for (int64_t i = 0; i < n; i++)
            yr[i] = xr[i] * scale * (w ? w[i] : 1.0f);
    }
}

static void cpu_swiglu(struct be *be, float *y, const float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void cpu_axpy(struct be *be, float *y, const float *x, float a, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void cpu_get_rows(struct be *be, float *y, const void *table, enum be_type t, int64_t n_cols,
                         const int32_t *ids, int64_t n)
{
    size_t rb = be_row_size(t, n_cols);
    for (int64_t i = 0; i < n; i++)
        be_dequant_row(t, (const uint8_t *)table + (size_t)ids[i] * rb, y + i * n_cols, n_cols);
}

/* ---- RoPE ---- */

static float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base)
{
    return (float)n_dims * logf((float)n_ctx_orig / (n_rot * 2.0f * (float)M_PI)) / (2.0f * logf(base));
}

static void cpu_rope(struct be *be, float *x, int64_t n_tok, int32_t n_head, int32_t head_dim,
                     const int32_t *pos, const struct be_rope *r)
{
    const int n_dims = r->n_rot;
    const float theta_scale = powf(r->base, -2.0f / (float)n_dims);
    float corr0 = 0, corr1 = 0;
    if (r->ext_factor != 0.0f) {
        corr0 = fmaxf(0.0f, floorf(yarn_corr_dim(n_dims, r->n_ctx_orig, r->beta_fast, r->base)));
        corr1 = fminf((float)(n_dims - 1), ceilf(yarn_corr_dim(n_dims, r->n_ctx_orig, r->beta_slow, r->base)));
    }
    for (int64_t t = 0; t < n_tok; t++) {
        float theta = (float)pos[t];
        for (int i0 = 0; i0 < n_dims; i0 += 2) {
            /* YaRN: mix interpolated and extrapolated angles by dimension. */
            float theta_interp = r->freq_scale * theta;
            float th = theta_interp;
            float mscale = r->attn_factor;
            if (r->ext_factor != 0.0f) {
                float y = ((float)i0 / 2 - corr0) / fmaxf(0.001f, corr1 - corr0);
                float ramp = 1.0f - fminf(1.0f, fmaxf(0.0f, y));
                float mix = ramp * r->ext_factor;
                th = theta_interp * (1 - mix) + theta * mix;
                mscale *= 1.0f + 0.1f * logf(1.0f / r->freq_scale);
            }
            float cs = cosf(th) * mscale, sn = sinf(th) * mscale;
            theta *= theta_scale;
            for (int32_t h = 0; h < n_head; h++) {
                float *v = x + (t * n_head + h) * head_dim;
                int a, b;
                if (r->mode == BE_ROPE_NORM) {
                    a = i0;
                    b = i0 + 1;
                } else {
                    a = i0 / 2;
                    b = i0 / 2 + n_dims / 2;
                }
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * cs - x1 * sn;
                v[b] = x0 * sn + x1 * cs;
            }
        }
    }
}

/* ---- KV cache and attention ---- */

static void cpu_kv_store(struct be *be, const struct be_kv_layer *kv, const float *k, const float *v,
                         int64_t n_tok, int64_t row_len, const int64_t *slots)
{
    for (int64_t t = 0; t < n_tok; t++) {
        uint8_t *kd = (uint8_t *)kv->k + (size_t)slots[t] * kv->row_bytes;
        uint8_t *vd = (uint8_t *)kv->v + (size_t)slots[t] * kv->row_bytes;
        if (kv->type == BE_TYPE_F32) {
            memcpy(kd, k + t * row_len, (size_t)row_len * 4);
            memcpy(vd, v + t * row_len, (size_t)row_len * 4);
        } else {
            be_quant_row(kv->type, k + t * row_len, kd, row_len);
            be_quant_row(kv->type, v + t * row_len, vd, row_len);
        }
    }
}

static const void *kv_row(const struct be_kv_layer *kv, const void *base, const int32_t *blocks, int64_t p)
{
    int64_t slot = (int64_t)blocks[p / kv->block_size] * kv->block_size + p % kv->block_size;
    return (const uint8_t *)base + (size_t)slot * kv->row_bytes;
}

static void cpu_attention(struct be *be, float *out, const float *q, int64_t n_tok, const struct be_attn *a)
{
    struct cpu_ctx *c = be->ctx;
    const struct be_kv_layer *kv = a->kv;
    const int32_t hd = a->head_dim, group = a->n_head / a->n_head_kv;
    const int64_t kv_len = (int64_t)a->n_head_kv * hd;
    int64_t max_kv = 0;
    for (int64_t t = 0; t < n_tok; t++)
        if (a->n_kv[t] > max_kv)
            max_kv = a->n_kv[t];
    ASSERT((size_t)max_kv * sizeof(float) <= c->scores_len);
    ASSERT(c->row_len >= (size_t)kv_len * sizeof(float));
    float *row = c->row, *sc = c->scores;

    for (int64_t t = 0; t < n_tok; t++) {
        const int32_t *bt = a->block_tab[t];
        const int64_t n = a->n_kv[t];
        for (int32_t h = 0; h < a->n_head; h++) {
            const float *qh = q + (t * a->n_head + h) * hd;
            const int32_t kh = h / group;
            float mx = -INFINITY;
            for (int64_t p = 0; p < n; p++) {
                const void *kr = kv_row(kv, kv->k, bt, p);
                const float *kf;
                if (kv->type == BE_TYPE_F32) {
                    kf = (const float *)kr + kh * hd;
                } else {
                    be_dequant_row(kv->type, kr, row, kv_len);
                    kf = row + kh * hd;
                }
                float s = 0;
                for (int32_t i = 0; i < hd; i++)
                    s += qh[i] * kf[i];
                sc[p] = s * a->scale;
                if (sc[p] > mx)
                    mx = sc[p];
            }
            double sum = 0;
            for (int64_t p = 0; p < n; p++) {
                sc[p] = expf(sc[p] - mx);
                sum += sc[p];
            }
            float inv = (float)(1.0 / sum);
            float *oh = out + (t * a->n_head + h) * hd;
            memset(oh, 0, (size_t)hd * sizeof(float));
            for (int64_t p = 0; p < n; p++) {
                const void *vr = kv_row(kv, kv->v, bt, p);
                const float *vf;
                if (kv->type == BE_TYPE_F32) {
                    vf = (const float *)vr + kh * hd;
                } else {
                    be_dequant_row(kv->type, vr, row, kv_len);
                    vf = row + kh * hd;
                }
                float w = sc[p] * inv;
                for (int32_t i = 0; i < hd; i++)
                    oh[i] += w * vf[i];
            }
        }
    }
}

static bool cpu_supports_type(struct be *be, enum be_type t)
{
    const struct be_type_info *ti = be_type_info(t);
    return ti && ti->weight;
}

static const struct be_ops g_cpu_ops = {
    .free = cpu_free,
    .reserve = cpu_reserve,
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .axpy = cpu_axpy,
    .get_rows = cpu_get_rows,
    .supports_type = cpu_supports_type,
};

int be_cpu_init(struct be **out, const struct be_cpu_params *p)
{
    struct be *be = calloc(1, sizeof *be);
    struct cpu_ctx *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!be || !c) {
        free(be);
        free(c);
        return -ENOMEM;
    }
    c->n_threads = p && p->n_threads > 0 ? p->n_threads : 1;
    be->ops = &g_cpu_ops;
    be->ctx = c;
    be->name = "cpu";
    *out = be;
    return 0;
}
