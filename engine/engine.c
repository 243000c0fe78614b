/* SPDX-License-Identifier: MIT */
/*
 * engine.c - the engine thread: request lifecycle, continuous batching,
 * sampling, detokenization, stop strings and the reasoning split.
 *
 * Every step the engine
 *   1. takes new requests from the inbox (the only state shared with other
 *      threads besides the per-request output channels and metrics, all
 *      under mutexes), and drops canceled requests, freeing their blocks;
 *   2. admits waiting requests while fewer than `parallel` run, attaching the
 *      longest cached prefix of their tokens (engine/kv.h);
 *   3. asks the scheduler (engine/sched.c) for the step's batch: one token of
 *      every decoding sequence first, then prompt chunks within the token
 *      budget, so a long prompt never freezes the streams of others; when
 *      the KV pool runs out it preempts the most recently admitted sequence
 *      (its blocks are dropped and it is recomputed later; its full blocks
 *      usually come back from the prefix cache);
 *   4. runs the forward pass once for the whole batch and samples the rows
 *      that finished their known tokens.
 *
 * Invariants: a request's tokens[0..n_tok) are the prompt followed by the
 * generated tokens; KV holds positions [0, n_done); n_done < n_tok while the
 * request has work. The forward pass is batch invariant (a token's logits do
 * not depend on the rest of the batch) and each request owns its random
 * stream, so a request's output does not depend on what else runs.
 */
#include "engine/engine.h"

#include "common/err.h"
#include "common/log.h"
#include "engine/forward.h"
#include "engine/impl.h"
#include "engine/kv.h"
#include "engine/model.h"
#include "engine/vocab.h"
#include "kernels/backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- small helpers ---- */

double eng__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct eng_params eng_params_default(void)
{
    struct eng_params p = {
        .kv_type = BE_TYPE_F16,
        .parallel = 4,
        .batch_tokens = 512,
        .sched = ENG_SCHED_FCFS,
        .max_skip = 4,
        .prefix_cache = true,
        .prepack = true,
        .max_queued = 64,
        .gpu = BE_GPU_AUTO,
    };
    return p;
}

struct eng_req_params eng_req_params_default(void)
{
    struct eng_req_params p = {.sample = sample_params_default()};
    return p;
}

static int buf_append(char **b, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        while (c < *len + n + 1)
            c *= 2;
        char *nb = realloc(*b, c);
        if (!nb)
            return -ENOMEM;
        *b = nb;
        *cap = c;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = 0;
    return 0;
}

/* ---- output channel ---- */

static void chan_push(struct eng_req *r, struct eng_event *ev)
{
    pthread_mutex_lock(&r->mu);
    if (r->head_ev + r->n_ev == r->cap_ev && r->head_ev > 0) {
        memmove(r->ev, r->ev + r->head_ev, (size_t)r->n_ev * sizeof *r->ev);
        r->head_ev = 0;
    }
    if (r->n_ev == r->cap_ev) {
        int32_t c = r->cap_ev ? r->cap_ev * 2 : 16;
        struct eng_event *ne = realloc(r->ev, (size_t)c * sizeof *ne);
        if (!ne) { /* out of memory: this event's text is lost, the request goes on */
            pthread_mutex_unlock(&r->mu);
            eng_event_clear(ev);
            return;
        }
        r->ev = ne;
        r->cap_ev = c;
    }
    r->ev[r->head_ev + r->n_ev] = *ev;
    r->n_ev++;
    pthread_mutex_unlock(&r->mu);
    r->notify_pending = true;
}

int eng_poll(struct eng_req *r, struct eng_event *ev)
{
    pthread_mutex_lock(&r->mu);
    if (r->n_ev == 0) {
        pthread_mutex_unlock(&r->mu);
        return 1;
    }
    *ev = r->ev[r->head_ev];
    r->head_ev++;
    r->n_ev--;
    if (r->n_ev == 0)
        r->head_ev = 0;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void eng_event_clear(struct eng_event *ev)
{
    free(ev->text);
    free(ev->reasoning);
    ev->text = ev->reasoning = NULL;
    ev->text_len = ev->reasoning_len = 0;
}

/* ---- request lifetime ---- */

static void req_destroy(struct eng_req *r)
{
    struct eng_event ev;
    while (eng_poll(r, &ev) == 0)
        eng_event_clear(&ev);
    free(r->ev);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->notify_mu);
    for (int32_t i = 0; i < r->rp.n_stop; i++)
        free((char *)r->rp.stop[i]);
    free((void *)r->rp.stop);
    free((void *)r->rp.stop_ids);
    free((void *)r->rp.sample.bias);
    free((char *)r->rp.think_start);
    free((char *)r->rp.think_end);
    free(r->tokens);
    free(r->hold);
    free(r->think_hold);
    free(r->detok_buf);
    free(r->pred);
    free(r->sig);
    sampler_free(r->smp);
    free(r);
}

static void req_unref(struct eng_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1)
        req_destroy(r);
}

void eng_cancel(struct eng_req *r) { atomic_store(&r->cancel, true); }

void eng_release(struct eng_req *r)
{
    if (!r)
        return;
    atomic_store(&r->cancel, true);
    /* After this, notify is never called for r again (one running now has
     * returned): the caller may free what its notify's ud points to. */
    pthread_mutex_lock(&r->notify_mu);
    r->released = true;
    pthread_mutex_unlock(&r->notify_mu);
    struct engine *e = r->e;
    pthread_mutex_lock(&e->mu);
    pthread_cond_signal(&e->cv); /* let the engine notice the cancellation */
    pthread_mutex_unlock(&e->mu);
    req_unref(r);
}

static char *dupn(const char *s)
{
    return s ? strdup(s) : NULL;
}

