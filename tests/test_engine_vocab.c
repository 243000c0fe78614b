/* SPDX-License-Identifier: MIT */
/*
 * test_engine_vocab.c - engine/vocab.c: tokenizers read from GGUF metadata.
 *
 * The real vocabularies (Qwen3 byte-level BPE and Llama-2 SentencePiece, in
 * the models tests/make_models.sh writes) are checked on hand-picked cases
 * whose ids come from the reference tokenizers; the whole-corpus comparison
 * with the references is tests/test_tokenizer_oracle.sh. Those tests skip
 * when the models are absent. Small GGUF files written here check that bad
 * metadata gives an error naming the key, and a synthetic vocabulary
 * (tools/vocab_lib.c) checks the load-encode-decode path without any model.
 */
#include "tests/testutil.h"

#include "engine/gguf.h"
#include "engine/vocab.h"
#include "tools/vocab.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ---- */

static char g_tmpdir[256];

static struct vocab *load_model(const char *name)
{
    const char *path = test_model_path(name);
    struct stat st;
    if (stat(path, &st) != 0)
        return NULL;
    struct gguf_file *g;
    char err[256];
    ASSERT_OK(gguf_open(&g, path, err, sizeof err));
    struct vocab *v;
    int rc = vocab_init_gguf(&v, g, err, sizeof err);
    gguf_close(g);
    if (rc)
        fail_msg("%s: %s", path, err);
    return v;
}

static struct vocab *g_qwen, *g_spm;

static int setup(void **state)
{
    g_qwen = load_model("qwen3moe-tiny-qwenvocab");
    g_spm = load_model("mixtral-tiny-spmvocab");
    return 0;
}

static int teardown(void **state)
{
    vocab_free(g_qwen);
    vocab_free(g_spm);
    return 0;
}

/* Encodes and compares with want (n ids). */
static void check_ids(const struct vocab *v, const char *text, size_t len, bool add_special,
                      bool parse_special, const int32_t *want, size_t n)
{
    struct vocab_tokens t = {0};
    struct vocab_encode_opts o = {.add_special = add_special, .parse_special = parse_special};
    ASSERT_OK(vocab_encode(v, text, len, &o, &t));
    if (t.n != n || memcmp(t.ids, want, n * sizeof(int32_t)) != 0) {
        char buf[1024];
        size_t w = 0;
        for (size_t i = 0; i < t.n && w < sizeof buf - 16; i++)
            w += (size_t)snprintf(buf + w, sizeof buf - w, "%d ", t.ids[i]);
        buf[w] = 0;
        vocab_tokens_free(&t);
        fail_msg("\"%s\": got %zu ids: %s(want %zu)", text, t.n, buf, n);
    }
    vocab_tokens_free(&t);
}
#define CHECK_IDS(v, text, add, parse, ...)                                                      \
    do {                                                                                         \
        static const int32_t want_[] = {__VA_ARGS__};                                            \
        check_ids(v, text, sizeof(text) - 1, add, parse, want_, sizeof want_ / sizeof *want_);   \
    } while (0)

static char *decode_all(const struct vocab *v, const int32_t *ids, size_t n, bool show, bool strip)
{
    struct vocab_detok_opts o = {.show_special = show, .strip_lead_space = strip};
    char *s;
    size_t len;
    ASSERT_OK(vocab_decode(v, ids, n, &o, &s, &len));
    assert_int_equal(strlen(s), len);
    return s;
}

/* ---- Qwen3 (byte-level BPE) ---- */

static void test_qwen_basic(void **state)
{
    if (!g_qwen)
        skip();
    assert_int_equal(vocab_kind(g_qwen), VOCAB_KIND_BPE);
    assert_string_equal(vocab_pre(g_qwen), "qwen2");
    assert_true(vocab_nfc(g_qwen));
    assert_false(vocab_special(g_qwen)->add_bos);
    CHECK_IDS(g_qwen, "Hello world", true, true, 9707, 1879);
    CHECK_IDS(g_qwen, "don't I'M", true, true, 15007, 944, 358, 27603);
    CHECK_IDS(g_qwen, "  \n\n  x", true, true, 18611, 220, 856);
}

