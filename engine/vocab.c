/* SPDX-License-Identifier: MIT */
/*
 * vocab.c - tokenizers from GGUF metadata: byte-level BPE ("gpt2") and
 * SentencePiece BPE ("llama"), the added-token splitter in front of both, and
 * the streaming detokenizer. The contract is in vocab.h.
 *
 * Where it sits: engine/, used by the server before a request reaches the
 * engine thread (encode) and per sequence on the output path (detok).
 *
 * Invariants:
 *  - struct vocab is never written after vocab_init_gguf(); every encode call
 *    keeps its working memory (symbols, heaps, PCRE2 match data) in a struct
 *    enc_ctx on its own, so encoding is thread-safe without locks.
 *  - The text every encoder stage sees is valid UTF-8 (vocab_utf8_sanitize
 *    runs first), so PCRE2 matches with PCRE2_NO_UTF_CHECK.
 *  - Token ids inside the BPE merge table are always < n_tokens; a merge whose
 *    parts or result are not tokens is dropped at load (it could never fire).
 *
 * The pre-tokenizer regexes are those of the models' tokenizer.json files,
 * with two rewrites so that they mean what they mean in the reference
 * (transformers.js, which runs them as JavaScript /gu regexes): `(?i:'s|..)`
 * is spelled out with ASCII case pairs (JS has no inline flags, so the
 * reference does the same rewrite), and `\s` / `\S` are replaced by the exact
 * JavaScript white-space set (JS counts U+FEFF and not U+0085; PCRE2's UCP
 * \s is the other way round).
 */
#include "engine/vocab.h"

#include "common/err.h"
#include "engine/gguf.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define MAX_REGEX 8

/* A merge rule keyed by the ids of its two parts. */
struct merge_ent {
    uint64_t key; /* left id << 32 | right id; UINT64_MAX = empty slot */
    int32_t rank;
    int32_t id;   /* the merged token */
};

struct vocab {
    enum vocab_kind kind;
    char *pre;
    uint32_t n;
    char *text_arena;      /* every token's GGUF text, NUL-terminated */
    uint32_t *text_off, *text_len;
    char *piece_arena;     /* every token's decoded bytes (what detok writes) */
    uint32_t *piece_off, *piece_len;
    float *score;          /* n (SPM merge priority; 0 when absent) */
    uint8_t *type;         /* n enum vocab_ttype */
    struct vocab_special sp;
    bool add_space_prefix; /* SPM dummy prefix */
    bool nfc;              /* NFC-normalize text fragments (Qwen) */
    bool ignore_merges;    /* a word that is a token is taken whole (Llama 3) */
    uint32_t *hash;        /* open addressing over GGUF text: id + 1, 0 = empty */
    uint32_t hash_mask;
    struct merge_ent *merges;
    uint64_t merge_mask;
    uint32_t cp_of_byte[256]; /* GPT-2 byte-to-unicode table */
    int32_t byte_id[256];  /* BPE: token of each byte; SPM: <0xXX>; -1 none */
    int32_t *spec;         /* added tokens matched in text, sorted by first byte, longest first */
    uint32_t n_spec;
    uint32_t spec_first[257]; /* spec[spec_first[b] .. spec_first[b+1]) start with byte b */
    pcre2_code *re[MAX_REGEX];
    int n_re;
    size_t max_piece;
};

/* ---- small helpers ---- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static const char *tok_text(const struct vocab *v, int32_t id) { return v->text_arena + v->text_off[id]; }

int32_t vocab_find(const struct vocab *v, const char *text, size_t len)
{
    uint32_t i = (uint32_t)hash_bytes(text, len) & v->hash_mask;
    for (;; i = (i + 1) & v->hash_mask) {
        uint32_t e = v->hash[i];
        if (e == 0)
            return -1;
        int32_t id = (int32_t)(e - 1);
        if (v->text_len[id] == len && memcmp(tok_text(v, id), text, len) == 0)
            return id;
    }
}

static const struct merge_ent *merge_find(const struct vocab *v, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint64_t i = hash_u64(key) & v->merge_mask;
    for (;; i = (i + 1) & v->merge_mask) {
        const struct merge_ent *m = &v->merges[i];
        if (m->key == key)
            return m;
        if (m->key == UINT64_MAX)
            return NULL;
    }
}

/* Length of the UTF-8 sequence led by byte c (valid text only). */
static int utf8_len(uint8_t c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

static int utf8_put(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes one code point of valid UTF-8 at s; returns its length. */
static int utf8_get(const uint8_t *s, uint32_t *cp)
{
    int n = utf8_len(s[0]);
    uint32_t c = n == 1 ? s[0] : n == 2 ? (s[0] & 0x1Fu) : n == 3 ? (s[0] & 0x0Fu) : (s[0] & 0x07u);
    for (int i = 1; i < n; i++)
        c = c << 6 | (s[i] & 0x3Fu);
    *cp = c;
    return n;
}

/* GPT-2's byte-to-unicode table: printable bytes stand for themselves, the
 * others are moved to U+0100 and up, in byte order. */
static void byte_unicode_table(uint32_t cp_of_byte[256])
{
    uint32_t k = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        cp_of_byte[b] = keep ? (uint32_t)b : 256 + k++;
    }
}

/* ---- UTF-8 repair (the WHATWG decoder) ---- */

/* Streaming decoder step shared by vocab_utf8_sanitize and the detokenizer.
 * Feeds byte c; writes what becomes final into o (at most 3 + 4 bytes) and
 * returns the number of bytes written. */
struct u8dec {
    uint8_t pend[4];
    uint8_t n_pend, need, lo, hi;
};

static const char k_fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

static int u8dec_byte(struct u8dec *d, uint8_t c, char *o)
{
    int w = 0;
    if (d->need) {
        if (c >= d->lo && c <= d->hi) {
            d->pend[d->n_pend++] = c;
            d->lo = 0x80;
            d->hi = 0xBF;
            if (--d->need == 0) {
                memcpy(o, d->pend, d->n_pend);
                w = d->n_pend;
                d->n_pend = 0;
            }
            return w;
        }
        /* The sequence so far is a maximal invalid subpart: one U+FFFD,
         * then c is looked at afresh. */
        memcpy(o, k_fffd, 3);
        w = 3;
        d->need = 0;
        d->n_pend = 0;
    }
    if (c < 0x80) {
        o[w++] = (char)c;
    } else if (c >= 0xC2 && c <= 0xDF) {
        d->need = 1, d->lo = 0x80, d->hi = 0xBF;
    } else if (c >= 0xE0 && c <= 0xEF) {
        d->need = 2, d->lo = c == 0xE0 ? 0xA0 : 0x80, d->hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        d->need = 3, d->lo = c == 0xF0 ? 0x90 : 0x80, d->hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        memcpy(o + w, k_fffd, 3);
        return w + 3;
    }
    if (d->need)
        d->pend[d->n_pend++] = c;
    return w;
}

/* True when s[0..n) is valid UTF-8 (the same rules as u8dec_byte). */
static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF)
            need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else
            return false;
        if (n - i - 1 < (size_t)need)
            return false;
        for (int k = 1; k <= need; k++) {
            uint8_t b = s[i + (size_t)k];
            if (b < lo || b > hi)
                return false;
            lo = 0x80, hi = 0xBF;
        }
        i += (size_t)need + 1;
    }
    return true;
}

