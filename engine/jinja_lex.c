/* SPDX-License-Identifier: MIT */
/*
 * jinja_lex.c - the Jinja lexer: template text to tokens, with the
 * preprocessing Hugging Face applies before it (one trailing newline
 * dropped, lstrip_blocks, trim_blocks, the transformers-only
 * {% generation %} tags removed) and whitespace control ({%- -%} {{- -}}
 * {#- -#}).
 *
 * Invariant: the rules copy @huggingface/jinja's lexer (the reference our
 * tests compare against) rule for rule; "whitespace" is JavaScript's \s
 * (ASCII space, tab, line breaks, and the Unicode spaces), and every token
 * carries the line of the original source it started on.
 */
#include "engine/jinja_impl.h"

#include <stdio.h>
#include <string.h>

struct lexer {
    struct jarena *a;
    const char *name;
    char *s;     /* preprocessed source */
    int *line;   /* line of each byte of s in the original source */
    size_t n, pos;
    struct jtok *tok;
    size_t ntok, cap;
    int brace_depth;
};

static void lex_fail(struct lexer *L, int line, const char *fmt, const char *arg)
{
    char msg[256];
    snprintf(msg, sizeof msg, fmt, arg);
    snprintf(L->a->err, L->a->errlen, "%s:%d: %s", L->name, line, msg);
    longjmp(*L->a->fail, 1);
}

/* Bytes of the JavaScript \s character starting at s[i], or 0. */
static size_t ws_at(const char *s, size_t i, size_t n)
{
    unsigned char c = (unsigned char)s[i];
    if (c == ' ' || (c >= '\t' && c <= '\r'))
        return 1;
    if (c == 0xc2 && i + 1 < n && ((unsigned char)s[i + 1] == 0xa0))
        return 2;
    if (c == 0xe1 && i + 2 < n && (unsigned char)s[i + 1] == 0x9a && (unsigned char)s[i + 2] == 0x80)
        return 3;
    if (c == 0xe2 && i + 2 < n) {
        unsigned char c1 = (unsigned char)s[i + 1], c2 = (unsigned char)s[i + 2];
        if (c1 == 0x80 && ((c2 >= 0x80 && c2 <= 0x8a) || c2 == 0xa8 || c2 == 0xa9 || c2 == 0xaf))
            return 3;
        if (c1 == 0x81 && c2 == 0x9f)
            return 3;
    }
    if (c == 0xe3 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 && (unsigned char)s[i + 2] == 0x80)
        return 3;
    if (c == 0xef && i + 2 < n && (unsigned char)s[i + 1] == 0xbb && (unsigned char)s[i + 2] == 0xbf)
        return 3;
    return 0;
}

/* Bytes of the whitespace character ending just before s[end], or 0. */
static size_t ws_before(const char *s, size_t end)
{
    for (size_t k = 1; k <= 3 && k <= end; k++) {
        size_t w = ws_at(s, end - k, end);
        if (w == k)
            return k;
    }
    return 0;
}

/* ---- preprocessing (each pass rewrites s and line) ---- */

static bool line_start(const char *s, size_t i)
{
    if (i == 0)
        return true;
    unsigned char p = (unsigned char)s[i - 1];
    if (p == '\n' || p == '\r')
        return true;
    return i >= 3 && (unsigned char)s[i - 3] == 0xe2 && (unsigned char)s[i - 2] == 0x80 &&
           (p == 0xa8 || p == 0xa9);
}

static void pass_lstrip(struct lexer *L)
{
    size_t o = 0;
    for (size_t i = 0; i < L->n;) {
        if (line_start(L->s, i)) {
            size_t j = i;
            while (j < L->n && (L->s[j] == ' ' || L->s[j] == '\t'))
                j++;
            if (j > i && j + 1 < L->n && L->s[j] == '{' &&
                (L->s[j + 1] == '#' || L->s[j + 1] == '%' || L->s[j + 1] == '-'))
                i = j; /* drop the indentation */
        }
        L->s[o] = L->s[i];
        L->line[o] = L->line[i];
        o++;
        i++;
    }
    L->n = o;
}

static void pass_trim(struct lexer *L)
{
    size_t o = 0;
    for (size_t i = 0; i < L->n;) {
        if (i + 2 < L->n && (L->s[i] == '#' || L->s[i] == '%' || L->s[i] == '-') &&
            L->s[i + 1] == '}' && L->s[i + 2] == '\n') {
            L->s[o] = L->s[i];
            L->line[o++] = L->line[i];
            L->s[o] = L->s[i + 1];
            L->line[o++] = L->line[i + 1];
            i += 3;
            continue;
        }
        L->s[o] = L->s[i];
        L->line[o++] = L->line[i];
        i++;
    }
    L->n = o;
}