int eng_submit(struct engine *e, const int32_t *prompt, int32_t n_prompt,
               const struct eng_req_params *rp, eng_notify_fn notify, void *ud,
               struct eng_req **out)
{
    *out = NULL;
    const uint32_t V = e->m->hp.n_vocab;
    if (n_prompt <= 0 || !prompt || rp->n_stop < 0 || rp->n_stop_ids < 0)
        return -EINVAL;
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || (uint32_t)prompt[i] >= V)
            return -EINVAL;
    int32_t max_tokens = rp->max_tokens;
    if (n_prompt >= e->ctx)
        return ERR_CTX_FULL;
    if (max_tokens <= 0)
        max_tokens = e->ctx - n_prompt;
    if ((int64_t)n_prompt + max_tokens > e->ctx)
        return ERR_CTX_FULL;

    struct eng_req *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->e = e;
    atomic_init(&r->refs, 2); /* the caller's and the engine's */
    atomic_init(&r->cancel, false);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->notify_mu, NULL);
    r->rp = *rp;
    r->rp.max_tokens = max_tokens;
    r->rp.stop = NULL;
    r->rp.stop_ids = NULL;
    r->rp.sample.bias = NULL;
    r->rp.think_start = dupn(rp->think_start);
    r->rp.think_end = dupn(rp->think_end);
    r->notify = notify;
    r->ud = ud;
    int fail = 0;
    if (rp->n_stop) {
        char **st = calloc((size_t)rp->n_stop, sizeof *st);
        fail |= !st;
        for (int32_t i = 0; st && i < rp->n_stop; i++) {
            st[i] = strdup(rp->stop[i] ? rp->stop[i] : "");
            fail |= !st[i];
            size_t l = st[i] ? strlen(st[i]) : 0;
            if (l > r->max_stop_len)
                r->max_stop_len = l;
        }
        r->rp.stop = (const char *const *)st;
    }
    if (rp->n_stop_ids) {
        int32_t *ids = malloc((size_t)rp->n_stop_ids * sizeof *ids);
        fail |= !ids;
        if (ids)
            memcpy(ids, rp->stop_ids, (size_t)rp->n_stop_ids * sizeof *ids);
        r->rp.stop_ids = ids;
    }
    if (rp->sample.n_bias) {
        struct sample_bias *b = malloc((size_t)rp->sample.n_bias * sizeof *b);
        fail |= !b;
        if (b)
            memcpy(b, rp->sample.bias, (size_t)rp->sample.n_bias * sizeof *b);
        r->rp.sample.bias = b;
    }
    r->tokens = malloc((size_t)e->ctx * sizeof *r->tokens);
    r->detok_cap = vocab_detok_bound(e->v) + 8;
    r->detok_buf = malloc(r->detok_cap);
    fail |= !r->tokens || !r->detok_buf;
    int rc = fail ? -ENOMEM : 0;
    if (rc == 0)
        rc = sampler_init(&r->smp, &r->rp.sample, V, prompt, n_prompt);
    if (rc < 0) {
        r->rp.n_stop = r->rp.stop ? rp->n_stop : 0;
        req_destroy(r);
        return rc;
    }
    memcpy(r->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    r->n_tok = r->n_prompt = n_prompt;
    struct vocab_detok_opts dopt = {.show_special = rp->show_special, .strip_lead_space = false};
    vocab_detok_init(&r->detok, e->v, &dopt);
    r->in_think = rp->think_open && rp->think_start && rp->think_end;
    r->t_submit = eng__now();
    r->cached_tokens = -1;

    pthread_mutex_lock(&e->mu);
    if (e->stopping || e->n_inbox + e->n_waiting_pub >= e->p.max_queued) {
        bool stopping = e->stopping;
        pthread_mutex_unlock(&e->mu);
        req_destroy(r);
        return stopping ? ERR_CANCELED : ERR_BUSY;
    }
    r->next = NULL;
    if (e->inbox_tail)
        e->inbox_tail->next = r;
    else
        e->inbox_head = r;
    e->inbox_tail = r;
    e->n_inbox++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    *out = r;
    return 0;
}

/* ---- text pipeline: stop strings, then the reasoning split ---- */

/* Longest suffix of s[0..n) that is a proper prefix of pat. */
static size_t partial_suffix(const char *s, size_t n, const char *pat)
{
    size_t pl = strlen(pat);
    size_t k = pl > 0 ? pl - 1 : 0;
    if (k > n)
        k = n;
    for (; k > 0; k--)
        if (memcmp(s + n - k, pat, k) == 0)
            return k;
    return 0;
}

/* Sends text to the content or reasoning channel of the event being built,
 * splitting at the think tags. final: no more text will come. */
static void think_route(struct eng_req *r, const char *s, size_t n, bool final, struct eng_event *ev)
{
    const char *ts = r->rp.think_start, *te = r->rp.think_end;
    if (!ts || !te) {
        buf_append(&ev->text, &ev->text_len, &r->ev_text_cap, s, n);
        return;
    }
    buf_append(&r->think_hold, &r->think_len, &r->think_cap, s, n);
    for (;;) {
        const char *tag = r->in_think ? te : ts;
        size_t tl = strlen(tag);
        char *hit = r->think_len ? memmem(r->think_hold, r->think_len, tag, tl) : NULL;
        size_t emit = hit ? (size_t)(hit - r->think_hold)
                          : r->think_len - (final ? 0 : partial_suffix(r->think_hold, r->think_len, tag));
        if (emit) {
            if (r->in_think)
                buf_append(&ev->reasoning, &ev->reasoning_len, &r->ev_reason_cap, r->think_hold, emit);
            else
                buf_append(&ev->text, &ev->text_len, &r->ev_text_cap, r->think_hold, emit);
        }
        size_t drop = emit + (hit ? tl : 0);
        memmove(r->think_hold, r->think_hold + drop, r->think_len - drop);
        r->think_len -= drop;
        if (!hit)
            break;
        r->in_think = !r->in_think;
    }
}

/* Adds detokenized text; returns true when a stop string matched (the text
 * from the match on is dropped). */