int vocab_utf8_sanitize(const char *s, size_t n, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (utf8_valid((const uint8_t *)s, n))
        return 0;
    struct u8dec d = {0};
    size_t i;
    /* Slow path: decode everything again into a new buffer. */
    char *o = malloc(n * 3 + 4);
    if (!o)
        return -ENOMEM;
    size_t w = 0;
    for (i = 0; i < n; i++)
        w += (size_t)u8dec_byte(&d, (uint8_t)s[i], o + w);
    if (d.need) {
        memcpy(o + w, k_fffd, 3);
        w += 3;
    }
    o[w] = 0;
    *out = o;
    *out_len = w;
    return 0;
}

/* ---- loading ---- */

/* JavaScript's \s (WhiteSpace + LineTerminator), as a class body. */
#define JS_WS "\\t\\n\\x0b\\f\\r \\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}\\x{feff}"
#define WS "[" JS_WS "]"
#define NWS "[^" JS_WS "]"
#define CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

static const char *const k_re_gpt2[] = {
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" JS_WS "\\p{L}\\p{N}]+|" WS "+(?!" NWS ")|" WS "+",
    NULL,
};
static const char *const k_re_qwen2[] = {
    CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^" JS_WS "\\p{L}\\p{N}]+[\\r\\n]*|" WS "*[\\r\\n]+|" WS
                 "+(?!" NWS ")|" WS "+",
    NULL,
};
static const char *const k_re_llama3[] = {
    CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^" JS_WS "\\p{L}\\p{N}]+[\\r\\n]*|" WS
                 "*[\\r\\n]+|" WS "+(?!" NWS ")|" WS "+",
    NULL,
};
static const char *const k_re_deepseek_v3[] = {
    "\\p{N}{1,3}",
    "[\\x{4e00}-\\x{9fa5}\\x{3040}-\\x{309f}\\x{30a0}-\\x{30ff}]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|" WS
    "*[\\r\\n]+|" WS "+(?!" NWS ")|" WS "+",
    NULL,
};
/* llama.cpp's list for deepseek-llm (no reference tokenizer is installed to
 * check it against). */
static const char *const k_re_deepseek_llm[] = {
    "[\\r\\n]",
    "\\s?[A-Za-z\\x{b5}\\x{c0}-\\x{d6}\\x{d8}-\\x{f6}\\x{f8}-\\x{1ba}\\x{1bc}-\\x{1bf}\\x{1c4}-\\x{293}\\x{295}-\\x{2af}"
    "\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37b}-\\x{37d}\\x{37f}\\x{386}\\x{388}-\\x{38a}\\x{38c}\\x{38e}-\\x{3a1}"
    "\\x{3a3}-\\x{3f5}\\x{3f7}-\\x{481}\\x{48a}-\\x{52f}\\x{531}-\\x{556}\\x{10a0}-\\x{10c5}\\x{13a0}-\\x{13f5}"
    "\\x{13f8}-\\x{13fd}\\x{1c90}-\\x{1cba}\\x{1cbd}-\\x{1cbf}\\x{1d00}-\\x{1d2b}\\x{1d6b}-\\x{1d77}\\x{1d79}-\\x{1d9a}"
    "\\x{1e00}-\\x{1f15}\\x{1f18}-\\x{1f1d}\\x{1f20}-\\x{1f45}\\x{1f48}-\\x{1f4d}\\x{1f50}-\\x{1f57}\\x{1f59}\\x{1f5b}"
    "\\x{1f5d}\\x{1f5f}-\\x{1f7d}\\x{1f80}-\\x{1fb4}\\x{1fb6}-\\x{1fbc}\\x{1fbe}\\x{1fc2}-\\x{1fc4}\\x{1fc6}-\\x{1fcc}"
    "\\x{1fd0}-\\x{1fd3}\\x{1fd6}-\\x{1fdb}\\x{1fe0}-\\x{1fec}\\x{1ff2}-\\x{1ff4}\\x{1ff6}-\\x{1ffc}\\x{2102}\\x{2107}"
    "\\x{210a}-\\x{2113}\\x{2115}\\x{2119}-\\x{211d}\\x{2124}\\x{2126}\\x{2128}\\x{212a}-\\x{212d}\\x{212f}-\\x{2134}"
    "\\x{2139}\\x{213c}-\\x{213f}\\x{2145}-\\x{2149}\\x{214e}\\x{2183}\\x{2184}\\x{2c00}-\\x{2c7b}\\x{2c7e}-\\x{2ce4}"
    "\\x{2ceb}-\\x{2cee}\\x{2cf2}\\x{2cf3}\\x{a640}-\\x{a66d}\\x{a680}-\\x{a69b}\\x{a722}-\\x{a76f}\\x{a771}-\\x{a787}"
    "\\x{a78b}-\\x{a78e}\\x{ab70}-\\x{abbf}\\x{fb00}-\\x{fb06}\\x{fb13}-\\x{fb17}\\x{ff21}-\\x{ff3a}\\x{ff41}-\\x{ff5a}"
    "\\x{10400}-\\x{1044f}\\x{104b0}-\\x{104d3}\\x{104d8}-\\x{104fb}\\x{10c80}-\\x{10cb2}\\x{10cc0}-\\x{10cf2}"
    "\\x{118a0}-\\x{118df}\\x{1e900}-\\x{1e943}]+",
    "\\s?[!-/:-~\\x{ff01}-\\x{ff0f}\\x{ff1a}-\\x{ff5e}\\x{2018}-\\x{201f}\\x{3000}-\\x{3002}]+",
    "\\s+$",
    "[\\x{4e00}-\\x{9fa5}\\x{800}-\\x{4e00}\\x{ac00}-\\x{d7ff}]+",
    "\\p{N}+",
    NULL,
};

