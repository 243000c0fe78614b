/* SPDX-License-Identifier: MIT */
/*
 * test_tools_planted.c - mkmodel's planted routing structure, measured from
 * the routing itself. The test writes three qwen3moe models of one small
 * shape (close to the trained dev model's: hidden 128, 16 experts, top-2) -
 * plain random, --plant, and layer correlation with drift alone - runs the
 * same synthetic "documents" through each (a document draws most of its
 * tokens from one topic of tools/plant.h's token -> topic map), records every
 * layer's top-k through the forward pass's route callback and checks that:
 *   - expert popularity is skewed on --plant and near uniform on random;
 *   - a layer-to-layer transition table (fitted on half the documents)
 *     predicts layer L+1's experts from layer L's clearly better on planted;
 *   - tokens of one topic share experts more than tokens of different topics.
 * Every figure is printed (the README quotes them as "synthetic").
 * MOED_PLANTED_FLAGS="--plant --plant-skew 0.5 ..." measures one more model
 * of the same shape with those flags and prints its figures (no checks).
 *
 * With MOED_PLANTED_COMPARE=MODEL.gguf (a model with a real vocabulary, e.g.
 * the trained qwen3moe dev model) it also prints the same figures for that
 * model on real text (documents from a few kinds of system files, the kind
 * standing in for the topic) and checks nothing about it.
 */
#include "tests/testutil.h"

#include "engine/forward.h"
#include "engine/model.h"
#include "engine/vocab.h"
#include "kernels/backend.h"
#include "tools/plant.h"

#include <dirent.h>
#include <string.h>
#include <unistd.h>

#define N_TOPICS 16     /* --plant's default */
#define DOC_LEN 64
#define N_DOC 96
#define MAX_LAYER 16
#define MAX_EXPERT 64
#define MAX_K 8

/* ---- the routing trace ---- */

struct trace {
    int n_layer, n_expert, k;
    int n_doc, n_tok;           /* n_tok = n_doc * DOC_LEN */
    int32_t *tok;               /* (n_tok) token ids, document after document */
    int32_t *topic;             /* (n_tok) topic of each token */
    int32_t *ids;               /* (n_layer, n_tok, k) chosen experts */
    int base;                   /* first token of the batch being decoded */
};

static void on_route(void *ud, uint32_t layer, int32_t n_tok, int32_t k, const int32_t *ids,
                     const float *w)
{
    struct trace *t = ud;
    (void)w;
    for (int32_t i = 0; i < n_tok; i++)
        for (int32_t j = 0; j < k; j++)
            t->ids[((size_t)layer * t->n_tok + t->base + i) * t->k + j] = ids[i * k + j];
}

/* Runs every document of t (tok filled) through the model, one prefill each. */
static void run_model(const char *path, struct trace *t)
{
    char err[512];
    struct model *m = NULL;
    if (model_load(&m, path, NULL, err, sizeof err) < 0)
        fail_msg("model_load: %s", err);
    t->n_layer = (int)m->hp.n_layer;
    t->n_expert = (int)m->hp.n_expert;
    t->k = (int)m->hp.n_expert_used;
    assert_true(t->n_layer <= MAX_LAYER && t->n_expert <= MAX_EXPERT && t->k <= MAX_K);
    t->ids = calloc((size_t)t->n_layer * t->n_tok * t->k, sizeof(int32_t));
    struct be_cpu_params cp = {.n_threads = 2};
    struct be *be = NULL;
    struct fwd *f = NULL;
    const int bs = 16, nblk = DOC_LEN / bs;
    struct fwd_params fp = {.n_tok_max = DOC_LEN, .n_ctx = DOC_LEN, .kv_blocks = nblk,
                            .kv_block_size = bs, .kv_type = BE_TYPE_F32};
    ASSERT_OK(be_cpu_init(&be, &cp));
    ASSERT_OK(fwd_init(&f, m, be, &fp));
    fwd_set_route_cb(f, on_route, t);
    int32_t pos[DOC_LEN], tab[DOC_LEN / 16], oidx[1] = {DOC_LEN - 1};
    const int32_t *tabs[DOC_LEN];
    for (int i = 0; i < nblk; i++)
        tab[i] = i;
    for (int i = 0; i < DOC_LEN; i++)
        pos[i] = i, tabs[i] = tab;
    float *logits = malloc((size_t)m->hp.n_vocab * sizeof(float));
    for (int d = 0; d < t->n_doc; d++) {
        /* every document reuses the same KV blocks from position 0 */
        t->base = d * DOC_LEN;
        struct fwd_batch b = {.n_tok = DOC_LEN, .tok = t->tok + t->base, .pos = pos,
                              .block_tab = tabs, .n_out = 1, .out_idx = oidx};
        ASSERT_OK(fwd_decode(f, &b, logits));
    }
    free(logits);
    fwd_free(f);
    be_free(be);
    model_free(m);
}

