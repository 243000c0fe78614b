/* SPDX-License-Identifier: MIT */
/*
 * test_predictor.c - the predictor's arithmetic on hand-checked inputs:
 * precision/recall counters, transition counts learned from a hand-made
 * trace, the path predictor's ranking (path, pregate, combined, ties),
 * Belady and LRU on the textbook reference string, the trace format
 * (roundtrip, corrupt and truncated files), and tools/replay's simulation
 * (LRU, Belady, pre-gating prefetch) on a tiny trace. Every expected number
 * is derived by hand in the comments.
 */
#include "tests/testutil.h"

#include "predictor/path.h"
#include "predictor/score.h"
#include "predictor/simcache.h"
#include "predictor/trace.h"

#include "tools/replay.c"
#undef main

#include <string.h>
#include <unistd.h>

static char g_dir[256];

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) & 3;
    snprintf(buf[i], sizeof buf[i], "%s/%s", g_dir, name);
    return buf[i];
}

/* ---- score ---- */

static void test_score_precision_recall(void **st)
{
    struct pred_score *s = NULL;
    ASSERT_OK(pred_score_init(&s, 3, 2));
    /* pred {1,2,3} vs actual {2,3,4,5}: tp 2, predicted 3, actual 4. */
    int32_t p1[] = {1, 2, 3}, a1[] = {2, 3, 4, 5};
    pred_score_add(s, 1, 2, p1, 3, a1, 4);
    struct pred_score_total t = pred_score_get(s, 1, 2);
    assert_int_equal(t.tp, 2);
    assert_int_equal(t.n_pred, 3);
    assert_int_equal(t.n_actual, 4);
    ASSERT_NEAR(t.precision, 2.0 / 3.0, 1e-12);
    ASSERT_NEAR(t.recall, 0.5, 1e-12);
    /* pred {7,7,-1} vs actual {7,8}: the repeat and the -1 are ignored:
     * tp 1, predicted 1, actual 2. Same cell: totals tp 3, pred 4, actual 6. */
    int32_t p2[] = {7, 7, -1}, a2[] = {7, 8};
    pred_score_add(s, 1, 2, p2, 3, a2, 2);
    t = pred_score_get(s, 1, 2);
    assert_int_equal(t.tp, 3);
    assert_int_equal(t.n_pred, 4);
    assert_int_equal(t.n_actual, 6);
    assert_int_equal(t.n_lists, 2);
    ASSERT_NEAR(t.precision, 0.75, 1e-12);
    ASSERT_NEAR(t.recall, 0.5, 1e-12);
    /* d 2, layer 0: pred {0} vs {1}: a miss. Per-d, per-layer and total. */
    int32_t p3[] = {0}, a3[] = {1};
    pred_score_add(s, 2, 0, p3, 1, a3, 1);
    t = pred_score_get(s, 2, -1);
    assert_int_equal(t.tp, 0);
    assert_int_equal(t.n_pred, 1);
    ASSERT_NEAR(t.precision, 0.0, 0);
    t = pred_score_get(s, 1, 0); /* empty cell: 0, not NaN */
    assert_int_equal(t.n_pred, 0);
    ASSERT_NEAR(t.recall, 0.0, 0);
    t = pred_score_get(s, 0, -1); /* every distance, every layer */
    assert_int_equal(t.tp, 3);
    assert_int_equal(t.n_pred, 5);
    assert_int_equal(t.n_actual, 7);
    ASSERT_NEAR(t.recall, 3.0 / 7.0, 1e-12);
    pred_score_reset(s);
    assert_int_equal(pred_score_get(s, 0, -1).n_lists, 0);
    pred_score_free(s);
    struct pred_score *bad = (void *)1;
    assert_int_equal(pred_score_init(&bad, 0, 1), ERR_INVALID);
    assert_null(bad);
}

/* ---- trace ---- */

/* 3 layers (layer 1 not MoE), 4 experts, k 2, D 1, m 2. */
static const uint64_t EB3[3] = {1000, 0, 3000};