static int compile_regexes(struct vocab *v, char *err, size_t errlen)
{
    const char *const *list = k_re_gpt2;
    if (strcmp(v->pre, "qwen2") == 0) {
        list = k_re_qwen2;
        v->nfc = true; /* tokenizer.json: "normalizer": {"type": "NFC"} */
    } else if (strcmp(v->pre, "llama-bpe") == 0 || strcmp(v->pre, "llama3") == 0) {
        list = k_re_llama3;
        v->ignore_merges = true; /* tokenizer.json: "ignore_merges": true */
    } else if (strcmp(v->pre, "deepseek-v3") == 0) {
        list = k_re_deepseek_v3;
    } else if (strcmp(v->pre, "deepseek-llm") == 0) {
        list = k_re_deepseek_llm;
    }
    for (int i = 0; list[i]; i++) {
        int ec;
        PCRE2_SIZE off;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)list[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &ec, &off, NULL);
        if (!re) {
            char msg[128];
            pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof msg);
            set_err(err, errlen, "tokenizer.ggml.pre '%s': regex %d: %s at %zu", v->pre, i, msg, (size_t)off);
            return ERR_TOKENIZER;
        }
        /* Without JIT (for example under some sanitizers) pcre2_match runs
         * the interpreter: slower, same answers. */
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
        v->re[v->n_re++] = re;
    }
    return 0;
}

static int get_opt_id(const struct gguf_file *f, const char *key, int32_t n, int32_t *out,
                      char *err, size_t errlen)
{
    uint32_t u;
    *out = -1;
    int rc = gguf_get_u32(f, key, &u);
    if (rc == -ENOENT)
        return 0;
    if (rc) {
        int32_t s;
        if (gguf_get_i32(f, key, &s) == 0 && s < 0)
            return 0; /* some converters write -1 for "none" */
        set_err(err, errlen, "%s: not an unsigned integer", key);
        return ERR_MODEL_FORMAT;
    }
    if (u >= (uint32_t)n) {
        set_err(err, errlen, "%s: id %u is not below the %d tokens", key, u, n);
        return ERR_TOKENIZER;
    }
    *out = (int32_t)u;
    return 0;
}

static int get_opt_bool(const struct gguf_file *f, const char *key, bool def, bool *out, char *err,
                        size_t errlen)
{
    *out = def;
    int rc = gguf_get_bool(f, key, out);
    if (rc == -ENOENT) {
        *out = def;
        return 0;
    }
    if (rc)
        set_err(err, errlen, "%s: not a bool", key);
    return rc;
}

/* Fills text, types, scores and the text hash. */
static int load_tokens(struct vocab *v, const struct gguf_file *f, char *err, size_t errlen)
{
    const struct gguf_value *toks, *types = NULL, *scores = NULL;
    int rc = gguf_get_arr(f, "tokenizer.ggml.tokens", &toks);
    if (rc) {
        set_err(err, errlen, "tokenizer.ggml.tokens: %s", rc == -ENOENT ? "missing" : "not an array");
        return rc == -ENOENT ? ERR_TOKENIZER : rc;
    }
    if (toks->arr.type != GGUF_VTYPE_STRING || toks->arr.n == 0 || toks->arr.n >= (1u << 30)) {
        set_err(err, errlen, "tokenizer.ggml.tokens: not a non-empty array of strings");
        return ERR_TOKENIZER;
    }
    v->n = (uint32_t)toks->arr.n;
    rc = gguf_get_arr(f, "tokenizer.ggml.token_type", &types);
    if (rc && rc != -ENOENT) {
        set_err(err, errlen, "tokenizer.ggml.token_type: not an array");
        return rc;
    }
    if (types && (types->arr.n != v->n || types->arr.type == GGUF_VTYPE_STRING || types->arr.type == GGUF_VTYPE_ARRAY)) {
        set_err(err, errlen, "tokenizer.ggml.token_type: %llu numbers expected, one per token",
                (unsigned long long)v->n);
        return ERR_TOKENIZER;
    }
    rc = gguf_get_arr(f, "tokenizer.ggml.scores", &scores);
    if (rc && rc != -ENOENT) {
        set_err(err, errlen, "tokenizer.ggml.scores: not an array");
        return rc;
    }
    if (scores && (scores->arr.n != v->n || scores->arr.type == GGUF_VTYPE_STRING || scores->arr.type == GGUF_VTYPE_ARRAY)) {
        set_err(err, errlen, "tokenizer.ggml.scores: %llu numbers expected, one per token",
                (unsigned long long)v->n);
        return ERR_TOKENIZER;
    }
    const struct gguf_str *ts = toks->arr.data;
    size_t total = 0;
    for (uint32_t i = 0; i < v->n; i++) {
        if (ts[i].len > 65536) {
            set_err(err, errlen, "tokenizer.ggml.tokens: entry %u is longer than 65536 bytes", i);
            return ERR_TOKENIZER;
        }
        total += ts[i].len + 1;
    }
    v->text_arena = malloc(total);
    v->text_off = malloc(sizeof(uint32_t) * v->n);
    v->text_len = malloc(sizeof(uint32_t) * v->n);
    v->score = calloc(v->n, sizeof(float));
    v->type = malloc(v->n);
    uint32_t hcap = 1;
    while (hcap < v->n * 2u)
        hcap <<= 1;
    v->hash = calloc(hcap, sizeof(uint32_t));
    v->hash_mask = hcap - 1;
    if (!v->text_arena || !v->text_off || !v->text_len || !v->score || !v->type || !v->hash)
        return -ENOMEM;
    size_t off = 0;
    for (uint32_t i = 0; i < v->n; i++) {
        memcpy(v->text_arena + off, ts[i].s, ts[i].len);
        v->text_arena[off + ts[i].len] = 0;
        v->text_off[i] = (uint32_t)off;
        v->text_len[i] = (uint32_t)ts[i].len;
        off += ts[i].len + 1;
        int64_t t = types ? gguf_arr_get_i64(types, i) : VOCAB_TTYPE_NORMAL;
        if (t < VOCAB_TTYPE_NORMAL || t > VOCAB_TTYPE_BYTE) {
            set_err(err, errlen, "tokenizer.ggml.token_type: entry %u is %lld, not 1..6", i, (long long)t);
            return ERR_TOKENIZER;
        }
        v->type[i] = (uint8_t)t;
        v->score[i] = scores ? (float)gguf_arr_get_f64(scores, i) : 0.0f;
        /* The first of duplicate texts wins, as in a dict built in order. */
        if (vocab_find(v, ts[i].s, ts[i].len) < 0) {
            uint32_t h = (uint32_t)hash_bytes(ts[i].s, ts[i].len) & v->hash_mask;
            while (v->hash[h])
                h = (h + 1) & v->hash_mask;
            v->hash[h] = i + 1;
        }
    }
    return 0;
}

