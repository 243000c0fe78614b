/* SPDX-License-Identifier: MIT */
/*
 * metrics.c - the server's counters and histograms, and GET /metrics in the
 * Prometheus text format (version 0.0.4): requests by endpoint and status,
 * prompt, cached and generated tokens, time to first token and inter-token
 * latency, queue depth, connections, and the engine's own figures.
 *
 * Invariant: only the loop thread updates or reads these (no locks); the
 * engine's figures are read with eng_get_metrics() at render time.
 */
#include "server/serve.h"
#include "engine/model.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_STATUS 600
#define HIST_MAX 16

struct hist {
    int n;
    const double *le;           /* upper bounds, seconds */
    uint64_t count[HIST_MAX];   /* per bucket (not cumulative) */
    uint64_t total;
    double sum;
};

struct srv_metrics {
    uint64_t req[SRV_EP_COUNT][N_STATUS];
    uint64_t prompt_tokens, cached_tokens, generated_tokens;
    struct hist ttft, itl;
};

static const double k_ttft_le[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double k_itl_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};

int srv_metrics_init(struct srv_metrics **out)
{
    struct srv_metrics *m = calloc(1, sizeof *m);
    *out = m;
    if (!m)
        return -ENOMEM;
    m->ttft.le = k_ttft_le;
    m->ttft.n = (int)(sizeof k_ttft_le / sizeof k_ttft_le[0]);
    m->itl.le = k_itl_le;
    m->itl.n = (int)(sizeof k_itl_le / sizeof k_itl_le[0]);
    return 0;
}

void srv_metrics_free(struct srv_metrics *m) { free(m); }

void srv_metrics_request(struct srv_metrics *m, enum srv_endpoint ep, int status)
{
    if (status >= 0 && status < N_STATUS)
        m->req[ep][status]++;
}

void srv_metrics_tokens(struct srv_metrics *m, int64_t prompt, int64_t cached, int64_t generated)
{
    m->prompt_tokens += (uint64_t)prompt;
    m->cached_tokens += (uint64_t)cached;
    m->generated_tokens += (uint64_t)generated;
}

static void hist_add(struct hist *h, double v)
{
    int i = 0;
    while (i < h->n && v > h->le[i])
        i++;
    if (i < h->n)
        h->count[i]++;
    h->total++;
    h->sum += v;
}

void srv_metrics_ttft(struct srv_metrics *m, double s) { hist_add(&m->ttft, s); }
void srv_metrics_itl(struct srv_metrics *m, double s) { hist_add(&m->itl, s); }

/* ---- rendering ---- */

