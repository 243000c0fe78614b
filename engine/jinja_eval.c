/* SPDX-License-Identifier: MIT */
/*
 * jinja_eval.c - the Jinja evaluator: runs a parsed template over values,
 * with the built-in filters, tests, functions and methods.
 *
 * Semantics are @huggingface/jinja's (the reference of our tests): `none`
 * and undefined print as nothing, booleans print as true/false, `==` is
 * JavaScript's loose equality on scalars and identity on lists and dicts,
 * `+` with a string concatenates, `~` and arithmetic on none or undefined
 * are errors, whole floats print with ".0", lists and dicts print as JSON.
 * Python's Jinja is followed where that implementation has nothing or
 * differs on a point that changes prompts: str.strip/lstrip/rstrip take a
 * set of characters, title()/capitalize() lower the rest of the word,
 * strings and undefined values can be iterated (undefined as empty),
 * selectattr runs its test on missing attributes, attribute access on an
 * undefined value is an error (as Jinja's default Undefined does).
 *
 * Invariants: everything a render allocates lives in its arena or in a
 * registered buffer, so an error anywhere (a longjmp to jinja_render) frees
 * all of it; the caps on steps, depth, output and memory bound a hostile
 * template.
 */
#include "engine/jinja_impl.h"

#include "common/err.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

struct jenv {
    struct jenv *parent;
    const struct jstr **names;
    struct jv *vals;
    size_t n, cap;
};

struct jctx {
    struct jarena *a;
    const char *name;
    char *err;
    size_t errlen;
    struct jbuf *out;
    struct jbuf **bufs;
    size_t nbufs, capbufs;
    int depth;
    uint64_t steps;
    int loop_ctl; /* 1 break, 2 continue */
    struct jenv *global;
};

static void efail(struct jctx *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
static void efail(struct jctx *c, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s:%d: %s", c->name, line, msg);
    longjmp(*c->a->fail, 1);
}

/* ---- small helpers ---- */

static struct jv mk_list(struct jlist *l) { struct jv v = {.t = JV_LIST, .l = l}; return v; }
static struct jv mk_dict(struct jdict *d) { struct jv v = {.t = JV_DICT, .d = d}; return v; }
static struct jv mk_strn(struct jctx *c, const char *s, size_t n) { return jv_str(jstr_new(c->a, s, n)); }
static struct jv mk_cstr(struct jctx *c, const char *s) { return mk_strn(c, s, strlen(s)); }

static struct jbuf *buf_new(struct jctx *c)
{
    if (c->nbufs == c->capbufs) {
        size_t cap = c->capbufs ? c->capbufs * 2 : 16;
        struct jbuf **nb = jarena_alloc(c->a, cap * sizeof *nb);
        if (c->nbufs)
            memcpy(nb, c->bufs, c->nbufs * sizeof *nb);
        c->bufs = nb;
        c->capbufs = cap;
    }
    struct jbuf *b = jarena_alloc(c->a, sizeof *b);
    c->bufs[c->nbufs++] = b;
    return b;
}

static void bput(struct jctx *c, struct jbuf *b, const char *s, size_t n, int line)
{
    if (!jbuf_put(b, s, n))
        efail(c, line, "rendered text larger than %u MiB (or out of memory)", JINJA_MAX_OUTPUT >> 20);
}

/* Moves a buffer's text into the arena and releases the buffer. */
static struct jv buf_take(struct jctx *c, struct jbuf *b)
{
    struct jv v = mk_strn(c, b->p ? b->p : "", b->n);
    jbuf_free(b);
    return v;
}

static bool sv_eq(const struct jstr *s, const char *lit)
{
    return s->len == strlen(lit) && memcmp(s->s, lit, s->len) == 0;
}

static bool truthy(struct jv v)
{
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v.b;
    case JV_INT: return v.i != 0;
    case JV_FLOAT: return v.f != 0 && !isnan(v.f);
    case JV_STR: return v.s->len > 0;
    case JV_LIST: return v.l->n > 0;
    case JV_DICT: return v.d->n > 0;
    case JV_NS:
    case JV_FUNC: return true;
    }
    return false;
}

static bool is_num(struct jv v) { return v.t == JV_INT || v.t == JV_FLOAT; }
static double num(struct jv v) { return v.t == JV_INT ? (double)v.i : v.t == JV_FLOAT ? v.f : v.t == JV_BOOL ? v.b : 0; }

/* ---- UTF-8 ---- */

static size_t cp_next(const char *s, size_t n, size_t i, int32_t *cp)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
    if (k <= 0) {
        *cp = (unsigned char)s[i];
        return 1;
    }
    *cp = c;
    return (size_t)k;
}

static size_t cp_count(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; k++) {
        int32_t cp;
        i += cp_next(s, n, i, &cp);
    }
    return k;
}

/* Byte offsets of each code point, plus the end: (count + 1) entries. */
static size_t *cp_offsets(struct jctx *c, const struct jstr *s, size_t *count)
{
    size_t n = cp_count(s->s, s->len);
    size_t *off = jarena_alloc(c->a, (n + 1) * sizeof *off);
    size_t k = 0;
    for (size_t i = 0; i < s->len; k++) {
        int32_t cp;
        off[k] = i;
        i += cp_next(s->s, s->len, i, &cp);
    }
    off[n] = s->len;
    *count = n;
    return off;
}

static bool is_space_cp(int32_t cp)
{
    return cp == ' ' || (cp >= 9 && cp <= 13) || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000 || cp == 0xfeff;
}

/* ---- conversion to text ---- */

static void float_str(char *b, size_t len, double f)
{
    if (f == 0 && signbit(f))
        snprintf(b, len, "-0.0");
    else if (isfinite(f) && f == floor(f) && fabs(f) < 1e21)
        snprintf(b, len, "%.1f", f);
    else
        jinja_js_number(b, len, f);
}

static void json_into(struct jctx *c, struct jbuf *b, struct jv v, int line)
{
    if (!jinja_to_json(b, v, 0, false, false, NULL, NULL, 0))
        efail(c, line, "cannot convert a %s to JSON", "function (or too deep) value");
}

/* Appends v as text ({{ v }}, ~, string filter). */
static void str_into(struct jctx *c, struct jbuf *b, struct jv v, int line)
{
    char tmp[64];
    switch (v.t) {
    case JV_UNDEF: return;
    case JV_NONE: bput(c, b, "None", 4, line); return;
    case JV_BOOL: bput(c, b, v.b ? "true" : "false", v.b ? 4 : 5, line); return;
    case JV_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v.i); break;
    case JV_FLOAT: float_str(tmp, sizeof tmp, v.f); break;
    case JV_STR: bput(c, b, v.s->s, v.s->len, line); return;
    case JV_LIST:
    case JV_DICT:
    case JV_NS: json_into(c, b, v, line); return;
    case JV_FUNC: efail(c, line, "cannot convert function '%s' to text", v.fn->name ? v.fn->name : "?");
    }
    bput(c, b, tmp, strlen(tmp), line);
}

static const struct jstr *to_str(struct jctx *c, struct jv v, int line)
{
    if (v.t == JV_STR)
        return v.s;
    struct jbuf *b = buf_new(c);
    str_into(c, b, v, line);
    return buf_take(c, b).s;
}

/* ---- equality ---- */

/* JavaScript === on values (membership, unique, equalto). */
static bool strict_eq(struct jv a, struct jv b)
{
    if (is_num(a) && is_num(b))
        return num(a) == num(b);
    if (a.t != b.t)
        return false;
    switch (a.t) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_BOOL: return a.b == b.b;
    case JV_STR: return a.s->len == b.s->len && memcmp(a.s->s, b.s->s, a.s->len) == 0;
    case JV_LIST: return a.l == b.l;
    case JV_DICT:
    case JV_NS: return a.d == b.d;
    case JV_FUNC: return a.fn == b.fn;
    default: return false;
    }
}

static double str_to_number(const struct jstr *s)
{
    size_t i = 0, e = s->len;
    while (i < e && is_space_cp((unsigned char)s->s[i]))
        i++;
    while (e > i && is_space_cp((unsigned char)s->s[e - 1]))
        e--;
    if (i == e)
        return 0;
    char tmp[64];
    if (e - i >= sizeof tmp)
        return NAN;
    memcpy(tmp, s->s + i, e - i);
    tmp[e - i] = 0;
    char *end;
    double d = strtod(tmp, &end);
    return *end ? NAN : d;
}

/* JavaScript == on values (the == and != operators). */
static bool loose_eq(struct jv a, struct jv b)
{
    bool an = a.t == JV_UNDEF || a.t == JV_NONE, bn = b.t == JV_UNDEF || b.t == JV_NONE;
    if (an || bn)
        return an && bn;
    bool ap = is_num(a) || a.t == JV_BOOL, bp = is_num(b) || b.t == JV_BOOL;
    if (ap && bp)
        return num(a) == num(b);
    if (a.t == JV_STR && b.t == JV_STR)
        return strict_eq(a, b);
    if (a.t == JV_STR && bp)
        return str_to_number(a.s) == num(b);
    if (b.t == JV_STR && ap)
        return str_to_number(b.s) == num(a);
    return strict_eq(a, b);
}

/* ---- environments ---- */

static struct jenv *env_new(struct jctx *c, struct jenv *parent)
{
    struct jenv *e = jarena_alloc(c->a, sizeof *e);
    e->parent = parent;
    return e;
}

static void env_set(struct jctx *c, struct jenv *e, const struct jstr *name, struct jv v)
{
    for (size_t i = 0; i < e->n; i++)
        if (e->names[i] == name || (e->names[i]->len == name->len &&
                                    memcmp(e->names[i]->s, name->s, name->len) == 0)) {
            e->vals[i] = v;
            return;
        }
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 8;
        const struct jstr **nn = jarena_alloc(c->a, cap * sizeof *nn);
        struct jv *nv = jarena_alloc(c->a, cap * sizeof *nv);
        if (e->n) {
            memcpy(nn, e->names, e->n * sizeof *nn);
            memcpy(nv, e->vals, e->n * sizeof *nv);
        }
        e->names = nn;
        e->vals = nv;
        e->cap = cap;
    }
    e->names[e->n] = name;
    e->vals[e->n] = v;
    e->n++;
}

static void env_setc(struct jctx *c, struct jenv *e, const char *name, struct jv v)
{
    env_set(c, e, jstr_new(c->a, name, strlen(name)), v);
}

static bool env_get(const struct jenv *e, const struct jstr *name, struct jv *out)
{
    for (; e; e = e->parent)
        for (size_t i = e->n; i-- > 0;)
            if (e->names[i] == name || (e->names[i]->len == name->len &&
                                        memcmp(e->names[i]->s, name->s, name->len) == 0)) {
                *out = e->vals[i];
                return true;
            }
    return false;
}