static void test_qwen_empty(void **state)
{
    if (!g_qwen)
        skip();
    struct vocab_tokens t = {0};
    ASSERT_OK(vocab_encode(g_qwen, "", 0, NULL, &t));
    assert_int_equal(t.n, 0);
    vocab_tokens_free(&t);
}

static void test_qwen_special(void **state)
{
    if (!g_qwen)
        skip();
    /* Parsed by default, leftmost-longest. */
    CHECK_IDS(g_qwen, "<|im_start|>user\nhi<|im_end|>", true, true, 151644, 872, 198, 6023, 151645);
    /* A partial one is text. */
    CHECK_IDS(g_qwen, "<|im_", true, true, 27, 91, 318, 62);
    /* parse_special off: the same characters as text. */
    struct vocab_tokens a = {0}, b = {0};
    struct vocab_encode_opts plain = {.add_special = true, .parse_special = false};
    ASSERT_OK(vocab_encode(g_qwen, "<|im_start|>", 12, &plain, &a));
    assert_true(a.n > 1);
    for (size_t i = 0; i < a.n; i++)
        assert_true(a.ids[i] < 151643);
    ASSERT_OK(vocab_encode(g_qwen, "<|im_start|>", 12, NULL, &b));
    assert_int_equal(b.n, 1);
    assert_int_equal(b.ids[0], 151644);
    /* Hidden by default when decoding, shown on request; <think> is
     * USER_DEFINED (not special in tokenizer.json) and always shown. */
    char *s = decode_all(g_qwen, b.ids, b.n, false, false);
    assert_string_equal(s, "");
    free(s);
    s = decode_all(g_qwen, b.ids, b.n, true, false);
    assert_string_equal(s, "<|im_start|>");
    free(s);
    int32_t think = vocab_find(g_qwen, "<think>", 7);
    assert_true(think > 0);
    assert_int_equal(vocab_token_type(g_qwen, think), VOCAB_TTYPE_USER_DEFINED);
    s = decode_all(g_qwen, &think, 1, false, false);
    assert_string_equal(s, "<think>");
    free(s);
    vocab_tokens_free(&a);
    vocab_tokens_free(&b);
}

static void test_qwen_nfc_and_invalid(void **state)
{
    if (!g_qwen)
        skip();
    /* e + combining acute is composed first (tokenizer.json: NFC). */
    CHECK_IDS(g_qwen, "e\xcc\x81", true, true, 963);
    /* Invalid bytes are U+FFFD, one per maximal subpart (TextDecoder). */
    CHECK_IDS(g_qwen, "\xef\xbf\xbd", true, true, 5691);
    struct vocab_tokens a = {0}, b = {0};
    ASSERT_OK(vocab_encode(g_qwen, "a\x80" "b\xed\xa0\x80" "c\xf0\x9f\x98", 10, NULL, &a));
    const char *fixed = "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "c\xef\xbf\xbd";
    ASSERT_OK(vocab_encode(g_qwen, fixed, strlen(fixed), NULL, &b));
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof(int32_t));
    vocab_tokens_free(&a);
    vocab_tokens_free(&b);
    /* NUL is a character like any other. */
    ASSERT_OK(vocab_encode(g_qwen, "a\0b", 3, NULL, &a));
    assert_int_equal(a.n, 3);
    char *s;
    size_t len;
    ASSERT_OK(vocab_decode(g_qwen, a.ids, a.n, NULL, &s, &len));
    assert_int_equal(len, 3);
    assert_memory_equal(s, "a\0b", 3);
    free(s);
    vocab_tokens_free(&a);
}

