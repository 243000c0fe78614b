/* SPDX-License-Identifier: MIT */
/*
 * jinja_impl.h - declarations shared by the Jinja interpreter files
 * (engine/jinja_*.c) and engine/chat.c; no other file includes it.
 *
 * Pieces: an arena allocator with a byte cap and the value model
 * (jinja_value.c), the lexer (jinja_lex.c), the parser producing an AST
 * (jinja_parse.c) and the evaluator (jinja_eval.c).
 *
 * Semantics follow @huggingface/jinja (what Hugging Face's JavaScript
 * tokenizers use, and the reference our tests compare against), including
 * its preprocessing: trim_blocks and lstrip_blocks on, one trailing newline
 * of the template dropped. Where that implementation is missing something
 * Python's Jinja has (strip(chars), iterating strings, undefined iterables,
 * list.append, ...) Python's behaviour is used.
 *
 * Errors: every failure inside parsing or rendering longjmps to the entry
 * point (jinja_parse / jinja_render) with a one-line message; all memory
 * lives in arenas or in buffers registered with the context, so nothing
 * leaks.
 */
#ifndef MOED_ENGINE_JINJA_IMPL_H
#define MOED_ENGINE_JINJA_IMPL_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;

/* ---- limits (a hostile template must not hang or exhaust memory) ---- */
#define JINJA_MAX_SOURCE      (4u << 20)    /* template bytes */
#define JINJA_MAX_PARSE_DEPTH 256           /* nesting of expressions and blocks */
#define JINJA_MAX_EVAL_DEPTH  512           /* nested evaluation incl. macro calls */
#define JINJA_MAX_OUTPUT      (32u << 20)   /* bytes of any rendered text */
#define JINJA_MAX_MEMORY      (512u << 20)  /* arena bytes of one render */
#define JINJA_MAX_STEPS       50000000ull   /* evaluation steps of one render */
#define JINJA_MAX_ITEMS       (1u << 22)    /* elements of one list */

/* ---- arena ---- */
struct jarena {
    struct jchunk *head;
    size_t used, cap; /* bytes handed out / byte cap (0 = none) */
    jmp_buf *fail;    /* where to longjmp when over the cap or out of memory */
    char *err;        /* message buffer of the owner */
    size_t errlen;
};
void jarena_init(struct jarena *a, size_t cap, jmp_buf *fail, char *err, size_t errlen);
void jarena_free(struct jarena *a);
void *jarena_alloc(struct jarena *a, size_t n); /* zeroed, 16-byte aligned */
char *jarena_strdup(struct jarena *a, const char *s, size_t n);

/* ---- values ---- */
enum jv_type {
    JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS, JV_FUNC,
};

struct jstr {
    size_t len;
    char s[]; /* NUL-terminated */
};
struct jv {
    enum jv_type t;
    union {
        bool b;
        int64_t i;
        double f;
        const struct jstr *s;
        struct jlist *l;
        struct jdict *d; /* JV_DICT and JV_NS */
        struct jfunc *fn;
    };
};
struct jlist {
    struct jv *v;
    size_t n, cap;
};
struct jdict {
    const struct jstr **k;
    struct jv *v;
    size_t n, cap;
};

struct jnode;
struct jenv;
struct jctx;
struct jargs;

enum jfunc_kind { JF_BUILTIN, JF_METHOD, JF_MACRO, JF_CALLER };
typedef struct jv (*jbuiltin_fn)(struct jctx *c, const struct jargs *a, int line);
struct jfunc {
    enum jfunc_kind kind;
    const char *name;
    jbuiltin_fn fn;            /* BUILTIN */
    struct jv self;            /* METHOD: bound object */
    const struct jnode *node;  /* MACRO / CALLER: the definition */
    struct jenv *env;          /* MACRO / CALLER: defining scope */
};

/* Arguments of a call: positional values, then keyword values. */
struct jargs {
    struct jv *pos;
    size_t npos;
    const struct jstr **kw_names;
    struct jv *kw;
    size_t nkw;
};

static inline struct jv jv_undef(void) { struct jv v = {.t = JV_UNDEF}; return v; }
static inline struct jv jv_none(void) { struct jv v = {.t = JV_NONE}; return v; }
static inline struct jv jv_bool(bool b) { struct jv v = {.t = JV_BOOL, .b = b}; return v; }
static inline struct jv jv_int(int64_t i) { struct jv v = {.t = JV_INT, .i = i}; return v; }
static inline struct jv jv_float(double f) { struct jv v = {.t = JV_FLOAT, .f = f}; return v; }
static inline struct jv jv_str(const struct jstr *s) { struct jv v = {.t = JV_STR, .s = s}; return v; }

const struct jstr *jstr_new(struct jarena *a, const char *s, size_t n);
struct jlist *jlist_new(struct jarena *a, size_t cap);
void jlist_push(struct jarena *a, struct jlist *l, struct jv v);
struct jdict *jdict_new(struct jarena *a);
struct jv *jdict_get(const struct jdict *d, const char *k, size_t klen);
void jdict_set(struct jarena *a, struct jdict *d, const struct jstr *k, struct jv v);

