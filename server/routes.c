/* SPDX-License-Identifier: MIT */
/*
 * routes.c - from a complete HTTP request to its endpoint: the route table
 * (path, method, whether it needs the model and a key), authentication,
 * the JSON body, and the small endpoints (/health, /v1/models, /metrics, /,
 * and llama-server's /tokenize, /detokenize and /apply-template).
 *
 * Order of checks, the same for every request: unknown path 404, API key
 * 401, wrong method 405, model still loading 503, body not UTF-8 or not JSON
 * 400. Tokenizing and templating run on the libuv pool, never here.
 */
#include "server/serve.h"

#include "common/err.h"
#include "common/log.h"
#include "engine/chat.h"
#include "engine/vocab.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*route_fn)(struct srv_req *q, cJSON *body);

struct route {
    const char *path;
    int method;              /* HTTP_GET or HTTP_POST */
    enum srv_endpoint ep;
    route_fn fn;
    bool prefix;             /* path is a prefix (/v1/models/ID) */
};

static void ep_health(struct srv_req *q, cJSON *body);
static void ep_models(struct srv_req *q, cJSON *body);
static void ep_model_one(struct srv_req *q, cJSON *body);
static void ep_metrics(struct srv_req *q, cJSON *body);
static void ep_root(struct srv_req *q, cJSON *body);
static void ep_tokenize(struct srv_req *q, cJSON *body);
static void ep_detokenize(struct srv_req *q, cJSON *body);
static void ep_apply_template(struct srv_req *q, cJSON *body);

static const struct route k_routes[] = {
    {"/v1/completions", HTTP_POST, SRV_EP_COMPLETIONS, srv_openai_completions, false},
    {"/completions", HTTP_POST, SRV_EP_COMPLETIONS, srv_openai_completions, false},
    {"/v1/chat/completions", HTTP_POST, SRV_EP_CHAT, srv_openai_chat, false},
    {"/chat/completions", HTTP_POST, SRV_EP_CHAT, srv_openai_chat, false},
    {"/tokenize", HTTP_POST, SRV_EP_TOKENIZE, ep_tokenize, false},
    {"/detokenize", HTTP_POST, SRV_EP_DETOKENIZE, ep_detokenize, false},
    {"/apply-template", HTTP_POST, SRV_EP_APPLY_TEMPLATE, ep_apply_template, false},
    {"/v1/models", HTTP_GET, SRV_EP_MODELS, ep_models, false},
    {"/models", HTTP_GET, SRV_EP_MODELS, ep_models, false},
    {"/v1/models/", HTTP_GET, SRV_EP_MODELS, ep_model_one, true},
    {"/health", HTTP_GET, SRV_EP_HEALTH, ep_health, false},
    {"/v1/health", HTTP_GET, SRV_EP_HEALTH, ep_health, false},
    {"/metrics", HTTP_GET, SRV_EP_METRICS, ep_metrics, false},
    {"/", HTTP_GET, SRV_EP_ROOT, ep_root, false},
};
#define N_ROUTES (sizeof k_routes / sizeof k_routes[0])

static const char *k_ep_names[SRV_EP_COUNT] = {
    [SRV_EP_COMPLETIONS] = "/v1/completions", [SRV_EP_CHAT] = "/v1/chat/completions",
    [SRV_EP_TOKENIZE] = "/tokenize",          [SRV_EP_DETOKENIZE] = "/detokenize",
    [SRV_EP_APPLY_TEMPLATE] = "/apply-template", [SRV_EP_MODELS] = "/v1/models",
    [SRV_EP_HEALTH] = "/health",              [SRV_EP_METRICS] = "/metrics",
    [SRV_EP_ROOT] = "/",                      [SRV_EP_OTHER] = "other",
};

const char *srv_endpoint_name(enum srv_endpoint ep) { return k_ep_names[ep]; }

/* Length of the path part of a request target (up to '?' or '#'). */
static size_t path_len(const char *url) { return strcspn(url, "?#"); }

