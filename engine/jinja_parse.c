/* SPDX-License-Identifier: MIT */
/*
 * jinja_parse.c - the Jinja parser: tokens to an AST (struct jnode), with
 * the operator precedence of @huggingface/jinja (lowest first): ternary
 * `a if c else b`, or, and, not, comparisons and `in`, + - ~, * / // %,
 * **, tests (`is`), filters (`|`), unary sign, member access and calls.
 *
 * Statements: set (plain, tuple, namespace attribute, block), if/elif/else,
 * for (tuple targets, `if` filter, else, break/continue), macro, call,
 * filter blocks. Anything else is rejected with the line and the name of
 * the construct, as are unknown filters and tests, so a template using one
 * never renders silently wrong.
 *
 * Invariant: every node and string lives in the template's arena; parse
 * depth is capped (JINJA_MAX_PARSE_DEPTH) so nesting cannot overflow the
 * stack.
 */
#include "engine/jinja_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
    struct jarena *a;
    const char *name;
    const struct jtok *t;
    size_t n, pos;
    int depth;
};

static const char *tok_desc(const struct jtok *k, char *buf, size_t len)
{
    switch (k->t) {
    case JT_EOF: return "end of template";
    case JT_TEXT: return "text";
    case JT_STR: return "string literal";
    case JT_COMMENT: return "comment";
    default: snprintf(buf, len, "'%.*s'", (int)(k->n > 40 ? 40 : k->n), k->s); return buf;
    }
}