/* ---- statistics ---- */

struct stats {
    double entropy;       /* normalised popularity entropy, 1 = uniform */
    double top10, top25;  /* share of selections on the top 10% / 25% experts */
    double max_mean;      /* max load / mean load */
    double trans_rk;      /* transition-table predictor recall@K */
    double pop_rk;        /* popularity-only predictor recall@K */
    double topic_same, topic_diff; /* overlap of S_l for tokens of one / different topics */
    double tok_same, tok_rand;     /* overlap for two occurrences of one token / random tokens */
    double temp_prev, temp_shuf;   /* share of S_l(t) in S_l(t-1) / in a random token's */
};

static const int32_t *sel(const struct trace *t, int l, int i)
{
    return t->ids + ((size_t)l * t->n_tok + i) * t->k;
}

static double overlap(const struct trace *t, int l, int a, int b)
{
    const int32_t *x = sel(t, l, a), *y = sel(t, l, b);
    int n = 0;
    for (int i = 0; i < t->k; i++)
        for (int j = 0; j < t->k; j++)
            n += x[i] == y[j];
    return (double)n / t->k;
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The top K indexes of score[0..n) (ties: lower index). */
static void top_k(const double *score, int n, int k, int32_t *out)
{
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < n; e++) {
            bool taken = false;
            for (int i = 0; i < j; i++)
                taken |= out[i] == e;
            if (!taken && (best < 0 || score[e] > score[best]))
                best = e;
        }
        out[j] = best;
    }
}