static void write_small_trace(const char *path, int n_tok)
{
    struct trace_info in = {.n_layer = 3, .n_expert = 4, .k = 2, .lookahead = 1, .m = 2, .expert_bytes = EB3};
    struct trace_writer *w = NULL;
    char err[256];
    ASSERT_OK(trace_writer_open(&w, path, &in, err, sizeof err));
    for (int t = 0; t < n_tok; t++) {
        int32_t ids[6] = {t % 4, (t + 1) % 4, -1, -1, (t + 2) % 4, 3 - t % 4};
        float wt[6] = {0.75f, 0.25f, 0, 0, 0.5f + t, 0.5f};
        int32_t pred[6] = {t % 4, -1, 2, 1, -1, -1};
        struct trace_token tt = {.step = (uint32_t)t / 2, .seq = 100 + (uint32_t)t % 2, .pos = t - 1,
                                 .ids = ids, .w = wt, .pred = pred};
        ASSERT_OK(trace_writer_write_token(w, &tt));
    }
    assert_int_equal(trace_writer_count(w), n_tok);
    ASSERT_OK(trace_writer_close(w));
}

static void test_trace_roundtrip(void **st)
{
    const char *path = tmp_path("rt.trace");
    write_small_trace(path, 5);
    struct trace_reader *r = NULL;
    char err[256];
    ASSERT_OK(trace_reader_open(&r, path, err, sizeof err));
    const struct trace_info *in = trace_reader_info(r);
    assert_int_equal(in->n_layer, 3);
    assert_int_equal(in->n_expert, 4);
    assert_int_equal(in->k, 2);
    assert_int_equal(in->lookahead, 1);
    assert_int_equal(in->m, 2);
    assert_int_equal(in->expert_bytes[0], 1000);
    assert_int_equal(in->expert_bytes[1], 0);
    assert_int_equal(in->expert_bytes[2], 3000);
    assert_int_equal(trace_reader_count(r), 5);
    /* 12 + 3 x (2 x 8 + 1 x 2 x 4) = 84 bytes per record */
    assert_int_equal(trace_record_bytes(in), 84);
    struct trace_token t;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(trace_reader_next(r, &t), 0);
        assert_int_equal(t.step, i / 2);
        assert_int_equal(t.seq, 100 + i % 2);
        assert_int_equal(t.pos, i - 1);
        int32_t ids[6] = {i % 4, (i + 1) % 4, -1, -1, (i + 2) % 4, 3 - i % 4};
        int32_t pred[6] = {i % 4, -1, 2, 1, -1, -1};
        assert_memory_equal(t.ids, ids, sizeof ids);
        assert_memory_equal(t.pred, pred, sizeof pred);
        ASSERT_NEAR(t.w[0], 0.75, 0);
        ASSERT_NEAR(t.w[4], 0.5 + i, 0);
    }
    assert_int_equal(trace_reader_next(r, &t), 1);
    assert_int_equal(trace_reader_next(r, &t), 1);
    ASSERT_OK(trace_reader_rewind(r));
    assert_int_equal(trace_reader_next(r, &t), 0);
    assert_int_equal(t.pos, -1);
    trace_reader_close(r);
    trace_reader_close(NULL);
}

static void expect_open_error(const char *path, int code, const char *needle)
{
    struct trace_reader *r = (void *)1;
    char err[512] = "";
    int rc = trace_reader_open(&r, path, err, sizeof err);
    assert_int_equal(rc, code);
    assert_null(r);
    if (!strstr(err, path) || !strstr(err, needle))
        fail_msg("error '%s' should name %s and say '%s'", err, path, needle);
}

static void patch(const char *path, long off, const void *bytes, size_t n)
{
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, off, SEEK_SET);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    fclose(fp);
}

