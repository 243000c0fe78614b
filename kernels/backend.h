/* SPDX-License-Identifier: MIT */
/*
 * backend.h - the one interface the engine calls for computation.
 *
 * A backend is a table of operations (struct be_ops) plus its context. The
 * CPU backend (kernels/cpu/) always exists and is the reference: every op
 * lands there first. All pointers passed to ops are the backend's memory
 * (host memory for the CPU backend). Ops are called from the engine thread
 * only; a backend may use its own worker threads inside an op.
 */
#ifndef MOED_KERNELS_BACKEND_H
#define MOED_KERNELS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/quant.h"

enum be_rope_mode { BE_ROPE_NORM = 0, BE_ROPE_NEOX = 1 };

struct be_rope {
    enum be_rope_mode mode;
    int32_t n_rot;          /* rotated dims of each head (even, <= head_dim) */
    float base;             /* frequency base */
    float freq_scale;       /* 1/scaling factor (1 = none) */
    float ext_factor;       /* YaRN extrapolation mix (0 = off) */
    float attn_factor;      /* YaRN magnitude scale */
    float beta_fast, beta_slow;
    int32_t n_ctx_orig;     /* YaRN original training context */
};

/* A layer's KV storage: a pool of blocks of block_size token rows each. The
 * row of token slot s (= block * block_size + offset) starts at
 * k + s * row_bytes; a row holds n_head_kv * head_dim values of type. */
struct be_kv_layer {
    enum be_type type;      /* F32, F16 or Q8_0 */
    int32_t block_size;
    size_t row_bytes;
    void *k, *v;
};

/* Attention of n_tok query tokens over their sequences' cached keys/values. */
struct be_attn {
    int32_t n_head, n_head_kv, head_dim;
    float scale;                      /* usually 1/sqrt(head_dim) */
    const struct be_kv_layer *kv;
    const int32_t *const *block_tab;  /* per token: its sequence's block table */
    const int32_t *n_kv;              /* per token: visible positions (its pos + 1) */
};

/* One MoE layer's work for a batch: the active experts (those with at least
 * one token), their weight slices, and for each the tokens routed to it with
 * their gate weights. Active expert a serves the pairs offset[a] ..
 * offset[a+1]-1 of tok[] and weight[]. */
struct be_moe_layer {
    int64_t n_embd, n_ff;
    enum be_type gate_type, up_type, down_type;
    int32_t n_active;
    const void *const *gate; /* per active expert: n_ff rows of n_embd */
    const void *const *up;   /* per active expert: n_ff rows of n_embd */
    const void *const *down; /* per active expert: n_embd rows of n_ff */
    const int32_t *offset;   /* n_active + 1 */
    const int32_t *tok;      /* per pair: the token's row in x and y */
    const float *weight;     /* per pair: its gate weight */
    /* true: that matrix's experts were rewritten by expert_pack (the
     * backend's own layout); false: as stored in the file */
    bool gate_packed, up_packed, down_packed;
    /* NULL: moe_ffn adds the weighted outputs into y. Otherwise pair p's
     * unweighted output row (n_embd floats) is written to d_out + p*n_embd,
     * y is untouched (may be NULL), and the caller sums the rows with
     * moe_combine, possibly after several calls for different experts (the
     * expert store computes resident experts while others load). */
    float *d_out;
};

struct be;

/* One matrix of be_ops.matmul_n: y = w . x, w n_out rows of type wt. */
struct be_mm {
    float *y;
    const void *w;
    enum be_type wt;
    int64_t n_out;
};
#define BE_MATMUL_N_MAX 4