static void compute_stats(const struct trace *t, struct stats *s)
{
    const int L = t->n_layer, X = t->n_expert, K = t->k, N = t->n_tok;
    const int half = (t->n_doc / 2) * DOC_LEN; /* tokens [0, half) train, [half, N) evaluate */
    memset(s, 0, sizeof *s);
    /* popularity, per layer over all tokens */
    for (int l = 0; l < L; l++) {
        double cnt[MAX_EXPERT] = {0}, h = 0;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < K; j++)
                cnt[sel(t, l, i)[j]] += 1;
        const double tot = (double)N * K;
        for (int e = 0; e < X; e++)
            if (cnt[e] > 0)
                h -= cnt[e] / tot * log(cnt[e] / tot);
        s->entropy += h / log(X) / L;
        qsort(cnt, (size_t)X, sizeof cnt[0], cmp_desc);
        double c10 = 0, c25 = 0;
        for (int e = 0; e < (X + 5) / 10; e++)
            c10 += cnt[e];
        for (int e = 0; e < X / 4; e++)
            c25 += cnt[e];
        s->top10 += c10 / tot / L;
        s->top25 += c25 / tot / L;
        s->max_mean += cnt[0] / (tot / X) / L;
    }
    /* layer l -> l+1 transition table vs popularity, fitted on the first half */
    for (int l = 0; l + 1 < L; l++) {
        static double tr[MAX_EXPERT][MAX_EXPERT];
        double pop[MAX_EXPERT] = {0};
        memset(tr, 0, sizeof tr);
        for (int i = 0; i < half; i++)
            for (int a = 0; a < K; a++) {
                pop[sel(t, l + 1, i)[a]] += 1;
                for (int b = 0; b < K; b++)
                    tr[sel(t, l, i)[a]][sel(t, l + 1, i)[b]] += 1;
            }
        int32_t pop_top[MAX_K];
        top_k(pop, X, K, pop_top);
        double rt = 0, rp = 0;
        for (int i = half; i < N; i++) {
            double score[MAX_EXPERT] = {0};
            for (int a = 0; a < K; a++) {
                const double *row = tr[sel(t, l, i)[a]];
                double rs = 0;
                for (int e = 0; e < X; e++)
                    rs += row[e];
                for (int e = 0; e < X; e++)
                    score[e] += rs > 0 ? row[e] / rs : 0;
            }
            int32_t pred[MAX_K];
            top_k(score, X, K, pred);
            const int32_t *truth = sel(t, l + 1, i);
            for (int a = 0; a < K; a++)
                for (int b = 0; b < K; b++) {
                    rt += pred[a] == truth[b];
                    rp += pop_top[a] == truth[b];
                }
        }
        s->trans_rk += rt / ((double)(N - half) * K) / (L - 1);
        s->pop_rk += rp / ((double)(N - half) * K) / (L - 1);
    }
    /* pairs of tokens from different documents: same topic / different topic,
     * same token / any two; consecutive tokens vs a random other token */
    uint64_t rs = 99;
    double n_ts = 0, n_td = 0, n_ks = 0, n_kr = 0, n_tp = 0;
    for (int p = 0; p < 400000; p++) {
        int a = (int)(test_rand_u64(&rs) % (uint64_t)N), b = (int)(test_rand_u64(&rs) % (uint64_t)N);
        if (a / DOC_LEN == b / DOC_LEN)
            continue;
        double o = 0;
        for (int l = 0; l < L; l++)
            o += overlap(t, l, a, b) / L;
        s->tok_rand += o, n_kr++;
        if (t->tok[a] == t->tok[b]) {
            s->tok_same += o, n_ks++;
            continue; /* the topic figures leave token identity out */
        }
        if (t->topic[a] == t->topic[b])
            s->topic_same += o, n_ts++;
        else
            s->topic_diff += o, n_td++;
    }
    for (int i = 0; i < N; i++) {
        if (i % DOC_LEN == 0)
            continue;
        int r = (int)(test_rand_u64(&rs) % (uint64_t)N);
        for (int l = 0; l < L; l++) {
            s->temp_prev += overlap(t, l, i, i - 1) / L;
            s->temp_shuf += overlap(t, l, i, r) / L;
        }
        n_tp++;
    }
    s->topic_same /= n_ts;
    s->topic_diff /= n_td;
    s->tok_same /= n_ks;
    s->tok_rand /= n_kr;
    s->temp_prev /= n_tp;
    s->temp_shuf /= n_tp;
}

static void print_stats(const char *name, const struct trace *t, const struct stats *s)
{
    printf("%-10s layers %d experts %d top-%d, %d tokens\n", name, t->n_layer, t->n_expert, t->k, t->n_tok);
    printf("  popularity: entropy %.3f  top10%% share %.3f (uniform %.3f)  top25%% share %.3f "
           "(uniform 0.250)  max/mean %.2f\n",
           s->entropy, s->top10, (double)((t->n_expert + 5) / 10) / t->n_expert, s->top25, s->max_mean);
    printf("  layer->layer+1: transition recall@K %.3f  popularity recall@K %.3f  (random %.3f)\n",
           s->trans_rk, s->pop_rk, (double)t->k / t->n_expert);
    printf("  topic: overlap same topic %.3f  different topic %.3f\n", s->topic_same, s->topic_diff);
    printf("  token: overlap same token %.3f  random tokens %.3f\n", s->tok_same, s->tok_rand);
    printf("  temporal: share in S(t-1) %.3f  shuffled %.3f\n", s->temp_prev, s->temp_shuf);
    fflush(stdout);
}

/* ---- the synthetic models ---- */

