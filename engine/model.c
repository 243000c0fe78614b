/* SPDX-License-Identifier: MIT */
/*
 * model.c - loads a model from GGUF: reads the hyperparameters named by the
 * architecture row, checks every tensor's presence, type and shape against
 * them, and reads the weights with pread into memory the model owns.
 *
 * Invariant: after model_load() succeeds every struct model_weight that the
 * architecture needs has data of the declared shape, and every norm and bias
 * vector is f32 (converted at load whatever its file type).
 */
#include "engine/model.h"

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct model_params model_params_default(void)
{
    struct model_params p = {.load_weights = true, .load_experts = true};
    return p;
}

struct loader {
    struct model *m;
    char *err;
    size_t errlen;
    const char *arch;
};

static int fail(struct loader *l, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct loader *l, int rc, const char *fmt, ...)
{
    int n = snprintf(l->err, l->errlen, "%s: ", l->m->gguf->path);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < l->errlen)
        vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- hyperparameters ---- */

static int key_u32(struct loader *l, const char *suffix, uint32_t *out, bool required, uint32_t def)
{
    char key[256];
    snprintf(key, sizeof key, "%s.%s", l->arch, suffix);
    int rc = gguf_get_u32(l->m->gguf, key, out);
    if (rc == -ENOENT) {
        if (required)
            return fail(l, ERR_MODEL_FORMAT, "missing required key '%s'", key);
        *out = def;
        return 0;
    }
    if (rc < 0)
        return fail(l, ERR_MODEL_FORMAT, "key '%s' is not an unsigned 32-bit integer", key);
    return 0;
}

static int key_f32(struct loader *l, const char *suffix, float *out, bool required, float def)
{
    char key[256];
    snprintf(key, sizeof key, "%s.%s", l->arch, suffix);
    int rc = gguf_get_f32(l->m->gguf, key, out);
    if (rc == -ENOENT) {
        if (required)
            return fail(l, ERR_MODEL_FORMAT, "missing required key '%s'", key);
        *out = def;
        return 0;
    }
    if (rc < 0)
        return fail(l, ERR_MODEL_FORMAT, "key '%s' is not a number", key);
    return 0;
}

