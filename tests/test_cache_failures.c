/* SPDX-License-Identifier: MIT */
/*
 * test_cache_failures.c - an expert that cannot be loaded fails exactly the
 * requests that need it, and nothing else: 12 concurrent requests on a tiny
 * model whose expert cache reads one expert with an injected, permanent
 * read failure (the loader's test hook). Which requests route through that
 * expert is computed independently, by running each request's tokens
 * through the forward pass of a fully resident model with the routing
 * observer. Those requests must end with ERR_IO and a message naming the
 * expert; all others must produce exactly the tokens of full residency. The
 * engine must then serve new requests and return every KV block.
 */
#include "tests/testutil.h"

#include "common/err.h"
#include "engine/engine.h"
#include "engine/forward.h"
#include "engine/model.h"

#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { N = 12, GEN = 6, MAXLEN = 64, NE = 8, NL = 2 };
static const char *g_model = "qwen3moe-tiny-q8_0";

struct result {
    int32_t toks[GEN + 1];
    int n;
    int err;
    char msg[256];
};

static bool drain(struct eng_req *r, struct result *res)
{
    struct eng_event ev;
    bool done = false;
    while (eng_poll(r, &ev) == 0) {
        if (ev.type == ENG_EV_DELTA && res->n <= GEN)
            res->toks[res->n++] = ev.token;
        else if (ev.type == ENG_EV_DONE)
            done = true;
        else if (ev.type == ENG_EV_ERROR) {
            res->err = ev.err;
            snprintf(res->msg, sizeof res->msg, "%s", ev.errmsg);
            done = true;
        }
        eng_event_clear(&ev);
    }
    return done;
}

