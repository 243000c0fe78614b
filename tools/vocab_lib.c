/* SPDX-License-Identifier: MIT */
/*
 * vocab_lib.c - tokenizer vocabularies for the model writer: a Hugging Face
 * tokenizer.json (byte-level BPE), a SentencePiece tokenizer.model, or a
 * small made-up byte-level BPE vocabulary, turned into the `tokenizer.ggml.*`
 * metadata that llama.cpp's converter (convert_hf_to_gguf.py with
 * gguf-py's SpecialVocab) writes for the same input.
 *
 * Sits in tools/ and is linked into every tool and test; it uses engine/gguf.h
 * only to write.
 *
 * Invariants: a struct vocab_src owns every string it points to; tokens[i]
 * is never NULL for i < n_tokens (holes become "[PAD<i>]", type UNUSED);
 * every special id is -1 or < n_tokens. Readers check every length and index
 * of their input, so a malformed file gives an error naming it, never a crash.
 */
#include "tools/vocab.h"

#include "common/err.h"
#include "engine/gguf.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Largest token id accepted from a file (keeps allocations sane). */
#define VOCAB_MAX_TOKENS (1u << 24)
/* Largest tokenizer file read into memory. */
#define VOCAB_MAX_FILE ((size_t)1 << 30)

/* ---- small helpers ---- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static char *xstrndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Reads a whole file into a NUL-terminated buffer. Returns 0, -errno or
 * ERR_TOKENIZER (too large); the message names the file. */
static int read_file(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
    int fd, rc = 0;
    struct stat st;
    char *buf = NULL;
    size_t got = 0;

    *data = NULL;
    *len = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return rc;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > VOCAB_MAX_FILE) {
        rc = ERR_TOKENIZER;
        set_err(err, errlen, "%s: not a regular file of at most %zu bytes", path, VOCAB_MAX_FILE);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = -ENOMEM;
        set_err(err, errlen, "%s: out of memory", path);
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            set_err(err, errlen, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir of path joined with name, malloc'd. */
static char *sibling_path(const char *path, const char *name)
{
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
    char *p = malloc(dl + strlen(name) + 1);
    if (p) {
        memcpy(p, path, dl);
        strcpy(p + dl, name);
    }
    return p;
}

static struct vocab_src *vocab_new(void)
{
    struct vocab_src *v = calloc(1, sizeof *v);
    if (v)
        v->bos = v->eos = v->eot = v->unk = v->pad = -1;
    return v;
}

void vocab_src_free(struct vocab_src *v)
{
    if (!v)
        return;
    if (v->tokens)
        for (uint32_t i = 0; i < v->n_tokens; i++)
            free(v->tokens[i]);
    if (v->merges)
        for (uint32_t i = 0; i < v->n_merges; i++)
            free(v->merges[i]);
    free(v->tokens);
    free(v->merges);
    free(v->scores);
    free(v->types);
    free(v->model);
    free(v->pre);
    free(v->chat_template);
    free(v);
}

/* Fills holes (NULL tokens) with "[PAD<id>]" of type UNUSED. */
static int fill_holes(struct vocab_src *v, float hole_score)
{
    for (uint32_t i = 0; i < v->n_tokens; i++) {
        char buf[32];
        if (v->tokens[i])
            continue;
        snprintf(buf, sizeof buf, "[PAD%u]", i);
        v->tokens[i] = xstrdup(buf);
        if (!v->tokens[i])
            return -ENOMEM;
        v->types[i] = VOCAB_TOKEN_UNUSED;
        if (v->scores)
            v->scores[i] = hole_score;
    }
    return 0;
}

/* Grows the token arrays to n entries (new ones NULL / 0). */
static int grow_tokens(struct vocab_src *v, uint32_t n)
{
    char **t;
    int32_t *ty;

    if (n <= v->n_tokens)
        return 0;
    t = realloc(v->tokens, (size_t)n * sizeof *t);
    if (!t)
        return -ENOMEM;
    v->tokens = t;
    ty = realloc(v->types, (size_t)n * sizeof *ty);
    if (!ty)
        return -ENOMEM;
    v->types = ty;
    if (v->scores) {
        float *s = realloc(v->scores, (size_t)n * sizeof *s);
        if (!s)
            return -ENOMEM;
        v->scores = s;
    }
    for (uint32_t i = v->n_tokens; i < n; i++) {
        v->tokens[i] = NULL;
        v->types[i] = 0;
        if (v->scores)
            v->scores[i] = 0.0f;
    }
    v->n_tokens = n;
    return 0;
}

int vocab_src_pad(struct vocab_src *v, uint32_t n_tokens)
{
    int rc;

    if (!v || n_tokens < v->n_tokens || n_tokens > VOCAB_MAX_TOKENS)
        return ERR_INVALID;
    rc = grow_tokens(v, n_tokens);
    if (rc == 0)
        rc = fill_holes(v, -10000.0f); /* the converter's placeholder score */
    return rc;
}

/* ---- Hugging Face tokenizer.json ---- */

/* An id from JSON: an integral number in [0, VOCAB_MAX_TOKENS). */
static bool json_id(const cJSON *it, uint32_t *out)
{
    double d;
    if (!cJSON_IsNumber(it))
        return false;
    d = it->valuedouble;
    if (!(d >= 0.0 && d < (double)VOCAB_MAX_TOKENS) || d != (double)(uint32_t)d)
        return false;
    *out = (uint32_t)d;
    return true;
}

static cJSON *parse_json_file(const char *path, int *rc, char *err, size_t errlen)
{
    char *data;
    size_t len;
    const char *end = NULL;
    cJSON *root;

    *rc = read_file(path, &data, &len, err, errlen);
    if (*rc)
        return NULL;
    root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!root) {
        size_t at = end && end >= data && end <= data + len ? (size_t)(end - data) : 0;
        set_err(err, errlen, "%s: invalid JSON near byte %zu", path, at);
        *rc = ERR_TOKENIZER;
    }
    free(data);
    return root;
}

/* The text of a tokenizer_config.json special-token entry: a string or an
 * object with a string "content"; NULL otherwise. */
static const char *config_token_text(const cJSON *cfg, const char *key)
{
    const cJSON *e = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, key) : NULL;
    if (cJSON_IsString(e))
        return e->valuestring;
    if (cJSON_IsObject(e)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (cJSON_IsString(c))
            return c->valuestring;
    }
    return NULL;
}

