/* SPDX-License-Identifier: MIT */
/*
 * engine.h - the engine: one model, one engine thread, many requests.
 *
 * Callers (the server, `moed run`) submit requests as token ids with their
 * sampling parameters; the engine thread batches every runnable request each
 * step (continuous batching with chunked prefill over a paged KV cache with
 * prefix reuse), samples, detokenizes, applies stop strings and splits
 * reasoning text, and pushes events into each request's output channel. The
 * caller is woken through its notify callback and pops events with
 * eng_poll(). The engine never touches a socket.
 *
 * Threading: eng_submit, eng_poll, eng_cancel, eng_release and
 * eng_get_metrics may be called from any thread. notify is called from the
 * engine thread (it must be cheap and thread-safe, e.g. uv_async_send; it
 * must not call eng_release). The engine may still be inside a request's
 * notify after the caller has polled its DONE; once eng_release returns,
 * notify is never called for that request again, so its ud may be freed.
 */
#ifndef MOED_ENGINE_ENGINE_H
#define MOED_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/plan.h"
#include "cache/store.h"
#include "engine/sample.h"
#include "kernels/quant.h"

struct model;
struct vocab;

/* How the scheduler forms a step's batch (engine/sched.c). */
enum eng_sched {
    ENG_SCHED_FCFS,    /* decoding sequences, then prompt chunks, in admission order */
    ENG_SCHED_REGROUP, /* the sequences whose predicted experts overlap most (engine/regroup.c) */
};

struct eng_params {
    const char *model_path;
    int n_threads;          /* 0 = the CPUs this process may use */
    int32_t ctx_size;       /* most positions per sequence; 0 = the model's training context */
    int32_t kv_tokens;      /* KV pool size in tokens; 0 = parallel * ctx_size */
    enum be_type kv_type;   /* F32, F16 (default) or Q8_0 */
    int32_t parallel;       /* most running sequences */
    int32_t batch_tokens;   /* token budget of one step (chunked prefill) */
    int32_t step_seqs;      /* most sequences in one step; 0 = parallel. Below parallel, more
                               sequences hold KV than one step runs and the policy picks */
    enum eng_sched sched;   /* batch formation policy */
    int32_t max_skip;       /* most consecutive steps a runnable sequence is passed over (4);
                               the engine admits at most step_seqs * (max_skip + 1) sequences
                               so that the bound can always be kept */
    bool prefix_cache;      /* reuse KV blocks of shared prefixes */
    bool prepack;           /* resident experts rewritten into the backend's batch layout (be_ops.expert_pack),
                             * dense matrices also kept in it (be_ops.prepack) */
    int32_t max_queued;     /* most requests waiting to start; more get ERR_BUSY */
    int gpu;                /* enum be_gpu: 0 CPU, 1 a GPU when usable (default), 2 a GPU or fail */
    int device;             /* CUDA device index */
    /* Expert store (cache/plan.h): budgets as "auto", "25%" or "512M";
     * NULL = "auto". */
    const char *expert_cache, *host_cache;
    enum xs_io io;          /* how experts are read from the file */
    int io_depth;           /* experts in flight (0 = default) */
    bool store_always;      /* use the store even when every expert fits (tests, benchmarks) */
    /* Test hooks of the loader (struct xs_params): fail reads of "L:E[:N],...",
     * pretend io_uring is unavailable, pretend O_DIRECT gives EINVAL. */
    const char *test_fail;
    bool test_no_uring, test_odirect_einval;
    /* Expert prediction (predictor/): "none", "pregate", "path" or
     * "combined" (NULL = none); off when every expert is resident. */
    const char *predictor;
    int32_t lookahead;      /* layers ahead predicted and scored (0 = 2) */
    int32_t prefetch_depth; /* layers ahead prefetched (0 = 1; at most lookahead) */
    bool pregate_input;     /* pre-gate on a layer's input instead of after its attention */
    int32_t k_pred;         /* experts predicted per future layer (0 = the router's k) */
    double prefetch_budget; /* share of the expert cache one step may prefetch (0 = 0.25) */
    const char *trace_routing; /* file: every token's routing and pre-gating (NULL = none) */
};
struct eng_params eng_params_default(void);

struct eng_req_params {
    struct sample_params sample;
    int32_t max_tokens;          /* <= 0: up to the context size */
    bool ignore_eos;
    int32_t n_stop;
    const char *const *stop;     /* stop strings, copied; matched text is not emitted */
    int32_t n_stop_ids;
    const int32_t *stop_ids;     /* extra stop token ids, copied */
    bool logprobs;               /* report the chosen token's logprob (and sample.top_logprobs) */
    bool show_special;           /* emit control tokens' text */
    /* Reasoning: text between think_start and think_end goes to the
     * reasoning channel. think_open: the prompt already opened it. */
    const char *think_start, *think_end;
    bool think_open;
};
struct eng_req_params eng_req_params_default(void);

enum eng_event_type { ENG_EV_DELTA, ENG_EV_DONE, ENG_EV_ERROR };
enum eng_finish { ENG_FINISH_NONE, ENG_FINISH_STOP, ENG_FINISH_LENGTH, ENG_FINISH_CANCELED };

struct eng_usage {
    int32_t prompt_tokens, completion_tokens, cached_tokens;
    double t_queue;        /* seconds from submit to the first step */
    double t_first_token;  /* seconds from submit to the first generated token */
    double t_total;        /* seconds from submit to the end */
};

struct eng_event {
    enum eng_event_type type;
    int32_t token;              /* DELTA: the generated token */
    char *text;                 /* DELTA: new content text (may be empty); owned by the event */
    size_t text_len;
    char *reasoning;            /* DELTA: new reasoning text (may be empty) */
    size_t reasoning_len;
    bool has_logprobs;
    struct sample_logprobs lp;
    enum eng_finish finish;     /* DONE */
    struct eng_usage usage;     /* DONE */
    int err;                    /* ERROR: the code; message in errmsg */
    char errmsg[256];
};