/* ---- forward declarations ---- */

static struct jv eval(struct jctx *c, struct jenv *e, const struct jnode *x);
static void exec_body(struct jctx *c, struct jenv *e, struct jnode *const *body, size_t n);
static struct jv call_value(struct jctx *c, struct jv fn, const struct jargs *a, struct jv caller,
                            int line, const char *what);
static struct jv apply_filter(struct jctx *c, struct jenv *e, const struct jnode *f, struct jv v,
                              int fid, const struct jargs *a);
static bool run_test(struct jctx *c, int tid, struct jv v, const struct jargs *a, int line);

static void step(struct jctx *c, int line)
{
    if (++c->steps > JINJA_MAX_STEPS)
        efail(c, line, "template needs more than %llu evaluation steps",
              (unsigned long long)JINJA_MAX_STEPS);
}

/* ---- arguments ---- */

static void eval_args(struct jctx *c, struct jenv *e, struct jnode *const *nodes, size_t n,
                      struct jargs *a, int line)
{
    memset(a, 0, sizeof *a);
    size_t np = 0, nk = 0;
    for (size_t i = 0; i < n; i++) {
        if (nodes[i]->kind == JN_KWARG)
            nk++;
        else if (nodes[i]->kind != JN_KWSPREAD)
            np++;
    }
    struct jlist *pos = jlist_new(c->a, np);
    struct jdict *kw = jdict_new(c->a);
    for (size_t i = 0; i < n; i++) {
        const struct jnode *x = nodes[i];
        if (x->kind == JN_SPREAD) {
            struct jv v = eval(c, e, x->a);
            if (v.t != JV_LIST)
                efail(c, x->line, "cannot unpack a %s with '*'", jv_type_name(v.t));
            for (size_t k = 0; k < v.l->n; k++)
                jlist_push(c->a, pos, v.l->v[k]);
        } else if (x->kind != JN_KWARG && x->kind != JN_KWSPREAD) {
            jlist_push(c->a, pos, eval(c, e, x));
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct jnode *x = nodes[i];
        if (x->kind == JN_KWARG) {
            if (jdict_get(kw, x->str->s, x->str->len))
                efail(c, x->line, "keyword argument '%s' given twice", x->str->s);
            jdict_set(c->a, kw, x->str, eval(c, e, x->a));
        } else if (x->kind == JN_KWSPREAD) {
            struct jv v = eval(c, e, x->a);
            if (v.t != JV_DICT)
                efail(c, x->line, "argument after ** must be a dict, not %s", jv_type_name(v.t));
            for (size_t k = 0; k < v.d->n; k++)
                jdict_set(c->a, kw, v.d->k[k], v.d->v[k]);
        }
    }
    (void)line;
    a->pos = pos->v;
    a->npos = pos->n;
    a->kw_names = kw->k;
    a->kw = kw->v;
    a->nkw = kw->n;
}

/* Argument i by position, else by keyword name; NULL when absent. */
static const struct jv *arg(const struct jargs *a, size_t i, const char *name)
{
    if (i < a->npos)
        return &a->pos[i];
    if (name)
        for (size_t k = 0; k < a->nkw; k++)
            if (sv_eq(a->kw_names[k], name))
                return &a->kw[k];
    return NULL;
}

static bool arg_bool(struct jctx *c, const struct jargs *a, size_t i, const char *name, bool def, int line)
{
    const struct jv *v = arg(a, i, name);
    if (!v || v->t == JV_UNDEF)
        return def;
    if (v->t != JV_BOOL && v->t != JV_INT)
        efail(c, line, "argument '%s' must be a boolean", name);
    return truthy(*v);
}

static const struct jstr *arg_str(struct jctx *c, const struct jargs *a, size_t i, const char *name,
                                  int line)
{
    const struct jv *v = arg(a, i, name);
    if (!v || v->t == JV_UNDEF || v->t == JV_NONE)
        return NULL;
    if (v->t != JV_STR)
        efail(c, line, "argument '%s' must be a string, not %s", name, jv_type_name(v->t));
    return v->s;
}

/* ---- attribute and item access ---- */

static const char *const str_methods[] = {
    "upper", "lower", "strip", "lstrip", "rstrip", "title", "capitalize", "startswith",
    "endswith", "split", "replace", "find", "count", "join", "splitlines", "isdigit",
    "isspace", "isalpha", "isalnum", "islower", "isupper", "format", NULL};
static const char *const dict_methods[] = {"get", "items", "keys", "values", "dictsort", NULL};
static const char *const list_methods[] = {"append", "index", "count", NULL};

static struct jv method(struct jctx *c, struct jv self, const char *name)
{
    struct jfunc *f = jarena_alloc(c->a, sizeof *f);
    f->kind = JF_METHOD;
    f->name = name;
    f->self = self;
    struct jv v = {.t = JV_FUNC, .fn = f};
    return v;
}

static const char *find_name(const char *const *tab, const char *s, size_t n)
{
    for (; *tab; tab++)
        if (strlen(*tab) == n && memcmp(*tab, s, n) == 0)
            return *tab;
    return NULL;
}

static struct jv get_attr(struct jctx *c, struct jv o, const struct jstr *k, int line, bool by_item)
{
    const char *m;
    switch (o.t) {
    case JV_UNDEF:
        efail(c, line, "cannot read %s '%s' of an undefined value", by_item ? "item" : "attribute", k->s);
    case JV_DICT: {
        struct jv *p = jdict_get(o.d, k->s, k->len);
        if (p)
            return *p;
        if ((m = find_name(dict_methods, k->s, k->len)))
            return method(c, o, m);
        return jv_undef();
    }
    case JV_NS: {
        struct jv *p = jdict_get(o.d, k->s, k->len);
        return p ? *p : jv_undef();
    }
    case JV_STR:
        if (sv_eq(k, "length"))
            return jv_int((int64_t)cp_count(o.s->s, o.s->len));
        if ((m = find_name(str_methods, k->s, k->len)))
            return method(c, o, m);
        return jv_undef();
    case JV_LIST:
        if (sv_eq(k, "length"))
            return jv_int((int64_t)o.l->n);
        if ((m = find_name(list_methods, k->s, k->len)))
            return method(c, o, m);
        return jv_undef();
    default: return jv_undef();
    }
}

static struct jv get_item(struct jctx *c, struct jv o, struct jv k, int line)
{
    if (k.t == JV_STR)
        return get_attr(c, o, k.s, line, true);
    if (o.t == JV_UNDEF)
        efail(c, line, "cannot index an undefined value");
    if (k.t != JV_INT && k.t != JV_BOOL) {
        if (o.t == JV_DICT || o.t == JV_NS || o.t == JV_LIST || o.t == JV_STR)
            efail(c, line, "cannot index a %s with a %s", jv_type_name(o.t), jv_type_name(k.t));
        return jv_undef();
    }
    int64_t i = k.t == JV_BOOL ? k.b : k.i;
    if (o.t == JV_LIST) {
        if (i < 0)
            i += (int64_t)o.l->n;
        return i >= 0 && (uint64_t)i < o.l->n ? o.l->v[i] : jv_undef();
    }
    if (o.t == JV_STR) {
        size_t n;
        size_t *off = cp_offsets(c, o.s, &n);
        if (i < 0)
            i += (int64_t)n;
        if (i < 0 || (uint64_t)i >= n)
            return jv_undef();
        return mk_strn(c, o.s->s + off[i], off[i + 1] - off[i]);
    }
    if (o.t == JV_DICT || o.t == JV_NS)
        efail(c, line, "dict keys must be strings, not %s", jv_type_name(k.t));
    return jv_undef();
}

/* Python slice bounds over n elements. Returns the count; fills idx. */
static size_t slice_idx(struct jctx *c, int64_t n, const struct jv *sa, const struct jv *sb,
                        const struct jv *sc, int64_t **idx, int line)
{
    int64_t step = sc ? sc->i : 1;
    if (step == 0)
        efail(c, line, "slice step cannot be zero");
    int64_t start, stop;
    if (step > 0) {
        start = sa ? sa->i : 0;
        stop = sb ? sb->i : n;
        start = start < 0 ? (start + n < 0 ? 0 : start + n) : (start > n ? n : start);
        stop = stop < 0 ? (stop + n < 0 ? 0 : stop + n) : (stop > n ? n : stop);
    } else {
        start = sa ? sa->i : n - 1;
        stop = sb ? sb->i : -1 - n;
        start = start < 0 ? (start + n < -1 ? -1 : start + n) : (start > n - 1 ? n - 1 : start);
        stop = stop < 0 ? (stop + n < -1 ? -1 : stop + n) : (stop > n - 1 ? n - 1 : stop);
    }
    size_t cnt = 0;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
        cnt++;
    *idx = jarena_alloc(c->a, (cnt + 1) * sizeof **idx);
    size_t k = 0;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
        (*idx)[k++] = i;
    return cnt;
}

static struct jv do_slice(struct jctx *c, struct jenv *e, const struct jnode *x)
{
    struct jv o = eval(c, e, x->a);
    struct jv p[3];
    const struct jv *pp[3] = {0};
    const struct jnode *parts[3] = {x->b, x->c, x->d};
    for (int i = 0; i < 3; i++) {
        if (!parts[i])
            continue;
        p[i] = eval(c, e, parts[i]);
        if (p[i].t == JV_UNDEF || p[i].t == JV_NONE)
            continue;
        if (p[i].t != JV_INT)
            efail(c, x->line, "slice indices must be integers, not %s", jv_type_name(p[i].t));
        pp[i] = &p[i];
    }
    int64_t *idx;
    if (o.t == JV_LIST) {
        size_t cnt = slice_idx(c, (int64_t)o.l->n, pp[0], pp[1], pp[2], &idx, x->line);
        struct jlist *l = jlist_new(c->a, cnt);
        for (size_t i = 0; i < cnt; i++)
            jlist_push(c->a, l, o.l->v[idx[i]]);
        return mk_list(l);
    }
    if (o.t == JV_STR) {
        size_t n;
        size_t *off = cp_offsets(c, o.s, &n);
        size_t cnt = slice_idx(c, (int64_t)n, pp[0], pp[1], pp[2], &idx, x->line);
        struct jbuf *b = buf_new(c);
        for (size_t i = 0; i < cnt; i++)
            bput(c, b, o.s->s + off[idx[i]], off[idx[i] + 1] - off[idx[i]], x->line);
        return buf_take(c, b);
    }
    efail(c, x->line, "cannot slice a %s", jv_type_name(o.t));
}

/* ---- binary operators ---- */

static const char *op_name(enum jop op)
{
    static const char *names[] = {"?", "+", "-", "~", "*", "/", "//", "%", "**", "==", "!=", "<",
                                  ">", "<=", ">=", "in", "not in", "and", "or", "not", "-", "+"};
    return (size_t)op < sizeof names / sizeof names[0] ? names[op] : "?";
}

static struct jv binop(struct jctx *c, enum jop op, struct jv l, struct jv r, int line)
{
    if (op == JOP_EQ)
        return jv_bool(loose_eq(l, r));
    if (op == JOP_NE)
        return jv_bool(!loose_eq(l, r));
    if (l.t == JV_UNDEF || r.t == JV_UNDEF) {
        if (r.t == JV_UNDEF && (op == JOP_IN || op == JOP_NOTIN))
            return jv_bool(op == JOP_NOTIN);
        efail(c, line, "cannot apply '%s' to an undefined value", op_name(op));
    }
    if ((l.t == JV_NONE && !(op == JOP_IN || op == JOP_NOTIN)) || r.t == JV_NONE)
        efail(c, line, "cannot apply '%s' to none", op_name(op));
    if (op == JOP_CONCAT) {
        struct jbuf *b = buf_new(c);
        str_into(c, b, l, line);
        str_into(c, b, r, line);
        return buf_take(c, b);
    }
    bool ln = is_num(l) || l.t == JV_BOOL, rn = is_num(r) || r.t == JV_BOOL;
    if (op == JOP_POW && ln && rn) {
        double a = num(l), b = num(r);
        if (a == 0 && b < 0)
            efail(c, line, "0 cannot be raised to a negative power");
        double res = pow(a, b);
        if (!isfinite(res))
            efail(c, line, "'**' result is not a finite real number");
        if (l.t == JV_FLOAT || r.t == JV_FLOAT || b < 0 || fabs(res) > 9.0e15)
            return jv_float(res);
        return jv_int((int64_t)res);
    }
    if (is_num(l) && is_num(r)) {
        bool fl = l.t == JV_FLOAT || r.t == JV_FLOAT;
        double a = num(l), b = num(r);
        switch (op) {
        case JOP_ADD: return fl ? jv_float(a + b) : jv_int(l.i + r.i);
        case JOP_SUB: return fl ? jv_float(a - b) : jv_int(l.i - r.i);
        case JOP_MUL: return fl ? jv_float(a * b) : jv_int(l.i * r.i);
        case JOP_DIV:
            if (b == 0)
                efail(c, line, "division by zero");
            return jv_float(a / b);
        case JOP_FLOORDIV:
            if (b == 0)
                efail(c, line, "division by zero");
            return fl ? jv_float(floor(a / b)) : jv_int((int64_t)floor(a / b));
        case JOP_MOD:
            if (b == 0)
                efail(c, line, "modulo by zero");
            return fl ? jv_float(fmod(a, b)) : jv_int(l.i % r.i);
        case JOP_LT: return jv_bool(a < b);
        case JOP_GT: return jv_bool(a > b);
        case JOP_LE: return jv_bool(a <= b);
        case JOP_GE: return jv_bool(a >= b);
        default: break;
        }
    }
    if (l.t == JV_LIST && r.t == JV_LIST && op == JOP_ADD) {
        struct jlist *nl = jlist_new(c->a, l.l->n + r.l->n);
        for (size_t i = 0; i < l.l->n; i++)
            jlist_push(c->a, nl, l.l->v[i]);
        for (size_t i = 0; i < r.l->n; i++)
            jlist_push(c->a, nl, r.l->v[i]);
        return mk_list(nl);
    }
    if (r.t == JV_LIST && (op == JOP_IN || op == JOP_NOTIN)) {
        bool found = false;
        for (size_t i = 0; i < r.l->n && !found; i++)
            found = strict_eq(l, r.l->v[i]);
        return jv_bool(op == JOP_IN ? found : !found);
    }
    if ((l.t == JV_STR || r.t == JV_STR) && op == JOP_ADD && l.t != JV_NONE) {
        struct jbuf *b = buf_new(c);
        str_into(c, b, l, line);
        str_into(c, b, r, line);
        return buf_take(c, b);
    }
    if (l.t == JV_STR && r.t == JV_STR) {
        if (op == JOP_IN || op == JOP_NOTIN) {
            bool found = l.s->len == 0 || memmem(r.s->s, r.s->len, l.s->s, l.s->len) != NULL;
            return jv_bool(op == JOP_IN ? found : !found);
        }
        size_t n = l.s->len < r.s->len ? l.s->len : r.s->len;
        int cmp = memcmp(l.s->s, r.s->s, n);
        if (!cmp)
            cmp = l.s->len < r.s->len ? -1 : l.s->len > r.s->len;
        switch (op) {
        case JOP_LT: return jv_bool(cmp < 0);
        case JOP_GT: return jv_bool(cmp > 0);
        case JOP_LE: return jv_bool(cmp <= 0);
        case JOP_GE: return jv_bool(cmp >= 0);
        default: break;
        }
    }
    if (l.t == JV_STR && r.t == JV_DICT && (op == JOP_IN || op == JOP_NOTIN)) {
        bool found = jdict_get(r.d, l.s->s, l.s->len) != NULL;
        return jv_bool(op == JOP_IN ? found : !found);
    }
    efail(c, line, "unsupported operand types for '%s': %s and %s", op_name(op),
          jv_type_name(l.t), jv_type_name(r.t));
}

/* ---- sorting (stable; comparators may fail with longjmp) ---- */

static int compare_values(struct jctx *c, struct jv a, struct jv b, bool case_sensitive, int line)
{
    if (a.t == JV_NONE && b.t == JV_NONE)
        return 0;
    if (a.t == JV_UNDEF && b.t == JV_UNDEF)
        return 0;
    if (a.t == JV_NONE || b.t == JV_NONE || a.t == JV_UNDEF || b.t == JV_UNDEF)
        efail(c, line, "cannot compare %s with %s", jv_type_name(a.t), jv_type_name(b.t));
    bool an = is_num(a) || a.t == JV_BOOL, bn = is_num(b) || b.t == JV_BOOL;
    if (an && bn)
        return num(a) < num(b) ? -1 : num(a) > num(b);
    if (a.t != b.t || a.t != JV_STR)
        efail(c, line, "cannot compare %s with %s", jv_type_name(a.t), jv_type_name(b.t));
    size_t i = 0, j = 0;
    while (i < a.s->len && j < b.s->len) {
        int32_t x, y;
        i += cp_next(a.s->s, a.s->len, i, &x);
        j += cp_next(b.s->s, b.s->len, j, &y);
        if (!case_sensitive) {
            x = utf8proc_tolower(x);
            y = utf8proc_tolower(y);
        }
        if (x != y)
            return x < y ? -1 : 1;
    }
    return (i < a.s->len) - (j < b.s->len);
}

struct sort_key {
    struct jv key, item;
};

static void merge_sort(struct jctx *c, struct sort_key *v, struct sort_key *tmp, size_t n,
                       bool cs, bool rev, int line)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    merge_sort(c, v, tmp, h, cs, rev, line);
    merge_sort(c, v + h, tmp, n - h, cs, rev, line);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int r = compare_values(c, v[j].key, v[i].key, cs, line);
        if (rev)
            r = -r;
        tmp[k++] = r < 0 ? v[j++] : v[i++];
    }
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

