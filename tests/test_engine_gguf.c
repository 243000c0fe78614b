/* SPDX-License-Identifier: MIT */
/*
 * test_engine_gguf.c - the GGUF reader and writer (engine/gguf.c).
 *
 * Round trips through the writer, byte-exact comparison of the writer's
 * output with a file built by hand, one test per malformed input (each checks
 * the return code and the error message), files changed under an open
 * reader, and the typed getters. Files are written under a mkdtemp folder in
 * /tmp that the group teardown removes.
 *
 * With MOED_GGUF_SEED_DIR set, test_write_seeds also writes the small seed
 * files of the fuzzer's corpus (tests/fuzz/corpus/fuzz_gguf) there.
 */
#include "tests/testutil.h"

#include "engine/gguf.h"
#include "kernels/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char g_dir[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/moed-gguf-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Path of a file in the temporary folder (a small ring of static buffers). */
static const char *tpath(const char *name)
{
    static char buf[4][256];
    static int i;
    i = (i + 1) & 3;
    snprintf(buf[i], sizeof buf[i], "%s/%s", g_dir, name);
    return buf[i];
}

/* ---- hand-built files ---- */

struct bb {
    uint8_t *p;
    size_t n, cap;
};

static void bb_put(struct bb *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void bb_u8(struct bb *b, uint8_t v) { bb_put(b, &v, 1); }
static void bb_u32(struct bb *b, uint32_t v) { bb_put(b, &v, 4); }
static void bb_u64(struct bb *b, uint64_t v) { bb_put(b, &v, 8); }
static void bb_str(struct bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}
static void bb_hdr(struct bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}
static void bb_kv_u32(struct bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_VTYPE_UINT32);
    bb_u32(b, v);
}
static void bb_kv_str(struct bb *b, const char *key, const char *v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_VTYPE_STRING);
    bb_str(b, v);
}
static void bb_tinfo(struct bb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                     uint32_t type, uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        bb_u64(b, ne[d]);
    bb_u32(b, type);
    bb_u64(b, offset);
}
static void bb_pad(struct bb *b, size_t align)
{
    while (b->n % align)
        bb_u8(b, 0);
}
static void bb_zeros(struct bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bb_u8(b, 0);
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static uint8_t *read_all(const char *path, size_t *n)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    uint8_t *p = malloc((size_t)st.st_size + 1);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, p, (size_t)st.st_size), st.st_size);
    close(fd);
    *n = (size_t)st.st_size;
    return p;
}

/* Writes b to a file and opens it: the test then checks rc and the message. */
static void expect_fail_at(struct bb *b, int code, const char *substr, int line)
{
    char err[512] = "(unset)";
    struct gguf_file *f = (struct gguf_file *)(uintptr_t)1;
    const char *path = tpath("bad.gguf");
    write_bytes(path, b->p, b->n);
    int rc = gguf_open(&f, path, err, sizeof err);
    if (rc != code || !strstr(err, substr) || strncmp(err, path, strlen(path)) != 0)
        fail_msg("line %d: rc %d (%s), expected %d (%s); message \"%s\" should start with the path and contain \"%s\"",
                 line, rc, err_name(rc), code, err_name(code), err, substr);
    assert_null(f);
    free(b->p);
    memset(b, 0, sizeof *b);
}
#define EXPECT_FAIL(b, code, substr) expect_fail_at((b), (code), (substr), __LINE__)

/* A valid file with one F32 tensor of 8 values, for variations. */
static void bb_one_tensor(struct bb *b, uint32_t type, uint32_t n_dims, const uint64_t *ne,
                          uint64_t offset, size_t data_bytes)
{
    bb_hdr(b, 3, 1, 1);
    bb_kv_str(b, "general.name", "t");
    bb_tinfo(b, "blk.0.ffn_up.weight", n_dims, ne, type, offset);
    bb_pad(b, 32);
    bb_zeros(b, data_bytes);
}

/* ---- value comparison ---- */

static size_t vsize(uint32_t t)
{
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return sz[t];
}

static void assert_value_eq(const struct gguf_value *a, const struct gguf_value *b, const char *key)
{
    if (a->type != b->type)
        fail_msg("%s: type %d != %d", key, a->type, b->type);
    switch (a->type) {
    case GGUF_VTYPE_UINT8: case GGUF_VTYPE_UINT16: case GGUF_VTYPE_UINT32: case GGUF_VTYPE_UINT64:
        assert_true(a->u == b->u);
        break;
    case GGUF_VTYPE_INT8: case GGUF_VTYPE_INT16: case GGUF_VTYPE_INT32: case GGUF_VTYPE_INT64:
        assert_true(a->i == b->i);
        break;
    case GGUF_VTYPE_FLOAT32: case GGUF_VTYPE_FLOAT64:
        assert_memory_equal(&a->f, &b->f, sizeof a->f);
        break;
    case GGUF_VTYPE_BOOL:
        assert_int_equal(a->b, b->b);
        break;
    case GGUF_VTYPE_STRING:
        assert_int_equal(a->str.len, b->str.len);
        assert_memory_equal(a->str.s, b->str.s, a->str.len);
        assert_int_equal(a->str.s[a->str.len], 0);
        break;
    case GGUF_VTYPE_ARRAY:
        if (a->arr.type != b->arr.type || a->arr.n != b->arr.n)
            fail_msg("%s: array of %" PRIu64 " type %d != %" PRIu64 " type %d", key, a->arr.n,
                     a->arr.type, b->arr.n, b->arr.type);
        if (a->arr.type == GGUF_VTYPE_STRING) {
            const struct gguf_str *x = a->arr.data, *y = b->arr.data;
            for (uint64_t i = 0; i < a->arr.n; i++) {
                assert_int_equal(x[i].len, y[i].len);
                assert_memory_equal(x[i].s, y[i].s, x[i].len);
            }
        } else if (a->arr.type == GGUF_VTYPE_ARRAY) {
            const struct gguf_value *x = a->arr.data, *y = b->arr.data;
            for (uint64_t i = 0; i < a->arr.n; i++)
                assert_value_eq(&x[i], &y[i], key);
        } else if (a->arr.n) {
            assert_memory_equal(a->arr.data, b->arr.data, a->arr.n * vsize(a->arr.type));
        }
        break;
    default:
        fail_msg("%s: bad type %d", key, a->type);
    }
}

static struct gguf_value sv_u(uint32_t t, uint64_t u) { struct gguf_value v = {.type = t, .u = u}; return v; }
static struct gguf_value sv_i(uint32_t t, int64_t i) { struct gguf_value v = {.type = t, .i = i}; return v; }
static struct gguf_value sv_f(uint32_t t, double f) { struct gguf_value v = {.type = t, .f = f}; return v; }
static struct gguf_value sv_str(const char *s, uint64_t len)
{
    struct gguf_value v = {.type = GGUF_VTYPE_STRING};
    v.str.s = (char *)s;
    v.str.len = len;
    return v;
}
static struct gguf_value sv_arr(uint32_t et, uint64_t n, const void *data)
{
    struct gguf_value v = {.type = GGUF_VTYPE_ARRAY};
    v.arr.type = et;
    v.arr.n = n;
    v.arr.data = (void *)data;
    return v;
}

/* ---- round trip ---- */

struct rt_tensor {
    const char *name;
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
};

