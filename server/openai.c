/* SPDX-License-Identifier: MIT */
/*
 * openai.c - POST /v1/completions and /v1/chat/completions: request
 * validation, the path to the engine, and the response JSON in OpenAI's
 * shapes (streamed through sse.c, or whole).
 *
 * A request goes: validate every field on the loop thread (unknown fields
 * are refused, ignored ones listed) -> template and tokenize on the pool
 * (job_prepare) -> submit one engine request per choice (prompts x n) ->
 * engine events, polled when the engine's notify wakes the loop -> chunks or
 * one reply. The loop thread never waits on the engine.
 *
 * Invariant: a generation is on the server's active list exactly while it
 * holds engine requests; srv_openai_abort() and gen_complete() take it off
 * and release them, so the engine never outlives a handle it reports to.
 */
#include "server/serve.h"

#include "common/err.h"
#include "common/log.h"
#include "engine/chat.h"
#include "engine/vocab.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SRV_MAX_CHOICES 16
#define SRV_MAX_STOP 16
#define SRV_KEEPALIVE_S 5.0

struct srv_choice {
    struct eng_req *r;
    int32_t prompt;             /* index of its prompt */
    int32_t index;              /* OpenAI's choice index */
    char *text;                 /* non-streamed content */
    size_t text_len, text_cap;
    char *reasoning;
    size_t reasoning_len, reasoning_cap;
    cJSON *lp;                  /* non-streamed logprobs (endpoint layout) */
    size_t text_offset;         /* completions logprobs: bytes so far */
    enum eng_finish finish;
    struct eng_usage usage;
    bool done, failed, finish_sent;
    int err;
    char errmsg[256];
    int32_t n_tokens;
    double t_last;
};

struct srv_gen {
    struct srv_req *q;
    struct srv_gen *prev, *next;  /* the server's active list */
    bool active;
    bool chat, stream, include_usage, started;
    char id[48];
    int64_t created;
    cJSON *root;                  /* the request body */
    cJSON *messages;              /* chat: borrowed from root */
    const cJSON *kwargs;
    /* Prompts: texts to tokenize on the pool, or ids given by the client. */
    int32_t n_prompts;
    const char **ptext;
    struct vocab_tokens *ptok;
    /* Parameters. */
    struct eng_req_params rp;
    const char *stop[SRV_MAX_STOP];
    struct sample_bias *bias;
    int32_t n;                    /* choices per prompt */
    bool logprobs;
    int32_t top_logprobs;
    int32_t max_tokens;           /* 0: unset */
    const char *max_tokens_name;
    /* Results of the pool job. */
    bool job_failed;
    enum srv_err job_err;
    const char *job_param;
    char job_msg[320];
    /* Choices. */
    int32_t n_choices, n_done;
    struct srv_choice *ch;
    double t_submit;
    bool timed_out;
};

/* ---- validation helpers ---- */

/* The model's sizes (s->stub_* when validating without an engine). */
static int32_t ctx_size(const struct srv *s) { return s->engine ? eng_ctx_size(s->engine) : s->stub_ctx; }
static int32_t n_vocab(const struct srv *s)
{
    return s->vocab ? (int32_t)vocab_n_tokens(s->vocab) : s->stub_n_vocab;
}

struct verr {
    enum srv_err kind;
    const char *param;
    char msg[320];
};

static int bad(struct verr *e, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(struct verr *e, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->kind = SRV_ERR_INVALID;
    e->param = param;
    return -1;
}

static int get_num(const cJSON *it, const char *name, double lo, double hi, double *out, struct verr *e)
{
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return bad(e, name, "'%s' must be a number", name);
    double v = it->valuedouble;
    if (v < lo || v > hi)
        return bad(e, name, "%g is out of range for '%s': expected a value in [%g, %g]", v, name, lo, hi);
    *out = v;
    return 0;
}

static int get_int(const cJSON *it, const char *name, double lo, double hi, int64_t *out, struct verr *e)
{
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble != floor(it->valuedouble))
        return bad(e, name, "'%s' must be an integer", name);
    double v = it->valuedouble;
    if (v < lo || v > hi)
        return bad(e, name, "%.0f is out of range for '%s': expected an integer in [%.0f, %.0f]", v, name, lo, hi);
    *out = (int64_t)v;
    return 0;
}

static int get_bool(const cJSON *it, const char *name, bool *out, struct verr *e)
{
    if (!cJSON_IsBool(it))
        return bad(e, name, "'%s' must be a boolean", name);
    *out = cJSON_IsTrue(it);
    return 0;
}

bool srv__model_name_ok(const struct srv *s, const char *name)
{
    if (strcmp(name, s->model_id) == 0)
        return true;
    const char *path = s->cfg->srv.model_path;
    if (!path)
        return false;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t bl = strlen(base);
    if (bl > 5 && strcmp(base + bl - 5, ".gguf") == 0 && strlen(name) == bl - 5 && strncmp(name, base, bl - 5) == 0)
        return true;
    return strcmp(name, base) == 0 || strcmp(name, path) == 0;
}

/* ---- the fields ---- */

enum fl_where { FW_COMPL = 1, FW_CHAT = 2, FW_BOTH = 3 };
typedef int (*field_fn)(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e);

struct field {
    const char *name;
    enum fl_where where;
    field_fn fn;               /* NULL: ignored */
};

static int f_model(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (!cJSON_IsString(it))
        return bad(e, name, "'model' must be a string");
    if (!srv__model_name_ok(g->q->s, it->valuestring)) {
        bad(e, name, "The model `%.200s` does not exist or you do not have access to it.", it->valuestring);
        e->kind = SRV_ERR_MODEL_NOT_FOUND;
        return -1;
    }
    return 0;
}