static bool str_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static bool has_prefix_suffix(const char *s, const char *pre, const char *suf)
{
    size_t n = strlen(s), np = strlen(pre), ns = strlen(suf);
    return n >= np + ns && memcmp(s, pre, np) == 0 && memcmp(s + n - ns, suf, ns) == 0;
}

/* The converter's does_token_look_special(): added tokens that some models
 * forget to mark special are made CONTROL anyway. */
static bool token_looks_special(const char *t)
{
    return strcmp(t, "<pad>") == 0 || strcmp(t, "<mask>") == 0 || strcmp(t, "<2mass>") == 0 ||
           strcmp(t, "[@BOS@]") == 0 || has_prefix_suffix(t, "<|", "|>") ||
           has_prefix_suffix(t, "<\xef\xbd\x9c", "\xef\xbd\x9c>") || /* <｜ ... ｜> */
           has_prefix_suffix(t, "<unused", ">");
}

/* s with every "▁" (U+2581) replaced by a space, malloc'd. */
static char *replace_spm_space(const char *s)
{
    size_t n = strlen(s), o = 0;
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
            d[o++] = ' ';
            i += 3;
        } else {
            d[o++] = s[i++];
        }
    }
    d[o] = '\0';
    return d;
}

/* A merge "a b" from a 2-element array: spaces inside a part become U+0120
 * ("Ġ"), as the converter encodes the new tokenizers format. */
static char *merge_from_pair(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b), sp = 0, o = 0;
    char *d;

    for (size_t i = 0; i < na; i++)
        sp += a[i] == ' ';
    for (size_t i = 0; i < nb; i++)
        sp += b[i] == ' ';
    d = malloc(na + nb + sp + 2);
    if (!d)
        return NULL;
    for (int part = 0; part < 2; part++) {
        const char *s = part ? b : a;
        if (part)
            d[o++] = ' ';
        for (; *s; s++) {
            if (*s == ' ') {
                d[o++] = (char)0xc4;
                d[o++] = (char)0xa0;
            } else {
                d[o++] = *s;
            }
        }
    }
    d[o] = '\0';
    return d;
}

/* Special-token bookkeeping in the converter's order of precedence. */
enum { SP_BOS, SP_EOS, SP_UNK, SP_SEP, SP_PAD, SP_CLS, SP_MASK, SP_EOT, SP_COUNT };
static const char *const sp_names[SP_COUNT] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask", "eot"};

struct hf_special {
    const char *text[SP_COUNT]; /* token text per type (borrowed from the config tree) */
    int64_t id[SP_COUNT];       /* -1 when unset */
    int add_bos, add_eos;       /* -1 unset, 0, 1 */
    bool want_eot;
};

/* First added token with this content; -1 when none (the converter looks
 * only at added_tokens, not at the model vocabulary). */
static int64_t added_token_id(const cJSON *added, const char *content)
{
    const cJSON *a;
    if (!content)
        return -1;
    cJSON_ArrayForEach(a, added) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        uint32_t id;
        if (cJSON_IsString(c) && strcmp(c->valuestring, content) == 0 &&
            json_id(cJSON_GetObjectItemCaseSensitive(a, "id"), &id))
            return id;
    }
    return -1;
}

/* The SpecialVocab logic of gguf-py: the post-processor decides add_bos /
 * add_eos (and may move eos to eot), tokenizer_config.json names the special
 * tokens, which are looked up among added_tokens. */
static void hf_special_from_config(struct hf_special *sp, const cJSON *root, const cJSON *added,
                                   const cJSON *cfg)
{
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *procs, *p;

    if (cfg)
        for (int t = 0; t < SP_COUNT; t++) {
            char key[32];
            snprintf(key, sizeof key, "%s_token", sp_names[t]);
            sp->text[t] = config_token_text(cfg, key);
        }
    if (!sp->text[SP_BOS] && sp->text[SP_CLS] && cfg)
        sp->text[SP_BOS] = sp->text[SP_CLS];
    if (!sp->text[SP_EOS] && sp->text[SP_SEP] && cfg)
        sp->text[SP_EOS] = sp->text[SP_SEP];

    procs = cJSON_IsObject(post) ? cJSON_GetObjectItemCaseSensitive(post, "processors") : NULL;
    if (cJSON_IsObject(post) && !cJSON_IsArray(procs))
        procs = NULL;
    for (p = procs ? procs->child : (cJSON_IsObject(post) ? post : NULL); p;
         p = procs ? p->next : NULL) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *single;
        int n;
        if (!cJSON_IsString(type))
            continue;
        if (strcmp(type->valuestring, "RobertaProcessing") == 0) {
            sp->add_bos = sp->add_eos = 1;
            continue;
        }
        if (strcmp(type->valuestring, "TemplateProcessing") != 0)
            continue;
        /* Only the leading and trailing special tokens of the single-sequence
         * template matter here. */
        single = cJSON_GetObjectItemCaseSensitive(p, "single");
        n = cJSON_IsArray(single) ? cJSON_GetArraySize(single) : 0;
        if (n > 1) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken"), "id");
            const cJSON *l = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, n - 1), "SpecialToken"),
                "id");
            if (cJSON_IsString(f) && f->valuestring[0]) {
                if (!cfg)
                    sp->text[SP_BOS] = f->valuestring;
                sp->add_bos = str_eq(f->valuestring, sp->text[SP_BOS]) ||
                              str_eq(f->valuestring, sp->text[SP_CLS]);
            }
            if (cJSON_IsString(l) && l->valuestring[0]) {
                if (!cfg) {
                    sp->text[SP_EOS] = l->valuestring;
                } else if (!str_eq(l->valuestring, sp->text[SP_EOS])) {
                    if (!sp->want_eot) {
                        sp->want_eot = true;
                        sp->text[SP_EOT] = sp->text[SP_EOS];
                    }
                    sp->text[SP_EOS] = l->valuestring;
                }
                sp->add_eos = str_eq(l->valuestring, sp->text[SP_EOS]);
            }
        }
    }
    if (!cfg)
        return; /* the converter stops here without a tokenizer_config.json */

    for (int t = 0; t < SP_COUNT; t++) {
        char key[32];
        const cJSON *a;
        if (t == SP_EOT && !sp->want_eot)
            continue;
        snprintf(key, sizeof key, "add_%s_token", sp_names[t]);
        a = cJSON_GetObjectItemCaseSensitive(cfg, key);
        if (cJSON_IsBool(a)) {
            if (t == SP_BOS)
                sp->add_bos = cJSON_IsTrue(a);
            else if (t == SP_EOS)
                sp->add_eos = cJSON_IsTrue(a);
        }
        if (sp->id[t] < 0)
            sp->id[t] = added_token_id(added, sp->text[t]);
    }
}

