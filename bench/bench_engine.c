/* SPDX-License-Identifier: MIT */
/*
 * bench_engine.c - the engine under concurrent load (continuous batching):
 * aggregate generation tokens/s with 1, 4 and 16 concurrent requests (and the
 * 16-vs-1 ratio, whose target is 3x), time to
 * first token under load, and the time to first token of a second chat turn
 * with a 2,000-token history, with and without prefix reuse.
 *
 * usage: bench_engine MODEL [-t THREADS] [-n TOKENS] [-p PROMPT_TOKENS] [-c ONLY_CONCURRENCY[,...]] [-r ROUNDS] [-q]
 * (-c: only these concurrency levels, e.g. -c 1,16, and no chat-turn test)
 *
 * The levels run in -r rounds (3), each round 1, 4, 16 back to back, and
 * the table gives each level's median over the rounds; the 16-vs-1 ratio is
 * the median of the rounds' own ratios. This machine's memory bandwidth
 * drifts by up to 2x over tens of seconds (bench_kernels -B), which moves
 * one stream (bound by memory) far more than 16 (bound by compute in part):
 * a ratio of two runs a minute apart measures the drift as much as the
 * engine, one of runs seconds apart much less.
 *
 * Scheduler comparison (--sched-compare): N concurrent requests (64), at
 * most S sequences per step (--step-seqs 8) out of P admitted (--parallel
 * 32; the engine admits at most S x (max_skip + 1)), the expert cache at
 * --expert-cache (25%), run under fcfs and regroup alternately --reps times
 * on the same engine build: aggregate tokens/s, distinct experts per layer
 * per step (and uniform routing's), cache hit rate, bytes loaded per
 * generated token, p50/p99 time to first token and inter-token latency, and
 * regroup / fcfs. --topics T draws each prompt from one topic of a model
 * written with `mkmodel --plant` (T topics; request i gets topic i mod T).
 */
#include "engine/engine.h"
#include "common/log.h"
#include "tools/plant.h"

#include <pthread.h>
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

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;
};

static void on_notify(void *ud)
{
    struct waiter *w = ud;
    pthread_mutex_lock(&w->mu);
    w->ready = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

struct run_stats {
    double wall, agg_tps, ttft_mean, ttft_max, itl_mean, decode_tps;
    int64_t gen;
};

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* n concurrent requests of prompt_len random tokens, gen tokens each. */
static int run_load(struct engine *e, int n, int prompt_len, int gen, uint64_t seed, struct run_stats *st)
{
    struct waiter w = {.ready = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    struct eng_req **r = calloc((size_t)n, sizeof *r);
    int32_t *p = malloc((size_t)prompt_len * sizeof *p);
    double *first = calloc((size_t)n, sizeof *first), *last = calloc((size_t)n, sizeof *last);
    int *ntok = calloc((size_t)n, sizeof *ntok), *done = calloc((size_t)n, sizeof *done);
    double *stamps = malloc((size_t)n * (size_t)gen * sizeof *stamps);
    int64_t n_stamps = 0;
    struct eng_req_params rp = eng_req_params_default();
    rp.sample.temperature = 0;
    rp.max_tokens = gen;
    rp.ignore_eos = true;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < prompt_len; j++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            p[j] = (int32_t)((seed >> 33) % 5000);
        }
        if (eng_submit(e, p, prompt_len, &rp, on_notify, &w, &r[i]) < 0) {
            fprintf(stderr, "submit failed\n");
            return -1;
        }
    }
    int left = n;
    while (left) {
        pthread_mutex_lock(&w.mu);
        while (!w.ready)
            pthread_cond_wait(&w.cv, &w.mu);
        w.ready = 0;
        pthread_mutex_unlock(&w.mu);
        for (int i = 0; i < n; i++) {
            struct eng_event ev;
            while (!done[i] && eng_poll(r[i], &ev) == 0) {
                double t = now_s();
                if (ev.type == ENG_EV_DELTA) {
                    stamps[n_stamps++] = t - t0;
                    if (ntok[i]++ == 0)
                        first[i] = t - t0;
                    last[i] = t - t0;
                } else {
                    done[i] = 1;
                    left--;
                }
                eng_event_clear(&ev);
            }
        }
    }
    st->wall = now_s() - t0;
    st->gen = 0;
    double itl = 0;
    for (int i = 0; i < n; i++) {
        st->gen += ntok[i];
        if (ntok[i] > 1)
            itl += (last[i] - first[i]) / (ntok[i] - 1);
        eng_release(r[i]);
    }
    st->agg_tps = st->gen / st->wall;
    qsort(first, (size_t)n, sizeof *first, cmp_d);
    /* Decode phase: once every request has its first token. */
    int64_t after = 0;
    for (int64_t k = 0; k < n_stamps; k++)
        after += stamps[k] > first[n - 1];
    st->decode_tps = st->wall > first[n - 1] ? after / (st->wall - first[n - 1]) : 0;
    free(stamps);
    double s = 0;
    for (int i = 0; i < n; i++)
        s += first[i];
    st->ttft_mean = s / n;
    st->ttft_max = first[n - 1];
    st->itl_mean = itl / n;
    free(r); free(p); free(first); free(last); free(ntok); free(done);
    return 0;
}

