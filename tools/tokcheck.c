/* SPDX-License-Identifier: MIT */
/*
 * tokcheck.c - drives engine/vocab.c over a corpus for the tokenizer oracle
 * test (tests/test_tokenizer_oracle.sh), and measures its speed.
 *
 *   tokcheck [--no-bos] MODEL.gguf CORPUS.jsonl
 *                                       one JSON array of ids per corpus line
 *                                       on stdout (add_special, parse_special:
 *                                       what a server request gets; --no-bos:
 *                                       without add_special); round-trip
 *                                       failures on stderr; exit 1 if any
 *   tokcheck --bench MODEL.gguf [MB [TEXT_OUT]]  tokenization speed on MB (default 4);
 *                                     TEXT_OUT receives the text, for other tokenizers
 *                                       of mixed English, code and CJK text
 *
 * A corpus line is a JSON string, or {"b64": "..."} for bytes that are not
 * valid UTF-8. Round trip: for every valid string s, the ids of s encoded as
 * plain text (no added tokens, no BOS) decode back to s (NFC(s) when the
 * tokenizer normalizes); for byte-level BPE also the ids with added tokens
 * parsed, decoded with them shown.
 */
#include "common/err.h"
#include "engine/gguf.h"
#include "engine/vocab.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

static int b64_val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes base64 into a new buffer; returns its length or -1. */
static long b64_decode(const char *s, char **out)
{
    size_t n = strlen(s);
    char *o = malloc(n + 1);
    if (!o)
        return -1;
    long w = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=')
            break;
        int v = b64_val((unsigned char)s[i]);
        if (v < 0) {
            free(o);
            return -1;
        }
        acc = acc << 6 | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[w++] = (char)((acc >> bits) & 0xFF);
        }
    }
    *out = o;
    return w;
}

static void print_ids(const struct vocab_tokens *t)
{
    putchar('[');
    for (size_t i = 0; i < t->n; i++)
        printf(i ? ",%d" : "%d", t->ids[i]);
    puts("]");
}

static bool has_special(const struct vocab *v, const struct vocab_tokens *t)
{
    for (size_t i = 0; i < t->n; i++) {
        enum vocab_ttype ty = vocab_token_type(v, t->ids[i]);
        if (ty == VOCAB_TTYPE_CONTROL || ty == VOCAB_TTYPE_USER_DEFINED || ty == VOCAB_TTYPE_UNKNOWN)
            return true;
    }
    return false;
}

/* Compares decode(ids) with want; prints and returns false on a mismatch. */
static bool check_rt(const struct vocab *v, int line, const char *what, const int32_t *ids, size_t n,
                     bool show_special, const char *want, size_t want_len)
{
    struct vocab_detok_opts o = {.show_special = show_special, .strip_lead_space = true};
    char *got;
    size_t got_len;
    int rc = vocab_decode(v, ids, n, &o, &got, &got_len);
    if (rc) {
        fprintf(stderr, "line %d: %s: decode failed: %s\n", line, what, err_name(rc));
        return false;
    }
    bool ok = got_len == want_len && memcmp(got, want, want_len) == 0;
    if (!ok)
        fprintf(stderr, "line %d: %s: round trip gave %zu bytes \"%.*s\", want %zu \"%.*s\"\n", line,
                what, got_len, (int)(got_len > 200 ? 200 : got_len), got, want_len,
                (int)(want_len > 200 ? 200 : want_len), want);
    free(got);
    return ok;
}

