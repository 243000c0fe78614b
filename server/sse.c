/* SPDX-License-Identifier: MIT */
/*
 * sse.c - Server-Sent Events framing for streamed completions: one
 * `data: {json}\n\n` event per chunk, `: keep-alive` comments while a stream
 * waits, and `data: [DONE]\n\n` at the end, as OpenAI's API sends them.
 *
 * The chunks themselves (their OpenAI shapes) are built in openai.c; this
 * file only frames them, over the chunked reply of http.c.
 */
#include "server/serve.h"

#include <stdlib.h>
#include <string.h>

void srv_sse_start(struct srv_req *q) { srv_stream_start(q, 200, "text/event-stream; charset=utf-8"); }

void srv_sse_send(struct srv_req *q, cJSON *chunk)
{
    char *txt = cJSON_PrintUnformatted(chunk);
    cJSON_Delete(chunk);
    if (!txt)
        return;
    size_t n = strlen(txt);
    char *ev = malloc(n + 9);
    if (ev) {
        memcpy(ev, "data: ", 6);
        memcpy(ev + 6, txt, n);
        memcpy(ev + 6 + n, "\n\n", 2);
        srv_stream_send(q, ev, n + 8);
        free(ev);
    }
    cJSON_free(txt);
}

void srv_sse_comment(struct srv_req *q)
{
    static const char ka[] = ": keep-alive\n\n";
    srv_stream_send(q, ka, sizeof ka - 1);
}

void srv_sse_done(struct srv_req *q)
{
    static const char done[] = "data: [DONE]\n\n";
    srv_stream_send(q, done, sizeof done - 1);
    srv_stream_end(q);
}
