/* SPDX-License-Identifier: MIT */
/*
 * test_engine_sched.c - the scheduler's policies (engine/sched.c,
 * engine/regroup.c) end to end through the engine API:
 *   - outputs are identical under fcfs and regroup, with more sequences
 *     admitted than one step runs (step_seqs < parallel), greedy and seeded
 *     sampling, with and without the expert store, and equal to each
 *     request run alone;
 *   - the max_skip bound holds under an adversarial mix (one sequence whose
 *     predicted experts overlap nobody's, installed through the scheduler's
 *     prediction hook), measured from outside the scheduler: the step number
 *     at which each token arrives (read in the notify callback) gives every
 *     sequence's consecutive skips;
 *   - regroup's admission (a later waiting request whose prompt matches a
 *     running one goes first) keeps its bound: under an adversarial mix a
 *     request that matches nobody is overtaken by at most admit_bound later
 *     requests, counted from the admission order of every request;
 *   - once eng_release returns the engine never calls that request's
 *     notify, even when its DONE was polled before the notify of its step;
 *   - regroup activates fewer distinct experts per step than fcfs on the
 *     trained model (real routing structure; skipped when it is absent).
 */
#include "tests/testutil.h"

#include "engine/engine.h"
#include "engine/impl.h"
#include "engine/vocab.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXTOK 64
#define TRAINED "/work/shared/models/qwen3moe-dev-trained-f16.gguf"

struct result {
    int32_t toks[MAXTOK];
    int n;
    int err;
    uint64_t last_step;     /* engine step of the latest token */
    int max_gap_skips;      /* most steps between two consecutive tokens, minus one */
};

/* One per request: the notify callback records the engine's step count. */
struct note {
    struct test_waiter *w;
    struct engine *e;
    uint64_t steps[MAXTOK + 4]; /* step count at each notification */
    int n_steps;
};

static void on_notify(void *ud)
{
    struct note *nt = ud;
    /* Called on the engine thread after the step's metrics were published:
     * met.steps is the number of the step that just produced this event. */
    struct eng_metrics m;
    eng_get_metrics(nt->e, &m);
    if (nt->n_steps < MAXTOK + 4)
        nt->steps[nt->n_steps++] = m.steps;
    test_waiter_notify(nt->w);
}

static bool drain(struct eng_req *r, struct result *res)
{
    struct eng_event ev;
    bool done = false;
    while (eng_poll(r, &ev) == 0) {
        if (ev.type == ENG_EV_DELTA) {
            if (res->n < MAXTOK)
                res->toks[res->n++] = ev.token;
        } else {
            res->err = ev.type == ENG_EV_ERROR ? ev.err : 0;
            done = true;
        }
        eng_event_clear(&ev);
    }
    return done;
}

/* Waits until each of the n requests has sent DONE or ERROR, draining
 * their events into res. */
static void wait_all(struct test_waiter *w, struct eng_req **reqs, int n, struct result *res)
{
    bool *done = calloc((size_t)n, sizeof *done);
    int left = n;
    while (left > 0) {
        test_waiter_wait(w, 60);
        for (int i = 0; i < n; i++)
            if (!done[i] && drain(reqs[i], &res[i])) {
                done[i] = true;
                left--;
            }
    }
    free(done);
}