static bool text_push(struct eng_req *r, const char *s, size_t n, bool final, struct eng_event *ev)
{
    if (r->rp.n_stop == 0) {
        think_route(r, s, n, final, ev);
        return false;
    }
    buf_append(&r->hold, &r->hold_len, &r->hold_cap, s, n);
    size_t best = SIZE_MAX;
    for (int32_t i = 0; i < r->rp.n_stop; i++) {
        const char *st = r->rp.stop[i];
        if (!st[0])
            continue;
        char *hit = memmem(r->hold, r->hold_len, st, strlen(st));
        if (hit && (size_t)(hit - r->hold) < best)
            best = (size_t)(hit - r->hold);
    }
    if (best != SIZE_MAX) {
        think_route(r, r->hold, best, true, ev);
        r->hold_len = 0;
        return true;
    }
    size_t keep = 0;
    if (!final)
        for (int32_t i = 0; i < r->rp.n_stop; i++) {
            size_t k = partial_suffix(r->hold, r->hold_len, r->rp.stop[i]);
            if (k > keep)
                keep = k;
        }
    size_t emit = r->hold_len - keep;
    think_route(r, r->hold, emit, final, ev);
    memmove(r->hold, r->hold + emit, keep);
    r->hold_len = keep;
    return false;
}

/* ---- finishing ---- */

static void finish(struct engine *e, struct eng_req *r, enum eng_finish why, struct eng_event *pending)
{
    /* Flush what the detokenizer and the stop matcher held back, unless a
     * stop string ended the text. */
    struct eng_event ev = {.type = ENG_EV_DELTA, .token = -1};
    struct eng_event *d = pending ? pending : &ev;
    if (why != ENG_FINISH_CANCELED && !r->stopped_by_string) {
        int n = vocab_detok_flush(&r->detok, r->detok_buf, r->detok_cap);
        text_push(r, r->detok_buf, n > 0 ? (size_t)n : 0, true, d);
    } else if (!r->stopped_by_string) {
        r->think_len = 0;
    } else {
        think_route(r, "", 0, true, d);
    }
    if (pending || d->text_len || d->reasoning_len)
        chan_push(r, d);
    struct eng_event done = {.type = ENG_EV_DONE, .token = -1, .finish = why};
    done.usage.prompt_tokens = r->n_prompt;
    done.usage.completion_tokens = r->n_gen;
    done.usage.cached_tokens = r->cached_tokens > 0 ? r->cached_tokens : 0;
    double now = eng__now();
    done.usage.t_queue = (r->t_start > 0 ? r->t_start : now) - r->t_submit;
    done.usage.t_first_token = r->t_first > 0 ? r->t_first - r->t_submit : 0;
    done.usage.t_total = now - r->t_submit;
    chan_push(r, &done);
    if (r->kv.blocks)
        kv_seq_free(e->kv, &r->kv);
    r->state = RS_DONE;
    e->requests_done++;
}

static void fail_req(struct engine *e, struct eng_req *r, int code, const char *msg)
{
    struct eng_event ev = {.type = ENG_EV_ERROR, .token = -1, .err = code};
    snprintf(ev.errmsg, sizeof ev.errmsg, "%s", msg);
    chan_push(r, &ev);
    if (r->kv.blocks)
        kv_seq_free(e->kv, &r->kv);
    r->state = RS_DONE;
    e->requests_done++;
}

/* ---- after sampling ---- */

static bool is_stop_id(const struct eng_req *r, int32_t t)
{
    for (int32_t i = 0; i < r->rp.n_stop_ids; i++)
        if (r->rp.stop_ids[i] == t)
            return true;
    return false;
}

/* Handles one sampled token; returns true when the request finished. */
static bool accept_token(struct engine *e, struct eng_req *r, int32_t tok, const struct sample_logprobs *lp)
{
    if (r->t_first == 0)
        r->t_first = eng__now();
    sampler_accept(r->smp, tok);
    r->tokens[r->n_tok++] = tok;
    r->n_gen++;
    e->generated_tokens++;
    struct eng_event ev = {.type = ENG_EV_DELTA, .token = tok};
    if (lp) {
        ev.has_logprobs = true;
        ev.lp = *lp;
    }
    r->ev_text_cap = r->ev_reason_cap = 0;
    bool eog = (!r->rp.ignore_eos && vocab_is_eog(e->v, tok)) || is_stop_id(r, tok);
    if (eog) {
        finish(e, r, ENG_FINISH_STOP, &ev);
        return true;
    }
    int n = vocab_detok_push(&r->detok, tok, r->detok_buf, r->detok_cap);
    if (n > 0 && text_push(r, r->detok_buf, (size_t)n, false, &ev)) {
        r->stopped_by_string = true;
        finish(e, r, ENG_FINISH_STOP, &ev);
        return true;
    }
    if (r->n_gen >= r->rp.max_tokens || r->n_tok >= e->ctx) {
        finish(e, r, ENG_FINISH_LENGTH, &ev);
        return true;
    }
    chan_push(r, &ev);
    return false;
}

/* ---- scheduling state ---- */

static void waiting_push(struct engine *e, struct eng_req *r, bool front)
{
    if (front) {
        memmove(e->waiting + 1, e->waiting, (size_t)e->n_waiting * sizeof *e->waiting);
        e->waiting[0] = r;
    } else {
        e->waiting[e->n_waiting] = r;
    }
    e->n_waiting++;
    r->state = RS_WAITING;
}

static void running_remove(struct engine *e, int32_t i)
{
    memmove(e->running + i, e->running + i + 1, (size_t)(e->n_running - i - 1) * sizeof *e->running);
    e->n_running--;
}

/* Drops a running request's KV and sends it back to the front of the queue. */
void eng__preempt(struct engine *e, int32_t i)
{
    struct eng_req *r = e->running[i];
    kv_seq_free(e->kv, &r->kv);
    r->n_done = 0;
    running_remove(e, i);
    waiting_push(e, r, true);
    e->preemptions++;
    log_debug("engine", "preempted a request with %d tokens", r->n_tok);
}

static int admit(struct engine *e, struct eng_req *r)
{
    int rc = kv_seq_init(&r->kv, e->kv, e->ctx);
    if (rc < 0)
        return rc;
    struct kv_copy cp;
    int reused = kv_seq_attach_prefix(e->kv, &r->kv, r->tokens, r->n_tok, &cp);
    if (reused < 0) {
        kv_seq_free(e->kv, &r->kv);
        return reused;
    }
    if (cp.n_rows > 0)
        fwd_kv_copy(e->f, cp.src, cp.dst, cp.n_rows);
    r->n_done = reused;
    if (r->cached_tokens < 0)
        r->cached_tokens = reused;
    if (r->t_start == 0)
        r->t_start = eng__now();
    r->admit_order = ++e->admit_counter;
    r->skipped = 0;
    r->state = RS_RUNNING;
    return 0;
}

