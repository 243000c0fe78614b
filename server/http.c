/* SPDX-License-Identifier: MIT */
/*
 * http.c - HTTP/1.1 over libuv TCP, parsed with llhttp: connections,
 * requests, and the bytes of replies.
 *
 * One loop thread owns every connection. Each connection has one llhttp
 * parser and a queue of requests in arrival order; a request's reply goes to
 * the socket only while it is the head of that queue, and is held in the
 * request (q->out) otherwise, so pipelined replies leave in order whatever
 * order they finish in. Limits (header bytes 431, body bytes 413 as soon as
 * Content-Length says so, connections 503) are enforced here, while parsing.
 *
 * Invariants: a connection is freed only in its close callback, after which
 * its requests have no connection (q->c NULL) and are freed as soon as no
 * pool job refers to them; llhttp's data pointers point into the read buffer,
 * so every field is copied before the callback returns.
 *
 * srv_http_feed() runs the same parser, callbacks, limits and routing over a
 * connection that has no socket (a "detached" one): its reply bytes go to a
 * buffer instead of uv_write, and it is freed by the feed itself. The fuzzer
 * drives the request path through it.
 */
#include "server/serve.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONN_MAX_PIPELINED 64          /* more queued requests: stop reading */
#define CONN_MAX_WRITE_PENDING (64u << 20) /* a client that reads nothing is dropped */

struct srv_conn {
    uv_tcp_t tcp;
    uv_shutdown_t shut;
    struct srv *s;
    struct srv_conn *prev, *next;
    llhttp_t parser;
    struct srv_req *head, *tail;  /* requests in arrival order */
    int32_t n_queued;
    struct srv_req *cur;          /* the request being parsed (also queued) */
    char field[32];               /* current header name (longer ones are not ours) */
    size_t field_len;
    char *value;                  /* current header value */
    size_t value_len, value_cap;
    size_t header_bytes;
    enum srv_err err_kind;        /* why a callback stopped the parser */
    bool has_err;
    bool no_more;                 /* parse nothing more (error, Connection: close) */
    bool reading;
    bool closing;
    size_t write_pending;
    double t_activity;            /* last time the connection became idle */
    char peer[64];
    /* Detached (srv_http_feed): no socket; replies are appended to sink. */
    bool detached;
    char *sink;
    size_t sink_len, sink_cap;
};

struct wreq {
    uv_write_t w;
    struct srv_conn *c;
    size_t len;
    char data[];
};

static llhttp_settings_t k_settings;
static char k_readbuf[65536]; /* one loop thread: every read is parsed before the next */

static void conn_close(struct srv_conn *c);
static void conn_advance(struct srv_conn *c);
static int buf_add(char **b, size_t *len, size_t *cap, const char *d, size_t n);
static struct srv_conn *conn_new(struct srv *s);

/* ---- requests ---- */

static struct srv_req *req_new(struct srv_conn *c)
{
    struct srv_req *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->s = c->s;
    q->c = c;
    q->id = ++c->s->next_req_id;
    q->t_start = srv_now();
    q->keep_alive = true;
    q->method = -1;
    q->ep = SRV_EP_OTHER;
    if (c->tail)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
    c->n_queued++;
    return q;
}

/* Frees q, or leaves it to the pool job's completion when one is running. */
static void req_release(struct srv_req *q)
{
    q->c = NULL;
    if (q->working)
        return;
    srv_openai_abort(q);
    srv_gen_free(q->gen);
    if (q->job_data_free)
        q->job_data_free(q->job_data);
    free(q->url);
    free(q->body);
    free(q->auth);
    free(q->out);
    free(q);
}

static const char *method_name(int m) { return m < 0 ? "-" : llhttp_method_name((llhttp_method_t)m); }

static void req_finish(struct srv_req *q)
{
    if (q->done)
        return;
    q->done = true;
    struct srv *s = q->s;
    srv_metrics_request(s->metrics, q->ep, q->status);
    double dt = srv_now() - q->t_start;
    log_info("access", "%s \"%s %s\" %d %zu %.3fs prompt=%d completion=%d", q->c ? q->c->peer : "-",
             method_name(q->method), q->url ? q->url : "-", q->status, q->bytes_out, dt, q->log_prompt_tokens,
             q->log_completion_tokens);
    if (q->c && !q->c->closing)
        conn_advance(q->c);
}