/* item.a.b or item.0 (dotted attribute path of map/sort/selectattr). */
static struct jv attr_path(struct jctx *c, struct jv item, const struct jstr *path)
{
    struct jv v = item;
    const char *p = path->s, *end = path->s + path->len;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        if (!dot)
            dot = end;
        size_t n = (size_t)(dot - p);
        if (v.t == JV_DICT || v.t == JV_NS) {
            struct jv *q = jdict_get(v.d, p, n);
            v = q ? *q : jv_undef();
        } else if (v.t == JV_LIST) {
            char tmp[24];
            if (n == 0 || n >= sizeof tmp)
                return jv_undef();
            memcpy(tmp, p, n);
            tmp[n] = 0;
            char *e;
            long k = strtol(tmp, &e, 10);
            if (*e || k < 0 || (size_t)k >= v.l->n)
                return jv_undef();
            v = v.l->v[k];
        } else {
            (void)c;
            return jv_undef();
        }
        p = dot + 1;
    }
    return v;
}

/* ---- string methods ---- */

static struct jv str_case(struct jctx *c, const struct jstr *s, int mode, int line)
{
    /* mode 0 upper, 1 lower, 2 title, 3 capitalize */
    struct jbuf *b = buf_new(c);
    bool prev_cased = false, first = true;
    for (size_t i = 0; i < s->len;) {
        int32_t cp;
        i += cp_next(s->s, s->len, i, &cp);
        int32_t o = cp;
        if (cp == 0xdf && (mode == 0 || (mode >= 2 && !prev_cased && (mode == 2 || first)))) {
            /* German sharp s has no one-letter capital in Python or JS. */
            bput(c, b, mode == 0 ? "SS" : "Ss", 2, line);
            prev_cased = true;
            first = false;
            continue;
        }
        if (mode == 0)
            o = utf8proc_toupper(cp);
        else if (mode == 1)
            o = utf8proc_tolower(cp);
        else if (mode == 2)
            o = prev_cased ? utf8proc_tolower(cp) : utf8proc_toupper(cp);
        else
            o = first ? utf8proc_toupper(cp) : utf8proc_tolower(cp);
        utf8proc_category_t cat = utf8proc_category(cp);
        prev_cased = cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
                     cat == UTF8PROC_CATEGORY_LT;
        first = false;
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t k = utf8proc_encode_char(o, enc);
        bput(c, b, (const char *)enc, (size_t)k, line);
    }
    return buf_take(c, b);
}

static bool in_chars(int32_t cp, const struct jstr *chars)
{
    if (!chars)
        return is_space_cp(cp);
    for (size_t i = 0; i < chars->len;) {
        int32_t x;
        i += cp_next(chars->s, chars->len, i, &x);
        if (x == cp)
            return true;
    }
    return false;
}

static struct jv str_strip(struct jctx *c, const struct jstr *s, const struct jstr *chars, bool left,
                           bool right)
{
    size_t st = 0, en = s->len;
    if (left)
        while (st < en) {
            int32_t cp;
            size_t k = cp_next(s->s, en, st, &cp);
            if (!in_chars(cp, chars))
                break;
            st += k;
        }
    if (right)
        while (en > st) {
            size_t k = 1;
            while (k < en - st && k < 4 && ((unsigned char)s->s[en - k] & 0xc0) == 0x80)
                k++;
            int32_t cp;
            cp_next(s->s, en, en - k, &cp);
            if (!in_chars(cp, chars))
                break;
            en -= k;
        }
    return mk_strn(c, s->s + st, en - st);
}