/* ---- the step ---- */

static void collect_inbox(struct engine *e)
{
    pthread_mutex_lock(&e->mu);
    for (struct eng_req *r = e->inbox_head, *n; r; r = n) {
        n = r->next;
        r->next = NULL;
        waiting_push(e, r, false);
    }
    e->inbox_head = e->inbox_tail = NULL;
    e->n_inbox = 0;
    e->n_waiting_pub = e->n_waiting;
    pthread_mutex_unlock(&e->mu);
}

static void drop_canceled(struct engine *e)
{
    for (int32_t i = 0; i < e->n_running;) {
        struct eng_req *r = e->running[i];
        if (atomic_load(&r->cancel)) {
            finish(e, r, ENG_FINISH_CANCELED, NULL);
            running_remove(e, i);
            eng__notify(r);
            req_unref(r);
        } else {
            i++;
        }
    }
    for (int32_t i = 0; i < e->n_waiting;) {
        struct eng_req *r = e->waiting[i];
        if (atomic_load(&r->cancel)) {
            finish(e, r, ENG_FINISH_CANCELED, NULL);
            memmove(e->waiting + i, e->waiting + i + 1, (size_t)(e->n_waiting - i - 1) * sizeof *e->waiting);
            e->n_waiting--;
            eng__notify(r);
            req_unref(r);
        } else {
            i++;
        }
    }
}

void eng__notify(struct eng_req *r)
{
    if (r->notify_pending && r->notify) {
        pthread_mutex_lock(&r->notify_mu); /* eng_release waits for a notify in progress */
        if (!r->released)
            r->notify(r->ud);
        pthread_mutex_unlock(&r->notify_mu);
    }
    r->notify_pending = false;
}

static void update_metrics(struct engine *e)
{
    struct kv_stats ks;
    kv_get_stats(e->kv, &ks);
    pthread_mutex_lock(&e->mu);
    e->met.running = e->n_running;
    e->met.waiting = e->n_waiting + e->n_inbox;
    e->n_waiting_pub = e->n_waiting;
    e->met.kv_blocks = ks.n_blocks;
    e->met.kv_used = ks.used;
    e->met.kv_cached = ks.cached;
    e->met.kv_free = ks.free;
    e->met.prefix_hit_tokens = ks.hit_tokens;
    e->met.steps = e->steps;
    e->met.step_tokens = e->step_tokens;
    e->met.prompt_tokens = e->prompt_tokens;
    e->met.generated_tokens = e->generated_tokens;
    e->met.preemptions = e->preemptions;
    e->met.requests_done = e->requests_done;
    e->met.last_batch_tokens = e->last_batch_tokens;
    e->met.last_batch_seqs = e->last_batch_seqs;
    e->met.expert_store = e->xs != NULL;
    const struct fwd_stats *fs = fwd_get_stats(e->f);
    e->met.expert_waves = fs->expert_waves;
    e->met.pregate_seconds = fs->pregate_seconds;
    e->met.predict_seconds = fs->predict_seconds;
    e->met.trace_errors = fs->trace_errors;
    e->met.trace_tokens = e->trace ? trace_writer_count(e->trace) : 0;
    e->met.predicting = e->pred != NULL;
    e->met.lookahead = e->pred ? (int32_t)e->lookahead : 0;
    for (int32_t d = 1; e->score && d <= e->met.lookahead && d <= ENG_MAX_LOOKAHEAD; d++) {
        struct pred_score_total t = pred_score_get(e->score, (uint32_t)d, -1);
        e->met.pred_d[d - 1].tp = t.tp;
        e->met.pred_d[d - 1].n_pred = t.n_pred;
        e->met.pred_d[d - 1].n_actual = t.n_actual;
        e->met.pred_d[d - 1].precision = t.precision;
        e->met.pred_d[d - 1].recall = t.recall;
        for (uint32_t l = 0; e->score_snap && l < e->m->hp.n_layer; l++) {
            struct pred_score_total u = pred_score_get(e->score, (uint32_t)d, (int32_t)l);
            uint64_t *q = e->score_snap + ((size_t)(d - 1) * e->m->hp.n_layer + l) * 3;
            q[0] = u.tp, q[1] = u.n_pred, q[2] = u.n_actual;
        }
    }
    e->met.moe_layer_steps = e->steps * e->m->n_moe_layers;
    if (e->xs)
        xs_get_stats(e->xs, &e->met.xs);
    e->met.sched = e->sc.st;
    pthread_mutex_unlock(&e->mu);
}

void eng_get_metrics(struct engine *e, struct eng_metrics *m)
{
    pthread_mutex_lock(&e->mu);
    *m = e->met;
    pthread_mutex_unlock(&e->mu);
}