static int load_hparams(struct loader *l)
{
    struct model *m = l->m;
    struct model_hparams *hp = &m->hp;
    int rc;

    if ((rc = key_u32(l, "embedding_length", &hp->n_embd, true, 0)) ||
        (rc = key_u32(l, "block_count", &hp->n_layer, true, 0)) ||
        (rc = key_u32(l, "attention.head_count", &hp->n_head, true, 0)) ||
        (rc = key_u32(l, "attention.head_count_kv", &hp->n_head_kv, false, 0)) ||
        (rc = key_u32(l, "context_length", &hp->n_ctx_train, true, 0)) ||
        (rc = key_f32(l, "attention.layer_norm_rms_epsilon", &hp->eps, true, 0)) ||
        (rc = key_f32(l, "rope.freq_base", &hp->rope_base, false, 10000.0f)) ||
        (rc = key_u32(l, "expert_count", &hp->n_expert, false, 0)) ||
        (rc = key_u32(l, "expert_used_count", &hp->n_expert_used, false, 0)))
        return rc;
    if (hp->n_head_kv == 0)
        hp->n_head_kv = hp->n_head;
    if (hp->n_embd == 0 || hp->n_layer == 0 || hp->n_head == 0 || hp->n_layer > 4096 ||
        hp->n_embd > (1u << 20) || hp->n_head > 4096)
        return fail(l, ERR_MODEL_FORMAT, "implausible dimensions (embedding %u, layers %u, heads %u)",
                    hp->n_embd, hp->n_layer, hp->n_head);
    if (hp->n_head % hp->n_head_kv != 0)
        return fail(l, ERR_MODEL_FORMAT, "head_count %u is not a multiple of head_count_kv %u",
                    hp->n_head, hp->n_head_kv);
    if ((rc = key_u32(l, "attention.key_length", &hp->head_dim, false, hp->n_embd / hp->n_head)) ||
        (rc = key_u32(l, "attention.value_length", &hp->head_dim_v, false, hp->head_dim)))
        return rc;
    if (hp->head_dim == 0 || hp->head_dim % 2 || hp->head_dim_v != hp->head_dim || hp->head_dim > 1024)
        return fail(l, ERR_MODEL_FORMAT, "unsupported head dimensions (key %u, value %u)",
                    hp->head_dim, hp->head_dim_v);
    if ((rc = key_u32(l, "rope.dimension_count", &hp->n_rot, false, hp->head_dim)))
        return rc;
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return fail(l, ERR_MODEL_FORMAT, "rope.dimension_count %u invalid for head dimension %u",
                    hp->n_rot, hp->head_dim);
    if (!(hp->eps > 0 && hp->eps < 1))
        return fail(l, ERR_MODEL_FORMAT, "layer_norm_rms_epsilon %g out of range", hp->eps);
    if (!(hp->rope_base > 1))
        return fail(l, ERR_MODEL_FORMAT, "rope.freq_base %g out of range", hp->rope_base);

    /* RoPE scaling */
    char key[256];
    const char *stype = NULL;
    float factor = 1.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.type", l->arch);
    rc = gguf_get_str(m->gguf, key, &stype);
    if (rc == ERR_MODEL_FORMAT)
        return fail(l, rc, "key '%s' is not a string", key);
    hp->rope_scaling = MODEL_ROPE_SCALING_NONE;
    if ((rc = key_f32(l, "rope.scaling.factor", &factor, false, 1.0f)))
        return rc;
    if (stype == NULL) {
        /* Older files only carry rope.scale_linear. */
        float lin;
        if ((rc = key_f32(l, "rope.scale_linear", &lin, false, 1.0f)))
            return rc;
        if (lin != 1.0f) {
            hp->rope_scaling = MODEL_ROPE_SCALING_LINEAR;
            factor = lin;
        }
    } else if (strcmp(stype, "linear") == 0) {
        hp->rope_scaling = MODEL_ROPE_SCALING_LINEAR;
    } else if (strcmp(stype, "yarn") == 0) {
        hp->rope_scaling = MODEL_ROPE_SCALING_YARN;
    } else if (strcmp(stype, "none") != 0) {
        return fail(l, ERR_MODEL_FORMAT, "unsupported rope scaling type '%s' (none, linear, yarn)", stype);
    }
    if (hp->rope_scaling != MODEL_ROPE_SCALING_NONE && !(factor > 0 && factor < 1e6))
        return fail(l, ERR_MODEL_FORMAT, "rope scaling factor %g out of range", factor);
    hp->rope_freq_scale = hp->rope_scaling == MODEL_ROPE_SCALING_NONE ? 1.0f : 1.0f / factor;
    if ((rc = key_u32(l, "rope.scaling.original_context_length", &hp->n_ctx_orig, false,
                      hp->n_ctx_train)))
        return rc;
    hp->yarn_ext_factor = hp->rope_scaling == MODEL_ROPE_SCALING_YARN ? 1.0f : 0.0f;
    hp->yarn_attn_factor = 1.0f;
    hp->yarn_beta_fast = 32.0f;
    hp->yarn_beta_slow = 1.0f;

    /* Feed-forward widths. */
    const struct arch_desc *a = m->arch;
    bool moe = a->ffn == ARCH_FFN_MOE || (a->ffn == ARCH_FFN_EITHER && hp->n_expert > 0);
    if (moe) {
        if (hp->n_expert < 1 || hp->n_expert > 4096)
            return fail(l, ERR_MODEL_FORMAT, "expert_count %u out of range (1..4096) for a MoE model",
                        hp->n_expert);
        if (hp->n_expert_used < 1 || hp->n_expert_used > hp->n_expert)
            return fail(l, ERR_MODEL_FORMAT, "expert_used_count %u out of range (1..%u)",
                        hp->n_expert_used, hp->n_expert);
        if (a->expert_ff_key)
            rc = key_u32(l, a->expert_ff_key, &hp->n_ff_exp, true, 0);
        else
            rc = key_u32(l, "feed_forward_length", &hp->n_ff_exp, true, 0);
        if (rc)
            return rc;
        if (a->shared_expert &&
            (rc = key_u32(l, "expert_shared_feed_forward_length", &hp->n_ff_shexp, false, 0)))
            return rc;
    } else {
        if (a->ffn == ARCH_FFN_MOE)
            return fail(l, ERR_MODEL_FORMAT, "missing required key '%s.expert_count'", l->arch);
        hp->n_expert = hp->n_expert_used = 0;
        if ((rc = key_u32(l, "feed_forward_length", &hp->n_ff, true, 0)))
            return rc;
    }

    /* Vocabulary size: from the embedding table. */
    const struct gguf_tensor *te = gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!te)
        return fail(l, ERR_MODEL_FORMAT, "missing tensor 'token_embd.weight'");
    if (te->n_dims != 2 || te->ne[0] != hp->n_embd)
        return fail(l, ERR_MODEL_FORMAT, "tensor 'token_embd.weight' has shape [%lld, %lld], expected [%u, n_vocab]",
                    (long long)te->ne[0], (long long)te->ne[1], hp->n_embd);
    hp->n_vocab = (uint32_t)te->ne[1];
    return 0;
}