struct out {
    char *b;
    size_t len, cap;
    bool oom;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    for (;;) {
        if (o->oom)
            return;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->b + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (n > 0 ? (size_t)n : 0);
        char *nb = realloc(o->b, cap);
        if (!nb) {
            o->oom = true;
            return;
        }
        o->b = nb;
        o->cap = cap;
    }
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gauge(struct out *o, const char *name, const char *help, double v)
{
    head(o, name, "gauge", help);
    put(o, "%s %.17g\n", name, v);
}

static void counter(struct out *o, const char *name, const char *help, double v)
{
    head(o, name, "counter", help);
    put(o, "%s %.17g\n", name, v);
}

static void hist(struct out *o, const char *name, const char *help, const struct hist *h)
{
    head(o, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->count[i];
        put(o, "%s_bucket{le=\"%g\"} %llu\n", name, h->le[i], (unsigned long long)cum);
    }
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->total);
    put(o, "%s_sum %.9g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->total);
}

/* The expert store's figures (all zero when every expert is resident). */
static void expert_cache(struct out *o, const struct eng_metrics *em)
{
    const struct xs_stats *x = &em->xs;
    gauge(o, "moed_expert_cache_enabled", "1 when experts are loaded on demand into the expert cache.",
          em->expert_store ? 1 : 0);
    head(o, "moed_expert_cache_lookups_total", "counter",
         "Expert lookups by tier and result (hit: resident; loading: already on its way; miss: loaded now).");
    put(o, "moed_expert_cache_lookups_total{tier=\"device\",result=\"hit\"} %llu\n", (unsigned long long)x->hits);
    put(o, "moed_expert_cache_lookups_total{tier=\"device\",result=\"loading\"} %llu\n",
        (unsigned long long)x->hits_loading);
    put(o, "moed_expert_cache_lookups_total{tier=\"device\",result=\"miss\"} %llu\n", (unsigned long long)x->misses);
    head(o, "moed_expert_cache_bytes_moved_total", "counter", "Bytes moved between tiers.");
    put(o, "moed_expert_cache_bytes_moved_total{from=\"disk\",to=\"device\"} %llu\n",
        (unsigned long long)x->bytes_disk);
    put(o, "moed_expert_cache_bytes_moved_total{from=\"disk\",to=\"host\"} 0\n");
    put(o, "moed_expert_cache_bytes_moved_total{from=\"host\",to=\"device\"} 0\n");
    counter(o, "moed_expert_cache_loads_total", "Experts loaded from the model file.", (double)x->loads);
    counter(o, "moed_expert_cache_load_failures_total", "Expert loads that failed after their retries.",
            (double)x->load_failures);
    counter(o, "moed_expert_cache_read_retries_total", "Expert reads retried after an error or short read.",
            (double)x->read_retries);
    counter(o, "moed_expert_cache_evictions_total", "Experts evicted from the cache.", (double)x->evictions);
    counter(o, "moed_expert_cache_stall_seconds_total", "Seconds the forward pass waited for experts.",
            x->stall_seconds);
    head(o, "moed_expert_cache_load_seconds", "histogram", "Latency of expert loads.");
    uint64_t cum = 0;
    for (int i = 0; i < XS_LAT_BUCKETS; i++) {
        cum += x->lat_hist[i];
        if (i < XS_LAT_BUCKETS - 1)
            put(o, "moed_expert_cache_load_seconds_bucket{le=\"%g\"} %llu\n", 64e-6 * (double)(1u << i),
                (unsigned long long)cum);
    }
    put(o, "moed_expert_cache_load_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    put(o, "moed_expert_cache_load_seconds_sum %.9g\nmoed_expert_cache_load_seconds_count %llu\n", x->load_seconds,
        (unsigned long long)cum);
    head(o, "moed_expert_cache_slots", "gauge", "Expert cache slots by state.");
    put(o, "moed_expert_cache_slots{state=\"ready\"} %u\n", x->slots_ready);
    put(o, "moed_expert_cache_slots{state=\"loading\"} %u\n", x->slots_loading);
    put(o, "moed_expert_cache_slots{state=\"pinned\"} %u\n", x->slots_pinned);
    gauge(o, "moed_expert_cache_slots_total", "Expert cache slots.", x->slots);
    gauge(o, "moed_expert_cache_bytes", "Memory of the expert cache's slots.", (double)x->device_bytes);
    /* prediction */
    head(o, "moed_predictor_prefetches_total", "counter",
         "Expert prefetches by outcome (issued; used before eviction; late: still loading when needed; "
         "wasted: evicted unused).");
    put(o, "moed_predictor_prefetches_total{outcome=\"issued\"} %llu\n", (unsigned long long)x->prefetch_issued);
    put(o, "moed_predictor_prefetches_total{outcome=\"used\"} %llu\n", (unsigned long long)x->prefetch_used);
    put(o, "moed_predictor_prefetches_total{outcome=\"late\"} %llu\n", (unsigned long long)x->prefetch_late);
    put(o, "moed_predictor_prefetches_total{outcome=\"wasted\"} %llu\n", (unsigned long long)x->prefetch_wasted);
    if (em->predicting) {
        head(o, "moed_predictor_precision", "gauge", "Share of predicted experts the router chose, by lookahead distance.");
        for (int32_t d = 1; d <= em->lookahead && d <= ENG_MAX_LOOKAHEAD; d++)
            put(o, "moed_predictor_precision{distance=\"%d\"} %.6f\n", d,
                em->pred_d[d - 1].precision);
        head(o, "moed_predictor_recall", "gauge", "Share of the router's choices that were predicted, by lookahead distance.");
        for (int32_t d = 1; d <= em->lookahead && d <= ENG_MAX_LOOKAHEAD; d++)
            put(o, "moed_predictor_recall{distance=\"%d\"} %.6f\n", d,
                em->pred_d[d - 1].recall);
        counter(o, "moed_predictor_pregate_seconds_total", "Seconds spent pre-gating.", em->pregate_seconds);
    }
    gauge(o, "moed_model_file_changed", "1 when the model file changed under the server (restart it).",
          x->file_changed ? 1 : 0);
}

/* The scheduler's figures: both policies' counters, the longest wait and
 * the distinct experts per MoE layer per step beside uniform routing's. */
static void scheduler(struct out *o, const struct eng_metrics *em)
{
    const struct eng_sched_stats *x = &em->sched;
    head(o, "moed_sched_steps_total", "counter", "Engine steps by the policy in force.");
    put(o, "moed_sched_steps_total{policy=\"fcfs\"} %llu\n", (unsigned long long)x->steps_fcfs);
    put(o, "moed_sched_steps_total{policy=\"regroup\"} %llu\n", (unsigned long long)x->steps_regroup);
    counter(o, "moed_sched_steps_chosen_total", "Steps where more sequences were runnable than one step holds.",
            (double)x->steps_chosen);
    counter(o, "moed_sched_skips_total", "Runnable sequences passed over, summed over steps.", (double)x->seq_skips);
    counter(o, "moed_sched_forced_total", "Sequences taken first to keep the max_skip bound.", (double)x->forced);
    counter(o, "moed_sched_unknown_picks_total",
            "Sequences regroup took with no expert prediction yet (prompts before their first chunk).",
            (double)x->unknown_picks);
    gauge(o, "moed_sched_max_wait_steps", "Longest run of consecutive steps a runnable sequence was passed over.",
          x->max_wait_steps);
    gauge(o, "moed_sched_max_skip", "The bound on consecutive steps a runnable sequence may be passed over.",
          x->max_skip);
    counter(o, "moed_sched_admit_regrouped_total",
            "Requests regroup admitted ahead of an older waiting request (their prompts matched a running one).",
            (double)x->admit_regrouped);
    gauge(o, "moed_sched_max_admit_overtaken",
          "Most later requests admitted ahead of one waiting request (bounded by moed_sched_admit_bound).",
          x->max_admit_overtaken);
    gauge(o, "moed_sched_admit_bound", "The bound on later requests admitted ahead of a waiting one.",
          x->admit_bound);
    head(o, "moed_sched_distinct_experts", "histogram", "Distinct experts per MoE layer per step.");
    uint64_t cum = 0;
    for (int i = 0; i < ENG_DISTINCT_BUCKETS - 1; i++) {
        cum += x->distinct_hist[i];
        put(o, "moed_sched_distinct_experts_bucket{le=\"%u\"} %llu\n", eng_distinct_le(i), (unsigned long long)cum);
    }
    put(o, "moed_sched_distinct_experts_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)x->layer_steps);
    put(o, "moed_sched_distinct_experts_sum %llu\nmoed_sched_distinct_experts_count %llu\n",
        (unsigned long long)x->distinct_sum, (unsigned long long)x->layer_steps);
    counter(o, "moed_sched_uniform_experts_sum",
            "Distinct experts uniform routing would give, N(1-(1-k/N)^B) for each step's B tokens, summed over "
            "MoE layer-steps (divide by moed_sched_distinct_experts_count).",
            x->uniform_sum);
    counter(o, "moed_sched_decode_distinct_experts_sum",
            "Distinct experts per MoE layer per step, summed over decode-only steps (no prompt chunk).",
            (double)x->decode_distinct_sum);
    counter(o, "moed_sched_decode_uniform_experts_sum", "Uniform routing's figure over the same decode-only steps.",
            x->decode_uniform_sum);
    counter(o, "moed_sched_decode_layer_steps_total", "MoE layer-steps of decode-only steps.",
            (double)x->decode_layer_steps);
}

int srv_metrics_render(const struct srv *s, char **out, size_t *len)
{
    const struct srv_metrics *m = s->metrics;
    struct out o = {.cap = 8192};
    o.b = malloc(o.cap);
    if (!o.b)
        return -ENOMEM;
    o.b[0] = 0;
    head(&o, "moed_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
    for (int ep = 0; ep < SRV_EP_COUNT; ep++)
        for (int st = 0; st < N_STATUS; st++)
            if (m->req[ep][st])
                put(&o, "moed_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
                    srv_endpoint_name((enum srv_endpoint)ep), st, (unsigned long long)m->req[ep][st]);
    counter(&o, "moed_prompt_tokens_total", "Prompt tokens of finished requests.", (double)m->prompt_tokens);
    counter(&o, "moed_prompt_cached_tokens_total", "Prompt tokens served from the prefix cache.",
            (double)m->cached_tokens);
    counter(&o, "moed_generated_tokens_total", "Generated tokens of finished requests.",
            (double)m->generated_tokens);
    hist(&o, "moed_time_to_first_token_seconds", "Seconds from a request's arrival to its first token.", &m->ttft);
    hist(&o, "moed_inter_token_latency_seconds", "Seconds between consecutive tokens of a sequence.", &m->itl);
    gauge(&o, "moed_connections", "Open client connections.", s->n_conns);
    gauge(&o, "moed_active_requests", "Requests generating or waiting in the engine.", s->n_active);
    gauge(&o, "moed_model_loaded", "1 when the model is loaded and requests are served.", s->engine ? 1 : 0);
    if (s->engine) {
        struct eng_metrics em;
        eng_get_metrics(s->engine, &em);
        gauge(&o, "moed_queue_depth", "Requests waiting for the engine to start them.", em.waiting);
        gauge(&o, "moed_engine_running_sequences", "Sequences the engine is running.", em.running);
        head(&o, "moed_engine_kv_blocks", "gauge", "KV cache blocks by state.");
        put(&o, "moed_engine_kv_blocks{state=\"used\"} %d\n", em.kv_used);
        put(&o, "moed_engine_kv_blocks{state=\"cached\"} %d\n", em.kv_cached);
        put(&o, "moed_engine_kv_blocks{state=\"free\"} %d\n", em.kv_free);
        gauge(&o, "moed_engine_kv_blocks_total", "KV cache blocks in the pool.", em.kv_blocks);
        counter(&o, "moed_engine_prefix_hit_tokens_total", "Prompt tokens reused from the prefix cache.",
                (double)em.prefix_hit_tokens);
        counter(&o, "moed_engine_steps_total", "Engine steps (forward passes).", (double)em.steps);
        counter(&o, "moed_engine_step_tokens_total", "Tokens computed over all steps.", (double)em.step_tokens);
        counter(&o, "moed_engine_prompt_tokens_total", "Prompt tokens computed by the engine.",
                (double)em.prompt_tokens);
        counter(&o, "moed_engine_generated_tokens_total", "Tokens sampled by the engine.",
                (double)em.generated_tokens);
        counter(&o, "moed_engine_preemptions_total", "Sequences preempted for lack of KV blocks.",
                (double)em.preemptions);
        counter(&o, "moed_engine_requests_done_total", "Requests the engine finished.", (double)em.requests_done);
        gauge(&o, "moed_engine_batch_tokens", "Tokens in the last step.", em.last_batch_tokens);
        gauge(&o, "moed_engine_batch_sequences", "Sequences in the last step.", em.last_batch_seqs);
        expert_cache(&o, &em);
        if (em.predicting) {
            const uint32_t NL = eng_model(s->engine)->hp.n_layer;
            head(&o, "moed_predictor_layer_recall", "gauge", "Recall of the predictions for each layer, by distance.");
            for (int32_t d = 1; d <= em.lookahead && d <= ENG_MAX_LOOKAHEAD; d++)
                for (uint32_t l = (uint32_t)d; l < NL; l++) {
                    double pr, rc;
                    if (eng_pred_score(s->engine, (uint32_t)d, (int32_t)l, &pr, &rc) == 0)
                        put(&o, "moed_predictor_layer_recall{distance=\"%d\",layer=\"%u\"} %.6f\n", d, l, rc);
                }
            head(&o, "moed_predictor_layer_precision", "gauge", "Precision of the predictions for each layer, by distance.");
            for (int32_t d = 1; d <= em.lookahead && d <= ENG_MAX_LOOKAHEAD; d++)
                for (uint32_t l = (uint32_t)d; l < NL; l++) {
                    double pr, rc;
                    if (eng_pred_score(s->engine, (uint32_t)d, (int32_t)l, &pr, &rc) == 0)
                        put(&o, "moed_predictor_layer_precision{distance=\"%d\",layer=\"%u\"} %.6f\n", d, l, pr);
                }
        }
        scheduler(&o, &em);
    }
    gauge(&o, "moed_uptime_seconds", "Seconds since the server started.", srv_now() - s->t_load_start);
    if (o.oom) {
        free(o.b);
        return -ENOMEM;
    }
    *out = o.b;
    *len = o.len;
    return 0;
}