static int f_prompt(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    int32_t V = n_vocab(g->q->s);
    if (cJSON_IsString(it)) {
        g->n_prompts = 1;
        g->ptext = calloc(1, sizeof *g->ptext);
        g->ptok = calloc(1, sizeof *g->ptok);
        if (!g->ptext || !g->ptok)
            return bad(e, NULL, "out of memory");
        g->ptext[0] = it->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) == 0)
        return bad(e, name, "'prompt' must be a string, an array of strings, or an array of token ids");
    const cJSON *first = it->child;
    int n = cJSON_GetArraySize(it);
    if (cJSON_IsNumber(first)) { /* one prompt of token ids */
        g->n_prompts = 1;
        g->ptext = calloc(1, sizeof *g->ptext);
        g->ptok = calloc(1, sizeof *g->ptok);
        if (!g->ptext || !g->ptok || !(g->ptok[0].ids = malloc((size_t)n * sizeof(int32_t))))
            return bad(e, NULL, "out of memory");
        g->ptok[0].cap = (size_t)n;
        const cJSON *x;
        cJSON_ArrayForEach(x, it)
        {
            int64_t id = 0;
            if (get_int(x, name, 0, V - 1, &id, e) < 0)
                return bad(e, name, "prompt[%zu] is not a token id of this model (0..%d)", g->ptok[0].n, V - 1);
            g->ptok[0].ids[g->ptok[0].n++] = (int32_t)id;
        }
        return 0;
    }
    if (n > SRV_MAX_CHOICES)
        return bad(e, name, "at most %d prompts per request", SRV_MAX_CHOICES);
    g->n_prompts = n;
    g->ptext = calloc((size_t)n, sizeof *g->ptext);
    g->ptok = calloc((size_t)n, sizeof *g->ptok);
    if (!g->ptext || !g->ptok)
        return bad(e, NULL, "out of memory");
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, it)
    {
        if (cJSON_IsString(x)) {
            g->ptext[i++] = x->valuestring;
            continue;
        }
        if (!cJSON_IsArray(x) || cJSON_GetArraySize(x) == 0)
            return bad(e, name, "prompt[%d] must be a string or a non-empty array of token ids", i);
        int m = cJSON_GetArraySize(x);
        if (!(g->ptok[i].ids = malloc((size_t)m * sizeof(int32_t))))
            return bad(e, NULL, "out of memory");
        g->ptok[i].cap = (size_t)m;
        const cJSON *y;
        cJSON_ArrayForEach(y, x)
        {
            int64_t id = 0;
            if (get_int(y, name, 0, V - 1, &id, e) < 0)
                return bad(e, name, "prompt[%d][%zu] is not a token id of this model (0..%d)", i, g->ptok[i].n,
                           V - 1);
            g->ptok[i].ids[g->ptok[i].n++] = (int32_t)id;
        }
        i++;
    }
    return 0;
}

static int f_messages(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) == 0)
        return bad(e, name, "'messages' must be a non-empty array");
    g->messages = (cJSON *)it;
    return 0;
}

static int f_max_tokens(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    int64_t v = 0;
    int32_t ctx = ctx_size(g->q->s);
    int32_t cap = g->q->s->cfg->srv.max_tokens > 0 && g->q->s->cfg->srv.max_tokens < ctx
                      ? g->q->s->cfg->srv.max_tokens : ctx;
    if (get_int(it, name, 1, 1e15, &v, e) < 0)
        return -1;
    if (v > cap)
        return bad(e, name, "'%s' is too large: %lld. This model's maximum context length is %d tokens%s.", name,
                   (long long)v, ctx, cap < ctx ? " and the server allows fewer" : "");
    /* max_completion_tokens wins over the deprecated max_tokens. */
    if (!g->max_tokens_name || strcmp(name, "max_completion_tokens") == 0) {
        g->max_tokens = (int32_t)v;
        g->max_tokens_name = name;
    }
    return 0;
}

static int f_temperature(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    double v = 0;
    if (get_num(it, name, 0, 2, &v, e) < 0)
        return -1;
    g->rp.sample.temperature = (float)v;
    return 0;
}

static int f_top_p(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    double v = 0;
    if (get_num(it, name, 0, 1, &v, e) < 0)
        return -1;
    g->rp.sample.top_p = v > 0 ? (float)v : 1e-9f; /* 0: only the most likely token */
    return 0;
}

static int f_top_k(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    int64_t v = 0;
    if (get_int(it, name, -1, 1e9, &v, e) < 0)
        return -1;
    g->rp.sample.top_k = v < 0 ? 0 : (int32_t)v; /* -1 and 0: off */
    return 0;
}

static int f_min_p(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    double v = 0;
    if (get_num(it, name, 0, 1, &v, e) < 0)
        return -1;
    g->rp.sample.min_p = (float)v;
    return 0;
}

static int f_seed(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    int64_t v = 0;
    if (get_int(it, name, -9.2e18, 9.2e18, &v, e) < 0)
        return -1;
    g->rp.sample.seed = (uint64_t)v;
    g->rp.sample.has_seed = true;
    return 0;
}

static int f_stop(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (cJSON_IsString(it)) {
        if (it->valuestring[0])
            g->stop[g->rp.n_stop++] = it->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(it))
        return bad(e, name, "'stop' must be a string or an array of strings");
    if (cJSON_GetArraySize(it) > SRV_MAX_STOP)
        return bad(e, name, "'stop' has %d entries; at most %d are allowed", cJSON_GetArraySize(it), SRV_MAX_STOP);
    const cJSON *x;
    cJSON_ArrayForEach(x, it)
    {
        if (!cJSON_IsString(x))
            return bad(e, name, "'stop' must be a string or an array of strings");
        if (x->valuestring[0])
            g->stop[g->rp.n_stop++] = x->valuestring;
    }
    return 0;
}

static int f_presence(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    double v = 0;
    if (get_num(it, name, -2, 2, &v, e) < 0)
        return -1;
    g->rp.sample.presence_penalty = (float)v;
    return 0;
}

static int f_frequency(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    double v = 0;
    if (get_num(it, name, -2, 2, &v, e) < 0)
        return -1;
    g->rp.sample.frequency_penalty = (float)v;
    return 0;
}

static int f_repetition(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    double v = 0;
    if (get_num(it, name, 0, 100, &v, e) < 0)
        return -1;
    if (v <= 0)
        return bad(e, name, "'repetition_penalty' must be greater than 0");
    g->rp.sample.repetition_penalty = (float)v;
    return 0;
}

static int f_logit_bias(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (!cJSON_IsObject(it))
        return bad(e, name, "'logit_bias' must be an object mapping token ids to numbers");
    int n = cJSON_GetArraySize(it);
    int32_t V = n_vocab(g->q->s);
    if (n == 0)
        return 0;
    if (n > V)
        return bad(e, name, "'logit_bias' has more entries than the vocabulary");
    g->bias = calloc((size_t)n, sizeof *g->bias);
    if (!g->bias)
        return bad(e, NULL, "out of memory");
    const cJSON *x;
    cJSON_ArrayForEach(x, it)
    {
        char *end;
        errno = 0;
        long id = strtol(x->string, &end, 10);
        if (end == x->string || *end || errno || id < 0 || id >= V)
            return bad(e, name, "logit_bias: '%.40s' is not a token id of this model (0..%d)", x->string, V - 1);
        double b = 0;
        if (get_num(x, name, -100, 100, &b, e) < 0)
            return bad(e, name, "logit_bias[%ld] must be a number in [-100, 100]", id);
        g->bias[g->rp.sample.n_bias].id = (int32_t)id;
        g->bias[g->rp.sample.n_bias].bias = (float)b;
        g->rp.sample.n_bias++;
    }
    g->rp.sample.bias = g->bias;
    return 0;
}

