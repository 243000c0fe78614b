/* SPDX-License-Identifier: MIT */
/*
 * chatcheck.c - renders chat templates for tests/test_chat_templates.sh.
 *
 * Reads one JSON object per line on stdin:
 *   {"template": "...", "messages": [...], "tools": [...] | null,
 *    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
 *    "kwargs": {...}, "prepare": false}
 * and writes one line per input: the rendering as a JSON string, or
 * {"error": "message"}. With "prepare": true the messages first go through
 * chat_messages_prepare(). The parsed template is reused while consecutive
 * lines carry the same template text.
 *
 * Usage: chatcheck < cases.jsonl > out.jsonl
 */
#include "common/err.h"
#include "engine/chat.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_error(const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    char *s = cJSON_PrintUnformatted(o);
    puts(s ? s : "{\"error\":\"out of memory\"}");
    cJSON_free(s);
    cJSON_Delete(o);
}

int main(void)
{
    char *line = NULL, *cached_src = NULL;
    size_t cap = 0;
    ssize_t n;
    struct chat_template *tmpl = NULL;
    char tmpl_err[512] = "";
    int lines = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        lines++;
        cJSON *j = cJSON_ParseWithLengthOpts(line, (size_t)n, NULL, 0);
        const cJSON *src = j ? cJSON_GetObjectItemCaseSensitive(j, "template") : NULL;
        if (!cJSON_IsString(src)) {
            print_error("input line is not a JSON object with a template string");
            cJSON_Delete(j);
            continue;
        }
        if (!cached_src || strcmp(cached_src, src->valuestring) != 0) {
            chat_template_free(tmpl);
            tmpl = NULL;
            free(cached_src);
            cached_src = strdup(src->valuestring);
            tmpl_err[0] = 0;
            chat_template_init(&tmpl, src->valuestring, "template", tmpl_err, sizeof tmpl_err);
        }
        if (!tmpl) {
            print_error(tmpl_err);
            cJSON_Delete(j);
            continue;
        }
        cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
        char err[1024] = "";
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "prepare")) &&
            chat_messages_prepare(tmpl, msgs, err, sizeof err) != 0) {
            print_error(err);
            cJSON_Delete(j);
            continue;
        }
        const cJSON *bos = cJSON_GetObjectItemCaseSensitive(j, "bos_token");
        const cJSON *eos = cJSON_GetObjectItemCaseSensitive(j, "eos_token");
        struct chat_render_args a = {
            .messages = msgs,
            .tools = cJSON_GetObjectItemCaseSensitive(j, "tools"),
            .add_generation_prompt =
                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "add_generation_prompt")),
            .bos_token = cJSON_IsString(bos) ? bos->valuestring : "",
            .eos_token = cJSON_IsString(eos) ? eos->valuestring : "",
            .kwargs = cJSON_GetObjectItemCaseSensitive(j, "kwargs"),
        };
        char *out = NULL;
        size_t out_len = 0;
        int rc = chat_template_render(tmpl, &a, &out, &out_len, err, sizeof err);
        if (rc != 0) {
            print_error(err);
        } else {
            cJSON *s = cJSON_CreateString(out);
            char *p = cJSON_PrintUnformatted(s);
            puts(p ? p : "{\"error\":\"out of memory\"}");
            cJSON_free(p);
            cJSON_Delete(s);
            free(out);
        }
        cJSON_Delete(j);
    }
    chat_template_free(tmpl);
    free(cached_src);
    free(line);
    return lines > 0 ? 0 : 1;
}