static void test_qwen_detok_stream(void **state)
{
    if (!g_qwen)
        skip();
    /* A 4-byte emoji split over byte tokens comes out whole at the last one. */
    struct vocab_tokens t = {0};
    struct vocab_encode_opts o = {.add_special = false, .parse_special = false};
    const char *text = "x\xf0\x9f\xa4\xb7y";
    ASSERT_OK(vocab_encode(g_qwen, text, strlen(text), &o, &t));
    struct vocab_detok d;
    vocab_detok_init(&d, g_qwen, NULL);
    size_t cap = vocab_detok_bound(g_qwen);
    char *buf = malloc(cap), out[64];
    size_t w = 0;
    for (size_t i = 0; i < t.n; i++) {
        int r = vocab_detok_push(&d, t.ids[i], buf, cap);
        assert_true(r >= 0);
        /* Never a partial character. */
        if (r > 0) {
            char *chk = NULL;
            size_t chk_len;
            ASSERT_OK(vocab_utf8_sanitize(buf, (size_t)r, &chk, &chk_len));
            assert_null(chk);
        }
        memcpy(out + w, buf, (size_t)r);
        w += (size_t)r;
    }
    assert_int_equal(vocab_detok_flush(&d, buf, cap), 0);
    assert_int_equal(w, strlen(text));
    assert_memory_equal(out, text, w);
    vocab_tokens_free(&t);
    /* A dangling lead byte: held back, then U+FFFD at the flush. */
    int32_t f0 = vocab_find(g_qwen, "\xc3\xb0", 2); /* byte 0xF0 in byte-level form */
    assert_true(f0 >= 0);
    vocab_detok_init(&d, g_qwen, NULL);
    assert_int_equal(vocab_detok_push(&d, f0, buf, cap), 0);
    assert_int_equal(vocab_detok_flush(&d, buf, cap), 3);
    assert_memory_equal(buf, "\xef\xbf\xbd", 3);
    /* A lead byte followed by ASCII: U+FFFD, then the ASCII. */
    int32_t a = vocab_find(g_qwen, "a", 1);
    vocab_detok_init(&d, g_qwen, NULL);
    assert_int_equal(vocab_detok_push(&d, f0, buf, cap), 0);
    assert_int_equal(vocab_detok_push(&d, a, buf, cap), 4);
    assert_memory_equal(buf, "\xef\xbf\xbd" "a", 4);
    /* Errors. */
    assert_int_equal(vocab_detok_push(&d, -1, buf, cap), ERR_INVALID);
    assert_int_equal(vocab_detok_push(&d, (int32_t)vocab_n_tokens(g_qwen), buf, cap), ERR_INVALID);
    assert_int_equal(vocab_detok_push(&d, a, buf, 4), -ENOBUFS);
    free(buf);
}

struct thr_arg {
    const struct vocab *v;
    int ok;
};

static void *thr_encode(void *p)
{
    struct thr_arg *a = p;
    static const char *text = "Concurrent encoding: 並行してトークン化する <|im_end|> don't\n\n  x";
    struct vocab_tokens ref = {0}, t = {0};
    a->ok = vocab_encode(a->v, text, strlen(text), NULL, &ref) == 0;
    for (int i = 0; i < 200 && a->ok; i++) {
        t.n = 0;
        a->ok = vocab_encode(a->v, text, strlen(text), NULL, &t) == 0 && t.n == ref.n &&
                memcmp(t.ids, ref.ids, t.n * sizeof(int32_t)) == 0;
    }
    vocab_tokens_free(&ref);
    vocab_tokens_free(&t);
    return NULL;
}

