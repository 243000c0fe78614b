/* SPDX-License-Identifier: MIT */
/*
 * jinja_value.c - memory and values of the Jinja interpreter: an arena with
 * a byte cap, strings, lists, insertion-ordered dicts, conversion from cJSON,
 * JavaScript number formatting and the tojson writer.
 *
 * Invariant: every value of a render lives in that render's arena and is
 * freed with it at once; strings are immutable, lists and dicts are shared
 * by reference (a namespace or a list changed through one name is changed
 * for all, as in Python).
 */
#include "engine/jinja_impl.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

struct jchunk {
    struct jchunk *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
};

#define JCHUNK_SIZE (64u << 10)

void jarena_init(struct jarena *a, size_t cap, jmp_buf *fail, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    a->cap = cap;
    a->fail = fail;
    a->err = err;
    a->errlen = errlen;
}

void jarena_free(struct jarena *a)
{
    struct jchunk *c = a->head;
    while (c) {
        struct jchunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->used = 0;
}

void *jarena_alloc(struct jarena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    struct jchunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t sz = n > JCHUNK_SIZE / 4 ? n : JCHUNK_SIZE;
        if (a->cap && a->used + sz > a->cap) {
            if (a->err)
                snprintf(a->err, a->errlen, "template needs more than %zu MiB of memory",
                         a->cap >> 20);
            longjmp(*a->fail, 1);
        }
        c = malloc(sizeof *c + sz);
        if (!c) {
            if (a->err)
                snprintf(a->err, a->errlen, "out of memory");
            longjmp(*a->fail, 2);
        }
        c->used = 0;
        c->size = sz;
        a->used += sz;
        if (sz == n && a->head) { /* a big block: keep the current chunk in front */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *jarena_strdup(struct jarena *a, const char *s, size_t n)
{
    char *p = jarena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- buffers ---- */

bool jbuf_put(struct jbuf *b, const char *s, size_t n)
{
    if (n == 0)
        return true;
    if (b->n + n > JINJA_MAX_OUTPUT)
        return false;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return false;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return true;
}

void jbuf_free(struct jbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* ---- values ---- */

const struct jstr *jstr_new(struct jarena *a, const char *s, size_t n)
{
    struct jstr *r = jarena_alloc(a, sizeof *r + n + 1);
    r->len = n;
    if (n)
        memcpy(r->s, s, n);
    r->s[n] = 0;
    return r;
}

struct jlist *jlist_new(struct jarena *a, size_t cap)
{
    struct jlist *l = jarena_alloc(a, sizeof *l);
    if (cap) {
        l->v = jarena_alloc(a, cap * sizeof *l->v);
        l->cap = cap;
    }
    return l;
}

void jlist_push(struct jarena *a, struct jlist *l, struct jv v)
{
    if (l->n == l->cap) {
        if (l->n >= JINJA_MAX_ITEMS) {
            if (a->err)
                snprintf(a->err, a->errlen, "list longer than %u items", JINJA_MAX_ITEMS);
            longjmp(*a->fail, 1);
        }
        size_t cap = l->cap ? l->cap * 2 : 8;
        struct jv *nv = jarena_alloc(a, cap * sizeof *nv);
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

struct jdict *jdict_new(struct jarena *a)
{
    return jarena_alloc(a, sizeof(struct jdict));
}

struct jv *jdict_get(const struct jdict *d, const char *k, size_t klen)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i]->len == klen && memcmp(d->k[i]->s, k, klen) == 0)
            return &d->v[i];
    return NULL;
}

void jdict_set(struct jarena *a, struct jdict *d, const struct jstr *k, struct jv v)
{
    struct jv *p = jdict_get(d, k->s, k->len);
    if (p) {
        *p = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        const struct jstr **nk = jarena_alloc(a, cap * sizeof *nk);
        struct jv *nv = jarena_alloc(a, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n] = v;
    d->n++;
}

struct jv jv_from_json(struct jarena *a, const cJSON *j, int depth)
{
    if (!j || depth > 200)
        return jv_none();
    if (cJSON_IsNull(j))
        return jv_none();
    if (cJSON_IsBool(j))
        return jv_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double x = j->valuedouble;
        if (isfinite(x) && x == floor(x) && fabs(x) <= 9007199254740992.0)
            return jv_int((int64_t)x);
        return jv_float(x);
    }
    if (cJSON_IsString(j)) {
        const char *s = j->valuestring ? j->valuestring : "";
        return jv_str(jstr_new(a, s, strlen(s)));
    }
    if (cJSON_IsArray(j)) {
        struct jlist *l = jlist_new(a, (size_t)cJSON_GetArraySize(j));
        for (const cJSON *c = j->child; c; c = c->next)
            jlist_push(a, l, jv_from_json(a, c, depth + 1));
        struct jv v = {.t = JV_LIST, .l = l};
        return v;
    }
    if (cJSON_IsObject(j)) {
        struct jdict *d = jdict_new(a);
        for (const cJSON *c = j->child; c; c = c->next) {
            const char *k = c->string ? c->string : "";
            jdict_set(a, d, jstr_new(a, k, strlen(k)), jv_from_json(a, c, depth + 1));
        }
        struct jv v = {.t = JV_DICT, .d = d};
        return v;
    }
    return jv_none();
}

const char *jv_type_name(enum jv_type t)
{
    switch (t) {
    case JV_UNDEF: return "undefined";
    case JV_NONE: return "none";
    case JV_BOOL: return "boolean";
    case JV_INT: return "integer";
    case JV_FLOAT: return "float";
    case JV_STR: return "string";
    case JV_LIST: return "list";
    case JV_DICT: return "dict";
    case JV_NS: return "namespace";
    case JV_FUNC: return "function";
    }
    return "?";
}

/* ---- numbers as JavaScript prints them ---- */

void jinja_js_number(char *buf, size_t len, double x)
{
    if (isnan(x)) {
        snprintf(buf, len, "NaN");
        return;
    }
    if (isinf(x)) {
        snprintf(buf, len, x < 0 ? "-Infinity" : "Infinity");
        return;
    }
    if (x == 0) {
        snprintf(buf, len, "0");
        return;
    }
    char e[40];
    for (int prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, x);
        if (strtod(e, NULL) == x)
            break;
    }
    /* e is "-d.ddde+XX": collect digits and exponent. */
    char digits[24];
    int k = 0, exp10 = 0;
    bool neg = false;
    const char *p = e;
    if (*p == '-') {
        neg = true;
        p++;
    }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && k < 20)
            digits[k++] = *p;
    if (*p == 'e')
        exp10 = atoi(p + 1);
    while (k > 1 && digits[k - 1] == '0')
        k--;
    digits[k] = 0;
    int n = exp10 + 1;
    char out[64];
    size_t o = 0;
    if (neg)
        out[o++] = '-';
    if (k <= n && n <= 21) {
        memcpy(out + o, digits, k);
        o += k;
        for (int i = 0; i < n - k; i++)
            out[o++] = '0';
    } else if (0 < n && n <= 21) {
        memcpy(out + o, digits, n);
        o += n;
        out[o++] = '.';
        memcpy(out + o, digits + n, k - n);
        o += k - n;
    } else if (-6 < n && n <= 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (int i = 0; i < -n; i++)
            out[o++] = '0';
        memcpy(out + o, digits, k);
        o += k;
    } else {
        out[o++] = digits[0];
        if (k > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, k - 1);
            o += k - 1;
        }
        o += snprintf(out + o, sizeof out - o, "e%c%d", n - 1 < 0 ? '-' : '+', abs(n - 1));
    }
    out[o] = 0;
    snprintf(buf, len, "%s", out);
}

/* ---- tojson ---- */

/* Decodes one UTF-8 sequence at s (n bytes left); returns its length and
 * the code point, or 1 and -1 for an invalid byte. */
static int utf8_next(const unsigned char *s, size_t n, int32_t *cp)
{
    unsigned c = s[0];
    int len;
    int32_t v;
    if (c < 0x80) {
        *cp = (int32_t)c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2;
        v = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        v = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        v = c & 0x07;
    } else {
        *cp = -1;
        return 1;
    }
    if ((size_t)len > n) {
        *cp = -1;
        return 1;
    }
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            *cp = -1;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3f);
    }
    *cp = v;
    return len;
}