static int load_merges(struct vocab *v, const struct gguf_file *f, char *err, size_t errlen)
{
    const struct gguf_value *m;
    int rc = gguf_get_arr(f, "tokenizer.ggml.merges", &m);
    if (rc) {
        set_err(err, errlen, "tokenizer.ggml.merges: %s", rc == -ENOENT ? "missing (a gpt2 tokenizer needs it)" : "not an array");
        return rc == -ENOENT ? ERR_TOKENIZER : rc;
    }
    if (m->arr.type != GGUF_VTYPE_STRING || m->arr.n >= (1u << 30)) {
        set_err(err, errlen, "tokenizer.ggml.merges: not an array of strings");
        return ERR_TOKENIZER;
    }
    uint64_t cap = 16;
    while (cap < m->arr.n * 2)
        cap <<= 1;
    v->merges = malloc(sizeof *v->merges * cap);
    if (!v->merges)
        return -ENOMEM;
    for (uint64_t i = 0; i < cap; i++)
        v->merges[i].key = UINT64_MAX;
    v->merge_mask = cap - 1;
    const struct gguf_str *ms = m->arr.data;
    char *buf = NULL;
    size_t buf_cap = 0;
    for (uint64_t i = 0; i < m->arr.n; i++) {
        const char *s = ms[i].s;
        size_t n = ms[i].len;
        const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
        if (!sp || sp + 1 == s + n) {
            set_err(err, errlen, "tokenizer.ggml.merges: entry %llu is not 'a b'", (unsigned long long)i);
            free(buf);
            return ERR_TOKENIZER;
        }
        size_t na = (size_t)(sp - s), nb = n - na - 1;
        int32_t a = vocab_find(v, s, na), b = vocab_find(v, sp + 1, nb);
        if (a < 0 || b < 0)
            continue;
        if (na + nb > buf_cap) {
            buf_cap = (na + nb) * 2;
            char *nbuf = realloc(buf, buf_cap);
            if (!nbuf) {
                free(buf);
                return -ENOMEM;
            }
            buf = nbuf;
        }
        memcpy(buf, s, na);
        memcpy(buf + na, sp + 1, nb);
        int32_t r = vocab_find(v, buf, na + nb);
        if (r < 0)
            continue;
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint64_t h = hash_u64(key) & v->merge_mask;
        while (v->merges[h].key != UINT64_MAX && v->merges[h].key != key)
            h = (h + 1) & v->merge_mask;
        if (v->merges[h].key == key)
            continue; /* the first (lowest) rank wins */
        v->merges[h].key = key;
        v->merges[h].rank = (int32_t)i;
        v->merges[h].id = r;
    }
    free(buf);
    return 0;
}

static bool is_special_type(uint8_t t)
{
    return t == VOCAB_TTYPE_CONTROL || t == VOCAB_TTYPE_USER_DEFINED || t == VOCAB_TTYPE_UNKNOWN;
}

static int spec_cmp(const void *pa, const void *pb, void *arg)
{
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    const struct vocab *v = arg;
    uint8_t fa = (uint8_t)tok_text(v, a)[0], fb = (uint8_t)tok_text(v, b)[0];
    if (fa != fb)
        return fa < fb ? -1 : 1;
    if (v->text_len[a] != v->text_len[b])
        return v->text_len[a] > v->text_len[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

/* Decoded bytes of every token, and the added-token list. */
static int build_pieces(struct vocab *v, char *err, size_t errlen)
{
    uint32_t *cp_of_byte = v->cp_of_byte;
    int16_t byte_of_cp[512];
    byte_unicode_table(cp_of_byte);
    for (int i = 0; i < 512; i++)
        byte_of_cp[i] = -1;
    for (int b = 0; b < 256; b++)
        byte_of_cp[cp_of_byte[b]] = (int16_t)b;

    size_t total = 0;
    for (uint32_t i = 0; i < v->n; i++)
        total += v->text_len[i] + 1;
    v->piece_arena = malloc(total);
    v->piece_off = malloc(sizeof(uint32_t) * v->n);
    v->piece_len = malloc(sizeof(uint32_t) * v->n);
    if (!v->piece_arena || !v->piece_off || !v->piece_len)
        return -ENOMEM;
    size_t off = 0;
    for (uint32_t i = 0; i < v->n; i++) {
        const uint8_t *s = (const uint8_t *)tok_text(v, (int32_t)i);
        uint32_t n = v->text_len[i], j = 0;
        char *o = v->piece_arena + off;
        size_t w = 0;
        uint8_t t = v->type[i];
        if (v->kind == VOCAB_KIND_SPM && t == VOCAB_TTYPE_BYTE && n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') {
            unsigned x;
            if (sscanf((const char *)s + 3, "%2x", &x) == 1)
                o[w++] = (char)x;
        } else if (is_special_type(t)) {
            memcpy(o, s, n);
            w = n;
        } else if (v->kind == VOCAB_KIND_BPE) {
            /* Byte-level text back to bytes; anything outside the table (not
             * in a real vocabulary) is kept as it is. */
            while (j < n) {
                int l = utf8_len(s[j]);
                if (j + (uint32_t)l > n)
                    l = 1;
                uint32_t cp = s[j];
                if (l > 1)
                    utf8_get(s + j, &cp);
                if (cp < 512 && byte_of_cp[cp] >= 0)
                    o[w++] = (char)byte_of_cp[cp];
                else {
                    memcpy(o + w, s + j, (size_t)l);
                    w += (size_t)l;
                }
                j += (uint32_t)l;
            }
        } else {
            /* U+2581 (3 bytes) becomes one space. */
            while (j < n) {
                if (j + 3 <= n && s[j] == 0xE2 && s[j + 1] == 0x96 && s[j + 2] == 0x81) {
                    o[w++] = ' ';
                    j += 3;
                } else {
                    o[w++] = (char)s[j++];
                }
            }
        }
        v->piece_off[i] = (uint32_t)off;
        v->piece_len[i] = (uint32_t)w;
        if (w > v->max_piece)
            v->max_piece = w;
        off += w + 1;
    }

    for (int b = 0; b < 256; b++)
        v->byte_id[b] = -1;
    if (v->kind == VOCAB_KIND_BPE) {
        for (int b = 0; b < 256; b++) {
            char tmp[4];
            int l = utf8_put(tmp, cp_of_byte[b]);
            v->byte_id[b] = vocab_find(v, tmp, (size_t)l);
            if (v->byte_id[b] < 0) {
                set_err(err, errlen, "tokenizer.ggml.tokens: no token for byte 0x%02X (a byte-level BPE vocabulary has all 256)", b);
                return ERR_TOKENIZER;
            }
        }
    } else {
        for (int b = 0; b < 256; b++) {
            char tmp[8];
            snprintf(tmp, sizeof tmp, "<0x%02X>", b);
            int32_t id = vocab_find(v, tmp, 6);
            if (id >= 0 && v->type[id] == VOCAB_TTYPE_BYTE)
                v->byte_id[b] = id;
        }
    }

    v->n_spec = 0;
    for (uint32_t i = 0; i < v->n; i++)
        if (is_special_type(v->type[i]) && v->text_len[i] > 0)
            v->n_spec++;
    v->spec = malloc(sizeof(int32_t) * (v->n_spec + 1));
    if (!v->spec)
        return -ENOMEM;
    uint32_t k = 0;
    for (uint32_t i = 0; i < v->n; i++)
        if (is_special_type(v->type[i]) && v->text_len[i] > 0)
            v->spec[k++] = (int32_t)i;
    qsort_r(v->spec, v->n_spec, sizeof(int32_t), spec_cmp, v);
    k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < v->n_spec && (uint8_t)tok_text(v, v->spec[k])[0] < b)
            k++;
        v->spec_first[b] = b == 256 ? v->n_spec : k;
    }
    return 0;
}