static struct jv str_replace(struct jctx *c, const struct jstr *s, const struct jstr *old,
                             const struct jstr *rep, int64_t count, int line)
{
    struct jbuf *b = buf_new(c);
    int64_t done = 0;
    if (old->len == 0) {
        for (size_t i = 0;; ) {
            if (count < 0 || done < count) {
                bput(c, b, rep->s, rep->len, line);
                done++;
            }
            if (i >= s->len)
                break;
            int32_t cp;
            size_t k = cp_next(s->s, s->len, i, &cp);
            bput(c, b, s->s + i, k, line);
            i += k;
        }
        return buf_take(c, b);
    }
    size_t i = 0;
    while (i < s->len) {
        const char *p = (count < 0 || done < count) ? memmem(s->s + i, s->len - i, old->s, old->len) : NULL;
        if (!p) {
            bput(c, b, s->s + i, s->len - i, line);
            break;
        }
        bput(c, b, s->s + i, (size_t)(p - (s->s + i)), line);
        bput(c, b, rep->s, rep->len, line);
        i = (size_t)(p - s->s) + old->len;
        done++;
    }
    return buf_take(c, b);
}

static struct jv str_split(struct jctx *c, const struct jstr *s, const struct jstr *sep,
                           int64_t maxsplit, int line)
{
    struct jlist *l = jlist_new(c->a, 0);
    if (!sep) {
        size_t i = 0;
        for (;;) {
            while (i < s->len) {
                int32_t cp;
                size_t k = cp_next(s->s, s->len, i, &cp);
                if (!is_space_cp(cp))
                    break;
                i += k;
            }
            if (i >= s->len)
                break;
            if (maxsplit >= 0 && (int64_t)l->n >= maxsplit) {
                jlist_push(c->a, l, mk_strn(c, s->s + i, s->len - i));
                break;
            }
            size_t st = i;
            while (i < s->len) {
                int32_t cp;
                size_t k = cp_next(s->s, s->len, i, &cp);
                if (is_space_cp(cp))
                    break;
                i += k;
            }
            jlist_push(c->a, l, mk_strn(c, s->s + st, i - st));
        }
        return mk_list(l);
    }
    if (sep->len == 0)
        efail(c, line, "split(): empty separator");
    size_t i = 0;
    for (;;) {
        const char *p = (maxsplit < 0 || (int64_t)l->n < maxsplit)
                            ? memmem(s->s + i, s->len - i, sep->s, sep->len) : NULL;
        if (!p) {
            jlist_push(c->a, l, mk_strn(c, s->s + i, s->len - i));
            break;
        }
        jlist_push(c->a, l, mk_strn(c, s->s + i, (size_t)(p - (s->s + i))));
        i = (size_t)(p - s->s) + sep->len;
    }
    return mk_list(l);
}

static bool affix_match(struct jctx *c, const struct jstr *s, struct jv pat, bool start, int line)
{
    if (pat.t == JV_STR) {
        if (pat.s->len > s->len)
            return false;
        return memcmp(start ? s->s : s->s + s->len - pat.s->len, pat.s->s, pat.s->len) == 0;
    }
    if (pat.t == JV_LIST) {
        for (size_t i = 0; i < pat.l->n; i++) {
            if (pat.l->v[i].t != JV_STR)
                efail(c, line, "%s() tuple elements must be strings", start ? "startswith" : "endswith");
            if (affix_match(c, s, pat.l->v[i], start, line))
                return true;
        }
        return false;
    }
    efail(c, line, "%s() argument must be a string or tuple of strings", start ? "startswith" : "endswith");
}

static struct jv join_values(struct jctx *c, struct jv list, const struct jstr *sep,
                             const struct jstr *attr, int line);

static struct jv call_method(struct jctx *c, struct jv self, const char *m, const struct jargs *a,
                             int line)
{
    if (self.t == JV_STR) {
        const struct jstr *s = self.s;
        if (!strcmp(m, "upper")) return str_case(c, s, 0, line);
        if (!strcmp(m, "lower")) return str_case(c, s, 1, line);
        if (!strcmp(m, "title")) return str_case(c, s, 2, line);
        if (!strcmp(m, "capitalize")) return str_case(c, s, 3, line);
        if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
            const struct jstr *chars = arg_str(c, a, 0, "chars", line);
            return str_strip(c, s, chars, m[0] != 'r', m[0] != 'l');
        }
        if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
            const struct jv *p = arg(a, 0, "prefix");
            if (!p)
                efail(c, line, "%s() needs an argument", m);
            return jv_bool(affix_match(c, s, *p, m[0] == 's', line));
        }
        if (!strcmp(m, "split")) {
            const struct jv *mx = arg(a, 1, "maxsplit");
            if (mx && mx->t != JV_INT)
                efail(c, line, "split(): maxsplit must be an integer");
            return str_split(c, s, arg_str(c, a, 0, "sep", line), mx ? mx->i : -1, line);
        }
        if (!strcmp(m, "replace")) {
            const struct jstr *o = arg_str(c, a, 0, "old", line), *r = arg_str(c, a, 1, "new", line);
            if (!o || !r)
                efail(c, line, "replace() needs two string arguments");
            const struct jv *cnt = arg(a, 2, "count");
            if (cnt && cnt->t != JV_INT && cnt->t != JV_NONE)
                efail(c, line, "replace(): count must be an integer");
            return str_replace(c, s, o, r, cnt && cnt->t == JV_INT ? cnt->i : -1, line);
        }
        if (!strcmp(m, "find") || !strcmp(m, "count")) {
            const struct jstr *sub = arg_str(c, a, 0, "sub", line);
            if (!sub)
                efail(c, line, "%s() needs a string argument", m);
            if (m[0] == 'f') {
                const char *p = sub->len ? memmem(s->s, s->len, sub->s, sub->len) : s->s;
                return jv_int(p ? (int64_t)cp_count(s->s, (size_t)(p - s->s)) : -1);
            }
            if (!sub->len)
                return jv_int((int64_t)cp_count(s->s, s->len) + 1);
            int64_t n = 0;
            for (const char *p = s->s; (p = memmem(p, s->len - (size_t)(p - s->s), sub->s, sub->len));
                 p += sub->len)
                n++;
            return jv_int(n);
        }
        if (!strcmp(m, "join")) {
            const struct jv *l = arg(a, 0, "iterable");
            if (!l || l->t != JV_LIST)
                efail(c, line, "join() needs a list");
            return join_values(c, *l, s, NULL, line);
        }
        if (!strcmp(m, "splitlines")) {
            struct jlist *l = jlist_new(c->a, 0);
            size_t st = 0;
            for (size_t i = 0; i < s->len; i++)
                if (s->s[i] == '\n' || s->s[i] == '\r') {
                    jlist_push(c->a, l, mk_strn(c, s->s + st, i - st));
                    if (s->s[i] == '\r' && i + 1 < s->len && s->s[i + 1] == '\n')
                        i++;
                    st = i + 1;
                }
            if (st < s->len)
                jlist_push(c->a, l, mk_strn(c, s->s + st, s->len - st));
            return mk_list(l);
        }
        if (!strncmp(m, "is", 2)) {
            bool all = s->len > 0, any_cased = false;
            for (size_t i = 0; i < s->len;) {
                int32_t cp;
                i += cp_next(s->s, s->len, i, &cp);
                utf8proc_category_t cat = utf8proc_category(cp);
                bool up = cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT;
                bool lo = cat == UTF8PROC_CATEGORY_LL;
                bool alpha = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
                bool digit = cat == UTF8PROC_CATEGORY_ND;
                if (!strcmp(m, "isdigit")) all = all && digit;
                else if (!strcmp(m, "isspace")) all = all && is_space_cp(cp);
                else if (!strcmp(m, "isalpha")) all = all && alpha;
                else if (!strcmp(m, "isalnum")) all = all && (alpha || digit);
                else if (!strcmp(m, "islower")) { all = all && !up; any_cased |= lo; }
                else if (!strcmp(m, "isupper")) { all = all && !lo; any_cased |= up; }
            }
            if (!strcmp(m, "islower") || !strcmp(m, "isupper"))
                all = all && any_cased;
            return jv_bool(all);
        }
        efail(c, line, "unsupported string method '%s'", m);
    }
    if (self.t == JV_DICT) {
        struct jdict *d = self.d;
        if (!strcmp(m, "get")) {
            const struct jv *k = arg(a, 0, "key");
            if (!k || k->t != JV_STR)
                efail(c, line, "get(): the key must be a string");
            struct jv *p = jdict_get(d, k->s->s, k->s->len);
            if (p)
                return *p;
            const struct jv *def = arg(a, 1, "default");
            return def ? *def : jv_none();
        }
        if (!strcmp(m, "items") || !strcmp(m, "keys") || !strcmp(m, "values")) {
            struct jlist *l = jlist_new(c->a, d->n);
            for (size_t i = 0; i < d->n; i++) {
                if (m[0] == 'i') {
                    struct jlist *pair = jlist_new(c->a, 2);
                    jlist_push(c->a, pair, jv_str(d->k[i]));
                    jlist_push(c->a, pair, d->v[i]);
                    jlist_push(c->a, l, mk_list(pair));
                } else {
                    jlist_push(c->a, l, m[0] == 'k' ? jv_str(d->k[i]) : d->v[i]);
                }
            }
            return mk_list(l);
        }
        if (!strcmp(m, "dictsort"))
            return apply_filter(c, NULL, NULL, self, jinja_filter_id("dictsort"), a);
    }
    if (self.t == JV_LIST) {
        if (!strcmp(m, "append")) {
            const struct jv *v = arg(a, 0, "value");
            if (!v)
                efail(c, line, "append() needs an argument");
            jlist_push(c->a, self.l, *v);
            return jv_none();
        }
        if (!strcmp(m, "index") || !strcmp(m, "count")) {
            const struct jv *v = arg(a, 0, "value");
            if (!v)
                efail(c, line, "%s() needs an argument", m);
            int64_t n = 0;
            for (size_t i = 0; i < self.l->n; i++)
                if (strict_eq(self.l->v[i], *v)) {
                    if (m[0] == 'i')
                        return jv_int((int64_t)i);
                    n++;
                }
            if (m[0] == 'i')
                efail(c, line, "index(): value not in list");
            return jv_int(n);
        }
    }
    efail(c, line, "unsupported method '%s' of a %s", m, jv_type_name(self.t));
}

/* ---- global functions ---- */

