/* SPDX-License-Identifier: MIT */
/*
 * test_engine_sample.c - every sampler stage against a reference computed
 * here on fixed logits: the exact candidate set (top-k, top-p, min-p), the
 * distribution of many seeded draws against the reference probabilities
 * (within 5 standard deviations per token), penalties and bias through
 * greedy choices, seeds, and log-probabilities.
 */
#include "tests/testutil.h"

#include "engine/sample.h"

#include <errno.h>
#include <string.h>

#define V 12
static const float L0[V] = {2.0f, 1.5f, 1.4f, 1.0f, 0.5f, 0.2f, 0.0f, -0.3f, -1.0f, -2.0f, -4.0f, 3.1f};

/* Reference distribution: temperature, top-k, top-p, min-p in that order. */
static void ref_dist(double *pr, float t, int k, float top_p, float min_p)
{
    int order[V];
    for (int i = 0; i < V; i++)
        order[i] = i;
    for (int i = 0; i < V; i++) /* sort ids by logit, descending (stable) */
        for (int j = i + 1; j < V; j++)
            if (L0[order[j]] > L0[order[i]]) {
                int x = order[i]; order[i] = order[j]; order[j] = x;
            }
    int n = k > 0 && k < V ? k : V;
    double e[V] = {0}, sum = 0;
    for (int i = 0; i < n; i++)
        sum += e[order[i]] = exp((L0[order[i]] - L0[order[0]]) / t);
    int keep = n;
    if (top_p < 1) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            acc += e[order[i]] / sum;
            if (acc >= top_p) { keep = i + 1; break; }
        }
    }
    double pmax = e[order[0]];
    for (int i = 0; i < keep; i++)
        if (e[order[i]] < min_p * pmax) { keep = i; break; }
    double mass = 0;
    for (int i = 0; i < V; i++) pr[i] = 0;
    for (int i = 0; i < keep; i++) mass += e[order[i]];
    for (int i = 0; i < keep; i++) pr[order[i]] = e[order[i]] / mass;
}

static void check_dist(float t, int k, float top_p, float min_p)
{
    struct sample_params p = sample_params_default();
    p.temperature = t; p.top_k = k; p.top_p = top_p; p.min_p = min_p;
    p.seed = 1234; p.has_seed = true;
    struct sampler *s = NULL;
    ASSERT_OK(sampler_init(&s, &p, V, NULL, 0));
    const int N = 40000;
    int cnt[V] = {0};
    float lg[V];
    for (int it = 0; it < N; it++) {
        memcpy(lg, L0, sizeof lg);
        int32_t tok = sampler_sample(s, lg, NULL);
        assert_true(tok >= 0 && tok < V);
        cnt[tok]++;
    }
    double pr[V];
    ref_dist(pr, t, k, top_p, min_p);
    for (int i = 0; i < V; i++) {
        if (pr[i] == 0) {
            if (cnt[i] != 0)
                fail_msg("token %d drawn %d times but excluded (t %g k %d p %g minp %g)", i, cnt[i], t, k, top_p, min_p);
            continue;
        }
        double sd = sqrt(N * pr[i] * (1 - pr[i])) + 1;
        if (fabs(cnt[i] - N * pr[i]) > 5 * sd)
            fail_msg("token %d: %d draws, expected %.1f (t %g k %d p %g minp %g)", i, cnt[i], N * pr[i], t, k, top_p, min_p);
    }
    sampler_free(s);
}

static void test_distributions(void **st)
{
    (void)st;
    check_dist(1.0f, 0, 1.0f, 0.0f);
    check_dist(0.5f, 0, 1.0f, 0.0f);
    check_dist(2.0f, 0, 1.0f, 0.0f);
    check_dist(1.0f, 3, 1.0f, 0.0f);
    check_dist(1.0f, 0, 0.7f, 0.0f);
    check_dist(0.8f, 5, 0.9f, 0.0f);
    check_dist(1.0f, 0, 1.0f, 0.3f);
    check_dist(1.2f, 6, 0.95f, 0.1f);
    check_dist(1.0f, 1, 1.0f, 0.0f); /* top-k 1 is greedy */
}

static int32_t greedy_with(struct sample_params p, const float *logits, const int32_t *prompt, int np,
                           const int32_t *gen, int ng)
{
    struct sampler *s = NULL;
    p.temperature = 0;
    ASSERT_OK(sampler_init(&s, &p, V, prompt, np));
    for (int i = 0; i < ng; i++)
        sampler_accept(s, gen[i]);
    float lg[V];
    memcpy(lg, logits, sizeof lg);
    int32_t t = sampler_sample(s, lg, NULL);
    sampler_free(s);
    return t;
}

/* Greedy picks the first index of the largest logit, NaNs never winning,
 * exactly as a plain scan does, over a vocabulary the vector scan of
 * sample.c covers in blocks of 16 plus a tail: ties, a maximum in the tail,
 * at index 0, negative zeros and NaNs. */
