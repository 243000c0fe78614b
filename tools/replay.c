/* SPDX-License-Identifier: MIT */
/*
 * replay.c - replays a routing trace (predictor/trace.h) through simulated
 * expert caches and prints, per batch size and policy, the hit rate, the
 * bytes moved per token and the prediction accuracy per lookahead distance.
 *
 *   replay TRACE [--cache PCT | --slots N] [--batch 1,4,16,live]
 *          [--policy lru,lfu,static,lru+pregate,lru+path,combined,belady]
 *          [--k-pred N] [--lookahead D] [--static-share F] [--no-sweep]
 *          [--w-pregate A] [--pregate-decay F] [--w-trans W] [--w-recent W]
 *          [--w-pop W] [--recent N]   (predictor weights, predictor/path.h)
 *
 * Model of a run (same for every policy):
 *   - The trace's tokens are regrouped into batches of B tokens in trace
 *     order ("live": consecutive tokens with the same recorded step).
 *   - A batch runs layer by layer; at a MoE layer each distinct expert the
 *     batch's tokens chose is accessed once, in ascending id order.
 *   - Predictive policies, after the accesses of layer L: predictions made
 *     for layer L+d (d = 1..D) by the batch are released from protection
 *     when L+d has run; new predictions for L+1..L+D are computed per token
 *     (k' ids each), scored against the token's actual experts (precision,
 *     recall per d), and their union is prefetched nearest layer first, rank
 *     order within a layer, protected until that layer has run for this
 *     batch. The path statistics learn from each token after its batch.
 *   - The cache holds experts of all layers in one pool of capacity bytes
 *     (--cache PCT of all expert bytes, default 25; or --slots N experts of
 *     the largest size). Bytes moved = every load (demand, prefetch, pin),
 *     with each layer's expert size from the trace header, so they are exact.
 * Policies: lru; lfu (fewest accesses so far, ties least recent); static
 * (the most accessed experts over the whole run, an oracle count, pinned in
 * --static-share of the capacity, default 0.5, the rest LRU); lru+pregate
 * (the recorded pre-gating lists); lru+path (path statistics only);
 * combined (pregate lists merged with path statistics, predictor/path.h);
 * belady (MIN over the same access string, the bound for any policy
 * without prefetch).
 * Equal bytes: besides k' = --k-pred (default k), each predictive policy is
 * rerun for k' = 1 .. max(2k, m) and the k' whose bytes per token come
 * closest to LRU's is printed in a second table (--no-sweep skips it).
 */
#include "predictor/path.h"
#include "predictor/score.h"
#include "predictor/simcache.h"
#include "predictor/trace.h"

#include "common/err.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum policy { P_LRU, P_LFU, P_STATIC, P_PREGATE, P_PATH, P_COMBINED, P_BELADY, P_COUNT };
static const char *policy_name[P_COUNT] = {"lru", "lfu", "static", "lru+pregate", "lru+path", "combined", "belady"};

struct trace_mem {
    struct trace_info info;
    uint64_t *expert_bytes;
    uint32_t n_tok;
    uint32_t *step, *seq;
    int32_t *ids;   /* n_tok x L x k */
    int32_t *pred;  /* n_tok x L x D x m (NULL when D == 0) */
};

struct run_cfg {
    uint64_t capacity;
    uint32_t k_pred, lookahead;
    double static_share;
    struct pred_path_params pp; /* weights for lru+path and combined (shape set per run) */
};

struct run_out {
    struct simcache_stats st;
    double p[64], r[64]; /* per distance 1..D */
    double p_all, r_all;
};

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s);
    if (!p) {
        fprintf(stderr, "replay: out of memory\n");
        exit(1);
    }
    return p;
}