static struct jv fn_raise(struct jctx *c, const struct jargs *a, int line)
{
    const struct jv *m = arg(a, 0, "message");
    const struct jstr *s = m ? to_str(c, *m, line) : jstr_new(c->a, "", 0);
    snprintf(c->err, c->errlen, "%s (raise_exception at %s:%d)", s->s, c->name, line);
    longjmp(*c->a->fail, 1);
}

static struct jv fn_range(struct jctx *c, const struct jargs *a, int line)
{
    int64_t v[3] = {0, 0, 1};
    if (a->npos < 1 || a->npos > 3)
        efail(c, line, "range() takes 1 to 3 integer arguments");
    for (size_t i = 0; i < a->npos; i++) {
        if (a->pos[i].t != JV_INT)
            efail(c, line, "range() arguments must be integers");
    }
    if (a->npos == 1) {
        v[1] = a->pos[0].i;
    } else {
        v[0] = a->pos[0].i;
        v[1] = a->pos[1].i;
        if (a->npos == 3)
            v[2] = a->pos[2].i;
    }
    if (v[2] == 0)
        efail(c, line, "range() step must not be zero");
    struct jlist *l = jlist_new(c->a, 0);
    for (int64_t i = v[0]; v[2] > 0 ? i < v[1] : i > v[1]; i += v[2])
        jlist_push(c->a, l, jv_int(i));
    return mk_list(l);
}

static struct jv fn_namespace(struct jctx *c, const struct jargs *a, int line)
{
    struct jdict *d = jdict_new(c->a);
    if (a->npos > 1)
        efail(c, line, "namespace() takes at most one positional argument");
    if (a->npos == 1) {
        struct jv src = a->pos[0];
        if (src.t == JV_DICT) {
            for (size_t i = 0; i < src.d->n; i++)
                jdict_set(c->a, d, src.d->k[i], src.d->v[i]);
        } else if (src.t == JV_LIST) {
            for (size_t i = 0; i < src.l->n; i++) {
                struct jv p = src.l->v[i];
                if (p.t != JV_LIST || p.l->n != 2 || p.l->v[0].t != JV_STR)
                    efail(c, line, "namespace() expects a dict or a list of [key, value] pairs");
                jdict_set(c->a, d, p.l->v[0].s, p.l->v[1]);
            }
        } else {
            efail(c, line, "namespace() expects a dict, not %s", jv_type_name(src.t));
        }
    }
    for (size_t i = 0; i < a->nkw; i++)
        jdict_set(c->a, d, a->kw_names[i], a->kw[i]);
    struct jv v = {.t = JV_NS, .d = d};
    return v;
}

static struct jv fn_dict(struct jctx *c, const struct jargs *a, int line)
{
    struct jdict *d = jdict_new(c->a);
    if (a->npos == 1 && a->pos[0].t == JV_DICT)
        for (size_t i = 0; i < a->pos[0].d->n; i++)
            jdict_set(c->a, d, a->pos[0].d->k[i], a->pos[0].d->v[i]);
    else if (a->npos)
        efail(c, line, "dict() takes a dict or keyword arguments");
    for (size_t i = 0; i < a->nkw; i++)
        jdict_set(c->a, d, a->kw_names[i], a->kw[i]);
    return mk_dict(d);
}

static struct jv fn_strftime_now(struct jctx *c, const struct jargs *a, int line)
{
    const struct jstr *f = arg_str(c, a, 0, "format", line);
    if (!f)
        efail(c, line, "strftime_now() needs a format string");
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    char out[512];
    size_t n = strftime(out, sizeof out, f->s, &tm);
    if (n == 0 && f->len)
        efail(c, line, "strftime_now(): format too long");
    return mk_strn(c, out, n);
}

/* ---- calls ---- */

static struct jv call_macro(struct jctx *c, const struct jfunc *f, const struct jargs *a,
                            struct jv caller, int line)
{
    const struct jnode *def = f->node;
    struct jenv *e = env_new(c, f->env);
    /* Parameters: for a macro def->list2, for a call block def->list2 too. */
    struct jnode *const *params = def->list2;
    size_t np = def->n2;
    bool *used = jarena_alloc(c->a, a->nkw + 1);
    for (size_t i = 0; i < np; i++) {
        const struct jnode *p = params[i];
        const struct jv *v = i < a->npos ? &a->pos[i] : NULL;
        if (!v)
            for (size_t k = 0; k < a->nkw; k++)
                if (!used[k] && a->kw_names[k]->len == p->str->len &&
                    memcmp(a->kw_names[k]->s, p->str->s, p->str->len) == 0) {
                    v = &a->kw[k];
                    used[k] = true;
                }
        env_set(c, e, p->str, v ? *v : jv_undef());
    }
    for (size_t i = 0; i < np; i++) {
        const struct jnode *p = params[i];
        struct jv cur;
        if (p->kind == JN_KWARG && env_get(e, p->str, &cur) && cur.t == JV_UNDEF &&
            !(i < a->npos))
            env_set(c, e, p->str, eval(c, e, p->a));
    }
    struct jlist *varargs = jlist_new(c->a, 0);
    for (size_t i = np; i < a->npos; i++)
        jlist_push(c->a, varargs, a->pos[i]);
    struct jdict *kwargs = jdict_new(c->a);
    for (size_t k = 0; k < a->nkw; k++)
        if (!used[k])
            jdict_set(c->a, kwargs, a->kw_names[k], a->kw[k]);
    env_setc(c, e, "varargs", mk_list(varargs));
    env_setc(c, e, "kwargs", mk_dict(kwargs));
    if (caller.t == JV_FUNC)
        env_setc(c, e, "caller", caller);
    struct jbuf *saved = c->out, *b = buf_new(c);
    c->out = b;
    int saved_ctl = c->loop_ctl;
    c->loop_ctl = 0;
    exec_body(c, e, def->list, def->n);
    c->loop_ctl = saved_ctl;
    c->out = saved;
    (void)line;
    return buf_take(c, b);
}

static struct jv call_value(struct jctx *c, struct jv fn, const struct jargs *a, struct jv caller,
                            int line, const char *what)
{
    if (fn.t != JV_FUNC) {
        if (fn.t == JV_UNDEF)
            efail(c, line, "unknown function '%s'", what);
        efail(c, line, "'%s' is a %s, not a function", what, jv_type_name(fn.t));
    }
    if (++c->depth > JINJA_MAX_EVAL_DEPTH)
        efail(c, line, "template recursion deeper than %d", JINJA_MAX_EVAL_DEPTH);
    struct jv r;
    switch (fn.fn->kind) {
    case JF_BUILTIN: r = fn.fn->fn(c, a, line); break;
    case JF_METHOD: r = call_method(c, fn.fn->self, fn.fn->name, a, line); break;
    default: r = call_macro(c, fn.fn, a, caller, line); break;
    }
    c->depth--;
    return r;
}

static const char *callee_desc(const struct jnode *x)
{
    if (x->kind == JN_NAME)
        return x->str->s;
    if (x->kind == JN_ATTR)
        return x->str->s;
    return "expression";
}

/* ---- filters ---- */

enum {
    F_SAFE, F_TOJSON, F_LIST, F_FIRST, F_LAST, F_LENGTH, F_COUNT, F_REVERSE, F_SORT, F_JOIN,
    F_STRING, F_UNIQUE, F_TRIM, F_UPPER, F_LOWER, F_TITLE, F_CAPITALIZE, F_INDENT, F_INT,
    F_FLOAT, F_ABS, F_DEFAULT, F_D, F_ITEMS, F_DICTSORT, F_REPLACE, F_ESCAPE, F_E,
    F_SELECTATTR, F_REJECTATTR, F_SELECT, F_REJECT, F_MAP, F_BOOL, F_ROUND, F_MIN, F_MAX,
    F_SUM, F_COUNT_
};
static const char *const filter_names[] = {
    "safe", "tojson", "list", "first", "last", "length", "count", "reverse", "sort", "join",
    "string", "unique", "trim", "upper", "lower", "title", "capitalize", "indent", "int",
    "float", "abs", "default", "d", "items", "dictsort", "replace", "escape", "e",
    "selectattr", "rejectattr", "select", "reject", "map", "bool", "round", "min", "max",
    "sum"};

int jinja_filter_id(const char *name)
{
    for (int i = 0; i < F_COUNT_; i++)
        if (!strcmp(filter_names[i], name))
            return i;
    return -1;
}

enum {
    T_DEFINED, T_UNDEFINED, T_NONE, T_BOOLEAN, T_TRUE, T_FALSE, T_STRING, T_NUMBER, T_INTEGER,
    T_FLOAT, T_MAPPING, T_ITERABLE, T_SEQUENCE, T_CALLABLE, T_ODD, T_EVEN, T_DIVISIBLEBY,
    T_EQUALTO, T_EQ, T_EQEQ, T_SAMEAS, T_NE, T_NEQ, T_LT, T_LTS, T_LE, T_LES, T_GT, T_GTS,
    T_GE, T_GES, T_IN, T_LOWER, T_UPPER, T_COUNT_
};
static const char *const test_names[] = {
    "defined", "undefined", "none", "boolean", "true", "false", "string", "number", "integer",
    "float", "mapping", "iterable", "sequence", "callable", "odd", "even", "divisibleby",
    "equalto", "eq", "==", "sameas", "ne", "!=", "lt", "<", "le", "<=", "gt", ">", "ge", ">=",
    "in", "lower", "upper"};

int jinja_test_id(const char *name)
{
    for (int i = 0; i < T_COUNT_; i++)
        if (!strcmp(test_names[i], name))
            return i;
    return -1;
}