/* ---- tensors ---- */

static size_t bytes_of(const struct gguf_tensor *t) { return (size_t)t->size; }

/* Finds a tensor and checks its shape; a 2-D weight is n_out rows of n_in. */
static int find_w(struct loader *l, struct model_weight *w, const char *name, int64_t n_in,
                  int64_t n_out, bool required)
{
    const struct gguf_tensor *t = gguf_find_tensor(l->m->gguf, name);
    memset(w, 0, sizeof *w);
    if (!t) {
        if (required)
            return fail(l, ERR_MODEL_FORMAT, "missing tensor '%s' required by architecture %s", name,
                        l->arch);
        return 0;
    }
    bool ok;
    if (n_out == 1)
        ok = t->ne[0] == n_in && t->ne[1] == 1 && t->ne[2] == 1 && t->ne[3] == 1;
    else
        ok = t->n_dims == 2 && t->ne[0] == n_in && t->ne[1] == n_out;
    if (!ok) {
        return fail(l, ERR_MODEL_FORMAT,
                    "tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld] for this architecture",
                    name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                    (long long)n_in, (long long)n_out);
    }
    const struct be_type_info *ti = be_type_info(t->type);
    const struct be_type_info *vd = be_type_info(ti->vec_dot_type);
    if (n_out > 1 && n_in % vd->blck != 0)
        return fail(l, ERR_MODEL_FORMAT, "tensor '%s': row length %lld is not a multiple of %d",
                    name, (long long)n_in, vd->blck);
    w->t = t;
    w->type = (enum be_type)t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->row_bytes = be_row_size(w->type, n_in);
    return 0;
}