static const struct route *route_find(const char *url, bool *path_known)
{
    size_t n = path_len(url);
    const struct route *hit = NULL;
    *path_known = false;
    for (size_t i = 0; i < N_ROUTES; i++) {
        const struct route *r = &k_routes[i];
        size_t rl = strlen(r->path);
        bool match = r->prefix ? (n > rl && strncmp(url, r->path, rl) == 0)
                               : (n == rl && strncmp(url, r->path, rl) == 0);
        if (match) {
            *path_known = true;
            if (!hit)
                hit = r;
        }
    }
    return hit;
}

enum srv_endpoint srv_route_endpoint(const char *url)
{
    bool known;
    const struct route *r = route_find(url, &known);
    return r ? r->ep : SRV_EP_OTHER;
}

/* True when the JSON text holds U+0000, raw or as a \u0000 escape: cJSON
 * keeps strings NUL-terminated, so the text after it would silently vanish. */
static bool json_has_nul(const char *s, size_t n)
{
    if (memchr(s, 0, n))
        return true;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        if (!in_str) {
            in_str = s[i] == '"';
        } else if (s[i] == '"') {
            in_str = false;
        } else if (s[i] == '\\' && i + 1 < n) {
            if (s[i + 1] == 'u' && n - i >= 6 && memcmp(s + i + 2, "0000", 4) == 0)
                return true;
            i++;
        }
    }
    return false;
}

/* Compares without an early exit, so the time taken says nothing about how
 * much of a key matched. */
static bool key_equal(const char *a, size_t al, const char *b)
{
    size_t bl = strlen(b);
    unsigned char d = (unsigned char)(al != bl);
    for (size_t i = 0; i < al; i++)
        d |= (unsigned char)(a[i] ^ b[i < bl ? i : 0]);
    return d == 0 && bl > 0;
}

static bool authorized(const struct srv_req *q, enum srv_endpoint ep)
{
    const struct srv_params *p = &q->s->cfg->srv;
    if (p->n_api_keys == 0)
        return true;
    if ((ep == SRV_EP_HEALTH && p->open_health) || (ep == SRV_EP_METRICS && p->open_metrics))
        return true;
    if (!q->auth || strncasecmp(q->auth, "Bearer ", 7) != 0)
        return false;
    const char *k = q->auth + 7;
    while (*k == ' ')
        k++;
    size_t kl = strlen(k);
    bool ok = false;
    for (int32_t i = 0; i < p->n_api_keys; i++)
        ok |= key_equal(k, kl, p->api_keys[i]);
    return ok;
}

