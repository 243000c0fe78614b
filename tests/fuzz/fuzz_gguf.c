/* SPDX-License-Identifier: MIT */
/*
 * fuzz_gguf.c - libFuzzer harness for the GGUF reader (engine/gguf.c).
 *
 * Each input is written to a fresh memfd and opened through its
 * /proc/self/fd path, the way the server opens a model. When gguf_open()
 * accepts it, the harness reads the first bytes of every tensor, calls every
 * typed getter on every key and touches every array element it can, then
 * writes the parsed file back with the streaming writer, reopens the copy
 * and checks it is the same: anything the reader accepts the writer must
 * reproduce. A crash, a sanitizer report or a mismatch (abort) is a finding.
 */
#include "engine/gguf.h"

#include "common/err.h"
#include "common/log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHECK(x)                                                                   \
    do {                                                                           \
        if (!(x)) {                                                                \
            fprintf(stderr, "fuzz_gguf: %s:%d: check failed: %s\n", __FILE__,      \
                    __LINE__, #x);                                                 \
            abort();                                                               \
        }                                                                          \
    } while (0)

static int memfd_with(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz_gguf", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    return fd;
}

static size_t elem_size(uint32_t t)
{
    static const size_t sz[GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GGUF_VTYPE_COUNT ? sz[t] : 0;
}

/* Touches every part of an array value. */
static uint64_t walk_array(const struct gguf_value *v, int depth)
{
    uint64_t acc = 0;
    CHECK(v->type == GGUF_VTYPE_ARRAY && depth < 64);
    CHECK(v->arr.n == 0 || v->arr.data != NULL);
    if (v->arr.type == GGUF_VTYPE_STRING) {
        const struct gguf_str *s = v->arr.data;
        for (uint64_t i = 0; i < v->arr.n; i++) {
            CHECK(s[i].s[s[i].len] == '\0');
            acc += s[i].len;
        }
    } else if (v->arr.type == GGUF_VTYPE_ARRAY) {
        const struct gguf_value *e = v->arr.data;
        for (uint64_t i = 0; i < v->arr.n; i++)
            acc += walk_array(&e[i], depth + 1);
    } else {
        CHECK(elem_size(v->arr.type) != 0);
        for (uint64_t i = 0; i < v->arr.n; i++) {
            double d = gguf_arr_get_f64(v, i);
            int64_t x = gguf_arr_get_i64(v, i);
            acc += (uint64_t)x + (d == d);
        }
    }
    return acc;
}

static bool value_eq(const struct gguf_value *a, const struct gguf_value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case GGUF_VTYPE_STRING:
        return a->str.len == b->str.len && memcmp(a->str.s, b->str.s, a->str.len) == 0;
    case GGUF_VTYPE_ARRAY:
        if (a->arr.type != b->arr.type || a->arr.n != b->arr.n)
            return false;
        if (a->arr.type == GGUF_VTYPE_STRING) {
            const struct gguf_str *x = a->arr.data, *y = b->arr.data;
            for (uint64_t i = 0; i < a->arr.n; i++)
                if (x[i].len != y[i].len || memcmp(x[i].s, y[i].s, x[i].len) != 0)
                    return false;
            return true;
        }
        if (a->arr.type == GGUF_VTYPE_ARRAY) {
            const struct gguf_value *x = a->arr.data, *y = b->arr.data;
            for (uint64_t i = 0; i < a->arr.n; i++)
                if (!value_eq(&x[i], &y[i]))
                    return false;
            return true;
        }
        return a->arr.n == 0 ||
               memcmp(a->arr.data, b->arr.data, a->arr.n * elem_size(a->arr.type)) == 0;
    case GGUF_VTYPE_BOOL:
        return a->b == b->b;
    case GGUF_VTYPE_FLOAT32:
    case GGUF_VTYPE_FLOAT64:
        return memcmp(&a->f, &b->f, sizeof a->f) == 0 || (a->f != a->f && b->f != b->f);
    default:
        return a->u == b->u;
    }
}

/* Writes f back with the writer into a memfd, reopens it, compares. */
static void rewrite_and_compare(const struct gguf_file *f)
{
    char path[64], err[512];
    uint64_t total = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        total += f->tensors[i].size;
    /* Huge alignments would make the copy mostly padding; skip them. */
    if (f->alignment > 4096 || total > (1u << 20))
        return;
    int fd = memfd_create("fuzz_gguf_out", MFD_CLOEXEC);
    if (fd < 0)
        return;
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    struct gguf_writer *w;
    CHECK(gguf_writer_init(&w, path, (uint32_t)f->alignment) == 0);
    for (uint64_t i = 0; i < f->n_kv; i++)
        gguf_writer_kv(w, f->kv[i].key, &f->kv[i].v);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        gguf_writer_tensor(w, t->name, t->n_dims, t->ne, t->type);
    }
    CHECK(gguf_writer_begin_data(w) == 0);
    uint8_t *buf = malloc(total + 1);
    CHECK(buf);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        CHECK(gguf_read_tensor(f, t, 0, t->size, buf) == 0);
        CHECK(gguf_writer_write(w, buf, t->size) == 0);
    }
    CHECK(gguf_writer_finish(w) == 0);

    struct gguf_file *g;
    int rc = gguf_open(&g, path, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "fuzz_gguf: rewritten file refused: %s\n", err);
        abort();
    }
    CHECK(g->n_kv == f->n_kv && g->n_tensors == f->n_tensors && g->alignment == f->alignment);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        CHECK(strcmp(g->kv[i].key, f->kv[i].key) == 0);
        CHECK(value_eq(&g->kv[i].v, &f->kv[i].v));
    }
    uint8_t *buf2 = malloc(total + 1);
    CHECK(buf2);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *a = &f->tensors[i], *b = &g->tensors[i];
        CHECK(strcmp(a->name, b->name) == 0 && a->n_dims == b->n_dims && a->type == b->type &&
              a->size == b->size && memcmp(a->ne, b->ne, sizeof a->ne) == 0);
        CHECK(gguf_read_tensor(f, a, 0, a->size, buf) == 0);
        CHECK(gguf_read_tensor(g, b, 0, b->size, buf2) == 0);
        CHECK(memcmp(buf, buf2, a->size) == 0);
    }
    free(buf2);
    free(buf);
    gguf_close(g);
    close(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LEVEL_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[512];
    struct gguf_file *f;
    int fd = memfd_with(data, size);
    if (fd < 0)
        return 0;
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    err[0] = 'x';
    int rc = gguf_open(&f, path, err, sizeof err);
    if (rc != 0) {
        CHECK(f == NULL);
        CHECK(rc == ERR_MODEL_FORMAT || rc == ERR_MODEL_TYPE);
        CHECK(strncmp(err, path, strlen(path)) == 0 && strchr(err, '\n') == NULL);
        close(fd);
        return 0;
    }

    uint8_t head[64];
    CHECK(gguf_check_unchanged(f) == 0);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        uint64_t n = t->size < sizeof head ? t->size : sizeof head;
        CHECK(gguf_find_tensor(f, t->name) == t);
        CHECK(t->offset % f->alignment == 0);
        CHECK(f->data_offset + t->offset + t->size <= f->file_size);
        CHECK(gguf_read_tensor(f, t, 0, n, head) == 0);
        CHECK(gguf_read_tensor(f, t, t->size - n, n, head) == 0);
    }
    uint64_t acc = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const struct gguf_kv *kv = &f->kv[i];
        uint32_t u32;
        uint64_t u64;
        int32_t i32;
        float f32;
        bool b;
        const char *s;
        const struct gguf_value *arr;
        CHECK(gguf_find(f, kv->key) == kv);
        acc += (uint64_t)gguf_get_u32(f, kv->key, &u32) + (uint64_t)gguf_get_u64(f, kv->key, &u64) +
               (uint64_t)gguf_get_i32(f, kv->key, &i32) + (uint64_t)gguf_get_f32(f, kv->key, &f32) +
               (uint64_t)gguf_get_bool(f, kv->key, &b);
        if (gguf_get_str(f, kv->key, &s) == 0)
            acc += strlen(s);
        if (gguf_get_arr(f, kv->key, &arr) == 0)
            acc += walk_array(arr, 0);
        acc += strlen(gguf_vtype_name(kv->v.type));
    }
    (void)acc;
    rewrite_and_compare(f);
    gguf_close(f);
    close(fd);
    return 0;
}