static const struct rt_tensor g_rt_tensors[] = {
    {"token_embd.weight", 2, {7, 3, 1, 1}, BE_TYPE_F32},
    {"blk.0.attn_q.weight", 3, {64, 2, 3, 1}, BE_TYPE_F16},
    {"blk.0.ffn_up.weight", 2, {64, 5, 1, 1}, BE_TYPE_Q8_0},
    {"blk.0.ffn_down.weight", 4, {256, 3, 1, 2}, BE_TYPE_Q4_K},
    {"output_norm.weight", 1, {5, 1, 1, 1}, BE_TYPE_BF16},
};
#define N_RT_TENSORS (sizeof g_rt_tensors / sizeof g_rt_tensors[0])

static uint64_t rt_size(const struct rt_tensor *t)
{
    return be_row_size(t->type, t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
}

struct rt_kv {
    const char *key;
    struct gguf_value v;
};

/* The metadata of the round trip, every type and shape of value. */
static size_t rt_kvs(struct rt_kv *kv)
{
    static const uint8_t a_u8[] = {1, 2, 255};
    static const int8_t a_i8[] = {-128, 0, 127};
    static const uint16_t a_u16[] = {0, 65535};
    static const int16_t a_i16[] = {-32768, 5, 32767};
    static const uint32_t a_u32[] = {0, 1, 4000000000u};
    static const int32_t a_i32[] = {INT32_MIN, -1, INT32_MAX};
    static const float a_f32[] = {1.5f, -0.0f, 3.4e38f};
    static const uint8_t a_bool[] = {1, 0, 1, 1};
    static const uint64_t a_u64[] = {UINT64_MAX, 0};
    static const int64_t a_i64[] = {INT64_MIN, 42};
    static const double a_f64[] = {1e-300, -2.5};
    static struct gguf_str a_str[] = {{1, "a"}, {0, ""}, {5, "b\0c\xff!"}};
    static const int8_t deep_i8[] = {-1, -2};
    static struct gguf_value deep1[1], nested[4];
    static struct gguf_str one_str[] = {{1, "x"}};
    size_t n = 0;

    deep1[0] = sv_arr(GGUF_VTYPE_INT8, 2, deep_i8);
    nested[0] = sv_arr(GGUF_VTYPE_UINT32, 3, a_u32);
    nested[1] = sv_arr(GGUF_VTYPE_STRING, 1, one_str);
    nested[2] = sv_arr(GGUF_VTYPE_ARRAY, 1, deep1);
    nested[3] = sv_arr(GGUF_VTYPE_FLOAT64, 0, a_f64);

    kv[n++] = (struct rt_kv){"general.architecture", sv_str("qwen3moe", 8)};
    kv[n++] = (struct rt_kv){"s.u8", sv_u(GGUF_VTYPE_UINT8, 200)};
    kv[n++] = (struct rt_kv){"s.i8", sv_i(GGUF_VTYPE_INT8, -100)};
    kv[n++] = (struct rt_kv){"s.u16", sv_u(GGUF_VTYPE_UINT16, 60000)};
    kv[n++] = (struct rt_kv){"s.i16", sv_i(GGUF_VTYPE_INT16, -30000)};
    kv[n++] = (struct rt_kv){"s.u32", sv_u(GGUF_VTYPE_UINT32, 4000000000u)};
    kv[n++] = (struct rt_kv){"s.i32", sv_i(GGUF_VTYPE_INT32, -2000000000)};
    kv[n++] = (struct rt_kv){"s.f32", sv_f(GGUF_VTYPE_FLOAT32, 3.25)};
    kv[n++] = (struct rt_kv){"s.true", {.type = GGUF_VTYPE_BOOL, .b = true}};
    kv[n++] = (struct rt_kv){"s.false", {.type = GGUF_VTYPE_BOOL, .b = false}};
    kv[n++] = (struct rt_kv){"s.u64", sv_u(GGUF_VTYPE_UINT64, (1ull << 63) + 5)};
    kv[n++] = (struct rt_kv){"s.i64", sv_i(GGUF_VTYPE_INT64, -(1ll << 62))};
    kv[n++] = (struct rt_kv){"s.f64", sv_f(GGUF_VTYPE_FLOAT64, -1e300)};
    kv[n++] = (struct rt_kv){"s.str_nul", sv_str("a\0b", 3)};
    kv[n++] = (struct rt_kv){"s.str_empty", sv_str("", 0)};
    kv[n++] = (struct rt_kv){"a.u8", sv_arr(GGUF_VTYPE_UINT8, 3, a_u8)};
    kv[n++] = (struct rt_kv){"a.i8", sv_arr(GGUF_VTYPE_INT8, 3, a_i8)};
    kv[n++] = (struct rt_kv){"a.u16", sv_arr(GGUF_VTYPE_UINT16, 2, a_u16)};
    kv[n++] = (struct rt_kv){"a.i16", sv_arr(GGUF_VTYPE_INT16, 3, a_i16)};
    kv[n++] = (struct rt_kv){"a.u32", sv_arr(GGUF_VTYPE_UINT32, 3, a_u32)};
    kv[n++] = (struct rt_kv){"a.i32", sv_arr(GGUF_VTYPE_INT32, 3, a_i32)};
    kv[n++] = (struct rt_kv){"a.f32", sv_arr(GGUF_VTYPE_FLOAT32, 3, a_f32)};
    kv[n++] = (struct rt_kv){"a.bool", sv_arr(GGUF_VTYPE_BOOL, 4, a_bool)};
    kv[n++] = (struct rt_kv){"a.u64", sv_arr(GGUF_VTYPE_UINT64, 2, a_u64)};
    kv[n++] = (struct rt_kv){"a.i64", sv_arr(GGUF_VTYPE_INT64, 2, a_i64)};
    kv[n++] = (struct rt_kv){"a.f64", sv_arr(GGUF_VTYPE_FLOAT64, 2, a_f64)};
    kv[n++] = (struct rt_kv){"a.str", sv_arr(GGUF_VTYPE_STRING, 3, a_str)};
    kv[n++] = (struct rt_kv){"a.empty", sv_arr(GGUF_VTYPE_UINT32, 0, a_u32)};
    kv[n++] = (struct rt_kv){"a.nested", sv_arr(GGUF_VTYPE_ARRAY, 4, nested)};
    return n;
}

/* Writes the round-trip file; returns the tensor data (caller frees). */
static uint8_t *rt_write(const char *path, uint32_t alignment, bool with_kvs, size_t *total)
{
    struct rt_kv kv[64];
    struct gguf_writer *w;
    size_t nkv = with_kvs ? rt_kvs(kv) : 0;
    static const char *const toks[] = {"<s>", "hello", ""};
    static const int32_t ti32[] = {7, -8};
    static const float tf32[] = {0.5f, 2.0f};

    ASSERT_OK(gguf_writer_init(&w, path, alignment));
    for (size_t i = 0; i < nkv; i++)
        gguf_writer_kv(w, kv[i].key, &kv[i].v);
    if (with_kvs) {
        gguf_writer_kv_u32(w, "c.u32", 123456);
        gguf_writer_kv_i32(w, "c.i32", -654321);
        gguf_writer_kv_u64(w, "c.u64", 1ull << 40);
        gguf_writer_kv_f32(w, "c.f32", 0.125f);
        gguf_writer_kv_bool(w, "c.bool", true);
        gguf_writer_kv_str(w, "c.str", "text");
        gguf_writer_kv_arr_str(w, "c.arr_str", toks, 3);
        gguf_writer_kv_arr_i32(w, "c.arr_i32", ti32, 2);
        gguf_writer_kv_arr_f32(w, "c.arr_f32", tf32, 2);
    }
    size_t n = 0;
    for (size_t i = 0; i < N_RT_TENSORS; i++) {
        const struct rt_tensor *t = &g_rt_tensors[i];
        gguf_writer_tensor(w, t->name, t->n_dims, t->ne, t->type);
        n += rt_size(t);
    }
    ASSERT_OK(gguf_writer_begin_data(w));
    uint8_t *data = malloc(n);
    uint64_t seed = 12345 + alignment;
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)test_rand_u64(&seed);
    /* Odd pieces, some spanning the end of one tensor and the start of the next. */
    static const size_t pieces[] = {1, 7, 13, 101, 3, 250, 64, 999};
    size_t off = 0;
    for (size_t k = 0; off < n; k++) {
        size_t c = pieces[k % 8];
        if (c > n - off)
            c = n - off;
        ASSERT_OK(gguf_writer_write(w, data + off, c));
        off += c;
    }
    ASSERT_OK(gguf_writer_finish(w));
    *total = n;
    return data;
}