static void run_many(struct engine *e, int n, int32_t **prompts, const int *lens,
                     const struct eng_req_params *rps, struct result *res)
{
    struct test_waiter w;
    test_waiter_init(&w);
    struct eng_req **reqs = calloc((size_t)n, sizeof *reqs);
    struct note *notes = calloc((size_t)n, sizeof *notes);
    for (int i = 0; i < n; i++) {
        memset(&res[i], 0, sizeof res[i]);
        notes[i].w = &w;
        notes[i].e = e;
        ASSERT_OK(eng_submit(e, prompts[i], lens[i], &rps[i], on_notify, &notes[i], &reqs[i]));
    }
    wait_all(&w, reqs, n, res);
    /* A step notifies its requests one after another, so the drain above
     * may have seen a request's DONE before the engine called its notify
     * (the step number the skip counts below need): one more request, run
     * to its end, is notified in a later step, after every notify of
     * these. (Releasing without it would be safe, eng_release ends
     * notifies, but could drop the last step number.) */
    struct eng_req_params qp = eng_req_params_default();
    qp.max_tokens = 1;
    struct result qr = {0};
    struct eng_req *q;
    ASSERT_OK(eng_submit(e, prompts[0], 1, &qp, test_waiter_notify, &w, &q));
    while (!drain(q, &qr))
        test_waiter_wait(&w, 60);
    eng_release(q);
    for (int i = 0; i < n; i++) {
        eng_release(reqs[i]);
        /* Every notification after the first carries one new token (the
         * prompts fit one chunk, so the first is the first token): the gap
         * between consecutive ones, minus one, is the steps it was passed
         * over. The last notification (DONE) comes with the last token. */
        for (int k = 1; k < notes[i].n_steps; k++) {
            int gap = (int)(notes[i].steps[k] - notes[i].steps[k - 1]) - 1;
            if (gap > res[i].max_gap_skips)
                res[i].max_gap_skips = gap;
        }
        res[i].last_step = notes[i].n_steps ? notes[i].steps[notes[i].n_steps - 1] : 0;
    }
    free(reqs);
    free(notes);
    test_waiter_destroy(&w);
}

static struct engine *mk_engine(const char *path, int parallel, int step_seqs, enum eng_sched pol, int max_skip,
                                const char *xcache)
{
    struct eng_params p = eng_params_default();
    p.model_path = path;
    p.kv_type = BE_TYPE_F32;
    p.parallel = parallel;
    p.batch_tokens = 64;
    p.step_seqs = step_seqs;
    p.sched = pol;
    p.max_skip = max_skip;
    p.max_queued = 64;
    p.n_threads = 2;
    p.ctx_size = 256;
    if (xcache) {
        p.expert_cache = xcache;
        p.store_always = true;
    }
    char err[512];
    struct engine *e = NULL;
    if (eng_init(&e, &p, err, sizeof err) < 0)
        fail_msg("eng_init: %s", err);
    return e;
}

static void make_prompts(int32_t **p, int *len, int n, uint64_t seed, int vocab)
{
    for (int i = 0; i < n; i++) {
        len[i] = 3 + (int)(test_rand_u64(&seed) % 40);
        p[i] = malloc((size_t)len[i] * sizeof(int32_t));
        for (int j = 0; j < len[i]; j++)
            p[i][j] = (int32_t)(test_rand_u64(&seed) % (uint64_t)vocab);
    }
}

static void make_params(struct eng_req_params *rps, int n, int base_tokens)
{
    for (int i = 0; i < n; i++) {
        rps[i] = eng_req_params_default();
        rps[i].max_tokens = base_tokens + i % 7;
        rps[i].ignore_eos = true;
        if (i % 2) {
            rps[i].sample.temperature = 0.9f;
            rps[i].sample.top_p = 0.95f;
            rps[i].sample.seed = 500 + (uint64_t)i;
            rps[i].sample.has_seed = true;
        } else {
            rps[i].sample.temperature = 0;
        }
    }
}

/* ---- identical outputs ---- */

