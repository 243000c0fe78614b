/* SPDX-License-Identifier: MIT */
/*
 * config.c - the configuration of `moed serve`: one table of keys (type,
 * place in struct app_config, default, range), a JSON file (`--config FILE`)
 * and the command-line flags, which override the file.
 *
 * Invariant: every key lives in k_keys once; defaults, the JSON file, flags,
 * validation and the start-up log all walk that table, so a key cannot be
 * documented, parsed or range-checked in one place and forgotten in another.
 * config.example.json documents the same keys.
 */
#include "cache/plan.h"
#include "server/serve.h"

#include "common/err.h"
#include "common/log.h"
#include "kernels/quant.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum cfg_type { CT_INT, CT_I64, CT_F64, CT_BOOL, CT_STR, CT_STRLIST, CT_ENUM, CT_SIZE };

struct cfg_key {
    const char *key;
    enum cfg_type type;
    size_t off;            /* in struct app_config */
    const char *def;       /* default as text; NULL: unset (strings) */
    double min, max;       /* numbers */
    const char *choices;   /* CT_ENUM: "a|b|c" */
};

#define OFF(f) offsetof(struct app_config, f)
static const struct cfg_key k_keys[] = {
    {"server.host", CT_STR, OFF(srv.host), "127.0.0.1", 0, 0, NULL},
    {"server.port", CT_INT, OFF(srv.port), "8080", 0, 65535, NULL},
    {"server.api_keys", CT_STRLIST, OFF(srv.api_keys), NULL, 0, 0, NULL},
    {"server.open_health", CT_BOOL, OFF(srv.open_health), "true", 0, 0, NULL},
    {"server.open_metrics", CT_BOOL, OFF(srv.open_metrics), "false", 0, 0, NULL},
    {"server.max_body_bytes", CT_I64, OFF(srv.max_body_bytes), "16777216", 1024, 4294967296.0, NULL},
    {"server.max_header_bytes", CT_INT, OFF(srv.max_header_bytes), "16384", 512, 1048576, NULL},
    {"server.max_connections", CT_INT, OFF(srv.max_connections), "1024", 1, 1000000, NULL},
    {"server.max_queued", CT_INT, OFF(srv.max_queued), "64", 1, 1000000, NULL},
    {"server.max_tokens", CT_INT, OFF(srv.max_tokens), "0", 0, 16777216, NULL},
    {"server.max_json_depth", CT_INT, OFF(srv.max_json_depth), "64", 2, 1000, NULL},
    {"server.request_timeout_s", CT_F64, OFF(srv.request_timeout_s), "600", 0, 1e7, NULL},
    {"server.queue_timeout_s", CT_F64, OFF(srv.queue_timeout_s), "0", 0, 1e7, NULL},
    {"server.idle_timeout_s", CT_F64, OFF(srv.idle_timeout_s), "60", 0.1, 1e7, NULL},
    {"server.drain_timeout_s", CT_F64, OFF(srv.drain_timeout_s), "30", 0, 1e7, NULL},
    {"model.path", CT_STR, OFF(srv.model_path), NULL, 0, 0, NULL},
    {"model.alias", CT_STR, OFF(srv.model_alias), NULL, 0, 0, NULL},
    {"model.chat_template", CT_STR, OFF(srv.chat_template), NULL, 0, 0, NULL},
    {"engine.threads", CT_INT, OFF(eng.n_threads), "0", 0, 4096, NULL},
    {"engine.ctx_size", CT_INT, OFF(eng.ctx_size), "0", 0, 16777216, NULL},
    {"engine.kv_tokens", CT_INT, OFF(eng.kv_tokens), "0", 0, 1073741824, NULL},
    {"engine.kv_type", CT_ENUM, OFF(eng_kv_type), "f16", 0, 0, "f32|f16|q8_0"},
    {"engine.parallel", CT_INT, OFF(eng.parallel), "4", 1, 4096, NULL},
    {"engine.batch_tokens", CT_INT, OFF(eng.batch_tokens), "512", 1, 1048576, NULL},
    {"engine.step_seqs", CT_INT, OFF(eng.step_seqs), "0", 0, 4096, NULL},
    {"engine.prefix_cache", CT_BOOL, OFF(eng.prefix_cache), "true", 0, 0, NULL},
    {"engine.prepack", CT_BOOL, OFF(eng.prepack), "true", 0, 0, NULL},
    {"cache.device", CT_SIZE, OFF(cache.device), "auto", 0, 0, NULL},
    {"cache.host", CT_SIZE, OFF(cache.host), "auto", 0, 0, NULL},
    {"cache.cpu_compute", CT_ENUM, OFF(cache.cpu_compute), "auto", 0, 0, "auto|never|always"},
    {"cache.io", CT_ENUM, OFF(cache.io), "io_uring", 0, 0, "io_uring|pread"},
    {"predictor.mode", CT_ENUM, OFF(pred.mode), "none", 0, 0, "none|pregate|path|combined"},
    {"predictor.lookahead", CT_INT, OFF(pred.lookahead), "2", 1, 8, NULL},
    {"predictor.prefetch_depth", CT_INT, OFF(pred.prefetch_depth), "1", 1, 8, NULL},
    {"predictor.k", CT_INT, OFF(pred.k), "0", 0, 1024, NULL},
    {"predictor.prefetch_budget", CT_F64, OFF(pred.prefetch_budget), "0.25", 0, 1, NULL},
    {"predictor.trace", CT_STR, OFF(pred.trace), NULL, 0, 0, NULL},
    {"predictor.pregate_at", CT_ENUM, OFF(pred.pregate_at), "attention", 0, 0, "attention|input"},
    {"scheduler.policy", CT_ENUM, OFF(sched.policy), "fcfs", 0, 0, "fcfs|regroup"},
    {"scheduler.max_skip", CT_INT, OFF(sched.max_skip), "4", 0, 1000000, NULL},
    {"log.level", CT_ENUM, OFF(srv.log_level), "info", 0, 0, "error|warn|info|debug"},
    {"log.file", CT_STR, OFF(srv.log_file), NULL, 0, 0, NULL},
};
#undef OFF
#define N_KEYS (sizeof k_keys / sizeof k_keys[0])