static bool json_string(struct jbuf *b, const char *s, size_t n, bool ensure_ascii)
{
    bool ok = jbuf_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n && ok;) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[16];
        size_t adv = 1;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                esc = tmp;
            } else if (ensure_ascii && c >= 0x7f) {
                int32_t cp;
                adv = (size_t)utf8_next((const unsigned char *)s + i, n - i, &cp);
                if (cp < 0)
                    cp = 0xfffd;
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xd800 + (cp >> 10),
                             0xdc00 + (cp & 0x3ff));
                } else {
                    snprintf(tmp, sizeof tmp, "\\u%04x", cp);
                }
                esc = tmp;
            }
        }
        if (esc) {
            ok = jbuf_put(b, s + i - run, run) && jbuf_put(b, esc, strlen(esc));
            run = 0;
        } else {
            run += adv;
        }
        i += adv;
    }
    return ok && jbuf_put(b, s + n - run, run) && jbuf_put(b, "\"", 1);
}

static int key_cmp(const void *x, const void *y)
{
    const struct jstr *a = **(const struct jstr *const *const *)x;
    const struct jstr *b = **(const struct jstr *const *const *)y;
    size_t n = a->len < b->len ? a->len : b->len;
    int r = memcmp(a->s, b->s, n);
    return r ? r : (a->len < b->len ? -1 : a->len > b->len);
}