static int find_x(struct loader *l, struct model_experts *x, const char *name, int64_t n_in,
                  int64_t n_out, int64_t n_expert)
{
    const struct gguf_tensor *t = gguf_find_tensor(l->m->gguf, name);
    memset(x, 0, sizeof *x);
    if (!t)
        return fail(l, ERR_MODEL_FORMAT, "missing tensor '%s' required by architecture %s", name, l->arch);
    if (t->n_dims != 3 || t->ne[0] != n_in || t->ne[1] != n_out || t->ne[2] != n_expert)
        return fail(l, ERR_MODEL_FORMAT,
                    "tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld, %lld] for this architecture",
                    name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                    (long long)n_in, (long long)n_out, (long long)n_expert);
    const struct be_type_info *ti = be_type_info(t->type);
    const struct be_type_info *vd = be_type_info(ti->vec_dot_type);
    if (n_in % vd->blck != 0)
        return fail(l, ERR_MODEL_FORMAT, "tensor '%s': row length %lld is not a multiple of %d",
                    name, (long long)n_in, vd->blck);
    x->t = t;
    x->type = (enum be_type)t->type;
    x->n_in = n_in;
    x->n_out = n_out;
    x->row_bytes = be_row_size(x->type, n_in);
    x->expert_bytes = x->row_bytes * (size_t)n_out;
    return 0;
}

static int find_tensors(struct loader *l)
{
    struct model *m = l->m;
    const struct model_hparams *hp = &m->hp;
    const struct arch_desc *a = m->arch;
    int rc;
    int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim,
            KV = (int64_t)hp->n_head_kv * hp->head_dim;
    char nm[128];

    if ((rc = find_w(l, &m->tok_embd, "token_embd.weight", E, hp->n_vocab, true)) ||
        (rc = find_w(l, &m->output_norm, "output_norm.weight", E, 1, true)) ||
        (rc = find_w(l, &m->output, "output.weight", E, hp->n_vocab, false)))
        return rc;
    if (!m->output.t)
        m->output = m->tok_embd; /* tied embeddings; data shared, see model_free */

    m->layers = calloc(hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return -ENOMEM;
#define W(field, suffix, nin, nout, req)                                              \
    do {                                                                              \
        snprintf(nm, sizeof nm, "blk.%u." suffix, i);                                 \
        if ((rc = find_w(l, &L->field, nm, nin, nout, req)))                          \
            return rc;                                                                \
    } while (0)
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        struct model_layer *L = &m->layers[i];
        W(attn_norm, "attn_norm.weight", E, 1, true);
        W(wq, "attn_q.weight", E, Q, true);
        W(wk, "attn_k.weight", E, KV, true);
        W(wv, "attn_v.weight", E, KV, true);
        W(wo, "attn_output.weight", Q, E, true);
        W(bq, "attn_q.bias", Q, 1, a->qkv_bias);
        W(bk, "attn_k.bias", KV, 1, a->qkv_bias);
        W(bv, "attn_v.bias", KV, 1, a->qkv_bias);
        if (a->qk_norm == ARCH_QK_NORM_HEAD) {
            W(q_norm, "attn_q_norm.weight", hp->head_dim, 1, true);
            W(k_norm, "attn_k_norm.weight", hp->head_dim, 1, true);
        } else if (a->qk_norm == ARCH_QK_NORM_FULL) {
            W(q_norm, "attn_q_norm.weight", Q, 1, true);
            W(k_norm, "attn_k_norm.weight", KV, 1, true);
        }
        W(ffn_norm, "ffn_norm.weight", E, 1, true);
        L->moe = hp->n_expert > 0;
        if (!L->moe) {
            W(ffn_gate, "ffn_gate.weight", E, hp->n_ff, true);
            W(ffn_up, "ffn_up.weight", E, hp->n_ff, true);
            W(ffn_down, "ffn_down.weight", hp->n_ff, E, true);
            continue;
        }
        W(gate_inp, "ffn_gate_inp.weight", E, hp->n_expert, true);
        snprintf(nm, sizeof nm, "blk.%u.ffn_gate_exps.weight", i);
        if ((rc = find_x(l, &L->gate_exps, nm, E, hp->n_ff_exp, hp->n_expert)))
            return rc;
        snprintf(nm, sizeof nm, "blk.%u.ffn_up_exps.weight", i);
        if ((rc = find_x(l, &L->up_exps, nm, E, hp->n_ff_exp, hp->n_expert)))
            return rc;
        snprintf(nm, sizeof nm, "blk.%u.ffn_down_exps.weight", i);
        if ((rc = find_x(l, &L->down_exps, nm, hp->n_ff_exp, E, hp->n_expert)))
            return rc;
        if (a->shared_expert && hp->n_ff_shexp > 0) {
            W(gate_inp_shexp, "ffn_gate_inp_shexp.weight", E, 1, true);
            W(gate_shexp, "ffn_gate_shexp.weight", E, hp->n_ff_shexp, true);
            W(up_shexp, "ffn_up_shexp.weight", E, hp->n_ff_shexp, true);
            W(down_shexp, "ffn_down_shexp.weight", hp->n_ff_shexp, E, true);
        }
    }
#undef W
    return 0;
}