/* Flags: name (without dashes; "" for none), short form, key, what it does. */
enum flag_kind { FL_ARG, FL_TRUE, FL_FALSE, FL_APPEND, FL_DEBUG, FL_CONFIG, FL_HELP };
struct cfg_flag {
    const char *lng, *shrt;
    const char *key;
    enum flag_kind kind;
    const char *help;
};
static const struct cfg_flag k_flags[] = {
    {"config", NULL, NULL, FL_CONFIG, "FILE   JSON configuration (flags override it)"},
    {"host", NULL, "server.host", FL_ARG, "ADDR     listen address (127.0.0.1)"},
    {"port", NULL, "server.port", FL_ARG, "PORT     listen port (8080; 0 = any free port)"},
    {"api-key", NULL, "server.api_keys", FL_APPEND, "KEY   accept this bearer key (repeatable)"},
    {"model", "m", "model.path", FL_ARG, "FILE    the GGUF model (default: the demo model of `make setup`)"},
    {"alias", NULL, "model.alias", FL_ARG, "NAME    model name served at /v1/models"},
    {"chat-template", NULL, "model.chat_template", FL_ARG, "FILE  Jinja template overriding the model's"},
    {"threads", "t", "engine.threads", FL_ARG, "N     CPU threads (0 = all this process may use)"},
    {"ctx-size", "c", "engine.ctx_size", FL_ARG, "N    context per sequence (0 = the model's)"},
    {"kv-tokens", NULL, "engine.kv_tokens", FL_ARG, "N   KV pool size in tokens"},
    {"kv-type", "ctk", "engine.kv_type", FL_ARG, "T     f32, f16 or q8_0 (also -ctv)"},
    {"", "ctv", "engine.kv_type", FL_ARG, NULL},
    {"parallel", "np", "engine.parallel", FL_ARG, "N    most running sequences"},
    {"batch-size", "b", "engine.batch_tokens", FL_ARG, "N  token budget of one step"},
    {"step-seqs", NULL, "engine.step_seqs", FL_ARG, "N   most sequences in one step (0 = parallel)"},
    {"no-prefix-cache", NULL, "engine.prefix_cache", FL_FALSE, "  do not reuse KV blocks of shared prefixes"},
    {"no-prepack", NULL, "engine.prepack", FL_FALSE, "       no batch layout: experts as in the file, no copy of the dense matrices"},
    {"expert-cache", NULL, "cache.device", FL_ARG, "S  device expert cache: SIZE, PCT% or auto"},
    {"host-cache", NULL, "cache.host", FL_ARG, "S    host expert cache: SIZE, PCT% or auto"},
    {"cpu-experts", NULL, "cache.cpu_compute", FL_ARG, "M auto, never, always"},
    {"io", NULL, "cache.io", FL_ARG, "M            io_uring or pread"},
    {"predictor", NULL, "predictor.mode", FL_ARG, "M     none, pregate, path, combined"},
    {"lookahead", NULL, "predictor.lookahead", FL_ARG, "N     layers ahead predicted and scored"},
    {"prefetch-depth", NULL, "predictor.prefetch_depth", FL_ARG, "N layers ahead prefetched"},
    {"k-pred", NULL, "predictor.k", FL_ARG, "N        experts predicted per future layer (0 = top-k)"},
    {"prefetch-budget", NULL, "predictor.prefetch_budget", FL_ARG, "F share of the expert cache one step may prefetch"},
    {"trace-routing", NULL, "predictor.trace", FL_ARG, "FILE record every token's routing and pre-gating"},
    {"pregate-at", NULL, "predictor.pregate_at", FL_ARG, "W  pre-gate after a layer's attention or on its input"},
    {"sched", NULL, "scheduler.policy", FL_ARG, "P         fcfs or regroup"},
    {"max-skip", NULL, "scheduler.max_skip", FL_ARG, "N      steps a runnable sequence may be passed over"},
    {"log-level", NULL, "log.level", FL_ARG, "L     error, warn, info, debug"},
    {"log-file", NULL, "log.file", FL_ARG, "FILE   append the log to FILE (reopened on SIGHUP)"},
    {"verbose", "v", NULL, FL_DEBUG, "        log.level debug"},
    {"help", "h", NULL, FL_HELP, "           this text"},
};
#define N_FLAGS (sizeof k_flags / sizeof k_flags[0])

