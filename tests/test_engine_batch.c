/* SPDX-License-Identifier: MIT */
/*
 * test_engine_batch.c - the engine end to end on tiny models: batch
 * invariance (16 concurrent requests give exactly the tokens each gives
 * alone, greedy and seeded, KV f32 and f16), KV exhaustion with preemption,
 * cancellation mid-prefill and mid-decode, prefix reuse across chat turns,
 * stop strings split across tokens, max_tokens, and queue limits.
 */
#include "tests/testutil.h"

#include "engine/engine.h"
#include "engine/vocab.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXTOK 256

struct result {
    int32_t toks[MAXTOK];
    int n;
    char text[4096];
    size_t text_len;
    char reasoning[4096];
    size_t reasoning_len;
    enum eng_finish finish;
    struct eng_usage usage;
    int err;
};

/* Drains events into res; returns true when the request ended. */
static bool drain(struct eng_req *r, struct result *res)
{
    struct eng_event ev;
    bool done = false;
    while (eng_poll(r, &ev) == 0) {
        if (ev.type == ENG_EV_DELTA) {
            if (res->n < MAXTOK)
                res->toks[res->n++] = ev.token;
            if (ev.text_len && res->text_len + ev.text_len < sizeof res->text) {
                memcpy(res->text + res->text_len, ev.text, ev.text_len);
                res->text_len += ev.text_len;
            }
            if (ev.reasoning_len && res->reasoning_len + ev.reasoning_len < sizeof res->reasoning) {
                memcpy(res->reasoning + res->reasoning_len, ev.reasoning, ev.reasoning_len);
                res->reasoning_len += ev.reasoning_len;
            }
        } else if (ev.type == ENG_EV_DONE) {
            res->finish = ev.finish;
            res->usage = ev.usage;
            done = true;
        } else {
            res->err = ev.err;
            done = true;
        }
        eng_event_clear(&ev);
    }
    return done;
}

/* Runs n requests at once and waits for all. */
static void run_many(struct engine *e, int n, int32_t **prompts, const int *lens,
                     const struct eng_req_params *rps, struct result *res)
{
    struct test_waiter w;
    test_waiter_init(&w);
    struct eng_req **reqs = calloc((size_t)n, sizeof *reqs);
    bool *done = calloc((size_t)n, sizeof *done);
    for (int i = 0; i < n; i++) {
        memset(&res[i], 0, sizeof res[i]);
        ASSERT_OK(eng_submit(e, prompts[i], lens[i], &rps[i], test_waiter_notify, &w, &reqs[i]));
    }
    int left = n;
    while (left > 0) {
        test_waiter_wait(&w, 60);
        for (int i = 0; i < n; i++)
            if (!done[i] && drain(reqs[i], &res[i])) {
                done[i] = true;
                left--;
            }
    }
    for (int i = 0; i < n; i++)
        eng_release(reqs[i]);
    free(reqs);
    free(done);
    test_waiter_destroy(&w);
}

static struct engine *mk_engine(const char *model, enum be_type kv, int parallel, int batch,
                                int kv_tokens, bool prefix)
{
    struct eng_params p = eng_params_default();
    p.model_path = test_model_path(model);
    p.kv_type = kv;
    p.parallel = parallel;
    p.batch_tokens = batch;
    p.kv_tokens = kv_tokens;
    p.prefix_cache = prefix;
    p.max_queued = 64;
    p.n_threads = 2;
    char err[512];
    struct engine *e = NULL;
    int rc = eng_init(&e, &p, err, sizeof err);
    if (rc < 0)
        fail_msg("eng_init: %s", err);
    return e;
}

static void wait_idle(struct engine *e)
{
    struct eng_metrics m;
    for (int i = 0; i < 2000; i++) {
        eng_get_metrics(e, &m);
        if (m.running == 0 && m.waiting == 0 && m.kv_used == 0)
            return;
        usleep(1000);
    }
    fail_msg("engine did not become idle: running %d waiting %d kv_used %d", m.running, m.waiting,
             m.kv_used);
}

/* ---- batch invariance ---- */

static void make_prompts(int32_t **p, int *len, int n, uint64_t seed)
{
    for (int i = 0; i < n; i++) {
        len[i] = 3 + (int)(test_rand_u64(&seed) % 60);
        p[i] = malloc((size_t)len[i] * sizeof(int32_t));
        for (int j = 0; j < len[i]; j++)
            p[i][j] = (int32_t)(test_rand_u64(&seed) % 500);
    }
}