/* Converts cJSON to a value (numbers that are whole and below 2^53 become
 * ints, as JSON.parse + Number.isInteger do). */
struct jv jv_from_json(struct jarena *a, const struct cJSON *j, int depth);
const char *jv_type_name(enum jv_type t);

/* ---- growable byte buffer (malloc'd; owned by a context) ---- */
struct jbuf {
    char *p;
    size_t n, cap;
};
/* Appends n bytes; false when out of memory or past JINJA_MAX_OUTPUT. */
bool jbuf_put(struct jbuf *b, const char *s, size_t n);
void jbuf_free(struct jbuf *b);

/* Number text as JavaScript's String(number) writes it (shortest round
 * trip, exponent from 1e21 and below 1e-6); "NaN", "Infinity". */
void jinja_js_number(char *buf, size_t len, double x);

/* ---- lexer ---- */
enum jtok_type {
    JT_TEXT, JT_NUM, JT_STR, JT_NAME, JT_EQUALS, JT_LPAREN, JT_RPAREN, JT_OPEN_STMT,
    JT_CLOSE_STMT, JT_OPEN_EXPR, JT_CLOSE_EXPR, JT_LBRACKET, JT_RBRACKET, JT_LBRACE,
    JT_RBRACE, JT_COMMA, JT_DOT, JT_COLON, JT_PIPE, JT_ADD, /* + - ~ */
    JT_MUL, /* * / // % */
    JT_POW, JT_CMP, /* < > <= >= == != */
    JT_UNARY, /* unary + - */
    JT_COMMENT, JT_EOF,
};
struct jtok {
    enum jtok_type t;
    int line;
    const char *s; /* value: text, string contents (unescaped), name, operator, number */
    size_t n;
};
/* Tokenizes src (len bytes). Tokens and strings live in arena a. On error
 * writes "name:LINE: message" into err and longjmps to a->fail. */
struct jtok *jinja_lex(struct jarena *a, const char *name, const char *src, size_t len,
                       size_t *ntok);

/* ---- AST ---- */
enum jnode_kind {
    /* statements */
    JN_TEXT, JN_OUTPUT, JN_IF, JN_FOR, JN_SET, JN_MACRO, JN_CALLBLOCK, JN_FILTERBLOCK,
    JN_BREAK, JN_CONTINUE,
    /* expressions */
    JN_LIT, JN_NAME, JN_LIST, JN_TUPLE, JN_DICT, JN_BINOP, JN_UNARY, JN_COND, JN_ATTR,
    JN_INDEX, JN_SLICE, JN_CALL, JN_FILTER, JN_TEST, JN_KWARG, JN_SPREAD, JN_KWSPREAD,
};
enum jop {
    JOP_NONE, JOP_ADD, JOP_SUB, JOP_CONCAT, JOP_MUL, JOP_DIV, JOP_FLOORDIV, JOP_MOD, JOP_POW,
    JOP_EQ, JOP_NE, JOP_LT, JOP_GT, JOP_LE, JOP_GE, JOP_IN, JOP_NOTIN, JOP_AND, JOP_OR,
    JOP_NOT, JOP_NEG, JOP_POS,
};
struct jnode {
    enum jnode_kind kind;
    int line;
    enum jop op;            /* BINOP, UNARY; TEST: 1 = negated */
    struct jnode *a, *b, *c, *d;
    struct jnode **list;    /* body / elements / args / dict keys / macro params */
    size_t n;
    struct jnode **list2;   /* else body / dict values / call block params */
    size_t n2;
    const struct jstr *str; /* TEXT, NAME, ATTR name, FILTER/TEST/KWARG/MACRO name */
    struct jv lit;          /* LIT */
    int fid;                /* FILTER / TEST: index into the built-in table */
};
struct jprogram {
    struct jnode **body;
    size_t n;
};
/* Parses tokens into a program. Errors as for jinja_lex. */
struct jprogram *jinja_parse(struct jarena *a, const char *name, const struct jtok *toks,
                             size_t ntok);

/* Names of filters and tests the evaluator implements; the parser rejects
 * others at parse time so an unsupported one never renders silently. */
int jinja_filter_id(const char *name);
int jinja_test_id(const char *name);

/* ---- rendering ---- */
struct jinja_var {
    const char *name;
    struct jv v;
};
/* Renders prog. vars are defined in the global scope (converted with
 * jv_from_json by the caller, in arena a). On success returns 0 and a
 * malloc'd string in *out. On failure returns ERR_TEMPLATE and a message. */
int jinja_render(const struct jprogram *prog, const char *name, struct jarena *a,
                 jmp_buf *fail, const struct jinja_var *vars, size_t nvars, char **out,
                 size_t *out_len, char *err, size_t errlen);

/* JSON text of a value as @huggingface/jinja's tojson writes it (Python
 * json.dumps layout: ", " and ": " separators, indent, ensure_ascii). Used by
 * tests. Appends to b; returns false for values JSON cannot hold. */
bool jinja_to_json(struct jbuf *b, struct jv v, int indent, bool ensure_ascii, bool sort_keys,
                   const char *item_sep, const char *key_sep, int depth);

#endif