#define ENG_DISTINCT_BUCKETS 16 /* bucket i counts layer-steps with <= eng_distinct_le(i) experts */

/* The scheduler's figures (both policies). */
struct eng_sched_stats {
    uint64_t steps_fcfs, steps_regroup; /* steps run under each policy */
    uint64_t steps_chosen;           /* of which more sequences were runnable than the step held */
    uint64_t seq_skips;              /* runnable sequences passed over, summed over steps */
    uint64_t forced;                 /* sequences taken first because the max_skip bound required it */
    uint64_t unknown_picks;          /* regroup: sequences taken with no expert prediction yet */
    uint32_t max_wait_steps;         /* longest run of consecutive steps a sequence was passed over */
    uint32_t max_skip;               /* the bound in force */
    uint64_t admit_regrouped;        /* regroup: requests admitted ahead of an older waiting one */
    uint32_t max_admit_overtaken;    /* most later requests admitted ahead of one waiting request */
    uint32_t admit_bound;            /* the bound on that (sched__admit_bound) */
    /* Distinct experts per MoE layer per step, beside what uniform routing
     * would give for the step's B tokens: N (1 - (1 - k/N)^B). */
    uint64_t layer_steps;            /* MoE layer-steps observed */
    uint64_t distinct_sum;           /* distinct experts, summed over layer-steps */
    double uniform_sum;              /* the uniform expectation, summed over layer-steps */
    uint64_t distinct_hist[ENG_DISTINCT_BUCKETS]; /* not cumulative; the last is the overflow */
    /* The same over decode-only steps (one token per sequence, no prompt chunk). */
    uint64_t decode_layer_steps, decode_distinct_sum;
    double decode_uniform_sum;
};
/* Upper bound of histogram bucket i (the last bucket has none: returns 0). */
uint32_t eng_distinct_le(int i);

struct eng_metrics {
    int32_t running, waiting;
    int32_t kv_blocks, kv_used, kv_cached, kv_free;
    uint64_t prefix_hit_tokens;
    uint64_t steps, step_tokens;     /* tokens computed over all steps */
    uint64_t prompt_tokens, generated_tokens;
    uint64_t preemptions;
    uint64_t requests_done;
    int32_t last_batch_tokens, last_batch_seqs;
    bool expert_store;               /* experts are loaded on demand (xs valid) */
    uint64_t expert_waves;           /* expert computations of a MoE layer (more than one per layer
                                        and step when experts arrive late or slots run short) */
    uint64_t moe_layer_steps;        /* MoE layers run (steps x MoE layers) */
    struct xs_stats xs;
    /* prediction: precision and recall per lookahead distance (index d-1,
     * up to ENG_MAX_LOOKAHEAD), all layers */
    bool predicting;
    int32_t lookahead;
    struct { uint64_t tp, n_pred, n_actual; double precision, recall; } pred_d[8];
    double pregate_seconds, predict_seconds;
    uint64_t trace_tokens, trace_errors;
    struct eng_sched_stats sched;
};
#define ENG_MAX_LOOKAHEAD 8

struct engine;
struct eng_req;
typedef void (*eng_notify_fn)(void *ud);

/* Loads the model and starts the engine thread. On failure returns < 0,
 * *out NULL, and one line in err. */
int eng_init(struct engine **out, const struct eng_params *p, char *err, size_t errlen);
/* Stops the engine thread (pending requests end with ENG_FINISH_CANCELED)
 * and frees everything; NULL does nothing. Requests not yet released must
 * still be released by their owners. */
void eng_free(struct engine *e);

const struct model *eng_model(const struct engine *e);
/* The memory plan the engine runs under. */
const struct plan *eng_plan(const struct engine *e);
/* The plan eng_init would compute for model m (loaded without experts or
 * with load_weights false) under p, for `moed inspect`. */
int eng_compute_plan(const struct model *m, const struct eng_params *p, struct plan *out, char *err,
                     size_t errlen);
const struct vocab *eng_vocab(const struct engine *e);
int32_t eng_ctx_size(const struct engine *e);

/*
 * Queues a request. prompt is copied. Returns 0 and the request handle, or
 * ERR_BUSY (queue full), ERR_CTX_FULL (prompt plus max_tokens longer than the
 * context), -EINVAL. The handle must be released with eng_release().
 */
int eng_submit(struct engine *e, const int32_t *prompt, int32_t n_prompt,
               const struct eng_req_params *rp, eng_notify_fn notify, void *ud,
               struct eng_req **out);
/* Pops the next event: 0 when one was written to ev (free it with
 * eng_event_clear), 1 when none is waiting now. After DONE or ERROR no more
 * events come. */
int eng_poll(struct eng_req *r, struct eng_event *ev);
void eng_event_clear(struct eng_event *ev);
/* Asks the engine to stop the request; it frees its KV blocks at the next
 * step and sends DONE with ENG_FINISH_CANCELED. */
void eng_cancel(struct eng_req *r);
/* The caller is done with the handle (cancels the request if still running).
 * Waits for a notify of the request in progress; none follows. */
void eng_release(struct eng_req *r);

void eng_get_metrics(struct engine *e, struct eng_metrics *m);
/* Precision and recall of the predictions `d` layers ahead (1-based) for
 * layer `layer` (-1 = all layers). Returns 0, or ERR_INVALID when nothing is
 * predicted at that distance. */
int eng_pred_score(struct engine *e, uint32_t d, int32_t layer, double *precision, double *recall);

#endif