static void test_trace_errors(void **st)
{
    const char *path = tmp_path("bad.trace");
    /* header: 32 + 3 x 8 = 56 bytes; records of 84 */
    write_small_trace(path, 3);
    assert_int_equal(truncate(path, 56 + 84 * 3 - 5), 0);
    expect_open_error(path, ERR_MODEL_FORMAT, "truncated trace");

    write_small_trace(path, 3);
    assert_int_equal(truncate(path, 40), 0);
    expect_open_error(path, ERR_MODEL_FORMAT, "truncated trace header");

    write_small_trace(path, 3);
    patch(path, 0, "MOEDTRC2", 8);
    expect_open_error(path, ERR_MODEL_FORMAT, "not a routing trace");

    write_small_trace(path, 3);
    uint8_t v2[4] = {2, 0, 0, 0};
    patch(path, 8, v2, 4);
    expect_open_error(path, ERR_MODEL_FORMAT, "unsupported trace version 2");

    write_small_trace(path, 3);
    uint8_t k9[4] = {9, 0, 0, 0}; /* k 9 > n_expert 4 */
    patch(path, 20, k9, 4);
    expect_open_error(path, ERR_MODEL_FORMAT, "corrupt trace header");

    expect_open_error(tmp_path("missing.trace"), -ENOENT, "cannot open");

    /* An expert id out of range in token 1, layer 0: open succeeds, next fails. */
    write_small_trace(path, 3);
    uint8_t id7[4] = {7, 0, 0, 0};
    patch(path, 56 + 84 + 12, id7, 4);
    struct trace_reader *r = NULL;
    char err[256];
    ASSERT_OK(trace_reader_open(&r, path, err, sizeof err));
    struct trace_token t;
    assert_int_equal(trace_reader_next(r, &t), 0);
    assert_int_equal(trace_reader_next(r, &t), ERR_MODEL_FORMAT);
    if (!strstr(trace_reader_error(r), path) || !strstr(trace_reader_error(r), "token 1 layer 0"))
        fail_msg("error: %s", trace_reader_error(r));
    trace_reader_close(r);

    /* Writer: a bad shape and a bad id. */
    struct trace_writer *w = (void *)1;
    struct trace_info bad = {.n_layer = 2, .n_expert = 4, .k = 5, .expert_bytes = EB3};
    assert_int_equal(trace_writer_open(&w, path, &bad, err, sizeof err), ERR_INVALID);
    assert_null(w);
    assert_non_null(strstr(err, path));
    struct trace_info ok = {.n_layer = 1, .n_expert = 4, .k = 1, .expert_bytes = EB3};
    ASSERT_OK(trace_writer_open(&w, path, &ok, err, sizeof err));
    int32_t id = 4;
    struct trace_token tt = {.ids = &id};
    assert_int_equal(trace_writer_write_token(w, &tt), ERR_INVALID);
    assert_non_null(strstr(trace_writer_error(w), "out of range"));
    ASSERT_OK(trace_writer_close(w));
    assert_int_equal(trace_writer_open(&w, "/nonexistent-dir/x.trace", &ok, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "/nonexistent-dir/x.trace"));
}

/* ---- path predictor ---- */

/* Transitions on a hand-made trace, written and read back:
 *   t0: L0 {0,1}  L1 {2,3}  L2 {0,2}
 *   t1: L0 {0,2}  L1 {2,1}  L2 {3,0}
 * T_0: t0 gives 0->2 0->3 1->2 1->3; t1 gives 0->2 0->1 2->2 2->1.
 * T_1: t0 gives 2->0 2->2 3->0 3->2; t1 gives 2->3 2->0 1->3 1->0. */
static void test_path_transitions(void **st)
{
    const char *path = tmp_path("tr.trace");
    uint64_t eb[3] = {10, 10, 10};
    struct trace_info in = {.n_layer = 3, .n_expert = 4, .k = 2, .expert_bytes = eb};
    struct trace_writer *w = NULL;
    char err[256];
    ASSERT_OK(trace_writer_open(&w, path, &in, err, sizeof err));
    int32_t t0[6] = {0, 1, 2, 3, 0, 2}, t1[6] = {0, 2, 2, 1, 3, 0};
    struct trace_token tt = {.seq = 1, .ids = t0};
    ASSERT_OK(trace_writer_write_token(w, &tt));
    tt.ids = t1;
    ASSERT_OK(trace_writer_write_token(w, &tt));
    ASSERT_OK(trace_writer_close(w));

    struct pred_path_params p = pred_path_params_default();
    p.n_layer = 3, p.n_expert = 4, p.k = 2, p.lookahead = 2;
    struct pred_path *pp = NULL;
    ASSERT_OK(pred_path_init(&pp, &p));
    struct trace_reader *r = NULL;
    ASSERT_OK(trace_reader_open(&r, path, err, sizeof err));
    struct trace_token t;
    while (trace_reader_next(r, &t) == 0)
        pred_path_update(pp, t.seq, t.ids);
    trace_reader_close(r);
    static const uint32_t T0[4][4] = {{0, 1, 2, 1}, {0, 0, 1, 1}, {0, 1, 1, 0}, {0, 0, 0, 0}};
    static const uint32_t T1[4][4] = {{0, 0, 0, 0}, {1, 0, 0, 1}, {2, 0, 1, 1}, {1, 0, 1, 0}};
    for (uint32_t i = 0; i < 4; i++)
        for (uint32_t j = 0; j < 4; j++) {
            if (pred_path_transition(pp, 0, i, j) != T0[i][j])
                fail_msg("T_0[%u][%u] = %u, expected %u", i, j, pred_path_transition(pp, 0, i, j), T0[i][j]);
            if (pred_path_transition(pp, 1, i, j) != T1[i][j])
                fail_msg("T_1[%u][%u] = %u, expected %u", i, j, pred_path_transition(pp, 1, i, j), T1[i][j]);
            assert_int_equal(pred_path_transition(pp, 2, i, j), 0);
        }
    pred_path_free(pp);
}