/* Matches "{%-? \s* (end)?generation \s* -?%}" at i; returns its end. */
static size_t match_generation(const struct lexer *L, size_t i, bool *lstrip, bool *rstrip)
{
    const char *s = L->s;
    size_t n = L->n, j = i + 2, w;
    if (i + 2 > n || s[i] != '{' || s[i + 1] != '%')
        return 0;
    *lstrip = j < n && s[j] == '-';
    if (*lstrip)
        j++;
    while (j < n && (w = ws_at(s, j, n)))
        j += w;
    if (j + 3 <= n && memcmp(s + j, "end", 3) == 0 && j + 13 <= n &&
        memcmp(s + j + 3, "generation", 10) == 0)
        j += 3;
    if (j + 10 > n || memcmp(s + j, "generation", 10) != 0)
        return 0;
    j += 10;
    while (j < n && (w = ws_at(s, j, n)))
        j += w;
    *rstrip = j < n && s[j] == '-';
    if (*rstrip)
        j++;
    if (j + 2 > n || s[j] != '%' || s[j + 1] != '}')
        return 0;
    return j + 2;
}

static void pass_generation(struct lexer *L)
{
    size_t o = 0;
    for (size_t i = 0; i < L->n;) {
        bool ls, rs;
        size_t e = L->s[i] == '{' ? match_generation(L, i, &ls, &rs) : 0;
        if (e) {
            size_t w;
            if (ls)
                while (o > 0 && (w = ws_before(L->s, o)))
                    o -= w;
            i = e;
            if (rs)
                while (i < L->n && (w = ws_at(L->s, i, L->n)))
                    i += w;
            continue;
        }
        L->s[o] = L->s[i];
        L->line[o++] = L->line[i];
        i++;
    }
    L->n = o;
}

/* ---- tokens ---- */

static struct jtok *push(struct lexer *L, enum jtok_type t, const char *s, size_t n, int line)
{
    if (L->ntok == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        struct jtok *nt = jarena_alloc(L->a, cap * sizeof *nt);
        if (L->ntok)
            memcpy(nt, L->tok, L->ntok * sizeof *nt);
        L->tok = nt;
        L->cap = cap;
    }
    struct jtok *k = &L->tok[L->ntok++];
    k->t = t;
    k->s = s;
    k->n = n;
    k->line = line;
    return k;
}

static enum jtok_type last_type(const struct lexer *L)
{
    return L->ntok ? L->tok[L->ntok - 1].t : JT_EOF;
}

/* {%- {{- {#-: trimEnd the text token before, dropping it when empty. */
static void strip_trailing(struct lexer *L)
{
    if (!L->ntok || L->tok[L->ntok - 1].t != JT_TEXT)
        return;
    struct jtok *k = &L->tok[L->ntok - 1];
    size_t w;
    while (k->n > 0 && (w = ws_before(k->s, k->n)))
        k->n -= w;
    if (k->n == 0)
        L->ntok--;
}

