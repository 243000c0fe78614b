/* SPDX-License-Identifier: MIT */
/*
 * cmd_bench.c - `moed bench`: prefill and decode speed of one model on the
 * CPU backend, in the spirit of llama-bench: pp N (a prompt of N tokens in
 * one batch) and tg N (N tokens decoded one at a time after a short prompt),
 * repeated, reporting tokens/s, and the weight bytes read per decoded token
 * (non-expert weights plus the k selected experts of every MoE layer), the
 * numerator of the memory-bandwidth bound.
 */
#include "server/impl.h"

#include "common/err.h"
#include "common/log.h"
#include "engine/forward.h"
#include "engine/model.h"
#include "kernels/backend.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int parse_list(const char *s, int *v, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 0 || x > 1 << 20)
            return -1;
        v[n++] = (int)x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

/* Weight bytes one decoded token reads: every non-expert matrix (but only one
 * row of the embedding table) plus k experts in every MoE layer. */
static double bytes_per_token(const struct model *m)
{
    double b = (double)m->bytes_weights;
    if (m->tok_embd.t && m->tok_embd.t != m->output.t)
        b -= (double)m->tok_embd.t->size - (double)m->tok_embd.row_bytes;
    b += (double)m->n_moe_layers * m->hp.n_expert_used * (double)m->bytes_per_expert;
    return b;
}