/* ---- reading ---- */

/* Vectors (norms, biases, the shared-expert gate) are converted to f32. */
static int read_w(struct loader *l, struct model_weight *w)
{
    if (!w->t || w->data)
        return 0;
    size_t n = bytes_of(w->t);
    void *buf = mem_alloc_large(n);
    if (!buf)
        return fail(l, -ENOMEM, "out of memory reading tensor '%s' (%zu bytes)", w->t->name, n);
    int rc = gguf_read_tensor(l->m->gguf, w->t, 0, n, buf);
    if (rc < 0) {
        free(buf);
        return fail(l, rc, "reading tensor '%s': %s", w->t->name, err_str(rc));
    }
    if (w->n_out == 1 && w->type != BE_TYPE_F32) {
        float *f = malloc((size_t)w->n_in * sizeof(float));
        if (!f) {
            free(buf);
            return -ENOMEM;
        }
        be_dequant_row(w->type, buf, f, w->n_in);
        free(buf);
        buf = f;
        w->type = BE_TYPE_F32;
        w->row_bytes = (size_t)w->n_in * sizeof(float);
    }
    w->data = buf;
    l->m->bytes_weights += n;
    return 0;
}

static int read_x(struct loader *l, struct model_experts *x)
{
    size_t n = bytes_of(x->t);
    x->data = mem_alloc_large(n);
    if (!x->data)
        return fail(l, -ENOMEM, "out of memory reading tensor '%s' (%zu bytes)", x->t->name, n);
    int rc = gguf_read_tensor(l->m->gguf, x->t, 0, n, x->data);
    if (rc < 0)
        return fail(l, rc, "reading tensor '%s': %s", x->t->name, err_str(rc));
    return 0;
}

static void sizes(struct model *m)
{
    m->bytes_experts = 0;
    m->bytes_per_expert = 0;
    m->n_moe_layers = 0;
    for (uint32_t i = 0; i < m->hp.n_layer; i++) {
        struct model_layer *L = &m->layers[i];
        if (!L->moe)
            continue;
        m->n_moe_layers++;
        size_t b = L->gate_exps.expert_bytes + L->up_exps.expert_bytes + L->down_exps.expert_bytes;
        m->bytes_experts += b * m->hp.n_expert;
        if (b > m->bytes_per_expert)
            m->bytes_per_expert = b;
    }
}

static size_t weight_bytes_declared(struct model *m)
{
    size_t total = 0;
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++)
        total += m->gguf->tensors[i].size;
    return total - m->bytes_experts;
}