static bool pad(struct jbuf *b, int indent, int depth)
{
    if (!jbuf_put(b, "\n", 1))
        return false;
    for (int i = 0; i < indent * depth; i++)
        if (!jbuf_put(b, " ", 1))
            return false;
    return true;
}

bool jinja_to_json(struct jbuf *b, struct jv v, int indent, bool ensure_ascii, bool sort_keys,
                   const char *item_sep, const char *key_sep, int depth)
{
    char num[64];
    if (depth > 200)
        return false;
    if (!item_sep)
        item_sep = indent > 0 ? "," : ", ";
    if (!key_sep)
        key_sep = ": ";
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE: return jbuf_put(b, "null", 4);
    case JV_BOOL: return v.b ? jbuf_put(b, "true", 4) : jbuf_put(b, "false", 5);
    case JV_INT:
        snprintf(num, sizeof num, "%lld", (long long)v.i);
        return jbuf_put(b, num, strlen(num));
    case JV_FLOAT:
        if (!isfinite(v.f))
            return jbuf_put(b, "null", 4);
        jinja_js_number(num, sizeof num, v.f);
        return jbuf_put(b, num, strlen(num));
    case JV_STR: return json_string(b, v.s->s, v.s->len, ensure_ascii);
    case JV_LIST: {
        if (v.l->n == 0)
            return jbuf_put(b, "[]", 2);
        bool ok = jbuf_put(b, "[", 1);
        for (size_t i = 0; i < v.l->n && ok; i++) {
            if (i)
                ok = jbuf_put(b, item_sep, strlen(item_sep));
            if (ok && indent > 0)
                ok = pad(b, indent, depth + 1);
            ok = ok && jinja_to_json(b, v.l->v[i], indent, ensure_ascii, sort_keys, item_sep,
                                     key_sep, depth + 1);
        }
        if (ok && indent > 0)
            ok = pad(b, indent, depth);
        return ok && jbuf_put(b, "]", 1);
    }
    case JV_DICT:
    case JV_NS: {
        const struct jdict *d = v.d;
        if (d->n == 0)
            return jbuf_put(b, "{}", 2);
        size_t *order = malloc(d->n * sizeof *order);
        const struct jstr ***keys = malloc(d->n * sizeof *keys);
        bool ok = order && keys;
        if (ok) {
            for (size_t i = 0; i < d->n; i++)
                keys[i] = &d->k[i];
            if (sort_keys)
                qsort(keys, d->n, sizeof *keys, key_cmp);
            for (size_t i = 0; i < d->n; i++)
                order[i] = (size_t)(keys[i] - d->k);
        }
        ok = ok && jbuf_put(b, "{", 1);
        for (size_t j = 0; j < d->n && ok; j++) {
            size_t i = order[j];
            if (j)
                ok = jbuf_put(b, item_sep, strlen(item_sep));
            if (ok && indent > 0)
                ok = pad(b, indent, depth + 1);
            ok = ok && json_string(b, d->k[i]->s, d->k[i]->len, ensure_ascii) &&
                 jbuf_put(b, key_sep, strlen(key_sep)) &&
                 jinja_to_json(b, d->v[i], indent, ensure_ascii, sort_keys, item_sep, key_sep,
                               depth + 1);
        }
        if (ok && indent > 0)
            ok = pad(b, indent, depth);
        free(order);
        free(keys);
        return ok && jbuf_put(b, "}", 1);
    }
    case JV_FUNC: return false;
    }
    return false;
}