/* ---- writing ---- */

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct srv_conn *c = wr->c;
    c->write_pending -= wr->len;
    free(wr);
    if (status < 0 && !c->closing) {
        log_debug("http", "%s: write failed: %s", c->peer, uv_strerror(status));
        conn_close(c);
    }
}

static void conn_write(struct srv_conn *c, const char *data, size_t len)
{
    if (c->closing || len == 0)
        return;
    if (c->detached) {
        if (buf_add(&c->sink, &c->sink_len, &c->sink_cap, data, len) < 0)
            conn_close(c);
        return;
    }
    if (c->write_pending > CONN_MAX_WRITE_PENDING) {
        log_warn("http", "%s: client is not reading; closing", c->peer);
        conn_close(c);
        return;
    }
    struct wreq *wr = malloc(sizeof *wr + len);
    if (!wr) {
        conn_close(c);
        return;
    }
    memcpy(wr->data, data, len);
    wr->c = c;
    wr->len = len;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        free(wr);
        conn_close(c);
        return;
    }
    c->write_pending += len;
}

/* Sends bytes of q's reply now when q is at the head, else holds them. */
static void req_emit(struct srv_req *q, const char *data, size_t len)
{
    struct srv_conn *c = q->c;
    if (!c || c->closing || len == 0)
        return;
    q->bytes_out += len;
    q->t_last_write = srv_now();
    if (q == c->head) {
        conn_write(c, data, len);
        return;
    }
    if (q->out_len + len > q->out_cap) {
        size_t cap = q->out_cap ? q->out_cap * 2 : 4096;
        while (cap < q->out_len + len)
            cap *= 2;
        char *nb = realloc(q->out, cap);
        if (!nb) {
            conn_close(c);
            return;
        }
        q->out = nb;
        q->out_cap = cap;
    }
    memcpy(q->out + q->out_len, data, len);
    q->out_len += len;
}

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

static void write_head(struct srv_req *q, int status, const char *ctype, const char *len_or_te, const char *extra)
{
    if (q->s->draining)
        q->keep_alive = false;
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nServer: moed\r\nContent-Type: %s\r\n%s%s%s\r\n", status, reason(status),
                     ctype, len_or_te, q->keep_alive ? "" : "Connection: close\r\n", extra ? extra : "");
    if (n > 0 && (size_t)n < sizeof head)
        req_emit(q, head, (size_t)n);
}

void srv_reply(struct srv_req *q, int status, const char *ctype, const char *body, size_t len,
               const char *extra)
{
    if (q->done || q->status)
        return;
    q->status = status;
    if (q->c) {
        char cl[48];
        snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", len);
        write_head(q, status, ctype, cl, extra);
        if (q->method != HTTP_HEAD)
            req_emit(q, body, len);
    }
    req_finish(q);
}

void srv_reply_json(struct srv_req *q, int status, cJSON *root)
{
    char *body = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!body) {
        srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    srv_reply(q, status, "application/json", body, strlen(body), NULL);
    cJSON_free(body);
}