static int run_corpus(const struct vocab *v, const char *path, bool no_bos)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 2;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rt_ok = 0, rt_bad = 0;
    struct vocab_tokens t = {0}, plain = {0};
    const struct vocab_special *sp = vocab_special(v);
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
        char *text = NULL;
        long n = -1;
        bool valid = false;
        if (cJSON_IsString(j)) {
            /* cJSON keeps the decoded string NUL-terminated; \u0000 is not
             * in the corpus. */
            text = strdup(j->valuestring);
            n = text ? (long)strlen(text) : -1;
            valid = true;
        } else if (cJSON_IsObject(j) && cJSON_IsString(cJSON_GetObjectItem(j, "b64"))) {
            n = b64_decode(cJSON_GetObjectItem(j, "b64")->valuestring, &text);
        }
        cJSON_Delete(j);
        if (n < 0) {
            fprintf(stderr, "%s:%d: not a JSON string or {\"b64\": ...}\n", path, lineno);
            free(line);
            fclose(f);
            return 2;
        }
        t.n = 0;
        struct vocab_encode_opts eo = {.add_special = !no_bos, .parse_special = true};
        int rc = vocab_encode(v, text, (size_t)n, &eo, &t);
        if (rc) {
            fprintf(stderr, "line %d: encode failed: %s\n", lineno, err_name(rc));
            t.n = 0;
        }
        print_ids(&t);
        if (valid) {
            char *want = text;
            size_t want_len = (size_t)n;
            char *nfc = NULL;
            if (vocab_nfc(v) && n > 0) {
                utf8proc_uint8_t *d = NULL;
                utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)text, n, &d,
                                                  UTF8PROC_STABLE | UTF8PROC_COMPOSE);
                if (m >= 0) {
                    nfc = (char *)d;
                    want = nfc;
                    want_len = (size_t)m;
                }
            }
            struct vocab_encode_opts po = {.add_special = false, .parse_special = false};
            plain.n = 0;
            bool ok = vocab_encode(v, text, (size_t)n, &po, &plain) == 0 &&
                      check_rt(v, lineno, "plain", plain.ids, plain.n, false, want, want_len);
            size_t skip = !no_bos && t.n && sp->add_bos && t.ids[0] == sp->bos ? 1 : 0;
            if (vocab_kind(v) == VOCAB_KIND_BPE) {
                ok = check_rt(v, lineno, "special", t.ids + skip, t.n - skip, true, want, want_len) && ok;
            } else if (!has_special(v, &(struct vocab_tokens){t.ids + skip, t.n - skip, 0})) {
                ok = check_rt(v, lineno, "default", t.ids + skip, t.n - skip, false, want, want_len) && ok;
            }
            ok ? rt_ok++ : rt_bad++;
            free(nfc);
        }
        free(text);
    }
    free(line);
    fclose(f);
    vocab_tokens_free(&t);
    vocab_tokens_free(&plain);
    fprintf(stderr, "round trip: %d passed, %d failed\n", rt_ok, rt_bad);
    return rt_bad ? 1 : 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *const k_bench_parts[] = {
    "The committee met on Tuesday to discuss the budget for the coming year. Members agreed that "
    "spending on infrastructure should rise, although several of them warned that the revenue "
    "forecasts were optimistic. \"We can't plan on money we don't have,\" one of them said.\n\n",
    "static int parse_header(const uint8_t *buf, size_t len, struct header *h)\n{\n"
    "    if (len < 16)\n        return -EINVAL;\n    h->magic = read_u32(buf);\n"
    "    for (size_t i = 0; i < h->n_fields; i++) {\n        h->fields[i] = buf[8 + i] & 0x7f;\n    }\n"
    "    return 0;\n}\n\n",
    "def tokenize(text: str) -> list[int]:\n    ids = []\n    for word in re.findall(r\"\\w+|\\S\", text):\n"
    "        ids.extend(vocab.get(word, [UNK]))\n    return ids\n\n",
    "机器学习是人工智能的一个分支，它使计算机能够在没有明确编程的情况下从数据中学习。"
    "近年来，大型语言模型在自然语言处理任务中取得了显著进展。東京は日本の首都です。\n\n",
    "In 2023, revenue grew 14.7% to $3,482,915, while costs fell by 2.1 percent; see table 12.\n\n",
};