static bool run_test(struct jctx *c, int tid, struct jv v, const struct jargs *a, int line)
{
    const struct jv *x = arg(a, 0, NULL);
    switch (tid) {
    case T_DEFINED: return v.t != JV_UNDEF;
    case T_UNDEFINED: return v.t == JV_UNDEF;
    case T_NONE: return v.t == JV_NONE;
    case T_BOOLEAN: return v.t == JV_BOOL;
    case T_TRUE: return v.t == JV_BOOL && v.b;
    case T_FALSE: return v.t == JV_BOOL && !v.b;
    case T_STRING: return v.t == JV_STR;
    case T_NUMBER: return is_num(v);
    case T_INTEGER: return v.t == JV_INT;
    case T_FLOAT: return v.t == JV_FLOAT;
    case T_MAPPING: return v.t == JV_DICT;
    case T_ITERABLE: return v.t == JV_LIST || v.t == JV_STR || v.t == JV_DICT;
    case T_SEQUENCE: return v.t == JV_LIST || v.t == JV_STR || v.t == JV_DICT;
    case T_CALLABLE: return v.t == JV_FUNC;
    case T_ODD:
    case T_EVEN:
        if (v.t != JV_INT)
            efail(c, line, "test '%s' needs an integer, not %s", test_names[tid], jv_type_name(v.t));
        return (v.i % 2 != 0) == (tid == T_ODD);
    case T_DIVISIBLEBY:
        if (v.t != JV_INT || !x || x->t != JV_INT || x->i == 0)
            efail(c, line, "test 'divisibleby' needs integers");
        return v.i % x->i == 0;
    case T_LOWER:
    case T_UPPER: {
        if (v.t != JV_STR)
            return false;
        struct jv t = str_case(c, v.s, tid == T_LOWER ? 1 : 0, line);
        return strict_eq(t, v);
    }
    default: break;
    }
    if (!x)
        efail(c, line, "test '%s' needs an argument", test_names[tid]);
    switch (tid) {
    case T_EQUALTO:
    case T_EQ:
    case T_EQEQ:
    case T_SAMEAS: return strict_eq(v, *x);
    case T_NE:
    case T_NEQ: return !strict_eq(v, *x);
    case T_IN: return truthy(binop(c, JOP_IN, v, *x, line));
    case T_LT: case T_LTS: return truthy(binop(c, JOP_LT, v, *x, line));
    case T_LE: case T_LES: return truthy(binop(c, JOP_LE, v, *x, line));
    case T_GT: case T_GTS: return truthy(binop(c, JOP_GT, v, *x, line));
    case T_GE: case T_GES: return truthy(binop(c, JOP_GE, v, *x, line));
    }
    return false;
}

/* Text of one element in join, as JavaScript's Array.join writes it. */
static void join_item(struct jctx *c, struct jbuf *b, struct jv v, int line)
{
    char tmp[64];
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE: return;
    case JV_FLOAT: jinja_js_number(tmp, sizeof tmp, v.f); bput(c, b, tmp, strlen(tmp), line); return;
    case JV_LIST:
    case JV_DICT:
    case JV_NS:
    case JV_FUNC: efail(c, line, "join: cannot join a %s", jv_type_name(v.t));
    default: str_into(c, b, v, line);
    }
}

static struct jv join_values(struct jctx *c, struct jv list, const struct jstr *sep,
                             const struct jstr *attr, int line)
{
    struct jbuf *b = buf_new(c);
    for (size_t i = 0; i < list.l->n; i++) {
        if (i && sep)
            bput(c, b, sep->s, sep->len, line);
        join_item(c, b, attr ? attr_path(c, list.l->v[i], attr) : list.l->v[i], line);
    }
    return buf_take(c, b);
}

static struct jv to_list(struct jctx *c, struct jv v, const char *what, int line)
{
    if (v.t == JV_LIST)
        return v;
    struct jlist *l = jlist_new(c->a, 0);
    if (v.t == JV_UNDEF)
        return mk_list(l);
    if (v.t == JV_STR) {
        for (size_t i = 0; i < v.s->len;) {
            int32_t cp;
            size_t k = cp_next(v.s->s, v.s->len, i, &cp);
            jlist_push(c->a, l, mk_strn(c, v.s->s + i, k));
            i += k;
        }
        return mk_list(l);
    }
    if (v.t == JV_DICT) {
        for (size_t i = 0; i < v.d->n; i++)
            jlist_push(c->a, l, jv_str(v.d->k[i]));
        return mk_list(l);
    }
    efail(c, line, "%s: a %s is not iterable", what, jv_type_name(v.t));
}

