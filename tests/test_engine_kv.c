/* SPDX-License-Identifier: MIT */
/*
 * test_engine_kv.c - the KV block manager: allocation, exhaustion, prefix
 * reuse of full and partial blocks (copy-on-write), sharing, LRU eviction,
 * and that every block comes back when all sequences end.
 */
#include "tests/testutil.h"

#include "engine/kv.h"

#include <errno.h>
#include <string.h>

static void seq_tokens(int32_t *t, int n, int salt)
{
    for (int i = 0; i < n; i++)
        t[i] = (i * 7 + salt) % 1000;
}

static struct kv *mk(int n_blocks, int bs, bool prefix)
{
    struct kv *kv = NULL;
    struct kv_params p = {.n_blocks = n_blocks, .block_size = bs, .prefix_cache = prefix};
    ASSERT_OK(kv_init(&kv, &p));
    return kv;
}

/* Runs a whole "prompt" through a sequence: attach, reserve, commit. */
static int run_seq(struct kv *kv, struct kv_seq *s, const int32_t *t, int n, struct kv_copy *cp)
{
    int rc = kv_seq_init(s, kv, 256);
    if (rc < 0)
        return rc;
    int reused = kv_seq_attach_prefix(kv, s, t, n, cp);
    if (reused < 0)
        return reused;
    rc = kv_seq_reserve(kv, s, n);
    if (rc < 0)
        return rc;
    kv_seq_commit(kv, s, t + reused, n - reused);
    return reused;
}

static void test_alloc_free(void **st)
{
    (void)st;
    struct kv *kv = mk(8, 16, false);
    struct kv_seq a, b;
    int32_t t[128];
    struct kv_copy cp;
    struct kv_stats s;
    seq_tokens(t, 128, 1);
    assert_int_equal(run_seq(kv, &a, t, 40, &cp), 0);
    assert_int_equal(a.n_alloc, 3);
    assert_int_equal(run_seq(kv, &b, t, 70, &cp), 0); /* no prefix cache: nothing reused */
    assert_int_equal(b.n_alloc, 5);
    kv_get_stats(kv, &s);
    assert_int_equal(s.used, 8);
    assert_int_equal(s.free, 0);
    /* exhaustion leaves the sequence unchanged */
    assert_int_equal(kv_seq_reserve(kv, &a, 60), -ENOSPC);
    assert_int_equal(a.n_alloc, 3);
    kv_seq_free(kv, &a);
    kv_seq_free(kv, &b);
    kv_get_stats(kv, &s);
    assert_int_equal(s.free, 8);
    assert_int_equal(s.used, 0);
    kv_free(kv);
}

static void test_prefix_reuse(void **st)
{
    (void)st;
    struct kv *kv = mk(16, 16, true);
    struct kv_seq a, b, c;
    int32_t t[128];
    struct kv_copy cp;
    struct kv_stats s;
    seq_tokens(t, 128, 3);
    assert_int_equal(run_seq(kv, &a, t, 40, &cp), 0);
    assert_int_equal(cp.n_rows, 0);
    int32_t a_tail = a.blocks[2];
    kv_seq_free(kv, &a);
    kv_get_stats(kv, &s);
    assert_int_equal(s.cached, 3); /* two full blocks and the partial tail */
    assert_int_equal(s.used, 0);

    /* Second turn: the same 40 tokens then 20 new ones. Exactly the 40 are
     * reused: 32 by attaching full blocks, 8 by copying the partial tail. */
    assert_int_equal(run_seq(kv, &b, t, 60, &cp), 40);
    assert_int_equal(cp.src, a_tail);
    assert_int_equal(cp.n_rows, 8);
    assert_int_equal(cp.dst, b.blocks[2]);
    assert_true(cp.dst != cp.src);

    /* A concurrent sequence with the same first 35 tokens shares the two
     * full blocks and copies 2 rows of b's third block? No: b's third block
     * is in use and not yet full, so only the 32 full-block tokens and the
     * cached tail of a (3 rows) are reusable. */
    assert_int_equal(run_seq(kv, &c, t, 36, &cp), 35);
    assert_int_equal(c.blocks[0], b.blocks[0]);
    assert_int_equal(c.blocks[1], b.blocks[1]);
    assert_int_equal(cp.src, a_tail);
    assert_int_equal(cp.n_rows, 3);

    /* A different prompt reuses nothing. */
    struct kv_seq d;
    int32_t u[64];
    seq_tokens(u, 64, 500);
    assert_int_equal(run_seq(kv, &d, u, 40, &cp), 0);

    kv_seq_free(kv, &b);
    kv_seq_free(kv, &c);
    kv_seq_free(kv, &d);
    kv_get_stats(kv, &s);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.free + s.cached, 16);
    assert_int_equal(s.hit_tokens, 75);
    kv_free(kv);
}