static int load_trace(const char *path, struct trace_mem *tm)
{
    char err[512];
    struct trace_reader *r = NULL;
    int rc = trace_reader_open(&r, path, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "replay: %s\n", err);
        return rc;
    }
    const struct trace_info *in = trace_reader_info(r);
    tm->info = *in;
    tm->expert_bytes = xcalloc(in->n_layer, 8);
    memcpy(tm->expert_bytes, in->expert_bytes, in->n_layer * 8);
    tm->info.expert_bytes = tm->expert_bytes;
    uint64_t cap = trace_reader_count(r) ? trace_reader_count(r) : 1024;
    const size_t per_ids = (size_t)in->n_layer * in->k, per_pred = (size_t)in->n_layer * in->lookahead * in->m;
    tm->step = xcalloc(cap, 4);
    tm->seq = xcalloc(cap, 4);
    tm->ids = xcalloc(cap * per_ids, 4);
    tm->pred = per_pred ? xcalloc(cap * per_pred, 4) : NULL;
    struct trace_token t;
    uint32_t n = 0;
    while ((rc = trace_reader_next(r, &t)) == 0) {
        if (n == cap) { /* not a regular file: grow */
            cap *= 2;
            tm->step = realloc(tm->step, cap * 4);
            tm->seq = realloc(tm->seq, cap * 4);
            tm->ids = realloc(tm->ids, cap * per_ids * 4);
            if (per_pred)
                tm->pred = realloc(tm->pred, cap * per_pred * 4);
            if (!tm->step || !tm->seq || !tm->ids || (per_pred && !tm->pred)) {
                fprintf(stderr, "replay: out of memory\n");
                exit(1);
            }
        }
        tm->step[n] = t.step;
        tm->seq[n] = t.seq;
        memcpy(tm->ids + n * per_ids, t.ids, per_ids * 4);
        if (per_pred)
            memcpy(tm->pred + n * per_pred, t.pred, per_pred * 4);
        n++;
    }
    if (rc < 0) {
        fprintf(stderr, "replay: %s\n", trace_reader_error(r));
        trace_reader_close(r);
        return rc;
    }
    trace_reader_close(r);
    tm->n_tok = n;
    return 0;
}

/* Batch start indexes (n_batch + 1 entries): groups of B, or by step when B == 0. */
static uint32_t make_batches(const struct trace_mem *tm, uint32_t B, uint32_t *start)
{
    uint32_t nb = 0;
    for (uint32_t i = 0; i < tm->n_tok; i++) {
        bool begin = B ? i % B == 0 : (i == 0 || tm->step[i] != tm->step[i - 1]);
        if (begin)
            start[nb++] = i;
    }
    start[nb] = tm->n_tok;
    return nb;
}

/* The access string of a batching: per batch, per MoE layer, distinct
 * experts ascending. Returns its length; keys written to out if not NULL. */
static size_t access_string(const struct trace_mem *tm, const uint32_t *start, uint32_t nb, uint32_t *out)
{
    const uint32_t L = tm->info.n_layer, E = tm->info.n_expert, K = tm->info.k;
    uint8_t *mark = xcalloc(E, 1);
    size_t n = 0;
    for (uint32_t b = 0; b < nb; b++)
        for (uint32_t l = 0; l < L; l++) {
            if (!tm->expert_bytes[l])
                continue;
            for (uint32_t t = start[b]; t < start[b + 1]; t++)
                for (uint32_t x = 0; x < K; x++) {
                    int32_t e = tm->ids[((size_t)t * L + l) * K + x];
                    if (e >= 0)
                        mark[e] = 1;
                }
            for (uint32_t e = 0; e < E; e++)
                if (mark[e]) {
                    if (out)
                        out[n] = l * E + e;
                    n++;
                    mark[e] = 0;
                }
        }
    free(mark);
    return n;
}