void srv_stream_start(struct srv_req *q, int status, const char *ctype)
{
    if (q->done || q->status)
        return;
    q->status = status;
    /* HTTP/1.0 has no chunked encoding: the body ends when the connection does. */
    bool http10 = q->c && q->c->parser.http_major == 1 && q->c->parser.http_minor == 0;
    q->chunked = !http10;
    if (http10)
        q->keep_alive = false;
    write_head(q, status, ctype, q->chunked ? "Transfer-Encoding: chunked\r\n" : "",
               "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
}

void srv_stream_send(struct srv_req *q, const char *data, size_t len)
{
    if (q->done || !q->c || len == 0)
        return;
    if (!q->chunked) {
        req_emit(q, data, len);
        return;
    }
    char *b = malloc(len + 24);
    if (!b) {
        conn_close(q->c);
        return;
    }
    int n = snprintf(b, 24, "%zx\r\n", len);
    memcpy(b + n, data, len);
    memcpy(b + n + len, "\r\n", 2);
    req_emit(q, b, (size_t)n + len + 2);
    free(b);
}

void srv_stream_end(struct srv_req *q)
{
    if (q->done)
        return;
    if (q->chunked)
        req_emit(q, "0\r\n\r\n", 5);
    req_finish(q);
}

/* ---- connection lifetime ---- */

static void conn_free(struct srv_conn *c)
{
    struct srv *s = c->s;
    for (struct srv_req *q = c->head, *n; q; q = n) {
        n = q->next;
        q->next = NULL;
        req_release(q);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    free(c->value);
    free(c->sink);
    free(c);
}

static void on_close(uv_handle_t *h) { conn_free(h->data); }

static void conn_close(struct srv_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    c->no_more = true;
    /* Generations of this connection stop now: their engine requests are
     * canceled and free their KV blocks at the next step. */
    for (struct srv_req *q = c->head; q; q = q->next)
        srv_openai_abort(q);
    if (!c->detached) /* a detached connection is freed by srv_http_feed */
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_shutdown(uv_shutdown_t *sh, int status)
{
    struct srv_conn *c = sh->data;
    conn_close(c);
}

/* Closes after the replies written so far have gone out. */
static void conn_shutdown(struct srv_conn *c)
{
    if (c->closing)
        return;
    c->no_more = true;
    if (c->detached) {
        conn_close(c);
        return;
    }
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    buf->base = k_readbuf;
    buf->len = sizeof k_readbuf;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(struct srv_conn *c)
{
    if (c->reading || c->closing || c->no_more || c->detached)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = true;
}

/* Pops finished replies off the head, releasing the next one's held bytes. */
static void conn_advance(struct srv_conn *c)
{
    while (c->head && c->head->done) {
        struct srv_req *q = c->head;
        c->head = q->next;
        if (!c->head)
            c->tail = NULL;
        c->n_queued--;
        bool ka = q->keep_alive;
        q->next = NULL;
        req_release(q);
        if (!ka) {
            conn_shutdown(c);
            return;
        }
        if (c->head && c->head->out_len) {
            struct srv_req *h = c->head;
            conn_write(c, h->out, h->out_len);
            free(h->out);
            h->out = NULL;
            h->out_len = h->out_cap = 0;
            if (c->closing)
                return;
        }
    }
    if (!c->head) {
        c->t_activity = srv_now();
        if (c->s->draining) {
            conn_shutdown(c);
            return;
        }
    }
    if (c->n_queued < CONN_MAX_PIPELINED / 2)
        conn_read_start(c);
}

/* ---- parsing ---- */

static int stop_parse(struct srv_conn *c, enum srv_err kind)
{
    c->err_kind = kind;
    c->has_err = true;
    return -1;
}

static int buf_add(char **b, size_t *len, size_t *cap, const char *d, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        while (nc < *len + n + 1)
            nc *= 2;
        char *nb = realloc(*b, nc);
        if (!nb)
            return -1;
        *b = nb;
        *cap = nc;
    }
    memcpy(*b + *len, d, n);
    *len += n;
    (*b)[*len] = 0;
    return 0;
}

static int header_bytes_add(struct srv_conn *c, size_t n)
{
    c->header_bytes += n;
    return c->header_bytes > (size_t)c->s->cfg->srv.max_header_bytes ? -1 : 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct srv_conn *c = p->data;
    if (c->no_more)
        return HPE_PAUSED;
    if (c->n_queued >= CONN_MAX_PIPELINED * 4)
        return stop_parse(c, SRV_ERR_BUSY);
    struct srv_req *q = req_new(c);
    if (!q)
        return stop_parse(c, SRV_ERR_UNAVAILABLE);
    c->cur = q;
    c->header_bytes = 0;
    c->field_len = c->value_len = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct srv_conn *c = p->data;
    struct srv_req *q = c->cur;
    q->method = p->method;
    if (header_bytes_add(c, len) < 0)
        return stop_parse(c, SRV_ERR_HEADERS);
    size_t cap = q->url ? q->url_len + 1 : 0;
    if (buf_add(&q->url, &q->url_len, &cap, at, len) < 0)
        return stop_parse(c, SRV_ERR_UNAVAILABLE);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct srv_conn *c = p->data;
    if (header_bytes_add(c, len) < 0)
        return stop_parse(c, SRV_ERR_HEADERS);
    size_t take = len;
    if (c->field_len + take > sizeof c->field - 1)
        take = c->field_len < sizeof c->field - 1 ? sizeof c->field - 1 - c->field_len : 0;
    memcpy(c->field + c->field_len, at, take);
    c->field_len += take;
    if (take < len)
        c->field_len = sizeof c->field; /* marks "too long to be one of ours" */
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct srv_conn *c = p->data;
    if (header_bytes_add(c, len) < 0)
        return stop_parse(c, SRV_ERR_HEADERS);
    if (buf_add(&c->value, &c->value_len, &c->value_cap, at, len) < 0)
        return stop_parse(c, SRV_ERR_UNAVAILABLE);
    return 0;
}

static bool field_is(const struct srv_conn *c, const char *name)
{
    size_t n = strlen(name);
    return c->field_len == n && strncasecmp(c->field, name, n) == 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct srv_conn *c = p->data;
    struct srv_req *q = c->cur;
    /* The ": " and CRLF count too, so that many empty headers add up. */
    if (header_bytes_add(c, 4) < 0)
        return stop_parse(c, SRV_ERR_HEADERS);
    const char *v = c->value ? c->value : "";
    if (field_is(c, "authorization")) {
        free(q->auth);
        q->auth = strdup(v);
    } else if (field_is(c, "expect")) {
        if (strcasecmp(v, "100-continue") == 0)
            q->expect_continue = true;
    }
    c->field_len = 0;
    c->value_len = 0;
    if (c->value)
        c->value[0] = 0;
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct srv_conn *c = p->data;
    /* A header with no value still completes its value. */
    c->value_len = 0;
    if (c->value)
        c->value[0] = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct srv_conn *c = p->data;
    struct srv_req *q = c->cur;
    q->method = p->method;
    q->keep_alive = llhttp_should_keep_alive(p);
    /* CONNECT and Upgrade (websocket, h2c) are not spoken here: the reply
     * closes the connection, because llhttp parses nothing after them. */
    if (p->upgrade)
        q->keep_alive = false;
    if (!q->url)
        q->url = strdup("/");
    q->ep = srv_route_endpoint(q->url);
    int64_t max = c->s->cfg->srv.max_body_bytes;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > (uint64_t)max)
        return stop_parse(c, SRV_ERR_TOO_LARGE);
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0) {
        /* Reserve what is announced, up to 1 MiB: a client that announces
         * a large body and sends nothing does not get to pin memory. */
        size_t want = p->content_length < (1u << 20) ? (size_t)p->content_length + 1 : (1u << 20);
        q->body = malloc(want);
        if (!q->body)
            return stop_parse(c, SRV_ERR_UNAVAILABLE);
        q->body_cap = want;
    }
    if (q->expect_continue && (p->http_major > 1 || p->http_minor >= 1)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        req_emit(q, cont, sizeof cont - 1);
        q->bytes_out -= sizeof cont - 1;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct srv_conn *c = p->data;
    struct srv_req *q = c->cur;
    if (q->body_len + len > (size_t)c->s->cfg->srv.max_body_bytes)
        return stop_parse(c, SRV_ERR_TOO_LARGE);
    if (buf_add(&q->body, &q->body_len, &q->body_cap, at, len) < 0)
        return stop_parse(c, SRV_ERR_UNAVAILABLE);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct srv_conn *c = p->data;
    struct srv_req *q = c->cur;
    c->cur = NULL;
    q->complete = true;
    if (!q->body) {
        q->body = strdup("");
        q->body_cap = 1;
    }
    if (!q->keep_alive)
        c->no_more = true;
    if (c->n_queued >= CONN_MAX_PIPELINED && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    srv_route(q); /* may finish q (and free it) before returning */
    return c->no_more ? HPE_PAUSED : 0;
}

static void parse_error(struct srv_conn *c, llhttp_errno_t e)
{
    struct srv_req *q = c->cur;
    c->cur = NULL;
    c->no_more = true;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    if (!q && !(q = req_new(c))) {
        conn_close(c);
        return;
    }
    if (q->done || q->status) /* cannot happen: a routed request is no longer cur */
        return;
    q->complete = true;
    q->keep_alive = false;
    if (!q->url)
        q->url = strdup("-");
    enum srv_err kind = c->has_err ? c->err_kind : SRV_ERR_INVALID;
    switch (kind) {
    case SRV_ERR_HEADERS:
        srv_reply_error(q, kind, NULL, "request headers are larger than %d bytes",
                        c->s->cfg->srv.max_header_bytes);
        break;
    case SRV_ERR_TOO_LARGE:
        srv_reply_error(q, kind, NULL, "request body is larger than %lld bytes",
                        (long long)c->s->cfg->srv.max_body_bytes);
        break;
    case SRV_ERR_BUSY: srv_reply_error(q, kind, NULL, "too many pipelined requests"); break;
    case SRV_ERR_INVALID:
        srv_reply_error(q, kind, NULL, "malformed HTTP request: %s", llhttp_errno_name(e));
        break;
    default: srv_reply_error(q, kind, NULL, "cannot read the request"); break;
    }
}

/* Parses bytes the client sent. */
static void conn_parse(struct srv_conn *c, const char *data, size_t len)
{
    if (c->no_more || c->closing)
        return;
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
        c->no_more = true;
        if (c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = false;
        }
    } else if (e != HPE_OK) {
        parse_error(c, e);
    }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct srv_conn *c = st->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* EOF or a reset: the client is gone, its requests are canceled. */
        conn_close(c);
        return;
    }
    conn_parse(c, buf->base, (size_t)nread);
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *l, int status)
{
    struct srv *s = l->data;
    if (status < 0) {
        log_warn("http", "accept: %s", uv_strerror(status));
        return;
    }
    struct srv_conn *c = conn_new(s);
    if (!c)
        return;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        char ip[48] = "?";
        int port = 0;
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
        snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &k_settings);
    c->parser.data = c;
    if (s->n_conns > s->cfg->srv.max_connections) {
        struct srv_req *q = req_new(c);
        if (!q) {
            conn_close(c);
            return;
        }
        q->url = strdup("-");
        q->complete = true;
        q->keep_alive = false;
        srv_reply_error(q, SRV_ERR_UNAVAILABLE, NULL, "too many connections (server.max_connections = %d)",
                        s->cfg->srv.max_connections);
        return;
    }
    conn_read_start(c);
}