static int f_logprobs(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (g->chat)
        return get_bool(it, name, &g->logprobs, e);
    /* Completions: the number of alternatives, an integer. */
    int64_t v = 0;
    if (cJSON_IsBool(it))
        return bad(e, name, "'logprobs' must be an integer on /v1/completions (0..%d)", SAMPLE_MAX_TOP_LOGPROBS);
    if (get_int(it, name, 0, SAMPLE_MAX_TOP_LOGPROBS, &v, e) < 0)
        return -1;
    g->logprobs = true;
    g->top_logprobs = (int32_t)v;
    return 0;
}

static int f_top_logprobs(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    int64_t v = 0;
    if (get_int(it, name, 0, SAMPLE_MAX_TOP_LOGPROBS, &v, e) < 0)
        return -1;
    g->top_logprobs = (int32_t)v;
    return 0;
}

static int f_n(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    int64_t v = 0;
    if (get_int(it, name, 1, SRV_MAX_CHOICES, &v, e) < 0)
        return -1;
    g->n = (int32_t)v;
    return 0;
}

static int f_stream(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    return get_bool(it, name, &g->stream, e);
}

static int f_stream_options(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (!cJSON_IsObject(it))
        return bad(e, name, "'stream_options' must be an object");
    const cJSON *x;
    cJSON_ArrayForEach(x, it)
    {
        if (strcmp(x->string, "include_usage") == 0) {
            if (get_bool(x, "stream_options.include_usage", &g->include_usage, e) < 0)
                return -1;
        } else {
            return bad(e, "stream_options", "Unrecognized stream option: '%.60s'", x->string);
        }
    }
    return 0;
}

static int f_kwargs(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (!cJSON_IsObject(it))
        return bad(e, name, "'chat_template_kwargs' must be an object");
    g->kwargs = it;
    return 0;
}

static int f_ignore_eos(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    return get_bool(it, name, &g->rp.ignore_eos, e);
}

static int f_tools(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 0)
        return 0;
    return bad(e, name, "'tools' is not supported by this server");
}

static int f_tool_choice(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (cJSON_IsString(it) && strcmp(it->valuestring, "none") == 0)
        return 0;
    return bad(e, name, "'tool_choice' other than \"none\" is not supported by this server");
}

static int f_response_format(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    const cJSON *t = cJSON_IsObject(it) ? cJSON_GetObjectItemCaseSensitive(it, "type") : NULL;
    if (cJSON_IsString(t) && strcmp(t->valuestring, "text") == 0 && cJSON_GetArraySize(it) == 1)
        return 0;
    return bad(e, name, "'response_format' other than {\"type\": \"text\"} is not supported by this server");
}

static int f_modalities(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 1 && cJSON_IsString(it->child) &&
        strcmp(it->child->valuestring, "text") == 0)
        return 0;
    return bad(e, name, "'modalities' other than [\"text\"] is not supported by this server");
}

static int f_best_of(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (cJSON_IsNumber(it) && it->valuedouble == 1)
        return 0;
    return bad(e, name, "'best_of' other than 1 is not supported by this server");
}

static int f_echo(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    bool v = false;
    if (get_bool(it, name, &v, e) < 0)
        return -1;
    return v ? bad(e, name, "'echo' is not supported by this server") : 0;
}

static int f_suffix(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    if (cJSON_IsString(it) && !it->valuestring[0])
        return 0;
    return bad(e, name, "'suffix' is not supported by this server");
}

static int f_unsupported(struct srv_gen *g, const cJSON *it, const char *name, struct verr *e)
{
    return bad(e, name, "'%s' is not supported by this server", name);
}

/* null is the default of every field, so a field whose value is null is
 * accepted whatever it is; the checks below see only other values. */
static const struct field k_fields[] = {
    {"model", FW_BOTH, f_model},
    {"prompt", FW_COMPL, f_prompt},
    {"messages", FW_CHAT, f_messages},
    {"max_tokens", FW_BOTH, f_max_tokens},
    {"max_completion_tokens", FW_BOTH, f_max_tokens},
    {"temperature", FW_BOTH, f_temperature},
    {"top_p", FW_BOTH, f_top_p},
    {"top_k", FW_BOTH, f_top_k},
    {"min_p", FW_BOTH, f_min_p},
    {"seed", FW_BOTH, f_seed},
    {"stop", FW_BOTH, f_stop},
    {"presence_penalty", FW_BOTH, f_presence},
    {"frequency_penalty", FW_BOTH, f_frequency},
    {"repetition_penalty", FW_BOTH, f_repetition},
    {"logit_bias", FW_BOTH, f_logit_bias},
    {"logprobs", FW_BOTH, f_logprobs},
    {"top_logprobs", FW_CHAT, f_top_logprobs},
    {"n", FW_BOTH, f_n},
    {"stream", FW_BOTH, f_stream},
    {"stream_options", FW_BOTH, f_stream_options},
    {"chat_template_kwargs", FW_CHAT, f_kwargs},
    {"ignore_eos", FW_BOTH, f_ignore_eos},
    /* ignored */
    {"user", FW_BOTH, NULL},
    {"metadata", FW_BOTH, NULL},
    {"store", FW_BOTH, NULL},
    {"service_tier", FW_BOTH, NULL},
    {"parallel_tool_calls", FW_CHAT, NULL}, /* tools are refused, so there are none */
    /* refused unless null or harmless */
    {"tools", FW_CHAT, f_tools},
    {"tool_choice", FW_CHAT, f_tool_choice},
    {"response_format", FW_CHAT, f_response_format},
    {"modalities", FW_CHAT, f_modalities},
    {"audio", FW_CHAT, f_unsupported},
    {"functions", FW_CHAT, f_unsupported},
    {"function_call", FW_CHAT, f_unsupported},
    {"prediction", FW_CHAT, f_unsupported},
    {"reasoning_effort", FW_CHAT, f_unsupported},
    {"web_search_options", FW_CHAT, f_unsupported},
    {"best_of", FW_COMPL, f_best_of},
    {"echo", FW_COMPL, f_echo},
    {"suffix", FW_COMPL, f_suffix},
};
#define N_FIELDS (sizeof k_fields / sizeof k_fields[0])

