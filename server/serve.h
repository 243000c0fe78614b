/* SPDX-License-Identifier: MIT */
/*
 * serve.h - declarations shared by the files of `moed serve` (private to
 * server/): the configuration, the HTTP connection and request objects, the
 * reply functions, the OpenAI endpoints, SSE and metrics.
 *
 * Threads: everything here runs on the one libuv loop thread, except the
 * job functions given to srv_req_offload() (a libuv pool thread; they may
 * read the request's job fields, the vocabulary and the chat template, and
 * nothing else) and the engine's notify callback (the engine thread; it only
 * calls uv_async_send).
 *
 * Lifetime of a request: it is created when llhttp starts a message, queued
 * on its connection in arrival order (pipelined replies go out in that
 * order), and freed when its reply is complete and written, or, when the
 * connection goes away first, as soon as no pool job refers to it.
 */
#ifndef MOED_SERVER_SERVE_H
#define MOED_SERVER_SERVE_H

#include "engine/engine.h"

#include <cjson/cJSON.h>
#include <llhttp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct chat_template;

/* ---- configuration (config.c) ---- */

/* server.* and model.* keys. Strings are owned by the config. */
struct srv_params {
    char *host;
    int32_t port;
    char **api_keys;          /* NULL-terminated; NULL or empty: no auth */
    int32_t n_api_keys;
    bool open_health, open_metrics; /* reachable without a key */
    int64_t max_body_bytes;
    int32_t max_header_bytes;
    int32_t max_connections;
    int32_t max_queued;
    int32_t max_tokens;       /* most tokens one request may ask for; 0 = context size */
    int32_t max_json_depth;
    double request_timeout_s; /* 0 = none */
    double queue_timeout_s;   /* 0 = none */
    double idle_timeout_s;    /* keep-alive idle and slow-request limit */
    double drain_timeout_s;   /* SIGTERM: how long in-flight requests may finish */
    char *model_path;
    char *model_alias;
    char *chat_template;      /* file with a Jinja template overriding the model's */
    char *log_level;
    char *log_file;
};

/* Keys of modules that take no parameters yet; validated and logged. */
struct app_cache_params {
    char *device, *host;      /* SIZE (K/M/G), PCT% of expert bytes, or auto */
    char *cpu_compute;        /* auto, never, always */
    char *io;                 /* io_uring, pread */
};
struct app_pred_params {
    char *mode;               /* none, pregate, path, combined */
    int32_t lookahead, prefetch_depth, k;
    double prefetch_budget;
    char *trace;              /* --trace-routing FILE */
    char *pregate_at;         /* attention, input */
};
struct app_sched_params {
    char *policy;             /* fcfs, regroup */
    int32_t max_skip;
};

struct app_config {
    struct srv_params srv;
    struct eng_params eng;
    char *eng_kv_type;        /* f32, f16, q8_0 (mapped onto eng.kv_type) */
    struct app_cache_params cache;
    struct app_pred_params pred;
    struct app_sched_params sched;
};

/*
 * Fills c from the defaults, then the JSON file of `--config FILE` (when
 * given), then the other flags of argv. Returns 0, 1 when --help was printed,
 * or ERR_CONFIG with one line naming the key or flag in err.
 */
int srv_config_load(struct app_config *c, int argc, char **argv, char *err, size_t errlen);
void srv_config_free(struct app_config *c);
/* Logs every key with its effective value (api keys masked). */
void srv_config_log(const struct app_config *c);
/* Prints the flags. */
void srv_config_usage(FILE *f);

/* ---- server, connections, requests (http.c) ---- */

enum srv_endpoint {
    SRV_EP_COMPLETIONS,
    SRV_EP_CHAT,
    SRV_EP_TOKENIZE,
    SRV_EP_DETOKENIZE,
    SRV_EP_APPLY_TEMPLATE,
    SRV_EP_MODELS,
    SRV_EP_HEALTH,
    SRV_EP_METRICS,
    SRV_EP_ROOT,
    SRV_EP_OTHER,
    SRV_EP_COUNT
};

struct srv_metrics;
struct srv_gen;