static void roundtrip(uint32_t alignment)
{
    struct rt_kv kv[64];
    size_t nkv = rt_kvs(kv), total;
    const char *path = tpath("rt.gguf");
    char err[512];
    struct gguf_file *f;
    uint8_t *data = rt_write(path, alignment, true, &total);

    ASSERT_OK(gguf_open(&f, path, err, sizeof err));
    assert_int_equal(f->version, 3);
    assert_int_equal(f->alignment, alignment);
    assert_int_equal(f->data_offset % alignment, 0);
    /* Written kvs, the 9 convenience ones, and general.alignment when not 32. */
    assert_int_equal(f->n_kv, nkv + 9 + (alignment != 32));
    for (size_t i = 0; i < nkv; i++) {
        assert_string_equal(f->kv[i].key, kv[i].key);
        assert_value_eq(&f->kv[i].v, &kv[i].v, kv[i].key);
        assert_ptr_equal(gguf_find(f, kv[i].key), &f->kv[i]);
    }
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f32;
    bool b;
    const char *s;
    const struct gguf_value *arr;
    ASSERT_OK(gguf_get_u32(f, "c.u32", &u32));
    assert_int_equal(u32, 123456);
    ASSERT_OK(gguf_get_i32(f, "c.i32", &i32));
    assert_int_equal(i32, -654321);
    ASSERT_OK(gguf_get_u64(f, "c.u64", &u64));
    assert_true(u64 == 1ull << 40);
    ASSERT_OK(gguf_get_f32(f, "c.f32", &f32));
    assert_true(f32 == 0.125f);
    ASSERT_OK(gguf_get_bool(f, "c.bool", &b));
    assert_true(b);
    ASSERT_OK(gguf_get_str(f, "c.str", &s));
    assert_string_equal(s, "text");
    ASSERT_OK(gguf_get_arr(f, "c.arr_str", &arr));
    assert_int_equal(arr->arr.type, GGUF_VTYPE_STRING);
    assert_int_equal(arr->arr.n, 3);
    assert_string_equal(((struct gguf_str *)arr->arr.data)[1].s, "hello");
    assert_string_equal(((struct gguf_str *)arr->arr.data)[2].s, "");
    ASSERT_OK(gguf_get_arr(f, "c.arr_i32", &arr));
    assert_int_equal(gguf_arr_get_i64(arr, 1), -8);
    ASSERT_OK(gguf_get_arr(f, "c.arr_f32", &arr));
    assert_true(gguf_arr_get_f64(arr, 0) == 0.5);
    if (alignment != 32) {
        ASSERT_OK(gguf_get_u32(f, "general.alignment", &u32));
        assert_int_equal(u32, alignment);
    }

    assert_int_equal(f->n_tensors, N_RT_TENSORS);
    size_t off = 0;
    uint64_t seed = 99;
    for (size_t i = 0; i < N_RT_TENSORS; i++) {
        const struct rt_tensor *e = &g_rt_tensors[i];
        const struct gguf_tensor *t = &f->tensors[i];
        assert_string_equal(t->name, e->name);
        assert_ptr_equal(gguf_find_tensor(f, e->name), t);
        assert_int_equal(t->n_dims, e->n_dims);
        for (int d = 0; d < 4; d++)
            assert_int_equal(t->ne[d], e->ne[d]);
        assert_int_equal(t->type, e->type);
        assert_int_equal(t->size, rt_size(e));
        assert_int_equal(t->offset % alignment, 0);
        uint8_t *got = malloc(t->size);
        ASSERT_OK(gguf_read_tensor(f, t, 0, t->size, got));
        assert_memory_equal(got, data + off, t->size);
        for (int k = 0; k < 20; k++) { /* sub-ranges */
            uint64_t a = test_rand_u64(&seed) % (t->size + 1);
            uint64_t n = test_rand_u64(&seed) % (t->size - a + 1);
            memset(got, 0xAA, t->size);
            ASSERT_OK(gguf_read_tensor(f, t, a, n, got));
            assert_memory_equal(got, data + off + a, n);
        }
        ASSERT_OK(gguf_read_tensor(f, t, t->size, 0, got));
        assert_int_equal(gguf_read_tensor(f, t, 1, t->size, got), -EINVAL);
        assert_int_equal(gguf_read_tensor(f, t, UINT64_MAX, 2, got), -EINVAL);
        free(got);
        off += t->size;
    }
    const struct gguf_tensor *last = &f->tensors[N_RT_TENSORS - 1];
    uint64_t end = f->data_offset + last->offset + last->size;
    assert_int_equal(f->file_size, (end + alignment - 1) / alignment * alignment);
    assert_null(gguf_find_tensor(f, "nope"));
    assert_null(gguf_find(f, "nope"));
    char magic[4];
    ASSERT_OK(gguf_read_at(f, 0, 4, magic));
    assert_memory_equal(magic, "GGUF", 4);
    assert_int_equal(gguf_read_at(f, f->file_size - 1, 2, magic), -EINVAL);
    ASSERT_OK(gguf_check_unchanged(f));
    gguf_close(f);
    gguf_close(NULL);
    free(data);
}

static void test_roundtrip_align32(void **state) { (void)state; roundtrip(32); }
static void test_roundtrip_align64(void **state) { (void)state; roundtrip(64); }

/* The writer's bytes against a file laid out by hand from the format. */
static void test_writer_exact_bytes(void **state)
{
    (void)state;
    struct gguf_writer *w;
    struct bb b = {0};
    const char *path = tpath("exact.gguf");
    const float t1[3] = {1, 2, 3};
    const uint16_t t2[4] = {1, 2, 3, 4};
    const int64_t ne1[] = {3}, ne2[] = {2, 2};
    const uint64_t une1[] = {3}, une2[] = {2, 2};

    ASSERT_OK(gguf_writer_init(&w, path, 0));
    gguf_writer_kv_u32(w, "a", 7);
    gguf_writer_kv_str(w, "b", "xy");
    gguf_writer_tensor(w, "t1", 1, ne1, BE_TYPE_F32);
    gguf_writer_tensor(w, "t2", 2, ne2, BE_TYPE_F16);
    ASSERT_OK(gguf_writer_begin_data(w));
    ASSERT_OK(gguf_writer_write(w, t1, sizeof t1));
    ASSERT_OK(gguf_writer_write(w, t2, sizeof t2));
    ASSERT_OK(gguf_writer_finish(w));

    bb_hdr(&b, 3, 2, 2);
    bb_kv_u32(&b, "a", 7);
    bb_kv_str(&b, "b", "xy");
    bb_tinfo(&b, "t1", 1, une1, BE_TYPE_F32, 0);
    bb_tinfo(&b, "t2", 2, une2, BE_TYPE_F16, 32);
    bb_pad(&b, 32);
    bb_put(&b, t1, sizeof t1);
    bb_pad(&b, 32);
    bb_put(&b, t2, sizeof t2);
    bb_pad(&b, 32);
    size_t n;
    uint8_t *got = read_all(path, &n);
    assert_int_equal(n, b.n);
    assert_memory_equal(got, b.p, n);
    free(got);
    free(b.p);
}