static const struct cfg_key *key_find(const char *key)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(k_keys[i].key, key) == 0)
            return &k_keys[i];
    return NULL;
}

static void *slot(struct app_config *c, const struct cfg_key *k) { return (char *)c + k->off; }

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return ERR_CONFIG;
}

static bool choice_ok(const char *choices, const char *s)
{
    size_t n = strlen(s);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == n && strncmp(p, s, n) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

/* SIZE: digits with an optional K/M/G/T suffix (optionally followed by
 * B/iB), a percentage "25%", or "auto". */
static bool size_ok(const char *s)
{
    struct plan_budget b;
    char e[160];
    return plan_parse_budget(s, &b, e, sizeof e) == 0;
}

static int set_str(char **dst, const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        return -ENOMEM;
    free(*dst);
    *dst = d;
    return 0;
}

static int list_append(struct app_config *c, const char *s)
{
    char **l = realloc(c->srv.api_keys, (size_t)(c->srv.n_api_keys + 2) * sizeof *l);
    if (!l)
        return -ENOMEM;
    c->srv.api_keys = l;
    if (!(l[c->srv.n_api_keys] = strdup(s)))
        return -ENOMEM;
    l[++c->srv.n_api_keys] = NULL;
    return 0;
}

static void list_clear(struct app_config *c)
{
    for (int32_t i = 0; i < c->srv.n_api_keys; i++)
        free(c->srv.api_keys[i]);
    free(c->srv.api_keys);
    c->srv.api_keys = NULL;
    c->srv.n_api_keys = 0;
}

/* Sets key k from its text form (defaults and flags). from: where the text
 * came from, for messages. */
static int set_text(struct app_config *c, const struct cfg_key *k, const char *v, const char *from, char *err,
                    size_t errlen)
{
    void *p = slot(c, k);
    char *end;
    switch (k->type) {
    case CT_INT:
    case CT_I64:
    case CT_F64: {
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x))
            return fail(err, errlen, "%s%s: '%s' is not a number", from, k->key, v);
        if (k->type != CT_F64 && x != floor(x))
            return fail(err, errlen, "%s%s: '%s' is not an integer", from, k->key, v);
        if (x < k->min || x > k->max)
            return fail(err, errlen, "%s%s: %s is out of range [%g, %g]", from, k->key, v, k->min, k->max);
        if (k->type == CT_INT)
            *(int32_t *)p = (int32_t)x;
        else if (k->type == CT_I64)
            *(int64_t *)p = (int64_t)x;
        else
            *(double *)p = x;
        return 0;
    }
    case CT_BOOL:
        if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
            *(bool *)p = true;
        else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
            *(bool *)p = false;
        else
            return fail(err, errlen, "%s%s: '%s' is not true or false", from, k->key, v);
        return 0;
    case CT_ENUM:
        if (!choice_ok(k->choices, v))
            return fail(err, errlen, "%s%s: '%s' is not one of %s", from, k->key, v, k->choices);
        return set_str(p, v);
    case CT_SIZE:
        if (!size_ok(v))
            return fail(err, errlen, "%s%s: '%s' is not a SIZE (K/M/G), a PCT%% or auto", from, k->key, v);
        return set_str(p, v);
    case CT_STR:
        return set_str(p, v);
    case CT_STRLIST:
        if (!*v)
            return fail(err, errlen, "%s%s: empty key", from, k->key);
        return list_append(c, v);
    }
    return 0;
}