struct srv {
    uv_loop_t *loop;
    const struct app_config *cfg;
    uv_tcp_t listener;
    uv_async_t wake;          /* engine notify: poll the active generations */
    uv_timer_t tick;          /* once a second: deadlines, SSE keep-alive, drain */
    uv_signal_t sig_term, sig_int, sig_hup;
    char bound[80];           /* "host:port" actually bound */
    /* Engine, set when loading finished (loading: engine NULL, load_error 0). */
    struct engine *engine;
    const struct vocab *vocab;
    struct chat_template *tmpl;
    char *tmpl_error;         /* why chat is unavailable; NULL when tmpl is set */
    int load_error;
    double t_load_start, t_ready;
    double model_size;        /* bytes of the model file (loading progress) */
    double rchar_at_load;     /* bytes the process had read when loading began */
    char *model_id;           /* served name */
    char fingerprint[32];     /* system_fingerprint */
    int64_t created;          /* model "created" */
    /* State. */
    int32_t n_conns;
    struct srv_conn *conns;   /* all open connections (doubly linked) */
    struct srv_gen *active;   /* generations with engine requests (doubly linked) */
    int32_t n_active;
    uint64_t next_req_id;
    bool draining;
    double t_drain;
    int exit_code;
    int log_fd;               /* log.file, or 2 */
    struct srv_metrics *metrics;
    /* Validation only (srv_http_feed, for the fuzzer): with no engine, a
     * request that would reach the engine or the pool is checked exactly as
     * when serving (route, auth, method, UTF-8, depth, JSON, every field)
     * and then answered 200 {"object":"stub"}; these stand in for the
     * model's context size and vocabulary size. Never set by `moed serve`. */
    bool stub_engine;
    int32_t stub_ctx, stub_n_vocab;
};

struct srv_req;
typedef void (*srv_job_fn)(struct srv_req *q);

struct srv_req {
    struct srv *s;
    struct srv_conn *c;       /* NULL once the connection is gone */
    struct srv_req *next;     /* the connection's queue, arrival order */
    uint64_t id;
    int method;               /* enum llhttp_method */
    char *url;                /* NUL-terminated request target */
    size_t url_len;
    char *body;               /* NUL-terminated (body_len bytes) */
    size_t body_len, body_cap;
    char *auth;               /* Authorization header value, or NULL */
    bool keep_alive;
    bool complete;            /* the whole message has been read */
    bool expect_continue;
    /* Reply. */
    int status;               /* 0 until the head is written */
    bool done;                /* the reply is complete */
    bool chunked;             /* streaming with Transfer-Encoding: chunked */
    char *out;                /* bytes held while an earlier reply is still going */
    size_t out_len, out_cap;
    size_t bytes_out;
    double t_last_write;      /* when bytes of the reply were last emitted */
    enum srv_endpoint ep;
    double t_start;
    int32_t log_prompt_tokens, log_completion_tokens; /* for the access log */
    /* Work off the loop thread. */
    bool working;
    uv_work_t work;
    srv_job_fn job, job_done;
    struct srv_gen *gen;      /* generation state, or NULL */
    void *job_data;           /* endpoint data for simple jobs (owned, freed with free()) */
    void (*job_data_free)(void *);
};

/* Starts listening on cfg's host and port; logs "listening on HOST:PORT". */
int srv_listen(struct srv *s);
/* Stops accepting; closes idle connections. */
void srv_stop_accepting(struct srv *s);
/* Closes every connection (their requests are canceled). */
void srv_close_all(struct srv *s);
/* True while any connection has a request not yet answered. */
bool srv__http_busy(const struct srv *s);
/* Idle keep-alive connections and requests arriving too slowly; once a second. */
void srv_http_tick(struct srv *s, double now);

/*
 * The request path without a socket (for fuzzing): parses data as the bytes
 * one client connection sent, in pieces of `piece` bytes (0: at once),
 * through the same llhttp callbacks, limits, routing and validation as a
 * served connection, then lets the slow-client timeout answer a request left
 * incomplete. *out (malloc'd, or NULL when nothing was written; the caller
 * frees it) receives every byte the server wrote back. Only meaningful with
 * s->stub_engine (nothing here runs the loop, the pool or the engine);
 * s->cfg and s->metrics must be set. Returns 0 or -ENOMEM. Loop thread.
 */
int srv_http_feed(struct srv *s, const char *data, size_t len, size_t piece, char **out, size_t *out_len);

/* Runs job on a pool thread, then done on the loop thread (where q->c may
 * have become NULL: done must check srv_req_alive() before replying).
 * Returns 0 or a libuv error (then neither runs). */
int srv_req_offload(struct srv_req *q, srv_job_fn job, srv_job_fn done);
static inline bool srv_req_alive(const struct srv_req *q) { return q->c != NULL; }

/* Whole replies. extra: additional header lines, each ending in "\r\n", or
 * NULL. A reply to a request whose connection is gone is dropped. */
void srv_reply(struct srv_req *q, int status, const char *ctype, const char *body, size_t len,
               const char *extra);
/* Prints root (which it deletes) as the reply body. */
void srv_reply_json(struct srv_req *q, int status, cJSON *root);