static void test_whole_prompt_cached(void **st)
{
    (void)st;
    /* A prompt entirely in the cache still computes its last token. */
    struct kv *kv = mk(8, 4, true);
    struct kv_seq a, b;
    int32_t t[16];
    struct kv_copy cp;
    seq_tokens(t, 16, 9);
    assert_int_equal(run_seq(kv, &a, t, 12, &cp), 0);
    kv_seq_free(kv, &a);
    assert_int_equal(run_seq(kv, &b, t, 12, &cp), 11);
    assert_int_equal(cp.n_rows, 3); /* block 2's first 3 rows, copied */
    kv_seq_free(kv, &b);
    kv_free(kv);
}

static void test_eviction(void **st)
{
    (void)st;
    struct kv *kv = mk(8, 4, true);
    struct kv_seq a, b, c;
    int32_t t[64], u[64];
    struct kv_copy cp;
    struct kv_stats s;
    seq_tokens(t, 64, 1);
    seq_tokens(u, 64, 777);
    assert_int_equal(run_seq(kv, &a, t, 16, &cp), 0); /* 4 full blocks */
    kv_seq_free(kv, &a);
    kv_get_stats(kv, &s);
    assert_int_equal(s.cached, 4);
    /* A new 20-token prompt needs 5 blocks: 4 free + 1 evicted. */
    assert_int_equal(run_seq(kv, &b, u, 20, &cp), 0);
    kv_get_stats(kv, &s);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.used, 5);
    /* Children were evicted before parents: t's first blocks are still
     * there; 4 tokens attached, 1 copied from the second block (which needs
     * one more eviction for the copy's destination). */
    assert_int_equal(run_seq(kv, &c, t, 6, &cp), 5);
    assert_int_equal(cp.n_rows, 1);
    kv_get_stats(kv, &s);
    assert_int_equal(s.evictions, 2);
    kv_seq_free(kv, &b);
    kv_seq_free(kv, &c);
    kv_get_stats(kv, &s);
    assert_int_equal(s.used, 0);
    kv_free(kv);
}

static void test_stress_no_leak(void **st)
{
    (void)st;
    struct kv *kv = mk(32, 8, true);
    struct kv_seq seqs[6];
    bool live[6] = {0};
    uint64_t r = 42;
    int32_t t[256];
    for (int it = 0; it < 5000; it++) {
        int i = (int)(test_rand_u64(&r) % 6);
        if (live[i]) {
            kv_seq_free(kv, &seqs[i]);
            live[i] = false;
            continue;
        }
        int n = 1 + (int)(test_rand_u64(&r) % 90);
        seq_tokens(t, n, (int)(test_rand_u64(&r) % 3));
        struct kv_copy cp;
        int rc = kv_seq_init(&seqs[i], kv, 128);
        assert_int_equal(rc, 0);
        int reused = kv_seq_attach_prefix(kv, &seqs[i], t, n, &cp);
        if (reused >= 0 && kv_seq_reserve(kv, &seqs[i], n) == 0) {
            assert_true(reused < n);
            kv_seq_commit(kv, &seqs[i], t + reused, n - reused);
            /* blocks of one sequence are distinct */
            for (int a = 0; a < seqs[i].n_alloc; a++)
                for (int b = a + 1; b < seqs[i].n_alloc; b++)
                    assert_int_not_equal(seqs[i].blocks[a], seqs[i].blocks[b]);
            live[i] = true;
        } else {
            kv_seq_free(kv, &seqs[i]);
        }
    }
    for (int i = 0; i < 6; i++)
        if (live[i])
            kv_seq_free(kv, &seqs[i]);
    struct kv_stats s;
    kv_get_stats(kv, &s);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.free + s.cached, 32);
    kv_free(kv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_free),
        cmocka_unit_test(test_prefix_reuse),
        cmocka_unit_test(test_whole_prompt_cached),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_stress_no_leak),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