static void run_all(struct engine *e, int n, int32_t (*prompts)[MAXLEN], const int *lens, struct result *res)
{
    struct test_waiter w;
    test_waiter_init(&w);
    struct eng_req *reqs[N];
    bool done[N] = {0};
    struct eng_req_params rp = eng_req_params_default();
    rp.max_tokens = GEN;
    rp.ignore_eos = true;
    rp.sample.temperature = 0;
    for (int i = 0; i < n; i++) {
        memset(&res[i], 0, sizeof res[i]);
        ASSERT_OK(eng_submit(e, prompts[i], lens[i], &rp, test_waiter_notify, &w, &reqs[i]));
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
    test_waiter_destroy(&w);
}

static struct engine *mk(const char *cache, const char *fail)
{
    struct eng_params p = eng_params_default();
    p.model_path = test_model_path(g_model);
    p.parallel = 6; /* 12 requests: some wait, then run beside failing ones */
    p.batch_tokens = 128;
    p.n_threads = 2;
    p.kv_type = BE_TYPE_F32;
    if (cache) {
        p.expert_cache = cache;
        p.store_always = true;
        p.test_fail = fail;
    }
    char err[512];
    struct engine *e = NULL;
    if (eng_init(&e, &p, err, sizeof err) < 0)
        fail_msg("eng_init: %s", err);
    return e;
}

/* used[i][l][e]: request i's tokens route to expert e at layer l. */
static bool g_used[N][NL][NE];
static int g_cur;

static void on_route(void *ud, uint32_t layer, int32_t n_tok, int32_t k, const int32_t *ids, const float *w)
{
    (void)ud;
    (void)w;
    for (int32_t i = 0; i < n_tok * k; i++)
        g_used[g_cur][layer][ids[i]] = true;
}

static void routing_of(int32_t (*prompts)[MAXLEN], const int *lens, const struct result *ref)
{
    char err[512];
    struct model *m = NULL;
    if (model_load(&m, test_model_path(g_model), NULL, err, sizeof err) < 0)
        fail_msg("model_load: %s", err);
    assert_int_equal(m->hp.n_expert, NE);
    assert_int_equal(m->hp.n_layer, NL);
    struct be_cpu_params cp = {.n_threads = 2};
    struct be *be = NULL;
    struct fwd *f = NULL;
    const int bs = 16, nblk = (MAXLEN + GEN + bs - 1) / bs;
    struct fwd_params fp = {.n_tok_max = MAXLEN + GEN, .n_ctx = MAXLEN + GEN, .kv_blocks = nblk,
                            .kv_block_size = bs, .kv_type = BE_TYPE_F32};
    ASSERT_OK(be_cpu_init(&be, &cp));
    ASSERT_OK(fwd_init(&f, m, be, &fp));
    fwd_set_route_cb(f, on_route, NULL);
    float *logits = malloc((size_t)m->hp.n_vocab * sizeof(float));
    int32_t tok[MAXLEN + GEN], pos[MAXLEN + GEN], tab[8], oidx[1];
    const int32_t *tabs[MAXLEN + GEN];
    for (int i = 0; i < nblk; i++)
        tab[i] = i;
    for (int r = 0; r < N; r++) {
        /* the prompt and every generated token but the last were computed */
        int n = 0;
        for (int j = 0; j < lens[r]; j++)
            tok[n++] = prompts[r][j];
        for (int j = 0; j + 1 < ref[r].n; j++)
            tok[n++] = ref[r].toks[j];
        for (int j = 0; j < n; j++)
            pos[j] = j, tabs[j] = tab;
        oidx[0] = n - 1;
        g_cur = r;
        struct fwd_batch b = {.n_tok = n, .tok = tok, .pos = pos, .block_tab = tabs, .n_out = 1, .out_idx = oidx};
        ASSERT_OK(fwd_decode(f, &b, logits));
    }
    free(logits);
    fwd_free(f);
    be_free(be);
    model_free(m);
}

static void test_failures_isolated(void **state)
{
    (void)state;
    int32_t prompts[N][MAXLEN];
    int lens[N];
    uint64_t seed = 99;
    for (int i = 0; i < N; i++) {
        lens[i] = 1 + (int)(test_rand_u64(&seed) % 4); /* short: not every request meets every expert */
        for (int j = 0; j < lens[i]; j++)
            prompts[i][j] = (int32_t)(test_rand_u64(&seed) % 500);
    }
    struct result ref[N], got[N];
    struct engine *e = mk(NULL, NULL);
    run_all(e, N, prompts, lens, ref);
    eng_free(e);
    for (int i = 0; i < N; i++) {
        assert_int_equal(ref[i].err, 0);
        assert_int_equal(ref[i].n, GEN);
    }
    routing_of(prompts, lens, ref);
    /* an expert some requests need and others do not */
    int fl = -1, fe = -1, n_need = 0;
    for (int l = 0; l < NL && fl < 0; l++)
        for (int x = 0; x < NE && fl < 0; x++) {
            int c = 0;
            for (int i = 0; i < N; i++)
                c += g_used[i][l][x];
            if (c >= 2 && c <= N - 3) {
                fl = l, fe = x, n_need = c;
            }
        }
    if (fl < 0)
        fail_msg("no expert is used by some requests and not others (change the prompts)");
    char spec[32];
    snprintf(spec, sizeof spec, "%d:%d", fl, fe);
    print_message("failing expert %d of layer %d, needed by %d of %d requests\n", fe, fl, n_need, N);

    e = mk("30%", spec);
    run_all(e, N, prompts, lens, got);
    char want[64];
    snprintf(want, sizeof want, "expert %d of layer %d", fe, fl);
    int n_failed = 0;
    for (int i = 0; i < N; i++) {
        if (g_used[i][fl][fe]) {
            if (got[i].err != ERR_IO)
                fail_msg("request %d needs the failing expert but ended with %d ('%s')", i, got[i].err, got[i].msg);
            if (!strstr(got[i].msg, want))
                fail_msg("request %d: message '%s' does not name %s", i, got[i].msg, want);
            n_failed++;
        } else {
            if (got[i].err != 0)
                fail_msg("request %d does not need the failing expert but failed: %s", i, got[i].msg);
            if (got[i].n != ref[i].n || memcmp(got[i].toks, ref[i].toks, sizeof(int32_t) * (size_t)ref[i].n) != 0)
                fail_msg("request %d: tokens differ from full residency", i);
        }
    }
    assert_int_equal(n_failed, n_need);
    /* still serving; every block back */
    int ok_idx = -1;
    for (int i = 0; i < N && ok_idx < 0; i++)
        if (!g_used[i][fl][fe])
            ok_idx = i;
    struct result again[1];
    run_all(e, 1, &prompts[ok_idx], &lens[ok_idx], again);
    assert_int_equal(again[0].err, 0);
    assert_memory_equal(again[0].toks, ref[ok_idx].toks, sizeof(int32_t) * GEN);
    struct eng_metrics m;
    for (int t = 0; t < 2000; t++) {
        eng_get_metrics(e, &m);
        if (m.running == 0 && m.waiting == 0 && m.kv_used == 0)
            break;
        usleep(1000);
    }
    assert_int_equal(m.kv_used, 0);
    assert_true(m.expert_store);
    assert_true(m.xs.load_failures >= 1);
    assert_int_equal(m.xs.slots_pinned, 0);
    eng_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failures_isolated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