/* Documents of DOC_LEN tokens: 80% from the document's topic, 20% any token. */
static void make_corpus(struct trace *t, int n_vocab)
{
    t->n_doc = N_DOC;
    t->n_tok = N_DOC * DOC_LEN;
    t->tok = malloc((size_t)t->n_tok * sizeof(int32_t));
    t->topic = malloc((size_t)t->n_tok * sizeof(int32_t));
    static int32_t by_topic[N_TOPICS][512];
    int n_by[N_TOPICS] = {0};
    for (int v = 0; v < n_vocab; v++) {
        uint32_t k = plant_topic_of((uint32_t)v, N_TOPICS);
        by_topic[k][n_by[k]++] = v;
    }
    uint64_t rs = 1234;
    for (int d = 0; d < N_DOC; d++) {
        int k = d % N_TOPICS;
        for (int i = 0; i < DOC_LEN; i++) {
            int32_t v = test_rand_u64(&rs) % 5 == 0 ? (int32_t)(test_rand_u64(&rs) % (uint64_t)n_vocab)
                                                   : by_topic[k][test_rand_u64(&rs) % (uint64_t)n_by[k]];
            t->tok[d * DOC_LEN + i] = v;
            t->topic[d * DOC_LEN + i] = (int32_t)plant_topic_of((uint32_t)v, N_TOPICS);
        }
    }
}

static char g_dir[64];

/* A fresh directory for this test's models (teardown removes it). */
static void make_dir(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/moed-planted-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
}

static void mk(const char *name, const char *extra)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s/mkmodel --arch qwen3moe --preset tiny --hidden 128 --heads 4 --kv-heads 2 "
             "--head-dim 32 --layers 6 --experts 16 --top-k 2 --ff-exp 192 --vocab synthetic:512 "
             "--type f16 --seed 21 %s -o %s/%s.gguf",
             test_build_dir(), extra, g_dir, name);
    if (system(cmd) != 0)
        fail_msg("failed: %s", cmd);
}

static void measure(const char *name, struct trace *t, struct stats *s)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s.gguf", g_dir, name);
    make_corpus(t, 512);
    run_model(path, t);
    compute_stats(t, s);
    print_stats(name, t, s);
}

static void trace_free(struct trace *t)
{
    free(t->tok);
    free(t->topic);
    free(t->ids);
}

static void test_planted_structure(void **state)
{
    (void)state;
    make_dir();
    mk("random", "");
    mk("planted", "--plant");
    mk("corr", "--plant-layer-corr 0.9 --plant-drift 0.2");
    struct trace tr = {0}, tp = {0}, tc = {0};
    struct stats sr, sp, sc;
    measure("random", &tr, &sr);
    measure("planted", &tp, &sp);
    measure("corr", &tc, &sc);
    /* MOED_PLANTED_FLAGS="--plant-skew 0.5 ...": one more model, printed only */
    const char *flags = getenv("MOED_PLANTED_FLAGS");
    if (flags && *flags) {
        struct trace tx = {0};
        struct stats sx;
        mk("custom", flags);
        measure("custom", &tx, &sx);
        trace_free(&tx);
    }

    /* popularity: skewed on planted, near uniform on random */
    assert_true(sp.top25 > 0.45);
    assert_true(sr.top25 < 0.40);
    assert_true(sp.entropy < sr.entropy - 0.05);
    /* consecutive layers: the transition table beats popularity and random */
    assert_true(sp.trans_rk > sr.trans_rk + 0.15);
    assert_true(sp.trans_rk > sp.pop_rk + 0.10);
    /* layer correlation alone (no topics, no skew) does it too */
    assert_true(sc.trans_rk > sr.trans_rk + 0.15);
    /* the slow drift keeps a token's routing from being swamped by its context */
    assert_true(sc.tok_same > sr.tok_same + 0.20);
    /* topics: same-topic tokens share experts, on planted only */
    assert_true(sp.topic_same > sp.topic_diff + 0.20);
    assert_true(fabs(sr.topic_same - sr.topic_diff) < 0.05);

    trace_free(&tr);
    trace_free(&tp);
    trace_free(&tc);
}