/* Applies filter fid (args in a, or from node f when a is NULL). */
static struct jv apply_filter(struct jctx *c, struct jenv *e, const struct jnode *f, struct jv v,
                              int fid, const struct jargs *a)
{
    int line = f ? f->line : 0;
    struct jargs args;
    if (!a) {
        eval_args(c, e, f->list, f->n, &args, line);
        a = &args;
    }
    const char *fname = filter_names[fid];
    switch (fid) {
    case F_SAFE: return v;
    case F_DEFAULT:
    case F_D: {
        const struct jv *d = arg(a, 0, "default_value");
        bool boolean = arg_bool(c, a, 1, "boolean", false, line);
        if (v.t == JV_UNDEF || (boolean && !truthy(v)))
            return d ? *d : mk_cstr(c, "");
        return v;
    }
    case F_TOJSON: {
        const struct jv *ind = arg(a, 0, "indent");
        if (ind && ind->t != JV_INT && ind->t != JV_NONE)
            efail(c, line, "tojson: indent must be an integer");
        bool ea = arg_bool(c, a, 1000, "ensure_ascii", false, line);
        bool sk = arg_bool(c, a, 1000, "sort_keys", false, line);
        const struct jv *sep = arg(a, 1000, "separators");
        const char *is = NULL, *ks = NULL;
        if (sep && sep->t != JV_NONE) {
            if (sep->t != JV_LIST || sep->l->n != 2 || sep->l->v[0].t != JV_STR ||
                sep->l->v[1].t != JV_STR)
                efail(c, line, "tojson: separators must be two strings");
            is = sep->l->v[0].s->s;
            ks = sep->l->v[1].s->s;
        }
        struct jbuf *b = buf_new(c);
        if (!jinja_to_json(b, v, ind && ind->t == JV_INT ? (int)ind->i : 0, ea, sk, is, ks, 0))
            efail(c, line, "tojson: cannot convert a %s to JSON (or too deep / too large)",
                  jv_type_name(v.t));
        return buf_take(c, b);
    }
    case F_LENGTH:
    case F_COUNT:
        switch (v.t) {
        case JV_UNDEF: return jv_int(0);
        case JV_STR: return jv_int((int64_t)cp_count(v.s->s, v.s->len));
        case JV_LIST: return jv_int((int64_t)v.l->n);
        case JV_DICT:
        case JV_NS: return jv_int((int64_t)v.d->n);
        default: efail(c, line, "%s: a %s has no length", fname, jv_type_name(v.t));
        }
    case F_STRING:
        if (v.t == JV_UNDEF)
            return mk_cstr(c, "");
        return jv_str(to_str(c, v, line));
    case F_LIST: {
        struct jv l = to_list(c, v, fname, line);
        if (l.l == v.l && v.t == JV_LIST) {
            struct jlist *n = jlist_new(c->a, v.l->n);
            for (size_t i = 0; i < v.l->n; i++)
                jlist_push(c->a, n, v.l->v[i]);
            return mk_list(n);
        }
        return l;
    }
    case F_ITEMS:
        if (v.t == JV_UNDEF)
            return mk_list(jlist_new(c->a, 0));
        if (v.t != JV_DICT)
            efail(c, line, "items: expected a dict, not %s", jv_type_name(v.t));
        return call_method(c, v, "items", a, line);
    case F_ESCAPE:
    case F_E: {
        const struct jstr *s = to_str(c, v, line);
        struct jbuf *b = buf_new(c);
        for (size_t i = 0; i < s->len; i++) {
            const char *r = NULL;
            switch (s->s[i]) {
            case '&': r = "&amp;"; break;
            case '<': r = "&lt;"; break;
            case '>': r = "&gt;"; break;
            case '"': r = "&#34;"; break;
            case '\'': r = "&#39;"; break;
            }
            if (r)
                bput(c, b, r, strlen(r), line);
            else
                bput(c, b, s->s + i, 1, line);
        }
        return buf_take(c, b);
    }
    default: break;
    }
    if (v.t == JV_UNDEF)
        efail(c, line, "filter '%s' applied to an undefined value", fname);
    switch (fid) {
    case F_FIRST:
    case F_LAST: {
        struct jv l = to_list(c, v, fname, line);
        if (!l.l->n)
            return jv_undef();
        return l.l->v[fid == F_FIRST ? 0 : l.l->n - 1];
    }
    case F_REVERSE: {
        if (v.t == JV_STR) {
            struct jv l = to_list(c, v, fname, line);
            struct jbuf *b = buf_new(c);
            for (size_t i = l.l->n; i-- > 0;)
                bput(c, b, l.l->v[i].s->s, l.l->v[i].s->len, line);
            return buf_take(c, b);
        }
        struct jv l = to_list(c, v, fname, line);
        struct jlist *n = jlist_new(c->a, l.l->n);
        for (size_t i = l.l->n; i-- > 0;)
            jlist_push(c->a, n, l.l->v[i]);
        return mk_list(n);
    }
    case F_SORT: {
        struct jv l = to_list(c, v, fname, line);
        bool rev = arg_bool(c, a, 0, "reverse", false, line);
        bool cs = arg_bool(c, a, 1, "case_sensitive", false, line);
        const struct jv *at = arg(a, 2, "attribute");
        const struct jstr *attr = NULL;
        if (at && at->t == JV_STR)
            attr = at->s;
        else if (at && at->t == JV_INT) {
            char tmp[32];
            snprintf(tmp, sizeof tmp, "%lld", (long long)at->i);
            attr = jstr_new(c->a, tmp, strlen(tmp));
        } else if (at && at->t != JV_NONE)
            efail(c, line, "sort: attribute must be a string or an integer");
        size_t n = l.l->n;
        struct sort_key *k = jarena_alloc(c->a, (n + 1) * sizeof *k);
        struct sort_key *tmp = jarena_alloc(c->a, (n + 1) * sizeof *tmp);
        for (size_t i = 0; i < n; i++) {
            k[i].item = l.l->v[i];
            k[i].key = attr ? attr_path(c, l.l->v[i], attr) : l.l->v[i];
        }
        merge_sort(c, k, tmp, n, cs, rev, line);
        struct jlist *out = jlist_new(c->a, n);
        for (size_t i = 0; i < n; i++)
            jlist_push(c->a, out, k[i].item);
        return mk_list(out);
    }
    case F_DICTSORT: {
        if (v.t != JV_DICT)
            efail(c, line, "dictsort: expected a dict, not %s", jv_type_name(v.t));
        bool cs = arg_bool(c, a, 0, "case_sensitive", false, line);
        const struct jstr *by = arg_str(c, a, 1, "by", line);
        bool rev = arg_bool(c, a, 2, "reverse", false, line);
        bool by_value = by && sv_eq(by, "value");
        if (by && !by_value && !sv_eq(by, "key"))
            efail(c, line, "dictsort: by must be 'key' or 'value'");
        size_t n = v.d->n;
        struct sort_key *k = jarena_alloc(c->a, (n + 1) * sizeof *k);
        struct sort_key *tmp = jarena_alloc(c->a, (n + 1) * sizeof *tmp);
        for (size_t i = 0; i < n; i++) {
            struct jlist *pair = jlist_new(c->a, 2);
            jlist_push(c->a, pair, jv_str(v.d->k[i]));
            jlist_push(c->a, pair, v.d->v[i]);
            k[i].item = mk_list(pair);
            k[i].key = by_value ? v.d->v[i] : jv_str(v.d->k[i]);
        }
        merge_sort(c, k, tmp, n, cs, rev, line);
        struct jlist *out = jlist_new(c->a, n);
        for (size_t i = 0; i < n; i++)
            jlist_push(c->a, out, k[i].item);
        return mk_list(out);
    }
    case F_JOIN: {
        struct jv l = to_list(c, v, fname, line);
        const struct jstr *sep = arg_str(c, a, 0, "d", line);
        if (!sep)
            sep = arg_str(c, a, 1000, "separator", line);
        const struct jstr *attr = arg_str(c, a, 1, "attribute", line);
        return join_values(c, l, sep, attr, line);
    }
    case F_UNIQUE: {
        struct jv l = to_list(c, v, fname, line);
        struct jlist *out = jlist_new(c->a, 0);
        for (size_t i = 0; i < l.l->n; i++) {
            bool seen = false;
            for (size_t j = 0; j < out->n && !seen; j++)
                seen = strict_eq(out->v[j], l.l->v[i]);
            if (!seen)
                jlist_push(c->a, out, l.l->v[i]);
        }
        return mk_list(out);
    }
    case F_SELECTATTR:
    case F_REJECTATTR:
    case F_SELECT:
    case F_REJECT:
    case F_MAP: {
        struct jv l = to_list(c, v, fname, line);
        bool by_attr = fid == F_SELECTATTR || fid == F_REJECTATTR;
        bool keep_if = fid == F_SELECTATTR || fid == F_SELECT;
        struct jlist *out = jlist_new(c->a, l.l->n);
        if (fid == F_MAP) {
            const struct jstr *attr = arg_str(c, a, 1000, "attribute", line);
            if (attr) {
                const struct jv *def = arg(a, 1000, "default");
                for (size_t i = 0; i < l.l->n; i++) {
                    struct jv r = attr_path(c, l.l->v[i], attr);
                    jlist_push(c->a, out, r.t == JV_UNDEF && def ? *def : r);
                }
                return mk_list(out);
            }
            const struct jstr *fn = arg_str(c, a, 0, NULL, line);
            int id = fn ? jinja_filter_id(fn->s) : -1;
            if (id < 0)
                efail(c, line, "map: needs attribute= or the name of a supported filter");
            struct jargs rest = *a;
            rest.pos++;
            rest.npos--;
            for (size_t i = 0; i < l.l->n; i++)
                jlist_push(c->a, out, apply_filter(c, e, f, l.l->v[i], id, &rest));
            return mk_list(out);
        }
        size_t base = by_attr ? 1 : 0;
        const struct jstr *attr = by_attr ? arg_str(c, a, 0, "attribute", line) : NULL;
        if (by_attr && !attr)
            efail(c, line, "%s: needs an attribute name", fname);
        const struct jstr *tname = arg_str(c, a, base, NULL, line);
        int tid = tname ? jinja_test_id(tname->s) : -1;
        if (tname && tid < 0)
            efail(c, line, "%s: unsupported test '%s'", fname, tname->s);
        struct jargs targs = *a;
        if (targs.npos > base + 1) {
            targs.pos += base + 1;
            targs.npos -= base + 1;
        } else {
            targs.npos = 0;
        }
        for (size_t i = 0; i < l.l->n; i++) {
            struct jv item = l.l->v[i];
            struct jv val = by_attr ? attr_path(c, item, attr) : item;
            bool ok = tname ? run_test(c, tid, val, &targs, line) : truthy(val);
            if (ok == keep_if)
                jlist_push(c->a, out, item);
        }
        return mk_list(out);
    }
    case F_MIN:
    case F_MAX:
    case F_SUM: {
        struct jv l = to_list(c, v, fname, line);
        if (fid == F_SUM) {
            struct jv acc = jv_int(0);
            for (size_t i = 0; i < l.l->n; i++)
                acc = binop(c, JOP_ADD, acc, l.l->v[i], line);
            return acc;
        }
        if (!l.l->n)
            return jv_undef();
        struct jv best = l.l->v[0];
        for (size_t i = 1; i < l.l->n; i++) {
            int r = compare_values(c, l.l->v[i], best, false, line);
            if (fid == F_MIN ? r < 0 : r > 0)
                best = l.l->v[i];
        }
        return best;
    }
    default: break;
    }
    /* scalar filters */
    switch (fid) {
    case F_TRIM:
    case F_UPPER:
    case F_LOWER:
    case F_TITLE:
    case F_CAPITALIZE:
    case F_INDENT:
    case F_REPLACE:
        if (v.t != JV_STR)
            efail(c, line, "filter '%s' needs a string, not %s", fname, jv_type_name(v.t));
        if (fid == F_TRIM)
            return str_strip(c, v.s, arg_str(c, a, 0, "chars", line), true, true);
        if (fid == F_UPPER || fid == F_LOWER)
            return str_case(c, v.s, fid == F_UPPER ? 0 : 1, line);
        if (fid == F_TITLE || fid == F_CAPITALIZE)
            return str_case(c, v.s, fid == F_TITLE ? 2 : 3, line);
        if (fid == F_REPLACE)
            return call_method(c, v, "replace", a, line);
        {
            const struct jv *w = arg(a, 0, "width");
            char pad[256];
            const char *ind = "    ";
            size_t il = 4;
            if (w && w->t == JV_INT) {
                il = w->i < 0 ? 0 : (size_t)(w->i > 255 ? 255 : w->i);
                memset(pad, ' ', il);
                ind = pad;
            } else if (w && w->t == JV_STR) {
                ind = w->s->s;
                il = w->s->len;
            } else if (w) {
                efail(c, line, "indent: width must be a number or a string");
            }
            bool first = arg_bool(c, a, 1, "first", false, line);
            bool blank = arg_bool(c, a, 2, "blank", false, line);
            struct jbuf *b = buf_new(c);
            size_t st = 0;
            for (size_t li = 0;; li++) {
                const char *nl = memchr(v.s->s + st, '\n', v.s->len - st);
                size_t en = nl ? (size_t)(nl - v.s->s) : v.s->len;
                if (li)
                    bput(c, b, "\n", 1, line);
                if (!((!first && li == 0) || (!blank && en == st)))
                    bput(c, b, ind, il, line);
                bput(c, b, v.s->s + st, en - st, line);
                if (!nl)
                    break;
                st = en + 1;
            }
            return buf_take(c, b);
        }
    case F_INT:
    case F_FLOAT: {
        const struct jv *d = arg(a, 0, "default");
        if (v.t == JV_BOOL)
            return fid == F_INT ? jv_int(v.b) : jv_float(v.b);
        if (v.t == JV_INT)
            return fid == F_INT ? v : jv_float((double)v.i);
        if (v.t == JV_FLOAT)
            return fid == F_INT ? jv_int((int64_t)v.f) : v;
        if (v.t == JV_STR) {
            char *end;
            double x = strtod(v.s->s, &end);
            if (end == v.s->s || !isfinite(x))
                return d ? *d : fid == F_INT ? jv_int(0) : jv_float(0);
            return fid == F_INT ? jv_int((int64_t)x) : jv_float(x);
        }
        efail(c, line, "filter '%s' cannot convert a %s", fname, jv_type_name(v.t));
    }
    case F_ABS:
        if (v.t == JV_INT)
            return jv_int(v.i < 0 ? -v.i : v.i);
        if (v.t == JV_FLOAT)
            return jv_float(fabs(v.f));
        efail(c, line, "abs: needs a number, not %s", jv_type_name(v.t));
    case F_BOOL: return jv_bool(truthy(v));
    case F_ROUND: {
        if (!is_num(v))
            efail(c, line, "round: needs a number");
        const struct jv *p = arg(a, 0, "precision");
        const struct jstr *m = arg_str(c, a, 1, "method", line);
        double sc = pow(10, p && p->t == JV_INT ? (double)p->i : 0), x = num(v) * sc;
        if (m && sv_eq(m, "floor"))
            x = floor(x);
        else if (m && sv_eq(m, "ceil"))
            x = ceil(x);
        else
            x = round(x);
        return jv_float(x / sc);
    }
    }
    efail(c, line, "filter '%s' does not apply to a %s", fname, jv_type_name(v.t));
}

/* ---- expressions ---- */

static struct jv eval(struct jctx *c, struct jenv *e, const struct jnode *x)
{
    step(c, x->line);
    if (++c->depth > JINJA_MAX_EVAL_DEPTH)
        efail(c, x->line, "template recursion deeper than %d", JINJA_MAX_EVAL_DEPTH);
    struct jv r = jv_undef();
    switch (x->kind) {
    case JN_LIT: r = x->lit; break;
    case JN_NAME:
        if (!env_get(e, x->str, &r))
            r = jv_undef();
        break;
    case JN_LIST:
    case JN_TUPLE: {
        struct jlist *l = jlist_new(c->a, x->n);
        for (size_t i = 0; i < x->n; i++)
            jlist_push(c->a, l, eval(c, e, x->list[i]));
        r = mk_list(l);
        break;
    }
    case JN_DICT: {
        struct jdict *d = jdict_new(c->a);
        for (size_t i = 0; i < x->n; i++) {
            struct jv k = eval(c, e, x->list[i]);
            if (k.t != JV_STR)
                efail(c, x->line, "dict keys must be strings, not %s", jv_type_name(k.t));
            jdict_set(c->a, d, k.s, eval(c, e, x->list2[i]));
        }
        r = mk_dict(d);
        break;
    }
    case JN_BINOP: {
        struct jv l = eval(c, e, x->a);
        if (x->op == JOP_AND)
            r = truthy(l) ? eval(c, e, x->b) : l;
        else if (x->op == JOP_OR)
            r = truthy(l) ? l : eval(c, e, x->b);
        else
            r = binop(c, x->op, l, eval(c, e, x->b), x->line);
        break;
    }
    case JN_UNARY: {
        struct jv v = eval(c, e, x->a);
        if (x->op == JOP_NOT) {
            r = jv_bool(!truthy(v));
        } else if (v.t == JV_INT || v.t == JV_BOOL) {
            int64_t i = v.t == JV_BOOL ? v.b : v.i;
            r = jv_int(x->op == JOP_NEG ? -i : i);
        } else if (v.t == JV_FLOAT) {
            r = jv_float(x->op == JOP_NEG ? -v.f : v.f);
        } else {
            efail(c, x->line, "unary '%s' needs a number, not %s", x->op == JOP_NEG ? "-" : "+",
                  jv_type_name(v.t));
        }
        break;
    }
    case JN_COND:
        if (truthy(eval(c, e, x->b)))
            r = eval(c, e, x->a);
        else
            r = x->c ? eval(c, e, x->c) : jv_undef();
        break;
    case JN_ATTR: r = get_attr(c, eval(c, e, x->a), x->str, x->line, false); break;
    case JN_INDEX: {
        struct jv o = eval(c, e, x->a);
        r = get_item(c, o, eval(c, e, x->b), x->line);
        break;
    }
    case JN_SLICE: r = do_slice(c, e, x); break;
    case JN_CALL: {
        struct jv fn = eval(c, e, x->a);
        struct jargs a;
        eval_args(c, e, x->list, x->n, &a, x->line);
        r = call_value(c, fn, &a, jv_undef(), x->line, callee_desc(x->a));
        break;
    }
    case JN_FILTER: r = apply_filter(c, e, x, eval(c, e, x->a), x->fid, NULL); break;
    case JN_TEST: {
        struct jv v = eval(c, e, x->a);
        struct jargs a;
        eval_args(c, e, x->list, x->n, &a, x->line);
        bool t = run_test(c, x->fid, v, &a, x->line);
        r = jv_bool(x->op ? !t : t);
        break;
    }
    default: efail(c, x->line, "unexpected node in expression");
    }
    c->depth--;
    return r;
}

