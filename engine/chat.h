/* SPDX-License-Identifier: MIT */
/*
 * chat.h - chat templates: the Jinja interpreter that runs the template a
 * model ships (tokenizer.chat_template), and the preparation of OpenAI-style
 * messages for it.
 *
 * Threading: a parsed template is immutable; any number of threads may
 * render it at once. Rendering allocates only the output and temporaries.
 */
#ifndef MOED_ENGINE_CHAT_H
#define MOED_ENGINE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

struct cJSON;
struct chat_template;

/* Parses a template. name is used in error messages (a file name or
 * "tokenizer.chat_template"). Errors (ERR_TEMPLATE) name the construct and
 * the line: "tokenizer.chat_template:12: unsupported filter 'wordcount'". */
int chat_template_init(struct chat_template **out, const char *source, const char *name,
                       char *err, size_t errlen);
void chat_template_free(struct chat_template *t);

struct chat_render_args {
    const struct cJSON *messages;  /* array of {role, content, ...} as chat_messages_prepare() left them */
    const struct cJSON *tools;     /* array or NULL */
    bool add_generation_prompt;
    const char *bos_token, *eos_token;
    const struct cJSON *kwargs;    /* object of extra variables (chat_template_kwargs) or NULL */
};

/* Renders the template. On success *out is a malloc'd NUL-terminated string
 * (*out_len bytes). On failure returns ERR_TEMPLATE (or -ENOMEM) and one line
 * in err, e.g. the text of raise_exception(). */
int chat_template_render(const struct chat_template *t, const struct chat_render_args *a,
                         char **out, size_t *out_len, char *err, size_t errlen);

/*
 * Checks and normalizes OpenAI chat messages in place for rendering: roles
 * system, developer (renamed system when the template has no developer
 * role), user, assistant, tool; content as a string or an array of text
 * parts (joined); assistant reasoning_content kept. Returns 0 or -EINVAL with
 * a message naming the field ("messages[2].content: ...") in err.
 */
int chat_messages_prepare(const struct chat_template *t, struct cJSON *messages, char *err,
                          size_t errlen);

/* Reasoning tags the template's model uses ("<think>", "</think>"), or false
 * when it uses none. */
bool chat_template_thinking(const struct chat_template *t, const char **start, const char **end);

/* True when the rendered prompt leaves a reasoning block open at its end
 * (the generation starts inside it). */
bool chat_prompt_opens_thinking(const struct chat_template *t, const char *prompt, size_t len);

#endif