/* config.json next to tokenizer.json: *_token_id fill types still unset. */
static void hf_special_from_model_config(struct hf_special *sp, const cJSON *mcfg)
{
    static const int types[] = {SP_BOS, SP_EOS, SP_UNK, SP_SEP, SP_PAD, SP_CLS, SP_MASK};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char key[32];
        uint32_t id;
        snprintf(key, sizeof key, "%s_token_id", sp_names[types[i]]);
        if (sp->id[types[i]] < 0 && json_id(cJSON_GetObjectItemCaseSensitive(mcfg, key), &id))
            sp->id[types[i]] = id;
    }
}

/* tokenizer_config.json's chat_template: a string, or a list of {name,
 * template} of which the "default" one is kept; else chat_template.jinja or
 * chat_template.json beside the config. */
static int hf_chat_template(struct vocab_src *v, const cJSON *cfg, const char *config_path)
{
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    char *alt;
    int rc = 0;

    if (cJSON_IsString(ct)) {
        v->chat_template = xstrdup(ct->valuestring);
        return v->chat_template ? 0 : -ENOMEM;
    }
    if (cJSON_IsArray(ct)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, ct) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *tmpl = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0 &&
                cJSON_IsString(tmpl)) {
                v->chat_template = xstrdup(tmpl->valuestring);
                return v->chat_template ? 0 : -ENOMEM;
            }
        }
        return 0;
    }
    if (ct)
        return 0; /* wrong type: ignored, as the converter does */
    alt = sibling_path(config_path, "chat_template.jinja");
    if (!alt)
        return -ENOMEM;
    if (file_exists(alt)) {
        char *data;
        size_t len;
        char e[8];
        if (read_file(alt, &data, &len, e, sizeof e) == 0)
            v->chat_template = data;
    } else {
        free(alt);
        alt = sibling_path(config_path, "chat_template.json");
        if (!alt)
            return -ENOMEM;
        if (file_exists(alt)) {
            char e[8];
            cJSON *j = parse_json_file(alt, &rc, e, sizeof e);
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
            if (cJSON_IsString(t))
                v->chat_template = xstrdup(t->valuestring);
            cJSON_Delete(j);
            rc = 0;
        }
    }
    free(alt);
    return rc;
}

static int hf_build(struct vocab_src *v, const cJSON *root, const char *path, const char *pre,
                    char *err, size_t errlen)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *it;
    uint32_t n = 0, id = 0;

    if (!cJSON_IsObject(root) || !cJSON_IsObject(model)) {
        set_err(err, errlen, "%s: not a tokenizer.json (no \"model\" object)", path);
        return ERR_TOKENIZER;
    }
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0) {
        set_err(err, errlen, "%s: tokenizer model type %s is not supported (byte-level BPE only)",
                path, cJSON_IsString(type) ? type->valuestring : "(missing)");
        return ERR_TOKENIZER;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"))) {
        set_err(err, errlen, "%s: BPE with byte_fallback (SentencePiece-style) is not supported; "
                "use the tokenizer.model", path);
        return ERR_TOKENIZER;
    }
    if (!cJSON_IsObject(vocab) || !vocab->child) {
        set_err(err, errlen, "%s: model.vocab is missing or empty", path);
        return ERR_TOKENIZER;
    }
    if (added && !cJSON_IsArray(added)) {
        set_err(err, errlen, "%s: added_tokens is not an array", path);
        return ERR_TOKENIZER;
    }

    /* Size: the largest id + 1, over the vocabulary and the added tokens. */
    cJSON_ArrayForEach(it, vocab) {
        if (!it->string || !json_id(it, &id)) {
            set_err(err, errlen, "%s: model.vocab entry \"%s\" has no valid id", path,
                    it->string ? it->string : "");
            return ERR_TOKENIZER;
        }
        if (id + 1 > n)
            n = id + 1;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(c) || !json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), &id)) {
            set_err(err, errlen, "%s: added_tokens entry without a content string and a valid id",
                    path);
            return ERR_TOKENIZER;
        }
        if (id + 1 > n)
            n = id + 1;
    }
    v->tokens = calloc(n, sizeof *v->tokens);
    v->types = calloc(n, sizeof *v->types);
    if (!v->tokens || !v->types)
        return -ENOMEM;
    v->n_tokens = n;

    cJSON_ArrayForEach(it, vocab) {
        json_id(it, &id);
        if (v->tokens[id]) {
            set_err(err, errlen, "%s: token id %u appears twice in model.vocab", path, id);
            return ERR_TOKENIZER;
        }
        v->tokens[id] = xstrdup(it->string);
        if (!v->tokens[id])
            return -ENOMEM;
        v->types[id] = VOCAB_TOKEN_NORMAL;
    }
    /* Added tokens take their id's slot, even when the vocabulary has it. */
    cJSON_ArrayForEach(it, added) {
        const char *c = cJSON_GetObjectItemCaseSensitive(it, "content")->valuestring;
        bool special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special"));
        char *t;
        json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), &id);
        if (special || token_looks_special(c)) {
            t = xstrdup(c);
            v->types[id] = VOCAB_TOKEN_CONTROL;
        } else {
            /* The converter pre-normalizes user-defined spaces. */
            t = replace_spm_space(c);
            v->types[id] = VOCAB_TOKEN_USER_DEFINED;
        }
        if (!t)
            return -ENOMEM;
        free(v->tokens[id]);
        v->tokens[id] = t;
    }

    if (merges && !cJSON_IsArray(merges)) {
        set_err(err, errlen, "%s: model.merges is not an array", path);
        return ERR_TOKENIZER;
    }
    if (merges && merges->child) {
        uint32_t m = 0;
        int nm = cJSON_GetArraySize(merges);
        v->merges = calloc((size_t)nm, sizeof *v->merges);
        if (!v->merges)
            return -ENOMEM;
        cJSON_ArrayForEach(it, merges) {
            char *s = NULL;
            if (cJSON_IsString(it)) {
                s = xstrdup(it->valuestring);
            } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                       cJSON_IsString(it->child) && cJSON_IsString(it->child->next)) {
                s = merge_from_pair(it->child->valuestring, it->child->next->valuestring);
            } else {
                set_err(err, errlen, "%s: merge %u is neither \"a b\" nor [\"a\", \"b\"]", path, m);
                return ERR_TOKENIZER;
            }
            if (!s)
                return -ENOMEM;
            v->merges[m++] = s;
            v->n_merges = m;
        }
    }

    v->model = xstrdup("gpt2");
    v->pre = xstrdup(pre && *pre ? pre : "default");
    if (!v->model || !v->pre)
        return -ENOMEM;
    return 0;
}

