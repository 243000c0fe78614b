/* SPDX-License-Identifier: MIT */
/*
 * sample.c - the sampler (see sample.h for the pipeline and its order).
 *
 * Invariant: every buffer is sized n_vocab at init; sampling only sorts and
 * scans them. Token counts for the penalties are dense arrays (4 bytes per
 * vocabulary entry), cheaper than hashing at the vocabularies we serve.
 */
#include "engine/sample.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <time.h>

struct sampler {
    struct sample_params p;
    struct sample_bias *bias;
    uint32_t n_vocab;
    uint64_t rng[4];            /* xoshiro256** */
    int32_t *count_gen;         /* per token: times generated */
    uint8_t *seen;              /* per token: in prompt or generated */
    int32_t *idx;               /* candidate ids */
    float *val;                 /* candidate logits / probabilities */
};

struct sample_params sample_params_default(void)
{
    struct sample_params p = {
        .temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.0f,
    };
    return p;
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1) with 53 bits. */
static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

int sampler_init(struct sampler **out, const struct sample_params *p, uint32_t n_vocab,
                 const int32_t *prompt, int32_t n_prompt)
{
    *out = NULL;
    if (n_vocab == 0 || p->temperature < 0 || p->top_p <= 0 || p->top_p > 1 || p->min_p < 0 ||
        p->min_p > 1 || p->top_k < 0 || p->repetition_penalty <= 0 || p->n_bias < 0 ||
        p->top_logprobs < 0 || p->top_logprobs > SAMPLE_MAX_TOP_LOGPROBS)
        return -EINVAL;
    struct sampler *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->count_gen = calloc(n_vocab, sizeof *s->count_gen);
    s->seen = calloc(n_vocab, 1);
    s->idx = malloc(n_vocab * sizeof *s->idx);
    s->val = malloc(n_vocab * sizeof *s->val);
    s->bias = p->n_bias ? malloc((size_t)p->n_bias * sizeof *s->bias) : NULL;
    if (!s->count_gen || !s->seen || !s->idx || !s->val || (p->n_bias && !s->bias)) {
        sampler_free(s);
        return -ENOMEM;
    }
    if (p->n_bias)
        memcpy(s->bias, p->bias, (size_t)p->n_bias * sizeof *s->bias);
    s->p.bias = s->bias;
    uint64_t seed = p->seed;
    if (!p->has_seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)s;
    }
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix(&seed);
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[i] >= 0 && (uint32_t)prompt[i] < n_vocab)
            s->seen[prompt[i]] = 1;
    *out = s;
    return 0;
}

void sampler_free(struct sampler *s)
{
    if (!s)
        return;
    free(s->count_gen);
    free(s->seen);
    free(s->idx);
    free(s->val);
    free(s->bias);
    free(s);
}

void sampler_accept(struct sampler *s, int32_t tok)
{
    if (tok < 0 || (uint32_t)tok >= s->n_vocab)
        return;
    s->count_gen[tok]++;
    s->seen[tok] = 1;
}

/* ---- log-probabilities of the raw distribution ---- */

static void fill_logprobs(const struct sampler *s, const float *logits, int32_t chosen,
                          struct sample_logprobs *lp)
{
    const uint32_t V = s->n_vocab;
    float mx = -INFINITY;
    for (uint32_t i = 0; i < V; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0;
    for (uint32_t i = 0; i < V; i++)
        sum += exp((double)logits[i] - mx);
    const double lse = mx + log(sum);
    lp->logprob = (float)(logits[chosen] - lse);
    /* top alternatives: one pass keeping a small sorted array (ties: lower id first) */
    const int32_t k = s->p.top_logprobs;
    int32_t n = 0;
    for (uint32_t i = 0; i < V && k > 0; i++) {
        float v = logits[i];
        if (n == k && v <= logits[lp->top_id[n - 1]])
            continue;
        int32_t j = n < k ? n++ : k - 1;
        while (j > 0 && logits[lp->top_id[j - 1]] < v) {
            lp->top_id[j] = lp->top_id[j - 1];
            j--;
        }
        lp->top_id[j] = (int32_t)i;
    }
    lp->n_top = n;
    for (int32_t j = 0; j < n; j++)
        lp->top_logprob[j] = (float)(logits[lp->top_id[j]] - lse);
}

/* ---- sampling ---- */

static int cmp_desc(const void *a, const void *b, void *ctx)
{
    const float *v = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (v[x] > v[y]) return -1;
    if (v[x] < v[y]) return 1;
    return x < y ? -1 : x > y;
}

/* Moves the k largest of v[idx[0..n)] to idx[0..k) (in no order), ties
 * broken to the lower id so the set is deterministic. */
static void select_top(int32_t *idx, int32_t n, int32_t k, const float *v)
{
    int32_t lo = 0, hi = n - 1;
    if (k >= n)
        return;
    while (lo < hi) {
        int32_t pv = idx[(lo + hi) / 2];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (cmp_desc(&idx[i], &pv, (void *)v) < 0) i++;
            while (cmp_desc(&idx[j], &pv, (void *)v) > 0) j--;
            if (i <= j) {
                int32_t t = idx[i]; idx[i] = idx[j]; idx[j] = t;
                i++; j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

/* The first index of the largest value (NaNs never win, as with a plain
 * `v[i] > v[best]` scan from 0): the maximum in 16 independent lanes, which
 * the compiler turns into vector max instructions, then the first index
 * holding it. A scalar scan's compare chain cost 6 % of a 16-sequence
 * decode step over a 151936-token vocabulary. */
static int32_t argmax_first(const float *v, uint32_t n)
{
    uint32_t i = 0;
    float mx = v[0];
#ifdef __SSE2__
    /* maxps(a, b) is exactly a > b ? a : b, lane by lane. */
    __m128 m0 = _mm_set1_ps(v[0]), m1 = m0, m2 = m0, m3 = m0;
    for (; i + 16 <= n; i += 16) {
        m0 = _mm_max_ps(_mm_loadu_ps(v + i), m0);
        m1 = _mm_max_ps(_mm_loadu_ps(v + i + 4), m1);
        m2 = _mm_max_ps(_mm_loadu_ps(v + i + 8), m2);
        m3 = _mm_max_ps(_mm_loadu_ps(v + i + 12), m3);
    }
    float m[16];
    _mm_storeu_ps(m, m0);
    _mm_storeu_ps(m + 4, m1);
    _mm_storeu_ps(m + 8, m2);
    _mm_storeu_ps(m + 12, m3);
    for (int k = 0; k < 16; k++)
        mx = m[k] > mx ? m[k] : mx;
#endif
    for (; i < n; i++)
        mx = v[i] > mx ? v[i] : mx;
    if (!(mx > v[0]))
        return 0; /* v[0] is a maximum (or NaN, which the scan keeps too) */
    i = 1;
#ifdef __SSE2__
    /* The first index holding mx, 16 values per test: over 151936 logits
     * with the maximum at a uniform position, 21 us a token scalar, 4.3 us
     * so (Zen 5). */
    const __m128 mv = _mm_set1_ps(mx);
    for (; i + 16 <= n; i += 16) {
        const int hit = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(v + i), mv)) |
                        _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(v + i + 4), mv)) << 4 |
                        _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(v + i + 8), mv)) << 8 |
                        _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(v + i + 12), mv)) << 12;
        if (hit)
            return (int32_t)(i + (uint32_t)__builtin_ctz((unsigned)hit));
    }