static void test_threads(void **state)
{
    if (!g_qwen)
        skip();
    pthread_t th[3];
    struct thr_arg a[3];
    for (int i = 0; i < 3; i++) {
        a[i].v = g_qwen;
        assert_int_equal(pthread_create(&th[i], NULL, thr_encode, &a[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_true(a[i].ok);
    }
}

/* ---- Llama 2 (SentencePiece) ---- */

static void test_spm_basic(void **state)
{
    if (!g_spm)
        skip();
    assert_int_equal(vocab_kind(g_spm), VOCAB_KIND_SPM);
    assert_true(vocab_special(g_spm)->add_bos);
    assert_int_equal(vocab_special(g_spm)->bos, 1);
    CHECK_IDS(g_spm, "Hello world", true, true, 1, 15043, 3186);
    CHECK_IDS(g_spm, "Hello world", false, true, 15043, 3186);
    CHECK_IDS(g_spm, " hello", true, true, 1, 29871, 22172);
    CHECK_IDS(g_spm, "  two  spaces ", false, true, 259, 1023, 29871, 8162, 29871);
    CHECK_IDS(g_spm, "\t\ntab", false, true, 29871, 12, 13, 3891);
    CHECK_IDS(g_spm, "\xe6\x97\xa5\xe6\x9c\xac", false, true, 29871, 30325, 30346); /* 日本 */
    /* Byte fallback for a character without a piece. */
    CHECK_IDS(g_spm, "\xf0\x9f\xa4\xb7", false, true, 29871, 243, 162, 167, 186);
    /* No NFC for Llama 2. */
    CHECK_IDS(g_spm, "e\xcc\x81", false, true, 321, 30103);
    /* Added tokens: each text piece after one gets the dummy prefix. */
    CHECK_IDS(g_spm, "<s>hi</s>", true, true, 1, 1, 7251, 2);
    CHECK_IDS(g_spm, "<s>hi</s>", true, false, 1, 529, 29879, 29958, 2918, 829, 29879, 29958);
    struct vocab_tokens t = {0};
    ASSERT_OK(vocab_encode(g_spm, "", 0, NULL, &t));
    assert_int_equal(t.n, 1); /* just BOS, as Hugging Face */
    vocab_tokens_free(&t);
}

static void test_spm_detok(void **state)
{
    if (!g_spm)
        skip();
    /* The dummy-prefix space goes when decoding from the start... */
    static const int32_t hello[] = {1, 15043, 3186};
    char *s = decode_all(g_spm, hello, 3, false, true);
    assert_string_equal(s, "Hello world");
    free(s);
    /* ...and stays for a continuation. */
    s = decode_all(g_spm, hello + 1, 2, false, false);
    assert_string_equal(s, " Hello world");
    free(s);
    /* Only one space goes: " hello" is "▁", "▁hello". */
    static const int32_t sp_hello[] = {1, 29871, 22172};
    s = decode_all(g_spm, sp_hello, 3, false, true);
    assert_string_equal(s, " hello");
    free(s);
    /* Specials shown: "<s>" is text, so nothing is stripped after it. */
    s = decode_all(g_spm, hello, 3, true, true);
    assert_string_equal(s, "<s> Hello world");
    free(s);
    /* Byte tokens of an emoji, streamed. */
    static const int32_t emo[] = {29871, 243, 162, 167, 186};
    struct vocab_detok d;
    struct vocab_detok_opts o = {.strip_lead_space = true};
    vocab_detok_init(&d, g_spm, &o);
    size_t cap = vocab_detok_bound(g_spm);
    char *buf = malloc(cap);
    assert_int_equal(vocab_detok_push(&d, emo[0], buf, cap), 0); /* the stripped space */
    assert_int_equal(vocab_detok_push(&d, emo[1], buf, cap), 0);
    assert_int_equal(vocab_detok_push(&d, emo[2], buf, cap), 0);
    assert_int_equal(vocab_detok_push(&d, emo[3], buf, cap), 0);
    assert_int_equal(vocab_detok_push(&d, emo[4], buf, cap), 4);
    assert_memory_equal(buf, "\xf0\x9f\xa4\xb7", 4);
    /* EOS is hidden. */
    assert_int_equal(vocab_detok_push(&d, 2, buf, cap), 0);
    assert_true(vocab_is_eog(g_spm, 2));
    assert_false(vocab_is_eog(g_spm, 15043));
    free(buf);
}

/* ---- UTF-8 repair ---- */

static void check_sanitize(const char *in, size_t n, const char *want)
{
    char *out;
    size_t len;
    ASSERT_OK(vocab_utf8_sanitize(in, n, &out, &len));
    if (!want) {
        assert_null(out);
        return;
    }
    assert_non_null(out);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(out, want, len);
    free(out);
}

#define FFFD "\xef\xbf\xbd"
static void test_sanitize(void **state)
{
    check_sanitize("plain", 5, NULL);
    check_sanitize("\xe4\xbd\xa0\xf0\x9f\x98\x80", 7, NULL);
    check_sanitize("a\x80" "b", 3, "a" FFFD "b");
    check_sanitize("\xff", 1, FFFD);
    check_sanitize("\xc0\xaf", 2, FFFD FFFD);               /* overlong */
    check_sanitize("\xed\xa0\x80", 3, FFFD FFFD FFFD);      /* surrogate */
    check_sanitize("\xf0\x9f\x98", 3, FFFD);                /* truncated at the end */
    check_sanitize("\xe2\x82" "a", 3, FFFD "a");            /* truncated, then ASCII */
    check_sanitize("\xf4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD); /* above U+10FFFF */
    check_sanitize("\xe0\x80\xaf", 3, FFFD FFFD FFFD);
}

/* ---- bad metadata ---- */

struct meta {
    const char *model;
    const char *const *tokens;
    uint64_t n_tokens;
    const int32_t *types;
    const char *const *merges;
    uint64_t n_merges;
    int64_t bos; /* -1: not written */
};

static const char *write_meta(const char *name, const struct meta *m)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s.gguf", g_tmpdir, name);
    struct gguf_writer *w;
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    gguf_writer_kv_str(w, "general.architecture", "llama");
    if (m->model)
        gguf_writer_kv_str(w, "tokenizer.ggml.model", m->model);
    if (m->tokens)
        gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens", m->tokens, m->n_tokens);
    if (m->types)
        gguf_writer_kv_arr_i32(w, "tokenizer.ggml.token_type", m->types, m->n_tokens);
    if (m->merges)
        gguf_writer_kv_arr_str(w, "tokenizer.ggml.merges", m->merges, m->n_merges);
    if (m->bos >= 0)
        gguf_writer_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)m->bos);
    ASSERT_OK(gguf_writer_begin_data(w));
    ASSERT_OK(gguf_writer_finish(w));
    return path;
}

static int try_load(const struct meta *m, char *err, size_t errlen)
{
    const char *path = write_meta("bad", m);
    struct gguf_file *g;
    ASSERT_OK(gguf_open(&g, path, err, errlen));
    struct vocab *v = (struct vocab *)1;
    int rc = vocab_init_gguf(&v, g, err, errlen);
    gguf_close(g);
    if (rc == 0)
        vocab_free(v);
    else
        assert_null(v);
    return rc;
}

/* The 256 byte-level tokens plus "ab" and "abc". */
static const char **byte_tokens(uint64_t *n)
{
    static char store[258][8];
    static const char *ptr[260];
    uint32_t k = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        uint32_t cp = keep ? (uint32_t)b : 256 + k++;
        if (cp < 0x80) {
            store[b][0] = (char)cp;
            store[b][1] = 0;
        } else {
            store[b][0] = (char)(0xC0 | cp >> 6);
            store[b][1] = (char)(0x80 | (cp & 0x3F));
            store[b][2] = 0;
        }
        ptr[b] = store[b];
    }
    ptr[256] = "ab";
    ptr[257] = "abc";
    *n = 258;
    return ptr;
}

