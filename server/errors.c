/* SPDX-License-Identifier: MIT */
/*
 * errors.c - HTTP error replies in OpenAI's shape, and the one table that
 * maps error kinds (and the engine's codes) onto statuses.
 *
 * Every error a client sees goes through srv_reply_error(), so the body is
 * always {"error":{"message","type","param","code"}} and the status always
 * comes from k_errors below.
 */
#include "server/serve.h"

#include "common/err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct srv_error_row {
    int status;
    const char *type;
    const char *code;   /* NULL: JSON null */
    const char *extra;  /* extra header lines */
};

static const struct srv_error_row k_errors[SRV_ERR_COUNT] = {
    [SRV_ERR_INVALID] = {400, "invalid_request_error", NULL, NULL},
    [SRV_ERR_CONTEXT] = {400, "invalid_request_error", "context_length_exceeded", NULL},
    [SRV_ERR_AUTH] = {401, "invalid_request_error", "invalid_api_key", "WWW-Authenticate: Bearer\r\n"},
    [SRV_ERR_NOT_FOUND] = {404, "invalid_request_error", "not_found", NULL},
    [SRV_ERR_MODEL_NOT_FOUND] = {404, "invalid_request_error", "model_not_found", NULL},
    [SRV_ERR_METHOD] = {405, "invalid_request_error", "method_not_allowed", NULL},
    [SRV_ERR_TIMEOUT] = {408, "invalid_request_error", "request_timeout", NULL},
    [SRV_ERR_TOO_LARGE] = {413, "invalid_request_error", "request_too_large", NULL},
    [SRV_ERR_HEADERS] = {431, "invalid_request_error", "headers_too_large", NULL},
    [SRV_ERR_BUSY] = {429, "server_busy", "queue_full", "Retry-After: 1\r\n"},
    [SRV_ERR_INTERNAL] = {500, "server_error", NULL, NULL},
    [SRV_ERR_UNAVAILABLE] = {503, "unavailable_error", NULL, "Retry-After: 1\r\n"},
    [SRV_ERR_DEADLINE] = {504, "timeout_error", "request_timeout", NULL},
};

int srv_err_status(enum srv_err kind) { return k_errors[kind].status; }

enum srv_err srv_err_from_code(int code)
{
    switch (code) {
    case ERR_BUSY: return SRV_ERR_BUSY;
    case ERR_CTX_FULL: return SRV_ERR_CONTEXT;
    case ERR_INVALID:
    case -EINVAL:
    case ERR_TEMPLATE:
    case ERR_TOKENIZER: return SRV_ERR_INVALID;
    case ERR_CANCELED:
    case ERR_MODEL_CHANGED:
    case -ENOMEM: return SRV_ERR_UNAVAILABLE;
    default: return SRV_ERR_INTERNAL;
    }
}

cJSON *srv_error_json(enum srv_err kind, const char *param, const char *msg)
{
    const struct srv_error_row *r = &k_errors[kind];
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", r->type);
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    if (r->code)
        cJSON_AddStringToObject(e, "code", r->code);
    else
        cJSON_AddNullToObject(e, "code");
    return root;
}

void srv_reply_error(struct srv_req *q, enum srv_err kind, const char *param, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *root = srv_error_json(kind, param, msg);
    char *body = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!body) {
        srv_reply(q, 500, "application/json", "{}", 2, NULL);
        return;
    }
    srv_reply(q, k_errors[kind].status, "application/json", body, strlen(body), k_errors[kind].extra);
    cJSON_free(body);
}
