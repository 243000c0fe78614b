/* SPDX-License-Identifier: MIT */
/*
 * chat.c - chat templates (engine/chat.h): parsing a model's Jinja template
 * once, rendering it for a request, normalizing OpenAI messages for it, and
 * the reasoning tags the template's model uses.
 *
 * The interpreter is engine/jinja_*.c (see jinja_impl.h for its semantics
 * and limits). A parsed template owns one arena holding its AST; each render
 * works in an arena of its own, so a template is immutable after init and
 * any number of threads may render it at once.
 */
#include "engine/chat.h"

#include "common/err.h"
#include "engine/jinja_impl.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chat_template {
    struct jarena arena;     /* the AST */
    struct jprogram *prog;
    char *name;
    bool has_developer;      /* the template mentions a "developer" role */
    bool tests_content_none; /* the template checks content for none */
    bool think;              /* the model reasons between <think> tags */
};

int chat_template_init(struct chat_template **out, const char *source, const char *name,
                       char *err, size_t errlen)
{
    static char dummy[1];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    *out = NULL;
    if (!name)
        name = "template";
    struct chat_template *t = calloc(1, sizeof *t);
    char *nm = strdup(name);
    if (!t || !nm) {
        free(t);
        free(nm);
        snprintf(err, errlen, "%s: out of memory", name);
        return -ENOMEM;
    }
    t->name = nm;
    jmp_buf jb;
    jarena_init(&t->arena, (size_t)JINJA_MAX_SOURCE * 64, &jb, err, errlen);
    if (setjmp(jb)) {
        jarena_free(&t->arena);
        free(t->name);
        free(t);
        return ERR_TEMPLATE;
    }
    size_t len = strlen(source);
    size_t ntok = 0;
    struct jtok *toks = jinja_lex(&t->arena, t->name, source, len, &ntok);
    t->prog = jinja_parse(&t->arena, t->name, toks, ntok);
    t->arena.fail = NULL;
    t->arena.err = NULL;
    t->has_developer = strstr(source, "developer") != NULL;
    t->think = strstr(source, "<think>") && strstr(source, "</think>");
    t->tests_content_none = strstr(source, "content'] is none") ||
                            strstr(source, "content is none") ||
                            strstr(source, "content'] is not none") ||
                            strstr(source, "content is not none") ||
                            strstr(source, "content\"] is none") ||
                            strstr(source, "content\"] is not none");
    *out = t;
    return 0;
}

void chat_template_free(struct chat_template *t)
{
    if (!t)
        return;
    jarena_free(&t->arena);
    free(t->name);
    free(t);
}

static int render(const struct chat_template *t, const struct chat_render_args *ra, char **out,
                  size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    struct jarena *a = malloc(sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    jmp_buf jb;
    jarena_init(a, JINJA_MAX_MEMORY, &jb, err, errlen);
    if (setjmp(jb)) {
        jarena_free(a);
        free(a);
        return ERR_TEMPLATE;
    }
    const cJSON *kw = ra->kwargs && cJSON_IsObject(ra->kwargs) ? ra->kwargs : NULL;
    size_t nkw = 0;
    for (const cJSON *c = kw ? kw->child : NULL; c; c = c->next)
        nkw++;
    struct jinja_var *vars = jarena_alloc(a, (nkw + 5) * sizeof *vars);
    size_t n = 0;
    for (const cJSON *c = kw ? kw->child : NULL; c; c = c->next) {
        if (!c->string)
            continue;
        vars[n].name = jarena_strdup(a, c->string, strlen(c->string));
        vars[n++].v = jv_from_json(a, c, 0);
    }
    struct jv msgs = ra->messages ? jv_from_json(a, ra->messages, 0) : jv_undef();
    if (msgs.t != JV_LIST) {
        struct jv l = {.t = JV_LIST, .l = jlist_new(a, 0)};
        msgs = l;
    }
    vars[n].name = "messages";
    vars[n++].v = msgs;
    vars[n].name = "tools";
    vars[n++].v = ra->tools && !cJSON_IsNull(ra->tools) ? jv_from_json(a, ra->tools, 0) : jv_none();
    vars[n].name = "add_generation_prompt";
    vars[n++].v = jv_bool(ra->add_generation_prompt);
    const char *bos = ra->bos_token ? ra->bos_token : "";
    const char *eos = ra->eos_token ? ra->eos_token : "";
    vars[n].name = "bos_token";
    vars[n++].v = jv_str(jstr_new(a, bos, strlen(bos)));
    vars[n].name = "eos_token";
    vars[n++].v = jv_str(jstr_new(a, eos, strlen(eos)));
    int rc = jinja_render(t->prog, t->name, a, &jb, vars, n, out, out_len, err, errlen);
    jarena_free(a);
    free(a);
    return rc;
}

int chat_template_render(const struct chat_template *t, const struct chat_render_args *ra,
                         char **out, size_t *out_len, char *err, size_t errlen)
{
    char dummy[1];
    if (!err || !errlen)
        return render(t, ra, out, out_len, dummy, sizeof dummy);
    return render(t, ra, out, out_len, err, errlen);
}

/* ---- messages ---- */

static int fail(char *err, size_t errlen, const char *fmt, size_t i, const char *what)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, i, what);
    return -EINVAL;
}

