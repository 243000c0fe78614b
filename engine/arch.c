/* SPDX-License-Identifier: MIT */
/*
 * arch.c - the table of supported architectures. The facts (RoPE style,
 * norms, gating renormalization, shared experts, key names) are those of
 * llama.cpp's GGUF conversion and of the published model definitions:
 *   llama    Llama 1-3 dense, and Mixtral (llama with expert_count > 0):
 *            softmax gating, top-k renormalized; adjacent-pair RoPE because
 *            the converter permutes the Q/K rows.
 *   qwen2    Qwen2 dense: q/k/v biases, NeoX RoPE.
 *   qwen2moe Qwen1.5/2-MoE: biases, softmax top-k NOT renormalized
 *            (norm_topk_prob = false), plus a shared expert scaled by
 *            sigmoid(ffn_gate_inp_shexp . x).
 *   qwen3    Qwen3 dense: per-head q/k RMSNorm, no biases.
 *   qwen3moe Qwen3-MoE: per-head q/k norm, top-k renormalized.
 *   olmoe    OLMoE: q/k RMSNorm over the whole projection, top-k not
 *            renormalized.
 */
#include "engine/arch.h"

#include <stdio.h>
#include <string.h>

static const struct arch_desc g_arch[] = {
    {"llama", ARCH_ROPE_NORM, ARCH_QK_NORM_NONE, ARCH_FFN_EITHER, false, true, false, NULL},
    {"qwen2", ARCH_ROPE_NEOX, ARCH_QK_NORM_NONE, ARCH_FFN_DENSE, true, false, false, NULL},
    {"qwen2moe", ARCH_ROPE_NEOX, ARCH_QK_NORM_NONE, ARCH_FFN_MOE, true, false, true,
     "expert_feed_forward_length"},
    {"qwen3", ARCH_ROPE_NEOX, ARCH_QK_NORM_HEAD, ARCH_FFN_DENSE, false, false, false, NULL},
    {"qwen3moe", ARCH_ROPE_NEOX, ARCH_QK_NORM_HEAD, ARCH_FFN_MOE, false, true, false,
     "expert_feed_forward_length"},
    {"olmoe", ARCH_ROPE_NEOX, ARCH_QK_NORM_FULL, ARCH_FFN_MOE, false, false, false, NULL},
};

const struct arch_desc *arch_find(const char *name)
{
    for (size_t i = 0; i < sizeof g_arch / sizeof g_arch[0]; i++)
        if (strcmp(g_arch[i].name, name) == 0)
            return &g_arch[i];
    return NULL;
}

void arch_list(char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof g_arch / sizeof g_arch[0] && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", g_arch[i].name);
}