/* 2 layers, 4 experts, k 1, D 1; plain counts (no decay); the weights are
 * set here so that tuning the defaults does not move the hand-computed
 * scores below. */
static struct pred_path *mk_path(uint32_t max_seqs)
{
    struct pred_path_params p = pred_path_params_default();
    p.n_layer = 2, p.n_expert = 4, p.k = 1, p.lookahead = 1, p.pop_decay = 1.0f, p.max_seqs = max_seqs;
    p.w_trans = 1.0f, p.w_recent = 0.5f, p.w_pop = 0.1f, p.w_pregate = 0.6f, p.pregate_decay = 0.8f;
    struct pred_path *pp = NULL;
    ASSERT_OK(pred_path_init(&pp, &p));
    return pp;
}

static void test_path_ranking(void **st)
{
    struct pred_path *pp = mk_path(4);
    int32_t out[4], cur0 = 0;
    /* Untrained: layer 1 was never seen with experts, so nothing is predicted. */
    ASSERT_OK(pred_path_predict(pp, PRED_MODE_PATH, 0, 0, &cur0, NULL, 0, 1, 3, out));
    assert_int_equal(out[0], -1);
    assert_int_equal(out[2], -1);

    /* Sequence 0: L0 e0 -> L1 e1 three times, then L0 e0 -> L1 e2 once. */
    int32_t a[2] = {0, 1}, b[2] = {0, 2};
    pred_path_update(pp, 0, a);
    pred_path_update(pp, 0, a);
    pred_path_update(pp, 0, a);
    pred_path_update(pp, 0, b);
    /* Path score at L1 for cur {0}:
     *   P(j|0) = (T[0][j] + 1/4) / (4 + 1): e1 0.65, e2 0.25, e0 0.05, e3 0.05
     *   recency (seq 0, 4 tokens): e1 3/4, e2 1/4, x w_recent 0.5
     *   popularity x k: e1 3/4, e2 1/4, x w_pop 0.1
     *   s: e1 0.65+0.375+0.075 = 1.1, e2 0.25+0.125+0.025 = 0.4, e0 = e3 = 0.05 */
    ASSERT_OK(pred_path_predict(pp, PRED_MODE_PATH, 0, 0, &cur0, NULL, 0, 1, 4, out));
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 2);
    assert_int_equal(out[2], 0); /* tie with e3 at 0.05: lower id first */
    assert_int_equal(out[3], 3);

    /* Pregate only: the list as given, -1 beyond it. */
    int32_t pg[2] = {3, 0};
    ASSERT_OK(pred_path_predict(pp, PRED_MODE_PREGATE, 0, 0, &cur0, pg, 2, 1, 3, out));
    assert_int_equal(out[0], 3);
    assert_int_equal(out[1], 0);
    assert_int_equal(out[2], -1);

    /* Combined, a = 0.6, m = 2: g(e3) = 0.6 x 2/3 = 0.4, g(e0) = 0.6 x 1/3 = 0.2;
     * plus 0.4 x s: e1 0.44, e3 0.4 + 0.02 = 0.42, e0 0.2 + 0.02 = 0.22, e2 0.16. */
    ASSERT_OK(pred_path_predict(pp, PRED_MODE_COMBINED, 0, 0, &cur0, pg, 2, 1, 4, out));
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 3);
    assert_int_equal(out[2], 0);
    assert_int_equal(out[3], 2);

    /* Another sequence has no recency: s(e1) = 0.65 + 0.075 = 0.725 x 0.4 = 0.29
     * < 0.42 for e3, so the pregate pick comes first. */
    ASSERT_OK(pred_path_predict(pp, PRED_MODE_COMBINED, 9, 0, &cur0, pg, 2, 1, 2, out));
    assert_int_equal(out[0], 3);
    assert_int_equal(out[1], 1);

    /* A list of -1 (not recorded): combined falls back to the path score. */
    int32_t none[2] = {-1, -1};
    ASSERT_OK(pred_path_predict(pp, PRED_MODE_COMBINED, 0, 0, &cur0, none, 2, 1, 2, out));
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 2);

    /* Past the last layer: -1; bad arguments: ERR_INVALID. */
    ASSERT_OK(pred_path_predict(pp, PRED_MODE_PATH, 0, 1, &cur0, NULL, 0, 1, 2, out));
    assert_int_equal(out[0], -1);
    assert_int_equal(pred_path_predict(pp, PRED_MODE_PATH, 0, 0, &cur0, NULL, 0, 2, 2, out), ERR_INVALID);
    assert_int_equal(pred_path_predict(pp, PRED_MODE_PATH, 0, 0, &cur0, NULL, 0, 1, 5, out), ERR_INVALID);
    pred_path_free(pp);
}

