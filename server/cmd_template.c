/* SPDX-License-Identifier: MIT */
/*
 * cmd_template.c - `moed template`: renders a chat request through the
 * model's chat template and prints the prompt, exactly the bytes the engine
 * would tokenize, with nothing added.
 *
 *   moed template -m MODEL [--chat-template FILE] < request.json
 *
 * The request is {"messages": [...], "add_generation_prompt": true,
 * "tools": [...], "chat_template_kwargs": {...}} (add_generation_prompt
 * defaults to true). The template is the GGUF key tokenizer.chat_template,
 * or FILE; bos_token and eos_token are the texts of the model's BOS and EOS
 * tokens. Only the file's metadata is read, never its weights.
 */
#include "server/impl.h"

#include "common/err.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/vocab.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(FILE *f, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 >= cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + n, 1, cap - n - 1, f);
        if (r == 0)
            break;
        n += r;
    }
    if (b) {
        b[n] = 0;
        *len = n;
    }
    return b;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: moed template -m MODEL [--chat-template FILE] < request.json\n"
            "reads {\"messages\": [...], \"add_generation_prompt\": true, \"tools\": [...],\n"
            "\"chat_template_kwargs\": {...}} on stdin and prints the rendered prompt\n");
}

int srv_cmd_template(int argc, char **argv)
{
    const char *model = NULL, *tmpl_path = NULL;
    static const struct option lo[] = {{"model", 1, 0, 'm'}, {"chat-template", 1, 0, 'T'},
                                       {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:h", lo, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'T': tmpl_path = optarg; break;
        case 'h': usage(); return 0;
        default: usage(); return 2;
        }
    }
    if (!model && !tmpl_path) {
        usage();
        return 2;
    }

    int ret = 1;
    char err[1024] = "";
    struct gguf_file *g = NULL;
    struct vocab *v = NULL;
    struct chat_template *t = NULL;
    char *file_src = NULL, *input = NULL, *prompt = NULL;
    cJSON *req = NULL;
    const char *src = NULL, *bos = "", *eos = "", *name = "tokenizer.chat_template";

    if (model) {
        int rc = gguf_open(&g, model, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "moed: template: %s\n", err);
            goto out;
        }
        rc = vocab_init_gguf(&v, g, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "moed: template: %s\n", err);
            goto out;
        }
        const struct vocab_special *sp = vocab_special(v);
        const char *s;
        if (sp->bos >= 0 && (s = vocab_token_text(v, sp->bos)))
            bos = s;
        if (sp->eos >= 0 && (s = vocab_token_text(v, sp->eos)))
            eos = s;
    }
    if (tmpl_path) {
        FILE *f = fopen(tmpl_path, "rb");
        size_t n = 0;
        if (!f || !(file_src = slurp(f, &n))) {
            fprintf(stderr, "moed: template: %s: %s\n", tmpl_path, strerror(f ? ENOMEM : errno));
            if (f)
                fclose(f);
            goto out;
        }
        fclose(f);
        if (strlen(file_src) != n) {
            fprintf(stderr, "moed: template: %s: contains a NUL byte\n", tmpl_path);
            goto out;
        }
        src = file_src;
        name = tmpl_path;
    } else {
        int rc = gguf_get_str(g, "tokenizer.chat_template", &src);
        if (rc == -ENOENT) {
            fprintf(stderr, "moed: template: %s has no tokenizer.chat_template; pass --chat-template FILE\n",
                    model);
            goto out;
        }
        if (rc < 0) {
            fprintf(stderr, "moed: template: %s: tokenizer.chat_template is not a string\n", model);
            goto out;
        }
    }
    if (chat_template_init(&t, src, name, err, sizeof err) != 0) {
        fprintf(stderr, "moed: template: %s\n", err);
        goto out;
    }

    size_t len = 0;
    input = slurp(stdin, &len);
    if (!input) {
        fprintf(stderr, "moed: template: cannot read stdin\n");
        goto out;
    }
    req = cJSON_ParseWithLengthOpts(input, len, NULL, 0);
    if (!cJSON_IsObject(req)) {
        fprintf(stderr, "moed: template: stdin is not a JSON object\n");
        goto out;
    }
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
    if (!msgs) {
        fprintf(stderr, "moed: template: request has no \"messages\"\n");
        goto out;
    }
    if (chat_messages_prepare(t, msgs, err, sizeof err) != 0) {
        fprintf(stderr, "moed: template: %s\n", err);
        goto out;
    }
    const cJSON *agp = cJSON_GetObjectItemCaseSensitive(req, "add_generation_prompt");
    if (agp && !cJSON_IsBool(agp)) {
        fprintf(stderr, "moed: template: add_generation_prompt must be true or false\n");
        goto out;
    }
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
    if (tools && !cJSON_IsArray(tools) && !cJSON_IsNull(tools)) {
        fprintf(stderr, "moed: template: tools must be an array\n");
        goto out;
    }
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(req, "chat_template_kwargs");
    if (kw && !cJSON_IsObject(kw) && !cJSON_IsNull(kw)) {
        fprintf(stderr, "moed: template: chat_template_kwargs must be an object\n");
        goto out;
    }
    struct chat_render_args a = {
        .messages = msgs,
        .tools = tools,
        .add_generation_prompt = agp ? cJSON_IsTrue(agp) : true,
        .bos_token = bos,
        .eos_token = eos,
        .kwargs = kw,
    };
    size_t plen = 0;
    if (chat_template_render(t, &a, &prompt, &plen, err, sizeof err) != 0) {
        fprintf(stderr, "moed: template: %s\n", err);
        goto out;
    }
    if (fwrite(prompt, 1, plen, stdout) != plen || fflush(stdout) != 0) {
        fprintf(stderr, "moed: template: write failed: %s\n", strerror(errno));
        goto out;
    }
    ret = 0;
out:
    free(prompt);
    cJSON_Delete(req);
    free(input);
    free(file_src);
    chat_template_free(t);
    vocab_free(v);
    gguf_close(g);
    return ret;
}