static int run_bench(const struct vocab *v, double mb, const char *dump)
{
    size_t want = (size_t)(mb * 1024 * 1024), n = 0, cap = want + 4096;
    char *text = malloc(cap);
    if (!text)
        return 2;
    unsigned k = 0;
    while (n < want) {
        const char *p = k_bench_parts[k % (sizeof k_bench_parts / sizeof *k_bench_parts)];
        size_t l = strlen(p);
        if (n + l + 32 > cap)
            break;
        memcpy(text + n, p, l);
        n += l;
        /* A changing number keeps the text from being one repeated block. */
        n += (size_t)snprintf(text + n, cap - n, "Item %u, ref %u.\n", k, k * 7919u % 100003u);
        k++;
    }
    if (dump) { /* the same text for other tokenizers (llama-tokenize -f) */
        FILE *f = fopen(dump, "wb");
        if (!f || fwrite(text, 1, n, f) != n || fclose(f) != 0) {
            fprintf(stderr, "tokcheck: %s: cannot write\n", dump);
            free(text);
            return 2;
        }
    }
    struct vocab_tokens t = {0};
    double best_whole = 1e9, best_chunk = 1e9;
    size_t n_tok = 0;
    for (int rep = 0; rep < 3; rep++) {
        t.n = 0;
        double t0 = now_s();
        if (vocab_encode(v, text, n, NULL, &t))
            return 2;
        double dt = now_s() - t0;
        best_whole = dt < best_whole ? dt : best_whole;
        n_tok = t.n;
        /* Request-sized pieces (4 KiB), each its own call. */
        t0 = now_s();
        for (size_t off = 0; off < n;) {
            t.n = 0;
            size_t l = n - off < 4096 ? n - off : 4096;
            /* Cut at a character boundary. */
            while (off + l < n && ((uint8_t)text[off + l] & 0xC0) == 0x80)
                l++;
            if (vocab_encode(v, text + off, l, NULL, &t))
                return 2;
            off += l;
        }
        dt = now_s() - t0;
        best_chunk = dt < best_chunk ? dt : best_chunk;
    }
    double mbs = (double)n / (1024.0 * 1024.0);
    printf("%s (%s): %.2f MiB, %zu tokens (%.2f bytes/token): %.1f MiB/s in one call, %.1f MiB/s in 4 KiB calls\n",
           vocab_kind(v) == VOCAB_KIND_BPE ? "bpe" : "spm", vocab_pre(v), mbs, n_tok,
           (double)n / (double)n_tok, mbs / best_whole, mbs / best_chunk);
    vocab_tokens_free(&t);
    free(text);
    return 0;
}

int main(int argc, char **argv)
{
    bool bench = argc >= 3 && strcmp(argv[1], "--bench") == 0;
    bool no_bos = argc >= 2 && strcmp(argv[1], "--no-bos") == 0;
    if (no_bos) {
        argv++;
        argc--;
    }
    if (!bench && argc != 3) {
        fprintf(stderr, "usage: tokcheck [--no-bos] MODEL.gguf CORPUS.jsonl\n       tokcheck --bench MODEL.gguf [MB [TEXT_OUT]]\n");
        return 2;
    }
    const char *model = bench ? argv[2] : argv[1];
    char err[256];
    struct gguf_file *g;
    int rc = gguf_open(&g, model, err, sizeof err);
    if (rc) {
        fprintf(stderr, "tokcheck: %s\n", err);
        return 2;
    }
    struct vocab *v;
    rc = vocab_init_gguf(&v, g, err, sizeof err);
    gguf_close(g);
    if (rc) {
        fprintf(stderr, "tokcheck: %s: %s\n", model, err);
        return 2;
    }
    rc = bench ? run_bench(v, argc > 3 ? atof(argv[3]) : 4.0, argc > 4 ? argv[4] : NULL)
               : run_corpus(v, argv[2], no_bos);
    vocab_free(v);
    return rc;
}