static void check_invariance(enum be_type kv)
{
    enum { N = 16 };
    int32_t *prompts[N];
    int lens[N];
    struct eng_req_params rps[N];
    struct result alone[N], together[N];
    make_prompts(prompts, lens, N, 7);
    for (int i = 0; i < N; i++) {
        rps[i] = eng_req_params_default();
        rps[i].max_tokens = 8 + i % 9;
        rps[i].ignore_eos = true;
        if (i % 2) { /* half greedy, half seeded sampling */
            rps[i].sample.temperature = 0.9f;
            rps[i].sample.top_p = 0.95f;
            rps[i].sample.seed = 1000 + (uint64_t)i;
            rps[i].sample.has_seed = true;
        } else {
            rps[i].sample.temperature = 0;
        }
    }
    /* Alone: parallel 1, no prefix cache, so nothing is shared. */
    struct engine *e = mk_engine("qwen3moe-tiny-q8_0", kv, 1, 64, 0, false);
    for (int i = 0; i < N; i++)
        run_many(e, 1, &prompts[i], &lens[i], &rps[i], &alone[i]);
    eng_free(e);
    /* Together: 16 at once with a small step budget (chunked prefill, mixed batches). */
    e = mk_engine("qwen3moe-tiny-q8_0", kv, 16, 48, 0, true);
    run_many(e, N, prompts, lens, rps, together);
    struct eng_metrics m;
    eng_get_metrics(e, &m);
    assert_true(m.steps > 0);
    wait_idle(e);
    eng_free(e);
    for (int i = 0; i < N; i++) {
        assert_int_equal(alone[i].n, rps[i].max_tokens);
        assert_int_equal(together[i].n, alone[i].n);
        if (memcmp(alone[i].toks, together[i].toks, (size_t)alone[i].n * sizeof(int32_t)) != 0)
            fail_msg("request %d: tokens differ between alone and batched (kv %s)", i, be_type_name(kv));
        assert_int_equal(together[i].finish, ENG_FINISH_LENGTH);
        free(prompts[i]);
    }
}

static void test_batch_invariance_f32(void **st) { (void)st; check_invariance(BE_TYPE_F32); }
static void test_batch_invariance_f16(void **st) { (void)st; check_invariance(BE_TYPE_F16); }

/* ---- KV exhaustion ---- */

static void test_kv_exhaustion(void **st)
{
    (void)st;
    enum { N = 8 };
    int32_t *prompts[N];
    int lens[N];
    struct eng_req_params rps[N];
    struct result ref[N], got[N];
    make_prompts(prompts, lens, N, 99);
    for (int i = 0; i < N; i++) {
        rps[i] = eng_req_params_default();
        rps[i].sample.temperature = 0;
        rps[i].max_tokens = 40;
        rps[i].ignore_eos = true;
    }
    struct engine *e = mk_engine("qwen3moe-tiny-f32", BE_TYPE_F32, 1, 64, 0, false);
    for (int i = 0; i < N; i++)
        run_many(e, 1, &prompts[i], &lens[i], &rps[i], &ref[i]);
    eng_free(e);
    /* A pool of 256 tokens (the context) for 8 sequences of up to ~100. */
    e = mk_engine("qwen3moe-tiny-f32", BE_TYPE_F32, 8, 64, 256, true);
    run_many(e, N, prompts, lens, rps, got);
    struct eng_metrics m;
    eng_get_metrics(e, &m);
    assert_true(m.preemptions > 0);
    wait_idle(e);
    eng_get_metrics(e, &m);
    assert_int_equal(m.kv_used, 0);
    assert_int_equal(m.kv_free + m.kv_cached, m.kv_blocks);
    eng_free(e);
    for (int i = 0; i < N; i++) {
        assert_int_equal(got[i].n, 40);
        if (memcmp(ref[i].toks, got[i].toks, 40 * sizeof(int32_t)) != 0)
            fail_msg("request %d: preemption changed the output", i);
        free(prompts[i]);
    }
}

/* ---- cancellation ---- */