/* Runs one step; returns false when there was nothing to do. */
static bool step(struct engine *e)
{
    e->met_fresh = false;
    collect_inbox(e);
    drop_canceled(e);
    while (e->n_running < sched__admit_limit(e) && e->n_waiting > 0) {
        /* fcfs admits in arrival order; regroup may take a later request
         * whose prompt matches a running one (regroup.c), within a bound. */
        int32_t wi = e->sc.policy == ENG_SCHED_REGROUP ? regroup__admit_pick(e) : 0;
        struct eng_req *r = e->waiting[wi];
        if (admit(e, r) < 0)
            break; /* no block for a copy: try again after others finish */
        for (int32_t j = 0; j < wi; j++) {
            int32_t o = ++e->waiting[j]->overtaken;
            if ((uint32_t)o > e->sc.st.max_admit_overtaken)
                e->sc.st.max_admit_overtaken = (uint32_t)o;
        }
        e->sc.st.admit_regrouped += wi > 0;
        memmove(e->waiting + wi, e->waiting + wi + 1, (size_t)(e->n_waiting - wi - 1) * sizeof *e->waiting);
        e->n_waiting--;
        e->running[e->n_running++] = r;
    }
    /* eng_submit's queue limit sees the admissions at once, not after the step. */
    pthread_mutex_lock(&e->mu);
    e->n_waiting_pub = e->n_waiting;
    pthread_mutex_unlock(&e->mu);
    if (e->n_running == 0)
        return false;

    struct sched_batch *b = &e->batch;
    sched__build(e, b);
    if (b->n_tok == 0)
        return true; /* everything is waiting for KV blocks */

    const int32_t *const *tabs = (const int32_t *const *)b->tabs;
    for (int32_t i = 0, t = 0; i < b->n_seq; i++)
        for (int32_t k = 0; k < b->seq_take[i]; k++)
            e->tok_seq[t++] = (uint32_t)b->seq[i]->admit_order;
    struct fwd_batch fb = {.n_tok = b->n_tok, .tok = b->tok, .pos = b->pos, .block_tab = tabs,
                           .n_out = b->n_out, .out_idx = b->out_idx, .seq = e->tok_seq,
                           .step = (uint32_t)e->steps};
    int rc = fwd_decode(e->f, &fb, e->logits);
    e->steps++;
    e->step_tokens += (uint64_t)b->n_tok;
    e->last_batch_tokens = b->n_tok;
    e->last_batch_seqs = b->n_seq;
    if (rc < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "forward pass failed: %s", err_str(rc));
        log_err("engine", "%s; failing the %d requests of this step", msg, b->n_seq);
        for (int32_t i = 0; i < b->n_seq; i++) {
            struct eng_req *r = b->seq[i];
            for (int32_t j = 0; j < e->n_running; j++)
                if (e->running[j] == r) {
                    running_remove(e, j);
                    break;
                }
            fail_req(e, r, rc, msg);
            eng__notify(r);
            req_unref(r);
        }
        return true;
    }
    /* Sequences whose tokens lost an expert (the store could not load it)
     * fail alone; their rows of this step are never committed, so nothing
     * of them enters the prefix cache. */
    if (e->xs) {
        int32_t t0 = 0;
        for (int32_t i = 0; i < b->n_seq; i++) {
            struct eng_req *r = b->seq[i];
            const char *why = NULL;
            int code = 0;
            for (int32_t t = t0; t < t0 + b->seq_take[i] && !code; t++)
                code = fwd_token_error(e->f, t, &why);
            t0 += b->seq_take[i];
            if (!code)
                continue;
            for (int32_t j = 0; j < e->n_running; j++)
                if (e->running[j] == r) {
                    running_remove(e, j);
                    break;
                }
            fail_req(e, r, code, why);
            b->seq_take[i] = 0; /* nothing to commit */
        }
    }
    /* Commit the KV rows written, then sample. */
    for (int32_t i = 0; i < b->n_seq; i++) {
        struct eng_req *r = b->seq[i];
        if (r->state == RS_DONE)
            continue;
        kv_seq_commit(e->kv, &r->kv, r->tokens + r->n_done, b->seq_take[i]);
        if (r->n_done < r->n_prompt)
            e->prompt_tokens += (uint64_t)(b->seq_take[i] < r->n_prompt - r->n_done ? b->seq_take[i]
                                                                                      : r->n_prompt - r->n_done);
        r->n_done += b->seq_take[i];
    }
    const uint32_t V = e->m->hp.n_vocab;
    for (int32_t i = 0; i < b->n_out; i++) {
        struct eng_req *r = b->out_req[i];
        if (r->state == RS_DONE)
            continue; /* failed above */
        struct sample_logprobs lp;
        bool want_lp = r->rp.logprobs || r->rp.sample.top_logprobs > 0;
        int32_t tok = sampler_sample(r->smp, e->logits + (size_t)i * V, want_lp ? &lp : NULL);
        if (accept_token(e, r, tok, want_lp ? &lp : NULL)) {
            for (int32_t j = 0; j < e->n_running; j++)
                if (e->running[j] == r) {
                    running_remove(e, j);
                    break;
                }
        }
    }
    update_metrics(e); /* before the notes: a caller woken by DONE reads this step's figures */
    e->met_fresh = true;
    /* Notify every request of the step, then drop the engine's reference of
     * those that finished (after which the caller may already have freed
     * them: nothing reads them later). */
    for (int32_t i = 0; i < b->n_seq; i++)
        eng__notify(b->seq[i]);
    for (int32_t i = 0; i < b->n_seq; i++)
        if (b->seq[i]->state == RS_DONE)
            req_unref(b->seq[i]);
    return true;
}

static void *engine_main(void *arg)
{
    struct engine *e = arg;
    for (;;) {
        bool worked = step(e);
        if (!e->met_fresh) /* steps that ended early, or did nothing */
            update_metrics(e);
        pthread_mutex_lock(&e->mu);
        if (e->stopping) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        if (!worked && e->n_inbox == 0)
            pthread_cond_wait(&e->cv, &e->mu);
        pthread_mutex_unlock(&e->mu);
    }
    /* Stopping: every request still here ends canceled. */
    collect_inbox(e);
    for (int32_t i = 0; i < e->n_running; i++) {
        finish(e, e->running[i], ENG_FINISH_CANCELED, NULL);
        eng__notify(e->running[i]);
        req_unref(e->running[i]);
    }
    for (int32_t i = 0; i < e->n_waiting; i++) {
        finish(e, e->waiting[i], ENG_FINISH_CANCELED, NULL);
        eng__notify(e->waiting[i]);
        req_unref(e->waiting[i]);
    }
    e->n_running = e->n_waiting = 0;
    update_metrics(e);
    return NULL;
}

/* ---- init ---- */

/* Frees what eng_init() built (any part may be missing) and e itself. */
static void free_parts(struct engine *e)
{
    sched__free(&e->batch, e);
    free(e->logits);
    free(e->running);
    free(e->waiting);
    fwd_free(e->f);
    if (e->trace) {
        if (trace_writer_close(e->trace) < 0)
            log_err("engine", "routing trace %s: not completely written", e->p.trace_routing);
    }
    pred_path_free(e->pred);
    pred_score_free(e->score);
    free(e->score_snap);
    free(e->tok_seq);
    xs_close(e->xs);
    be_free(e->be);
    kv_free(e->kv);
    vocab_free(e->v);
    model_free(e->m);
    free(e);
}