int srv_cmd_bench(int argc, char **argv)
{
    const char *path = NULL, *json = NULL;
    int pp[8] = {512}, n_pp = 1, tg[8] = {128}, n_tg = 1, th[8] = {0}, n_th = 1, reps = 3;
    int batch = 512;
    static const struct option lo[] = {{"model", 1, 0, 'm'}, {"prompt", 1, 0, 'p'},
                                       {"gen", 1, 0, 'n'},   {"threads", 1, 0, 't'},
                                       {"reps", 1, 0, 'r'},  {"batch", 1, 0, 'b'},
                                       {"json", 1, 0, 'j'},  {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:n:t:r:b:j:", lo, NULL)) != -1) {
        switch (c) {
        case 'm': path = optarg; break;
        case 'p': n_pp = parse_list(optarg, pp, 8); break;
        case 'n': n_tg = parse_list(optarg, tg, 8); break;
        case 't': n_th = parse_list(optarg, th, 8); break;
        case 'r': reps = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 'j': json = optarg; break;
        default: return 2;
        }
    }
    if (!path || n_pp < 0 || n_tg < 0 || n_th <= 0 || reps < 1 || batch < 1) {
        fprintf(stderr, "usage: moed bench -m MODEL [-p 128,512] [-n 128] [-t 1,2] [-r 3] [-b 512] "
                        "[--json FILE]\n");
        return 2;
    }
    char err[1024];
    struct model *m = NULL;
    int rc = model_load(&m, path, NULL, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "moed: %s\n", err);
        return 1;
    }
    int max_ctx = 16;
    for (int i = 0; i < n_pp; i++)
        max_ctx = pp[i] > max_ctx ? pp[i] : max_ctx;
    for (int i = 0; i < n_tg; i++)
        max_ctx = tg[i] + 16 > max_ctx ? tg[i] + 16 : max_ctx;
    const int bs = 16, nblk = (max_ctx + bs - 1) / bs;
    int32_t *tok = malloc((size_t)max_ctx * sizeof *tok), *pos = malloc((size_t)max_ctx * sizeof *pos);
    int32_t *tab = malloc((size_t)nblk * sizeof *tab), *oidx = calloc(1, sizeof *oidx);
    const int32_t **tabs = malloc((size_t)max_ctx * sizeof *tabs);
    float *logits = malloc((size_t)m->hp.n_vocab * sizeof(float));
    FILE *jf = json ? fopen(json, "w") : NULL;
    if (!tok || !pos || !tab || !oidx || !tabs || !logits || (json && !jf)) {
        fprintf(stderr, "moed: bench: %s\n", json && !jf ? strerror(errno) : "out of memory");
        rc = 1;
        goto out;
    }
    uint64_t s = 12345;
    for (int i = 0; i < max_ctx; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((s >> 33) % m->hp.n_vocab);
        pos[i] = i;
        tabs[i] = tab;
    }
    for (int i = 0; i < nblk; i++)
        tab[i] = i;
    double bpt = bytes_per_token(m);
    char hb[32];
    srv_human_bytes(hb, sizeof hb, bpt);
    printf("model: %s  (%s, %s read per decoded token)\n", path, m->arch->name, hb);
    printf("| threads | test   |      t/s |   stddev |\n|--------:|:-------|---------:|---------:|\n");
    if (jf)
        fprintf(jf, "{\"model\": \"%s\", \"bytes_per_token\": %.0f, \"results\": [", path, bpt);
    int first = 1;
    for (int ti = 0; ti < n_th; ti++) {
        struct be_cpu_params cp = {.n_threads = th[ti]};
        struct be *be = NULL;
        struct fwd *f = NULL;
        int nb = 1; /* the batch: the longest prompt, at most --batch */
        for (int i = 0; i < n_pp; i++)
            nb = pp[i] > nb ? pp[i] : nb;
        nb = nb < batch ? nb : batch;
        struct fwd_params fp = {.n_tok_max = nb, .n_ctx = max_ctx, .kv_blocks = nblk, .kv_block_size = bs,
                                .kv_type = BE_TYPE_F16};
        if ((rc = be_cpu_init(&be, &cp)) < 0 || (rc = fwd_init(&f, m, be, &fp)) < 0) {
            fprintf(stderr, "moed: bench: %s\n", err_str(rc));
            be_free(be);
            rc = 1;
            goto out;
        }
        struct { const char *kind; int n; } tests[16];
        int nt = 0;
        for (int i = 0; i < n_pp; i++)
            if (pp[i] > 0)
                tests[nt].kind = "pp", tests[nt++].n = pp[i];
        for (int i = 0; i < n_tg; i++)
            if (tg[i] > 0)
                tests[nt].kind = "tg", tests[nt++].n = tg[i];
        for (int t = 0; t < nt; t++) {
            double sum = 0, sum2 = 0;
            for (int r = 0; r <= reps; r++) { /* the first run warms up */
                double t0 = now_s();
                if (tests[t].kind[0] == 'p') {
                    for (int done = 0; done < tests[t].n && rc == 0;) {
                        int n = tests[t].n - done < fp.n_tok_max ? tests[t].n - done : fp.n_tok_max;
                        oidx[0] = n - 1;
                        struct fwd_batch b = {.n_tok = n, .tok = tok + done, .pos = pos + done,
                                              .block_tab = tabs + done, .n_out = 1, .out_idx = oidx};
                        rc = fwd_decode(f, &b, logits);
                        done += n;
                    }
                } else {
                    oidx[0] = 0;
                    for (int i = 0; i < tests[t].n && rc == 0; i++) {
                        struct fwd_batch b = {.n_tok = 1, .tok = tok + i, .pos = pos + i,
                                              .block_tab = tabs + i, .n_out = 1, .out_idx = oidx};
                        rc = fwd_decode(f, &b, logits);
                    }
                }
                double dt = now_s() - t0;
                if (rc < 0) {
                    fprintf(stderr, "moed: bench: forward failed: %s\n", err_str(rc));
                    break;
                }
                if (r > 0) {
                    double tps = tests[t].n / dt;
                    sum += tps;
                    sum2 += tps * tps;
                }
            }
            if (rc < 0)
                break;
            double mean = sum / reps, sd = reps > 1 ? sqrt(fmax(0.0, sum2 / reps - mean * mean)) : 0;
            printf("| %7d | %s%-4d | %8.2f | %8.2f |\n", th[ti], tests[t].kind, tests[t].n, mean, sd);
            if (jf)
                fprintf(jf, "%s{\"threads\": %d, \"test\": \"%s%d\", \"tps\": %.3f, \"stddev\": %.3f}",
                        first ? "" : ", ", th[ti], tests[t].kind, tests[t].n, mean, sd), first = 0;
        }
        fwd_free(f);
        be_free(be);
        if (rc < 0) {
            rc = 1;
            goto out;
        }
    }
    if (jf)
        fprintf(jf, "]}\n");
    rc = 0;
out:
    if (jf)
        fclose(jf);
    free(tok);
    free(pos);
    free(tab);
    free(oidx);
    free(tabs);
    free(logits);
    model_free(m);
    return rc;
}