static void check_identity(const char *xcache)
{
    enum { N = 24 };
    int32_t *prompts[N];
    int lens[N];
    struct eng_req_params rps[N];
    static struct result alone[N], fcfs[N], regroup[N];
    make_prompts(prompts, lens, N, 31, 500);
    make_params(rps, N, 10);
    const char *model = test_model_path("qwen3moe-tiny-q8_0");
    struct engine *e = mk_engine(model, 1, 0, ENG_SCHED_FCFS, 4, xcache);
    for (int i = 0; i < N; i++)
        run_many(e, 1, &prompts[i], &lens[i], &rps[i], &alone[i]);
    eng_free(e);
    /* 16 admitted, 4 per step: each policy chooses among many runnable. */
    e = mk_engine(model, 16, 4, ENG_SCHED_FCFS, 3, xcache);
    run_many(e, N, prompts, lens, rps, fcfs);
    struct eng_metrics mf, mr;
    eng_get_metrics(e, &mf);
    eng_free(e);
    e = mk_engine(model, 16, 4, ENG_SCHED_REGROUP, 3, xcache);
    run_many(e, N, prompts, lens, rps, regroup);
    eng_get_metrics(e, &mr);
    eng_free(e);
    assert_true(mf.sched.steps_chosen > 0 && mr.sched.steps_chosen > 0); /* the policies had choices */
    assert_true(mr.sched.steps_regroup > 0 && mr.sched.steps_fcfs == 0);
    /* 24 requests for 16 places: regroup chose whom to admit too */
    assert_true(mr.sched.admit_regrouped > 0 && mf.sched.admit_regrouped == 0);
    assert_true(mf.sched.max_wait_steps <= 3 && mr.sched.max_wait_steps <= 3);
    for (int i = 0; i < N; i++) {
        assert_int_equal(alone[i].err, 0);
        assert_int_equal(fcfs[i].err, 0);
        assert_int_equal(regroup[i].err, 0);
        assert_int_equal(alone[i].n, rps[i].max_tokens);
        assert_int_equal(fcfs[i].n, alone[i].n);
        assert_int_equal(regroup[i].n, alone[i].n);
        if (memcmp(alone[i].toks, fcfs[i].toks, (size_t)alone[i].n * sizeof(int32_t)) != 0)
            fail_msg("request %d: fcfs output differs from its output alone", i);
        if (memcmp(alone[i].toks, regroup[i].toks, (size_t)alone[i].n * sizeof(int32_t)) != 0)
            fail_msg("request %d: regroup output differs from its output alone", i);
    }
    for (int i = 0; i < N; i++)
        free(prompts[i]);
}

static void test_identity(void **state)
{
    (void)state;
    check_identity(NULL);
}

static void test_identity_store(void **state)
{
    (void)state;
    check_identity("25%");
}

/* ---- fairness under an adversarial mix ---- */

/* Prediction hook: every sequence predicts experts {0..k-1} at every layer
 * except the outlier (the one whose first prompt token is OUTLIER_TOK),
 * which predicts the other experts: it overlaps nobody. */
#define OUTLIER_TOK 499
static uint64_t g_common[4], g_odd[4];
static const uint64_t *adversary(void *ud, const struct eng_req *r, uint32_t layer)
{
    (void)ud;
    (void)layer;
    return r->tokens[0] == OUTLIER_TOK ? g_odd : g_common;
}

/* Installs the adversary as e's prediction hook: experts {0..k-1} for
 * everyone, the other experts for the outlier. Before any request exists;
 * eng_submit's lock publishes it to the engine thread. */
static void set_adversary(struct engine *e)
{
    memset(g_common, 0, sizeof g_common);
    memset(g_odd, 0, sizeof g_odd);
    const uint32_t nx = e->sc.n_expert, k = e->sc.k;
    assert_true(nx <= 256 && 2 * k <= nx);
    for (uint32_t x = 0; x < nx; x++) {
        if (x < k)
            g_common[x / 64] |= 1ull << (x % 64);
        else
            g_odd[x / 64] |= 1ull << (x % 64);
    }
    e->sc.pred_fn = adversary;
    e->sc.pred_ud = NULL;
}

static void check_fairness(enum eng_sched pol, int max_skip)
{
    enum { N = 16, P = 16, S = 4 };
    int32_t *prompts[N];
    int lens[N];
    struct eng_req_params rps[N];
    static struct result res[N];
    make_prompts(prompts, lens, N, 77, 400);
    make_params(rps, N, 24);
    prompts[5][0] = OUTLIER_TOK;
    struct engine *e = mk_engine(test_model_path("qwen3moe-tiny-q8_0"), P, S, pol, max_skip, NULL);
    set_adversary(e);
    run_many(e, N, prompts, lens, rps, res);
    struct eng_metrics m;
    eng_get_metrics(e, &m);
    eng_free(e);
    int worst = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(res[i].err, 0);
        assert_int_equal(res[i].n, rps[i].max_tokens);
        if (res[i].max_gap_skips > max_skip)
            fail_msg("%s, max_skip %d: request %d%s was passed over %d consecutive steps",
                     pol == ENG_SCHED_REGROUP ? "regroup" : "fcfs", max_skip, i, i == 5 ? " (the outlier)" : "",
                     res[i].max_gap_skips);
        if (res[i].max_gap_skips > worst)
            worst = res[i].max_gap_skips;
    }
    /* The mix is adversarial: with 16 sequences and 4 per step everyone
     * waits, the outlier too; the engine's own figure agrees. fcfs would
     * starve the later sequences without the bound: it is what took them. */
    assert_true(worst >= 1 && res[5].max_gap_skips >= 1);
    assert_true(m.sched.max_wait_steps >= (uint32_t)worst && m.sched.max_wait_steps <= (uint32_t)max_skip);
    if (pol == ENG_SCHED_FCFS)
        assert_true(m.sched.forced > 0);
    for (int i = 0; i < N; i++)
        free(prompts[i]);
}