static int set_json(struct app_config *c, const struct cfg_key *k, const cJSON *it, const char *from, char *err,
                    size_t errlen)
{
    char buf[64];
    switch (k->type) {
    case CT_INT:
    case CT_I64:
    case CT_F64:
        if (!cJSON_IsNumber(it))
            return fail(err, errlen, "%s%s: expected a number", from, k->key);
        snprintf(buf, sizeof buf, "%.17g", it->valuedouble);
        return set_text(c, k, buf, from, err, errlen);
    case CT_BOOL:
        if (!cJSON_IsBool(it))
            return fail(err, errlen, "%s%s: expected true or false", from, k->key);
        *(bool *)slot(c, k) = cJSON_IsTrue(it);
        return 0;
    case CT_STR:
        if (cJSON_IsNull(it))
            return set_str(slot(c, k), NULL);
        /* fall through */
    case CT_ENUM:
        if (!cJSON_IsString(it))
            return fail(err, errlen, "%s%s: expected a string", from, k->key);
        return set_text(c, k, it->valuestring, from, err, errlen);
    case CT_SIZE:
        if (cJSON_IsNumber(it)) {
            snprintf(buf, sizeof buf, "%.0f", it->valuedouble);
            return set_text(c, k, buf, from, err, errlen);
        }
        if (!cJSON_IsString(it))
            return fail(err, errlen, "%s%s: expected a SIZE string or a number of bytes", from, k->key);
        return set_text(c, k, it->valuestring, from, err, errlen);
    case CT_STRLIST: {
        list_clear(c);
        if (cJSON_IsString(it))
            return set_text(c, k, it->valuestring, from, err, errlen);
        if (!cJSON_IsArray(it))
            return fail(err, errlen, "%s%s: expected an array of strings", from, k->key);
        const cJSON *e;
        cJSON_ArrayForEach(e, it)
        {
            if (!cJSON_IsString(e))
                return fail(err, errlen, "%s%s: expected an array of strings", from, k->key);
            int rc = set_text(c, k, e->valuestring, from, err, errlen);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    }
    return 0;
}

static int load_file(struct app_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, errlen, "--config %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            return -ENOMEM;
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *nb = realloc(buf, cap * 2);
        if (!nb)
            free(buf);
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, n, &end, false);
    if (!root || !cJSON_IsObject(root)) {
        size_t at = end ? (size_t)(end - buf) : 0;
        free(buf);
        cJSON_Delete(root);
        return fail(err, errlen, "%s: not a JSON object (error near byte %zu)", path, at);
    }
    free(buf);
    char from[600];
    snprintf(from, sizeof from, "%s: ", path);
    int rc = 0;
    const cJSON *sec;
    cJSON_ArrayForEach(sec, root)
    {
        if (sec->string[0] == '#')
            continue; /* comment */
        if (!cJSON_IsObject(sec)) {
            rc = fail(err, errlen, "%sunknown key '%s' (expected a section: server, model, engine, cache, "
                      "predictor, scheduler, log)", from, sec->string);
            break;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, sec)
        {
            if (it->string[0] == '#')
                continue;
            char key[256];
            snprintf(key, sizeof key, "%s.%s", sec->string, it->string);
            const struct cfg_key *k = key_find(key);
            if (!k) {
                rc = fail(err, errlen, "%sunknown key '%s'", from, key);
                break;
            }
            if ((rc = set_json(c, k, it, from, err, errlen)) < 0)
                break;
        }
        if (rc < 0)
            break;
    }
    cJSON_Delete(root);
    return rc;
}

void srv_config_free(struct app_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct cfg_key *k = &k_keys[i];
        if (k->type == CT_STR || k->type == CT_ENUM || k->type == CT_SIZE) {
            char **p = slot(c, k);
            free(*p);
            *p = NULL;
        }
    }
    list_clear(c);
}