static void test_path_recency_eviction(void **st)
{
    /* One sequence slot: seq 1 evicts seq 0's ring. No transitions from e0
     * other than to e3 (seq 0) and e2 (seq 1), so the recency term decides
     * between e2 and e3 for each sequence. */
    struct pred_path *pp = mk_path(1);
    int32_t s0[2] = {0, 3}, s1[2] = {0, 2}, out[2], cur0 = 0;
    pred_path_update(pp, 0, s0);
    /* seq 0: e3 has T 1 -> P 0.45, recency 0.5, pop 0.1: e3 first. */
    ASSERT_OK(pred_path_predict(pp, PRED_MODE_PATH, 0, 0, &cur0, NULL, 0, 1, 1, out));
    assert_int_equal(out[0], 3);
    pred_path_update(pp, 1, s1);
    /* Now T[0][2] = T[0][3] = 1 and popularity is equal; seq 1 owns the only
     * slot, so for seq 1 e2 wins by recency, for seq 0 (evicted) the tie goes
     * to the lower id, e2 too; after seq 1 ends, still e2 (tie). */
    ASSERT_OK(pred_path_predict(pp, PRED_MODE_PATH, 1, 0, &cur0, NULL, 0, 1, 1, out));
    assert_int_equal(out[0], 2);
    pred_path_update(pp, 0, s0); /* seq 0 back: evicts seq 1 */
    ASSERT_OK(pred_path_predict(pp, PRED_MODE_PATH, 0, 0, &cur0, NULL, 0, 1, 1, out));
    assert_int_equal(out[0], 3); /* T 2 vs 1 and recency */
    pred_path_update(pp, 1, s1);
    pred_path_update(pp, 1, s1); /* T[0][2] 3 vs T[0][3] 2; seq 1 ring {e2, e2} */
    ASSERT_OK(pred_path_predict(pp, PRED_MODE_PATH, 0, 0, &cur0, NULL, 0, 1, 1, out));
    assert_int_equal(out[0], 2);
    pred_path_free(pp);
}

/* ---- Belady and LRU on the textbook string ---- */

/* Reference string 7 0 1 2 0 3 0 4 2 3 0 3 2 1 2 0 1 7 0 1, 3 frames.
 * OPT (Belady), misses marked *:
 *   7* 0* 1* | 2* evict 7 (next use 17) -> 2 0 1 | 0 | 3* evict 1 (next 13)
 *   -> 2 0 3 | 0 | 4* evict 0 (next 10; 2 at 8, 3 at 9) -> 2 4 3 | 2 | 3 |
 *   0* evict 4 (never) -> 2 0 3 | 3 | 2 | 1* evict 3 (never) -> 2 0 1 | 2 |
 *   0 | 1 | 7* evict 2 (never used again; 0 at 18, 1 at 19) -> 7 0 1 | 0 | 1
 *                                          => 9 misses, 11 hits.
 * LRU: 7* 0* 1* 2*(-7) 0 3*(-1) 0 4*(-2) 2*(-3) 3*(-0) 0*(-4) 3 2 1*(-0)
 *   2 0*(-3) 1 7*(-2) 0 1                   => 12 misses, 8 hits. */
static const uint32_t REF[20] = {7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1};