static void settings_init(void)
{
    llhttp_settings_init(&k_settings);
    k_settings.on_message_begin = on_message_begin;
    k_settings.on_url = on_url;
    k_settings.on_header_field = on_header_field;
    k_settings.on_header_field_complete = on_header_field_complete;
    k_settings.on_header_value = on_header_value;
    k_settings.on_header_value_complete = on_header_value_complete;
    k_settings.on_headers_complete = on_headers_complete;
    k_settings.on_body = on_body;
    k_settings.on_message_complete = on_message_complete;
}

/* Links a new connection into s's list (accepting or detached). */
static struct srv_conn *conn_new(struct srv *s)
{
    struct srv_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->s = s;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    c->t_activity = srv_now();
    snprintf(c->peer, sizeof c->peer, "-");
    return c;
}

int srv_listen(struct srv *s)
{
    settings_init();
    const struct srv_params *p = &s->cfg->srv;
    struct sockaddr_storage addr;
    int rc;
    if (strchr(p->host, ':'))
        rc = uv_ip6_addr(p->host, p->port, (struct sockaddr_in6 *)&addr);
    else
        rc = uv_ip4_addr(p->host, p->port, (struct sockaddr_in *)&addr);
    if (rc < 0) {
        log_err("http", "server.host '%s' is not an IP address: %s", p->host, uv_strerror(rc));
        return ERR_CONFIG;
    }
    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection)) < 0) {
        log_err("http", "cannot listen on %s port %d: %s", p->host, p->port, uv_strerror(rc));
        return rc;
    }
    struct sockaddr_storage bound;
    int bl = sizeof bound;
    int port = p->port;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &bl) == 0)
        port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                 : ((struct sockaddr_in *)&bound)->sin_port);
    snprintf(s->bound, sizeof s->bound, strchr(p->host, ':') ? "[%s]:%d" : "%s:%d", p->host, port);
    log_info("http", "listening on %s", s->bound);
    return 0;
}