static void test_bad_metadata(void **state)
{
    char err[256];
    uint64_t n;
    const char **toks = byte_tokens(&n);
    static const char *const good_merges[] = {"a b", "ab c"};
    struct meta m = {.model = "gpt2", .tokens = toks, .n_tokens = n, .merges = good_merges, .n_merges = 2, .bos = -1};
    ASSERT_OK(try_load(&m, err, sizeof err));

    struct meta b = m;
    b.model = NULL;
    assert_int_equal(try_load(&b, err, sizeof err), ERR_TOKENIZER);
    assert_non_null(strstr(err, "tokenizer.ggml.model: missing"));

    b = m;
    b.model = "bert";
    assert_int_equal(try_load(&b, err, sizeof err), ERR_TOKENIZER);
    assert_non_null(strstr(err, "tokenizer.ggml.model: 'bert'"));

    b = m;
    b.tokens = NULL;
    assert_int_equal(try_load(&b, err, sizeof err), ERR_TOKENIZER);
    assert_non_null(strstr(err, "tokenizer.ggml.tokens: missing"));

    static const char *const bad_merges[] = {"a b", "abc"};
    b = m;
    b.merges = bad_merges;
    assert_int_equal(try_load(&b, err, sizeof err), ERR_TOKENIZER);
    assert_string_equal(err, "tokenizer.ggml.merges: entry 1 is not 'a b'");

    b = m;
    b.merges = NULL;
    assert_int_equal(try_load(&b, err, sizeof err), ERR_TOKENIZER);
    assert_non_null(strstr(err, "tokenizer.ggml.merges: missing"));

    b = m;
    b.bos = 1000;
    assert_int_equal(try_load(&b, err, sizeof err), ERR_TOKENIZER);
    assert_non_null(strstr(err, "tokenizer.ggml.bos_token_id: id 1000"));

    int32_t types[258];
    for (int i = 0; i < 258; i++)
        types[i] = 1;
    types[7] = 9;
    b = m;
    b.types = types;
    assert_int_equal(try_load(&b, err, sizeof err), ERR_TOKENIZER);
    assert_non_null(strstr(err, "tokenizer.ggml.token_type: entry 7 is 9"));

    b = m;
    b.n_tokens = 200; /* bytes 0xC8.. missing */
    assert_int_equal(try_load(&b, err, sizeof err), ERR_TOKENIZER);
    assert_non_null(strstr(err, "no token for byte"));

    /* The good one encodes "abc" with the two merges, by rank. */
    const char *path = write_meta("good", &m);
    struct gguf_file *g;
    ASSERT_OK(gguf_open(&g, path, err, sizeof err));
    struct vocab *v;
    ASSERT_OK(vocab_init_gguf(&v, g, err, sizeof err));
    gguf_close(g);
    CHECK_IDS(v, "abc", true, true, 257);
    CHECK_IDS(v, "abcab", true, true, 257, 256);
    vocab_free(v);
}