static void test_version2_accepted(void **state)
{
    (void)state;
    struct bb b = {0};
    struct gguf_file *f;
    char err[256];
    const uint64_t ne[] = {8};
    bb_hdr(&b, 2, 1, 1);
    bb_kv_str(&b, "general.name", "v2");
    bb_tinfo(&b, "w", 1, ne, BE_TYPE_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    write_bytes(tpath("v2.gguf"), b.p, b.n);
    ASSERT_OK(gguf_open(&f, tpath("v2.gguf"), err, sizeof err));
    assert_int_equal(f->version, 2);
    assert_int_equal(f->data_offset % 32, 0);
    assert_int_equal(f->tensors[0].size, 32);
    gguf_close(f);
    free(b.p);
}

static void test_no_tensors(void **state)
{
    (void)state;
    struct gguf_writer *w;
    struct gguf_file *f;
    char err[256];
    ASSERT_OK(gguf_writer_init(&w, tpath("empty.gguf"), 0));
    ASSERT_OK(gguf_writer_finish(w)); /* begin_data is implied */
    ASSERT_OK(gguf_open(&f, tpath("empty.gguf"), err, sizeof err));
    assert_int_equal(f->n_kv, 0);
    assert_int_equal(f->n_tensors, 0);
    assert_int_equal(f->file_size, 32);
    gguf_close(f);
}

/* 150k strings, as in a large vocabulary, must parse in well under 0.1 s. */
static void test_large_vocab_speed(void **state)
{
    (void)state;
    enum { N = 150000 };
    char **toks = malloc(N * sizeof *toks);
    struct gguf_writer *w;
    struct gguf_file *f;
    char err[256];
    uint64_t seed = 7;
    for (int i = 0; i < N; i++) {
        toks[i] = malloc(32);
        snprintf(toks[i], 32, "tok%d_%.*s", i, (int)(test_rand_u64(&seed) % 12), "abcdefghijkl");
    }
    ASSERT_OK(gguf_writer_init(&w, tpath("vocab.gguf"), 0));
    gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, N);
    ASSERT_OK(gguf_writer_finish(w));

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ASSERT_OK(gguf_open(&f, tpath("vocab.gguf"), err, sizeof err));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    print_message("gguf_open with %d strings: %.1f ms\n", N, dt * 1e3);
    const struct gguf_value *arr;
    ASSERT_OK(gguf_get_arr(f, "tokenizer.ggml.tokens", &arr));
    assert_int_equal(arr->arr.n, N);
    for (int i = 0; i < N; i += 997)
        assert_string_equal(((struct gguf_str *)arr->arr.data)[i].s, toks[i]);
#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if !defined(__SANITIZE_ADDRESS__) && !__has_feature(address_sanitizer)
    assert_true(dt < 0.1); /* sanitizers slow it several times */
#endif
    gguf_close(f);
    for (int i = 0; i < N; i++)
        free(toks[i]);
    free(toks);
}

/* Values larger than the reader's buffer: direct reads and refills. */
static void test_large_values(void **state)
{
    (void)state;
    enum { NF = 1 << 20, NS = 5 };
    static const size_t slen[NS] = {700000, 100000, 3, 300001, 524288};
    float *fv = malloc(NF * sizeof *fv);
    char *strs[NS];
    struct gguf_writer *w;
    struct gguf_file *f;
    char err[512];
    uint64_t seed = 3;
    const char *path = tpath("large.gguf");

    for (int i = 0; i < NF; i++)
        fv[i] = test_rand_f(&seed);
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    gguf_writer_kv_u32(w, "first", 1);
    for (int i = 0; i < NS; i++) {
        char key[16];
        strs[i] = malloc(slen[i] + 1);
        for (size_t k = 0; k < slen[i]; k++)
            strs[i][k] = (char)('a' + test_rand_u64(&seed) % 26);
        strs[i][slen[i]] = '\0';
        snprintf(key, sizeof key, "str%d", i);
        gguf_writer_kv_str(w, key, strs[i]);
    }
    gguf_writer_kv_arr_f32(w, "floats", fv, NF);
    gguf_writer_kv_arr_str(w, "strs", (const char *const *)strs, NS);
    gguf_writer_kv_u32(w, "last", 2);
    ASSERT_OK(gguf_writer_finish(w));

    ASSERT_OK(gguf_open(&f, path, err, sizeof err));
    const struct gguf_value *arr;
    const char *s;
    uint32_t u32;
    for (int i = 0; i < NS; i++) {
        char key[16];
        snprintf(key, sizeof key, "str%d", i);
        ASSERT_OK(gguf_get_str(f, key, &s));
        assert_int_equal(strlen(s), slen[i]);
        assert_memory_equal(s, strs[i], slen[i]);
    }
    ASSERT_OK(gguf_get_arr(f, "floats", &arr));
    assert_int_equal(arr->arr.n, NF);
    assert_memory_equal(arr->arr.data, fv, NF * sizeof *fv);
    ASSERT_OK(gguf_get_arr(f, "strs", &arr));
    for (int i = 0; i < NS; i++)
        assert_memory_equal(((struct gguf_str *)arr->arr.data)[i].s, strs[i], slen[i] + 1);
    ASSERT_OK(gguf_get_u32(f, "last", &u32));
    assert_int_equal(u32, 2);
    uint64_t size = f->file_size;
    gguf_close(f);

    /* Cut inside the strings and the float array (shrinking: truncate()
     * would extend the file with zeros). */
    const uint64_t cuts[] = {size - 100, size / 2, 1000000, 200000};
    for (int k = 0; k < 4; k++) {
        ASSERT_OK(truncate(path, (off_t)cuts[k]));
        int rc = gguf_open(&f, path, err, sizeof err);
        if (rc != ERR_MODEL_FORMAT || (!strstr(err, "truncated file") &&
                                           !strstr(err, "cannot fit in the file")))
            fail_msg("cut at %" PRIu64 ": rc %d: %s", cuts[k], rc, err);
    }
    for (int i = 0; i < NS; i++)
        free(strs[i]);
    free(fv);
}

/* ---- malformed files ---- */

static void test_open_missing(void **state)
{
    (void)state;
    char err[256];
    struct gguf_file *f;
    assert_int_equal(gguf_open(&f, tpath("missing.gguf"), err, sizeof err), -ENOENT);
    assert_null(f);
    assert_non_null(strstr(err, "missing.gguf: cannot open: No such file or directory"));
    assert_int_equal(gguf_open(&f, g_dir, err, sizeof err), -EISDIR);
    assert_int_equal(gguf_open(&f, "/dev/null", err, sizeof err), ERR_MODEL_FORMAT);
    assert_string_equal(err, "/dev/null: not a regular file");
}

static void test_bad_magic(void **state)
{
    (void)state;
    struct bb b = {0};
    bb_put(&b, "GGUG", 4);
    bb_u32(&b, 3);
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "not a GGUF file (bad magic 47 47 55 47)");
    bb_put(&b, "GG", 2);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "not a GGUF file");
}

static void test_bad_version(void **state)
{
    (void)state;
    struct bb b = {0};
    bb_hdr(&b, 1, 0, 0);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "unsupported GGUF version 1");
    bb_hdr(&b, 4, 0, 0);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "unsupported GGUF version 4");
    bb_hdr(&b, 0x03000000, 0, 0);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "big-endian");
}