int vocab_init_gguf(struct vocab **out, const struct gguf_file *f, char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen)
        err[0] = 0;
    struct vocab *v = calloc(1, sizeof *v);
    if (!v)
        return -ENOMEM;
    const char *model = NULL, *pre = NULL;
    int rc = gguf_get_str(f, "tokenizer.ggml.model", &model);
    if (rc) {
        set_err(err, errlen, "tokenizer.ggml.model: %s", rc == -ENOENT ? "missing" : "not a string");
        rc = rc == -ENOENT ? ERR_TOKENIZER : rc;
        goto fail;
    }
    if (strcmp(model, "gpt2") == 0) {
        v->kind = VOCAB_KIND_BPE;
    } else if (strcmp(model, "llama") == 0) {
        v->kind = VOCAB_KIND_SPM;
    } else {
        set_err(err, errlen, "tokenizer.ggml.model: '%s' is not supported (gpt2, llama)", model);
        rc = ERR_TOKENIZER;
        goto fail;
    }
    rc = gguf_get_str(f, "tokenizer.ggml.pre", &pre);
    if (rc && rc != -ENOENT) {
        set_err(err, errlen, "tokenizer.ggml.pre: not a string");
        goto fail;
    }
    v->pre = strdup(rc == 0 ? pre : "default");
    if (!v->pre) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = load_tokens(v, f, err, errlen)) != 0)
        goto fail;
    int32_t n = (int32_t)v->n;
    if ((rc = get_opt_id(f, "tokenizer.ggml.bos_token_id", n, &v->sp.bos, err, errlen)) ||
        (rc = get_opt_id(f, "tokenizer.ggml.eos_token_id", n, &v->sp.eos, err, errlen)) ||
        (rc = get_opt_id(f, "tokenizer.ggml.eot_token_id", n, &v->sp.eot, err, errlen)) ||
        (rc = get_opt_id(f, "tokenizer.ggml.unknown_token_id", n, &v->sp.unk, err, errlen)) ||
        (rc = get_opt_id(f, "tokenizer.ggml.padding_token_id", n, &v->sp.pad, err, errlen)))
        goto fail;
    /* Defaults as llama.cpp: SentencePiece models add BOS unless told not to. */
    bool spm = v->kind == VOCAB_KIND_SPM;
    if ((rc = get_opt_bool(f, "tokenizer.ggml.add_bos_token", spm, &v->sp.add_bos, err, errlen)) ||
        (rc = get_opt_bool(f, "tokenizer.ggml.add_eos_token", false, &v->sp.add_eos, err, errlen)) ||
        (rc = get_opt_bool(f, "tokenizer.ggml.add_space_prefix", spm, &v->add_space_prefix, err, errlen)))
        goto fail;
    if (v->sp.add_bos && v->sp.bos < 0) {
        set_err(err, errlen, "tokenizer.ggml.add_bos_token: true but tokenizer.ggml.bos_token_id is missing");
        rc = ERR_TOKENIZER;
        goto fail;
    }
    if (v->sp.add_eos && v->sp.eos < 0) {
        set_err(err, errlen, "tokenizer.ggml.add_eos_token: true but tokenizer.ggml.eos_token_id is missing");
        rc = ERR_TOKENIZER;
        goto fail;
    }
    if (v->kind == VOCAB_KIND_BPE) {
        if ((rc = load_merges(v, f, err, errlen)) != 0)
            goto fail;
        if ((rc = compile_regexes(v, err, errlen)) != 0)
            goto fail;
    } else if (v->sp.unk < 0) {
        /* Not fatal: byte fallback covers every character of Llama 2. */
        v->sp.unk = vocab_find(v, "<unk>", 5);
    }
    if ((rc = build_pieces(v, err, errlen)) != 0)
        goto fail;
    *out = v;
    return 0;
fail:
    if (rc == -ENOMEM)
        set_err(err, errlen, "tokenizer: out of memory");
    vocab_free(v);
    return rc;
}

void vocab_free(struct vocab *v)
{
    if (!v)
        return;
    for (int i = 0; i < v->n_re; i++)
        pcre2_code_free(v->re[i]);
    free(v->pre);
    free(v->text_arena);
    free(v->text_off);
    free(v->text_len);
    free(v->piece_arena);
    free(v->piece_off);
    free(v->piece_len);
    free(v->score);
    free(v->type);
    free(v->hash);
    free(v->merges);
    free(v->spec);
    free(v);
}

enum vocab_kind vocab_kind(const struct vocab *v) { return v->kind; }
uint32_t vocab_n_tokens(const struct vocab *v) { return v->n; }
const struct vocab_special *vocab_special(const struct vocab *v) { return &v->sp; }
const char *vocab_pre(const struct vocab *v) { return v->pre; }
bool vocab_nfc(const struct vocab *v) { return v->nfc; }