/* ---- synthetic vocabulary (no model needed) ---- */

static void test_synthetic(void **state)
{
    struct vocab_src *src;
    ASSERT_OK(vocab_src_synthetic(&src, 600));
    char path[512];
    snprintf(path, sizeof path, "%s/synth.gguf", g_tmpdir);
    struct gguf_writer *w;
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    vocab_src_write_gguf(src, w);
    ASSERT_OK(gguf_writer_begin_data(w));
    ASSERT_OK(gguf_writer_finish(w));
    vocab_src_free(src);
    char err[256];
    struct gguf_file *g;
    ASSERT_OK(gguf_open(&g, path, err, sizeof err));
    struct vocab *v;
    ASSERT_OK(vocab_init_gguf(&v, g, err, sizeof err));
    gguf_close(g);
    assert_int_equal(vocab_n_tokens(v), 600);
    const char *text = "<|im_start|>user\nThe model learns to read digits 12345, one at a time. \xe4\xbd\xa0\xe5\xa5\xbd<|im_end|>";
    struct vocab_tokens t = {0};
    ASSERT_OK(vocab_encode(v, text, strlen(text), NULL, &t));
    assert_true(t.n < strlen(text)); /* some merges fired */
    char *s = decode_all(v, t.ids, t.n, true, true);
    assert_string_equal(s, text);
    free(s);
    vocab_tokens_free(&t);
    vocab_free(v);
}

int main(void)
{
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/moed-test-vocab-%d", (int)getpid());
    if (mkdir(g_tmpdir, 0700) != 0 && errno != EEXIST) {
        perror(g_tmpdir);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen_basic),
        cmocka_unit_test(test_qwen_empty),
        cmocka_unit_test(test_qwen_special),
        cmocka_unit_test(test_qwen_nfc_and_invalid),
        cmocka_unit_test(test_qwen_detok_stream),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_spm_basic),
        cmocka_unit_test(test_spm_detok),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_synthetic),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_tmpdir);
    return rc ? 1 : 0;
}
