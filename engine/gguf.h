/* SPDX-License-Identifier: MIT */
/*
 * gguf.h - GGUF v3 (and v2) reader and a streaming writer.
 *
 * The reader validates the header, every metadata value and every tensor
 * info before returning, and never maps the file: tensor data is read with
 * pread into memory the caller owns (a file truncated or replaced under a
 * running server gives an error, not SIGBUS). All integers are little-endian.
 *
 * Ownership: a struct gguf_file owns every string and array it hands out;
 * they stay valid until gguf_close(). Functions are safe to call from several
 * threads once gguf_open() has returned (reads use pread).
 */
#ifndef MOED_ENGINE_GGUF_H
#define MOED_ENGINE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

enum gguf_vtype {
    GGUF_VTYPE_UINT8 = 0,
    GGUF_VTYPE_INT8 = 1,
    GGUF_VTYPE_UINT16 = 2,
    GGUF_VTYPE_INT16 = 3,
    GGUF_VTYPE_UINT32 = 4,
    GGUF_VTYPE_INT32 = 5,
    GGUF_VTYPE_FLOAT32 = 6,
    GGUF_VTYPE_BOOL = 7,
    GGUF_VTYPE_STRING = 8,
    GGUF_VTYPE_ARRAY = 9,
    GGUF_VTYPE_UINT64 = 10,
    GGUF_VTYPE_INT64 = 11,
    GGUF_VTYPE_FLOAT64 = 12,
    GGUF_VTYPE_COUNT
};

struct gguf_str {
    uint64_t len;
    char *s; /* NUL-terminated copy; may contain NULs before len */
};

struct gguf_value {
    enum gguf_vtype type;
    union {
        uint64_t u;  /* UINT8..UINT64 */
        int64_t i;   /* INT8..INT64 */
        double f;    /* FLOAT32, FLOAT64 */
        bool b;      /* BOOL */
        struct gguf_str str;
        struct {
            enum gguf_vtype type; /* element type */
            uint64_t n;
            /* numbers and bools: n packed little-endian values of the element
             * type as in the file (bool = 1 byte); STRING: n struct gguf_str;
             * ARRAY: n struct gguf_value (nested arrays). */
            void *data;
        } arr;
    };
};

struct gguf_kv {
    char *key;
    struct gguf_value v;
};

struct gguf_tensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the innermost (row length); unused dims are 1 */
    uint32_t type;             /* enum be_type, validated as known */
    uint64_t offset;           /* from the start of the data section */
    uint64_t size;             /* bytes */
};

struct gguf_file {
    char *path;
    int fd;
    uint32_t version;
    uint64_t n_kv;
    struct gguf_kv *kv;
    uint64_t n_tensors;
    struct gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset; /* absolute file offset of the data section */
    uint64_t file_size;
    dev_t dev;
    ino_t ino;
};

/*
 * Opens and validates path. On failure returns < 0 (-errno for system errors,
 * ERR_MODEL_FORMAT / ERR_MODEL_TYPE for bad content), leaves *out NULL and
 * writes one line naming the file and the problem into err (errlen bytes).
 */
int gguf_open(struct gguf_file **out, const char *path, char *err, size_t errlen);
/* Closes the file and frees everything; gguf_close(NULL) does nothing. */
void gguf_close(struct gguf_file *f);

/* Looks up a key; NULL when absent. */
const struct gguf_kv *gguf_find(const struct gguf_file *f, const char *key);
/* Looks up a tensor by name; NULL when absent. */
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name);

/*
 * Typed getters. Each returns 0, -ENOENT when the key is absent, or
 * ERR_MODEL_FORMAT when the value has another type or does not fit (integer
 * getters accept any integer type whose value fits; float getters accept
 * FLOAT32/FLOAT64 and integers). The string stays owned by f.
 */
int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out);
int gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out);
int gguf_get_i32(const struct gguf_file *f, const char *key, int32_t *out);
int gguf_get_f32(const struct gguf_file *f, const char *key, float *out);
int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out);
int gguf_get_str(const struct gguf_file *f, const char *key, const char **out);
/* Array getter: *out points at the array value (type GGUF_VTYPE_ARRAY). */
int gguf_get_arr(const struct gguf_file *f, const char *key, const struct gguf_value **out);
/* Element i of a numeric array as double / int64 (any numeric element type). */
double gguf_arr_get_f64(const struct gguf_value *arr, uint64_t i);
int64_t gguf_arr_get_i64(const struct gguf_value *arr, uint64_t i);

/*
 * Reads size bytes at offset off of tensor t's data into dst. Checks that the
 * file is still the one opened (same size, device and inode); returns 0,
 * -errno, ERR_IO on a short read, or ERR_MODEL_CHANGED.
 */
int gguf_read_tensor(const struct gguf_file *f, const struct gguf_tensor *t,
                     uint64_t off, uint64_t size, void *dst);
/* Same, at an absolute file offset. */
int gguf_read_at(const struct gguf_file *f, uint64_t off, uint64_t size, void *dst);
/* Returns 0 when the file on disk is still the one opened, else ERR_MODEL_CHANGED. */
int gguf_check_unchanged(const struct gguf_file *f);

/* Name of a value type ("uint32", "array", ...). */
const char *gguf_vtype_name(uint32_t t);

/* ---- streaming writer ---- */

struct gguf_writer;

/* Creates path (truncating it). alignment 0 means 32. */
int gguf_writer_init(struct gguf_writer **out, const char *path, uint32_t alignment);
/* Metadata, in the order they should appear; all copy their arguments. */
void gguf_writer_kv_u32(struct gguf_writer *w, const char *key, uint32_t v);
void gguf_writer_kv_i32(struct gguf_writer *w, const char *key, int32_t v);
void gguf_writer_kv_u64(struct gguf_writer *w, const char *key, uint64_t v);
void gguf_writer_kv_f32(struct gguf_writer *w, const char *key, float v);
void gguf_writer_kv_bool(struct gguf_writer *w, const char *key, bool v);
void gguf_writer_kv_str(struct gguf_writer *w, const char *key, const char *v);
void gguf_writer_kv_arr_str(struct gguf_writer *w, const char *key, const char *const *v, uint64_t n);
void gguf_writer_kv_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
void gguf_writer_kv_arr_f32(struct gguf_writer *w, const char *key, const float *v, uint64_t n);
/* Any value, including nested arrays (copied deeply). */
void gguf_writer_kv(struct gguf_writer *w, const char *key, const struct gguf_value *v);
/* Declares a tensor; data must later be written in declaration order. */
void gguf_writer_tensor(struct gguf_writer *w, const char *name, uint32_t n_dims,
                        const int64_t *ne, uint32_t type);
/* Writes header, metadata and tensor infos; call once after all declarations. */
int gguf_writer_begin_data(struct gguf_writer *w);
/* Appends bytes of the current tensor; a tensor may be written in many
 * pieces. Padding between tensors is inserted automatically. */
int gguf_writer_write(struct gguf_writer *w, const void *data, size_t n);
/* Checks every tensor was written in full, flushes, closes; frees w always. */
int gguf_writer_finish(struct gguf_writer *w);
/* Abandons the file (removes it) and frees w; NULL does nothing. */
void gguf_writer_abort(struct gguf_writer *w);

#endif