int vocab_src_from_hf(struct vocab_src **out, const char *json_path, const char *config_path,
                      const char *pre, char *err, size_t errlen)
{
    struct vocab_src *v = NULL;
    struct hf_special sp;
    cJSON *root = NULL, *cfg = NULL, *mcfg = NULL;
    const cJSON *added;
    char *mcfg_path = NULL;
    int rc;

    *out = NULL;
    if (!json_path) {
        set_err(err, errlen, "vocab_src_from_hf: no tokenizer.json path");
        return ERR_INVALID;
    }
    root = parse_json_file(json_path, &rc, err, errlen);
    if (!root)
        return rc;
    if (config_path) {
        cfg = parse_json_file(config_path, &rc, err, errlen);
        if (!cfg)
            goto out;
        if (!cJSON_IsObject(cfg)) {
            set_err(err, errlen, "%s: not a JSON object", config_path);
            rc = ERR_TOKENIZER;
            goto out;
        }
    }
    /* The model's config.json, when it sits beside tokenizer.json, gives the
     * padded vocabulary size and fallback special ids, as in the converter. */
    mcfg_path = sibling_path(json_path, "config.json");
    if (!mcfg_path) {
        rc = -ENOMEM;
        goto out;
    }
    if (file_exists(mcfg_path)) {
        mcfg = parse_json_file(mcfg_path, &rc, err, errlen);
        if (!mcfg)
            goto out;
    }

    v = vocab_new();
    if (!v) {
        rc = -ENOMEM;
        goto out;
    }
    rc = hf_build(v, root, json_path, pre, err, errlen);
    if (rc)
        goto out;
    if (mcfg) {
        uint32_t vs;
        if (json_id(cJSON_GetObjectItemCaseSensitive(mcfg, "vocab_size"), &vs)) {
            if (vs < v->n_tokens) {
                set_err(err, errlen, "%s: vocab_size %u is below the tokenizer's %u ids", mcfg_path,
                        vs, v->n_tokens);
                rc = ERR_TOKENIZER;
                goto out;
            }
            rc = grow_tokens(v, vs);
            if (rc)
                goto out;
        }
    }
    rc = fill_holes(v, 0.0f);
    if (rc)
        goto out;

    memset(&sp, 0, sizeof sp);
    for (int t = 0; t < SP_COUNT; t++)
        sp.id[t] = -1;
    sp.add_bos = sp.add_eos = -1;
    added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    hf_special_from_config(&sp, root, added, cfg);
    if (mcfg)
        hf_special_from_model_config(&sp, mcfg);
    else if (sp.id[SP_BOS] < 0 && v->pre && strcmp(v->pre, "qwen2") == 0)
        /* Qwen's tokenizer_config.json has bos_token null; its config.json
         * says bos_token_id = <|endoftext|>, which the converter writes. */
        sp.id[SP_BOS] = added_token_id(added, "<|endoftext|>");

    v->bos = sp.id[SP_BOS] >= 0 && sp.id[SP_BOS] < v->n_tokens ? (int32_t)sp.id[SP_BOS] : -1;
    v->eos = sp.id[SP_EOS] >= 0 && sp.id[SP_EOS] < v->n_tokens ? (int32_t)sp.id[SP_EOS] : -1;
    v->eot = sp.id[SP_EOT] >= 0 && sp.id[SP_EOT] < v->n_tokens ? (int32_t)sp.id[SP_EOT] : -1;
    v->unk = sp.id[SP_UNK] >= 0 && sp.id[SP_UNK] < v->n_tokens ? (int32_t)sp.id[SP_UNK] : -1;
    v->pad = sp.id[SP_PAD] >= 0 && sp.id[SP_PAD] < v->n_tokens ? (int32_t)sp.id[SP_PAD] : -1;
    v->add_bos = sp.add_bos == 1;
    v->add_eos = sp.add_eos == 1;
    v->add_bos_set = sp.add_bos >= 0;
    v->add_eos_set = sp.add_eos >= 0;

    if (cfg) {
        rc = hf_chat_template(v, cfg, config_path);
        if (rc)
            goto out;
    }
    rc = 0;
out:
    if (rc) {
        if (rc == -ENOMEM)
            set_err(err, errlen, "%s: out of memory", json_path);
        vocab_src_free(v);
        v = NULL;
    }
    free(mcfg_path);
    cJSON_Delete(mcfg);
    cJSON_Delete(cfg);
    cJSON_Delete(root);
    *out = v;
    return rc;
}

/* ---- SentencePiece tokenizer.model (protobuf) ---- */

/* A bounded reader over protobuf wire format. */
struct pb {
    const uint8_t *p, *end;
};

enum { PB_VARINT = 0, PB_I64 = 1, PB_LEN = 2, PB_I32 = 5 };

static bool pb_varint(struct pb *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b;
        if (r->p >= r->end)
            return false;
        b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false; /* more than 10 bytes */
}

/* Reads a tag; field 0 is invalid. */
static bool pb_tag(struct pb *r, uint32_t *field, uint32_t *wire)
{
    uint64_t t;
    if (!pb_varint(r, &t) || (t >> 3) == 0 || (t >> 3) > 0x1fffffff)
        return false;
    *field = (uint32_t)(t >> 3);
    *wire = (uint32_t)(t & 7);
    return true;
}

/* A length-delimited payload as a sub-reader. */
static bool pb_len(struct pb *r, struct pb *sub)
{
    uint64_t n;
    if (!pb_varint(r, &n) || n > (uint64_t)(r->end - r->p))
        return false;
    sub->p = r->p;
    sub->end = r->p + n;
    r->p += n;
    return true;
}

static bool pb_skip(struct pb *r, uint32_t wire)
{
    uint64_t v;
    struct pb sub;
    switch (wire) {
    case PB_VARINT:
        return pb_varint(r, &v);
    case PB_I64:
        if (r->end - r->p < 8)
            return false;
        r->p += 8;
        return true;
    case PB_LEN:
        return pb_len(r, &sub);
    case PB_I32:
        if (r->end - r->p < 4)
            return false;
        r->p += 4;
        return true;
    default:
        return false; /* groups (3, 4) are not used by sentencepiece */
    }
}