void srv_route(struct srv_req *q)
{
    struct srv *s = q->s;
    bool known;
    const struct route *r = route_find(q->url, &known);
    if (!r) {
        srv_reply_error(q, SRV_ERR_NOT_FOUND, NULL, "unknown path: %.*s", (int)(path_len(q->url) > 200 ? 200 : path_len(q->url)), q->url);
        return;
    }
    q->ep = r->ep;
    if (!authorized(q, r->ep)) {
        srv_reply_error(q, SRV_ERR_AUTH, NULL,
                        q->auth ? "Incorrect API key provided."
                                : "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.");
        return;
    }
    /* The same path with another method. */
    const struct route *m = NULL;
    size_t n = path_len(q->url);
    for (size_t i = 0; i < N_ROUTES && !m; i++) {
        const struct route *x = &k_routes[i];
        size_t rl = strlen(x->path);
        bool match = x->prefix ? (n > rl && strncmp(q->url, x->path, rl) == 0)
                               : (n == rl && strncmp(q->url, x->path, rl) == 0);
        if (match && (x->method == q->method || (x->method == HTTP_GET && q->method == HTTP_HEAD)))
            m = x;
    }
    if (!m) {
        srv_reply_error(q, SRV_ERR_METHOD, NULL, "%s is not allowed on %s (use %s)",
                        llhttp_method_name((llhttp_method_t)q->method), r->path,
                        llhttp_method_name((llhttp_method_t)r->method));
        return;
    }
    r = m;
    bool needs_engine = r->ep != SRV_EP_HEALTH && r->ep != SRV_EP_METRICS && r->ep != SRV_EP_ROOT &&
                        r->ep != SRV_EP_MODELS;
    if (needs_engine && !s->engine && !s->stub_engine) {
        srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "Loading model");
        return;
    }
    if (needs_engine && s->draining) {
        srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "the server is shutting down");
        return;
    }
    cJSON *body = NULL;
    if (r->method == HTTP_POST) {
        char *fixed = NULL;
        size_t fl = 0;
        if (vocab_utf8_sanitize(q->body, q->body_len, &fixed, &fl) < 0) {
            srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "out of memory");
            return;
        }
        if (fixed) {
            free(fixed);
            srv_reply_error(q, SRV_ERR_INVALID, NULL, "the request body is not valid UTF-8");
            return;
        }
        if (json_has_nul(q->body, q->body_len)) {
            srv_reply_error(q, SRV_ERR_INVALID, NULL, "the request body contains U+0000, which is not supported");
            return;
        }
        int depth = srv_json_depth(q->body, q->body_len);
        if (depth > s->cfg->srv.max_json_depth) {
            srv_reply_error(q, SRV_ERR_INVALID, NULL, "the JSON body is nested deeper than %d levels",
                            s->cfg->srv.max_json_depth);
            return;
        }
        const char *end = NULL;
        body = cJSON_ParseWithLengthOpts(q->body, q->body_len, &end, false);
        if (body && end) { /* only whitespace may follow the value */
            while (end < q->body + q->body_len && strchr(" \t\r\n", *end))
                end++;
            if (end != q->body + q->body_len) {
                cJSON_Delete(body);
                body = NULL;
            }
        }
        if (!body) {
            srv_reply_error(q, SRV_ERR_INVALID, NULL,
                            "We could not parse the JSON body of your request. (HINT: This likely means "
                            "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                            "payload.)");
            return;
        }
        if (!cJSON_IsObject(body)) {
            cJSON_Delete(body);
            srv_reply_error(q, SRV_ERR_INVALID, NULL, "the request body must be a JSON object");
            return;
        }
    }
    r->fn(q, body);
}

/* ---- small endpoints ---- */

/* Bytes this process has read so far (for loading progress). */
static double read_bytes(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    if (!f)
        return 0;
    char line[128];
    double v = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "rchar:", 6) == 0)
            v = strtod(line + 6, NULL);
    fclose(f);
    return v;
}

static void ep_health(struct srv_req *q, cJSON *body)
{
    struct srv *s = q->s;
    cJSON *o = cJSON_CreateObject();
    if ((s->engine || s->stub_engine) && !s->draining) {
        cJSON_AddStringToObject(o, "status", "ok");
        srv_reply_json(q, 200, o);
        return;
    }
    if (s->draining) {
        cJSON_AddStringToObject(o, "status", "shutting down");
    } else {
        cJSON_AddStringToObject(o, "status", "loading");
        double elapsed = srv_now() - s->t_load_start;
        cJSON_AddNumberToObject(o, "loading_seconds", elapsed);
        if (s->model_size > 0) {
            double p = (read_bytes() - s->rchar_at_load) / s->model_size;
            cJSON_AddNumberToObject(o, "progress", p < 0 ? 0 : p > 0.99 ? 0.99 : p);
        }
    }
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    srv_reply(q, 503, "application/json", txt ? txt : "{}", txt ? strlen(txt) : 2, "Retry-After: 1\r\n");
    cJSON_free(txt);
}

static cJSON *model_object(const struct srv *s)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", s->model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)s->created);
    cJSON_AddStringToObject(m, "owned_by", "moed");
    if (s->engine)
        cJSON_AddNumberToObject(m, "max_model_len", eng_ctx_size(s->engine));
    return m;
}

static void ep_models(struct srv_req *q, cJSON *body)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *d = cJSON_AddArrayToObject(o, "data");
    cJSON_AddItemToArray(d, model_object(q->s));
    srv_reply_json(q, 200, o);
}

