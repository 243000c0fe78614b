/* SPDX-License-Identifier: MIT */
/*
 * fuzz_jinja.c - libFuzzer harness for the Jinja interpreter of chat
 * templates (engine/chat.h): the input is a template source, parsed with
 * chat_template_init() and, when it parses, rendered with
 * chat_template_render() over a fixed small conversation (system, user,
 * assistant with reasoning, user), prepared with chat_messages_prepare() as
 * the server does. Inputs of odd length also pass a one-function tools list
 * and chat_template_kwargs, so both branches of typical templates run.
 *
 * Checked besides the sanitizers: a successful render gives a NUL-terminated
 * string of the reported length; a failure leaves an error message.
 */
#include "engine/chat.h"

#include "common/log.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                   \
    do {                                                                           \
        if (!(x)) {                                                                \
            fprintf(stderr, "fuzz_jinja: %s:%d: check failed: %s\n", __FILE__,     \
                    __LINE__, #x);                                                 \
            abort();                                                               \
        }                                                                          \
    } while (0)

static const char k_messages[] =
    "[{\"role\":\"system\",\"content\":\"You are terse.\"},"
    "{\"role\":\"user\",\"content\":\"Hello <b>there</b> \\u00e9\\u4e2d\"},"
    "{\"role\":\"assistant\",\"content\":\"Hi.\",\"reasoning_content\":\"Greet back.\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Two\"},{\"type\":\"text\",\"text\":\" parts\"}]}]";
static const char k_tools[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"description\":\"Now.\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"tz\":{\"type\":\"string\"}},\"required\":[\"tz\"]}}}]";
static const char k_kwargs[] = "{\"enable_thinking\":false,\"custom\":[1,2,{\"a\":null}]}";

static cJSON *g_messages, *g_tools, *g_kwargs;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_messages) {
        log_set_level(LOG_LEVEL_ERROR);
        g_messages = cJSON_Parse(k_messages);
        g_tools = cJSON_Parse(k_tools);
        g_kwargs = cJSON_Parse(k_kwargs);
        CHECK(g_messages && g_tools && g_kwargs);
    }
    char *src = malloc(size + 1);
    CHECK(src);
    memcpy(src, data, size);
    src[size] = 0;
    struct chat_template *t = NULL;
    char err[512] = "";
    if (chat_template_init(&t, src, "fuzz", err, sizeof err) < 0) {
        CHECK(t == NULL && err[0]);
        free(src);
        return 0;
    }
    cJSON *msgs = cJSON_Duplicate(g_messages, 1);
    CHECK(msgs);
    if (chat_messages_prepare(t, msgs, err, sizeof err) == 0) {
        bool extra = size & 1;
        struct chat_render_args a = {.messages = msgs, .tools = extra ? g_tools : NULL,
                                     .add_generation_prompt = !extra, .bos_token = "<s>", .eos_token = "</s>",
                                     .kwargs = extra ? g_kwargs : NULL};
        char *out = NULL;
        size_t out_len = 0;
        err[0] = 0;
        if (chat_template_render(t, &a, &out, &out_len, err, sizeof err) == 0) {
            CHECK(out && strlen(out) <= out_len && out[out_len] == 0);
            free(out);
        } else {
            CHECK(err[0]);
        }
    }
    cJSON_Delete(msgs);
    chat_template_free(t);
    free(src);
    return 0;
}
