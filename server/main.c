/* SPDX-License-Identifier: MIT */
/*
 * main.c - the `moed` command line: dispatches to the subcommands.
 *
 *   moed inspect MODEL        architecture, sizes, tensor types, memory plan
 *   moed serve [-m MODEL]     the OpenAI-compatible HTTP server (serve.c)
 *   moed run -m MODEL -p TEXT one prompt through the engine, text to stdout
 *   moed tokenize/detokenize  the model's tokenizer
 *   moed bench -m MODEL       prefill and decode speed
 *   moed logits -m MODEL ...  logits of a token sequence (developer tool used
 *                             by the reference tests)
 */
#include "common/err.h"
#include "common/log.h"
#include "engine/forward.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "kernels/backend.h"
#include "server/impl.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

/* ---- inspect ---- */

static int cmd_inspect(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: moed inspect MODEL.gguf [--expert-cache S] [-c CTX] [-np N] [--kv-tokens N]\n"
                        "       [-ctk f32|f16|q8_0]   (the memory plan for those settings)\n");
        return 2;
    }
    struct eng_params ep = eng_params_default();
    ep.model_path = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "moed inspect: %s needs a value\n", o);
            return 2;
        }
        i++;
        if (!strcmp(o, "--expert-cache")) ep.expert_cache = v;
        else if (!strcmp(o, "--host-cache")) ep.host_cache = v;
        else if (!strcmp(o, "-c") || !strcmp(o, "--ctx-size")) ep.ctx_size = atoi(v);
        else if (!strcmp(o, "-np") || !strcmp(o, "--parallel")) ep.parallel = atoi(v);
        else if (!strcmp(o, "--kv-tokens")) ep.kv_tokens = atoi(v);
        else if (!strcmp(o, "-ctk") || !strcmp(o, "--kv-type")) {
            if (!strcmp(v, "f32")) ep.kv_type = BE_TYPE_F32;
            else if (!strcmp(v, "f16")) ep.kv_type = BE_TYPE_F16;
            else if (!strcmp(v, "q8_0")) ep.kv_type = BE_TYPE_Q8_0;
            else {
                fprintf(stderr, "moed inspect: -ctk: f32, f16 or q8_0, not '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "moed inspect: unknown option '%s'\n", o);
            return 2;
        }
    }
    if (ep.parallel < 1 || ep.ctx_size < 0 || ep.kv_tokens < 0) {
        fprintf(stderr, "moed inspect: bad -np, -c or --kv-tokens\n");
        return 2;
    }
    const char *path = argv[1];
    struct model *m = NULL;
    struct model_params mp = model_params_default();
    char err[1024];
    mp.load_weights = false;
    int rc = model_load(&m, path, &mp, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "moed: %s\n", err);
        return 1;
    }
    const struct model_hparams *hp = &m->hp;
    char a[32], b[32], c[32];
    printf("model:        %s\n", path);
    printf("name:         %s\n", m->name);
    printf("architecture: %s (GGUF v%u)\n", m->arch->name, m->gguf->version);
    printf("layers:       %u\n", hp->n_layer);
    printf("embedding:    %u\n", hp->n_embd);
    printf("heads:        %u (kv %u, head dim %u, rotated %u)\n", hp->n_head, hp->n_head_kv,
           hp->head_dim, hp->n_rot);
    printf("vocabulary:   %u\n", hp->n_vocab);
    printf("context:      %u (training)\n", hp->n_ctx_train);
    printf("rope:         %s, base %g%s\n", m->arch->rope == ARCH_ROPE_NORM ? "adjacent pairs" : "neox",
           hp->rope_base,
           hp->rope_scaling == MODEL_ROPE_SCALING_YARN     ? ", yarn scaling"
           : hp->rope_scaling == MODEL_ROPE_SCALING_LINEAR ? ", linear scaling"
                                                           : "");
    if (hp->n_expert) {
        printf("experts:      %u, top-%u (%s), expert ffn %u", hp->n_expert, hp->n_expert_used,
               m->arch->norm_topk ? "renormalized" : "not renormalized", hp->n_ff_exp);
        if (hp->n_ff_shexp)
            printf(", shared expert ffn %u", hp->n_ff_shexp);
        printf("\n");
    } else {
        printf("ffn:          dense, %u\n", hp->n_ff);
    }
    /* tensor count by type */
    uint64_t cnt[BE_TYPE_COUNT] = {0}, bytes[BE_TYPE_COUNT] = {0};
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
        cnt[m->gguf->tensors[i].type]++;
        bytes[m->gguf->tensors[i].type] += m->gguf->tensors[i].size;
    }
    printf("tensors:      %llu\n", (unsigned long long)m->gguf->n_tensors);
    for (int t = 0; t < BE_TYPE_COUNT; t++) {
        if (!cnt[t])
            continue;
        srv_human_bytes(a, sizeof a, (double)bytes[t]);
        printf("  %-8s %5llu tensors, %s\n", be_type_name((uint32_t)t), (unsigned long long)cnt[t], a);
    }
    srv_human_bytes(a, sizeof a, (double)m->bytes_experts);
    srv_human_bytes(b, sizeof b, (double)m->bytes_weights);
    srv_human_bytes(c, sizeof c, (double)m->bytes_per_expert);
    double total = (double)(m->bytes_experts + m->bytes_weights);
    printf("experts:      %s (%.1f %% of weights), %s per expert per layer, %u MoE layers\n", a,
           total > 0 ? 100.0 * (double)m->bytes_experts / total : 0.0, c, m->n_moe_layers);
    printf("non-expert:   %s\n", b);

    /* The memory plan eng_init would compute for these settings (CPU
     * backend; the machine's memory and cgroup limits as they are now). */
    struct plan pl;
    if (eng_compute_plan(m, &ep, &pl, err, sizeof err) < 0) {
        printf("memory plan:  %s\n", err);
        model_free(m);
        return 1;
    }
    char buf[1024];
    plan_format(&pl, buf, sizeof buf);
    printf("memory plan (CPU backend, context %d, %d parallel, KV %s):\n%s", ep.ctx_size ? ep.ctx_size : (int)hp->n_ctx_train,
           ep.parallel, be_type_name(ep.kv_type), buf);
    model_free(m);
    return 0;
}