void srv_config_usage(FILE *f)
{
    fprintf(f, "usage: moed serve [-m MODEL] [--config FILE] [options]\n"
               "serves the model over an OpenAI-style HTTP API; flags override the config file\n");
    for (size_t i = 0; i < N_FLAGS; i++) {
        const struct cfg_flag *fl = &k_flags[i];
        if (!fl->help)
            continue;
        char names[64];
        if (fl->shrt)
            snprintf(names, sizeof names, "-%s, --%s", fl->shrt, fl->lng);
        else
            snprintf(names, sizeof names, "    --%s", fl->lng);
        if (fl->key)
            fprintf(f, "  %s %s  [%s]\n", names, fl->help, fl->key);
        else
            fprintf(f, "  %s %s\n", names, fl->help);
    }
}

static const struct cfg_flag *flag_find(const char *arg, const char **inline_val)
{
    *inline_val = NULL;
    const char *name;
    bool lng = arg[1] == '-';
    name = arg + (lng ? 2 : 1);
    size_t nl = strlen(name);
    const char *eq = strchr(name, '=');
    if (lng && eq) {
        nl = (size_t)(eq - name);
        *inline_val = eq + 1;
    }
    for (size_t i = 0; i < N_FLAGS; i++) {
        const struct cfg_flag *fl = &k_flags[i];
        /* Long names take one or two dashes; short ones one (llama.cpp's
         * -ctk/-np take one). */
        if (fl->lng[0] && strlen(fl->lng) == nl && strncmp(fl->lng, name, nl) == 0)
            return fl;
        if (!lng && fl->shrt && strcmp(fl->shrt, name) == 0)
            return fl;
    }
    return NULL;
}