static int truncation_msg_ok(const char *err)
{
    return strstr(err, "truncated file") || strstr(err, "past the end of the file") ||
           strstr(err, "cannot fit in the file") || strstr(err, "not a GGUF file");
}

/* Every prefix of a valid file up to the data section, and a few inside it. */
static void test_truncated_everywhere(void **state)
{
    (void)state;
    size_t total, n;
    char err[512];
    struct gguf_file *f;
    const char *src = tpath("trunc-src.gguf");
    free(rt_write(src, 32, true, &total));
    uint8_t *full = read_all(src, &n);
    ASSERT_OK(gguf_open(&f, src, err, sizeof err));
    uint64_t data_offset = f->data_offset;
    uint64_t last_end = f->tensors[f->n_tensors - 1].offset + f->tensors[f->n_tensors - 1].size;
    gguf_close(f);

    const char *path = tpath("trunc.gguf");
    for (size_t len = 0; len <= data_offset; len++) {
        write_bytes(path, full, len);
        int rc = gguf_open(&f, path, err, sizeof err);
        if (rc != ERR_MODEL_FORMAT || !truncation_msg_ok(err))
            fail_msg("length %zu: rc %d (%s): %s", len, rc, err_name(rc), err);
        assert_null(f);
    }
    const size_t in_data[] = {data_offset + 1, data_offset + 100, data_offset + last_end - 1};
    for (size_t k = 0; k < 3; k++) {
        write_bytes(path, full, in_data[k]);
        int rc = gguf_open(&f, path, err, sizeof err);
        char want[128];
        snprintf(want, sizeof want, "past the end of the file (size %zu)", in_data[k]);
        if (rc != ERR_MODEL_FORMAT || !strstr(err, want) || !strstr(err, "tensor '"))
            fail_msg("length %zu: rc %d: %s", in_data[k], rc, err);
    }
    /* The complete tensor data without the final padding is fine. */
    write_bytes(path, full, data_offset + last_end);
    ASSERT_OK(gguf_open(&f, path, err, sizeof err));
    gguf_close(f);
    free(full);
}

static void test_truncated_message(void **state)
{
    (void)state;
    struct bb b = {0};
    bb_hdr(&b, 3, 0, 4);
    bb_kv_u32(&b, "a", 1);
    bb_kv_u32(&b, "b", 2);
    bb_kv_u32(&b, "c", 3);
    bb_str(&b, "general.name");
    bb_u32(&b, GGUF_VTYPE_STRING);
    bb_u64(&b, 10);
    bb_put(&b, "abc", 3);
    char want[160];
    snprintf(want, sizeof want,
             "truncated file: metadata key 3 ('general.name'): a string of 10 bytes runs past the end of the file (size %zu)",
             b.n);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, want);

    bb_hdr(&b, 3, 0, 2);
    bb_kv_u32(&b, "a", 1);
    bb_str(&b, "general.name");
    bb_u32(&b, GGUF_VTYPE_UINT32);
    bb_put(&b, "ab", 2);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT,
                "truncated file: metadata key 1 ('general.name') runs past the end of the file (size");
}

static void test_huge_counts(void **state)
{
    (void)state;
    struct bb b = {0};
    bb_hdr(&b, 3, 0, 1ull << 60);
    bb_kv_u32(&b, "a", 1);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "metadata key count 1152921504606846976 cannot fit in the file");
    bb_hdr(&b, 3, 1ull << 60, 0);
    bb_zeros(&b, 64);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "tensor count 1152921504606846976 cannot fit in the file");
    bb_hdr(&b, 3, UINT64_MAX, UINT64_MAX);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "cannot fit in the file");
    bb_hdr(&b, 3, 2, 2); /* each fits alone, not together */
    bb_zeros(&b, 80);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "2 metadata keys and 2 tensors cannot fit");
}

static void test_huge_string(void **state)
{
    (void)state;
    struct bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 1ull << 62); /* key length */
    bb_zeros(&b, 20);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "metadata key 0: a string of 4611686018427387904 bytes runs past the end");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_VTYPE_STRING);
    bb_u64(&b, UINT64_MAX);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "metadata key 0 ('k'): a string of 18446744073709551615 bytes");
}

static void test_huge_array(void **state)
{
    (void)state;
    struct bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "tokenizer.ggml.scores");
    bb_u32(&b, GGUF_VTYPE_ARRAY);
    bb_u32(&b, GGUF_VTYPE_FLOAT32);
    bb_u64(&b, 1ull << 61);
    bb_zeros(&b, 16);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT,
                "metadata key 0 ('tokenizer.ggml.scores'): an array of 2305843009213693952 float32 values cannot fit");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "tokenizer.ggml.tokens");
    bb_u32(&b, GGUF_VTYPE_ARRAY);
    bb_u32(&b, GGUF_VTYPE_STRING);
    bb_u64(&b, 3); /* 3 strings need at least 24 bytes */
    bb_zeros(&b, 23);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "an array of 3 string values cannot fit");
}

static void test_invalid_value_type(void **state)
{
    (void)state;
    struct bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, 13);
    bb_u32(&b, 0);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "metadata key 0 ('k') has invalid value type 13");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_VTYPE_ARRAY);
    bb_u32(&b, 99);
    bb_u64(&b, 0);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "metadata key 0 ('k') has invalid array element type 99");
}

static void test_nested_too_deep(void **state)
{
    (void)state;
    struct bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "deep");
    bb_u32(&b, GGUF_VTYPE_ARRAY);
    for (int i = 0; i < 100; i++) {
        bb_u32(&b, GGUF_VTYPE_ARRAY);
        bb_u64(&b, 1);
    }
    bb_u32(&b, GGUF_VTYPE_UINT8);
    bb_u64(&b, 0);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "nested deeper than");
}

static void test_bad_n_dims(void **state)
{
    (void)state;
    struct bb b = {0};
    const uint64_t ne[5] = {32, 1, 1, 1, 1};
    bb_one_tensor(&b, BE_TYPE_F32, 0, ne, 0, 128);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "tensor 'blk.0.ffn_up.weight' has 0 dimensions (must be 1 to 4)");
    bb_one_tensor(&b, BE_TYPE_F32, 5, ne, 0, 128);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "tensor 'blk.0.ffn_up.weight' has 5 dimensions");
}

static void test_bad_ne(void **state)
{
    (void)state;
    struct bb b = {0};
    const uint64_t zero[] = {32, 0};
    bb_one_tensor(&b, BE_TYPE_F32, 2, zero, 0, 128);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "has invalid size 0 in dimension 1");
    const uint64_t neg[] = {1ull << 63};
    bb_one_tensor(&b, BE_TYPE_F32, 1, neg, 0, 128);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "has invalid size 9223372036854775808 in dimension 0");
    const uint64_t ovf[] = {1ull << 32, 1ull << 31};
    bb_one_tensor(&b, BE_TYPE_F32, 2, ovf, 0, 128);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "overflows int64");
    const uint64_t bytes_ovf[] = {1ull << 62};
    bb_one_tensor(&b, BE_TYPE_F32, 1, bytes_ovf, 0, 128);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "is too large");
    const uint64_t big[] = {1ull << 40};
    bb_one_tensor(&b, BE_TYPE_F32, 1, big, 0, 128);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "past the end of the file");
}