static int validate(struct srv_gen *g, cJSON *root, struct verr *e)
{
    enum fl_where w = g->chat ? FW_CHAT : FW_COMPL;
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        const struct field *f = NULL;
        for (size_t i = 0; i < N_FIELDS && !f; i++)
            if ((k_fields[i].where & w) && strcmp(k_fields[i].name, it->string) == 0)
                f = &k_fields[i];
        if (!f)
            return bad(e, NULL, "Unrecognized request argument supplied: %.100s", it->string);
        /* a key given twice would be applied twice (stop lists append, prompts
         * and biases allocate): refused, as it is almost surely a mistake */
        for (const cJSON *p = root->child; p != it; p = p->next)
            if (strcmp(p->string, it->string) == 0)
                return bad(e, f->name, "'%s' is given more than once", f->name);
        if (!f->fn || cJSON_IsNull(it))
            continue;
        if (f->fn(g, it, f->name, e) < 0)
            return -1;
    }
    if (g->chat && !g->messages)
        return bad(e, "messages", "Missing required parameter: 'messages'.");
    if (!g->chat && g->n_prompts == 0)
        return bad(e, "prompt", "Missing required parameter: 'prompt'.");
    if (g->chat && g->top_logprobs > 0 && !g->logprobs)
        return bad(e, "top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
    if (!g->stream && cJSON_GetObjectItemCaseSensitive(root, "stream_options") &&
        !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "stream_options")))
        return bad(e, "stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
    if ((int64_t)g->n_prompts * g->n > SRV_MAX_CHOICES)
        return bad(e, "n", "prompts x n is %d; at most %d choices per request", g->n_prompts * g->n,
                   SRV_MAX_CHOICES);
    return 0;
}

/* ---- token text ---- */

/* GPT-2's byte-level table: printable bytes as themselves, the others from
 * U+0100 on; indexed by code point, gives the byte. */
static int byte_of_cp[324];
static pthread_once_t k_byte_table_once = PTHREAD_ONCE_INIT;

static void byte_table_init(void)
{
    int k = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        byte_of_cp[keep ? b : 256 + k++] = b;
    }
}

size_t srv_token_bytes(const struct vocab *v, int32_t id, char *buf, size_t cap)
{
    const char *t = vocab_token_text(v, id);
    if (!t || cap == 0)
        return 0;
    enum vocab_ttype ty = vocab_token_type(v, id);
    size_t n = 0;
    if (ty == VOCAB_TTYPE_CONTROL || ty == VOCAB_TTYPE_USER_DEFINED || ty == VOCAB_TTYPE_UNKNOWN) {
        n = strlen(t) < cap ? strlen(t) : cap;
        memcpy(buf, t, n);
        return n;
    }
    if (vocab_kind(v) == VOCAB_KIND_SPM) {
        unsigned x;
        if (ty == VOCAB_TTYPE_BYTE && sscanf(t, "<0x%2X>", &x) == 1) {
            buf[0] = (char)x;
            return 1;
        }
        for (const char *p = t; *p && n < cap;) {
            if ((unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x96 && (unsigned char)p[2] == 0x81) {
                buf[n++] = ' ';
                p += 3;
            } else {
                buf[n++] = *p++;
            }
        }
        return n;
    }
    /* Byte-level BPE: each code point of the text stands for one byte
     * (GPT-2's table, built once; pool threads call this concurrently). */
    pthread_once(&k_byte_table_once, byte_table_init);
    const unsigned char *p = (const unsigned char *)t;
    while (*p && n < cap) {
        uint32_t cp;
        int l;
        if (p[0] < 0x80) cp = p[0], l = 1;
        else if ((p[0] & 0xE0) == 0xC0 && p[1]) cp = ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu), l = 2;
        else { /* not a byte-level character: keep the text */
            size_t r = strlen((const char *)p);
            r = r < cap - n ? r : cap - n;
            memcpy(buf + n, p, r);
            return n + r;
        }
        buf[n++] = cp < 324 ? (char)byte_of_cp[cp] : '?';
        p += l;
    }
    return n;
}

/* Token text as a JSON string (invalid UTF-8 replaced) and its bytes. */
static char *token_str(const struct vocab *v, int32_t id, char *raw, size_t *raw_len)
{
    *raw_len = srv_token_bytes(v, id, raw, 256);
    char *fixed = NULL;
    size_t fl = 0;
    if (vocab_utf8_sanitize(raw, *raw_len, &fixed, &fl) == 0 && fixed)
        return fixed;
    char *s = malloc(*raw_len + 1);
    if (s) {
        memcpy(s, raw, *raw_len);
        s[*raw_len] = 0;
    }
    return s;
}

static cJSON *lp_number(float x) { return isfinite(x) ? cJSON_CreateNumber(x) : cJSON_CreateNumber(-9999.0); }

/* One chat logprobs entry {token, logprob, bytes, top_logprobs}. */
static cJSON *chat_lp_entry(const struct vocab *v, int32_t tok, const struct sample_logprobs *lp, int32_t n_top)
{
    cJSON *e = cJSON_CreateObject();
    char raw[256];
    size_t rl;
    char *s = token_str(v, tok, raw, &rl);
    cJSON_AddStringToObject(e, "token", s ? s : "");
    free(s);
    cJSON_AddItemToObject(e, "logprob", lp_number(lp->logprob));
    cJSON *b = cJSON_AddArrayToObject(e, "bytes");
    for (size_t i = 0; i < rl; i++)
        cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)raw[i]));
    cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
    for (int32_t i = 0; i < lp->n_top && i < n_top; i++) {
        cJSON *t = cJSON_CreateObject();
        s = token_str(v, lp->top_id[i], raw, &rl);
        cJSON_AddStringToObject(t, "token", s ? s : "");
        free(s);
        cJSON_AddItemToObject(t, "logprob", lp_number(lp->top_logprob[i]));
        cJSON *tb = cJSON_AddArrayToObject(t, "bytes");
        for (size_t k = 0; k < rl; k++)
            cJSON_AddItemToArray(tb, cJSON_CreateNumber((unsigned char)raw[k]));
        cJSON_AddItemToArray(top, t);
    }
    return e;
}