int srv_config_load(struct app_config *c, int argc, char **argv, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->eng = eng_params_default();
    int rc;
    for (size_t i = 0; i < N_KEYS; i++)
        if (k_keys[i].def && (rc = set_text(c, &k_keys[i], k_keys[i].def, "default ", err, errlen)) < 0)
            return rc;
    /* The config file first, so that flags override it wherever they are. */
    for (int i = 1; i < argc; i++) {
        const char *v;
        const struct cfg_flag *fl = argv[i][0] == '-' ? flag_find(argv[i], &v) : NULL;
        if (fl && fl->kind == FL_CONFIG) {
            if (!v && i + 1 >= argc)
                return fail(err, errlen, "--config needs a FILE");
            if ((rc = load_file(c, v ? v : argv[++i], err, errlen)) < 0)
                return rc;
        } else if (fl && fl->kind == FL_HELP) {
            srv_config_usage(stdout);
            return 1;
        }
    }
    bool keys_from_flags = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (a[0] != '-' || !a[1])
            return fail(err, errlen, "unexpected argument '%s' (see moed serve --help)", a);
        const struct cfg_flag *fl = flag_find(a, &v);
        if (!fl)
            return fail(err, errlen, "unknown option '%s' (see moed serve --help)", a);
        if (fl->kind == FL_ARG || fl->kind == FL_APPEND || fl->kind == FL_CONFIG) {
            if (!v) {
                if (i + 1 >= argc)
                    return fail(err, errlen, "%s needs a value", a);
                v = argv[++i];
            }
        } else if (v) {
            return fail(err, errlen, "%s takes no value", a);
        }
        const struct cfg_key *k = fl->key ? key_find(fl->key) : NULL;
        char from[128];
        snprintf(from, sizeof from, "%s: ", a);
        switch (fl->kind) {
        case FL_CONFIG:
        case FL_HELP: break;
        case FL_APPEND:
            if (!keys_from_flags)
                list_clear(c); /* flags replace the file's keys */
            keys_from_flags = true;
            /* fall through */
        case FL_ARG:
            if ((rc = set_text(c, k, v, from, err, errlen)) < 0)
                return rc;
            break;
        case FL_TRUE: *(bool *)slot(c, k) = true; break;
        case FL_FALSE: *(bool *)slot(c, k) = false; break;
        case FL_DEBUG:
            if ((rc = set_str(&c->srv.log_level, "debug")) < 0)
                return rc;
            break;
        }
    }
    const char *kv = c->eng_kv_type;
    c->eng.kv_type = strcmp(kv, "f32") == 0 ? BE_TYPE_F32 : strcmp(kv, "q8_0") == 0 ? BE_TYPE_Q8_0 : BE_TYPE_F16;
    c->eng.max_queued = c->srv.max_queued;
    c->eng.expert_cache = c->cache.device;
    c->eng.host_cache = c->cache.host;
    c->eng.io = strcmp(c->cache.io, "pread") == 0 ? XS_IO_PREAD : XS_IO_URING;
    c->eng.predictor = c->pred.mode;
    c->eng.lookahead = c->pred.lookahead;
    c->eng.prefetch_depth = c->pred.prefetch_depth;
    c->eng.k_pred = c->pred.k;
    c->eng.prefetch_budget = c->pred.prefetch_budget;
    c->eng.trace_routing = c->pred.trace;
    c->eng.pregate_input = strcmp(c->pred.pregate_at, "input") == 0;
    c->eng.sched = strcmp(c->sched.policy, "regroup") == 0 ? ENG_SCHED_REGROUP : ENG_SCHED_FCFS;
    c->eng.max_skip = c->sched.max_skip;
    if (c->eng.batch_tokens < c->eng.parallel)
        return fail(err, errlen, "engine.batch_tokens (%d) must be at least engine.parallel (%d)",
                    c->eng.batch_tokens, c->eng.parallel);
    return 0;
}

void srv_config_log(const struct app_config *c)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct cfg_key *k = &k_keys[i];
        const void *p = (const char *)c + k->off;
        switch (k->type) {
        case CT_INT: log_info("config", "%s = %d", k->key, *(const int32_t *)p); break;
        case CT_I64: log_info("config", "%s = %lld", k->key, (long long)*(const int64_t *)p); break;
        case CT_F64: log_info("config", "%s = %g", k->key, *(const double *)p); break;
        case CT_BOOL: log_info("config", "%s = %s", k->key, *(const bool *)p ? "true" : "false"); break;
        case CT_STR:
        case CT_ENUM:
        case CT_SIZE: {
            const char *s = *(char *const *)p;
            log_info("config", "%s = %s", k->key, s ? s : "(unset)");
            break;
        }
        case CT_STRLIST: log_info("config", "%s = %d key(s)", k->key, c->srv.n_api_keys); break;
        }
    }
}