static void pfail(struct parser *P, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
static void pfail(struct parser *P, int line, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(P->a->err, P->a->errlen, "%s:%d: %s", P->name, line, msg);
    longjmp(*P->a->fail, 1);
}

static const struct jtok *cur(struct parser *P) { return &P->t[P->pos]; }
static const struct jtok *peek(struct parser *P, size_t k)
{
    return P->pos + k < P->n ? &P->t[P->pos + k] : &P->t[P->n - 1];
}
static bool is(struct parser *P, enum jtok_type t) { return cur(P)->t == t; }
static bool tok_eq(const struct jtok *k, const char *s)
{
    return strlen(s) == k->n && memcmp(k->s, s, k->n) == 0;
}
static bool is_name(struct parser *P, const char *s) { return is(P, JT_NAME) && tok_eq(cur(P), s); }

static const struct jtok *expect(struct parser *P, enum jtok_type t, const char *what)
{
    const struct jtok *k = cur(P);
    if (k->t != t) {
        char b[64];
        pfail(P, k->line, "expected %s, got %s", what, tok_desc(k, b, sizeof b));
    }
    if (k->t != JT_EOF)
        P->pos++;
    return k;
}

static struct jnode *node(struct parser *P, enum jnode_kind kind, int line)
{
    struct jnode *x = jarena_alloc(P->a, sizeof *x);
    x->kind = kind;
    x->line = line;
    return x;
}

/* A growable node array in the arena. */
struct nvec {
    struct jnode **v;
    size_t n, cap;
};
static void nvec_push(struct parser *P, struct nvec *v, struct jnode *x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        struct jnode **nv = jarena_alloc(P->a, cap * sizeof *nv);
        if (v->n)
            memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

static void enter(struct parser *P)
{
    if (++P->depth > JINJA_MAX_PARSE_DEPTH)
        pfail(P, cur(P)->line, "template nested deeper than %d levels", JINJA_MAX_PARSE_DEPTH);
}

static struct jnode *parse_expr(struct parser *P);
static struct jnode *parse_primary(struct parser *P);
static struct jnode *parse_any(struct parser *P);

/* ---- expressions ---- */

static struct jnode *parse_seq(struct parser *P, bool primary)
{
    int line = cur(P)->line;
    struct jnode *first = primary ? parse_primary(P) : parse_expr(P);
    if (!is(P, JT_COMMA))
        return first;
    struct nvec v = {0};
    nvec_push(P, &v, first);
    while (is(P, JT_COMMA)) {
        P->pos++;
        if (is(P, JT_RPAREN) || is(P, JT_CLOSE_STMT) || is(P, JT_EQUALS) || is_name(P, "in"))
            break; /* trailing comma */
        nvec_push(P, &v, primary ? parse_primary(P) : parse_expr(P));
    }
    struct jnode *t = node(P, JN_TUPLE, line);
    t->list = v.v;
    t->n = v.n;
    return t;
}

/* Arguments in parentheses; params: a macro's parameter list. */
static void parse_args(struct parser *P, bool params, struct jnode ***out, size_t *nout)
{
    expect(P, JT_LPAREN, "'('");
    struct nvec v = {0};
    bool saw_kw = false;
    while (!is(P, JT_RPAREN)) {
        int line = cur(P)->line;
        if (is(P, JT_EOF))
            pfail(P, line, "unclosed '(' in argument list");
        struct jnode *arg;
        if (is(P, JT_POW) && !params) {
            P->pos++;
            arg = node(P, JN_KWSPREAD, line);
            arg->a = parse_expr(P);
        } else if (is(P, JT_MUL) && tok_eq(cur(P), "*") && !params) {
            P->pos++;
            arg = node(P, JN_SPREAD, line);
            arg->a = parse_expr(P);
        } else {
            arg = parse_expr(P);
            if (is(P, JT_EQUALS)) {
                P->pos++;
                if (arg->kind != JN_NAME)
                    pfail(P, line, "expected a name before '=' in %s",
                          params ? "parameter list" : "keyword argument");
                struct jnode *kw = node(P, JN_KWARG, line);
                kw->str = arg->str;
                kw->a = parse_expr(P);
                arg = kw;
                saw_kw = true;
            } else if (params && arg->kind != JN_NAME) {
                pfail(P, line, "expected a parameter name");
            } else if (saw_kw && !params) {
                pfail(P, line, "positional argument after keyword argument");
            }
        }
        nvec_push(P, &v, arg);
        if (is(P, JT_COMMA))
            P->pos++;
        else if (!is(P, JT_RPAREN)) {
            char b[64];
            pfail(P, cur(P)->line, "expected ',' or ')' in argument list, got %s",
                  tok_desc(cur(P), b, sizeof b));
        }
    }
    P->pos++;
    *out = v.v;
    *nout = v.n;
}

static struct jnode *parse_subscript(struct parser *P, struct jnode *obj, int line)
{
    /* after '[': index, or slice a:b:c with any part missing */
    struct jnode *part[3] = {0};
    int np = 0;
    bool slice = false;
    while (!is(P, JT_RBRACKET)) {
        if (is(P, JT_EOF))
            pfail(P, line, "unclosed '['");
        if (np >= 3)
            pfail(P, line, "a slice takes at most 3 parts");
        if (is(P, JT_COLON)) {
            part[np++] = NULL;
            P->pos++;
            slice = true;
        } else {
            part[np++] = parse_expr(P);
            if (is(P, JT_COLON)) {
                P->pos++;
                slice = true;
            } else if (!is(P, JT_RBRACKET)) {
                char b[64];
                pfail(P, cur(P)->line, "expected ']' or ':', got %s", tok_desc(cur(P), b, sizeof b));
            }
        }
    }
    P->pos++;
    if (np == 0)
        pfail(P, line, "empty subscript '[]'");
    struct jnode *x;
    if (slice) {
        x = node(P, JN_SLICE, line);
        x->b = part[0];
        x->c = np > 1 ? part[1] : NULL;
        x->d = np > 2 ? part[2] : NULL;
    } else {
        x = node(P, JN_INDEX, line);
        x->b = part[0];
    }
    x->a = obj;
    return x;
}

static struct jnode *parse_member(struct parser *P, struct jnode *obj)
{
    while (is(P, JT_DOT) || is(P, JT_LBRACKET)) {
        const struct jtok *op = cur(P);
        P->pos++;
        if (op->t == JT_LBRACKET) {
            obj = parse_subscript(P, obj, op->line);
            continue;
        }
        const struct jtok *k = cur(P);
        if (k->t == JT_NAME) {
            P->pos++;
            struct jnode *x = node(P, JN_ATTR, k->line);
            x->a = obj;
            x->str = jstr_new(P->a, k->s, k->n);
            obj = x;
        } else if (k->t == JT_NUM && !memchr(k->s, '.', k->n) && k->s[0] != '-' && k->s[0] != '+') {
            P->pos++;
            struct jnode *x = node(P, JN_INDEX, k->line);
            x->a = obj;
            x->b = node(P, JN_LIT, k->line);
            x->b->lit = jv_int(strtoll(k->s, NULL, 10));
            obj = x;
        } else {
            char b[64];
            pfail(P, k->line, "expected a name after '.', got %s", tok_desc(k, b, sizeof b));
        }
    }
    return obj;
}

static struct jnode *parse_call_member(struct parser *P)
{
    struct jnode *x = parse_member(P, parse_primary(P));
    while (is(P, JT_LPAREN)) {
        struct jnode *c = node(P, JN_CALL, cur(P)->line);
        c->a = x;
        parse_args(P, false, &c->list, &c->n);
        x = parse_member(P, c);
    }
    return x;
}

static struct jnode *parse_unary_sign(struct parser *P)
{
    const struct jtok *k = cur(P);
    if ((k->t == JT_UNARY || k->t == JT_ADD) && (tok_eq(k, "-") || tok_eq(k, "+"))) {
        P->pos++;
        enter(P);
        struct jnode *x = node(P, JN_UNARY, k->line);
        x->op = tok_eq(k, "-") ? JOP_NEG : JOP_POS;
        x->a = parse_unary_sign(P);
        P->depth--;
        return x;
    }
    return parse_call_member(P);
}

static struct jnode *parse_filter(struct parser *P)
{
    struct jnode *x = parse_unary_sign(P);
    while (is(P, JT_PIPE)) {
        P->pos++;
        const struct jtok *k = expect(P, JT_NAME, "a filter name after '|'");
        struct jnode *f = node(P, JN_FILTER, k->line);
        f->a = x;
        f->str = jstr_new(P->a, k->s, k->n);
        f->fid = jinja_filter_id(f->str->s);
        if (f->fid < 0)
            pfail(P, k->line, "unsupported filter '%s'", f->str->s);
        if (is(P, JT_LPAREN))
            parse_args(P, false, &f->list, &f->n);
        x = f;
    }
    return x;
}

static bool test_arg_follows(struct parser *P)
{
    const struct jtok *k = cur(P);
    if (k->t == JT_STR || k->t == JT_NUM || k->t == JT_LBRACKET || k->t == JT_LBRACE)
        return true;
    if (k->t != JT_NAME)
        return false;
    static const char *stop[] = {"and", "or", "else", "if", "in", "not", "is", "for", "recursive"};
    for (size_t i = 0; i < sizeof stop / sizeof stop[0]; i++)
        if (tok_eq(k, stop[i]))
            return false;
    return true;
}

static struct jnode *parse_test(struct parser *P)
{
    struct jnode *x = parse_filter(P);
    while (is_name(P, "is")) {
        int line = cur(P)->line;
        P->pos++;
        bool neg = false;
        if (is_name(P, "not")) {
            neg = true;
            P->pos++;
        }
        const struct jtok *k = cur(P);
        if (k->t != JT_NAME && !(k->t == JT_CMP && (tok_eq(k, "==") || tok_eq(k, "!="))))
            expect(P, JT_NAME, "a test name after 'is'");
        P->pos++;
        struct jnode *t = node(P, JN_TEST, line);
        t->a = x;
        t->op = neg ? 1 : 0;
        t->str = jstr_new(P->a, k->s, k->n);
        t->fid = jinja_test_id(t->str->s);
        if (t->fid < 0)
            pfail(P, k->line, "unsupported test '%s'", t->str->s);
        if (is(P, JT_LPAREN)) {
            parse_args(P, false, &t->list, &t->n);
        } else if (test_arg_follows(P)) {
            t->list = jarena_alloc(P->a, sizeof *t->list);
            t->list[0] = parse_primary(P);
            t->n = 1;
        }
        x = t;
    }
    return x;
}

static struct jnode *binop(struct parser *P, enum jop op, int line, struct jnode *a, struct jnode *b)
{
    struct jnode *x = node(P, JN_BINOP, line);
    x->op = op;
    x->a = a;
    x->b = b;
    return x;
}

static struct jnode *parse_pow(struct parser *P)
{
    struct jnode *x = parse_test(P);
    while (is(P, JT_POW)) {
        int line = cur(P)->line;
        P->pos++;
        x = binop(P, JOP_POW, line, x, parse_test(P));
    }
    return x;
}

static struct jnode *parse_mul(struct parser *P)
{
    struct jnode *x = parse_pow(P);
    while (is(P, JT_MUL)) {
        const struct jtok *k = cur(P);
        P->pos++;
        enum jop op = tok_eq(k, "*") ? JOP_MUL : tok_eq(k, "/") ? JOP_DIV
                    : tok_eq(k, "//") ? JOP_FLOORDIV : JOP_MOD;
        x = binop(P, op, k->line, x, parse_pow(P));
    }
    return x;
}

static struct jnode *parse_add(struct parser *P)
{
    struct jnode *x = parse_mul(P);
    while (is(P, JT_ADD)) {
        const struct jtok *k = cur(P);
        P->pos++;
        enum jop op = tok_eq(k, "+") ? JOP_ADD : tok_eq(k, "-") ? JOP_SUB : JOP_CONCAT;
        x = binop(P, op, k->line, x, parse_mul(P));
    }
    return x;
}

static struct jnode *parse_compare(struct parser *P)
{
    struct jnode *x = parse_add(P);
    for (;;) {
        const struct jtok *k = cur(P);
        enum jop op;
        if (is_name(P, "not") && peek(P, 1)->t == JT_NAME && tok_eq(peek(P, 1), "in")) {
            op = JOP_NOTIN;
            P->pos += 2;
        } else if (is_name(P, "in")) {
            op = JOP_IN;
            P->pos++;
        } else if (k->t == JT_CMP) {
            op = tok_eq(k, "==") ? JOP_EQ : tok_eq(k, "!=") ? JOP_NE : tok_eq(k, "<") ? JOP_LT
               : tok_eq(k, ">") ? JOP_GT : tok_eq(k, "<=") ? JOP_LE : JOP_GE;
            P->pos++;
        } else {
            break;
        }
        x = binop(P, op, k->line, x, parse_add(P));
    }
    return x;
}

static struct jnode *parse_not(struct parser *P)
{
    if (is_name(P, "not")) {
        int line = cur(P)->line;
        P->pos++;
        enter(P);
        struct jnode *x = node(P, JN_UNARY, line);
        x->op = JOP_NOT;
        x->a = parse_not(P);
        P->depth--;
        return x;
    }
    return parse_compare(P);
}

static struct jnode *parse_and(struct parser *P)
{
    struct jnode *x = parse_not(P);
    while (is_name(P, "and")) {
        int line = cur(P)->line;
        P->pos++;
        x = binop(P, JOP_AND, line, x, parse_not(P));
    }
    return x;
}

static struct jnode *parse_or(struct parser *P)
{
    struct jnode *x = parse_and(P);
    while (is_name(P, "or")) {
        int line = cur(P)->line;
        P->pos++;
        x = binop(P, JOP_OR, line, x, parse_and(P));
    }
    return x;
}

static struct jnode *parse_expr(struct parser *P)
{
    enter(P);
    struct jnode *x = parse_or(P);
    if (is_name(P, "if")) {
        int line = cur(P)->line;
        P->pos++;
        struct jnode *c = node(P, JN_COND, line);
        c->a = x;
        c->b = parse_or(P);
        if (is_name(P, "else")) {
            P->pos++;
            c->c = parse_expr(P);
        }
        x = c;
    }
    P->depth--;
    return x;
}

static struct jnode *parse_primary(struct parser *P)
{
    const struct jtok *k = cur(P);
    char b[64];
    enter(P);
    struct jnode *x = NULL;
    switch (k->t) {
    case JT_NUM: {
        P->pos++;
        x = node(P, JN_LIT, k->line);
        char tmp[128];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(k->n < 127 ? k->n : 127), k->s);
        if (memchr(k->s, '.', k->n)) {
            x->lit = jv_float(strtod(tmp, NULL));
        } else {
            errno = 0;
            long long v = strtoll(tmp, NULL, 10);
            x->lit = errno ? jv_float(strtod(tmp, NULL)) : jv_int(v);
        }
        break;
    }
    case JT_STR: {
        size_t total = 0, i = P->pos;
        while (i < P->n && P->t[i].t == JT_STR)
            total += P->t[i++].n;
        char *s = jarena_alloc(P->a, total + 1);
        size_t o = 0;
        while (is(P, JT_STR)) {
            memcpy(s + o, cur(P)->s, cur(P)->n);
            o += cur(P)->n;
            P->pos++;
        }
        x = node(P, JN_LIT, k->line);
        x->lit = jv_str(jstr_new(P->a, s, o));
        break;
    }
    case JT_NAME: {
        P->pos++;
        x = node(P, JN_NAME, k->line);
        x->str = jstr_new(P->a, k->s, k->n);
        static const struct { const char *s; int v; } lits[] = {
            {"true", 1}, {"True", 1}, {"false", 0}, {"False", 0}, {"none", -1}, {"None", -1}};
        for (size_t i = 0; i < sizeof lits / sizeof lits[0]; i++)
            if (tok_eq(k, lits[i].s)) {
                x->kind = JN_LIT;
                x->lit = lits[i].v < 0 ? jv_none() : jv_bool(lits[i].v);
            }
        break;
    }
    case JT_LPAREN:
        P->pos++;
        if (is(P, JT_RPAREN)) {
            x = node(P, JN_TUPLE, k->line);
        } else {
            x = parse_seq(P, false);
        }
        expect(P, JT_RPAREN, "')'");
        break;
    case JT_LBRACKET: {
        P->pos++;
        struct nvec v = {0};
        while (!is(P, JT_RBRACKET)) {
            if (is(P, JT_EOF))
                pfail(P, k->line, "unclosed '['");
            nvec_push(P, &v, parse_expr(P));
            if (is(P, JT_COMMA))
                P->pos++;
            else if (!is(P, JT_RBRACKET))
                pfail(P, cur(P)->line, "expected ',' or ']', got %s", tok_desc(cur(P), b, sizeof b));
        }
        P->pos++;
        x = node(P, JN_LIST, k->line);
        x->list = v.v;
        x->n = v.n;
        break;
    }
    case JT_LBRACE: {
        P->pos++;
        struct nvec keys = {0}, vals = {0};
        while (!is(P, JT_RBRACE)) {
            if (is(P, JT_EOF))
                pfail(P, k->line, "unclosed '{'");
            nvec_push(P, &keys, parse_expr(P));
            expect(P, JT_COLON, "':' in dict literal");
            nvec_push(P, &vals, parse_expr(P));
            if (is(P, JT_COMMA))
                P->pos++;
            else if (!is(P, JT_RBRACE))
                pfail(P, cur(P)->line, "expected ',' or '}', got %s", tok_desc(cur(P), b, sizeof b));
        }
        P->pos++;
        x = node(P, JN_DICT, k->line);
        x->list = keys.v;
        x->n = keys.n;
        x->list2 = vals.v;
        x->n2 = vals.n;
        break;
    }
    default:
        pfail(P, k->line, "unexpected %s in expression", tok_desc(k, b, sizeof b));
    }
    P->depth--;
    return x;
}

/* ---- statements ---- */

static bool is_stmt(struct parser *P, const char *const *names, size_t n)
{
    if (!is(P, JT_OPEN_STMT) || peek(P, 1)->t != JT_NAME)
        return false;
    for (size_t i = 0; i < n; i++)
        if (tok_eq(peek(P, 1), names[i]))
            return true;
    return false;
}

/* Parses statements until one of the end names; does not consume it. */
static void parse_body(struct parser *P, const char *block, int line, const char *const *ends,
                       size_t nends, struct jnode ***out, size_t *nout)
{
    struct nvec v = {0};
    while (!is_stmt(P, ends, nends)) {
        if (is(P, JT_EOF))
            pfail(P, line, "unclosed '%s' block (no {%% %s %%} before the end of the template)",
                  block, ends[nends - 1]);
        struct jnode *x = parse_any(P);
        if (x)
            nvec_push(P, &v, x);
    }
    *out = v.v;
    *nout = v.n;
}

static void end_tag(struct parser *P, const char *name)
{
    expect(P, JT_OPEN_STMT, "'{%'");
    const struct jtok *k = expect(P, JT_NAME, name);
    if (!tok_eq(k, name))
        pfail(P, k->line, "expected '%s'", name);
    expect(P, JT_CLOSE_STMT, "'%}'");
}

static struct jnode *parse_if(struct parser *P, int line)
{
    static const char *const ends[] = {"elif", "else", "endif"};
    struct jnode *x = node(P, JN_IF, line);
    x->a = parse_expr(P);
    expect(P, JT_CLOSE_STMT, "'%}' after the if condition");
    parse_body(P, "if", line, ends, 3, &x->list, &x->n);
    if (is_stmt(P, ends, 1)) {
        int l2 = peek(P, 1)->line;
        P->pos += 2;
        x->list2 = jarena_alloc(P->a, sizeof *x->list2);
        x->list2[0] = parse_if(P, l2); /* consumes nothing past its body */
        x->n2 = 1;
    } else if (is_stmt(P, ends + 1, 1)) {
        P->pos += 2;
        expect(P, JT_CLOSE_STMT, "'%}' after else");
        parse_body(P, "if", line, ends + 2, 1, &x->list2, &x->n2);
    }
    return x;
}

static struct jnode *parse_stmt(struct parser *P)
{
    const struct jtok *open = expect(P, JT_OPEN_STMT, "'{%'");
    const struct jtok *k = cur(P);
    char b[64];
    if (k->t != JT_NAME)
        pfail(P, k->line, "expected a statement name, got %s", tok_desc(k, b, sizeof b));
    int line = open->line;
    P->pos++;
    enter(P);
    struct jnode *x = NULL;
    if (tok_eq(k, "set")) {
        static const char *const ends[] = {"endset"};
        x = node(P, JN_SET, line);
        x->a = parse_seq(P, false);
        if (x->a->kind != JN_NAME && x->a->kind != JN_TUPLE && x->a->kind != JN_ATTR)
            pfail(P, line, "cannot assign to this expression");
        if (x->a->kind == JN_TUPLE)
            for (size_t i = 0; i < x->a->n; i++)
                if (x->a->list[i]->kind != JN_NAME)
                    pfail(P, line, "cannot unpack into a non-name");
        if (is(P, JT_EQUALS)) {
            P->pos++;
            x->b = parse_seq(P, false);
            expect(P, JT_CLOSE_STMT, "'%}' after set");
        } else {
            if (x->a->kind == JN_TUPLE)
                pfail(P, line, "a block set needs one name");
            expect(P, JT_CLOSE_STMT, "'=' or '%}' after the set target");
            parse_body(P, "set", line, ends, 1, &x->list, &x->n);
            end_tag(P, "endset");
        }
    } else if (tok_eq(k, "if")) {
        x = parse_if(P, line);
        end_tag(P, "endif");
    } else if (tok_eq(k, "for")) {
        static const char *const ends[] = {"else", "endfor"};
        x = node(P, JN_FOR, line);
        x->a = parse_seq(P, true);
        if (x->a->kind != JN_NAME && x->a->kind != JN_TUPLE)
            pfail(P, line, "expected loop variable names after 'for'");
        if (x->a->kind == JN_TUPLE)
            for (size_t i = 0; i < x->a->n; i++)
                if (x->a->list[i]->kind != JN_NAME)
                    pfail(P, line, "expected loop variable names after 'for'");
        if (!is_name(P, "in"))
            pfail(P, cur(P)->line, "expected 'in' after the loop variable");
        P->pos++;
        struct jnode *it = parse_expr(P);
        if (it->kind == JN_COND && !it->c) { /* for x in y if cond */
            x->b = it->a;
            x->c = it->b;
        } else {
            x->b = it;
        }
        if (is_name(P, "recursive"))
            pfail(P, cur(P)->line, "unsupported construct 'recursive' loop");
        expect(P, JT_CLOSE_STMT, "'%}' after the for header");
        parse_body(P, "for", line, ends, 2, &x->list, &x->n);
        if (is_stmt(P, ends, 1)) {
            P->pos += 2;
            expect(P, JT_CLOSE_STMT, "'%}' after else");
            parse_body(P, "for", line, ends + 1, 1, &x->list2, &x->n2);
        }
        end_tag(P, "endfor");
    } else if (tok_eq(k, "macro")) {
        static const char *const ends[] = {"endmacro"};
        const struct jtok *nm = expect(P, JT_NAME, "a macro name");
        x = node(P, JN_MACRO, line);
        x->str = jstr_new(P->a, nm->s, nm->n);
        parse_args(P, true, &x->list2, &x->n2);
        expect(P, JT_CLOSE_STMT, "'%}' after the macro header");
        parse_body(P, "macro", line, ends, 1, &x->list, &x->n);
        end_tag(P, "endmacro");
    } else if (tok_eq(k, "call")) {
        static const char *const ends[] = {"endcall"};
        x = node(P, JN_CALLBLOCK, line);
        if (is(P, JT_LPAREN))
            parse_args(P, true, &x->list2, &x->n2);
        const struct jtok *nm = expect(P, JT_NAME, "a macro name after call");
        struct jnode *callee = node(P, JN_NAME, nm->line);
        callee->str = jstr_new(P->a, nm->s, nm->n);
        struct jnode *c = node(P, JN_CALL, nm->line);
        c->a = callee;
        parse_args(P, false, &c->list, &c->n);
        x->a = c;
        expect(P, JT_CLOSE_STMT, "'%}' after the call header");
        parse_body(P, "call", line, ends, 1, &x->list, &x->n);
        end_tag(P, "endcall");
    } else if (tok_eq(k, "filter")) {
        static const char *const ends[] = {"endfilter"};
        const struct jtok *nm = expect(P, JT_NAME, "a filter name");
        x = node(P, JN_FILTERBLOCK, line);
        struct jnode *f = node(P, JN_FILTER, nm->line);
        f->str = jstr_new(P->a, nm->s, nm->n);
        f->fid = jinja_filter_id(f->str->s);
        if (f->fid < 0)
            pfail(P, nm->line, "unsupported filter '%s'", f->str->s);
        if (is(P, JT_LPAREN))
            parse_args(P, false, &f->list, &f->n);
        x->a = f;
        expect(P, JT_CLOSE_STMT, "'%}' after the filter header");
        parse_body(P, "filter", line, ends, 1, &x->list, &x->n);
        end_tag(P, "endfilter");
    } else if (tok_eq(k, "break") || tok_eq(k, "continue")) {
        x = node(P, tok_eq(k, "break") ? JN_BREAK : JN_CONTINUE, line);
        expect(P, JT_CLOSE_STMT, "'%}'");
    } else {
        static const char *const stray[] = {"elif", "else", "endif", "endfor", "endmacro",
                                            "endset", "endcall", "endfilter"};
        for (size_t i = 0; i < sizeof stray / sizeof stray[0]; i++)
            if (tok_eq(k, stray[i]))
                pfail(P, line, "unexpected '%s' outside its block", stray[i]);
        pfail(P, line, "unsupported statement '%.*s'", (int)(k->n > 40 ? 40 : k->n), k->s);
    }
    P->depth--;
    return x;
}

static struct jnode *parse_any(struct parser *P)
{
    const struct jtok *k = cur(P);
    char b[64];
    switch (k->t) {
    case JT_COMMENT: P->pos++; return NULL;
    case JT_TEXT: {
        P->pos++;
        struct jnode *x = node(P, JN_TEXT, k->line);
        x->str = jstr_new(P->a, k->s, k->n);
        return x;
    }
    case JT_OPEN_STMT: return parse_stmt(P);
    case JT_OPEN_EXPR: {
        P->pos++;
        struct jnode *x = node(P, JN_OUTPUT, k->line);
        x->a = parse_expr(P);
        expect(P, JT_CLOSE_EXPR, "'}}'");
        return x;
    }
    default: pfail(P, k->line, "unexpected %s", tok_desc(k, b, sizeof b));
    }
}

struct jprogram *jinja_parse(struct jarena *a, const char *name, const struct jtok *toks,
                             size_t ntok)
{
    struct parser P = {.a = a, .name = name, .t = toks, .n = ntok};
    struct nvec v = {0};
    while (!is(&P, JT_EOF)) {
        struct jnode *x = parse_any(&P);
        if (x)
            nvec_push(&P, &v, x);
    }
    struct jprogram *prog = jarena_alloc(a, sizeof *prog);
    prog->body = v.v;
    prog->n = v.n;
    return prog;
}