int model_load(struct model **out, const char *path, const struct model_params *p,
               char *err, size_t errlen)
{
    struct model_params def = model_params_default();
    struct model *m = calloc(1, sizeof *m);
    struct loader l = {.m = m, .err = err, .errlen = errlen};
    int rc;

    *out = NULL;
    if (!p)
        p = &def;
    if (!m)
        return -ENOMEM;
    rc = gguf_open(&m->gguf, path, err, errlen);
    if (rc < 0) {
        free(m);
        return rc;
    }
    const char *arch = NULL;
    rc = gguf_get_str(m->gguf, "general.architecture", &arch);
    if (rc < 0) {
        rc = fail(&l, ERR_MODEL_FORMAT, rc == -ENOENT ? "missing required key 'general.architecture'"
                                                      : "key 'general.architecture' is not a string");
        goto fail;
    }
    l.arch = arch;
    m->arch = arch_find(arch);
    if (!m->arch) {
        char list[256];
        arch_list(list, sizeof list);
        rc = fail(&l, ERR_MODEL_ARCH, "unsupported architecture '%s' (supported: %s)", arch, list);
        goto fail;
    }
    const char *name = NULL;
    if (gguf_get_str(m->gguf, "general.name", &name) == 0 && name[0]) {
        m->name = strdup(name);
    } else {
        const char *b = strrchr(path, '/');
        m->name = strdup(b ? b + 1 : path);
    }
    if ((rc = load_hparams(&l)) || (rc = find_tensors(&l)))
        goto fail;
    sizes(m);
    if (!p->load_weights) {
        m->bytes_weights = weight_bytes_declared(m);
        *out = m;
        return 0;
    }

    if ((rc = read_w(&l, &m->tok_embd)) || (rc = read_w(&l, &m->output_norm)))
        goto fail;
    if (m->output.t == m->tok_embd.t)
        m->output.data = m->tok_embd.data;
    else if ((rc = read_w(&l, &m->output)))
        goto fail;
    for (uint32_t i = 0; i < m->hp.n_layer; i++) {
        struct model_layer *L = &m->layers[i];
        struct model_weight *ws[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->bq,
                                     &L->bk, &L->bv, &L->q_norm, &L->k_norm, &L->ffn_norm,
                                     &L->ffn_gate, &L->ffn_up, &L->ffn_down, &L->gate_inp,
                                     &L->gate_inp_shexp, &L->gate_shexp, &L->up_shexp, &L->down_shexp};
        for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++)
            if ((rc = read_w(&l, ws[k])))
                goto fail;
        if (L->moe && p->load_experts && ((rc = read_x(&l, &L->gate_exps)) || (rc = read_x(&l, &L->up_exps)) ||
                       (rc = read_x(&l, &L->down_exps))))
            goto fail;
    }
    *out = m;
    return 0;
fail:
    model_free(m);
    return rc;
}

int model_load_experts(struct model *m, char *err, size_t errlen)
{
    struct loader l = {.m = m, .err = err, .errlen = errlen};
    int rc;
    for (uint32_t i = 0; i < m->hp.n_layer; i++) {
        struct model_layer *L = &m->layers[i];
        if (L->moe && !L->gate_exps.data &&
            ((rc = read_x(&l, &L->gate_exps)) || (rc = read_x(&l, &L->up_exps)) || (rc = read_x(&l, &L->down_exps))))
            return rc;
    }
    return 0;
}

uint64_t model_experts_file_offset(const struct model *m, const struct model_experts *x)
{
    return m->gguf->data_offset + x->t->offset;
}

static void free_w(struct model_weight *w) { free(w->data); w->data = NULL; }

void model_free(struct model *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (uint32_t i = 0; i < m->hp.n_layer; i++) {
            struct model_layer *L = &m->layers[i];
            struct model_weight *ws[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->bq,
                                         &L->bk, &L->bv, &L->q_norm, &L->k_norm, &L->ffn_norm,
                                         &L->ffn_gate, &L->ffn_up, &L->ffn_down, &L->gate_inp,
                                         &L->gate_inp_shexp, &L->gate_shexp, &L->up_shexp,
                                         &L->down_shexp};
            for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++)
                free_w(ws[k]);
            free(L->gate_exps.data);
            free(L->up_exps.data);
            free(L->down_exps.data);
        }
        free(m->layers);
    }
    if (m->output.data != m->tok_embd.data)
        free(m->output.data);
    free(m->tok_embd.data);
    free(m->output_norm.data);
    free(m->name);
    gguf_close(m->gguf);
    free(m);
}