#endif
    for (; i < n; i++)
        if (v[i] == mx)
            return (int32_t)i;
    return 0;
}

int32_t sampler_sample(struct sampler *s, float *logits, struct sample_logprobs *lp)
{
    const uint32_t V = s->n_vocab;
    const struct sample_params *p = &s->p;
    int32_t chosen;

    /* Log-probabilities refer to the model's raw distribution: keep a copy. */
    if (lp)
        memcpy(s->val, logits, V * sizeof(float));

    for (int32_t i = 0; i < p->n_bias; i++)
        if (p->bias[i].id >= 0 && (uint32_t)p->bias[i].id < V)
            logits[p->bias[i].id] += p->bias[i].bias;
    if (p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        for (uint32_t i = 0; i < V; i++) {
            if (!s->seen[i])
                continue;
            if (p->repetition_penalty != 1.0f)
                logits[i] = logits[i] > 0 ? logits[i] / p->repetition_penalty
                                          : logits[i] * p->repetition_penalty;
            if (s->count_gen[i])
                logits[i] -= p->presence_penalty + p->frequency_penalty * (float)s->count_gen[i];
        }
    }

    if (p->temperature == 0.0f) {
        chosen = argmax_first(logits, V);
    } else {
        const float inv_t = 1.0f / p->temperature;
        int32_t n = (int32_t)V;
        for (uint32_t i = 0; i < V; i++)
            s->idx[i] = (int32_t)i;
        if (p->top_k > 0 && (uint32_t)p->top_k < V) {
            select_top(s->idx, n, p->top_k, logits);
            n = p->top_k;
        }
        /* Unnormalized probabilities, stored over the logits of the candidates. */
        float mx = -INFINITY;
        for (int32_t i = 0; i < n; i++)
            mx = fmaxf(mx, logits[s->idx[i]]);
        double sum = 0;
        for (int32_t i = 0; i < n; i++) {
            float e = expf((logits[s->idx[i]] - mx) * inv_t);
            logits[s->idx[i]] = e;
            sum += e;
        }
        /* top-p: the smallest set of most probable tokens whose mass reaches
         * top_p. Sort only as many candidates as needed: 64, 256, ... */
        if (p->top_p < 1.0f) {
            const double target = p->top_p * sum;
            int32_t kk = n < 64 ? n : 64, keep = n;
            for (;;) {
                select_top(s->idx, n, kk, logits);
                qsort_r(s->idx, (size_t)kk, sizeof *s->idx, cmp_desc, logits);
                double acc = 0;
                int32_t i = 0;
                while (i < kk && acc < target)
                    acc += logits[s->idx[i++]];
                if (acc >= target || kk == n) {
                    keep = i;
                    break;
                }
                kk = kk * 4 < n ? kk * 4 : n;
            }
            n = keep > 0 ? keep : 1;
        }
        /* min-p: drop tokens below min_p times the most probable one (1 after
         * the max subtraction, unless top-k/top-p removed nothing above). */
        if (p->min_p > 0.0f) {
            float top = 0;
            for (int32_t i = 0; i < n; i++)
                top = fmaxf(top, logits[s->idx[i]]);
            const float thr = p->min_p * top;
            int32_t m = 0;
            for (int32_t i = 0; i < n; i++)
                if (logits[s->idx[i]] >= thr)
                    s->idx[m++] = s->idx[i];
            n = m;
        }
        double mass = 0;
        for (int32_t i = 0; i < n; i++)
            mass += logits[s->idx[i]];
        double r = rng_uniform(s->rng) * mass, acc = 0;
        chosen = s->idx[n - 1];
        for (int32_t i = 0; i < n; i++) {
            acc += logits[s->idx[i]];
            if (r < acc) {
                chosen = s->idx[i];
                break;
            }
        }
    }
    if (lp)
        fill_logprobs(s, s->val, chosen, lp);
    return chosen;
}