/* Removes the models, also after a failed check (cmocka jumps out of the test). */
static int teardown(void **state)
{
    (void)state;
    if (g_dir[0] && strncmp(g_dir, "/tmp/moed-planted-", 18) == 0) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

/* ---- a real model, for comparison (MOED_PLANTED_COMPARE) ---- */

/* Appends up to want documents of DOC_LEN tokens, cut from the files of dir
 * whose names end in ext (sorted), labelled with topic. Returns how many. */
static int add_docs(struct trace *t, const struct vocab *v, const char *dir, const char *ext,
                    int topic, int want)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort), got = 0;
    struct vocab_encode_opts eo = {.add_special = false, .parse_special = false};
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(names[i]->d_name), el = strlen(ext);
        if (got < want && names[i]->d_name[0] != '.' && nl > el && strcmp(names[i]->d_name + nl - el, ext) == 0) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
            FILE *f = fopen(path, "rb");
            static char buf[1 << 16];
            size_t len = f ? fread(buf, 1, sizeof buf, f) : 0;
            if (f)
                fclose(f);
            struct vocab_tokens tk = {0};
            if (len && vocab_encode(v, buf, len, &eo, &tk) == 0)
                for (size_t o = 0; o + DOC_LEN <= tk.n && got < want; o += DOC_LEN, got++) {
                    memcpy(t->tok + (size_t)t->n_doc * DOC_LEN, tk.ids + o, DOC_LEN * sizeof(int32_t));
                    for (int j = 0; j < DOC_LEN; j++)
                        t->topic[t->n_doc * DOC_LEN + j] = topic;
                    t->n_doc++;
                }
            vocab_tokens_free(&tk);
        }
        free(names[i]);
    }
    free(names);
    return got;
}

/* ---- topic persistence (--plant-topic-persist) ---- */

/* Greedy generation from a prompt of one topic: the share of generated
 * tokens that belong to the prompt's topic. */
static double on_topic_share(const char *path)
{
    enum { PROMPT = 8, GEN = 16, CTX = PROMPT + GEN };
    char err[512];
    struct model *m = NULL;
    if (model_load(&m, path, NULL, err, sizeof err) < 0)
        fail_msg("model_load: %s", err);
    struct be_cpu_params cp = {.n_threads = 2};
    struct be *be = NULL;
    struct fwd *f = NULL;
    struct fwd_params fp = {.n_tok_max = CTX, .n_ctx = 32, .kv_blocks = 2, .kv_block_size = 16,
                            .kv_type = BE_TYPE_F32};
    ASSERT_OK(be_cpu_init(&be, &cp));
    ASSERT_OK(fwd_init(&f, m, be, &fp));
    const int64_t V = m->hp.n_vocab;
    float *logits = malloc((size_t)V * sizeof(float));
    int32_t tab[2] = {0, 1}, pos[CTX], toks[CTX];
    const int32_t *tabs[CTX];
    for (int i = 0; i < CTX; i++)
        pos[i] = i, tabs[i] = tab;
    uint64_t rs = 555;
    int on = 0, n = 0;
    for (int d = 0; d < 2 * N_TOPICS; d++) {
        const uint32_t topic = (uint32_t)(d % N_TOPICS);
        for (int i = 0; i < PROMPT; i++) {
            int32_t v;
            do
                v = (int32_t)(test_rand_u64(&rs) % (uint64_t)V);
            while (plant_topic_of((uint32_t)v, N_TOPICS) != topic);
            toks[i] = v;
        }
        int32_t oidx[1] = {PROMPT - 1};
        struct fwd_batch b = {.n_tok = PROMPT, .tok = toks, .pos = pos, .block_tab = tabs, .n_out = 1,
                              .out_idx = oidx};
        ASSERT_OK(fwd_decode(f, &b, logits));
        for (int g = 0; g < GEN; g++) {
            int32_t best = 0;
            for (int64_t v = 1; v < V; v++)
                if (logits[v] > logits[best])
                    best = (int32_t)v;
            on += plant_topic_of((uint32_t)best, N_TOPICS) == topic;
            n++;
            toks[PROMPT + g] = best;
            if (g + 1 == GEN)
                break;
            int32_t o1[1] = {0};
            struct fwd_batch b1 = {.n_tok = 1, .tok = toks + PROMPT + g, .pos = pos + PROMPT + g,
                                   .block_tab = tabs, .n_out = 1, .out_idx = o1};
            ASSERT_OK(fwd_decode(f, &b1, logits));
        }
    }
    free(logits);
    fwd_free(f);
    be_free(be);
    model_free(m);
    return (double)on / n;
}