const char *vocab_token_text(const struct vocab *v, int32_t id)
{
    return id >= 0 && (uint32_t)id < v->n ? tok_text(v, id) : NULL;
}

enum vocab_ttype vocab_token_type(const struct vocab *v, int32_t id)
{
    return id >= 0 && (uint32_t)id < v->n ? (enum vocab_ttype)v->type[id] : (enum vocab_ttype)0;
}

bool vocab_is_eog(const struct vocab *v, int32_t id)
{
    return id >= 0 && (id == v->sp.eos || id == v->sp.eot);
}

/* ---- encode: shared ---- */

struct vocab_encode_opts vocab_encode_opts_default(void)
{
    struct vocab_encode_opts o = {.add_special = true, .parse_special = true};
    return o;
}

void vocab_tokens_free(struct vocab_tokens *t)
{
    if (!t)
        return;
    free(t->ids);
    t->ids = NULL;
    t->n = t->cap = 0;
}

static int tokens_push(struct vocab_tokens *t, int32_t id)
{
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        int32_t *p = realloc(t->ids, nc * sizeof(int32_t));
        if (!p)
            return -ENOMEM;
        t->ids = p;
        t->cap = nc;
    }
    t->ids[t->n++] = id;
    return 0;
}

/* Per-call working memory. */
struct enc_ctx {
    const struct vocab *v;
    struct vocab_tokens *out;
    /* symbols of the word being merged */
    int32_t *sym_id;
    int32_t *sym_prev, *sym_next;
    uint32_t *sym_start, *sym_len;
    size_t sym_cap;
    /* BPE heap of rank << 32 | left */
    uint64_t *heap;
    size_t heap_n, heap_cap;
    /* SPM heap */
    struct spm_pair *sheap;
    size_t sheap_n, sheap_cap;
    char *buf;            /* SPM normalized text / ignore_merges key */
    size_t buf_cap;
    pcre2_match_data *md[MAX_REGEX];
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
};

struct spm_pair {
    float score;
    int32_t left, right;
    uint32_t size;
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = nc;
    return 0;
}

static int sym_reserve(struct enc_ctx *c, size_t n)
{
    if (n <= c->sym_cap)
        return 0;
    size_t nc = c->sym_cap ? c->sym_cap : 64;
    while (nc < n)
        nc *= 2;
    int32_t *a = realloc(c->sym_id, nc * sizeof(int32_t));
    if (a)
        c->sym_id = a;
    int32_t *b = realloc(c->sym_prev, nc * sizeof(int32_t));
    if (b)
        c->sym_prev = b;
    int32_t *d = realloc(c->sym_next, nc * sizeof(int32_t));
    if (d)
        c->sym_next = d;
    uint32_t *e = realloc(c->sym_start, nc * sizeof(uint32_t));
    if (e)
        c->sym_start = e;
    uint32_t *g = realloc(c->sym_len, nc * sizeof(uint32_t));
    if (g)
        c->sym_len = g;
    if (!a || !b || !d || !e || !g)
        return -ENOMEM;
    c->sym_cap = nc;
    return 0;
}

static void enc_ctx_free(struct enc_ctx *c)
{
    free(c->sym_id);
    free(c->sym_prev);
    free(c->sym_next);
    free(c->sym_start);
    free(c->sym_len);
    free(c->heap);
    free(c->sheap);
    free(c->buf);
    for (int i = 0; i < MAX_REGEX; i++)
        pcre2_match_data_free(c->md[i]);
    pcre2_match_context_free(c->mctx);
    if (c->jit)
        pcre2_jit_stack_free(c->jit);
}

/* ---- encode: byte-level BPE ---- */

static void heap_push(struct enc_ctx *c, uint64_t x)
{
    uint64_t *h = c->heap;
    size_t i = c->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= x)
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static uint64_t heap_pop(struct enc_ctx *c)
{
    uint64_t *h = c->heap;
    uint64_t top = h[0], x = h[--c->heap_n];
    size_t i = 0, n = c->heap_n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n)
            break;
        if (l + 1 < n && h[l + 1] < h[l])
            l++;
        if (h[l] >= x)
            break;
        h[i] = h[l];
        i = l;
    }
    h[i] = x;
    return top;
}

static void bpe_try_pair(struct enc_ctx *c, int32_t left)
{
    int32_t right = c->sym_next[left];
    if (right < 0)
        return;
    const struct merge_ent *m = merge_find(c->v, c->sym_id[left], c->sym_id[right]);
    if (m)
        heap_push(c, (uint64_t)(uint32_t)m->rank << 32 | (uint32_t)left);
}

/* Merges the bytes of one pre-tokenized word and appends its ids.
 * Hot: runs once per word of the input. */
static int bpe_word(struct enc_ctx *c, const uint8_t *w, size_t n)
{
    const struct vocab *v = c->v;
    if (n == 1)
        return tokens_push(c->out, v->byte_id[w[0]]);
    if (v->ignore_merges) {
        /* The word in GGUF (byte-level unicode) form, looked up whole. */
        if (grow((void **)&c->buf, &c->buf_cap, n * 2 + 1, 1))
            return -ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += (size_t)utf8_put(c->buf + k, v->cp_of_byte[w[i]]);
        int32_t id = vocab_find(v, c->buf, k);
        if (id >= 0)
            return tokens_push(c->out, id);
    }
    if (sym_reserve(c, n) || grow((void **)&c->heap, &c->heap_cap, n * 2 + 8, sizeof(uint64_t)))
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        c->sym_id[i] = v->byte_id[w[i]];
        c->sym_prev[i] = (int32_t)i - 1;
        c->sym_next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    c->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        bpe_try_pair(c, (int32_t)i);
    while (c->heap_n) {
        uint64_t top = heap_pop(c);
        int32_t left = (int32_t)(uint32_t)top, rank = (int32_t)(top >> 32);
        if (c->sym_id[left] < 0)
            continue; /* merged into its left neighbour */
        int32_t right = c->sym_next[left];
        if (right < 0)
            continue;
        const struct merge_ent *m = merge_find(v, c->sym_id[left], c->sym_id[right]);
        if (!m || m->rank != rank)
            continue; /* stale: a neighbour changed since it was queued */
        c->sym_id[left] = m->id;
        c->sym_id[right] = -1;
        int32_t nn = c->sym_next[right];
        c->sym_next[left] = nn;
        if (nn >= 0)
            c->sym_prev[nn] = left;
        /* The heap can hold at most two new pairs per merge. */
        if (grow((void **)&c->heap, &c->heap_cap, c->heap_n + 2, sizeof(uint64_t)))
            return -ENOMEM;
        if (c->sym_prev[left] >= 0)
            bpe_try_pair(c, c->sym_prev[left]);
        bpe_try_pair(c, left);
    }
    for (int32_t i = 0; i >= 0; i = c->sym_next[i])
        if (tokens_push(c->out, c->sym_id[i]))
            return -ENOMEM;
    return 0;
}