static void test_fairness_regroup(void **state)
{
    (void)state;
    check_fairness(ENG_SCHED_REGROUP, 4);
    check_fairness(ENG_SCHED_REGROUP, 3);
}

static void test_fairness_fcfs(void **state)
{
    (void)state;
    check_fairness(ENG_SCHED_FCFS, 4);
    check_fairness(ENG_SCHED_FCFS, 3);
}

/* ---- the admission bound ---- */

/* The gate: a request whose first notification holds the engine thread
 * (notify runs on it, outside the engine's lock) until the test has
 * submitted everything, so that the waiting queue holds every choice at the
 * next admission whatever the timing. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, released;
    struct test_waiter *w;
};

static void gate_notify(void *ud)
{
    struct gate *g = ud;
    pthread_mutex_lock(&g->mu);
    if (!g->entered) {
        g->entered = true;
        pthread_cond_broadcast(&g->cv);
        while (!g->released)
            pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    test_waiter_notify(g->w);
}

/* Request 0 matches nobody (the adversary above); every later request
 * matches the running ones, so regroup admits them first until the bound
 * makes request 0 next. Overtakes are counted from the admission order the
 * engine gave each request (eng_req.admit_order; nothing is preempted here:
 * the pool holds every admitted sequence). */
static void test_admit_bound(void **state)
{
    (void)state;
    enum { N = 40, P = 8, S = 4, MAX_SKIP = 1 };
    int32_t *prompts[N + 1];
    int lens[N + 1];
    struct eng_req_params rps[N + 1];
    make_prompts(prompts, lens, N + 1, 91, 400);
    make_params(rps, N + 1, 6);
    for (int i = 0; i <= N; i++)
        if (prompts[i][0] == OUTLIER_TOK)
            prompts[i][0] = OUTLIER_TOK - 1;
    prompts[0][0] = OUTLIER_TOK; /* prompts[N] is the gate's */
    struct engine *e = mk_engine(test_model_path("qwen3moe-tiny-q8_0"), P, S, ENG_SCHED_REGROUP, MAX_SKIP, NULL);
    set_adversary(e);
    const int32_t bound = e->sc.admit_bound;
    assert_int_equal(bound, P); /* one running set: min(P, S * (MAX_SKIP + 1)) */
    struct test_waiter w;
    test_waiter_init(&w);
    struct gate g = {.w = &w};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    struct eng_req *reqs[N + 1];
    static struct result res[N + 1];
    uint64_t order[N];
    ASSERT_OK(eng_submit(e, prompts[N], lens[N], &rps[N], gate_notify, &g, &reqs[N]));
    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < N; i++)
        ASSERT_OK(eng_submit(e, prompts[i], lens[i], &rps[i], test_waiter_notify, &w, &reqs[i]));
    pthread_mutex_lock(&g.mu);
    g.released = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    memset(res, 0, sizeof res);
    wait_all(&w, reqs, N + 1, res);
    for (int i = 0; i <= N; i++) {
        if (i < N)
            order[i] = reqs[i]->admit_order;
        eng_release(reqs[i]);
    }
    struct eng_metrics m;
    eng_get_metrics(e, &m);
    eng_free(e);
    test_waiter_destroy(&w);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
    int worst = 0;
    for (int i = 0; i <= N; i++) {
        assert_int_equal(res[i].err, 0);
        assert_int_equal(res[i].n, rps[i].max_tokens);
    }
    for (int i = 0; i < N; i++) {
        int over = 0;
        for (int j = i + 1; j < N; j++)
            over += order[j] < order[i];
        if (over > bound)
            fail_msg("request %d was overtaken by %d later requests at admission (bound %d)", i, over, bound);
        worst = over > worst ? over : worst;
    }
    /* The outlier waited as long as the bound allows, not until every
     * matching request had gone in (N - 1 of them); the engine agrees. */
    int over0 = 0;
    for (int j = 1; j < N; j++)
        over0 += order[j] < order[0];
    print_message("outlier overtaken by %d (bound %d), worst %d, admitted out of order %llu\n", over0, bound, worst,
                  (unsigned long long)m.sched.admit_regrouped);
    assert_int_equal(over0, bound);
    assert_true(m.sched.max_admit_overtaken == (uint32_t)worst && m.sched.admit_bound == (uint32_t)bound);
    for (int i = 0; i <= N; i++)
        free(prompts[i]);
}