/* ---- logits (developer tool) ---- */

static int parse_ids(const char *s, int32_t **out, int *n)
{
    int cap = 16, k = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    while (v && *s) {
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (end == s || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return -1;
        }
        if (k == cap) {
            cap *= 2;
            int32_t *nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) {
                free(v);
                return -1;
            }
            v = nv;
        }
        v[k++] = (int32_t)x;
        s = end;
        if (*s == ',')
            s++;
    }
    if (!v || k == 0) {
        free(v);
        return -1;
    }
    *out = v;
    *n = k;
    return 0;
}

static int cmd_logits(int argc, char **argv)
{
    const char *model_path = NULL, *out_path = NULL, *ids_s = NULL, *kv_s = "f32";
    int greedy = 0, batch = 0, threads = 0;
    uint32_t mutate = 0;
    static const struct option lo[] = {{"model", 1, 0, 'm'}, {"tokens", 1, 0, 'T'},
                                       {"out", 1, 0, 'o'},   {"greedy", 1, 0, 'g'},
                                       {"kv", 1, 0, 'k'},    {"batch", 1, 0, 'b'},
                                       {"mutate", 1, 0, 'M'}, {"threads", 1, 0, 't'},
                                       {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:T:o:g:k:b:t:", lo, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'T': ids_s = optarg; break;
        case 'o': out_path = optarg; break;
        case 'g': greedy = atoi(optarg); break;
        case 'k': kv_s = optarg; break;
        case 'b': batch = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'M':
            if (strcmp(optarg, "rope") == 0)
                mutate |= FWD_MUTATE_ROPE_STYLE;
            else if (strcmp(optarg, "qknorm") == 0)
                mutate |= FWD_MUTATE_QK_NORM_AFTER_ROPE;
            else if (strcmp(optarg, "topk") == 0)
                mutate |= FWD_MUTATE_TOPK_RENORM;
            else {
                fprintf(stderr, "moed: --mutate: rope, qknorm or topk\n");
                return 2;
            }
            break;
        default: return 2;
        }
    }
    if (!model_path || !ids_s || !out_path) {
        fprintf(stderr, "usage: moed logits -m MODEL --tokens 1,2,3 -o OUT.f32 [--greedy N] "
                        "[--kv f32|f16|q8_0] [--batch N] [-t THREADS] [--mutate rope|qknorm|topk]\n"
                        "writes float32 logits, one row of n_vocab per token fed in (prompt and\n"
                        "generated tokens but the last); prints generated ids on stdout\n");
        return 2;
    }
    int32_t *ids;
    int n_prompt;
    if (parse_ids(ids_s, &ids, &n_prompt) < 0) {
        fprintf(stderr, "moed: --tokens: expected comma-separated non-negative integers\n");
        return 2;
    }
    enum be_type kvt = strcmp(kv_s, "f16") == 0 ? BE_TYPE_F16
                       : strcmp(kv_s, "q8_0") == 0 ? BE_TYPE_Q8_0 : BE_TYPE_F32;
    char err[1024];
    struct model *m = NULL;
    int rc = model_load(&m, model_path, NULL, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "moed: %s\n", err);
        free(ids);
        return 1;
    }
    const int n_total = n_prompt + greedy;
    const int32_t bs = 16;
    struct fwd_params fp = {.n_tok_max = batch > 0 ? batch : n_prompt, .n_ctx = n_total,
                            .kv_block_size = bs, .kv_blocks = (n_total + bs - 1) / bs,
                            .kv_type = kvt, .mutate = mutate};
    if (fp.n_tok_max > n_prompt)
        fp.n_tok_max = n_prompt;
    struct be *be = NULL;
    struct fwd *f = NULL;
    int32_t *all = calloc((size_t)n_total, sizeof *all);
    int32_t *pos = calloc((size_t)n_total, sizeof *pos);
    int32_t *tab = calloc((size_t)fp.kv_blocks, sizeof *tab);
    const int32_t **tabs = calloc((size_t)n_total, sizeof *tabs);
    int32_t *oidx = calloc((size_t)n_total, sizeof *oidx);
    float *logits = malloc((size_t)n_total * m->hp.n_vocab * sizeof(float));
    FILE *fo = fopen(out_path, "wb");
    rc = -ENOMEM;
    if (!all || !pos || !tab || !tabs || !oidx || !logits)
        goto out;
    if (!fo) {
        fprintf(stderr, "moed: %s: %s\n", out_path, strerror(errno));
        rc = -errno;
        goto out;
    }
    struct be_cpu_params cp = {.n_threads = threads};
    if ((rc = be_cpu_init(&be, &cp)) < 0 || (rc = fwd_init(&f, m, be, &fp)) < 0)
        goto out;
    memcpy(all, ids, (size_t)n_prompt * sizeof *ids);
    for (int i = 0; i < fp.kv_blocks; i++)
        tab[i] = i;
    for (int i = 0; i < n_total; i++) {
        pos[i] = i;
        tabs[i] = tab;
        oidx[i] = i;
    }
    int done = 0;
    const uint32_t V = m->hp.n_vocab;
    while (done < n_prompt) {
        int nb = n_prompt - done < fp.n_tok_max ? n_prompt - done : fp.n_tok_max;
        struct fwd_batch b = {.n_tok = nb, .tok = all + done, .pos = pos + done,
                              .block_tab = tabs + done, .n_out = nb, .out_idx = oidx};
        if ((rc = fwd_decode(f, &b, logits + (size_t)done * V)) < 0)
            goto out;
        done += nb;
    }
    for (int g = 0; g < greedy; g++) {
        const float *lr = logits + (size_t)(done - 1) * V;
        int32_t best = 0;
        for (uint32_t i = 1; i < V; i++)
            if (lr[i] > lr[best])
                best = (int32_t)i;
        all[done] = best;
        printf("%s%d", g ? " " : "", best);
        if (g == greedy - 1)
            break;
        struct fwd_batch b = {.n_tok = 1, .tok = all + done, .pos = pos + done,
                              .block_tab = tabs + done, .n_out = 1, .out_idx = oidx};
        if ((rc = fwd_decode(f, &b, logits + (size_t)done * V)) < 0)
            goto out;
        done++;
    }
    if (greedy)
        printf("\n");
    if (fwrite(logits, sizeof(float) * V, (size_t)done, fo) != (size_t)done) {
        rc = -EIO;
        goto out;
    }
    rc = 0;