/* Completions layout: appends to {tokens, token_logprobs, top_logprobs, text_offset}. */
static void compl_lp_add(const struct vocab *v, cJSON *lpo, int32_t tok, const struct sample_logprobs *lp,
                         int32_t n_top, size_t *offset)
{
    char raw[256];
    size_t rl;
    char *s = token_str(v, tok, raw, &rl);
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lpo, "tokens"), cJSON_CreateString(s ? s : ""));
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lpo, "token_logprobs"), lp_number(lp->logprob));
    cJSON *top = cJSON_CreateObject();
    for (int32_t i = 0; i < lp->n_top && i < n_top; i++) {
        char r2[256];
        size_t l2;
        char *t = token_str(v, lp->top_id[i], r2, &l2);
        if (t && !cJSON_GetObjectItemCaseSensitive(top, t))
            cJSON_AddItemToObject(top, t, lp_number(lp->top_logprob[i]));
        free(t);
    }
    if (s && !cJSON_GetObjectItemCaseSensitive(top, s))
        cJSON_AddItemToObject(top, s, lp_number(lp->logprob));
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lpo, "top_logprobs"), top);
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lpo, "text_offset"), cJSON_CreateNumber((double)*offset));
    *offset += s ? strlen(s) : 0;
    free(s);
}

static cJSON *compl_lp_new(void)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddArrayToObject(o, "tokens");
    cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON_AddArrayToObject(o, "text_offset");
    return o;
}

/* ---- response JSON ---- */

static const char *finish_name(enum eng_finish f)
{
    switch (f) {
    case ENG_FINISH_STOP: return "stop";
    case ENG_FINISH_LENGTH:
    case ENG_FINISH_CANCELED: return "length";
    default: return NULL;
    }
}

static cJSON *resp_head(const struct srv_gen *g, const char *object)
{
    const struct srv *s = g->q->s;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", g->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)g->created);
    cJSON_AddStringToObject(o, "model", s->model_id);
    cJSON_AddStringToObject(o, "system_fingerprint", s->fingerprint);
    return o;
}

static cJSON *usage_json(const struct srv_gen *g)
{
    int64_t prompt = 0, cached = 0, completion = 0;
    for (int32_t p = 0; p < g->n_prompts; p++) {
        const struct srv_choice *c0 = &g->ch[(size_t)p * g->n];
        prompt += (int64_t)g->ptok[p].n;
        cached += c0->usage.cached_tokens;
    }
    for (int32_t i = 0; i < g->n_choices; i++)
        completion += g->ch[i].n_tokens;
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt + completion));
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", (double)cached);
    return u;
}

static cJSON *chunk_new(const struct srv_gen *g, const struct srv_choice *c, cJSON **choice)
{
    cJSON *o = resp_head(g, g->chat ? "chat.completion.chunk" : "text_completion");
    cJSON *arr = cJSON_AddArrayToObject(o, "choices");
    *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(*choice, "index", c->index);
    cJSON_AddItemToArray(arr, *choice);
    return o;
}

static void chunk_finish(const struct srv_gen *g, cJSON *o, cJSON *choice, const char *finish)
{
    if (!cJSON_GetObjectItemCaseSensitive(choice, "logprobs"))
        cJSON_AddNullToObject(choice, "logprobs");
    if (finish)
        cJSON_AddStringToObject(choice, "finish_reason", finish);
    else
        cJSON_AddNullToObject(choice, "finish_reason");
    if (g->include_usage)
        cJSON_AddNullToObject(o, "usage");
}

static void stream_role(struct srv_gen *g, struct srv_choice *c)
{
    if (!g->chat)
        return;
    cJSON *choice, *o = chunk_new(g, c, &choice);
    cJSON *d = cJSON_AddObjectToObject(choice, "delta");
    cJSON_AddStringToObject(d, "role", "assistant");
    cJSON_AddStringToObject(d, "content", "");
    chunk_finish(g, o, choice, NULL);
    srv_sse_send(g->q, o);
}

static void stream_begin(struct srv_gen *g)
{
    if (g->started)
        return;
    g->started = true;
    srv_sse_start(g->q);
    for (int32_t i = 0; i < g->n_choices; i++)
        stream_role(g, &g->ch[i]);
}

static void stream_delta(struct srv_gen *g, struct srv_choice *c, const struct eng_event *ev, bool want_lp)
{
    const struct vocab *v = g->q->s->vocab;
    cJSON *choice, *o = chunk_new(g, c, &choice);
    if (g->chat) {
        cJSON *d = cJSON_AddObjectToObject(choice, "delta");
        if (ev->text_len)
            cJSON_AddStringToObject(d, "content", ev->text);
        if (ev->reasoning_len)
            cJSON_AddStringToObject(d, "reasoning_content", ev->reasoning);
        if (want_lp) {
            cJSON *lp = cJSON_AddObjectToObject(choice, "logprobs");
            cJSON *content = cJSON_AddArrayToObject(lp, "content");
            cJSON_AddItemToArray(content, chat_lp_entry(v, ev->token, &ev->lp, g->top_logprobs));
            cJSON_AddNullToObject(lp, "refusal");
        }
    } else {
        cJSON_AddStringToObject(choice, "text", ev->text_len ? ev->text : "");
        if (want_lp) {
            cJSON *lp = compl_lp_new();
            compl_lp_add(v, lp, ev->token, &ev->lp, g->top_logprobs, &c->text_offset);
            cJSON_AddItemToObject(choice, "logprobs", lp);
        }
    }
    chunk_finish(g, o, choice, NULL);
    srv_sse_send(g->q, o);
}

static void stream_finish(struct srv_gen *g, struct srv_choice *c)
{
    cJSON *choice, *o = chunk_new(g, c, &choice);
    if (g->chat)
        cJSON_AddObjectToObject(choice, "delta");
    else
        cJSON_AddStringToObject(choice, "text", "");
    chunk_finish(g, o, choice, finish_name(c->finish));
    srv_sse_send(g->q, o);
    c->finish_sent = true;
}