/* ---- statements ---- */

static void assign(struct jctx *c, struct jenv *e, const struct jnode *target, struct jv v, int line)
{
    if (target->kind == JN_NAME) {
        env_set(c, e, target->str, v);
    } else if (target->kind == JN_TUPLE) {
        if (v.t != JV_LIST)
            efail(c, line, "cannot unpack a %s", jv_type_name(v.t));
        if (v.l->n != target->n)
            efail(c, line, "too %s values to unpack (expected %zu, got %zu)",
                  v.l->n < target->n ? "few" : "many", target->n, v.l->n);
        for (size_t i = 0; i < target->n; i++)
            env_set(c, e, target->list[i]->str, v.l->v[i]);
    } else if (target->kind == JN_ATTR) {
        struct jv o = eval(c, e, target->a);
        if (o.t != JV_NS)
            efail(c, line, "cannot set attribute '%s' of a %s (only of a namespace)",
                  target->str->s, jv_type_name(o.t));
        jdict_set(c->a, o.d, target->str, v);
    } else {
        efail(c, line, "cannot assign to this expression");
    }
}

static void exec_for(struct jctx *c, struct jenv *e, const struct jnode *x)
{
    struct jenv *scope = env_new(c, e);
    struct jv it = eval(c, scope, x->b);
    if (it.t == JV_DICT) {
        struct jlist *keys = jlist_new(c->a, it.d->n);
        for (size_t i = 0; i < it.d->n; i++)
            jlist_push(c->a, keys, jv_str(it.d->k[i]));
        it = mk_list(keys);
    } else if (it.t != JV_LIST) {
        if (it.t == JV_STR || it.t == JV_UNDEF)
            it = to_list(c, it, "for", x->line);
        else
            efail(c, x->line, "cannot iterate over a %s", jv_type_name(it.t));
    }
    struct jlist *items = it.l;
    if (x->c) { /* for ... if cond: filter first, as loop.length counts only kept items */
        struct jlist *kept = jlist_new(c->a, 0);
        for (size_t i = 0; i < it.l->n; i++) {
            struct jenv *ls = env_new(c, scope);
            assign(c, ls, x->a, it.l->v[i], x->line);
            if (truthy(eval(c, ls, x->c)))
                jlist_push(c->a, kept, it.l->v[i]);
        }
        items = kept;
    }
    if (items->n == 0) {
        exec_body(c, scope, x->list2, x->n2);
        return;
    }
    static const char *const keys[] = {"index", "index0", "revindex", "revindex0", "first",
                                       "last", "length", "previtem", "nextitem"};
    struct jdict *loop = jdict_new(c->a);
    const struct jstr *k[9];
    for (int i = 0; i < 9; i++) {
        k[i] = jstr_new(c->a, keys[i], strlen(keys[i]));
        jdict_set(c->a, loop, k[i], jv_none());
    }
    env_setc(c, scope, "loop", mk_dict(loop));
    size_t n = items->n;
    for (size_t i = 0; i < n; i++) {
        step(c, x->line);
        loop->v[0] = jv_int((int64_t)i + 1);
        loop->v[1] = jv_int((int64_t)i);
        loop->v[2] = jv_int((int64_t)(n - i));
        loop->v[3] = jv_int((int64_t)(n - i - 1));
        loop->v[4] = jv_bool(i == 0);
        loop->v[5] = jv_bool(i == n - 1);
        loop->v[6] = jv_int((int64_t)n);
        loop->v[7] = i > 0 ? items->v[i - 1] : jv_undef();
        loop->v[8] = i + 1 < n ? items->v[i + 1] : jv_undef();
        assign(c, scope, x->a, items->v[i], x->line);
        exec_body(c, scope, x->list, x->n);
        int ctl = c->loop_ctl;
        c->loop_ctl = 0;
        if (ctl == 1)
            break;
    }
}

static void exec_stmt(struct jctx *c, struct jenv *e, const struct jnode *x)
{
    step(c, x->line);
    switch (x->kind) {
    case JN_TEXT: bput(c, c->out, x->str->s, x->str->len, x->line); break;
    case JN_OUTPUT: {
        struct jv v = eval(c, e, x->a);
        if (v.t != JV_UNDEF && v.t != JV_NONE)
            str_into(c, c->out, v, x->line);
        break;
    }
    case JN_IF:
        if (truthy(eval(c, e, x->a)))
            exec_body(c, e, x->list, x->n);
        else
            exec_body(c, e, x->list2, x->n2);
        break;
    case JN_FOR: exec_for(c, e, x); break;
    case JN_SET: {
        struct jv v;
        if (x->b) {
            v = eval(c, e, x->b);
        } else {
            struct jbuf *saved = c->out, *b = buf_new(c);
            c->out = b;
            exec_body(c, e, x->list, x->n);
            c->out = saved;
            v = buf_take(c, b);
        }
        assign(c, e, x->a, v, x->line);
        break;
    }
    case JN_MACRO: {
        struct jfunc *f = jarena_alloc(c->a, sizeof *f);
        f->kind = JF_MACRO;
        f->name = x->str->s;
        f->node = x;
        f->env = e;
        struct jv v = {.t = JV_FUNC, .fn = f};
        env_set(c, e, x->str, v);
        break;
    }
    case JN_CALLBLOCK: {
        struct jfunc *f = jarena_alloc(c->a, sizeof *f);
        f->kind = JF_CALLER;
        f->name = "caller";
        f->node = x;
        f->env = e;
        struct jv caller = {.t = JV_FUNC, .fn = f};
        const struct jnode *call = x->a;
        struct jv fn = eval(c, e, call->a);
        struct jargs a;
        eval_args(c, e, call->list, call->n, &a, x->line);
        struct jv r = call_value(c, fn, &a, caller, x->line, callee_desc(call->a));
        if (r.t != JV_UNDEF && r.t != JV_NONE)
            str_into(c, c->out, r, x->line);
        break;
    }
    case JN_FILTERBLOCK: {
        struct jbuf *saved = c->out, *b = buf_new(c);
        c->out = b;
        exec_body(c, e, x->list, x->n);
        c->out = saved;
        struct jv r = apply_filter(c, e, x->a, buf_take(c, b), x->a->fid, NULL);
        if (r.t != JV_UNDEF && r.t != JV_NONE)
            str_into(c, c->out, r, x->line);
        break;
    }
    case JN_BREAK: c->loop_ctl = 1; break;
    case JN_CONTINUE: c->loop_ctl = 2; break;
    default: efail(c, x->line, "unexpected node in statement position");
    }
}

static void exec_body(struct jctx *c, struct jenv *e, struct jnode *const *body, size_t n)
{
    if (++c->depth > JINJA_MAX_EVAL_DEPTH)
        efail(c, n ? body[0]->line : 0, "template recursion deeper than %d", JINJA_MAX_EVAL_DEPTH);
    for (size_t i = 0; i < n && !c->loop_ctl; i++)
        exec_stmt(c, e, body[i]);
    c->depth--;
}

/* ---- entry ---- */

static struct jv builtin(struct jctx *c, const char *name, jbuiltin_fn fn)
{
    struct jfunc *f = jarena_alloc(c->a, sizeof *f);
    f->kind = JF_BUILTIN;
    f->name = name;
    f->fn = fn;
    struct jv v = {.t = JV_FUNC, .fn = f};
    return v;
}

int jinja_render(const struct jprogram *prog, const char *name, struct jarena *a,
                 jmp_buf *fail, const struct jinja_var *vars, size_t nvars, char **out,
                 size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    jmp_buf jb;
    jmp_buf *saved_fail = a->fail;
    (void)fail;
    struct jctx *c = jarena_alloc(a, sizeof *c);
    c->a = a;
    c->name = name;
    c->err = err;
    c->errlen = errlen;
    a->fail = &jb;
    if (setjmp(jb)) {
        for (size_t i = 0; i < c->nbufs; i++)
            jbuf_free(c->bufs[i]);
        a->fail = saved_fail;
        return ERR_TEMPLATE;
    }
    c->global = env_new(c, NULL);
    env_setc(c, c->global, "raise_exception", builtin(c, "raise_exception", fn_raise));
    env_setc(c, c->global, "range", builtin(c, "range", fn_range));
    env_setc(c, c->global, "namespace", builtin(c, "namespace", fn_namespace));
    env_setc(c, c->global, "dict", builtin(c, "dict", fn_dict));
    env_setc(c, c->global, "strftime_now", builtin(c, "strftime_now", fn_strftime_now));
    for (size_t i = 0; i < nvars; i++)
        env_setc(c, c->global, vars[i].name, vars[i].v);
    c->out = buf_new(c);
    exec_body(c, c->global, prog->body, prog->n);
    struct jbuf *o = c->out;
    char *s = malloc(o->n + 1);
    if (!s) {
        for (size_t i = 0; i < c->nbufs; i++)
            jbuf_free(c->bufs[i]);
        a->fail = saved_fail;
        snprintf(err, errlen, "out of memory");
        return ERR_TEMPLATE;
    }
    if (o->n)
        memcpy(s, o->p, o->n);
    s[o->n] = 0;
    *out = s;
    *out_len = o->n;
    for (size_t i = 0; i < c->nbufs; i++)
        jbuf_free(c->bufs[i]);
    a->fail = saved_fail;
    return 0;
}