static void test_belady_textbook(void **st)
{
    uint64_t kb[8];
    for (int i = 0; i < 8; i++)
        kb[i] = 10;
    struct simcache_stats s;
    ASSERT_OK(simcache_belady(REF, 20, 8, kb, 30, &s));
    assert_int_equal(s.accesses, 20);
    assert_int_equal(s.misses, 9);
    assert_int_equal(s.hits, 11);
    assert_int_equal(s.bytes_loaded, 90);
    /* 4 frames: 8 misses (counted by an independent Python simulation of OPT,
     * not by hand). */
    ASSERT_OK(simcache_belady(REF, 20, 8, kb, 40, &s));
    assert_int_equal(s.misses, 8);

    struct simcache *c = NULL;
    struct simcache_params p = {.n_keys = 8, .key_bytes = kb, .capacity_bytes = 30, .evict = SIMCACHE_LRU};
    ASSERT_OK(simcache_init(&c, &p));
    for (int i = 0; i < 20; i++)
        simcache_access(c, REF[i]);
    assert_int_equal(simcache_get_stats(c)->misses, 12);
    assert_int_equal(simcache_get_stats(c)->hits, 8);
    assert_int_equal(simcache_get_stats(c)->bytes_loaded, 120);
    simcache_free(c);
}

/* Protection and prefetch accounting in the cache alone (2 slots). */
static void test_simcache_prefetch(void **st)
{
    uint64_t kb[4] = {1, 1, 1, 1};
    struct simcache *c = NULL;
    struct simcache_params p = {.n_keys = 4, .key_bytes = kb, .capacity_bytes = 2};
    ASSERT_OK(simcache_init(&c, &p));
    simcache_access(c, 0);                    /* miss: [0] */
    assert_int_equal(simcache_prefetch(c, 1), 1); /* issued, protected: [1 0] */
    assert_int_equal(simcache_prefetch(c, 2), 1); /* evicts 0 (unprotected): [2 1] */
    assert_int_equal(simcache_prefetch(c, 3), 0); /* both protected: no room */
    assert_false(simcache_resident(c, 0));
    assert_true(simcache_access(c, 1));       /* used */
    simcache_unprotect(c, 1);
    simcache_unprotect(c, 2);
    simcache_access(c, 0);                    /* miss, evicts LRU 2 (never used): wasted */
    assert_int_equal(simcache_prefetch(c, 3), 1); /* evicts 1 */
    simcache_finish(c);                       /* 3 unused: wasted */
    const struct simcache_stats *s = simcache_get_stats(c);
    assert_int_equal(s->pf.issued, 3);
    assert_int_equal(s->pf.used, 1);
    assert_int_equal(s->pf.wasted, 2);
    assert_int_equal(s->hits, 1);
    assert_int_equal(s->misses, 2);
    assert_int_equal(s->bytes_loaded, 5);
    assert_int_equal(s->bytes_prefetched, 3);
    /* Protected entries do not block a demand load. */
    assert_int_equal(simcache_prefetch(c, 1), 1); /* [1 3], both protected */
    assert_false(simcache_access(c, 2));      /* evicts the least recent protected, 3 */
    assert_true(simcache_resident(c, 2));
    assert_true(simcache_resident(c, 1));
    simcache_free(c);
}

/* ---- tools/replay on a tiny trace ---- */

/* 2 layers, 4 experts, k 1, 100 bytes per expert; keys L0 e -> e, L1 e -> 4 + e.
 * tokens (L0, L1): t0 (0,1) t1 (0,2) t2 (1,1) t3 (0,1); pregate list at L0 for
 * L1 = the actual L1 expert (a perfect predictor), m 1. */
static void write_tiny(const char *path)
{
    uint64_t eb[2] = {100, 100};
    struct trace_info in = {.n_layer = 2, .n_expert = 4, .k = 1, .lookahead = 1, .m = 1, .expert_bytes = eb};
    struct trace_writer *w = NULL;
    char err[256];
    ASSERT_OK(trace_writer_open(&w, path, &in, err, sizeof err));
    const int32_t tok[4][2] = {{0, 1}, {0, 2}, {1, 1}, {0, 1}};
    for (int t = 0; t < 4; t++) {
        int32_t pred[2] = {tok[t][1], -1};
        float wt[2] = {1, 1};
        struct trace_token tt = {.step = (uint32_t)t, .seq = 0, .pos = t, .ids = tok[t], .w = wt, .pred = pred};
        ASSERT_OK(trace_writer_write_token(w, &tt));
    }
    ASSERT_OK(trace_writer_close(w));
}