/* Splits s[0..n) with regex level and hands each piece (match or the text
 * between matches) to the next level; after the last level, to BPE. */
static int pretok(struct enc_ctx *c, int level, const char *s, size_t n)
{
    const struct vocab *v = c->v;
    if (n == 0)
        return 0;
    if (level == v->n_re)
        return bpe_word(c, (const uint8_t *)s, n);
    pcre2_code *re = v->re[level];
    pcre2_match_data *md = c->md[level];
    size_t pos = 0, last = 0;
    while (pos < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, c->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return ERR_TOKENIZER;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) {
            /* Empty match (none of the built-in regexes has one): step over
             * one character, as JavaScript's matchAll does. */
            pos = ms + (size_t)utf8_len((uint8_t)s[ms]);
            continue;
        }
        int r2;
        if (ms > last && (r2 = pretok(c, level + 1, s + last, ms - last)) != 0)
            return r2;
        if ((r2 = pretok(c, level + 1, s + ms, me - ms)) != 0)
            return r2;
        last = pos = me;
    }
    return last < n ? pretok(c, level + 1, s + last, n - last) : 0;
}

static int bpe_fragment(struct enc_ctx *c, const char *s, size_t n)
{
    const struct vocab *v = c->v;
    if (v->nfc) {
        size_t i = 0;
        while (i < n && (uint8_t)s[i] < 0x80)
            i++;
        if (i < n) {
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (m < 0)
                return m == UTF8PROC_ERROR_NOMEM ? -ENOMEM : ERR_TOKENIZER;
            int rc = pretok(c, 0, (const char *)dst, (size_t)m);
            free(dst);
            return rc;
        }
    }
    return pretok(c, 0, s, n);
}

/* ---- encode: SentencePiece BPE ---- */

static bool spm_before(const struct spm_pair *a, const struct spm_pair *b)
{
    /* Higher score first; on a tie the leftmost pair, as sentencepiece. */
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void sheap_push(struct enc_ctx *c, struct spm_pair x)
{
    struct spm_pair *h = c->sheap;
    size_t i = c->sheap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!spm_before(&x, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static struct spm_pair sheap_pop(struct enc_ctx *c)
{
    struct spm_pair *h = c->sheap;
    struct spm_pair top = h[0], x = h[--c->sheap_n];
    size_t i = 0, n = c->sheap_n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n)
            break;
        if (l + 1 < n && spm_before(&h[l + 1], &h[l]))
            l++;
        if (!spm_before(&h[l], &x))
            break;
        h[i] = h[l];
        i = l;
    }
    h[i] = x;
    return top;
}

/* A piece of the normalized text that merging may produce: only NORMAL and
 * USER_DEFINED pieces (sentencepiece keeps control, unknown and byte pieces
 * out of its merge table). */
static int32_t spm_piece(const struct vocab *v, const char *s, size_t n)
{
    int32_t id = vocab_find(v, s, n);
    if (id >= 0 && v->type[id] != VOCAB_TTYPE_NORMAL && v->type[id] != VOCAB_TTYPE_USER_DEFINED)
        return -1;
    return id;
}

static int spm_try_pair(struct enc_ctx *c, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return 0;
    uint32_t size = c->sym_len[left] + c->sym_len[right];
    int32_t id = spm_piece(c->v, c->buf + c->sym_start[left], size);
    if (id < 0)
        return 0;
    if (grow((void **)&c->sheap, &c->sheap_cap, c->sheap_n + 1, sizeof(struct spm_pair)))
        return -ENOMEM;
    struct spm_pair p = {.score = c->v->score[id], .left = left, .right = right, .size = size};
    sheap_push(c, p);
    return 0;
}

static int spm_fragment(struct enc_ctx *c, const char *s, size_t n)
{
    const struct vocab *v = c->v;
    /* Normalize: dummy prefix, spaces to U+2581. */
    size_t spaces = 0;
    for (size_t i = 0; i < n; i++)
        spaces += s[i] == ' ';
    size_t m = n + spaces * 2 + (v->add_space_prefix ? 3 : 0);
    if (grow((void **)&c->buf, &c->buf_cap, m + 1, 1))
        return -ENOMEM;
    char *b = c->buf;
    size_t k = 0;
    if (v->add_space_prefix) {
        memcpy(b, "\xE2\x96\x81", 3);
        k = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(b + k, "\xE2\x96\x81", 3);
            k += 3;
        } else {
            b[k++] = s[i];
        }
    }
    if (sym_reserve(c, m))
        return -ENOMEM;
    int32_t ns = 0;
    for (size_t i = 0; i < m;) {
        int l = utf8_len((uint8_t)b[i]);
        c->sym_start[ns] = (uint32_t)i;
        c->sym_len[ns] = (uint32_t)l;
        c->sym_prev[ns] = ns - 1;
        c->sym_next[ns] = i + (size_t)l < m ? ns + 1 : -1;
        ns++;
        i += (size_t)l;
    }
    c->sheap_n = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (spm_try_pair(c, i, i + 1))
            return -ENOMEM;
    while (c->sheap_n) {
        struct spm_pair p = sheap_pop(c);
        /* Stale when either side was merged away or grew since. */
        if (c->sym_len[p.left] == 0 || c->sym_len[p.right] == 0 ||
            c->sym_len[p.left] + c->sym_len[p.right] != p.size || c->sym_next[p.left] != p.right)
            continue;
        c->sym_len[p.left] += c->sym_len[p.right];
        c->sym_len[p.right] = 0;
        int32_t nn = c->sym_next[p.right];
        c->sym_next[p.left] = nn;
        if (nn >= 0)
            c->sym_prev[nn] = p.left;
        if (spm_try_pair(c, c->sym_prev[p.left], p.left) || spm_try_pair(c, p.left, nn))
            return -ENOMEM;
    }
    for (int32_t i = 0; i >= 0 && ns > 0; i = c->sym_next[i]) {
        const char *ps = b + c->sym_start[i];
        uint32_t pl = c->sym_len[i];
        int32_t id = vocab_find(v, ps, pl);
        if (id >= 0 && v->type[id] != VOCAB_TTYPE_BYTE) {
            if (tokens_push(c->out, id))
                return -ENOMEM;
            continue;
        }
        /* Byte fallback, or the unknown token when the model has no bytes. */
        bool bytes = true;
        for (uint32_t j = 0; j < pl; j++)
            bytes = bytes && v->byte_id[(uint8_t)ps[j]] >= 0;
        if (bytes) {
            for (uint32_t j = 0; j < pl; j++)
                if (tokens_push(c->out, v->byte_id[(uint8_t)ps[j]]))
                    return -ENOMEM;
        } else if (v->sp.unk >= 0) {
            if (tokens_push(c->out, v->sp.unk))
                return -ENOMEM;
        }
    }
    return 0;
}