struct be_ops {
    /* Frees the backend's context; the struct be itself too. */
    void (*free)(struct be *be);
    /* Sets the most tokens and the widest row any op will see, so that the
     * backend can allocate its scratch memory now and never on the hot path;
     * n_ctx_max is the longest sequence attention will see.
     * Returns 0 or -ENOMEM. */
    int (*reserve)(struct be *be, int64_t n_tok_max, int64_t n_in_max, int64_t n_ctx_max);
    /* y[t * n_out + o] = sum_i w[o][i] * x[t * n_in + i] for t < n_tok;
     * w is n_out rows of type wt (each be_row_size(wt, n_in) bytes); x is
     * converted to the type's activation format first. */
    void (*matmul)(struct be *be, float *y, const void *w, enum be_type wt, int64_t n_in,
                   int64_t n_out, const float *x, int64_t n_tok);
    /* Optional: n <= BE_MATMUL_N_MAX matmuls on the same activations x
     * (n_tok rows of n_in), as n calls of matmul would compute them (the
     * same bits), in one go where the backend can share the work. */
    void (*matmul_n)(struct be *be, int n, const struct be_mm *mm, int64_t n_in, const float *x, int64_t n_tok);
    /* Optional: keeps a copy of weight matrix w (as matmul takes it; it must
     * stay valid and unchanged while the backend lives) in a layout that
     * matmul computes faster (the CPU backend: at every token count), with
     * the same results. Returns the bytes the copy takes, 0 when the backend has no
     * such layout for the type or shape (nothing kept), or -ENOMEM. */
    int64_t (*prepack)(struct be *be, const void *w, enum be_type wt, int64_t n_in, int64_t n_out);
    /* y = x / sqrt(mean(x^2) + eps) * w, for n_rows rows of n; w may be NULL; y may be x. */
    void (*rmsnorm)(struct be *be, float *y, const float *x, const float *w, int64_t n,
                    int64_t n_rows, float eps);
    /* Rotates, in place, n_tok rows of n_head heads of head_dim values; token t
     * is at position pos[t]. */
    void (*rope)(struct be *be, float *x, int64_t n_tok, int32_t n_head, int32_t head_dim,
                 const int32_t *pos, const struct be_rope *r);
    /* Stores n_tok rows of k and v (n_head_kv*head_dim f32 each) at the given
     * slots of the layer's pool, converting to its type. */
    void (*kv_store)(struct be *be, const struct be_kv_layer *kv, const float *k, const float *v,
                     int64_t n_tok, int64_t row_len, const int64_t *slots);
    /* out[t] (n_head*head_dim) = softmax(q[t] . K^T * scale) V over positions
     * 0 .. n_kv[t]-1 of token t's sequence (causal by construction). */
    void (*attention)(struct be *be, float *out, const float *q, int64_t n_tok,
                      const struct be_attn *a);
    /* y[i] = silu(g[i]) * u[i]. */
    void (*swiglu)(struct be *be, float *y, const float *g, const float *u, int64_t n);
    /* y[i] += a * x[i]. */
    void (*axpy)(struct be *be, float *y, const float *x, float a, int64_t n);
    /* Rows ids[0..n) of a table of n_cols-wide rows of type t, as f32. */
    void (*get_rows)(struct be *be, float *y, const void *table, enum be_type t, int64_t n_cols,
                     const int32_t *ids, int64_t n);
    /* Optional (NULL = unsupported): true when the backend can compute op
     * kinds on type t. */
    bool (*supports_type)(struct be *be, enum be_type t);
    /* Optional: sizes the scratch of moe_ffn for at most n_pairs
     * (token, expert) pairs of an n_ff x n_embd layer. Returns 0 or -ENOMEM. */
    int (*reserve_moe)(struct be *be, int64_t n_pairs, int64_t n_ff, int64_t n_embd);
    /* Optional: the grouped expert computation of one MoE layer in one call:
     * for every pair p of expert a and token t,
     *   y[t] += weight[p] * down_a(silu(gate_a . x[t]) * (up_a . x[t])),
     * each expert's weights read once for all its tokens; per token the
     * contributions are added in increasing a (so the result does not depend
     * on the rest of the batch). */
    void (*moe_ffn)(struct be *be, float *y, const float *x, int64_t n_tok,
                    const struct be_moe_layer *l);
    /* Optional, only with moe_ffn: rewrites in place n_experts expert
     * matrices (each n_out rows of n_in values of type wt, as in the file,
     * expert e at w + e * n_out * be_row_size(wt, n_in)) into a layout of the
     * same size that moe_ffn computes faster, with the same results; the
     * caller then passes them with be_moe_layer's *_packed set, and nothing
     * else may read them. Returns 1 when rewritten, 0 when the backend has
     * no such layout for the type or shape (w unchanged), or -ENOMEM. */
    int (*expert_pack)(struct be *be, void *w, enum be_type wt, int64_t n_in, int64_t n_out,
                       int64_t n_experts);
    /* Required with moe_ffn: y[tok[p]] += weight[p] * d[p] (n_embd wide) for
     * p = 0 .. n_pairs-1; per token the rows are added in the given order,
     * with the same arithmetic as moe_ffn's own sum, so moe_ffn with d_out
     * followed by moe_combine in increasing expert order gives the bits of
     * one moe_ffn call. */
    void (*moe_combine)(struct be *be, float *y, int64_t n_tok, int64_t n_embd, int32_t n_pairs,
                        const int32_t *tok, const float *weight, const float *const *d);
};

struct be {
    const struct be_ops *ops;
    void *ctx;
    const char *name;
};

struct be_cpu_params {
    int n_threads; /* 0 = the CPUs this process may use */
};

/* Creates the CPU backend; always available. Returns 0 or -ENOMEM. */
int be_cpu_init(struct be **out, const struct be_cpu_params *p);

enum be_gpu {
    BE_GPU_OFF = 0,     /* the CPU backend */
    BE_GPU_AUTO = 1,    /* a GPU when one is usable, else the CPU (logged) */
    BE_GPU_REQUIRE = 2, /* a GPU or an error */
};

struct be_init_params {
    enum be_gpu gpu;
    int device;               /* CUDA device index */
    struct be_cpu_params cpu; /* also used when falling back to the CPU */
};

/* Picks and creates the backend (kernels/backend.c). With BE_GPU_AUTO every
 * failure to get a GPU falls back to the CPU backend with one log line
 * saying why. Returns 0, or < 0 with one line in err. */
int be_init(struct be **out, const struct be_init_params *p, char *err, size_t errlen);

static inline void be_free(struct be *be)
{
    if (be)
        be->ops->free(be);
}

#endif
