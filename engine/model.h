/* SPDX-License-Identifier: MIT */
/*
 * model.h - a model loaded from a GGUF file: hyperparameters, the
 * architecture row, and the weights of every layer.
 *
 * Non-expert weights are read into memory moed owns when the model is
 * loaded. Experts are read too unless model_params.load_experts is false;
 * then their data pointers are NULL and the expert store (cache/) reads
 * them from the file on demand (model_expert_offset() says where).
 */
#ifndef MOED_ENGINE_MODEL_H
#define MOED_ENGINE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/arch.h"
#include "engine/gguf.h"
#include "kernels/quant.h"

enum model_rope_scaling {
    MODEL_ROPE_SCALING_NONE,
    MODEL_ROPE_SCALING_LINEAR,
    MODEL_ROPE_SCALING_YARN,
};

struct model_hparams {
    uint32_t n_vocab;
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head, n_head_kv;
    uint32_t head_dim;     /* key_length */
    uint32_t head_dim_v;   /* value_length */
    uint32_t n_rot;        /* rotated dims per head */
    uint32_t n_ctx_train;
    uint32_t n_ff;         /* dense FFN width (0 when none) */
    uint32_t n_expert, n_expert_used;
    uint32_t n_ff_exp;     /* expert FFN width */
    uint32_t n_ff_shexp;   /* shared expert FFN width (0 when none) */
    float eps;             /* RMSNorm epsilon */
    float rope_base;
    enum model_rope_scaling rope_scaling;
    float rope_freq_scale; /* 1/factor */
    uint32_t n_ctx_orig;   /* YaRN original context */
    float yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow;
};

/* A weight matrix (n_out rows of n_in values) or vector (n_out == 1). */
struct model_weight {
    const struct gguf_tensor *t; /* NULL when absent */
    enum be_type type;
    int64_t n_in, n_out;
    size_t row_bytes;
    void *data;                  /* owned by the model; f32 for norms and biases */
};

/* Stacked expert tensor: n_expert slices of n_out x n_in. */
struct model_experts {
    const struct gguf_tensor *t;
    enum be_type type;
    int64_t n_in, n_out;
    size_t row_bytes;
    size_t expert_bytes;         /* bytes of one expert's slice */
    void *data;                  /* all experts, resident (see header comment) */
    bool packed;                 /* data rewritten in place by be_ops.expert_pack: only moe_ffn reads it */
};

struct model_layer {
    struct model_weight attn_norm, wq, wk, wv, wo, bq, bk, bv, q_norm, k_norm;
    struct model_weight ffn_norm;
    struct model_weight ffn_gate, ffn_up, ffn_down;           /* dense */
    struct model_weight gate_inp;                             /* router (n_expert x n_embd) */
    struct model_experts gate_exps, up_exps, down_exps;
    struct model_weight gate_inp_shexp, gate_shexp, up_shexp, down_shexp;
    bool moe;
};

struct model {
    struct gguf_file *gguf;
    const struct arch_desc *arch;
    char *name;                  /* general.name or the file's base name */
    struct model_hparams hp;
    struct model_weight tok_embd, output_norm, output;
    struct model_layer *layers;  /* hp.n_layer */
    size_t bytes_weights;        /* non-expert bytes resident */
    size_t bytes_experts;        /* all experts */
    size_t bytes_per_expert;     /* gate+up+down of one expert in one layer */
    uint32_t n_moe_layers;
};

struct model_params {
    bool load_weights; /* false: hyperparameters and tensor checks only (inspect) */
    bool load_experts; /* false: experts stay in the file (the expert store loads them) */
};
struct model_params model_params_default(void);

/*
 * Opens path, validates it against its architecture (required keys, every
 * tensor's presence, type and shape) and, when p->load_weights, reads the
 * weights. On failure returns < 0, leaves *out NULL and writes one line
 * naming the file and the problem into err.
 */
int model_load(struct model **out, const char *path, const struct model_params *p,
               char *err, size_t errlen);
void model_free(struct model *m);

/* Pointer to expert e's slice of a stacked expert tensor (resident). */
static inline const void *model_expert_data(const struct model_experts *x, uint32_t e)
{
    return (const uint8_t *)x->data + (size_t)e * x->expert_bytes;
}

/* Reads the experts of a model loaded with load_experts false. */
int model_load_experts(struct model *m, char *err, size_t errlen);
/* Absolute file offset of expert 0's slice of a stacked expert tensor. */
uint64_t model_experts_file_offset(const struct model *m, const struct model_experts *x);

#endif