static void test_bad_type(void **state)
{
    (void)state;
    struct bb b = {0};
    const uint64_t ne[] = {256};
    bb_one_tensor(&b, 16, 1, ne, 0, 1024);
    EXPECT_FAIL(&b, ERR_MODEL_TYPE, "tensor 'blk.0.ffn_up.weight' has unsupported type iq2_xxs");
    bb_one_tensor(&b, 17, 1, ne, 0, 1024);
    EXPECT_FAIL(&b, ERR_MODEL_TYPE, "tensor 'blk.0.ffn_up.weight' has unsupported type iq2_xs");
    bb_one_tensor(&b, 15, 1, ne, 0, 1024);
    EXPECT_FAIL(&b, ERR_MODEL_TYPE, "has unsupported type q8_K (used for activations only)");
    bb_one_tensor(&b, BE_TYPE_Q8_1, 1, ne, 0, 1024);
    EXPECT_FAIL(&b, ERR_MODEL_TYPE, "has unsupported type q8_1");
    bb_one_tensor(&b, 1000, 1, ne, 0, 1024);
    EXPECT_FAIL(&b, ERR_MODEL_TYPE, "has unsupported type type 1000");
}

static void test_row_not_block_multiple(void **state)
{
    (void)state;
    struct bb b = {0};
    const uint64_t ne[] = {33, 2};
    bb_one_tensor(&b, BE_TYPE_Q8_0, 2, ne, 0, 1024);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "has row length 33, not a multiple of the q8_0 block size 32");
    const uint64_t ne2[] = {128};
    bb_one_tensor(&b, BE_TYPE_Q4_K, 1, ne2, 0, 1024);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "not a multiple of the q4_K block size 256");
}

static void test_misaligned_offset(void **state)
{
    (void)state;
    struct bb b = {0};
    const uint64_t ne[] = {8};
    bb_one_tensor(&b, BE_TYPE_F32, 1, ne, 16, 128);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "tensor 'blk.0.ffn_up.weight' offset 16 is not a multiple of the alignment 32");
}

static void test_overlap(void **state)
{
    (void)state;
    struct bb b = {0};
    const uint64_t ne[] = {16};
    bb_hdr(&b, 3, 3, 0);
    bb_tinfo(&b, "c", 1, ne, BE_TYPE_F32, 128);
    bb_tinfo(&b, "a", 1, ne, BE_TYPE_F32, 0);
    bb_tinfo(&b, "b", 1, ne, BE_TYPE_F32, 32); /* a covers 0..64 */
    bb_pad(&b, 32);
    bb_zeros(&b, 256);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "tensors 'a' (data bytes 0..64) and 'b' (data bytes 32..96) overlap");
    /* Touching is fine. */
    struct gguf_file *f;
    char err[256];
    bb_hdr(&b, 3, 2, 0);
    bb_tinfo(&b, "a", 1, ne, BE_TYPE_F32, 0);
    bb_tinfo(&b, "b", 1, ne, BE_TYPE_F32, 64);
    bb_pad(&b, 32);
    bb_zeros(&b, 128);
    write_bytes(tpath("touch.gguf"), b.p, b.n);
    ASSERT_OK(gguf_open(&f, tpath("touch.gguf"), err, sizeof err));
    gguf_close(f);
    free(b.p);
}

static void test_bad_alignment(void **state)
{
    (void)state;
    const uint32_t bad[] = {0, 3, 48};
    for (int i = 0; i < 3; i++) {
        struct bb b = {0};
        char want[96];
        bb_hdr(&b, 3, 0, 1);
        bb_kv_u32(&b, "general.alignment", bad[i]);
        snprintf(want, sizeof want, "general.alignment %u is not a nonzero power of two", bad[i]);
        EXPECT_FAIL(&b, ERR_MODEL_FORMAT, want);
    }
    struct bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, GGUF_VTYPE_UINT64);
    bb_u64(&b, 64);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "general.alignment has type uint64 (must be uint32)");
}

static void test_duplicate_key(void **state)
{
    (void)state;
    struct bb b = {0};
    bb_hdr(&b, 3, 0, 3);
    bb_kv_u32(&b, "a", 1);
    bb_kv_u32(&b, "general.name", 2);
    bb_kv_str(&b, "general.name", "x");
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "duplicate metadata key 'general.name' (keys 1 and 2)");
}

static void test_duplicate_tensor(void **state)
{
    (void)state;
    struct bb b = {0};
    const uint64_t ne[] = {8};
    bb_hdr(&b, 3, 2, 0);
    bb_tinfo(&b, "w", 1, ne, BE_TYPE_F32, 0);
    bb_tinfo(&b, "w", 1, ne, BE_TYPE_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "duplicate tensor name 'w' (tensors 0 and 1)");
}

static void test_nul_in_names(void **state)
{
    (void)state;
    struct bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, GGUF_VTYPE_UINT8);
    bb_u8(&b, 1);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "metadata key 0 ('a') contains a NUL byte");
    const uint64_t ne[] = {8};
    bb_hdr(&b, 3, 1, 0);
    bb_u64(&b, 2);
    bb_put(&b, "w\0", 2);
    bb_u32(&b, 1);
    bb_u64(&b, ne[0]);
    bb_u32(&b, BE_TYPE_F32);
    bb_u64(&b, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "has a NUL byte in its name");
}

static void test_tensor_past_eof(void **state)
{
    (void)state;
    struct bb b = {0};
    const uint64_t ne[] = {64, 2};
    bb_one_tensor(&b, BE_TYPE_F32, 2, ne, 0, 500);
    size_t data = b.n - 500;
    char want[160];
    snprintf(want, sizeof want,
             "tensor 'blk.0.ffn_up.weight' ends at byte %zu, past the end of the file (size %zu)",
             data + 512, b.n);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, want);
    const uint64_t one[] = {8};
    bb_one_tensor(&b, BE_TYPE_F32, 1, one, UINT64_MAX - 31, 500);
    EXPECT_FAIL(&b, ERR_MODEL_FORMAT, "runs past the end of the file");
}

static void test_escaped_names(void **state)
{
    (void)state;
    struct bb b = {0};
    const uint64_t ne[] = {8};
    bb_hdr(&b, 3, 1, 0);
    bb_str(&b, "bad\nname'\x01");
    bb_u32(&b, 1);
    bb_u64(&b, ne[0]);
    bb_u32(&b, 17);
    bb_u64(&b, 0);
    EXPECT_FAIL(&b, ERR_MODEL_TYPE, "tensor 'bad\\x0aname\\x27\\x01' has unsupported type iq2_xs");
}

/* ---- the file changes under an open reader ---- */

static void test_file_changed(void **state)
{
    (void)state;
    size_t total;
    char err[256];
    struct gguf_file *f;
    uint8_t buf[64];
    const char *path = tpath("chg.gguf"), *other = tpath("chg2.gguf");

    free(rt_write(path, 32, false, &total));
    ASSERT_OK(gguf_open(&f, path, err, sizeof err));
    ASSERT_OK(gguf_read_tensor(f, &f->tensors[0], 0, 16, buf));
    ASSERT_OK(truncate(path, (off_t)f->file_size - 1));
    assert_int_equal(gguf_read_tensor(f, &f->tensors[0], 0, 16, buf), ERR_MODEL_CHANGED);
    assert_int_equal(gguf_check_unchanged(f), ERR_MODEL_CHANGED);
    gguf_close(f);

    /* Replaced by rename with a file of identical content and size. */
    free(rt_write(path, 32, false, &total));
    free(rt_write(other, 32, false, &total));
    ASSERT_OK(gguf_open(&f, path, err, sizeof err));
    ASSERT_OK(gguf_read_at(f, 0, 4, buf));
    ASSERT_OK(rename(other, path));
    assert_int_equal(gguf_read_tensor(f, &f->tensors[1], 0, 16, buf), ERR_MODEL_CHANGED);
    assert_int_equal(gguf_read_at(f, 0, 4, buf), ERR_MODEL_CHANGED);
    gguf_close(f);

    /* Removed. */
    ASSERT_OK(gguf_open(&f, path, err, sizeof err));
    ASSERT_OK(unlink(path));
    assert_int_equal(gguf_read_tensor(f, &f->tensors[0], 0, 16, buf), ERR_MODEL_CHANGED);
    gguf_close(f);
}

