/* SPDX-License-Identifier: MIT */
/*
 * trace_record.c - records a routing trace (predictor/trace.h) by running a
 * real model over text files, several sequences at a time.
 *
 *   trace_record MODEL -o OUT.trace [--parallel P] [--prompt-tokens N]
 *                [--gen G] [--chunk C] [--lookahead D] [--m M] [--threads T]
 *                [--max-tokens N] TEXT...
 *
 * Each text file is tokenized and cut into prompts of N tokens (default
 * 192); P sequences run at once (default 8). Every step each running
 * sequence contributes up to C prompt tokens (chunked prefill, default 32)
 * or, once its prompt is done, one greedily generated token, G of them
 * (default 16); a finished sequence is replaced by the next prompt. Tokens
 * are recorded in batch order with the step number, so `replay --batch live`
 * sees the recorded grouping.
 *
 * Pre-gating predictions (D layers ahead, m ids each, defaults 1 and 2k):
 * at layer L, after L's attention, layer L+d's ffn_norm and router are
 * applied to the residual stream and the m highest router logits are
 * recorded, as DESIGN.md describes. That needs the hidden state, which the
 * public forward pass does not expose, so this tool compiles the engine's
 * forward pass into itself (the #include below) and reads struct fwd's
 * residual buffer from the routing callback. It is a stopgap until the live
 * pre-gating lands in the engine (`moed run --trace-routing`); --lookahead 0
 * records no predictions.
 */
#include "engine/forward.c" /* see the header comment: this defines fwd_* here */

#include "engine/model.h"
#include "engine/vocab.h"
#include "kernels/backend.h"
#include "predictor/trace.h"

#include <stdio.h>

struct rec {
    struct fwd *f;
    const struct model *m;
    uint32_t L, E, K, D, M;
    int32_t n_tok;       /* tokens of the current step */
    int32_t *ids;        /* n_tok_max x L x K */
    float *w;
    int32_t *pred;       /* n_tok_max x L x D x M */
    float *hn, *logit;   /* n_tok_max x n_embd, n_tok_max x E: pregate scratch */
};

/* Routing callback: stores the step's choices and, from the residual stream
 * after layer il's attention, the pre-gating lists for il+1..il+D. */
static void on_route(void *ud, uint32_t il, int32_t n, int32_t k, const int32_t *ids, const float *w)
{
    struct rec *r = ud;
    const uint32_t L = r->L, K = r->K, D = r->D, M = r->M, E = r->E;
    for (int32_t t = 0; t < n; t++)
        for (uint32_t j = 0; j < K; j++) {
            r->ids[((size_t)t * L + il) * K + j] = ids[t * k + j];
            r->w[((size_t)t * L + il) * K + j] = w[t * k + j];
        }
    struct fwd *f = r->f;
    const struct model_hparams *hp = &r->m->hp;
    for (uint32_t d = 1; d <= D; d++) {
        uint32_t tl = il + d;
        const struct model_layer *ly = tl < L ? &r->m->layers[tl] : NULL;
        if (!ly || !ly->moe) {
            for (int32_t t = 0; t < n; t++)
                for (uint32_t x = 0; x < M; x++)
                    r->pred[(((size_t)t * L + il) * D + d - 1) * M + x] = -1;
            continue;
        }
        /* f->x is the residual stream after layer il's attention here. */
        f->be->ops->rmsnorm(f->be, r->hn, f->x, ly->ffn_norm.data, hp->n_embd, n, hp->eps);
        matmul_w(f, r->logit, &ly->gate_inp, r->hn, n);
        for (int32_t t = 0; t < n; t++) {
            const float *lg = r->logit + (size_t)t * E;
            int32_t *out = r->pred + (((size_t)t * L + il) * D + d - 1) * M;
            for (uint32_t x = 0; x < M; x++) { /* top M, ties to the lower id */
                int32_t best = -1;
                for (uint32_t e = 0; e < E; e++) {
                    bool taken = false;
                    for (uint32_t q = 0; q < x; q++)
                        taken |= out[q] == (int32_t)e;
                    if (!taken && (best < 0 || lg[e] > lg[best]))
                        best = (int32_t)e;
                }
                out[x] = best;
            }
        }
    }
    r->n_tok = n;
}

struct seq {
    int32_t *prompt;
    int32_t n_prompt, done, gen_left;
    int32_t last;        /* last token fed */
    uint32_t id;
    int32_t *blocks;
    bool live;
};

