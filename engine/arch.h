/* SPDX-License-Identifier: MIT */
/*
 * arch.h - architectures as rows of facts.
 *
 * Each supported `general.architecture` is one struct arch_desc: the RoPE
 * style, which norms exist, the gating function, shared experts and the GGUF
 * keys it reads. The forward pass (engine/forward.c) is written once and reads
 * these facts; adding an architecture means adding a row, not a code path.
 */
#ifndef MOED_ENGINE_ARCH_H
#define MOED_ENGINE_ARCH_H

#include <stdbool.h>
#include <stddef.h>

enum arch_rope {
    ARCH_ROPE_NORM, /* adjacent pairs (x[2i], x[2i+1]): llama (Q/K rows permuted by the converter) */
    ARCH_ROPE_NEOX, /* half split (x[i], x[i + n_rot/2]): the Qwen family, OLMoE */
};

enum arch_qk_norm {
    ARCH_QK_NORM_NONE,
    ARCH_QK_NORM_HEAD, /* RMSNorm per head over head_dim (weight [head_dim]): qwen3, qwen3moe */
    ARCH_QK_NORM_FULL, /* RMSNorm over the whole projection (weight [n_head*head_dim]): olmoe */
};

enum arch_ffn {
    ARCH_FFN_DENSE,    /* ffn_gate/ffn_up/ffn_down */
    ARCH_FFN_MOE,      /* ffn_gate_inp + stacked *_exps */
    ARCH_FFN_EITHER,   /* llama: MoE when expert_count > 0 (Mixtral), else dense */
};

struct arch_desc {
    const char *name;           /* general.architecture */
    enum arch_rope rope;
    enum arch_qk_norm qk_norm;
    enum arch_ffn ffn;
    bool qkv_bias;              /* attn_{q,k,v}.bias may be present (required if true) */
    bool norm_topk;             /* renormalize the top-k gate weights to sum 1 */
    bool shared_expert;         /* qwen2moe: shared expert with a sigmoid gate */
    const char *expert_ff_key;  /* key suffix of the expert FFN width, NULL = feed_forward_length */
};

/* Returns the row for an architecture name, or NULL. */
const struct arch_desc *arch_find(const char *name);
/* Writes the comma-separated list of supported names into buf. */
void arch_list(char *buf, size_t len);

#endif