out:
    if (rc < 0)
        fprintf(stderr, "moed: logits failed: %s\n", err_str(rc));
    if (fo && fclose(fo) != 0 && rc == 0)
        rc = -EIO;
    fwd_free(f);
    be_free(be);
    model_free(m);
    free(ids);
    free(all);
    free(pos);
    free(tab);
    free(tabs);
    free(oidx);
    free(logits);
    return rc < 0 ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: moed COMMAND [options]\n"
               "commands:\n"
               "  inspect MODEL      architecture, sizes, tensor types and memory plan\n"
               "  serve [-m MODEL]   OpenAI-compatible HTTP server (moed serve --help)\n"
               "  run -m MODEL -p PROMPT   generate text from a prompt (stdout), speeds on stderr\n"
               "  template -m MODEL  render the chat template for a JSON request on stdin\n"
               "  tokenize -m MODEL  token ids of a text (stdin or -p)\n"
               "  detokenize -m MODEL  text of token ids (stdin)\n"
               "  bench -m MODEL     prefill and decode speed (pp/tg tokens per second)\n"
               "  logits -m MODEL    logits of a token sequence (developer tool)\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "inspect") == 0)
        return cmd_inspect(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return srv_cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0)
        return srv_cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "template") == 0)
        return srv_cmd_template(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0)
        return srv_cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "detokenize") == 0)
        return srv_cmd_detokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return srv_cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "logits") == 0)
        return cmd_logits(argc - 1, argv + 1);
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "moed: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