/* Time to first token of a request (the prompt's prefill). */
static double ttft(struct engine *e, const int32_t *p, int n)
{
    struct waiter w = {.ready = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    struct eng_req_params rp = eng_req_params_default();
    rp.sample.temperature = 0;
    rp.max_tokens = 1;
    struct eng_req *r;
    double t0 = now_s(), t = 0;
    if (eng_submit(e, p, n, &rp, on_notify, &w, &r) < 0)
        return -1;
    int fin = 0;
    while (!fin) {
        pthread_mutex_lock(&w.mu);
        while (!w.ready)
            pthread_cond_wait(&w.cv, &w.mu);
        w.ready = 0;
        pthread_mutex_unlock(&w.mu);
        struct eng_event ev;
        while (eng_poll(r, &ev) == 0) {
            if (ev.type == ENG_EV_DELTA && t == 0)
                t = now_s() - t0;
            if (ev.type != ENG_EV_DELTA)
                fin = 1;
            eng_event_clear(&ev);
        }
    }
    eng_release(r);
    return t;
}

/* ---- scheduler comparison ---- */

struct cmp_opts {
    const char *model, *xcache;
    int threads, n_req, step_seqs, parallel, max_skip, gen, prompt_len, topics, reps;
};

struct cmp_res {
    double wall, tps, distinct, uniform, ddistinct, duniform, hit_rate, bytes_per_tok, ttft50, ttft99, itl50, itl99;
    double on_topic; /* share of generated tokens of their prompt's topic (--topics) */
    uint32_t max_wait, max_overtaken;
    uint64_t admit_regrouped;
    int64_t gen;
};

static double pct(double *v, int64_t n, double q)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    int64_t i = (int64_t)(q * (double)(n - 1) + 0.5);
    return v[i];
}