static bool pb_fixed32(struct pb *r, uint32_t *out)
{
    if (r->end - r->p < 4)
        return false;
    *out = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
           (uint32_t)r->p[3] << 24;
    r->p += 4;
    return true;
}

struct spm_piece {
    const uint8_t *text;
    size_t len;
    float score;
    int32_t type; /* sentencepiece's enum: 1 NORMAL .. 6 BYTE */
};

/* message SentencePiece { string piece = 1; float score = 2; Type type = 3; } */
static bool spm_parse_piece(struct pb r, struct spm_piece *pc)
{
    pc->text = NULL;
    pc->len = 0;
    pc->score = 0.0f;
    pc->type = 1;
    while (r.p < r.end) {
        uint32_t f, w;
        if (!pb_tag(&r, &f, &w))
            return false;
        if (f == 1 && w == PB_LEN) {
            struct pb s;
            if (!pb_len(&r, &s))
                return false;
            pc->text = s.p;
            pc->len = (size_t)(s.end - s.p);
        } else if (f == 2 && w == PB_I32) {
            uint32_t u;
            if (!pb_fixed32(&r, &u))
                return false;
            memcpy(&pc->score, &u, sizeof u);
        } else if (f == 3 && w == PB_VARINT) {
            uint64_t t;
            if (!pb_varint(&r, &t))
                return false;
            pc->type = (int32_t)t;
        } else if (!pb_skip(&r, w)) {
            return false;
        }
    }
    return pc->text != NULL;
}

struct spm_trainer {
    int32_t unk, bos, eos, pad;
};

/* TrainerSpec: unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43 (int32). */
static bool spm_parse_trainer(struct pb r, struct spm_trainer *t)
{
    while (r.p < r.end) {
        uint32_t f, w;
        uint64_t val;
        if (!pb_tag(&r, &f, &w))
            return false;
        if (f >= 40 && f <= 43 && w == PB_VARINT) {
            if (!pb_varint(&r, &val))
                return false;
            /* int32 is sign-extended to 64 bits on the wire. */
            int32_t iv = (int32_t)(uint32_t)val;
            if (f == 40)
                t->unk = iv;
            else if (f == 41)
                t->bos = iv;
            else if (f == 42)
                t->eos = iv;
            else
                t->pad = iv;
        } else if (!pb_skip(&r, w)) {
            return false;
        }
    }
    return true;
}

/* Checks that a sub-message is well-formed wire format (fields skipped). */
static bool pb_check_message(struct pb r)
{
    while (r.p < r.end) {
        uint32_t f, w;
        if (!pb_tag(&r, &f, &w) || !pb_skip(&r, w))
            return false;
    }
    return true;
}

int vocab_src_from_spm(struct vocab_src **out, const char *model_path, char *err, size_t errlen)
{
    struct vocab_src *v = NULL;
    struct spm_piece *pcs = NULL;
    struct spm_trainer tr = {.unk = 0, .bos = 1, .eos = 2, .pad = -1};
    size_t n = 0, cap = 0, len;
    char *data = NULL;
    struct pb r;
    int rc;

    *out = NULL;
    rc = read_file(model_path, &data, &len, err, errlen);
    if (rc)
        return rc;
    r.p = (const uint8_t *)data;
    r.end = r.p + len;
    rc = ERR_TOKENIZER;
    while (r.p < r.end) {
        uint32_t f, w;
        size_t at = (size_t)(r.p - (const uint8_t *)data);
        struct pb sub;
        if (!pb_tag(&r, &f, &w)) {
            set_err(err, errlen, "%s: bad protobuf tag at byte %zu", model_path, at);
            goto out;
        }
        if (w != PB_LEN || f > 5) {
            if (!pb_skip(&r, w)) {
                set_err(err, errlen, "%s: truncated or bad field %u at byte %zu", model_path, f, at);
                goto out;
            }
            continue;
        }
        if (!pb_len(&r, &sub)) {
            set_err(err, errlen, "%s: field %u at byte %zu runs past the end of the file",
                    model_path, f, at);
            goto out;
        }
        if (f == 1) {
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 1024;
                struct spm_piece *np;
                if (nc > VOCAB_MAX_TOKENS)
                    nc = VOCAB_MAX_TOKENS;
                if (n == nc) {
                    set_err(err, errlen, "%s: more than %u pieces", model_path, VOCAB_MAX_TOKENS);
                    goto out;
                }
                np = realloc(pcs, nc * sizeof *np);
                if (!np) {
                    rc = -ENOMEM;
                    set_err(err, errlen, "%s: out of memory", model_path);
                    goto out;
                }
                pcs = np;
                cap = nc;
            }
            if (!spm_parse_piece(sub, &pcs[n])) {
                set_err(err, errlen, "%s: piece %zu (byte %zu) is malformed", model_path, n, at);
                goto out;
            }
            if (pcs[n].type < 1 || pcs[n].type > 6) {
                set_err(err, errlen, "%s: piece %zu has unknown type %d", model_path, n,
                        pcs[n].type);
                goto out;
            }
            if (memchr(pcs[n].text, 0, pcs[n].len)) {
                set_err(err, errlen, "%s: piece %zu contains a NUL byte", model_path, n);
                goto out;
            }
            n++;
        } else if (f == 2) {
            if (!spm_parse_trainer(sub, &tr)) {
                set_err(err, errlen, "%s: trainer_spec is malformed", model_path);
                goto out;
            }
        } else if (!pb_check_message(sub)) {
            set_err(err, errlen, "%s: field %u (byte %zu) is malformed", model_path, f, at);
            goto out;
        }
    }
    if (n == 0) {
        set_err(err, errlen, "%s: no pieces (not a SentencePiece model)", model_path);
        goto out;
    }

    rc = -ENOMEM;
    v = vocab_new();
    if (!v)
        goto oom;
    v->tokens = calloc(n, sizeof *v->tokens);
    v->scores = calloc(n, sizeof *v->scores);
    v->types = calloc(n, sizeof *v->types);
    if (!v->tokens || !v->scores || !v->types)
        goto oom;
    v->n_tokens = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        int32_t t;
        v->tokens[i] = xstrndup((const char *)pcs[i].text, pcs[i].len);
        if (!v->tokens[i])
            goto oom;
        v->scores[i] = pcs[i].score;
        /* The converter asks IsUnknown / IsControl / IsUnused / IsByte, so a
         * USER_DEFINED piece is written as NORMAL. */
        switch (pcs[i].type) {
        case 2: t = VOCAB_TOKEN_UNKNOWN; break;
        case 3: t = VOCAB_TOKEN_CONTROL; break;
        case 5: t = VOCAB_TOKEN_UNUSED; break;
        case 6: t = VOCAB_TOKEN_BYTE; break;
        default: t = VOCAB_TOKEN_NORMAL; break;
        }
        v->types[i] = t;
    }
    v->model = xstrdup("llama");
    v->pre = xstrdup("default");
    if (!v->model || !v->pre)
        goto oom;
    v->unk = tr.unk >= 0 && (size_t)tr.unk < n ? tr.unk : -1;
    v->bos = tr.bos >= 0 && (size_t)tr.bos < n ? tr.bos : -1;
    v->eos = tr.eos >= 0 && (size_t)tr.eos < n ? tr.eos : -1;
    v->pad = tr.pad >= 0 && (size_t)tr.pad < n ? tr.pad : -1;
    /* As a Llama-2 tokenizer_config.json says (add_bos_token true,
     * add_eos_token false); llama.cpp's defaults for "llama" agree. */
    v->add_bos = true;
    v->add_eos = false;
    v->add_bos_set = v->add_eos_set = true;
    rc = 0;
    goto out;