void srv_stop_accepting(struct srv *s)
{
    if (!uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, NULL);
    for (struct srv_conn *c = s->conns; c; c = c->next)
        if (!c->head)
            conn_shutdown(c);
}

void srv_close_all(struct srv *s)
{
    for (struct srv_conn *c = s->conns; c; c = c->next)
        conn_close(c);
}

bool srv__http_busy(const struct srv *s)
{
    for (const struct srv_conn *c = s->conns; c; c = c->next)
        if (c->head && !c->closing)
            return true;
    return false;
}

/* Idle keep-alive connections and requests that arrive too slowly. */
void srv_http_tick(struct srv *s, double now)
{
    double idle = s->cfg->srv.idle_timeout_s;
    for (struct srv_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        if (c->closing)
            continue;
        if (c->cur && !c->cur->status && now - c->cur->t_start > idle) {
            struct srv_req *q = c->cur;
            c->cur = NULL;
            c->no_more = true;
            if (c->reading) {
                uv_read_stop((uv_stream_t *)&c->tcp);
                c->reading = false;
            }
            q->complete = true;
            q->keep_alive = false;
            srv_reply_error(q, SRV_ERR_TIMEOUT, NULL, "the request did not arrive within %g s", idle);
        } else if (!c->head && now - c->t_activity > idle) {
            conn_close(c);
        }
    }
}