static cJSON *full_response(struct srv_gen *g)
{
    cJSON *o = resp_head(g, g->chat ? "chat.completion" : "text_completion");
    cJSON *arr = cJSON_AddArrayToObject(o, "choices");
    for (int32_t i = 0; i < g->n_choices; i++) {
        struct srv_choice *c = &g->ch[i];
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddNumberToObject(ch, "index", c->index);
        if (g->chat) {
            cJSON *m = cJSON_AddObjectToObject(ch, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddStringToObject(m, "content", c->text ? c->text : "");
            if (c->reasoning_len)
                cJSON_AddStringToObject(m, "reasoning_content", c->reasoning);
            cJSON_AddNullToObject(m, "refusal");
        } else {
            cJSON_AddStringToObject(ch, "text", c->text ? c->text : "");
        }
        if (c->lp) {
            cJSON *lp = c->lp;
            c->lp = NULL;
            if (g->chat) {
                cJSON *w = cJSON_CreateObject();
                cJSON_AddItemToObject(w, "content", lp);
                cJSON_AddNullToObject(w, "refusal");
                lp = w;
            }
            cJSON_AddItemToObject(ch, "logprobs", lp);
        } else {
            cJSON_AddNullToObject(ch, "logprobs");
        }
        const char *fin = finish_name(c->finish);
        if (fin)
            cJSON_AddStringToObject(ch, "finish_reason", fin);
        else
            cJSON_AddNullToObject(ch, "finish_reason");
        cJSON_AddItemToArray(arr, ch);
    }
    cJSON_AddItemToObject(o, "usage", usage_json(g));
    return o;
}

/* ---- generation lifetime ---- */

static void active_remove(struct srv_gen *g)
{
    if (!g->active)
        return;
    struct srv *s = g->q->s;
    if (g->prev)
        g->prev->next = g->next;
    else
        s->active = g->next;
    if (g->next)
        g->next->prev = g->prev;
    g->prev = g->next = NULL;
    g->active = false;
    s->n_active--;
}

static void release_all(struct srv_gen *g)
{
    for (int32_t i = 0; g->ch && i < g->n_choices; i++) {
        eng_release(g->ch[i].r);
        g->ch[i].r = NULL;
    }
    active_remove(g);
}

void srv_gen_free(struct srv_gen *g)
{
    if (!g)
        return;
    release_all(g);
    for (int32_t i = 0; g->ch && i < g->n_choices; i++) {
        free(g->ch[i].text);
        free(g->ch[i].reasoning);
        cJSON_Delete(g->ch[i].lp);
    }
    free(g->ch);
    for (int32_t p = 0; g->ptok && p < g->n_prompts; p++)
        vocab_tokens_free(&g->ptok[p]);
    free(g->ptok);
    free(g->ptext);
    free(g->bias);
    free((char *)g->rp.think_start);
    free((char *)g->rp.think_end);
    cJSON_Delete(g->root);
    free(g);
}

void srv_openai_abort(struct srv_req *q)
{
    if (q->gen)
        release_all(q->gen);
}

void srv_openai_abort_all(struct srv *s)
{
    while (s->active)
        release_all(s->active);
}

/* Everything is done (or given up): reply, then q and g may be gone. */
static void gen_complete(struct srv_gen *g)
{
    struct srv_req *q = g->q;
    struct srv *s = q->s;
    release_all(g);
    int64_t prompt = 0, cached = 0, gen = 0;
    for (int32_t p = 0; p < g->n_prompts; p++) {
        prompt += (int64_t)g->ptok[p].n;
        cached += g->ch[(size_t)p * g->n].usage.cached_tokens;
    }
    for (int32_t i = 0; i < g->n_choices; i++)
        gen += g->ch[i].n_tokens;
    srv_metrics_tokens(s->metrics, prompt, cached, gen);
    q->log_prompt_tokens = (int32_t)prompt;
    q->log_completion_tokens = (int32_t)gen;
    const struct srv_choice *bad_c = NULL;
    for (int32_t i = 0; i < g->n_choices && !bad_c; i++)
        if (g->ch[i].failed)
            bad_c = &g->ch[i];
    if (!g->stream || (bad_c && !g->started)) {
        if (bad_c) {
            srv_reply_error(q, srv_err_from_code(bad_c->err) == SRV_ERR_INVALID ? SRV_ERR_INTERNAL
                                                                                 : srv_err_from_code(bad_c->err),
                            NULL, "generation failed: %s", bad_c->errmsg);
            return;
        }
        srv_reply_json(q, 200, full_response(g));
        return;
    }
    stream_begin(g);
    if (bad_c) {
        char msg[300];
        snprintf(msg, sizeof msg, "generation failed: %s", bad_c->errmsg);
        srv_sse_send(q, srv_error_json(SRV_ERR_INTERNAL, NULL, msg));
    } else {
        for (int32_t i = 0; i < g->n_choices; i++)
            if (!g->ch[i].finish_sent)
                stream_finish(g, &g->ch[i]);
        if (g->include_usage) {
            cJSON *o = resp_head(g, g->chat ? "chat.completion.chunk" : "text_completion");
            cJSON_AddArrayToObject(o, "choices");
            cJSON_AddItemToObject(o, "usage", usage_json(g));
            srv_sse_send(q, o);
        }
    }
    srv_sse_done(q);
}

static bool buf_append(char **b, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        while (c < *len + n + 1)
            c *= 2;
        char *nb = realloc(*b, c);
        if (!nb)
            return false;
        *b = nb;
        *cap = c;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = 0;
    return true;
}

static void choice_event(struct srv_gen *g, struct srv_choice *c, struct eng_event *ev, double now)
{
    struct srv *s = g->q->s;
    switch (ev->type) {
    case ENG_EV_DELTA: {
        bool is_tok = ev->token >= 0;
        if (is_tok) {
            c->n_tokens++;
            if (c->n_tokens == 1)
                srv_metrics_ttft(s->metrics, now - g->q->t_start);
            else
                srv_metrics_itl(s->metrics, now - c->t_last);
            c->t_last = now;
        }
        /* The end-of-generation token has no text; it gets no logprobs entry. */
        bool eog = is_tok && !g->rp.ignore_eos && vocab_is_eog(s->vocab, ev->token) && !ev->text_len;
        bool want_lp = g->logprobs && ev->has_logprobs && is_tok && !eog;
        if (g->stream) {
            if (ev->text_len || ev->reasoning_len || want_lp) {
                stream_begin(g);
                stream_delta(g, c, ev, want_lp);
            }
            break;
        }
        if (ev->text_len)
            buf_append(&c->text, &c->text_len, &c->text_cap, ev->text, ev->text_len);
        if (ev->reasoning_len)
            buf_append(&c->reasoning, &c->reasoning_len, &c->reasoning_cap, ev->reasoning, ev->reasoning_len);
        if (want_lp) {
            if (!c->lp)
                c->lp = g->chat ? cJSON_CreateArray() : compl_lp_new();
            if (g->chat)
                cJSON_AddItemToArray(c->lp, chat_lp_entry(s->vocab, ev->token, &ev->lp, g->top_logprobs));
            else
                compl_lp_add(s->vocab, c->lp, ev->token, &ev->lp, g->top_logprobs, &c->text_offset);
        }
        break;
    }
    case ENG_EV_DONE:
        c->finish = ev->finish;
        c->usage = ev->usage;
        c->done = true;
        g->n_done++;
        if (g->stream && !g->timed_out) {
            stream_begin(g);
            stream_finish(g, c);
        }
        break;
    case ENG_EV_ERROR:
        c->failed = true;
        c->err = ev->err;
        snprintf(c->errmsg, sizeof c->errmsg, "%s", ev->errmsg);
        log_err("server", "request %llu: %s", (unsigned long long)g->q->id, ev->errmsg);
        c->done = true;
        g->n_done++;
        break;
    }
}

/* Returns true when g completed (and may be freed). */
static bool gen_poll(struct srv_gen *g)
{
    double now = srv_now();
    for (int32_t i = 0; i < g->n_choices; i++) {
        struct srv_choice *c = &g->ch[i];
        struct eng_event ev;
        while (!c->done && c->r && eng_poll(c->r, &ev) == 0) {
            choice_event(g, c, &ev, now);
            eng_event_clear(&ev);
        }
    }
    if (g->n_done == g->n_choices) {
        gen_complete(g);
        return true;
    }
    return false;
}

void srv_openai_poll_all(struct srv *s)
{
    for (struct srv_gen *g = s->active, *n; g; g = n) {
        n = g->next;
        gen_poll(g);
    }
}

void srv_openai_tick(struct srv *s, double now)
{
    double deadline = s->cfg->srv.request_timeout_s;
    double qdeadline = s->cfg->srv.queue_timeout_s;
    for (struct srv_gen *g = s->active, *n; g; g = n) {
        n = g->next;
        struct srv_req *q = g->q;
        bool any_token = false;
        for (int32_t i = 0; i < g->n_choices; i++)
            any_token |= g->ch[i].n_tokens > 0 || g->ch[i].done;
        if (qdeadline > 0 && !any_token && !g->started && now - g->t_submit > qdeadline) {
            release_all(g);
            srv_reply_error(q, SRV_ERR_BUSY, NULL, "the request waited more than %g s for the engine", qdeadline);
            continue;
        }
        if (deadline > 0 && now - q->t_start > deadline) {
            /* Give what was generated so far, finished as "length". */
            log_warn("server", "request %llu ran past server.request_timeout_s (%g s)", (unsigned long long)q->id,
                     deadline);
            g->timed_out = true;
            release_all(g);
            for (int32_t i = 0; i < g->n_choices; i++)
                if (!g->ch[i].done) {
                    g->ch[i].done = true;
                    g->ch[i].finish = ENG_FINISH_LENGTH;
                }
            gen_complete(g);
            continue;
        }
        /* Proxies cut streams that stay silent; a comment keeps them open. */
        if (g->stream && now - (g->started ? q->t_last_write : g->t_submit) > SRV_KEEPALIVE_S) {
            stream_begin(g);
            srv_sse_comment(q);
        }
    }
}

/* ---- the pool job: template and tokenize ---- */

int srv_render_chat(const struct srv *s, cJSON *messages, const cJSON *kwargs, bool add_generation_prompt,
                    char **out, size_t *out_len, char *err, size_t errlen)
{
    if (!s->tmpl) {
        snprintf(err, errlen, "%s", s->tmpl_error ? s->tmpl_error : "this model has no chat template");
        return ERR_TEMPLATE;
    }
    int rc = chat_messages_prepare(s->tmpl, messages, err, errlen);
    if (rc < 0)
        return rc;
    const struct vocab_special *sp = vocab_special(s->vocab);
    const char *bos = sp->bos >= 0 ? vocab_token_text(s->vocab, sp->bos) : NULL;
    const char *eos = sp->eos >= 0 ? vocab_token_text(s->vocab, sp->eos) : NULL;
    struct chat_render_args a = {.messages = messages, .tools = NULL,
                                 .add_generation_prompt = add_generation_prompt,
                                 .bos_token = bos ? bos : "", .eos_token = eos ? eos : "", .kwargs = kwargs};
    return chat_template_render(s->tmpl, &a, out, out_len, err, errlen);
}

static void job_prepare(struct srv_req *q)
{
    struct srv_gen *g = q->gen;
    const struct srv *s = q->s;
    const struct vocab *v = s->vocab;
    const struct vocab_special *sp = vocab_special(v);
    if (g->chat) {
        char *txt = NULL;
        size_t len = 0;
        int rc = srv_render_chat(s, g->messages, g->kwargs, true, &txt, &len, g->job_msg, sizeof g->job_msg);
        if (rc < 0) {
            g->job_failed = true;
            g->job_err = rc == -ENOMEM ? SRV_ERR_UNAVAILABLE : s->tmpl ? SRV_ERR_INVALID : SRV_ERR_INTERNAL;
            g->job_param = "messages";
            return;
        }
        const char *ts, *te;
        if (chat_template_thinking(s->tmpl, &ts, &te)) {
            g->rp.think_start = strdup(ts);
            g->rp.think_end = strdup(te);
            g->rp.think_open = chat_prompt_opens_thinking(s->tmpl, txt, len);
        }
        /* A template that writes the BOS itself must not get a second one. */
        const char *bos = sp->bos >= 0 ? vocab_token_text(v, sp->bos) : NULL;
        struct vocab_encode_opts o = {.add_special = true, .parse_special = true};
        if (bos && *bos && strncmp(txt, bos, strlen(bos)) == 0)
            o.add_special = false;
        rc = vocab_encode(v, txt, len, &o, &g->ptok[0]);
        free(txt);
        if (rc < 0) {
            g->job_failed = true;
            g->job_err = srv_err_from_code(rc);
            snprintf(g->job_msg, sizeof g->job_msg, "cannot tokenize the prompt: %s", err_str(rc));
        }
        return;
    }
    for (int32_t p = 0; p < g->n_prompts; p++) {
        if (!g->ptext[p])
            continue; /* token ids */
        struct vocab_encode_opts o = {.add_special = true, .parse_special = true};
        int rc = vocab_encode(v, g->ptext[p], strlen(g->ptext[p]), &o, &g->ptok[p]);
        if (rc < 0) {
            g->job_failed = true;
            g->job_err = srv_err_from_code(rc);
            g->job_param = "prompt";
            snprintf(g->job_msg, sizeof g->job_msg, "cannot tokenize prompt %d: %s", p, err_str(rc));
            return;
        }
    }
}

static void on_notify(void *ud) { uv_async_send(ud); }

static void job_prepared(struct srv_req *q)
{
    struct srv_gen *g = q->gen;
    struct srv *s = q->s;
    if (g->job_failed) {
        srv_reply_error(q, g->job_err, g->job_param, "%s", g->job_msg);
        return;
    }
    int32_t ctx = eng_ctx_size(s->engine);
    const struct vocab_special *sp = vocab_special(s->vocab);
    for (int32_t p = 0; p < g->n_prompts; p++) {
        struct vocab_tokens *t = &g->ptok[p];
        if (t->n == 0) { /* an empty prompt starts from BOS, as llama-server does */
            int32_t start = sp->bos >= 0 ? sp->bos : sp->eos;
            if (start < 0 || !t->ids) {
                if (!(t->ids = malloc(sizeof *t->ids))) {
                    srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "out of memory");
                    return;
                }
                t->cap = 1;
            }
            if (start < 0) {
                srv_reply_error(q, SRV_ERR_INVALID, g->chat ? "messages" : "prompt", "the prompt is empty");
                return;
            }
            t->ids[t->n++] = start;
        }
        const char *what = g->chat ? "messages" : "prompt";
        if ((int64_t)t->n >= ctx) {
            srv_reply_error(q, SRV_ERR_CONTEXT, what,
                            "This model's maximum context length is %d tokens. However, your %s resulted in %zu "
                            "tokens. Please reduce the length of the %s.", ctx, what, t->n, what);
            return;
        }
        if (g->max_tokens > 0 && (int64_t)t->n + g->max_tokens > ctx) {
            srv_reply_error(q, SRV_ERR_CONTEXT, g->max_tokens_name,
                            "This model's maximum context length is %d tokens. However, you requested %lld tokens "
                            "(%zu in the %s, %d in the completion). Please reduce the length of the %s or "
                            "completion.", ctx, (long long)t->n + g->max_tokens, t->n, what, g->max_tokens, what);
            return;
        }
    }
    g->n_choices = g->n_prompts * g->n;
    g->ch = calloc((size_t)g->n_choices, sizeof *g->ch);
    if (!g->ch) {
        g->n_choices = 0;
        srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    g->rp.stop = g->stop;
    g->rp.logprobs = g->logprobs;
    g->rp.sample.top_logprobs = g->logprobs ? g->top_logprobs : 0;
    int32_t cap = s->cfg->srv.max_tokens;
    g->t_submit = srv_now();
    for (int32_t p = 0; p < g->n_prompts; p++)
        for (int32_t j = 0; j < g->n; j++) {
            struct srv_choice *c = &g->ch[p * g->n + j];
            c->prompt = p;
            c->index = p * g->n + j;
            struct eng_req_params rp = g->rp;
            if (rp.sample.has_seed)
                rp.sample.seed += (uint64_t)j; /* choices of one seeded request differ, reproducibly */
            rp.max_tokens = g->max_tokens > 0 ? g->max_tokens : cap > 0 ? cap : 0;
            if (rp.max_tokens > 0 && (int64_t)g->ptok[p].n + rp.max_tokens > ctx)
                rp.max_tokens = ctx - (int32_t)g->ptok[p].n;
            int rc = eng_submit(s->engine, g->ptok[p].ids, (int32_t)g->ptok[p].n, &rp, on_notify, &s->wake, &c->r);
            if (rc < 0) {
                release_all(g);
                enum srv_err k = srv_err_from_code(rc);
                if (k == SRV_ERR_BUSY)
                    srv_reply_error(q, k, NULL, "the server is busy: %d requests are queued (server.max_queued); "
                                    "retry later", s->cfg->srv.max_queued);
                else
                    srv_reply_error(q, k, NULL, "cannot start the request: %s", err_str(rc));
                return;
            }
        }
    g->next = s->active;
    if (s->active)
        s->active->prev = g;
    s->active = g;
    g->active = true;
    s->n_active++;
    gen_poll(g);
}

/* ---- entry points ---- */

/* "cmpl-" plus 24 random letters and digits, as OpenAI's ids look. Loop
 * thread only. */
static void make_id(char *out, size_t cap, const char *prefix)
{
    static const char k_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static uint64_t state;
    if (!state) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        state = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^ 1;
    }
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);
    for (int i = 0; i < 24 && n + 1 < cap; i++) {
        state ^= state >> 12, state ^= state << 25, state ^= state >> 27; /* xorshift64* */
        out[n++] = k_chars[((state * 2685821657736338717ull) >> 33) % 62];
    }
    out[n] = 0;
}