static int cmp_run(const struct cmp_opts *o, enum eng_sched pol, struct cmp_res *cr)
{
    struct eng_params ep = eng_params_default();
    ep.model_path = o->model;
    ep.n_threads = o->threads;
    ep.parallel = o->parallel;
    ep.step_seqs = o->step_seqs;
    ep.sched = pol;
    ep.max_skip = o->max_skip;
    ep.batch_tokens = 512;
    ep.ctx_size = o->prompt_len + o->gen + 16;
    ep.max_queued = o->n_req + 8;
    ep.expert_cache = o->xcache;
    ep.store_always = true;
    char err[512];
    struct engine *e;
    if (eng_init(&e, &ep, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    const int n = o->n_req;
    struct waiter w = {.ready = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    struct eng_req **r = calloc((size_t)n, sizeof *r);
    int32_t *p = malloc((size_t)o->prompt_len * sizeof *p);
    double *first = calloc((size_t)n, sizeof *first), *last = calloc((size_t)n, sizeof *last);
    int *ntok = calloc((size_t)n, sizeof *ntok), *done = calloc((size_t)n, sizeof *done);
    double *itl = malloc((size_t)n * (size_t)o->gen * sizeof *itl);
    int64_t n_itl = 0, n_on_topic = 0;
    struct eng_req_params rp = eng_req_params_default();
    rp.sample.temperature = 0;
    rp.max_tokens = o->gen;
    rp.ignore_eos = true;
    uint64_t seed = 1234;
    const uint32_t vocab = 4096; /* the planted model's synthetic vocabulary; ids valid in every model here */
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < o->prompt_len; j++) {
            uint32_t t;
            do {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                t = (uint32_t)((seed >> 33) % vocab);
            } while (o->topics > 0 && plant_topic_of(t, (uint32_t)o->topics) != (uint32_t)(i % o->topics));
            p[j] = (int32_t)t;
        }
        if (eng_submit(e, p, o->prompt_len, &rp, on_notify, &w, &r[i]) < 0) {
            fprintf(stderr, "submit failed\n");
            return -1;
        }
    }
    int left = n;
    while (left) {
        pthread_mutex_lock(&w.mu);
        while (!w.ready)
            pthread_cond_wait(&w.cv, &w.mu);
        w.ready = 0;
        pthread_mutex_unlock(&w.mu);
        for (int i = 0; i < n; i++) {
            struct eng_event ev;
            while (!done[i] && eng_poll(r[i], &ev) == 0) {
                double t = now_s() - t0;
                if (ev.type == ENG_EV_DELTA) {
                    if (o->topics > 0 && ev.token >= 0 &&
                        plant_topic_of((uint32_t)ev.token, (uint32_t)o->topics) == (uint32_t)(i % o->topics))
                        n_on_topic++;
                    if (ntok[i]++ == 0)
                        first[i] = t;
                    else
                        itl[n_itl++] = t - last[i];
                    last[i] = t;
                } else {
                    done[i] = 1;
                    left--;
                }
                eng_event_clear(&ev);
            }
        }
    }
    cr->wall = now_s() - t0;
    cr->gen = 0;
    for (int i = 0; i < n; i++) {
        cr->gen += ntok[i];
        eng_release(r[i]);
    }
    struct eng_metrics m;
    eng_get_metrics(e, &m);
    const struct eng_sched_stats *ss = &m.sched;
    uint64_t lookups = m.xs.hits + m.xs.hits_loading + m.xs.misses;
    cr->tps = (double)cr->gen / cr->wall;
    cr->on_topic = cr->gen ? (double)n_on_topic / (double)cr->gen : 0;
    cr->distinct = ss->layer_steps ? (double)ss->distinct_sum / (double)ss->layer_steps : 0;
    cr->uniform = ss->layer_steps ? ss->uniform_sum / (double)ss->layer_steps : 0;
    cr->ddistinct = ss->decode_layer_steps ? (double)ss->decode_distinct_sum / (double)ss->decode_layer_steps : 0;
    cr->duniform = ss->decode_layer_steps ? ss->decode_uniform_sum / (double)ss->decode_layer_steps : 0;
    cr->hit_rate = lookups ? (double)m.xs.hits / (double)lookups : 0;
    cr->bytes_per_tok = cr->gen ? (double)m.xs.bytes_disk / (double)cr->gen : 0;
    cr->max_wait = ss->max_wait_steps;
    cr->max_overtaken = ss->max_admit_overtaken;
    cr->admit_regrouped = ss->admit_regrouped;
    cr->ttft50 = pct(first, n, 0.5);
    cr->ttft99 = pct(first, n, 0.99);
    cr->itl50 = pct(itl, n_itl, 0.5);
    cr->itl99 = pct(itl, n_itl, 0.99);
    eng_free(e);
    free(r); free(p); free(first); free(last); free(ntok); free(done); free(itl);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return 0;
}

static int sched_compare(const struct cmp_opts *o)
{
    printf("scheduler comparison: %s\n  %d requests (prompt %d, %d generated, greedy), step_seqs %d, parallel %d, "
           "max_skip %d, expert cache %s%s\n", o->model, o->n_req, o->prompt_len, o->gen, o->step_seqs,
           o->parallel, o->max_skip, o->xcache, o->topics ? ", prompts drawn one topic each" : "");
    enum { NM = 15 };
    static const char *names[NM] = {"agg tok/s", "distinct experts/layer/step", "  uniform routing",
                                    "  decode steps only", "  decode, uniform routing",
                                    "hit rate %", "MiB loaded / gen token", "TTFT p50 s", "TTFT p99 s",
                                    "ITL p50 ms", "ITL p99 ms", "longest wait (steps)",
                                    "admitted out of order", "most overtaken at admission",
                                    "generated on prompt topic %"};
    double v[2][NM][16];
    int reps = o->reps < 1 ? 1 : o->reps > 16 ? 16 : o->reps;
    for (int k = 0; k < reps; k++)
        for (int pol = 0; pol < 2; pol++) {
            struct cmp_res cr;
            if (cmp_run(o, pol ? ENG_SCHED_REGROUP : ENG_SCHED_FCFS, &cr) < 0)
                return 1;
            double x[NM] = {cr.tps, cr.distinct, cr.uniform, cr.ddistinct, cr.duniform, 100 * cr.hit_rate, cr.bytes_per_tok / 1048576.0,
                            cr.ttft50, cr.ttft99, 1e3 * cr.itl50, 1e3 * cr.itl99, cr.max_wait,
                            (double)cr.admit_regrouped, cr.max_overtaken, 100 * cr.on_topic};
            for (int j = 0; j < NM; j++)
                v[pol][j][k] = x[j];
            fprintf(stderr, "  rep %d %s: %.2f tok/s, %.2f distinct, wall %.1f s\n", k + 1, pol ? "regroup" : "fcfs",
                    cr.tps, cr.distinct, cr.wall);
        }
    printf("%-28s %22s %22s %8s\n", "(mean [min..max] of reps)", "fcfs", "regroup", "ratio");
    for (int j = 0; j < NM; j++) {
        if (j == NM - 1 && !o->topics)
            break; /* no topics, no topic figure */
        double mean[2], lo[2], hi[2];
        for (int pol = 0; pol < 2; pol++) {
            mean[pol] = 0;
            lo[pol] = hi[pol] = v[pol][j][0];
            for (int k = 0; k < reps; k++) {
                mean[pol] += v[pol][j][k] / reps;
                lo[pol] = v[pol][j][k] < lo[pol] ? v[pol][j][k] : lo[pol];
                hi[pol] = v[pol][j][k] > hi[pol] ? v[pol][j][k] : hi[pol];
            }
        }
        char a[2][64];
        for (int pol = 0; pol < 2; pol++)
            snprintf(a[pol], sizeof a[pol], "%.3f [%.3f..%.3f]", mean[pol], lo[pol], hi[pol]);
        printf("%-28s %22s %22s %8.3f\n", names[j], a[0], a[1], mean[0] ? mean[1] / mean[0] : 0.0);
    }
    return 0;
}

/* Whether the comma-separated list names concurrency level c. */
static int conc_listed(const char *list, int c)
{
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (atoi(p) == c)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--sched-compare") != 0)
            continue;
        struct cmp_opts o = {.model = argv[1], .xcache = "25%", .n_req = 64, .step_seqs = 8, .parallel = 32,
                             .max_skip = 4, .gen = 32, .prompt_len = 32, .reps = 2};
        for (int j = 2; j < argc; j++) {
            const char *a = argv[j], *b = j + 1 < argc ? argv[j + 1] : NULL;
            if (!strcmp(a, "-t") && b) o.threads = atoi(argv[++j]);
            else if (!strcmp(a, "-n") && b) o.gen = atoi(argv[++j]);
            else if (!strcmp(a, "-p") && b) o.prompt_len = atoi(argv[++j]);
            else if (!strcmp(a, "--requests") && b) o.n_req = atoi(argv[++j]);
            else if (!strcmp(a, "--step-seqs") && b) o.step_seqs = atoi(argv[++j]);
            else if (!strcmp(a, "--parallel") && b) o.parallel = atoi(argv[++j]);
            else if (!strcmp(a, "--max-skip") && b) o.max_skip = atoi(argv[++j]);
            else if (!strcmp(a, "--expert-cache") && b) o.xcache = argv[++j];
            else if (!strcmp(a, "--topics") && b) o.topics = atoi(argv[++j]);
            else if (!strcmp(a, "--reps") && b) o.reps = atoi(argv[++j]);
        }
        log_set_level(LOG_LEVEL_WARN);
        return sched_compare(&o);
    }
    if (argc < 2) {
        fprintf(stderr, "usage: bench_engine MODEL [-t THREADS] [-n TOKENS] [-p PROMPT_TOKENS] [-c ONLY_CONCURRENCY[,...]] [-r ROUNDS] [-q]\n"
                        "       bench_engine MODEL --sched-compare [--requests 64] [--step-seqs 8] [--parallel 32]\n"
                        "           [--max-skip 4] [--expert-cache 25%%] [--topics T] [--reps 2] [-n 32] [-p 32] [-t N]\n");
        return 2;
    }
    int threads = 0, gen = 128, prompt_len = 32;
    int quick = 0, only = 0, rounds = 3;
    const char *only_list = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) gen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) prompt_len = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-q")) quick = 1;
        else if (!strcmp(argv[i], "-c") && i + 1 < argc) only_list = argv[++i], only = 1;
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) rounds = atoi(argv[++i]);
    }
    if (rounds < 1 || rounds > 9) {
        fprintf(stderr, "bench_engine: -r takes 1 to 9 rounds\n");
        return 2;
    }
    log_set_level(LOG_LEVEL_WARN);
    struct eng_params ep = eng_params_default();
    ep.model_path = argv[1];
    ep.n_threads = threads;
    ep.parallel = 16;
    ep.batch_tokens = 512;
    ep.ctx_size = 4096;
    ep.kv_tokens = 16 * 512 + 4096;
    char err[512];
    struct engine *e;
    if (eng_init(&e, &ep, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("engine: %s, parallel 16, batch 512, KV f16, greedy, prompt %d tokens, %d generated each\n",
           argv[1], prompt_len, gen);
    printf("agg tok/s: generated tokens / wall time from the first submit to the last token;\n"
           "decode tok/s: the same once every request has its first token (prefill done);\n"
           "each figure the median of %d rounds of 1, 4, 16 run back to back\n", rounds);
    printf("%-11s %8s %10s %7s %12s %7s %12s %11s %9s\n", "concurrent", "gen tok", "agg tok/s", "vs 1",
           "decode tok/s", "vs 1", "TTFT mean s", "TTFT max s", "ITL ms");
    enum { MAX_ROUNDS = 9 };
    int conc[3] = {1, 4, 16};
    struct run_stats st[MAX_ROUNDS][3];
    double ratio[MAX_ROUNDS], dratio[MAX_ROUNDS];
    int n_ratio = 0;
    for (int r = 0; r < rounds; r++) {
        double a1 = 0, d1 = 0;
        fprintf(stderr, "round %d:", r + 1);
        for (int k = 0; k < 3; k++) {
            memset(&st[r][k], 0, sizeof st[r][k]);
            if (only && !conc_listed(only_list, conc[k]))
                continue;
            /* new prompts every round: a repeated one would come from the prefix cache */
            if (run_load(e, conc[k], prompt_len, quick ? gen / 2 : gen, 100 + (uint64_t)k + 1000 * (uint64_t)r,
                         &st[r][k]) < 0)
                return 1;
            fprintf(stderr, " %d: %.1f tok/s", conc[k], st[r][k].agg_tps);
            if (conc[k] == 1) {
                a1 = st[r][k].agg_tps;
                d1 = st[r][k].decode_tps;
            }
            if (conc[k] == 16 && a1 > 0) {
                ratio[n_ratio] = st[r][k].agg_tps / a1;
                dratio[n_ratio++] = d1 > 0 ? st[r][k].decode_tps / d1 : 0.0;
                fprintf(stderr, " (16 vs 1: %.2fx)", ratio[n_ratio - 1]);
            }
        }
        fprintf(stderr, "\n");
    }
    double base = 0, dbase = 0;
    for (int k = 0; k < 3; k++) {
        if (only && !conc_listed(only_list, conc[k]))
            continue;
        double v[7][MAX_ROUNDS], med[7];
        for (int r = 0; r < rounds; r++) {
            v[0][r] = st[r][k].agg_tps;
            v[1][r] = st[r][k].decode_tps;
            v[2][r] = st[r][k].ttft_mean;
            v[3][r] = st[r][k].ttft_max;
            v[4][r] = st[r][k].itl_mean;
        }
        for (int c = 0; c < 5; c++)
            med[c] = pct(v[c], rounds, 0.5);
        if (base == 0) {
            base = med[0];
            dbase = med[1];
        }
        printf("%-11d %8lld %10.2f %6.2fx %12.2f %6.2fx %12.3f %11.3f %9.2f\n", conc[k], (long long)st[0][k].gen,
               med[0], med[0] / base, med[1], med[1] / dbase, med[2], med[3], med[4] * 1e3);
    }
    /* The acceptance figure of continuous batching: 16 concurrent requests
     * should generate at least 3x the tokens/s of one. */
    if (n_ratio > 0) {
        double lo = ratio[0], hi = ratio[0];
        for (int r = 1; r < n_ratio; r++) {
            lo = ratio[r] < lo ? ratio[r] : lo;
            hi = ratio[r] > hi ? ratio[r] : hi;
        }
        printf("16 vs 1 concurrent: aggregate %.2fx (rounds %.2f..%.2f), decode %.2fx; median of %d rounds "
               "(target >= 3x aggregate)\n",
               pct(ratio, n_ratio, 0.5), lo, hi, pct(dratio, n_ratio, 0.5), n_ratio);
    }
    eng_free(e);
    if (only)
        return 0;

    /* Second chat turn with a 2,000-token history, with and without prefix reuse. */
    int32_t *hist = malloc(2100 * sizeof *hist);
    uint64_t s = 77;
    for (int i = 0; i < 2100; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        hist[i] = (int32_t)((s >> 33) % 5000);
    }
    printf("\nsecond chat turn: 2,000-token history + 100 new tokens\n");
    for (int reuse = 1; reuse >= 0; reuse--) {
        ep.parallel = 2;
        ep.prefix_cache = reuse;
        ep.kv_tokens = 0;
        if (eng_init(&e, &ep, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        double t1 = ttft(e, hist, 2000);
        double t2 = ttft(e, hist, 2100);
        printf("  prefix reuse %-3s  first turn TTFT %.3f s, second turn TTFT %.3f s\n", reuse ? "on" : "off",
               t1, t2);
        eng_free(e);
    }
    free(hist);
    return 0;
}