static int cmp_desc_u64_idx(const void *a, const void *b, void *ctx)
{
    const uint64_t *f = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (f[x] != f[y])
        return f[x] > f[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* One simulation of one policy over one batching. */
static int run_policy(const struct trace_mem *tm, const uint32_t *start, uint32_t nb, enum policy pol,
                      const struct run_cfg *cfg, struct run_out *ro)
{
    const struct trace_info *in = &tm->info;
    const uint32_t L = in->n_layer, E = in->n_expert, K = in->k, M = in->m, DT = in->lookahead;
    const uint32_t D = cfg->lookahead, KP = cfg->k_pred;
    const uint32_t n_keys = L * E;
    uint64_t *key_bytes = xcalloc(n_keys, 8);
    for (uint32_t k = 0; k < n_keys; k++)
        key_bytes[k] = tm->expert_bytes[k / E];
    memset(ro, 0, sizeof *ro);
    int rc = 0;

    if (pol == P_BELADY) {
        size_t n = access_string(tm, start, nb, NULL);
        uint32_t *keys = xcalloc(n, 4);
        access_string(tm, start, nb, keys);
        rc = simcache_belady(keys, n, n_keys, key_bytes, cfg->capacity, &ro->st);
        free(keys);
        free(key_bytes);
        return rc;
    }

    struct simcache_params sp = {.n_keys = n_keys, .key_bytes = key_bytes, .capacity_bytes = cfg->capacity,
                                 .evict = pol == P_LFU ? SIMCACHE_LFU : SIMCACHE_LRU};
    struct simcache *c = NULL;
    if ((rc = simcache_init(&c, &sp)) < 0) {
        free(key_bytes);
        return rc;
    }
    if (pol == P_STATIC) {
        size_t n = access_string(tm, start, nb, NULL);
        uint32_t *keys = xcalloc(n, 4);
        access_string(tm, start, nb, keys);
        uint64_t *freq = xcalloc(n_keys, 8);
        for (size_t i = 0; i < n; i++)
            freq[keys[i]]++;
        uint32_t *order = xcalloc(n_keys, 4);
        for (uint32_t k = 0; k < n_keys; k++)
            order[k] = k;
        qsort_r(order, n_keys, 4, cmp_desc_u64_idx, freq);
        uint64_t budget = (uint64_t)(cfg->static_share * (double)cfg->capacity), used = 0;
        for (uint32_t i = 0; i < n_keys && freq[order[i]]; i++) {
            if (used + key_bytes[order[i]] > budget)
                break;
            used += key_bytes[order[i]];
            simcache_pin(c, order[i]);
        }
        free(keys);
        free(freq);
        free(order);
    }

    bool predictive = pol == P_PREGATE || pol == P_PATH || pol == P_COMBINED;
    struct pred_path *pp = NULL;
    struct pred_score *sc = NULL;
    int32_t *pred_out = NULL, *pg = NULL;
    uint32_t *prot = NULL, *n_prot = NULL; /* per target layer: keys protected by this batch */
    uint8_t *mark = xcalloc(n_keys, 1);
    if (predictive && D > 0) {
        struct pred_path_params pp_p = cfg->pp;
        pp_p.n_layer = L;
        pp_p.n_expert = E;
        pp_p.k = K;
        pp_p.lookahead = D;
        if ((rc = pred_path_init(&pp, &pp_p)) < 0 || (rc = pred_score_init(&sc, L, D)) < 0)
            goto out;
        pred_out = xcalloc((size_t)D * KP, 4);
        pg = xcalloc((size_t)D * (M ? M : 1), 4);
        prot = xcalloc((size_t)L * D * E, 4); /* a layer gets at most E keys from each of D layers */
        n_prot = xcalloc(L, 4);
    }
    enum pred_mode mode = pol == P_PREGATE ? PRED_MODE_PREGATE : pol == P_PATH ? PRED_MODE_PATH : PRED_MODE_COMBINED;

    for (uint32_t b = 0; b < nb; b++) {
        for (uint32_t l = 0; l < L; l++) {
            if (tm->expert_bytes[l]) { /* hot: the layer's accesses */
                for (uint32_t t = start[b]; t < start[b + 1]; t++)
                    for (uint32_t x = 0; x < K; x++) {
                        int32_t e = tm->ids[((size_t)t * L + l) * K + x];
                        if (e >= 0)
                            mark[e] = 1;
                    }
                for (uint32_t e = 0; e < E; e++)
                    if (mark[e]) {
                        simcache_access(c, l * E + e);
                        mark[e] = 0;
                    }
            }
            if (!pp)
                continue;
            for (uint32_t i = 0; i < n_prot[l]; i++)
                simcache_unprotect(c, prot[(size_t)l * D * E + i]);
            n_prot[l] = 0;
            uint32_t nd = D < L - 1 - l ? D : L - 1 - l;
            if (nd == 0 || !tm->expert_bytes[l])
                continue;
            /* Predict per token; mark the union per target layer in rank order. */
            for (uint32_t t = start[b]; t < start[b + 1]; t++) {
                const int32_t *cur = tm->ids + ((size_t)t * L + l) * K;
                const int32_t *list = NULL;
                if (mode != PRED_MODE_PATH && DT > 0) {
                    for (uint32_t d = 1; d <= nd; d++)
                        for (uint32_t r = 0; r < M; r++)
                            pg[(d - 1) * M + r] = d <= DT ? tm->pred[(((size_t)t * L + l) * DT + d - 1) * M + r] : -1;
                    list = pg;
                }
                pred_path_predict(pp, mode, tm->seq[t], l, cur, list, M, nd, KP, pred_out);
                for (uint32_t d = 1; d <= nd; d++) {
                    uint32_t tl = l + d;
                    const int32_t *row = pred_out + (size_t)(d - 1) * KP;
                    if (tm->expert_bytes[tl])
                        pred_score_add(sc, d, tl, row, KP, tm->ids + ((size_t)t * L + tl) * K, K);
                    for (uint32_t r = 0; r < KP; r++) {
                        if (row[r] < 0)
                            continue;
                        uint32_t key = tl * E + (uint32_t)row[r];
                        if (!mark[key]) {
                            mark[key] = 1;
                            prot[(size_t)tl * D * E + n_prot[tl]++] = key;
                        }
                    }
                }
            }
            /* Prefetch nearest layer first; within a layer in the order collected. */
            for (uint32_t d = 1; d <= nd; d++) {
                uint32_t tl = l + d;
                for (uint32_t i = 0; i < n_prot[tl]; i++) {
                    uint32_t key = prot[(size_t)tl * D * E + i];
                    if (mark[key]) {
                        simcache_prefetch(c, key);
                        mark[key] = 0;
                    }
                }
            }
        }
        if (pp)
            for (uint32_t t = start[b]; t < start[b + 1]; t++)
                pred_path_update(pp, tm->seq[t], tm->ids + (size_t)t * L * K);
    }
    simcache_finish(c);
    ro->st = *simcache_get_stats(c);
    if (sc) {
        for (uint32_t d = 1; d <= D && d <= 64; d++) {
            struct pred_score_total s = pred_score_get(sc, d, -1);
            ro->p[d - 1] = s.precision;
            ro->r[d - 1] = s.recall;
        }
        struct pred_score_total s = pred_score_get(sc, 0, -1);
        ro->p_all = s.precision;
        ro->r_all = s.recall;
    }
out:
    simcache_free(c);
    pred_path_free(pp);
    pred_score_free(sc);
    free(pred_out);
    free(pg);
    free(prot);
    free(n_prot);
    free(mark);
    free(key_bytes);
    return rc;
}

/* ---- command line ---- */

static void usage(void)
{
    fprintf(stderr,
            "usage: replay TRACE [--cache PCT | --slots N] [--batch 1,4,16,live]\n"
            "       [--policy lru,lfu,static,lru+pregate,lru+path,combined,belady]\n"
            "       [--k-pred N] [--lookahead D] [--static-share F] [--no-sweep]\n"
            "       [--w-pregate A] [--pregate-decay F] [--w-trans W] [--w-recent W] [--w-pop W] [--recent N]\n");
}

static void print_row(const char *name, uint32_t kp, const struct run_out *ro, uint32_t n_tok, uint32_t D,
                      bool predictive)
{
    const struct simcache_stats *st = &ro->st;
    double hit = st->accesses ? 100.0 * (double)st->hits / (double)st->accesses : 0;
    char kps[16];
    snprintf(kps, sizeof kps, "%u", kp);
    printf("  %-14s %3s %6.2f %10.1f %9.1f", name, predictive ? kps : "-", hit,
           (double)st->bytes_loaded / n_tok / 1024.0, (double)st->bytes_prefetched / n_tok / 1024.0);
    if (predictive) {
        printf("  %7llu %7llu %7llu ", (unsigned long long)st->pf.issued, (unsigned long long)st->pf.used,
               (unsigned long long)st->pf.wasted);
        for (uint32_t d = 0; d < D; d++)
            printf(" %5.3f/%5.3f", ro->p[d], ro->r[d]);
    }
    printf("\n");
}

#ifdef TESTING /* tests/test_predictor.c includes this file and calls the pieces */
#define main replay_main
int replay_main(int argc, char **argv);
#endif
int main(int argc, char **argv)
{
    const char *path = NULL, *batches = "1,4,16", *policies = "lru,lfu,static,lru+pregate,lru+path,combined,belady";
    double pct = 25, static_share = 0.5;
    long slots = -1, k_pred = -1, lookahead = -1;
    bool sweep = true;
    struct pred_path_params pp_w = pred_path_params_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--cache") && has) pct = atof(argv[++i]);
        else if (!strcmp(a, "--slots") && has) slots = atol(argv[++i]);
        else if (!strcmp(a, "--batch") && has) batches = argv[++i];
        else if (!strcmp(a, "--policy") && has) policies = argv[++i];
        else if (!strcmp(a, "--k-pred") && has) k_pred = atol(argv[++i]);
        else if (!strcmp(a, "--lookahead") && has) lookahead = atol(argv[++i]);
        else if (!strcmp(a, "--static-share") && has) static_share = atof(argv[++i]);
        else if (!strcmp(a, "--no-sweep")) sweep = false;
        else if (!strcmp(a, "--w-pregate") && has) pp_w.w_pregate = (float)atof(argv[++i]);
        else if (!strcmp(a, "--pregate-decay") && has) pp_w.pregate_decay = (float)atof(argv[++i]);
        else if (!strcmp(a, "--w-trans") && has) pp_w.w_trans = (float)atof(argv[++i]);
        else if (!strcmp(a, "--w-recent") && has) pp_w.w_recent = (float)atof(argv[++i]);
        else if (!strcmp(a, "--w-pop") && has) pp_w.w_pop = (float)atof(argv[++i]);
        else if (!strcmp(a, "--recent") && has) pp_w.recent = (uint32_t)atol(argv[++i]);
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (a[0] != '-' && !path) path = a;
        else { usage(); return 2; }
    }
    if (!path) {
        usage();
        return 2;
    }
    struct trace_mem tm = {0};
    if (load_trace(path, &tm) < 0)
        return 1;
    const struct trace_info *in = &tm.info;
    if (tm.n_tok == 0) {
        fprintf(stderr, "replay: %s: no tokens\n", path);
        return 1;
    }
    bool pol_on[P_COUNT] = {0};
    char *pl = strdup(policies);
    for (char *sv = NULL, *tok = strtok_r(pl, ",", &sv); tok; tok = strtok_r(NULL, ",", &sv)) {
        int f = -1;
        for (int p = 0; p < P_COUNT; p++)
            if (!strcmp(tok, policy_name[p]))
                f = p;
        if (f < 0) {
            fprintf(stderr, "replay: unknown policy '%s'\n", tok);
            return 2;
        }
        pol_on[f] = true;
    }
    free(pl);
    uint64_t total = 0, maxb = 0;
    uint32_t n_moe = 0;
    for (uint32_t l = 0; l < in->n_layer; l++) {
        total += in->expert_bytes[l] * in->n_expert;
        if (in->expert_bytes[l] > maxb) maxb = in->expert_bytes[l];
        n_moe += in->expert_bytes[l] != 0;
    }
    struct run_cfg cfg = {.static_share = static_share, .pp = pp_w};
    cfg.capacity = slots >= 0 ? (uint64_t)slots * maxb : (uint64_t)(pct / 100.0 * (double)total);
    cfg.k_pred = k_pred > 0 ? (uint32_t)k_pred : in->k;
    if (cfg.k_pred > in->n_expert) cfg.k_pred = in->n_expert;
    cfg.lookahead = lookahead >= 0 ? (uint32_t)lookahead : (in->lookahead ? in->lookahead : 1);
    if (cfg.lookahead > in->n_layer - 1) cfg.lookahead = in->n_layer - 1;
    if (cfg.lookahead > 64) cfg.lookahead = 64;

    printf("trace %s: %u tokens, %u layers (%u MoE), %u experts, k %u, recorded lookahead %u (m %u)\n", path,
           tm.n_tok, in->n_layer, n_moe, in->n_expert, in->k, in->lookahead, in->m);
    printf("cache %.1f MiB of %.1f MiB expert bytes (%.1f%%, %.1f experts of the largest size); "
           "lookahead %u, k' %u\n",
           cfg.capacity / 1048576.0, total / 1048576.0, 100.0 * cfg.capacity / total,
           maxb ? (double)cfg.capacity / maxb : 0, cfg.lookahead, cfg.k_pred);
    if (in->lookahead == 0 && (pol_on[P_PREGATE] || pol_on[P_COMBINED]))
        printf("note: the trace has no pre-gating lists: lru+pregate prefetches nothing and combined is "
               "lru+path\n");

    uint32_t *start = xcalloc(tm.n_tok + 1, 4);
    char *bl = strdup(batches);
    for (char *sv = NULL, *tok = strtok_r(bl, ",", &sv); tok; tok = strtok_r(NULL, ",", &sv)) {
        uint32_t B = strcmp(tok, "live") ? (uint32_t)atol(tok) : 0;
        if (strcmp(tok, "live") && B == 0) {
            fprintf(stderr, "replay: bad batch size '%s'\n", tok);
            return 2;
        }
        uint32_t nb = make_batches(&tm, B, start);
        clock_t t0 = clock();
        printf("\nbatch %s: %u batches, %.2f distinct experts per MoE layer per batch\n", tok, nb,
               (double)access_string(&tm, start, nb, NULL) / nb / (n_moe ? n_moe : 1));
        printf("  %-14s %3s %6s %10s %9s  %7s %7s %7s  precision/recall at d = 1..%u\n", "policy", "k'",
               "hit%", "KiB/token", "pf KiB/t", "issued", "used", "wasted", cfg.lookahead);
        struct run_out lru = {0}, ro;
        bool have_lru = false;
        for (int p = 0; p < P_COUNT; p++) {
            if (!pol_on[p] && !(p == P_LRU && sweep))
                continue;
            int rc = run_policy(&tm, start, nb, (enum policy)p, &cfg, &ro);
            if (rc < 0) {
                fprintf(stderr, "replay: %s: %s\n", policy_name[p], err_str(rc));
                return 1;
            }
            if (p == P_LRU) {
                lru = ro;
                have_lru = true;
                if (!pol_on[p])
                    continue;
            }
            bool pr = p == P_PREGATE || p == P_PATH || p == P_COMBINED;
            char name[32];
            snprintf(name, sizeof name, "%s", policy_name[p]);
            print_row(name, cfg.k_pred, &ro, tm.n_tok, cfg.lookahead, pr);
        }
        if (sweep && have_lru) {
            double lru_b = (double)lru.st.bytes_loaded;
            printf("  equal bytes (k' with bytes moved closest to LRU's %.1f KiB/token):\n",
                   lru_b / tm.n_tok / 1024.0);
            uint32_t kmax = 2 * in->k > in->m ? 2 * in->k : in->m;
            if (kmax > in->n_expert) kmax = in->n_expert;
            for (int p = P_PREGATE; p <= P_COMBINED; p++) {
                if (!pol_on[p])
                    continue;
                struct run_out best = {0};
                uint32_t best_k = 0;
                double best_gap = INFINITY;
                for (uint32_t kp = 1; kp <= kmax; kp++) {
                    struct run_cfg c2 = cfg;
                    c2.k_pred = kp;
                    if (run_policy(&tm, start, nb, (enum policy)p, &c2, &ro) < 0)
                        return 1;
                    double gap = fabs((double)ro.st.bytes_loaded - lru_b);
                    if (gap < best_gap) {
                        best_gap = gap;
                        best = ro;
                        best_k = kp;
                    }
                }
                char name[32];
                snprintf(name, sizeof name, "%s@%u", policy_name[p], best_k);
                print_row(name, best_k, &best, tm.n_tok, cfg.lookahead, true);
            }
        }
        printf("  (%.2f s)\n", (double)(clock() - t0) / CLOCKS_PER_SEC);
    }
    free(bl);
    free(start);
    free(tm.expert_bytes);
    free(tm.step);
    free(tm.seq);
    free(tm.ids);
    free(tm.pred);
    return 0;
}