/* ---- typed getters ---- */

static void test_getters(void **state)
{
    (void)state;
    struct gguf_writer *w;
    struct gguf_file *f;
    char err[256];
    struct gguf_value v;
    static const uint16_t a16[] = {1, 65535};
    static const double af64[] = {1.5, -1e300};
    static const int8_t ai8[] = {-3};
    static const uint8_t abool[] = {0, 1};
    static struct gguf_str astr[] = {{1, "z"}};

    ASSERT_OK(gguf_writer_init(&w, tpath("get.gguf"), 0));
    v = sv_u(GGUF_VTYPE_UINT8, 200); gguf_writer_kv(w, "u8", &v);
    v = sv_i(GGUF_VTYPE_INT8, -5); gguf_writer_kv(w, "i8neg", &v);
    v = sv_i(GGUF_VTYPE_INT16, 300); gguf_writer_kv(w, "i16", &v);
    gguf_writer_kv_u32(w, "u32max", UINT32_MAX);
    gguf_writer_kv_u64(w, "u64big", 1ull << 40);
    gguf_writer_kv_u64(w, "u64small", 77);
    v = sv_i(GGUF_VTYPE_INT64, -(1ll << 40)); gguf_writer_kv(w, "i64neg", &v);
    v = sv_i(GGUF_VTYPE_INT64, -7); gguf_writer_kv(w, "i64small", &v);
    gguf_writer_kv_i32(w, "i32min", INT32_MIN);
    v = sv_f(GGUF_VTYPE_FLOAT64, 1.5); gguf_writer_kv(w, "f64", &v);
    v = sv_f(GGUF_VTYPE_FLOAT64, 1e300); gguf_writer_kv(w, "f64huge", &v);
    gguf_writer_kv_f32(w, "f32", -2.25f);
    gguf_writer_kv_bool(w, "bool", true);
    gguf_writer_kv_str(w, "str", "s");
    v = sv_arr(GGUF_VTYPE_UINT16, 2, a16); gguf_writer_kv(w, "arr_u16", &v);
    v = sv_arr(GGUF_VTYPE_FLOAT64, 2, af64); gguf_writer_kv(w, "arr_f64", &v);
    v = sv_arr(GGUF_VTYPE_INT8, 1, ai8); gguf_writer_kv(w, "arr_i8", &v);
    v = sv_arr(GGUF_VTYPE_BOOL, 2, abool); gguf_writer_kv(w, "arr_bool", &v);
    v = sv_arr(GGUF_VTYPE_STRING, 1, astr); gguf_writer_kv(w, "arr_str", &v);
    ASSERT_OK(gguf_writer_finish(w));
    ASSERT_OK(gguf_open(&f, tpath("get.gguf"), err, sizeof err));

    uint32_t u32;
    uint64_t u64;
    int32_t i32;
    float f32;
    bool b;
    const char *s;
    const struct gguf_value *arr;

    /* Missing keys. */
    assert_int_equal(gguf_get_u32(f, "nope", &u32), -ENOENT);
    assert_int_equal(gguf_get_u64(f, "nope", &u64), -ENOENT);
    assert_int_equal(gguf_get_i32(f, "nope", &i32), -ENOENT);
    assert_int_equal(gguf_get_f32(f, "nope", &f32), -ENOENT);
    assert_int_equal(gguf_get_bool(f, "nope", &b), -ENOENT);
    assert_int_equal(gguf_get_str(f, "nope", &s), -ENOENT);
    assert_int_equal(gguf_get_arr(f, "nope", &arr), -ENOENT);

    /* Widening and narrowing with range checks. */
    ASSERT_OK(gguf_get_u32(f, "u8", &u32));
    assert_int_equal(u32, 200);
    ASSERT_OK(gguf_get_i32(f, "u8", &i32));
    assert_int_equal(i32, 200);
    ASSERT_OK(gguf_get_u64(f, "i16", &u64));
    assert_int_equal(u64, 300);
    assert_int_equal(gguf_get_u32(f, "i8neg", &u32), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_u64(f, "i8neg", &u64), ERR_MODEL_FORMAT);
    ASSERT_OK(gguf_get_i32(f, "i8neg", &i32));
    assert_int_equal(i32, -5);
    ASSERT_OK(gguf_get_u32(f, "u32max", &u32));
    assert_int_equal(u32, UINT32_MAX);
    assert_int_equal(gguf_get_i32(f, "u32max", &i32), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_u32(f, "u64big", &u32), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_i32(f, "u64big", &i32), ERR_MODEL_FORMAT);
    ASSERT_OK(gguf_get_u64(f, "u64big", &u64));
    assert_true(u64 == 1ull << 40);
    ASSERT_OK(gguf_get_u32(f, "u64small", &u32));
    assert_int_equal(u32, 77);
    assert_int_equal(gguf_get_i32(f, "i64neg", &i32), ERR_MODEL_FORMAT);
    ASSERT_OK(gguf_get_i32(f, "i64small", &i32));
    assert_int_equal(i32, -7);
    ASSERT_OK(gguf_get_i32(f, "i32min", &i32));
    assert_int_equal(i32, INT32_MIN);

    /* Floats accept floats and integers. */
    ASSERT_OK(gguf_get_f32(f, "f64", &f32));
    assert_true(f32 == 1.5f);
    ASSERT_OK(gguf_get_f32(f, "f32", &f32));
    assert_true(f32 == -2.25f);
    ASSERT_OK(gguf_get_f32(f, "i8neg", &f32));
    assert_true(f32 == -5.0f);
    ASSERT_OK(gguf_get_f32(f, "u8", &f32));
    assert_true(f32 == 200.0f);
    assert_int_equal(gguf_get_f32(f, "f64huge", &f32), ERR_MODEL_FORMAT);

    /* Type mismatches. */
    assert_int_equal(gguf_get_u32(f, "f32", &u32), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_u32(f, "str", &u32), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_u32(f, "bool", &u32), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_i32(f, "arr_u16", &i32), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_f32(f, "str", &f32), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_f32(f, "bool", &f32), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_bool(f, "u8", &b), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_str(f, "u8", &s), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_str(f, "arr_str", &s), ERR_MODEL_FORMAT);
    assert_int_equal(gguf_get_arr(f, "str", &arr), ERR_MODEL_FORMAT);
    ASSERT_OK(gguf_get_bool(f, "bool", &b));
    assert_true(b);
    ASSERT_OK(gguf_get_str(f, "str", &s));
    assert_string_equal(s, "s");

    /* Array elements. */
    ASSERT_OK(gguf_get_arr(f, "arr_u16", &arr));
    assert_int_equal(gguf_arr_get_i64(arr, 1), 65535);
    assert_true(gguf_arr_get_f64(arr, 0) == 1.0);
    ASSERT_OK(gguf_get_arr(f, "arr_f64", &arr));
    assert_true(gguf_arr_get_f64(arr, 1) == -1e300);
    assert_int_equal(gguf_arr_get_i64(arr, 0), 1);
    assert_true(gguf_arr_get_i64(arr, 1) == INT64_MIN);
    ASSERT_OK(gguf_get_arr(f, "arr_i8", &arr));
    assert_int_equal(gguf_arr_get_i64(arr, 0), -3);
    ASSERT_OK(gguf_get_arr(f, "arr_bool", &arr));
    assert_int_equal(gguf_arr_get_i64(arr, 1), 1);
    assert_string_equal(gguf_vtype_name(GGUF_VTYPE_UINT32), "uint32");
    assert_string_equal(gguf_vtype_name(GGUF_VTYPE_ARRAY), "array");
    assert_string_equal(gguf_vtype_name(99), "invalid");
    gguf_close(f);
}