static void test_cancel(void **st)
{
    (void)st;
    /* A step budget of 4 tokens: a 240-token prompt takes 60 steps. */
    struct engine *e = mk_engine("qwen3moe-tinyk-q4_K", BE_TYPE_F16, 4, 4, 0, false);
    int32_t prompt[240];
    for (int i = 0; i < 240; i++)
        prompt[i] = (i * 13) % 500;
    struct eng_req_params rp = eng_req_params_default();
    rp.max_tokens = 10;
    rp.ignore_eos = true;
    /* Mid-prefill: cancel once a few prefill steps have run. The engine
     * may finish the other ~57 steps before the cancel lands (this thread
     * competes with its two for two cores, and a step of this model takes
     * tens of microseconds), so the attempt repeats until one cancel lands
     * mid-prefill; every attempt must end canceled and free its blocks. */
    struct eng_req *r = NULL;
    struct eng_metrics m;
    bool mid_prefill = false;
    for (int attempt = 0; attempt < 8 && !mid_prefill; attempt++) {
        eng_get_metrics(e, &m);
        const uint64_t steps0 = m.steps;
        ASSERT_OK(eng_submit(e, prompt, 240, &rp, NULL, NULL, &r));
        for (int i = 0; i < 20000000; i++) { /* polled without sleeping: a sleep can outlast the prefill */
            eng_get_metrics(e, &m);
            if (m.steps >= steps0 + 3)
                break;
        }
        assert_true(m.steps >= steps0 + 3);
        eng_cancel(r);
        struct result res = {0};
        for (int i = 0; i < 5000 && !drain(r, &res); i++)
            usleep(1000);
        /* canceled, or all 10 tokens out before the cancel landed */
        assert_true(res.finish == ENG_FINISH_CANCELED || (res.finish == ENG_FINISH_LENGTH && res.n == 10));
        mid_prefill = res.finish == ENG_FINISH_CANCELED && res.n == 0; /* before its first token */
        eng_release(r);
        wait_idle(e);
        eng_get_metrics(e, &m);
        assert_int_equal(m.kv_used, 0);
    }
    assert_true(mid_prefill);
    /* Mid-decode: release without cancel (a client that vanished), after
     * at least 3 tokens; as above, repeated until a release lands before
     * the request's 200 tokens are all out. */
    rp.max_tokens = 200;
    bool mid_decode = false;
    for (int attempt = 0; attempt < 8 && !mid_decode; attempt++) {
        ASSERT_OK(eng_submit(e, prompt, 10, &rp, NULL, NULL, &r));
        struct result res2 = {0};
        bool done = false;
        for (int i = 0; i < 20000000 && res2.n < 3 && !done; i++)
            done = drain(r, &res2);
        assert_true(res2.n >= 3);
        mid_decode = !done && res2.n < 200;
        eng_release(r);
        wait_idle(e);
        eng_get_metrics(e, &m);
        assert_int_equal(m.kv_used, 0);
        assert_int_equal(m.running, 0);
    }
    assert_true(mid_decode);
    eng_free(e);
}

/* ---- prefix reuse ---- */

static void test_prefix_reuse(void **st)
{
    (void)st;
    int32_t turn1[100], turn2[160];
    for (int i = 0; i < 100; i++)
        turn1[i] = (i * 31 + 7) % 500;
    struct eng_req_params rp = eng_req_params_default();
    rp.sample.temperature = 0;
    rp.max_tokens = 20;
    rp.ignore_eos = true;
    struct result r1, r2, r2_cold;
    int32_t *pp = turn1;
    int len = 100;
    struct engine *e = mk_engine("qwen3moe-tiny-f32", BE_TYPE_F16, 2, 64, 0, true);
    run_many(e, 1, &pp, &len, &rp, &r1);
    /* Turn 2 = turn 1 + its answer + 40 new tokens. */
    memcpy(turn2, turn1, sizeof turn1);
    memcpy(turn2 + 100, r1.toks, 20 * sizeof(int32_t));
    for (int i = 0; i < 40; i++)
        turn2[120 + i] = (i * 17 + 3) % 500;
    struct eng_metrics m0, m1;
    wait_idle(e);
    eng_get_metrics(e, &m0);
    pp = turn2;
    len = 160;
    run_many(e, 1, &pp, &len, &rp, &r2);
    wait_idle(e); /* the metrics snapshot is taken after the step that ended the request */
    eng_get_metrics(e, &m1);
    /* Turn 1 wrote KV for 119 tokens (its last generated token was never fed),
     * so 119 are reused and 41 computed for the prompt, then 19 decode steps. */
    assert_int_equal(r2.usage.cached_tokens, 119);
    assert_int_equal(m1.step_tokens - m0.step_tokens, 41 + 19);
    eng_free(e);
    e = mk_engine("qwen3moe-tiny-f32", BE_TYPE_F16, 2, 64, 0, false);
    run_many(e, 1, &pp, &len, &rp, &r2_cold);
    eng_free(e);
    assert_int_equal(r2_cold.usage.cached_tokens, 0);
    assert_memory_equal(r2.toks, r2_cold.toks, 20 * sizeof(int32_t));
}