/* ---- encode: entry ---- */

/* Finds the leftmost added token at or after pos; returns its start and sets
 * *id, or returns n when none. */
static size_t find_special(const struct vocab *v, const char *s, size_t n, size_t pos, int32_t *id)
{
    for (size_t i = pos; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        uint32_t lo = v->spec_first[b], hi = v->spec_first[b + 1];
        for (uint32_t k = lo; k < hi; k++) {
            int32_t t = v->spec[k];
            uint32_t l = v->text_len[t];
            if (l <= n - i && memcmp(s + i, tok_text(v, t), l) == 0) {
                *id = t; /* the bucket is sorted longest first */
                return i;
            }
        }
    }
    return n;
}

static int encode_fragment(struct enc_ctx *c, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    return c->v->kind == VOCAB_KIND_BPE ? bpe_fragment(c, s, n) : spm_fragment(c, s, n);
}

int vocab_encode(const struct vocab *v, const char *text, size_t len,
                 const struct vocab_encode_opts *o, struct vocab_tokens *out)
{
    struct vocab_encode_opts def = vocab_encode_opts_default();
    if (!o)
        o = &def;
    size_t n0 = out->n;
    char *fixed = NULL;
    size_t fixed_len = 0;
    int rc = vocab_utf8_sanitize(text, len, &fixed, &fixed_len);
    if (rc)
        return rc;
    if (fixed) {
        text = fixed;
        len = fixed_len;
    }
    struct enc_ctx c = {.v = v, .out = out};
    if (v->n_re) {
        c.mctx = pcre2_match_context_create(NULL);
        c.jit = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
        if (!c.mctx || !c.jit) {
            rc = -ENOMEM;
            goto done;
        }
        pcre2_jit_stack_assign(c.mctx, NULL, c.jit);
        for (int i = 0; i < v->n_re; i++)
            if (!(c.md[i] = pcre2_match_data_create_from_pattern(v->re[i], NULL))) {
                rc = -ENOMEM;
                goto done;
            }
    }
    if (o->add_special && v->sp.add_bos && (rc = tokens_push(out, v->sp.bos)) != 0)
        goto done;
    size_t pos = 0;
    while (pos < len) {
        int32_t id = -1;
        size_t at = o->parse_special && v->n_spec ? find_special(v, text, len, pos, &id) : len;
        if ((rc = encode_fragment(&c, text + pos, at - pos)) != 0)
            goto done;
        if (at == len)
            break;
        if ((rc = tokens_push(out, id)) != 0)
            goto done;
        pos = at + v->text_len[id];
    }
    if (o->add_special && v->sp.add_eos)
        rc = tokens_push(out, v->sp.eos);
done:
    enc_ctx_free(&c);
    free(fixed);
    if (rc)
        out->n = n0;
    return rc;
}

/* ---- decode ---- */

void vocab_detok_init(struct vocab_detok *d, const struct vocab *v, const struct vocab_detok_opts *o)
{
    memset(d, 0, sizeof *d);
    d->v = v;
    if (o)
        d->o = *o;
    d->at_start = true;
}

size_t vocab_detok_bound(const struct vocab *v)
{
    /* Every byte may become a 3-byte U+FFFD, held-back bytes included. */
    return 3 * (v->max_piece + 4) + 4;
}

int vocab_detok_push(struct vocab_detok *d, int32_t token, char *out, size_t cap)
{
    const struct vocab *v = d->v;
    if (token < 0 || (uint32_t)token >= v->n)
        return ERR_INVALID;
    if (cap < vocab_detok_bound(v))
        return -ENOBUFS;
    uint8_t t = v->type[token];
    if ((t == VOCAB_TTYPE_CONTROL || t == VOCAB_TTYPE_UNKNOWN) && !d->o.show_special)
        return 0;
    const uint8_t *p = (const uint8_t *)v->piece_arena + v->piece_off[token];
    uint32_t n = v->piece_len[token];
    if (n == 0)
        return 0;
    if (d->at_start) {
        d->at_start = false;
        if (d->o.strip_lead_space && v->kind == VOCAB_KIND_SPM && p[0] == ' ' && !is_special_type(t)) {
            p++;
            n--;
        }
    }
    struct u8dec u;
    memcpy(u.pend, d->pend, 4);
    u.n_pend = d->n_pend, u.need = d->need, u.lo = d->lo, u.hi = d->hi;
    size_t w = 0;
    for (uint32_t i = 0; i < n; i++)
        w += (size_t)u8dec_byte(&u, p[i], out + w);
    memcpy(d->pend, u.pend, 4);
    d->n_pend = u.n_pend, d->need = u.need, d->lo = u.lo, d->hi = u.hi;
    return (int)w;
}

int vocab_detok_flush(struct vocab_detok *d, char *out, size_t cap)
{
    if (!d->need)
        return 0;
    if (cap < 3)
        return -ENOBUFS;
    memcpy(out, k_fffd, 3);
    d->need = 0;
    d->n_pend = 0;
    return 3;
}

int vocab_decode(const struct vocab *v, const int32_t *ids, size_t n,
                 const struct vocab_detok_opts *o, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    struct vocab_detok d;
    vocab_detok_init(&d, v, o);
    size_t bound = vocab_detok_bound(v), cap = bound * 2 + 64, w = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (size_t i = 0; i <= n; i++) {
        if (cap - w < bound + 1) {
            cap = cap * 2 + bound;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return -ENOMEM;
            }
            buf = nb;
        }
        int r = i < n ? vocab_detok_push(&d, ids[i], buf + w, cap - w) : vocab_detok_flush(&d, buf + w, cap - w);
        if (r < 0) {
            free(buf);
            return r;
        }
        w += (size_t)r;
    }
    buf[w] = 0;
    *out = buf;
    *len = w;
    return 0;
}