static void test_replay_tiny(void **st)
{
    const char *path = tmp_path("tiny.trace");
    write_tiny(path);
    struct trace_mem tm = {0};
    ASSERT_OK(load_trace(path, &tm));
    assert_int_equal(tm.n_tok, 4);
    uint32_t start[5];
    struct run_cfg cfg = {.capacity = 200, .k_pred = 1, .lookahead = 1, .static_share = 0.5,
                          .pp = pred_path_params_default()};
    struct run_out ro;

    /* Batch 1: accesses 0 5 | 0 6 | 1 5 | 0 5. LRU with 2 slots:
     * 0* 5* 0 6*(-5) 1*(-0) 5*(-6) 0*(-1) 5  => 2 hits, 6 misses, 600 bytes. */
    uint32_t nb = make_batches(&tm, 1, start);
    assert_int_equal(nb, 4);
    ASSERT_OK(run_policy(&tm, start, nb, P_LRU, &cfg, &ro));
    assert_int_equal(ro.st.accesses, 8);
    assert_int_equal(ro.st.hits, 2);
    assert_int_equal(ro.st.misses, 6);
    assert_int_equal(ro.st.bytes_loaded, 600);
    /* Belady: 0* 5* 0 6*(-0, next 6 vs 5 at 5) 1*(-6, never) 5 0*(-1) 5
     * => 3 hits, 5 misses. */
    ASSERT_OK(run_policy(&tm, start, nb, P_BELADY, &cfg, &ro));
    assert_int_equal(ro.st.hits, 3);
    assert_int_equal(ro.st.misses, 5);
    /* LRU + perfect pregate (prefetch L1 after L0's access, protected):
     * t0: 0* pf5 5 | t1: 0 pf6(-5) 6 | t2: 1*(-0) pf5(-6) 5 | t3: 0*(-1) pf5(resident) 5
     * => 5 hits, 3 misses; 3 prefetches issued, all used; 600 bytes. */
    ASSERT_OK(run_policy(&tm, start, nb, P_PREGATE, &cfg, &ro));
    assert_int_equal(ro.st.hits, 5);
    assert_int_equal(ro.st.misses, 3);
    assert_int_equal(ro.st.pf.issued, 3);
    assert_int_equal(ro.st.pf.used, 3);
    assert_int_equal(ro.st.pf.wasted, 0);
    assert_int_equal(ro.st.bytes_loaded, 600);
    ASSERT_NEAR(ro.p[0], 1.0, 0);
    ASSERT_NEAR(ro.r[0], 1.0, 0);

    /* Batch 2: {t0 t1}: L0 {0}, L1 {1,2}; {t2 t3}: L0 {0,1}, L1 {1}:
     * accesses 0 5 6 0 1 5. LRU: all 6 miss. Belady: 0* 5* 6*(-5: next 5 vs
     * 0 at 3) 0 1*(-6, never) 5*(-0 or 1, both never; ties to the higher key: 1) => 1 hit. */
    nb = make_batches(&tm, 2, start);
    assert_int_equal(nb, 2);
    ASSERT_OK(run_policy(&tm, start, nb, P_LRU, &cfg, &ro));
    assert_int_equal(ro.st.accesses, 6);
    assert_int_equal(ro.st.hits, 0);
    ASSERT_OK(run_policy(&tm, start, nb, P_BELADY, &cfg, &ro));
    assert_int_equal(ro.st.hits, 1);
    assert_int_equal(ro.st.misses, 5);
    /* "live": the recorded steps are 0 1 2 3, so the same as batch 1. */
    assert_int_equal(make_batches(&tm, 0, start), 4);
    free(tm.expert_bytes);
    free(tm.step);
    free(tm.seq);
    free(tm.ids);
    free(tm.pred);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/test_predictor.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_score_precision_recall),
        cmocka_unit_test(test_trace_roundtrip),
        cmocka_unit_test(test_trace_errors),
        cmocka_unit_test(test_path_transitions),
        cmocka_unit_test(test_path_ranking),
        cmocka_unit_test(test_path_recency_eviction),
        cmocka_unit_test(test_belady_textbook),
        cmocka_unit_test(test_simcache_prefetch),
        cmocka_unit_test(test_replay_tiny),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return rc ? 1 : 0;
}