static void test_greedy_scan(void **st)
{
    (void)st;
    enum { NV = 1000 + 13 };
    static float lg[NV], cp[NV];
    uint64_t r = 12345;
    struct sample_params p = sample_params_default();
    p.temperature = 0;
    for (int c = 0; c < 400; c++) {
        for (int i = 0; i < NV; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            lg[i] = (float)((r >> 40) % 64) * 0.25f - 8.0f; /* many ties */
        }
        const int at = (int)((r >> 20) % NV);
        switch (c % 8) {
        case 1: lg[at] = 100.0f; lg[NV - 1] = 100.0f; break;
        case 2: lg[NV - 1 - c % 13] = 50.0f; break; /* in the tail */
        case 3: lg[0] = 60.0f; lg[at] = 60.0f; break;
        case 4: for (int i = 0; i < NV; i++) lg[i] = i == at ? 0.0f : (i % 3 ? -0.0f : -1.0f); break;
        case 5: lg[at] = NAN; lg[(at + 7) % NV] = NAN; break;
        case 6: lg[0] = NAN; break;
        case 7: for (int i = 0; i < NV; i++) lg[i] = -INFINITY; lg[at] = NAN; break;
        default: break;
        }
        int32_t want = 0;
        for (int i = 1; i < NV; i++)
            if (lg[i] > lg[want])
                want = i;
        struct sampler *s = NULL;
        ASSERT_OK(sampler_init(&s, &p, NV, NULL, 0));
        memcpy(cp, lg, sizeof cp);
        assert_int_equal(sampler_sample(s, cp, NULL), want);
        sampler_free(s);
    }
}

static void test_greedy_penalties_bias(void **st)
{
    (void)st;
    struct sample_params p = sample_params_default();
    assert_int_equal(greedy_with(p, L0, NULL, 0, NULL, 0), 11);
    /* logit bias */
    struct sample_bias b[2] = {{11, -2.0f}, {9, 10.0f}};
    p.n_bias = 1; p.bias = b;
    assert_int_equal(greedy_with(p, L0, NULL, 0, NULL, 0), 0); /* 3.1-2 < 2.0 */
    p.n_bias = 2;
    assert_int_equal(greedy_with(p, L0, NULL, 0, NULL, 0), 9);
    p = sample_params_default();
    /* repetition penalty over the prompt: 3.1/1.6 = 1.94 < 2.0 */
    int32_t pr[1] = {11};
    p.repetition_penalty = 1.6f;
    assert_int_equal(greedy_with(p, L0, pr, 1, NULL, 0), 0);
    p.repetition_penalty = 1.5f; /* 2.07 > 2.0 */
    assert_int_equal(greedy_with(p, L0, pr, 1, NULL, 0), 11);
    /* negative logits are multiplied: token 10 at -4 gets more negative (no effect on argmax) */
    p = sample_params_default();
    /* presence counts generated tokens only, once */
    int32_t g[3] = {11, 11, 0};
    p.presence_penalty = 1.0f; /* 11: 2.1, 0: 1.0 -> 11 */
    assert_int_equal(greedy_with(p, L0, pr, 1, g, 3), 11);
    p.presence_penalty = 0; p.frequency_penalty = 0.6f; /* 11: 3.1-1.2=1.9, 0: 1.4, 1: 1.5 -> 11 */
    assert_int_equal(greedy_with(p, L0, NULL, 0, g, 3), 11);
    p.frequency_penalty = 0.7f; /* 11: 1.7 -> 1 (1.5)? no: 1.7 > 1.5 -> 11 */
    assert_int_equal(greedy_with(p, L0, NULL, 0, g, 3), 11);
    p.frequency_penalty = 0.85f; /* 11: 1.4, 0: 1.15, 1: 1.5 -> 1 */
    assert_int_equal(greedy_with(p, L0, NULL, 0, g, 3), 1);
    /* prompt tokens do not count for presence/frequency */
    p.frequency_penalty = 5.0f;
    assert_int_equal(greedy_with(p, L0, pr, 1, NULL, 0), 11);
}

static void test_seeds(void **st)
{
    (void)st;
    struct sample_params p = sample_params_default();
    p.seed = 99; p.has_seed = true;
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        struct sampler *s = NULL;
        p.seed = run == 2 ? 100 : 99;
        ASSERT_OK(sampler_init(&s, &p, V, NULL, 0));
        for (int i = 0; i < 64; i++) {
            float lg[V];
            memcpy(lg, L0, sizeof lg);
            int32_t t = sampler_sample(s, lg, NULL);
            (run == 0 ? a : run == 1 ? b : c)[i] = t;
            sampler_accept(s, t);
        }
        sampler_free(s);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
}

static void test_logprobs(void **st)
{
    (void)st;
    struct sample_params p = sample_params_default();
    p.temperature = 0; p.top_logprobs = 5;
    p.repetition_penalty = 1.3f; /* logprobs refer to the raw distribution */
    struct sampler *s = NULL;
    int32_t pr[1] = {11};
    ASSERT_OK(sampler_init(&s, &p, V, pr, 1));
    float lg[V];
    memcpy(lg, L0, sizeof lg);
    struct sample_logprobs lp;
    int32_t t = sampler_sample(s, lg, &lp);
    double z = 0;
    for (int i = 0; i < V; i++) z += exp(L0[i]);
    assert_int_equal(t, 11);
    ASSERT_NEAR(lp.logprob, L0[11] - log(z), 1e-5);
    assert_int_equal(lp.n_top, 5);
    const int want[5] = {11, 0, 1, 2, 3};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(lp.top_id[i], want[i]);
        ASSERT_NEAR(lp.top_logprob[i], L0[want[i]] - log(z), 1e-5);
    }
    sampler_free(s);
}

static void test_invalid(void **st)
{
    (void)st;
    struct sampler *s = NULL;
    struct sample_params p = sample_params_default();
    p.top_p = 0; assert_int_equal(sampler_init(&s, &p, V, NULL, 0), -EINVAL);
    p = sample_params_default(); p.temperature = -1; assert_int_equal(sampler_init(&s, &p, V, NULL, 0), -EINVAL);
    p = sample_params_default(); p.top_logprobs = 21; assert_int_equal(sampler_init(&s, &p, V, NULL, 0), -EINVAL);
    assert_null(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distributions),
        cmocka_unit_test(test_greedy_penalties_bias),
        cmocka_unit_test(test_greedy_scan),
        cmocka_unit_test(test_seeds),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