/* ---- eng_release ends notifies ---- */

struct late {
    atomic_bool released;  /* set once eng_release(x) returned */
    atomic_int after;      /* notifies of x after that */
};

static void late_notify(void *ud)
{
    struct late *l = ud;
    if (atomic_load(&l->released))
        atomic_fetch_add(&l->after, 1);
}

/* Two one-token requests finish in the same step; the first's notify holds
 * the engine thread, so the second's DONE is already queued but its notify
 * not yet called. The test polls that DONE and releases the second request:
 * the engine must then not call its notify (the caller may have freed ud).
 * A first gate holds the engine while both are queued, so that they share
 * a step whatever the timing. */
static void test_release_ends_notify(void **state)
{
    (void)state;
    struct engine *e = mk_engine(test_model_path("qwen3moe-tiny-q8_0"), 4, 0, ENG_SCHED_FCFS, 4, NULL);
    struct test_waiter w;
    test_waiter_init(&w);
    struct gate g0 = {.w = &w}, g1 = {.w = &w};
    pthread_mutex_init(&g0.mu, NULL);
    pthread_cond_init(&g0.cv, NULL);
    pthread_mutex_init(&g1.mu, NULL);
    pthread_cond_init(&g1.cv, NULL);
    struct late l;
    atomic_init(&l.released, false);
    atomic_init(&l.after, 0);
    const int32_t p0[] = {5, 6, 7}, p1[] = {8, 9}, p2[] = {10, 11, 12, 13};
    struct eng_req_params rp = eng_req_params_default();
    rp.max_tokens = 1;
    rp.ignore_eos = true;
    rp.sample.temperature = 0;
    struct eng_req *r0, *r1, *r2;
    ASSERT_OK(eng_submit(e, p0, 3, &rp, gate_notify, &g0, &r0));
    pthread_mutex_lock(&g0.mu);
    while (!g0.entered)
        pthread_cond_wait(&g0.cv, &g0.mu);
    pthread_mutex_unlock(&g0.mu);
    /* the engine is held: both go into its next step, r1 first */
    ASSERT_OK(eng_submit(e, p1, 2, &rp, gate_notify, &g1, &r1));
    ASSERT_OK(eng_submit(e, p2, 4, &rp, late_notify, &l, &r2));
    pthread_mutex_lock(&g0.mu);
    g0.released = true;
    pthread_cond_broadcast(&g0.cv);
    pthread_mutex_unlock(&g0.mu);
    pthread_mutex_lock(&g1.mu);
    while (!g1.entered) /* r1's notify runs: the step's events are queued */
        pthread_cond_wait(&g1.cv, &g1.mu);
    pthread_mutex_unlock(&g1.mu);
    struct result res2 = {0};
    assert_true(drain(r2, &res2)); /* r2's DONE is there before its notify */
    assert_int_equal(res2.n, 1);
    eng_release(r2);
    atomic_store(&l.released, true);
    pthread_mutex_lock(&g1.mu);
    g1.released = true;
    pthread_cond_broadcast(&g1.cv);
    pthread_mutex_unlock(&g1.mu);
    struct result res[2];
    memset(res, 0, sizeof res);
    struct eng_req *rs[2] = {r0, r1};
    wait_all(&w, rs, 2, res);
    eng_release(r0);
    eng_release(r1);
    eng_free(e); /* the engine thread is gone: every notify it would make is made */
    assert_int_equal(atomic_load(&l.after), 0);
    test_waiter_destroy(&w);
    pthread_mutex_destroy(&g0.mu);
    pthread_cond_destroy(&g0.cv);
    pthread_mutex_destroy(&g1.mu);
    pthread_cond_destroy(&g1.cv);
}