int chat_messages_prepare(const struct chat_template *t, cJSON *messages, char *err,
                          size_t errlen)
{
    if (!cJSON_IsArray(messages))
        return fail(err, errlen, "messages%.0zu: must be an array%s", 0, "");
    if (cJSON_GetArraySize(messages) == 0)
        return fail(err, errlen, "messages%.0zu: must not be empty%s", 0, "");
    size_t i = 0;
    for (cJSON *m = messages->child; m; m = m->next, i++) {
        if (!cJSON_IsObject(m))
            return fail(err, errlen, "messages[%zu]: must be an object%s", i, "");
        cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role))
            return fail(err, errlen, "messages[%zu].role: missing or not a string%s", i, "");
        const char *r = role->valuestring;
        static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};
        bool known = false;
        for (size_t k = 0; k < 5; k++)
            known = known || !strcmp(r, roles[k]);
        if (!known)
            return fail(err, errlen, "messages[%zu].role: unknown role '%s'", i, r);
        bool assistant = !strcmp(r, "assistant");
        if (!strcmp(r, "developer") && !(t && t->has_developer))
            cJSON_SetValuestring(role, "system");

        cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsArray(content)) {
            /* An array of parts: the text parts joined with newlines. */
            size_t total = 0, k = 0;
            for (cJSON *p = content->child; p; p = p->next, k++) {
                cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
                cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
                if (!cJSON_IsObject(p) || !cJSON_IsString(type))
                    return fail(err, errlen, "messages[%zu].content: part %s is not {type, ...}", i,
                                "");
                if (strcmp(type->valuestring, "text") != 0) {
                    if (err && errlen)
                        snprintf(err, errlen,
                                 "messages[%zu].content[%zu]: part type '%s' is not supported", i,
                                 k, type->valuestring);
                    return -EINVAL;
                }
                if (!cJSON_IsString(text))
                    return fail(err, errlen, "messages[%zu].content: a text part has no string %s",
                                i, "'text'");
                total += strlen(text->valuestring) + 1;
            }
            char *joined = malloc(total + 1);
            if (!joined)
                return -ENOMEM;
            size_t o = 0;
            for (cJSON *p = content->child; p; p = p->next) {
                const char *s = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
                if (o)
                    joined[o++] = '\n';
                size_t l = strlen(s);
                memcpy(joined + o, s, l);
                o += l;
            }
            joined[o] = 0;
            cJSON *nc = cJSON_CreateString(joined);
            free(joined);
            if (!nc)
                return -ENOMEM;
            cJSON_ReplaceItemInObjectCaseSensitive(m, "content", nc);
        } else if (!content || cJSON_IsNull(content)) {
            if (!assistant)
                return fail(err, errlen, "messages[%zu].content: missing for role '%s'", i, r);
            /* An assistant turn with only tool calls: keep null where the
             * template tests for it (DeepSeek), else an empty string. */
            cJSON *nc = t && t->tests_content_none ? cJSON_CreateNull() : cJSON_CreateString("");
            if (!nc)
                return -ENOMEM;
            if (content)
                cJSON_ReplaceItemInObjectCaseSensitive(m, "content", nc);
            else
                cJSON_AddItemToObject(m, "content", nc);
        } else if (!cJSON_IsString(content)) {
            return fail(err, errlen, "messages[%zu].content: must be a string or an array of %s",
                        i, "text parts");
        }

        cJSON *rc = cJSON_GetObjectItemCaseSensitive(m, "reasoning_content");
        if (rc && !cJSON_IsString(rc) && !cJSON_IsNull(rc))
            return fail(err, errlen, "messages[%zu].reasoning_content: must be a string%s", i, "");
        if (rc && !assistant)
            return fail(err, errlen, "messages[%zu].reasoning_content: only for role %s", i,
                        "'assistant'");
        cJSON *tc = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        if (tc && !cJSON_IsNull(tc)) {
            if (!assistant || !cJSON_IsArray(tc))
                return fail(err, errlen, "messages[%zu].tool_calls: must be an array on an %s", i,
                            "assistant message");
            size_t k = 0;
            for (cJSON *c = tc->child; c; c = c->next, k++) {
                cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
                cJSON *fname = fn ? cJSON_GetObjectItemCaseSensitive(fn, "name") : NULL;
                if (!cJSON_IsObject(c) || !cJSON_IsObject(fn) || !cJSON_IsString(fname)) {
                    if (err && errlen)
                        snprintf(err, errlen, "messages[%zu].tool_calls[%zu]: needs function.name",
                                 i, k);
                    return -EINVAL;
                }
            }
        }
        cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
        if (name && !cJSON_IsString(name))
            return fail(err, errlen, "messages[%zu].name: must be a string%s", i, "");
    }
    return 0;
}

/* ---- reasoning ---- */

bool chat_template_thinking(const struct chat_template *t, const char **start, const char **end)
{
    if (!t || !t->think)
        return false;
    if (start)
        *start = "<think>";
    if (end)
        *end = "</think>";
    return true;
}

bool chat_prompt_opens_thinking(const struct chat_template *t, const char *prompt, size_t len)
{
    if (!t || !t->think || !prompt)
        return false;
    while (len > 0 && (prompt[len - 1] == ' ' || prompt[len - 1] == '\n' ||
                       prompt[len - 1] == '\r' || prompt[len - 1] == '\t'))
        len--;
    static const char tag[] = "<think>";
    size_t tl = sizeof tag - 1;
    return len >= tl && memcmp(prompt + len - tl, tag, tl) == 0;
}