static void gen_start(struct srv_req *q, cJSON *body, bool chat)
{
    struct srv *s = q->s;
    struct srv_gen *g = calloc(1, sizeof *g);
    if (!g) {
        cJSON_Delete(body);
        srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    q->gen = g;
    g->q = q;
    g->root = body;
    g->chat = chat;
    g->n = 1;
    g->rp = eng_req_params_default();
    g->created = (int64_t)time(NULL);
    make_id(g->id, sizeof g->id, chat ? "chatcmpl-" : "cmpl-");
    struct verr e = {0};
    if (validate(g, body, &e) < 0) {
        srv_reply_error(q, e.kind, e.param, "%s", e.msg);
        return;
    }
    if (s->stub_engine) { /* srv_http_feed: validation is all there is */
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "object", "stub");
        srv_reply_json(q, 200, o);
        return;
    }
    if (chat) {
        g->n_prompts = 1;
        g->ptok = calloc(1, sizeof *g->ptok);
        g->ptext = calloc(1, sizeof *g->ptext);
        if (!g->ptok || !g->ptext) {
            srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "out of memory");
            return;
        }
        if (!s->tmpl) {
            srv_reply_error(q, SRV_ERR_INTERNAL, NULL, "chat is not available: %s",
                            s->tmpl_error ? s->tmpl_error : "the model has no chat template");
            return;
        }
    }
    if (srv_req_offload(q, job_prepare, job_prepared) < 0)
        srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "cannot queue the request");
}

void srv_openai_completions(struct srv_req *q, cJSON *body) { gen_start(q, body, false); }
void srv_openai_chat(struct srv_req *q, cJSON *body) { gen_start(q, body, true); }