/* engine.prepack, resident experts: each expert tensor rewritten in place
 * into the backend's batch layout where it has one of the same size
 * (be_ops.expert_pack); *bytes gets what was rewritten. */
static int pack_experts(struct engine *e, uint64_t *bytes)
{
    const struct be_ops *ops = e->be->ops;
    *bytes = 0;
    if (!ops->expert_pack || !ops->moe_ffn)
        return 0;
    for (uint32_t l = 0; l < e->m->hp.n_layer; l++) {
        struct model_layer *L = &e->m->layers[l];
        if (!L->moe)
            continue;
        struct model_experts *x[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        for (int k = 0; k < 3; k++) {
            if (!x[k]->data || x[k]->packed)
                continue;
            int rc = ops->expert_pack(e->be, x[k]->data, x[k]->type, x[k]->n_in, x[k]->n_out, e->m->hp.n_expert);
            if (rc < 0)
                return rc;
            if (rc == 1) {
                x[k]->packed = true;
                *bytes += (uint64_t)x[k]->expert_bytes * e->m->hp.n_expert;
            }
        }
    }
    return 0;
}

/* The slices of every MoE layer's experts in the file. */
static struct xs_layer *store_layers(const struct model *m)
{
    struct xs_layer *xl = calloc(m->hp.n_layer ? m->hp.n_layer : 1, sizeof *xl);
    if (!xl)
        return NULL;
    for (uint32_t l = 0; l < m->hp.n_layer; l++) {
        const struct model_layer *L = &m->layers[l];
        if (!L->moe)
            continue;
        xl[l].moe = true;
        const struct model_experts *x[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        for (int k = 0; k < 3; k++)
            xl[l].s[k] = (struct xs_slice){.type = x[k]->type, .bytes = x[k]->expert_bytes,
                                           .off0 = model_experts_file_offset(m, x[k])};
    }
    return xl;
}

static int64_t kv_pool_tokens(const struct model *m, const struct eng_params *p, int32_t ctx)
{
    (void)m;
    int64_t kv_tokens = p->kv_tokens > 0 ? p->kv_tokens : (int64_t)p->parallel * ctx;
    if (kv_tokens < ctx)
        kv_tokens = ctx; /* one sequence of full context must always fit */
    return kv_tokens;
}

static int plan_for(const struct model *m, const struct eng_params *p, int32_t ctx, int32_t n_blocks,
                    int32_t bs, const struct xs_layer *xl, struct plan *out, char *err, size_t errlen)
{
    const struct model_hparams *hp = &m->hp;
    struct xs_params xp = xs_params_default();
    xp.path = p->model_path;
    xp.n_layer = hp->n_layer;
    xp.n_expert = hp->n_expert;
    xp.layers = xl;
    struct plan_in in = {.weights_bytes = m->bytes_weights, .expert_bytes = m->bytes_experts,
                         .gpu = false, .xp = m->n_moe_layers ? &xp : NULL, .force_store = p->store_always,
                         .weights_loaded = m->tok_embd.data != NULL};
    (void)ctx;
    size_t kv_row = be_row_size(p->kv_type, (int64_t)hp->n_head_kv * hp->head_dim);
    in.kv_bytes = (uint64_t)n_blocks * (uint64_t)bs * kv_row * 2 * hp->n_layer;
    int rc = plan_parse_budget(p->expert_cache, &in.device, err, errlen);
    if (rc == 0)
        rc = plan_parse_budget(p->host_cache, &in.host, err, errlen);
    if (rc < 0)
        return rc;
    struct plan_machine mach;
    plan_read_machine(&mach, NULL);
    return plan_compute(&in, &mach, out, err, errlen);
}

int eng_compute_plan(const struct model *m, const struct eng_params *p, struct plan *out, char *err,
                     size_t errlen)
{
    int32_t ctx = p->ctx_size > 0 ? p->ctx_size : (int32_t)m->hp.n_ctx_train;
    const int32_t bs = 16;
    int32_t n_blocks = (int32_t)((kv_pool_tokens(m, p, ctx) + bs - 1) / bs) + 1;
    struct xs_layer *xl = store_layers(m);
    if (!xl)
        return -ENOMEM;
    int rc = plan_for(m, p, ctx, n_blocks, bs, xl, out, err, errlen);
    free(xl);
    return rc;
}

const struct plan *eng_plan(const struct engine *e) { return &e->plan; }

int eng_pred_score(struct engine *e, uint32_t d, int32_t layer, double *precision, double *recall)
{
    if (!e->score_snap || d < 1 || d > e->lookahead || layer < -1 || layer >= (int32_t)e->m->hp.n_layer)
        return ERR_INVALID;
    uint64_t tp = 0, np = 0, na = 0;
    pthread_mutex_lock(&e->mu); /* the snapshot update_metrics took */
    for (uint32_t l = 0; l < e->m->hp.n_layer; l++) {
        if (layer >= 0 && l != (uint32_t)layer)
            continue;
        const uint64_t *q = e->score_snap + ((size_t)(d - 1) * e->m->hp.n_layer + l) * 3;
        tp += q[0], np += q[1], na += q[2];
    }
    pthread_mutex_unlock(&e->mu);
    *precision = np ? (double)tp / (double)np : 0;
    *recall = na ? (double)tp / (double)na : 0;
    return 0;
}

/* The predictor, its scores and the routing trace, per the parameters;
 * fills the prediction fields of fp. */
static int setup_prediction(struct engine *e, struct fwd_params *fp, char *err, size_t errlen)
{
    const struct eng_params *p = &e->p;
    const struct model_hparams *hp = &e->m->hp;
    const char *mode = p->predictor ? p->predictor : "none";
    enum pred_mode pm;
    bool want = true;
    if (!strcmp(mode, "none"))
        want = false, pm = PRED_MODE_PATH;
    else if (!strcmp(mode, "pregate"))
        pm = PRED_MODE_PREGATE;
    else if (!strcmp(mode, "path"))
        pm = PRED_MODE_PATH;
    else if (!strcmp(mode, "combined"))
        pm = PRED_MODE_COMBINED;
    else {
        snprintf(err, errlen, "predictor: '%s' is not one of none, pregate, path, combined", mode);
        return ERR_CONFIG;
    }
    e->lookahead = p->lookahead > 0 ? (uint32_t)p->lookahead : 2;
    if (e->lookahead > ENG_MAX_LOOKAHEAD) {
        snprintf(err, errlen, "lookahead %u: at most %d", e->lookahead, ENG_MAX_LOOKAHEAD);
        return ERR_CONFIG;
    }
    if (hp->n_layer > 1 && e->lookahead >= hp->n_layer) {
        if (want)
            log_warn("engine", "lookahead %u: the model has %u layers; predicting %u ahead", e->lookahead,
                     hp->n_layer, hp->n_layer - 1);
        e->lookahead = hp->n_layer - 1;
    }
    if (p->k_pred < 0 || (uint32_t)p->k_pred > hp->n_expert) {
        snprintf(err, errlen, "k_pred %d: between 1 and the model's %u experts (0 = top-k)", p->k_pred, hp->n_expert);
        return ERR_CONFIG;
    }
    if (want && !e->m->n_moe_layers)
        want = false;
    if (want && !e->xs) {
        log_info("engine", "predictor %s: off, every expert is resident (nothing to prefetch)", mode);
        want = false;
    }
    fp->lookahead = e->lookahead;
    fp->k_pred = (uint32_t)p->k_pred;
    fp->pregate = p->trace_routing != NULL;
    fp->pregate_input = p->pregate_input;
    e->tok_seq = calloc((size_t)p->batch_tokens, sizeof *e->tok_seq);
    if (!e->tok_seq)
        return -ENOMEM;
    if (want) {
        struct pred_path_params pp = pred_path_params_default();
        pp.n_layer = hp->n_layer;
        pp.n_expert = hp->n_expert;
        pp.k = hp->n_expert_used;
        pp.lookahead = e->lookahead;
        pp.max_seqs = (uint32_t)(p->parallel > 256 ? p->parallel : 256);
        int rc = pred_path_init(&e->pred, &pp);
        if (rc == 0)
            rc = pred_score_init(&e->score, hp->n_layer, e->lookahead);
        if (rc == 0 && !(e->score_snap = calloc((size_t)e->lookahead * hp->n_layer * 3, sizeof(uint64_t))))
            rc = -ENOMEM;
        if (rc < 0) {
            snprintf(err, errlen, "cannot set up the predictor: %s", err_str(rc));
            return rc;
        }
        double share = p->prefetch_budget > 0 ? p->prefetch_budget : 0.25;
        fp->pred = e->pred;
        fp->pred_mode = pm;
        fp->score = e->score;
        fp->prefetch_depth = p->prefetch_depth > 0 ? (uint32_t)p->prefetch_depth : 1;
        if (fp->prefetch_depth > e->lookahead)
            fp->prefetch_depth = e->lookahead;
        /* per layer: the step's share spread over its MoE layers, at least one expert */
        fp->prefetch_bytes = (size_t)(share * (double)e->plan.device_slot_bytes / (double)e->m->n_moe_layers);
        size_t one = (size_t)(e->plan.device_slot_bytes / (e->plan.device_slots ? e->plan.device_slots : 1)) + 1;
        if (fp->prefetch_bytes < one)
            fp->prefetch_bytes = one;
        log_info("engine", "predictor %s: lookahead %u (prefetching %u), k' %u, prefetch up to %.0f%% of the cache "
                 "per step", mode, e->lookahead, fp->prefetch_depth,
                 p->k_pred > 0 ? (uint32_t)p->k_pred : hp->n_expert_used, 100 * share);
    }
    if (p->trace_routing && e->m->n_moe_layers) {
        uint64_t *eb = calloc(hp->n_layer, sizeof *eb);
        if (!eb)
            return -ENOMEM;
        for (uint32_t l = 0; l < hp->n_layer; l++)
            if (e->m->layers[l].moe)
                eb[l] = e->m->layers[l].gate_exps.expert_bytes + e->m->layers[l].up_exps.expert_bytes +
                        e->m->layers[l].down_exps.expert_bytes;
        uint32_t K = hp->n_expert_used, M = 2 * K;
        if (p->k_pred > 0 && (uint32_t)p->k_pred > M)
            M = (uint32_t)p->k_pred;
        if (M > hp->n_expert)
            M = hp->n_expert;
        struct trace_info ti = {.n_layer = hp->n_layer, .n_expert = hp->n_expert, .k = K,
                                .lookahead = e->lookahead, .m = M, .expert_bytes = eb};
        fp->pregate_m = M;
        int rc = trace_writer_open(&e->trace, p->trace_routing, &ti, err, errlen);
        free(eb);
        if (rc < 0)
            return rc;
        fp->trace = e->trace;
        log_info("engine", "recording routing into %s (lookahead %u, %u ids per pre-gating list)", p->trace_routing,
                 e->lookahead, M);
    }
    return 0;
}

int eng_init(struct engine **out, const struct eng_params *p, char *err, size_t errlen)
{
    *out = NULL;
    struct engine *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->p = *p;
    struct model_params mp = model_params_default();
    mp.load_experts = false; /* the plan decides where they live */
    int rc = model_load(&e->m, p->model_path, &mp, err, errlen);
    if (rc < 0) {
        free(e);
        return rc;
    }
    rc = vocab_init_gguf(&e->v, e->m->gguf, err, errlen);
    if (rc < 0)
        goto fail;
    if (vocab_n_tokens(e->v) > e->m->hp.n_vocab) {
        snprintf(err, errlen, "%s: the vocabulary has %u tokens but the embedding table %u rows",
                 p->model_path, vocab_n_tokens(e->v), e->m->hp.n_vocab);
        rc = ERR_MODEL_FORMAT;
        goto fail;
    }
    e->ctx = p->ctx_size > 0 ? p->ctx_size : (int32_t)e->m->hp.n_ctx_train;
    if (e->p.parallel < 1 || e->p.batch_tokens < e->p.parallel || e->ctx < 2 || e->p.step_seqs < 0 ||
        e->p.max_skip < 0 || (e->p.sched != ENG_SCHED_FCFS && e->p.sched != ENG_SCHED_REGROUP)) {
        snprintf(err, errlen, "invalid engine settings: parallel %d, batch %d, context %d, step_seqs %d, "
                 "max_skip %d", e->p.parallel, e->p.batch_tokens, e->ctx, e->p.step_seqs, e->p.max_skip);
        rc = ERR_CONFIG;
        goto fail;
    }
    const int32_t bs = 16;
    int64_t kv_tokens = kv_pool_tokens(e->m, p, e->ctx);
    int32_t n_blocks = (int32_t)((kv_tokens + bs - 1) / bs) + 1;

    /* The memory plan: experts resident, or an expert store over the file. */
    struct xs_layer *xl = store_layers(e->m);
    if (!xl) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    rc = plan_for(e->m, p, e->ctx, n_blocks, bs, xl, &e->plan, err, errlen);
    if (rc == 0) {
        char buf[1024];
        plan_format(&e->plan, buf, sizeof buf);
        log_info("engine", "memory plan:\n%s", buf);
        if (e->plan.over)
            log_warn("engine", "the memory plan exceeds the memory available; lower --expert-cache, "
                               "--kv-tokens or --ctx-size");
    }
    if (rc == 0 && e->plan.experts_resident && e->m->n_moe_layers) {
        rc = model_load_experts(e->m, err, errlen);
    } else if (rc == 0 && e->m->n_moe_layers) {
        struct xs_params xp = xs_params_default();
        xp.path = p->model_path;
        xp.n_layer = e->m->hp.n_layer;
        xp.n_expert = e->m->hp.n_expert;
        xp.layers = xl;
        xp.device_bytes = (size_t)e->plan.device_budget;
        xp.io = p->io;
        xp.queue_depth = p->io_depth;
        xp.retries = -1;
        xp.test_fail = p->test_fail;
        xp.test_no_uring = p->test_no_uring;
        xp.test_odirect_einval = p->test_odirect_einval;
        rc = xs_open(&e->xs, &xp, err, errlen);
    }
    free(xl);
    if (rc < 0)
        goto fail;

    struct kv_params kp = {.n_blocks = n_blocks, .block_size = bs, .prefix_cache = p->prefix_cache};
    struct be_init_params bp = {.gpu = (enum be_gpu)p->gpu, .device = p->device,
                                .cpu = {.n_threads = p->n_threads}};
    struct fwd_params fp = {.n_tok_max = e->p.batch_tokens, .n_ctx = e->ctx, .kv_blocks = n_blocks,
                            .kv_block_size = bs, .kv_type = p->kv_type, .xs = e->xs, .prepack = p->prepack};
    if ((rc = setup_prediction(e, &fp, err, errlen)) < 0)
        goto fail;
    if ((rc = be_init(&e->be, &bp, err, errlen)) < 0)
        goto fail;
    uint64_t xp_bytes = 0;
    if (p->prepack && (rc = pack_experts(e, &xp_bytes)) < 0) {
        snprintf(err, errlen, "cannot set up the engine: %s", err_str(rc));
        goto fail;
    }
    if (xp_bytes) {
        char pb[32];
        plan_bytes_str(xp_bytes, pb, sizeof pb);
        log_info("engine", "experts rewritten in place into the batch layout: %s (engine.prepack)", pb);
    }
    if ((rc = kv_init(&e->kv, &kp)) < 0 || (rc = fwd_init(&e->f, e->m, e->be, &fp)) < 0) {
        snprintf(err, errlen, "cannot set up the engine: %s", err_str(rc));
        goto fail;
    }
    if (fwd_get_stats(e->f)->prepacked_bytes) {
        char pb[32];
        plan_bytes_str(fwd_get_stats(e->f)->prepacked_bytes, pb, sizeof pb);
        log_info("engine", "dense matrices also kept in the batch layout: %s (engine.prepack)", pb);
    }
    e->logits = malloc((size_t)e->p.parallel * e->m->hp.n_vocab * sizeof(float));
    e->running = calloc((size_t)e->p.parallel, sizeof *e->running);
    e->waiting = calloc((size_t)e->p.max_queued + (size_t)e->p.parallel + 1, sizeof *e->waiting);
    if (!e->logits || !e->running || !e->waiting || sched__init(&e->batch, e) < 0) {
        rc = -ENOMEM;
        snprintf(err, errlen, "cannot set up the engine: out of memory");
        goto fail;
    }
    fwd_set_route_cb(e->f, sched__on_route, e); /* the scheduler's predictions and figures */
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    if ((rc = -pthread_create(&e->th, NULL, engine_main, e)) < 0) {
        snprintf(err, errlen, "cannot start the engine thread: %s", err_str(rc));
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->cv);
        goto fail;
    }
    log_info("engine", "%s: %s, context %d, KV pool %d tokens (%s), %d parallel, batch %d, prefix cache %s",
             e->m->name, e->m->arch->name, e->ctx, n_blocks * bs, be_type_name(p->kv_type),
             e->p.parallel, e->p.batch_tokens, p->prefix_cache ? "on" : "off");
    log_info("engine", "scheduler %s: %d sequences per step, max skip %d, at most %d admitted",
             e->sc.policy == ENG_SCHED_REGROUP ? "regroup" : "fcfs", e->sc.step_seqs, e->sc.max_skip,
             e->sc.admit_limit);
    *out = e;
    return 0;
fail:
    free_parts(e);
    return rc;
}

void eng_free(struct engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->th, NULL);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free_parts(e);
}

const struct model *eng_model(const struct engine *e) { return e->m; }
const struct vocab *eng_vocab(const struct engine *e) { return e->v; }
int32_t eng_ctx_size(const struct engine *e) { return e->ctx; }