/* ---- fewer distinct experts on a model with routing structure ---- */

static void test_fewer_experts(void **state)
{
    (void)state;
    if (access(TRAINED, R_OK) != 0) {
        print_message("skipping: %s is absent (it has the routing structure this test needs)\n", TRAINED);
        skip();
    }
    static const char *texts[] = {
        "class Parser:\n    def __init__(self", "Copyright (C) ", "This program is free software; you can redistribute it",
        "#include <stdio.h>\nint main(void)\n{", "sub new {\n    my $class = shift;", "  * Fix a crash when",
        "The following options are supported:", "import os\nimport sys\n\ndef main():", "Package: libfoo\nVersion:",
        "    return self._data[key]", "SYNOPSIS\n       ls [OPTION]... [FILE]...", "-- Debian Maintainer <",
        "if (x == NULL)\n        return -1;", "Permission is hereby granted, free of charge,", "for i in range(10):",
        "DESCRIPTION\n       The", "my %hash = (", "static int foo(int a, int b)", "version 2.0 (2019-01-01)",
        "def test_something(self):", "Licensed under the Apache License", "#define MAX(a, b)", "usage: prog [-h]",
        "  * New upstream release.",
    };
    enum { N = (int)(sizeof texts / sizeof texts[0]) };
    int32_t *prompts[N];
    int lens[N];
    struct eng_req_params rps[N];
    static struct result res[2][N];
    double distinct[2], uniform[2];
    for (int pol = 0; pol < 2; pol++) {
        struct engine *e = mk_engine(TRAINED, 16, 4, pol ? ENG_SCHED_REGROUP : ENG_SCHED_FCFS, 4, NULL);
        for (int i = 0; pol == 0 && i < N; i++) {
            struct vocab_encode_opts o = vocab_encode_opts_default();
            struct vocab_tokens t = {0};
            ASSERT_OK(vocab_encode(eng_vocab(e), texts[i], strlen(texts[i]), &o, &t));
            prompts[i] = malloc(t.n * sizeof(int32_t));
            memcpy(prompts[i], t.ids, t.n * sizeof(int32_t));
            lens[i] = (int)t.n;
            vocab_tokens_free(&t);
            rps[i] = eng_req_params_default();
            rps[i].max_tokens = 40;
            rps[i].ignore_eos = true;
            rps[i].sample.temperature = 0;
        }
        run_many(e, N, prompts, lens, rps, res[pol]);
        struct eng_metrics m;
        eng_get_metrics(e, &m);
        eng_free(e);
        assert_true(m.sched.layer_steps > 0);
        distinct[pol] = (double)m.sched.distinct_sum / (double)m.sched.layer_steps;
        uniform[pol] = m.sched.uniform_sum / (double)m.sched.layer_steps;
        print_message("%s: %.3f distinct experts per layer per step (uniform routing: %.3f), %llu steps, "
                      "longest wait %u\n", pol ? "regroup" : "fcfs", distinct[pol], uniform[pol],
                      (unsigned long long)m.steps, m.sched.max_wait_steps);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(res[1][i].n, res[0][i].n);
        assert_memory_equal(res[1][i].toks, res[0][i].toks, (size_t)res[0][i].n * sizeof(int32_t));
        free(prompts[i]);
    }
    /* Both policies run the same tokens in about the same batch sizes. */
    ASSERT_NEAR(uniform[1], uniform[0], 0.05 * uniform[0]);
    if (!(distinct[1] < 0.9 * distinct[0]))
        fail_msg("regroup %.3f distinct experts per layer per step, fcfs %.3f: not 10%% fewer", distinct[1],
                 distinct[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_identity_store),
        cmocka_unit_test(test_fairness_regroup),
        cmocka_unit_test(test_fairness_fcfs),
        cmocka_unit_test(test_admit_bound),
        cmocka_unit_test(test_release_ends_notify),
        cmocka_unit_test(test_fewer_experts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