oom:
    set_err(err, errlen, "%s: out of memory", model_path);
out:
    if (rc) {
        vocab_src_free(v);
        v = NULL;
    }
    free(pcs);
    free(data);
    *out = v;
    return rc;
}

/* ---- synthetic byte-level BPE ---- */

/* Training text: plain English prose and a little C and Python, ASCII only. */
static const char synth_text[] =
    "The quick brown fox jumps over the lazy dog. A language model reads text as a sequence of "
    "tokens, and each token is a small piece of a word, a whole word, or a mark of punctuation. "
    "The tokenizer turns the text into tokens before the model sees it, and turns the tokens "
    "back into text after the model has written them. In this test the vocabulary is small, so "
    "common words such as the, and, of, to, in, is, that, it and for become single tokens while "
    "rare words are spelled out from smaller pieces.\n"
    "\n"
    "A mixture of experts model has many feed forward networks in each layer, called experts, "
    "and a router that picks a few of them for every token. Only the chosen experts run, so the "
    "model can hold far more parameters than it uses for any one token. The server keeps the "
    "experts that are used often in fast memory and reads the others from slower memory when "
    "they are needed. A good predictor guesses which experts the next layer will want, so the "
    "server can start to read them early and the reads overlap with the work of the current "
    "layer. When the guess is right the token is ready sooner; when it is wrong the server waits "
    "for the read to finish, and the answer is the same either way.\n"
    "\n"
    "Time and memory are the two costs that matter most. The time to first token depends on how "
    "long the prompt is, and the time per token after that depends on how many experts must be "
    "read for each step. The memory holds the weights, the key and value cache for every "
    "sequence, and the buffers that carry data between the host and the device. There is never "
    "enough of it, so the cache must decide what to keep and what to let go.\n"
    "\n"
    "Here is a short function in C that adds up the numbers in an array:\n"
    "\n"
    "static int sum_array(const int *values, size_t count)\n"
    "{\n"
    "    int total = 0;\n"
    "    for (size_t i = 0; i < count; i++)\n"
    "        total += values[i];\n"
    "    return total;\n"
    "}\n"
    "\n"
    "And here is the same idea in Python, with a test that checks the result:\n"
    "\n"
    "def sum_list(values):\n"
    "    total = 0\n"
    "    for value in values:\n"
    "        total += value\n"
    "    return total\n"
    "\n"
    "def test_sum_list():\n"
    "    assert sum_list([1, 2, 3]) == 6\n"
    "    assert sum_list([]) == 0\n"
    "\n"
    "The user asked the assistant a question, and the assistant gave an answer. The user then "
    "asked for more detail, and the assistant explained the steps one at a time: first read the "
    "file, then check that it is well formed, then load the weights, and at last start the "
    "server. If something goes wrong, the error message should say what went wrong and where, "
    "so that the person who reads it knows what to do next. Good messages name the file, the "
    "line and the value that was expected, and they do not blame the user.\n"
    "\n"
    "It was a bright cold day in April, and the clocks were striking thirteen. She walked along "
    "the river to the old bridge, where the water ran fast and clear over the stones. Children "
    "were playing on the grass, and a man was reading a newspaper on a bench in the shade of a "
    "tree. They talked about the weather, the price of bread, and the train that was late again "
    "this morning. Nobody knew that the day would be remembered for a long time.\n"
    "\n"
    "Numbers appear in text too: 1, 2, 3, 10, 42, 100, 2024 and 3.14 are all split into single "
    "digits by the pre-tokenizer, so the model learns to read them one digit at a time. Words "
    "like don't, it's, we're, they've, I'm, you'll and she'd keep their endings as separate "
    "pieces. Punctuation such as (parentheses), [brackets], {braces}, \"quotes\", commas, "
    "periods; colons: and question marks? stays apart from the letters around it.\n"
    "\n"
    "To build the program, run make in the top folder; to run the tests, run make test. The "
    "configuration file lists every setting with its default value and its unit, for example:\n"
    "\n"
    "{\n"
    "    \"listen\": \"127.0.0.1:8080\",\n"
    "    \"model\": \"models/small.gguf\",\n"
    "    \"threads\": 8,\n"
    "    \"cache_size_mb\": 4096\n"
    "}\n"
    "\n"
    "Winter came early that year. The farmers brought the sheep down from the hills, stacked "
    "wood against the walls of their houses, and mended the roofs before the first snow. In the "
    "evenings the family sat by the fire, the grandmother told stories about the war, and the "
    "youngest boy fell asleep with his head on the table. Outside, the wind blew through the "
    "empty fields and the stars were very bright above the dark line of the mountains.\n"
    "\n"
    "class Counter:\n"
    "    def __init__(self):\n"
    "        self.counts = {}\n"
    "\n"
    "    def add(self, word):\n"
    "        self.counts[word] = self.counts.get(word, 0) + 1\n"
    "\n"
    "    def most_common(self, n):\n"
    "        return sorted(self.counts.items(), key=lambda kv: -kv[1])[:n]\n"
    "\n"
    "Science begins with careful observation. A scientist measures something, writes down the "
    "result, repeats the measurement, and compares it with what a theory predicts. When the "
    "numbers disagree, either the measurement or the theory is wrong, and finding out which is "
    "often the most interesting part of the work. Good experiments are simple, and their "
    "results can be checked by other people in other places.\n";

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the
 * others to U+0100 + n in byte order. Writes the UTF-8 of byte b's
 * character into out (3 bytes at most) and returns its length. */