static void ep_model_one(struct srv_req *q, cJSON *body)
{
    const char *id = q->url + strlen("/v1/models/");
    size_t n = path_len(id);
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(n < 255 ? n : 255), id);
    if (!srv__model_name_ok(q->s, name)) {
        srv_reply_error(q, SRV_ERR_MODEL_NOT_FOUND, "model",
                        "The model `%s` does not exist or you do not have access to it.", name);
        return;
    }
    srv_reply_json(q, 200, model_object(q->s));
}

static void ep_metrics(struct srv_req *q, cJSON *body)
{
    char *txt = NULL;
    size_t len = 0;
    if (srv_metrics_render(q->s, &txt, &len) < 0) {
        srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    srv_reply(q, 200, "text/plain; version=0.0.4; charset=utf-8", txt, len, NULL);
    free(txt);
}

static void ep_root(struct srv_req *q, cJSON *body)
{
    struct srv *s = q->s;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", "moed");
    cJSON_AddStringToObject(o, "description", "MoE inference server with an OpenAI-compatible API");
    cJSON_AddStringToObject(o, "model", s->model_id);
    cJSON_AddStringToObject(o, "status", s->engine ? "ok" : "loading");
    cJSON *eps = cJSON_AddArrayToObject(o, "endpoints");
    for (size_t i = 0; i < N_ROUTES; i++) {
        char line[96];
        snprintf(line, sizeof line, "%s %s%s", llhttp_method_name((llhttp_method_t)k_routes[i].method),
                 k_routes[i].path, k_routes[i].prefix ? "{id}" : "");
        cJSON_AddItemToArray(eps, cJSON_CreateString(line));
    }
    srv_reply_json(q, 200, o);
}

/* ---- llama-server's /tokenize, /detokenize, /apply-template ---- */

/* A simple pool job: in (the request body) to out (the reply), or an error. */
struct simple_job {
    cJSON *in, *out;
    enum srv_err err;
    bool failed;
    char param[32];
    char msg[300];
};

static void simple_job_free(void *p)
{
    struct simple_job *j = p;
    if (!j)
        return;
    cJSON_Delete(j->in);
    cJSON_Delete(j->out);
    free(j);
}

static void simple_done(struct srv_req *q)
{
    struct simple_job *j = q->job_data;
    if (j->failed) {
        srv_reply_error(q, j->err, j->param[0] ? j->param : NULL, "%s", j->msg);
        return;
    }
    cJSON *out = j->out;
    j->out = NULL;
    srv_reply_json(q, 200, out);
}

static void simple_start(struct srv_req *q, cJSON *body, srv_job_fn job)
{
    if (q->s->stub_engine) { /* srv_http_feed: validated as far as the loop thread goes */
        cJSON_Delete(body);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "object", "stub");
        srv_reply_json(q, 200, o);
        return;
    }
    struct simple_job *j = calloc(1, sizeof *j);
    if (!j) {
        cJSON_Delete(body);
        srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    j->in = body;
    q->job_data = j;
    q->job_data_free = simple_job_free;
    if (srv_req_offload(q, job, simple_done) < 0)
        srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "cannot queue the work");
}

static void job_fail(struct simple_job *j, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_fail(struct simple_job *j, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->msg, sizeof j->msg, fmt, ap);
    va_end(ap);
    snprintf(j->param, sizeof j->param, "%s", param ? param : "");
    j->err = SRV_ERR_INVALID;
    j->failed = true;
}

/* Optional boolean field; returns false (and fails j) when it has another type. */
static bool opt_bool(struct simple_job *j, const char *name, bool *v)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(j->in, name);
    if (!it || cJSON_IsNull(it))
        return true;
    if (!cJSON_IsBool(it)) {
        job_fail(j, name, "'%s' must be a boolean", name);
        return false;
    }
    *v = cJSON_IsTrue(it);
    return true;
}