static void skip_ws(struct lexer *L)
{
    size_t w;
    while (L->pos < L->n && (w = ws_at(L->s, L->pos, L->n)))
        L->pos += w;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_word(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static void lex_string(struct lexer *L, char q)
{
    int line = L->line[L->pos];
    L->pos++;
    char *o = jarena_alloc(L->a, L->n - L->pos + 1);
    size_t on = 0;
    for (;;) {
        if (L->pos >= L->n)
            lex_fail(L, line, "%s", "unterminated string literal");
        char c = L->s[L->pos];
        if (c == q)
            break;
        if (c != '\\') {
            o[on++] = c;
            L->pos++;
            continue;
        }
        if (++L->pos >= L->n)
            lex_fail(L, line, "%s", "unterminated string literal");
        char e = L->s[L->pos++];
        switch (e) {
        case 'n': o[on++] = '\n'; break;
        case 't': o[on++] = '\t'; break;
        case 'r': o[on++] = '\r'; break;
        case 'b': o[on++] = '\b'; break;
        case 'f': o[on++] = '\f'; break;
        case 'v': o[on++] = '\v'; break;
        case '\'': o[on++] = '\''; break;
        case '"': o[on++] = '"'; break;
        case '\\': o[on++] = '\\'; break;
        case 'x':
        case 'u': {
            int len = e == 'x' ? 2 : 4;
            uint32_t cp = 0;
            for (int i = 0; i < len; i++) {
                int h = L->pos < L->n ? hexval(L->s[L->pos]) : -1;
                if (h < 0)
                    lex_fail(L, line, "invalid \\%s escape in string literal", e == 'x' ? "x" : "u");
                cp = cp * 16 + (uint32_t)h;
                L->pos++;
            }
            /* A UTF-16 surrogate pair written as two \u escapes. */
            if (cp >= 0xd800 && cp < 0xdc00 && L->pos + 6 <= L->n && L->s[L->pos] == '\\' &&
                L->s[L->pos + 1] == 'u') {
                uint32_t lo = 0;
                bool ok = true;
                for (int i = 0; i < 4; i++) {
                    int h = hexval(L->s[L->pos + 2 + i]);
                    if (h < 0)
                        ok = false;
                    lo = lo * 16 + (uint32_t)(h < 0 ? 0 : h);
                }
                if (ok && lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    L->pos += 6;
                }
            }
            if (cp >= 0xd800 && cp < 0xe000)
                cp = 0xfffd;
            on += put_utf8(o + on, cp);
            break;
        }
        default: {
            char b[2] = {e, 0};
            lex_fail(L, line, "unexpected escaped character '\\%s' in string literal", b);
        }
        }
    }
    L->pos++; /* closing quote */
    o[on] = 0;
    push(L, JT_STR, o, on, line);
}

static void lex_number(struct lexer *L, const char *prefix)
{
    size_t start = L->pos;
    int line = L->line[L->pos];
    while (L->pos < L->n && is_digit(L->s[L->pos]))
        L->pos++;
    if (L->pos + 1 < L->n && L->s[L->pos] == '.' && is_digit(L->s[L->pos + 1]) &&
        (prefix || last_type(L) != JT_DOT)) {
        L->pos++;
        while (L->pos < L->n && is_digit(L->s[L->pos]))
            L->pos++;
    }
    size_t len = L->pos - start, pl = prefix ? strlen(prefix) : 0;
    char *s = jarena_alloc(L->a, pl + len + 1);
    memcpy(s, prefix ? prefix : "", pl);
    memcpy(s + pl, L->s + start, len);
    push(L, JT_NUM, s, pl + len, line);
}

static const struct {
    const char *s;
    enum jtok_type t;
} ops[] = {
    {"{%", JT_OPEN_STMT}, {"%}", JT_CLOSE_STMT}, {"{{", JT_OPEN_EXPR}, {"}}", JT_CLOSE_EXPR},
    {"(", JT_LPAREN},     {")", JT_RPAREN},      {"{", JT_LBRACE},     {"}", JT_RBRACE},
    {"[", JT_LBRACKET},   {"]", JT_RBRACKET},    {",", JT_COMMA},      {".", JT_DOT},
    {":", JT_COLON},      {"|", JT_PIPE},        {"<=", JT_CMP},       {">=", JT_CMP},
    {"==", JT_CMP},       {"!=", JT_CMP},        {"<", JT_CMP},        {">", JT_CMP},
    {"+", JT_ADD},        {"-", JT_ADD},         {"~", JT_ADD},        {"**", JT_POW},
    {"*", JT_MUL},        {"//", JT_MUL},        {"/", JT_MUL},        {"%", JT_MUL},
    {"=", JT_EQUALS},
};

struct jtok *jinja_lex(struct jarena *a, const char *name, const char *src, size_t len,
                       size_t *ntok)
{
    struct lexer L = {.a = a, .name = name};
    if (len > JINJA_MAX_SOURCE)
        lex_fail(&L, 1, "%s", "template is too large");
    L.s = jarena_alloc(a, len + 1);
    L.line = jarena_alloc(a, (len + 1) * sizeof *L.line);
    int line = 1;
    for (size_t i = 0; i < len; i++) {
        L.s[i] = src[i];
        L.line[i] = line;
        if (src[i] == '\n')
            line++;
    }
    L.n = len;
    if (L.n && L.s[L.n - 1] == '\n')
        L.n--;
    pass_lstrip(&L);
    pass_trim(&L);
    pass_generation(&L);
    L.s[L.n] = 0;

    while (L.pos < L.n) {
        enum jtok_type lt = last_type(&L);
        const char *s = L.s;
        if (lt == JT_EOF || lt == JT_CLOSE_STMT || lt == JT_CLOSE_EXPR || lt == JT_COMMENT) {
            size_t st = L.pos;
            while (L.pos < L.n &&
                   !(s[L.pos] == '{' && L.pos + 1 < L.n &&
                     (s[L.pos + 1] == '%' || s[L.pos + 1] == '{' || s[L.pos + 1] == '#')))
                L.pos++;
            if (L.pos > st) {
                push(&L, JT_TEXT, s + st, L.pos - st, L.line[st]);
                continue;
            }
        }
        int ln = L.line[L.pos];
        if (s[L.pos] == '{' && L.pos + 1 < L.n && s[L.pos + 1] == '#') {
            L.pos += 2;
            bool strip_before = L.pos < L.n && s[L.pos] == '-';
            if (strip_before)
                L.pos++;
            size_t st = L.pos;
            while (!(L.pos + 1 < L.n && s[L.pos] == '#' && s[L.pos + 1] == '}')) {
                if (L.pos + 2 >= L.n)
                    lex_fail(&L, ln, "%s", "unclosed comment");
                L.pos++;
            }
            bool strip_after = L.pos > st && s[L.pos - 1] == '-';
            if (strip_before)
                strip_trailing(&L);
            push(&L, JT_COMMENT, s + st, L.pos - st, ln);
            L.pos += 2;
            if (strip_after)
                skip_ws(&L);
            continue;
        }
        if (L.pos + 2 < L.n && s[L.pos] == '{' && s[L.pos + 1] == '%' && s[L.pos + 2] == '-') {
            strip_trailing(&L);
            push(&L, JT_OPEN_STMT, "{%", 2, ln);
            L.pos += 3;
            continue;
        }
        if (L.pos + 2 < L.n && s[L.pos] == '{' && s[L.pos + 1] == '{' && s[L.pos + 2] == '-') {
            strip_trailing(&L);
            push(&L, JT_OPEN_EXPR, "{{", 2, ln);
            L.brace_depth = 0;
            L.pos += 3;
            continue;
        }
        skip_ws(&L);
        if (L.pos >= L.n)
            break;
        ln = L.line[L.pos];
        if (L.pos + 2 < L.n && s[L.pos] == '-' && s[L.pos + 1] == '%' && s[L.pos + 2] == '}') {
            push(&L, JT_CLOSE_STMT, "%}", 2, ln);
            L.pos += 3;
            skip_ws(&L);
            continue;
        }
        if (L.pos + 2 < L.n && s[L.pos] == '-' && s[L.pos + 1] == '}' && s[L.pos + 2] == '}') {
            push(&L, JT_CLOSE_EXPR, "}}", 2, ln);
            L.pos += 3;
            skip_ws(&L);
            continue;
        }
        char c = s[L.pos];
        if (c == '-' || c == '+') {
            lt = last_type(&L);
            if (lt == JT_TEXT || lt == JT_EOF) {
                char b[2] = {c, 0};
                lex_fail(&L, ln, "unexpected character '%s'", b);
            }
            if (!(lt == JT_NAME || lt == JT_NUM || lt == JT_STR || lt == JT_RPAREN ||
                  lt == JT_RBRACKET)) {
                L.pos++;
                if (L.pos < L.n && is_digit(s[L.pos]))
                    lex_number(&L, c == '-' ? "-" : "+");
                else
                    push(&L, JT_UNARY, c == '-' ? "-" : "+", 1, ln);
                continue;
            }
        }
        bool matched = false;
        for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
            size_t ol = strlen(ops[k].s);
            if (ops[k].t == JT_CLOSE_EXPR && L.brace_depth > 0)
                continue;
            if (L.pos + ol <= L.n && memcmp(s + L.pos, ops[k].s, ol) == 0) {
                push(&L, ops[k].t, ops[k].s, ol, ln);
                if (ops[k].t == JT_OPEN_EXPR)
                    L.brace_depth = 0;
                else if (ops[k].t == JT_LBRACE)
                    L.brace_depth++;
                else if (ops[k].t == JT_RBRACE)
                    L.brace_depth--;
                L.pos += ol;
                matched = true;
                break;
            }
        }
        if (matched)
            continue;
        if (c == '\'' || c == '"') {
            lex_string(&L, c);
            continue;
        }
        if (is_digit(c)) {
            lex_number(&L, NULL);
            continue;
        }
        if (is_word(c)) {
            size_t st = L.pos;
            while (L.pos < L.n && is_word(s[L.pos]))
                L.pos++;
            push(&L, JT_NAME, s + st, L.pos - st, ln);
            continue;
        }
        char b[8] = {0};
        b[0] = c;
        lex_fail(&L, ln, "unexpected character '%s'", b);
    }
    push(&L, JT_EOF, "", 0, L.n ? L.line[L.n - 1] : 1);
    *ntok = L.ntok;
    return L.tok;
}