/* Without persistence a generated token's topic is about anyone's (1/16);
 * with it, generations stay on their prompt's topic. */
static void test_topic_persist(void **state)
{
    (void)state;
    make_dir();
    mk("planted", "--plant");
    mk("persist", "--plant --plant-topic-persist 1");
    char p0[128], p1[128];
    snprintf(p0, sizeof p0, "%s/planted.gguf", g_dir);
    snprintf(p1, sizeof p1, "%s/persist.gguf", g_dir);
    double s0 = on_topic_share(p0), s1 = on_topic_share(p1);
    printf("generated tokens on the prompt's topic: --plant %.3f, --plant-topic-persist 1 %.3f (chance %.3f)\n",
           s0, s1, 1.0 / N_TOPICS);
    assert_true(s0 < 0.25);
    assert_true(s1 > 0.6);
    /* a bad knob is refused with a message, not written */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s/mkmodel --arch qwen3moe --preset tiny --type f16 --plant-topic-persist 1 "
                              "-o %s/bad.gguf 2>/dev/null", test_build_dir(), g_dir);
    assert_int_not_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/bad.gguf", g_dir);
    assert_int_not_equal(access(cmd, F_OK), 0);
}

static void test_compare_real(void **state)
{
    (void)state;
    const char *path = getenv("MOED_PLANTED_COMPARE");
    if (!path || !*path)
        skip();
    char err[512];
    struct model *m = NULL;
    struct vocab *v = NULL;
    if (model_load(&m, path, NULL, err, sizeof err) < 0 || vocab_init_gguf(&v, m->gguf, err, sizeof err) < 0)
        fail_msg("%s: %s", path, err);
    /* documents from four kinds of text; the kind stands in for the topic
     * (shuffled so that the fitting half and the evaluation half hold every kind) */
    static const struct { const char *dir, *ext; } kinds[] = {
        {"/usr/lib/python3.11", ".py"}, {"/usr/include", ".h"},
        {"/usr/share/common-licenses", ""}, {"/usr/share/perl/5.36", ".pm"}};
    struct trace t = {0};
    t.tok = malloc((size_t)N_DOC * DOC_LEN * sizeof(int32_t));
    t.topic = malloc((size_t)N_DOC * DOC_LEN * sizeof(int32_t));
    for (int k = 0; k < 4; k++)
        printf("%s: %d documents\n", kinds[k].dir, add_docs(&t, v, kinds[k].dir, kinds[k].ext, k, N_DOC / 4));
    if (t.n_doc < 8)
        fail_msg("too little text found (%d documents)", t.n_doc);
    uint64_t rs = 5;
    int32_t tmp[DOC_LEN];
    for (int d = t.n_doc - 1; d > 0; d--) {
        int e = (int)(test_rand_u64(&rs) % (uint64_t)(d + 1));
        memcpy(tmp, t.tok + d * DOC_LEN, sizeof tmp);
        memcpy(t.tok + d * DOC_LEN, t.tok + e * DOC_LEN, sizeof tmp);
        memcpy(t.tok + e * DOC_LEN, tmp, sizeof tmp);
        int32_t a = t.topic[d * DOC_LEN], b = t.topic[e * DOC_LEN];
        for (int j = 0; j < DOC_LEN; j++)
            t.topic[d * DOC_LEN + j] = b, t.topic[e * DOC_LEN + j] = a;
    }
    t.n_tok = t.n_doc * DOC_LEN;
    vocab_free(v);
    model_free(m);
    struct stats s;
    run_model(path, &t);
    compute_stats(&t, &s);
    print_stats("real", &t, &s);
    printf("  (topic = kind of text: Python, C headers, licences, Perl)\n");
    trace_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_planted_structure, teardown),
        cmocka_unit_test_teardown(test_topic_persist, teardown),
        cmocka_unit_test(test_compare_real),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