static void job_tokenize(struct srv_req *q)
{
    struct simple_job *j = q->job_data;
    const struct vocab *v = q->s->vocab;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(j->in, "content");
    bool add_special = false, parse_special = true, with_pieces = false;
    if (!cJSON_IsString(content)) {
        job_fail(j, "content", "'content' must be a string");
        return;
    }
    if (!opt_bool(j, "add_special", &add_special) || !opt_bool(j, "parse_special", &parse_special) ||
        !opt_bool(j, "with_pieces", &with_pieces))
        return;
    struct vocab_encode_opts o = {.add_special = add_special, .parse_special = parse_special};
    struct vocab_tokens t = {0};
    int rc = vocab_encode(v, content->valuestring, strlen(content->valuestring), &o, &t);
    if (rc < 0) {
        job_fail(j, "content", "cannot tokenize: %s", err_str(rc));
        j->err = srv_err_from_code(rc);
        vocab_tokens_free(&t);
        return;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(out, "tokens");
    for (size_t i = 0; i < t.n; i++) {
        if (!with_pieces) {
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(t.ids[i]));
            continue;
        }
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "id", t.ids[i]);
        char b[512];
        size_t bl = srv_token_bytes(v, t.ids[i], b, sizeof b - 1);
        char *fixed = NULL;
        size_t fl = 0;
        if (vocab_utf8_sanitize(b, bl, &fixed, &fl) == 0 && !fixed) {
            b[bl] = 0;
            cJSON_AddStringToObject(e, "piece", b);
        } else {
            cJSON *bytes = cJSON_AddArrayToObject(e, "piece");
            for (size_t k = 0; k < bl; k++)
                cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)b[k]));
        }
        free(fixed);
        cJSON_AddItemToArray(arr, e);
    }
    vocab_tokens_free(&t);
    j->out = out;
}

static void ep_tokenize(struct srv_req *q, cJSON *body) { simple_start(q, body, job_tokenize); }

static void job_detokenize(struct srv_req *q)
{
    struct simple_job *j = q->job_data;
    const struct vocab *v = q->s->vocab;
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(j->in, "tokens");
    if (!cJSON_IsArray(toks)) {
        job_fail(j, "tokens", "'tokens' must be an array of token ids");
        return;
    }
    int n = cJSON_GetArraySize(toks), k = 0;
    int32_t *ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    if (!ids) {
        job_fail(j, NULL, "out of memory");
        j->err = SRV_ERR_UNAVAILABLE;
        return;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, toks)
    {
        double d = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (d < 0 || d >= vocab_n_tokens(v) || d != (double)(int32_t)d) {
            job_fail(j, "tokens", "tokens[%d] is not a token id of this model (0..%u)", k, vocab_n_tokens(v) - 1);
            free(ids);
            return;
        }
        ids[k++] = (int32_t)d;
    }
    struct vocab_detok_opts o = {.show_special = true, .strip_lead_space = true};
    char *txt = NULL;
    size_t len = 0;
    int rc = vocab_decode(v, ids, (size_t)k, &o, &txt, &len);
    free(ids);
    if (rc < 0) {
        job_fail(j, "tokens", "cannot detokenize: %s", err_str(rc));
        return;
    }
    j->out = cJSON_CreateObject();
    cJSON_AddStringToObject(j->out, "content", txt);
    free(txt);
}

static void ep_detokenize(struct srv_req *q, cJSON *body) { simple_start(q, body, job_detokenize); }

static void job_apply_template(struct srv_req *q)
{
    struct simple_job *j = q->job_data;
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j->in, "messages");
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(j->in, "chat_template_kwargs");
    if (!cJSON_IsArray(msgs)) {
        job_fail(j, "messages", "'messages' must be an array");
        return;
    }
    if (kw && !cJSON_IsNull(kw) && !cJSON_IsObject(kw)) {
        job_fail(j, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
        return;
    }
    char *out = NULL, err[300];
    size_t len = 0;
    int rc = srv_render_chat(q->s, msgs, cJSON_IsObject(kw) ? kw : NULL, true, &out, &len, err, sizeof err);
    if (rc < 0) {
        job_fail(j, "messages", "%s", err);
        j->err = srv_err_from_code(rc);
        return;
    }
    j->out = cJSON_CreateObject();
    cJSON_AddStringToObject(j->out, "prompt", out);
    free(out);
}

static void ep_apply_template(struct srv_req *q, cJSON *body) { simple_start(q, body, job_apply_template); }