static int byte_to_unicode(unsigned b, char *out)
{
    unsigned cp;
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) {
        cp = b;
    } else {
        unsigned n = 0;
        for (unsigned x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff)))
                n++;
        cp = 0x100 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

static bool c_letter(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}
static bool c_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static bool c_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
static bool c_nl(unsigned char c) { return c == '\n' || c == '\r'; }

/* Length of the next piece of s[i..n) under the Qwen2 pre-tokenizer regex
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
 *   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * for ASCII text (bytes >= 0x80 count as letters). Always >= 1. */
static size_t qwen2_piece(const unsigned char *s, size_t i, size_t n)
{
    static const char *const contr[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    size_t j, k;

    if (s[i] == '\'')
        for (size_t c = 0; c < sizeof contr / sizeof contr[0]; c++) {
            size_t l = strlen(contr[c]);
            if (i + l <= n && strncasecmp((const char *)s + i, contr[c], l) == 0)
                return l;
        }
    j = i;
    if (!c_nl(s[j]) && !c_letter(s[j]) && !c_digit(s[j]) && j + 1 < n && c_letter(s[j + 1]))
        j++;
    if (c_letter(s[j])) {
        while (j < n && c_letter(s[j]))
            j++;
        return j - i;
    }
    if (c_digit(s[i]))
        return 1;
    j = i + (s[i] == ' ');
    if (j < n && !c_space(s[j]) && !c_letter(s[j]) && !c_digit(s[j])) {
        while (j < n && !c_space(s[j]) && !c_letter(s[j]) && !c_digit(s[j]))
            j++;
        while (j < n && c_nl(s[j]))
            j++;
        return j - i;
    }
    /* What is left starts with whitespace. */
    for (k = i; k < n && c_space(s[k]); k++)
        ;
    for (j = k; j > i; j--)
        if (c_nl(s[j - 1]))
            return j - i; /* \s*[\r\n]+ */
    if (k == n || k - 1 == i)
        return k - i; /* \s+(?!\S) at the end, or a lone \s+ */
    return k - 1 - i; /* leave the last space for the next word */
}

struct synth_word {
    uint32_t *sym; /* token ids */
    uint32_t n;
    uint32_t count;
};

struct synth {
    char **tok;  /* token strings */
    uint32_t n_tok, cap_tok;
    char **merges;
    uint32_t n_merges, cap_merges;
    struct synth_word *words;
    uint32_t n_words, cap_words;
};

static void synth_free(struct synth *s)
{
    for (uint32_t i = 0; i < s->n_tok; i++)
        free(s->tok[i]);
    for (uint32_t i = 0; i < s->n_merges; i++)
        free(s->merges[i]);
    for (uint32_t i = 0; i < s->n_words; i++)
        free(s->words[i].sym);
    free(s->tok);
    free(s->merges);
    free(s->words);
}

static int push_str(char ***arr, uint32_t *n, uint32_t *cap, char *str)
{
    if (!str)
        return -ENOMEM;
    if (*n == *cap) {
        uint32_t nc = *cap ? *cap * 2 : 512;
        char **na = realloc(*arr, nc * sizeof *na);
        if (!na) {
            free(str);
            return -ENOMEM;
        }
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = str;
    return 0;
}

/* Adds a word (a piece of the pre-tokenized text), counting repeats. */
static int synth_add_word(struct synth *s, const unsigned char *w, size_t len)
{
    for (uint32_t i = 0; i < s->n_words; i++) {
        struct synth_word *x = &s->words[i];
        bool same = x->n == len;
        for (size_t k = 0; same && k < len; k++)
            same = x->sym[k] == w[k];
        if (same) {
            x->count++;
            return 0;
        }
    }
    if (s->n_words == s->cap_words) {
        uint32_t nc = s->cap_words ? s->cap_words * 2 : 256;
        struct synth_word *nw = realloc(s->words, nc * sizeof *nw);
        if (!nw)
            return -ENOMEM;
        s->words = nw;
        s->cap_words = nc;
    }
    struct synth_word *x = &s->words[s->n_words];
    x->sym = malloc(len * sizeof *x->sym);
    if (!x->sym)
        return -ENOMEM;
    for (size_t k = 0; k < len; k++)
        x->sym[k] = w[k];
    x->n = (uint32_t)len;
    x->count = 1;
    s->n_words++;
    return 0;
}

static uint32_t synth_find_token(const struct synth *s, const char *t)
{
    for (uint32_t i = 0; i < s->n_tok; i++)
        if (strcmp(s->tok[i], t) == 0)
            return i;
    return UINT32_MAX;
}

struct synth_pair {
    uint32_t a, b, count;
};

static int pair_cmp(const void *x, const void *y)
{
    const struct synth_pair *p = x, *q = y;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    if (p->b != q->b)
        return p->b < q->b ? -1 : 1;
    return 0;
}

/* One step of BPE training: finds the most frequent adjacent pair (ties:
 * the smaller left token string, then the smaller right one), records the
 * merge, and rewrites the words. Returns 1 when no pair is left. */
static int synth_merge_step(struct synth *s)
{
    uint32_t best_a = 0, best_b = 0;
    uint64_t best_c = 0;
    struct synth_pair *pairs;
    size_t np = 0;

    for (uint32_t w = 0; w < s->n_words; w++)
        np += s->words[w].n ? s->words[w].n - 1 : 0;
    if (np == 0)
        return 1;
    pairs = malloc(np * sizeof *pairs);
    if (!pairs)
        return -ENOMEM;
    np = 0;
    for (uint32_t w = 0; w < s->n_words; w++) {
        const struct synth_word *x = &s->words[w];
        for (uint32_t k = 0; k + 1 < x->n; k++)
            pairs[np++] = (struct synth_pair){x->sym[k], x->sym[k + 1], x->count};
    }
    qsort(pairs, np, sizeof *pairs, pair_cmp);
    for (size_t i = 0; i < np;) {
        uint64_t c = 0;
        size_t j = i;
        int cmp;
        for (; j < np && pairs[j].a == pairs[i].a && pairs[j].b == pairs[i].b; j++)
            c += pairs[j].count;
        if (c > best_c ||
            (c == best_c && ((cmp = strcmp(s->tok[pairs[i].a], s->tok[best_a])) < 0 ||
                             (cmp == 0 && strcmp(s->tok[pairs[i].b], s->tok[best_b]) < 0)))) {
            best_c = c;
            best_a = pairs[i].a;
            best_b = pairs[i].b;
        }
        i = j;
    }
    free(pairs);
    if (best_c == 0)
        return 1;

    size_t la = strlen(s->tok[best_a]), lb = strlen(s->tok[best_b]);
    char *m = malloc(la + lb + 2), *t = malloc(la + lb + 1);
    uint32_t id;
    int rc;
    if (!m || !t) {
        free(m);
        free(t);
        return -ENOMEM;
    }
    memcpy(m, s->tok[best_a], la);
    m[la] = ' ';
    memcpy(m + la + 1, s->tok[best_b], lb + 1);
    memcpy(t, s->tok[best_a], la);
    memcpy(t + la, s->tok[best_b], lb + 1);
    rc = push_str(&s->merges, &s->n_merges, &s->cap_merges, m);
    if (rc) {
        free(t);
        return rc;
    }
    /* Two merges can spell the same string; the token is made once. */
    id = synth_find_token(s, t);
    if (id == UINT32_MAX) {
        id = s->n_tok;
        rc = push_str(&s->tok, &s->n_tok, &s->cap_tok, t);
        if (rc)
            return rc;
    } else {
        free(t);
    }
    for (uint32_t w = 0; w < s->n_words; w++) {
        struct synth_word *x = &s->words[w];
        uint32_t o = 0;
        for (uint32_t k = 0; k < x->n; k++) {
            if (k + 1 < x->n && x->sym[k] == best_a && x->sym[k + 1] == best_b) {
                x->sym[o++] = id;
                k++;
            } else {
                x->sym[o++] = x->sym[k];
            }
        }
        x->n = o;
    }
    return 0;
}

static const char synth_chat_template[] =
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

int vocab_src_synthetic(struct vocab_src **out, uint32_t n_tokens)
{
    static const char *const specials[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    const unsigned char *text = (const unsigned char *)synth_text;
    size_t n_text = sizeof synth_text - 1;
    struct synth s;
    struct vocab_src *v = NULL;
    uint32_t n_base;
    int rc = 0;

    *out = NULL;
    if (n_tokens < 300 || n_tokens > VOCAB_MAX_TOKENS)
        return ERR_INVALID;
    n_base = n_tokens - 3;
    memset(&s, 0, sizeof s);
    for (unsigned b = 0; b < 256 && rc == 0; b++) {
        char u[4];
        int l = byte_to_unicode(b, u);
        rc = push_str(&s.tok, &s.n_tok, &s.cap_tok, xstrndup(u, (size_t)l));
    }
    /* Pre-tokenize; words hold byte values, which are also the byte tokens' ids. */
    for (size_t i = 0; i < n_text && rc == 0;) {
        size_t l = qwen2_piece(text, i, n_text);
        rc = synth_add_word(&s, text + i, l);
        i += l;
    }
    while (rc == 0 && s.n_tok < n_base) {
        rc = synth_merge_step(&s);
        if (rc == 1) {
            rc = 0;
            break; /* the text is used up: the rest is padding */
        }
    }
    if (rc)
        goto out;

    rc = -ENOMEM;
    v = vocab_new();
    if (!v)
        goto out;
    v->tokens = calloc(n_tokens, sizeof *v->tokens);
    v->types = calloc(n_tokens, sizeof *v->types);
    if (!v->tokens || !v->types)
        goto out;
    v->n_tokens = n_tokens;
    for (uint32_t i = 0; i < s.n_tok; i++) {
        v->tokens[i] = s.tok[i];
        s.tok[i] = NULL;
        v->types[i] = VOCAB_TOKEN_NORMAL;
    }
    for (uint32_t i = 0; i < 3; i++) {
        v->tokens[n_base + i] = xstrdup(specials[i]);
        if (!v->tokens[n_base + i])
            goto out;
        v->types[n_base + i] = VOCAB_TOKEN_CONTROL;
    }
    if (fill_holes(v, 0.0f))
        goto out;
    v->merges = s.merges;
    v->n_merges = s.n_merges;
    s.merges = NULL;
    s.n_merges = 0;
    v->model = xstrdup("gpt2");
    v->pre = xstrdup("qwen2");
    v->chat_template = xstrdup(synth_chat_template);
    if (!v->model || !v->pre || !v->chat_template)
        goto out;
    v->bos = v->eos = v->pad = (int32_t)n_base;
    v->eot = (int32_t)n_base + 2;
    v->add_bos = false; /* Qwen's tokenizer_config.json: add_bos_token false */
    v->add_bos_set = true;
    rc = 0;
out:
    if (rc) {
        vocab_src_free(v);
        v = NULL;
    }
    synth_free(&s);
    *out = v;
    return rc;
}

/* ---- GGUF ---- */

void vocab_src_write_gguf(const struct vocab_src *v, struct gguf_writer *w)
{
    gguf_writer_kv_str(w, "tokenizer.ggml.model", v->model);
    gguf_writer_kv_str(w, "tokenizer.ggml.pre", v->pre);
    gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, v->n_tokens);
    if (v->scores)
        gguf_writer_kv_arr_f32(w, "tokenizer.ggml.scores", v->scores, v->n_tokens);
    gguf_writer_kv_arr_i32(w, "tokenizer.ggml.token_type", v->types, v->n_tokens);
    if (v->merges && v->n_merges)
        gguf_writer_kv_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges,
                               v->n_merges);
    if (v->bos >= 0)
        gguf_writer_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
    if (v->eos >= 0)
        gguf_writer_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos);
    if (v->unk >= 0)
        gguf_writer_kv_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v->unk);
    if (v->pad >= 0)
        gguf_writer_kv_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v->pad);
    if (v->eot >= 0)
        gguf_writer_kv_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)v->eot);
    /* Written only when the source says so: an absent key lets llama.cpp
     * use its per-model default (true for llama-bpe, for instance). */
    if (v->add_bos_set)
        gguf_writer_kv_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos);
    if (v->add_eos_set)
        gguf_writer_kv_bool(w, "tokenizer.ggml.add_eos_token", v->add_eos);
    if (v->chat_template)
        gguf_writer_kv_str(w, "tokenizer.chat_template", v->chat_template);
}
