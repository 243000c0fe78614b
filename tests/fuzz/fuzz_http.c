/* SPDX-License-Identifier: MIT */
/*
 * fuzz_http.c - libFuzzer harness for the HTTP request path of `moed serve`:
 * llhttp with the server's callbacks and limits (server/http.c), routing,
 * authentication, the UTF-8, depth and JSON checks (server/routes.c) and the
 * validation of every OpenAI request field (server/openai.c), with no socket
 * and no engine (srv_http_feed with srv.stub_engine).
 *
 * Input: one flag byte, then the bytes a client sends on one connection.
 * Flag bit 0 turns on an API key ("sk-fuzz"); bits 1-2 choose how the bytes
 * arrive (all at once, or in pieces of 1, 7 or 64 bytes) so that fields split
 * across reads are exercised. Limits are small (1 KiB of headers, 4 KiB of
 * body) so the fuzzer reaches them.
 *
 * Checked besides the sanitizers: the server writes back a well-formed
 * sequence of HTTP/1.1 responses (parsed again with llhttp), and every error
 * reply (status >= 400) has OpenAI's error object. A violation aborts.
 * FUZZ_HTTP_PRINT=1 prints the server's reply to each input.
 */
#include "server/serve.h"

#include "common/log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                   \
    do {                                                                           \
        if (!(x)) {                                                                \
            fprintf(stderr, "fuzz_http: %s:%d: check failed: %s\n", __FILE__,      \
                    __LINE__, #x);                                                 \
            abort();                                                               \
        }                                                                          \
    } while (0)

static struct app_config g_cfg[2]; /* [0] open, [1] with an API key */
static struct srv g_srv[2];

static void setup(void)
{
    static char *argv_open[] = {"fuzz", NULL};
    static char *argv_auth[] = {"fuzz", "--api-key", "sk-fuzz", NULL};
    char err[256];
    log_set_level(LOG_LEVEL_ERROR);
    for (int i = 0; i < 2; i++) {
        CHECK(srv_config_load(&g_cfg[i], i ? 3 : 1, i ? argv_auth : argv_open, err, sizeof err) == 0);
        g_cfg[i].srv.max_header_bytes = 1024;
        g_cfg[i].srv.max_body_bytes = 4096;
        g_cfg[i].srv.max_json_depth = 16;
        struct srv *s = &g_srv[i];
        s->cfg = &g_cfg[i];
        s->log_fd = 2;
        s->model_id = "fuzz-model";
        snprintf(s->fingerprint, sizeof s->fingerprint, "fp_fuzz");
        s->stub_engine = true;
        s->stub_ctx = 256;
        s->stub_n_vocab = 1000;
        s->t_load_start = srv_now();
        CHECK(srv_metrics_init(&s->metrics) == 0);
    }
}

/* ---- checking what the server wrote ---- */

struct resp_check {
    int status;
    char body[8192];
    size_t body_len;
    bool body_cut;
    int n;
};

static int on_resp_body(llhttp_t *p, const char *at, size_t len)
{
    struct resp_check *r = p->data;
    size_t take = len < sizeof r->body - 1 - r->body_len ? len : sizeof r->body - 1 - r->body_len;
    memcpy(r->body + r->body_len, at, take);
    r->body_len += take;
    r->body_cut |= take < len;
    return 0;
}

static int on_resp_headers(llhttp_t *p)
{
    struct resp_check *r = p->data;
    r->status = p->status_code;
    r->body_len = 0;
    r->body_cut = false;
    return 0;
}

static int on_resp_complete(llhttp_t *p)
{
    struct resp_check *r = p->data;
    r->n++;
    if (r->status >= 400 && !r->body_cut) {
        r->body[r->body_len] = 0;
        cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
        CHECK(j);
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        CHECK(cJSON_IsObject(e));
        CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")));
        CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "type")));
        CHECK(cJSON_GetObjectItemCaseSensitive(e, "param"));
        CHECK(cJSON_GetObjectItemCaseSensitive(e, "code"));
        cJSON_Delete(j);
    }
    return 0;
}

static void check_responses(const char *out, size_t len, bool had_head)
{
    if (len == 0)
        return;
    CHECK(len >= 9 && memcmp(out, "HTTP/1.", 7) == 0);
    if (had_head) /* a HEAD reply announces a body it does not send */
        return;
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_headers_complete = on_resp_headers;
    st.on_body = on_resp_body;
    st.on_message_complete = on_resp_complete;
    llhttp_t p;
    llhttp_init(&p, HTTP_RESPONSE, &st);
    struct resp_check *r = calloc(1, sizeof *r);
    CHECK(r);
    p.data = r;
    llhttp_errno_t e = llhttp_execute(&p, out, len);
    if (e != HPE_OK) {
        fprintf(stderr, "fuzz_http: the reply does not parse: %s (%s)\n%.*s\n", llhttp_errno_name(e),
                llhttp_get_error_reason(&p), (int)(len < 2000 ? len : 2000), out);
        abort();
    }
    /* A reply without a length ends with the connection. */
    if (llhttp_message_needs_eof(&p))
        llhttp_finish(&p);
    CHECK(r->n >= 1);
    free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        setup();
        init = true;
    }
    if (size < 1)
        return 0;
    static const size_t k_pieces[4] = {0, 1, 7, 64};
    uint8_t flags = data[0];
    struct srv *s = &g_srv[flags & 1];
    size_t piece = k_pieces[(flags >> 1) & 3];
    const char *req = (const char *)data + 1;
    size_t n = size - 1;
    char *out = NULL;
    size_t out_len = 0;
    CHECK(srv_http_feed(s, req, n, piece, &out, &out_len) == 0);
    if (getenv("FUZZ_HTTP_PRINT")) /* to see what an input gets: FUZZ_HTTP_PRINT=1 fuzz_http FILE */
        fprintf(stderr, "%.*s\n", (int)out_len, out ? out : "");
    check_responses(out, out_len, memmem(req, n, "HEAD", 4) != NULL);
    free(out);
    CHECK(s->conns == NULL && s->n_conns == 0);
    return 0;
}