/* ---- stop strings, max_tokens, reasoning split ---- */

static void test_stop_strings(void **st)
{
    (void)st;
    struct engine *e = mk_engine("qwen3moe-tiny-f32", BE_TYPE_F32, 2, 64, 0, false);
    int32_t prompt[8] = {5, 17, 42, 99, 3, 250, 7, 64};
    int32_t *pp = prompt;
    int len = 8;
    struct eng_req_params rp = eng_req_params_default();
    rp.sample.temperature = 0;
    rp.max_tokens = 24;
    rp.ignore_eos = true;
    struct result full;
    run_many(e, 1, &pp, &len, &rp, &full);
    assert_int_equal(full.finish, ENG_FINISH_LENGTH);
    assert_int_equal(full.n, 24);
    assert_true(full.text_len >= 8);
    /* Choose a stop string that spans a token boundary: the text of tokens
     * 3..5 is found by decoding them; take a substring crossing tokens. */
    size_t off = full.text_len / 3, sl = 4;
    char stop[8];
    memcpy(stop, full.text + off, sl);
    stop[sl] = 0;
    const char *stops[2] = {"\x01never-appears", stop};
    rp.n_stop = 2;
    rp.stop = stops;
    struct result cut;
    run_many(e, 1, &pp, &len, &rp, &cut);
    char *first = memmem(full.text, full.text_len, stop, sl);
    assert_non_null(first);
    size_t want = (size_t)(first - full.text);
    assert_int_equal(cut.finish, ENG_FINISH_STOP);
    assert_int_equal(cut.text_len, want);
    assert_memory_equal(cut.text, full.text, want);
    /* max_tokens */
    rp.n_stop = 0;
    rp.max_tokens = 5;
    struct result five;
    run_many(e, 1, &pp, &len, &rp, &five);
    assert_int_equal(five.n, 5);
    assert_int_equal(five.usage.completion_tokens, 5);
    assert_int_equal(five.finish, ENG_FINISH_LENGTH);
    /* Reasoning split: treat a piece of the text as the think tags. */
    rp.max_tokens = 24;
    char ts[8], te[8];
    memcpy(ts, full.text + 2, 3); ts[3] = 0;
    size_t te_off = full.text_len - 5;
    memcpy(te, full.text + te_off, 3); te[3] = 0;
    rp.think_start = ts;
    rp.think_end = te;
    struct result th;
    run_many(e, 1, &pp, &len, &rp, &th);
    char *a = memmem(full.text, full.text_len, ts, 3);
    char *b = a ? memmem(a + 3, full.text_len - (size_t)(a + 3 - full.text), te, 3) : NULL;
    /* Both tags are cut from the text itself (start at offset 2, end near its
     * end), so both are found: the split is always checked. */
    assert_true(full.text_len >= 10);
    assert_non_null(a);
    assert_non_null(b);
    size_t content = (size_t)(a - full.text) + (full.text_len - (size_t)(b + 3 - full.text));
    assert_int_equal(th.reasoning_len, (size_t)(b - a - 3));
    assert_memory_equal(th.reasoning, a + 3, th.reasoning_len);
    assert_int_equal(th.text_len, content);
    assert_true(th.reasoning_len > 0 || b == a + 3);
    eng_free(e);
}

static void test_limits(void **st)
{
    (void)st;
    struct engine *e = mk_engine("qwen3moe-tiny-f32", BE_TYPE_F32, 1, 64, 0, false);
    int32_t prompt[300];
    for (int i = 0; i < 300; i++)
        prompt[i] = i % 500;
    struct eng_req_params rp = eng_req_params_default();
    struct eng_req *r = NULL;
    rp.max_tokens = 100;
    assert_int_equal(eng_submit(e, prompt, 200, &rp, NULL, NULL, &r), ERR_CTX_FULL); /* 300 > 256 */
    assert_int_equal(eng_submit(e, prompt, 300, &rp, NULL, NULL, &r), ERR_CTX_FULL);
    prompt[0] = 100000;
    assert_int_equal(eng_submit(e, prompt, 10, &rp, NULL, NULL, &r), -EINVAL);
    assert_null(r);
    eng_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_invariance_f32),
        cmocka_unit_test(test_batch_invariance_f16),
        cmocka_unit_test(test_kv_exhaustion),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_prefix_reuse),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