/* Streaming replies (chunked transfer encoding). */
void srv_stream_start(struct srv_req *q, int status, const char *ctype);
void srv_stream_send(struct srv_req *q, const char *data, size_t len);
void srv_stream_end(struct srv_req *q);

/* ---- errors (errors.c) ---- */

enum srv_err {
    SRV_ERR_INVALID,          /* 400 invalid_request_error */
    SRV_ERR_CONTEXT,          /* 400 context_length_exceeded */
    SRV_ERR_AUTH,             /* 401 invalid_api_key */
    SRV_ERR_NOT_FOUND,        /* 404 unknown path */
    SRV_ERR_MODEL_NOT_FOUND,  /* 404 model_not_found */
    SRV_ERR_METHOD,           /* 405 */
    SRV_ERR_TIMEOUT,          /* 408 the client was too slow */
    SRV_ERR_TOO_LARGE,        /* 413 */
    SRV_ERR_HEADERS,          /* 431 */
    SRV_ERR_BUSY,             /* 429 with Retry-After */
    SRV_ERR_INTERNAL,         /* 500 server_error */
    SRV_ERR_UNAVAILABLE,      /* 503 loading, shutting down, out of memory */
    SRV_ERR_DEADLINE,         /* 504 the request ran past server.request_timeout_s */
    SRV_ERR_COUNT
};

/*
 * The one way to answer with an error: writes OpenAI's error object
 * {"error":{"message","type","param","code"}} with the status of kind's row
 * in the table (errors.c). param names the offending request field or is
 * NULL.
 */
void srv_reply_error(struct srv_req *q, enum srv_err kind, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The error object alone (for an SSE error event); caller deletes it. */
cJSON *srv_error_json(enum srv_err kind, const char *param, const char *msg);
/* Maps a moed or errno code (from the engine) onto an error kind. */
enum srv_err srv_err_from_code(int code);
int srv_err_status(enum srv_err kind);

/* ---- routes (routes.c) ---- */

/* Dispatches a complete request to its endpoint. */
void srv_route(struct srv_req *q);
/* Endpoint of a path, for metrics (also for requests refused early). */
enum srv_endpoint srv_route_endpoint(const char *url);
const char *srv_endpoint_name(enum srv_endpoint ep);

/* ---- OpenAI endpoints (openai.c) ---- */

void srv_openai_completions(struct srv_req *q, cJSON *body);
void srv_openai_chat(struct srv_req *q, cJSON *body);
/* True when name is the served model (its id, file name or path). */
bool srv__model_name_ok(const struct srv *s, const char *name);
/* Polls the engine requests of every active generation. */
void srv_openai_poll_all(struct srv *s);
/* Releases the engine requests of q's generation (connection gone). */
void srv_openai_abort(struct srv_req *q);
void srv_openai_abort_all(struct srv *s);
/* Deadlines and SSE keep-alive comments; called once a second. */
void srv_openai_tick(struct srv *s, double now);
void srv_gen_free(struct srv_gen *g);

/* Raw bytes of a token (not UTF-8 checked), written to buf (cap bytes).
 * Returns the length. */
size_t srv_token_bytes(const struct vocab *v, int32_t id, char *buf, size_t cap);

/* The chat template's prompt for messages (prepared in place). */
int srv_render_chat(const struct srv *s, cJSON *messages, const cJSON *kwargs, bool add_generation_prompt,
                    char **out, size_t *out_len, char *err, size_t errlen);

/* ---- SSE (sse.c) ---- */

/* Starts a text/event-stream reply. */
void srv_sse_start(struct srv_req *q);
/* Sends `data: <json>\n\n` and deletes chunk. */
void srv_sse_send(struct srv_req *q, cJSON *chunk);
/* Sends a comment line (keep-alive). */
void srv_sse_comment(struct srv_req *q);
/* Sends `data: [DONE]\n\n` and ends the reply. */
void srv_sse_done(struct srv_req *q);

/* ---- metrics (metrics.c) ---- */

int srv_metrics_init(struct srv_metrics **out);
void srv_metrics_free(struct srv_metrics *m);
void srv_metrics_request(struct srv_metrics *m, enum srv_endpoint ep, int status);
void srv_metrics_tokens(struct srv_metrics *m, int64_t prompt, int64_t cached, int64_t generated);
void srv_metrics_ttft(struct srv_metrics *m, double seconds);
void srv_metrics_itl(struct srv_metrics *m, double seconds);
/* Prometheus text exposition; *out is malloc'd. */
int srv_metrics_render(const struct srv *s, char **out, size_t *len);

/* ---- misc (serve.c) ---- */

double srv_now(void);           /* monotonic seconds */
/* Counts the nesting depth of JSON text (strings skipped). */
int srv_json_depth(const char *s, size_t n);

#endif