/* ---- pool jobs ---- */

static void work_cb(uv_work_t *w)
{
    struct srv_req *q = w->data;
    q->job(q);
}

static void after_work_cb(uv_work_t *w, int status)
{
    struct srv_req *q = w->data;
    q->working = false;
    if (!q->c) {
        req_release(q);
        return;
    }
    q->job_done(q);
}

int srv_req_offload(struct srv_req *q, srv_job_fn job, srv_job_fn done)
{
    if (q->c && q->c->detached) /* srv_http_feed has no loop to run jobs on */
        return UV_ENOTSUP;
    q->job = job;
    q->job_done = done;
    q->work.data = q;
    int rc = uv_queue_work(q->s->loop, &q->work, work_cb, after_work_cb);
    if (rc == 0)
        q->working = true;
    return rc;
}

/* ---- socket-free requests (fuzzing) ---- */

int srv_http_feed(struct srv *s, const char *data, size_t len, size_t piece, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    settings_init();
    struct srv_conn *c = conn_new(s);
    if (!c)
        return -ENOMEM;
    c->detached = true;
    snprintf(c->peer, sizeof c->peer, "feed");
    llhttp_init(&c->parser, HTTP_REQUEST, &k_settings);
    c->parser.data = c;
    if (piece == 0)
        piece = len ? len : 1;
    for (size_t off = 0; off < len && !c->no_more && !c->closing;) {
        size_t n = len - off < piece ? len - off : piece;
        conn_parse(c, data + off, n);
        off += n;
    }
    /* Whatever is still half-read is what a slow client leaves behind: let
     * the timeout answer it, as the once-a-second tick would. */
    if (!c->closing)
        srv_http_tick(s, srv_now() + s->cfg->srv.idle_timeout_s + 1);
    *out = c->sink;
    *out_len = c->sink_len;
    c->sink = NULL;
    conn_close(c);
    conn_free(c);
    return 0;
}