int main(int argc, char **argv)
{
    const char *model_path = NULL, *out_path = NULL;
    int parallel = 8, prompt_tokens = 192, gen = 16, chunk = 32, threads = 2;
    long lookahead = 1, mlist = -1, max_tokens = 0;
    const char *texts[256];
    int n_texts = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "-o") && has) out_path = argv[++i];
        else if (!strcmp(a, "--parallel") && has) parallel = atoi(argv[++i]);
        else if (!strcmp(a, "--prompt-tokens") && has) prompt_tokens = atoi(argv[++i]);
        else if (!strcmp(a, "--gen") && has) gen = atoi(argv[++i]);
        else if (!strcmp(a, "--chunk") && has) chunk = atoi(argv[++i]);
        else if (!strcmp(a, "--lookahead") && has) lookahead = atol(argv[++i]);
        else if (!strcmp(a, "--m") && has) mlist = atol(argv[++i]);
        else if (!strcmp(a, "--threads") && has) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--max-tokens") && has) max_tokens = atol(argv[++i]);
        else if (a[0] != '-' && !model_path) model_path = a;
        else if (a[0] != '-' && n_texts < 256) texts[n_texts++] = a;
        else {
            fprintf(stderr, "usage: trace_record MODEL -o OUT [--parallel P] [--prompt-tokens N] [--gen G]\n"
                            "       [--chunk C] [--lookahead D] [--m M] [--threads T] [--max-tokens N] TEXT...\n");
            return 2;
        }
    }
    if (!model_path || !out_path || n_texts == 0 || parallel < 1 || chunk < 1 || prompt_tokens < 1) {
        fprintf(stderr, "trace_record: need MODEL, -o OUT and at least one TEXT file\n");
        return 2;
    }
    char err[512];
    struct model *m = NULL;
    if (model_load(&m, model_path, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "trace_record: %s\n", err);
        return 1;
    }
    struct vocab *v = NULL;
    if (vocab_init_gguf(&v, m->gguf, err, sizeof err) < 0) {
        fprintf(stderr, "trace_record: %s\n", err);
        return 1;
    }
    const struct model_hparams *hp = &m->hp;
    const uint32_t L = hp->n_layer, E = hp->n_expert, K = hp->n_expert_used;
    if (E == 0 || K == 0) {
        fprintf(stderr, "trace_record: %s has no experts\n", model_path);
        return 1;
    }
    if (lookahead < 0 || (uint32_t)lookahead >= L)
        lookahead = L - 1;
    uint32_t D = (uint32_t)lookahead, M = D ? (mlist > 0 ? (uint32_t)mlist : 2 * K) : 0;
    if (M > E)
        M = E;

    /* Prompts: each file's tokens cut into windows. */
    int32_t **prompts = NULL;
    int n_prompts = 0;
    for (int i = 0; i < n_texts; i++) {
        FILE *fp = fopen(texts[i], "rb");
        if (!fp) {
            fprintf(stderr, "trace_record: %s: %s\n", texts[i], strerror(errno));
            return 1;
        }
        char *buf = malloc(1 << 20);
        size_t len = fread(buf, 1, (1 << 20) - 1, fp);
        fclose(fp);
        struct vocab_tokens tk = {0};
        struct vocab_encode_opts o = {.add_special = false, .parse_special = false};
        if (vocab_encode(v, buf, len, &o, &tk) < 0) {
            fprintf(stderr, "trace_record: %s: cannot tokenize\n", texts[i]);
            return 1;
        }
        free(buf);
        for (size_t s = 0; s + (size_t)prompt_tokens <= tk.n; s += (size_t)prompt_tokens) {
            prompts = realloc(prompts, (size_t)(n_prompts + 1) * sizeof *prompts);
            prompts[n_prompts] = malloc((size_t)prompt_tokens * 4);
            memcpy(prompts[n_prompts++], tk.ids + s, (size_t)prompt_tokens * 4);
        }
        vocab_tokens_free(&tk);
    }
    if (n_prompts == 0) {
        fprintf(stderr, "trace_record: no text file has %d tokens\n", prompt_tokens);
        return 1;
    }

    const int32_t bs = 16, ctx = prompt_tokens + gen + 1, per_seq = (ctx + bs - 1) / bs;
    struct be *be = NULL;
    struct be_cpu_params bp = {.n_threads = threads};
    if (be_cpu_init(&be, &bp) < 0)
        return 1;
    int32_t n_tok_max = parallel * chunk;
    struct fwd_params fp = {.n_tok_max = n_tok_max, .n_ctx = ctx, .kv_blocks = parallel * per_seq,
                            .kv_block_size = bs, .kv_type = BE_TYPE_F32};
    struct fwd *f = NULL;
    int rc = fwd_init(&f, m, be, &fp);
    if (rc < 0) {
        fprintf(stderr, "trace_record: fwd_init: %s\n", err_str(rc));
        return 1;
    }
    struct rec r = {.f = f, .m = m, .L = L, .E = E, .K = K, .D = D, .M = M};
    r.ids = calloc((size_t)n_tok_max * L * K, 4);
    r.w = calloc((size_t)n_tok_max * L * K, 4);
    r.pred = calloc((size_t)n_tok_max * L * (D ? D * M : 1), 4);
    r.hn = calloc((size_t)n_tok_max * hp->n_embd, 4);
    r.logit = calloc((size_t)n_tok_max * E, 4);
    fwd_set_route_cb(f, on_route, &r);

    uint64_t *eb = calloc(L, 8);
    for (uint32_t l = 0; l < L; l++)
        eb[l] = m->layers[l].moe ? m->layers[l].gate_exps.expert_bytes + m->layers[l].up_exps.expert_bytes +
                                      m->layers[l].down_exps.expert_bytes
                                 : 0;
    struct trace_info info = {.n_layer = L, .n_expert = E, .k = K, .lookahead = D, .m = M, .expert_bytes = eb};
    struct trace_writer *tw = NULL;
    if (trace_writer_open(&tw, out_path, &info, err, sizeof err) < 0) {
        fprintf(stderr, "trace_record: %s\n", err);
        return 1;
    }

    struct seq *sq = calloc((size_t)parallel, sizeof *sq);
    int32_t *tok = malloc((size_t)n_tok_max * 4), *pos = malloc((size_t)n_tok_max * 4);
    int32_t *owner = malloc((size_t)n_tok_max * 4), *out_idx = malloc((size_t)parallel * 4);
    const int32_t **btab = malloc((size_t)n_tok_max * sizeof *btab);
    int32_t *out_seq = malloc((size_t)parallel * 4);
    float *logits = malloc((size_t)parallel * hp->n_vocab * 4);
    for (int i = 0; i < parallel; i++) {
        sq[i].blocks = malloc((size_t)per_seq * 4);
        for (int32_t b = 0; b < per_seq; b++)
            sq[i].blocks[b] = i * per_seq + b;
    }
    int next_prompt = 0;
    uint32_t next_id = 0, step = 0;
    uint64_t written = 0;
    for (;;) {
        for (int i = 0; i < parallel; i++)
            if (!sq[i].live && next_prompt < n_prompts) {
                sq[i].live = true;
                sq[i].prompt = prompts[next_prompt++];
                sq[i].n_prompt = prompt_tokens;
                sq[i].done = 0;
                sq[i].gen_left = gen;
                sq[i].id = next_id++;
            }
        int32_t n = 0, n_out = 0;
        for (int i = 0; i < parallel; i++) {
            struct seq *s = &sq[i];
            if (!s->live)
                continue;
            int32_t take = s->done < s->n_prompt ? s->n_prompt - s->done : 1;
            if (take > chunk)
                take = chunk;
            for (int32_t j = 0; j < take; j++) {
                tok[n] = s->done < s->n_prompt ? s->prompt[s->done] : s->last;
                pos[n] = s->done;
                btab[n] = s->blocks;
                owner[n] = i;
                s->done++;
                n++;
            }
            if (s->done >= s->n_prompt) { /* logits wanted: next token */
                out_idx[n_out] = n - 1;
                out_seq[n_out++] = i;
            }
        }
        if (n == 0)
            break;
        struct fwd_batch b = {.n_tok = n, .tok = tok, .pos = pos, .block_tab = btab, .n_out = n_out,
                              .out_idx = out_idx};
        if ((rc = fwd_decode(f, &b, logits)) < 0) {
            fprintf(stderr, "trace_record: fwd_decode: %s\n", err_str(rc));
            return 1;
        }
        for (int32_t t = 0; t < n; t++) {
            for (uint32_t l = 0; l < L; l++)
                if (!m->layers[l].moe)
                    for (uint32_t j = 0; j < K; j++)
                        r.ids[((size_t)t * L + l) * K + j] = -1;
            struct trace_token tt = {.step = step, .seq = sq[owner[t]].id, .pos = pos[t],
                                     .ids = r.ids + (size_t)t * L * K, .w = r.w + (size_t)t * L * K,
                                     .pred = D ? r.pred + (size_t)t * L * D * M : NULL};
            if (trace_writer_write_token(tw, &tt) < 0) {
                fprintf(stderr, "trace_record: %s\n", trace_writer_error(tw));
                return 1;
            }
            written++;
        }
        for (int32_t o = 0; o < n_out; o++) { /* greedy next token */
            struct seq *s = &sq[out_seq[o]];
            const float *lg = logits + (size_t)o * hp->n_vocab;
            int32_t best = 0;
            for (uint32_t x = 1; x < hp->n_vocab; x++)
                if (lg[x] > lg[best])
                    best = (int32_t)x;
            s->last = best;
            if (s->gen_left-- <= 0)
                s->live = false;
        }
        step++;
        if (max_tokens > 0 && written >= (uint64_t)max_tokens)
            break;
    }
    if ((rc = trace_writer_close(tw)) < 0) {
        fprintf(stderr, "trace_record: %s: close failed: %s\n", out_path, err_str(rc));
        return 1;
    }
    fprintf(stderr, "trace_record: %llu tokens, %u steps, %u sequences, lookahead %u (m %u) -> %s\n",
            (unsigned long long)written, step, next_id, D, M, out_path);
    fwd_free(f);
    be_free(be);
    vocab_free(v);
    model_free(m);
    return 0;
}