/* ---- writer errors ---- */

static void test_writer_errors(void **state)
{
    (void)state;
    struct gguf_writer *w;
    const int64_t ne[] = {32}, bad_ne[] = {33};
    uint8_t data[200] = {0};
    struct stat st;
    const char *path = tpath("werr.gguf");

    assert_int_equal(gguf_writer_init(&w, path, 3), -EINVAL);
    assert_null(w);
    assert_int_equal(gguf_writer_init(&w, tpath("no/such/dir.gguf"), 0), -ENOENT);

    /* An incomplete tensor fails finish and removes the file. */
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    gguf_writer_tensor(w, "t", 1, ne, BE_TYPE_F32);
    ASSERT_OK(gguf_writer_begin_data(w));
    ASSERT_OK(gguf_writer_write(w, data, 100));
    assert_int_equal(gguf_writer_finish(w), ERR_INVALID);
    assert_int_equal(stat(path, &st), -1);

    /* Too much data. */
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    gguf_writer_tensor(w, "t", 1, ne, BE_TYPE_F32);
    ASSERT_OK(gguf_writer_begin_data(w));
    assert_int_equal(gguf_writer_write(w, data, 129), ERR_INVALID);
    assert_int_equal(gguf_writer_write(w, data, 1), ERR_INVALID); /* sticky */
    gguf_writer_abort(w);
    assert_int_equal(stat(path, &st), -1);

    /* Invalid declarations are reported by the next int call. */
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    gguf_writer_tensor(w, "t", 1, bad_ne, BE_TYPE_Q8_0);
    assert_int_equal(gguf_writer_begin_data(w), ERR_INVALID);
    assert_int_equal(gguf_writer_finish(w), ERR_INVALID);
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    gguf_writer_tensor(w, "t", 1, ne, 17);
    assert_int_equal(gguf_writer_finish(w), ERR_INVALID);
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    gguf_writer_tensor(w, "t", 0, ne, BE_TYPE_F32);
    assert_int_equal(gguf_writer_finish(w), ERR_INVALID);
    const int64_t zero_ne[] = {32, 0};
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    gguf_writer_tensor(w, "t", 2, zero_ne, BE_TYPE_F32);
    assert_int_equal(gguf_writer_finish(w), ERR_INVALID);
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    gguf_writer_kv_u32(w, "k", 1);
    gguf_writer_kv_u32(w, "k", 2);
    assert_int_equal(gguf_writer_begin_data(w), ERR_INVALID);
    gguf_writer_abort(w);
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    gguf_writer_tensor(w, "t", 1, ne, BE_TYPE_F32);
    gguf_writer_tensor(w, "t", 1, ne, BE_TYPE_F32);
    assert_int_equal(gguf_writer_begin_data(w), ERR_INVALID);
    gguf_writer_abort(w);
    ASSERT_OK(gguf_writer_init(&w, path, 64));
    gguf_writer_kv_u32(w, "general.alignment", 32);
    assert_int_equal(gguf_writer_begin_data(w), ERR_INVALID);
    gguf_writer_abort(w);
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    ASSERT_OK(gguf_writer_begin_data(w));
    gguf_writer_kv_u32(w, "late", 1);
    assert_int_equal(gguf_writer_finish(w), ERR_INVALID);
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    struct gguf_value bad = sv_arr(GGUF_VTYPE_ARRAY, 1, &(struct gguf_value){.type = GGUF_VTYPE_UINT8});
    gguf_writer_kv(w, "bad", &bad);
    assert_int_equal(gguf_writer_finish(w), ERR_INVALID);
    gguf_writer_abort(NULL);

    /* Write errors (ENOSPC) come back from the next int call; the device
     * node must survive. */
    if (access("/dev/full", W_OK) == 0) {
        ASSERT_OK(gguf_writer_init(&w, "/dev/full", 0));
        gguf_writer_kv_u32(w, "k", 1);
        int rc = gguf_writer_begin_data(w);
        if (rc == 0)
            rc = gguf_writer_finish(w);
        else
            assert_int_equal(gguf_writer_finish(w), rc);
        assert_int_equal(rc, -ENOSPC);
        assert_int_equal(stat("/dev/full", &st), 0);
        assert_true(S_ISCHR(st.st_mode));
    }
}

/* With MOED_GGUF_SEED_DIR set, writes the fuzzer's seed files there. */
static void test_write_seeds(void **state)
{
    (void)state;
    const char *dir = getenv("MOED_GGUF_SEED_DIR");
    char path[512];
    struct gguf_writer *w;
    size_t total;
    if (!dir || !*dir)
        return;

    snprintf(path, sizeof path, "%s/empty.gguf", dir);
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    ASSERT_OK(gguf_writer_finish(w));

    snprintf(path, sizeof path, "%s/kv-all-types.gguf", dir);
    struct rt_kv kv[64];
    size_t nkv = rt_kvs(kv);
    ASSERT_OK(gguf_writer_init(&w, path, 0));
    for (size_t i = 0; i < nkv; i++)
        gguf_writer_kv(w, kv[i].key, &kv[i].v);
    ASSERT_OK(gguf_writer_finish(w));

    snprintf(path, sizeof path, "%s/tensors-align64.gguf", dir);
    free(rt_write(path, 64, false, &total));
    snprintf(path, sizeof path, "%s/full-align32.gguf", dir);
    free(rt_write(path, 32, true, &total));

    struct bb b = {0};
    const uint64_t ne[] = {32, 2};
    bb_hdr(&b, 2, 1, 2);
    bb_kv_u32(&b, "general.alignment", 16);
    bb_kv_str(&b, "general.name", "v2");
    bb_tinfo(&b, "w", 2, ne, BE_TYPE_Q8_0, 0);
    bb_pad(&b, 16);
    bb_zeros(&b, 68);
    snprintf(path, sizeof path, "%s/v2-q8_0.gguf", dir);
    write_bytes(path, b.p, b.n);
    free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_align32),
        cmocka_unit_test(test_roundtrip_align64),
        cmocka_unit_test(test_writer_exact_bytes),
        cmocka_unit_test(test_version2_accepted),
        cmocka_unit_test(test_no_tensors),
        cmocka_unit_test(test_large_vocab_speed),
        cmocka_unit_test(test_large_values),
        cmocka_unit_test(test_open_missing),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_bad_version),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_truncated_message),
        cmocka_unit_test(test_huge_counts),
        cmocka_unit_test(test_huge_string),
        cmocka_unit_test(test_huge_array),
        cmocka_unit_test(test_invalid_value_type),
        cmocka_unit_test(test_nested_too_deep),
        cmocka_unit_test(test_bad_n_dims),
        cmocka_unit_test(test_bad_ne),
        cmocka_unit_test(test_bad_type),
        cmocka_unit_test(test_row_not_block_multiple),
        cmocka_unit_test(test_misaligned_offset),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_bad_alignment),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_duplicate_tensor),
        cmocka_unit_test(test_nul_in_names),
        cmocka_unit_test(test_tensor_past_eof),
        cmocka_unit_test(test_escaped_names),
        cmocka_unit_test(test_file_changed),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_write_seeds),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown) ? 1 : 0;
}
