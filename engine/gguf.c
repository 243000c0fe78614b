/* SPDX-License-Identifier: MIT */
/*
 * gguf.c - GGUF v3 (and v2) reader and streaming writer; the contract is in
 * engine/gguf.h.
 *
 * Reader. gguf_open() parses the header, the metadata and the tensor infos
 * through a buffered reader over pread() (one syscall per megabyte, not per
 * field) and validates everything before it returns. No count read from the
 * file is trusted: before anything is allocated for n items, n times the
 * smallest size an item can take must fit in the bytes left in the file, and
 * arrays of variable-size items grow as they are parsed, so a header claiming
 * 2^60 keys fails at once. Nothing is mapped; tensor data is read later with
 * pread() into caller memory, after checking that the path still names the
 * file that was opened.
 *
 * Writer. Metadata and tensor declarations are kept in memory (values are
 * deep copies); gguf_writer_begin_data() computes every tensor offset from
 * the declared shapes and writes header, metadata and infos; the data is
 * then streamed through a large buffer, padding inserted after each tensor.
 * The first error is sticky: functions returning void record it and the next
 * call returning int returns it.
 *
 * Invariant: a struct gguf_file handed out by gguf_open() is fully valid:
 * unique keys and tensor names without NUL bytes, every tensor of a known
 * weight type with a whole number of blocks per row, aligned, inside the
 * file and overlapping no other tensor.
 */
#include "engine/gguf.h"

#include "common/err.h"
#include "common/log.h"
#include "kernels/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads and writes little-endian fields with memcpy"
#endif

#define GGUF_VERSION_WRITE 3
#define GGUF_MAX_DEPTH 8          /* arrays nested deeper are refused (stack bound) */
#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
/* Sanitizer builds (SAN=1 tests, the fuzzer) use a small read buffer so that
 * the refill and direct-read paths run on small inputs too. */
#define RD_BUF_SIZE 256u
#else
#define RD_BUF_SIZE (1u << 20)    /* reader buffer, bytes */
#endif
#define WR_BUF_SIZE (8u << 20)    /* writer buffer, bytes */
#define MIN_KV_BYTES 13           /* key length (8) + value type (4) + 1-byte value */
#define MIN_TENSOR_INFO_BYTES 32  /* name length + n_dims + one ne + type + offset */
#define NAME_SHOWN 64             /* bytes of a key or tensor name shown in messages */

/* ---- value types ---- */

/* Bytes of a scalar of type t in a file; 0 for strings and arrays. */
static const uint8_t g_vtype_size[GGUF_VTYPE_COUNT] = {
    [GGUF_VTYPE_UINT8] = 1,   [GGUF_VTYPE_INT8] = 1,    [GGUF_VTYPE_UINT16] = 2,
    [GGUF_VTYPE_INT16] = 2,   [GGUF_VTYPE_UINT32] = 4,  [GGUF_VTYPE_INT32] = 4,
    [GGUF_VTYPE_FLOAT32] = 4, [GGUF_VTYPE_BOOL] = 1,    [GGUF_VTYPE_STRING] = 0,
    [GGUF_VTYPE_ARRAY] = 0,   [GGUF_VTYPE_UINT64] = 8,  [GGUF_VTYPE_INT64] = 8,
    [GGUF_VTYPE_FLOAT64] = 8,
};

static const char *const g_vtype_names[GGUF_VTYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
    "bool", "string", "array", "uint64", "int64", "float64",
};

const char *gguf_vtype_name(uint32_t t)
{
    return t < GGUF_VTYPE_COUNT ? g_vtype_names[t] : "invalid";
}

/* The smallest number of bytes a value of type t can take in a file. */
static uint64_t vtype_min_bytes(uint32_t t)
{
    if (t == GGUF_VTYPE_STRING)
        return 8;
    if (t == GGUF_VTYPE_ARRAY)
        return 12;
    return g_vtype_size[t];
}

static bool vtype_is_unsigned(uint32_t t)
{
    return t == GGUF_VTYPE_UINT8 || t == GGUF_VTYPE_UINT16 || t == GGUF_VTYPE_UINT32 ||
           t == GGUF_VTYPE_UINT64;
}

static bool vtype_is_signed(uint32_t t)
{
    return t == GGUF_VTYPE_INT8 || t == GGUF_VTYPE_INT16 || t == GGUF_VTYPE_INT32 ||
           t == GGUF_VTYPE_INT64;
}

static bool vtype_is_float(uint32_t t)
{
    return t == GGUF_VTYPE_FLOAT32 || t == GGUF_VTYPE_FLOAT64;
}

/* Decodes one little-endian scalar of type t at p into v (t is a scalar type). */
static void scalar_decode(uint32_t t, const uint8_t *p, struct gguf_value *v)
{
    uint8_t u8;
    int8_t i8;
    uint16_t u16;
    int16_t i16;
    uint32_t u32;
    int32_t i32;
    float f32;
    double f64;

    v->type = (enum gguf_vtype)t;
    switch (t) {
    case GGUF_VTYPE_UINT8: memcpy(&u8, p, 1); v->u = u8; break;
    case GGUF_VTYPE_INT8: memcpy(&i8, p, 1); v->i = i8; break;
    case GGUF_VTYPE_UINT16: memcpy(&u16, p, 2); v->u = u16; break;
    case GGUF_VTYPE_INT16: memcpy(&i16, p, 2); v->i = i16; break;
    case GGUF_VTYPE_UINT32: memcpy(&u32, p, 4); v->u = u32; break;
    case GGUF_VTYPE_INT32: memcpy(&i32, p, 4); v->i = i32; break;
    case GGUF_VTYPE_FLOAT32: memcpy(&f32, p, 4); v->f = f32; break;
    case GGUF_VTYPE_BOOL: v->b = p[0] != 0; break;
    case GGUF_VTYPE_UINT64: memcpy(&v->u, p, 8); break;
    case GGUF_VTYPE_INT64: memcpy(&v->i, p, 8); break;
    case GGUF_VTYPE_FLOAT64: memcpy(&f64, p, 8); v->f = f64; break;
    default: ASSERT(!"scalar_decode: not a scalar type");
    }
}

/* Encodes scalar v as its type's little-endian bytes into p; returns the size. */
static size_t scalar_encode(const struct gguf_value *v, uint8_t *p)
{
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    float f32;

    switch (v->type) {
    case GGUF_VTYPE_UINT8: case GGUF_VTYPE_INT8: u8 = (uint8_t)v->u; memcpy(p, &u8, 1); return 1;
    case GGUF_VTYPE_UINT16: case GGUF_VTYPE_INT16: u16 = (uint16_t)v->u; memcpy(p, &u16, 2); return 2;
    case GGUF_VTYPE_UINT32: case GGUF_VTYPE_INT32: u32 = (uint32_t)v->u; memcpy(p, &u32, 4); return 4;
    case GGUF_VTYPE_FLOAT32: f32 = (float)v->f; memcpy(p, &f32, 4); return 4;
    case GGUF_VTYPE_BOOL: p[0] = v->b ? 1 : 0; return 1;
    case GGUF_VTYPE_UINT64: case GGUF_VTYPE_INT64: memcpy(p, &v->u, 8); return 8;
    case GGUF_VTYPE_FLOAT64: memcpy(p, &v->f, 8); return 8;
    default: ASSERT(!"scalar_encode: not a scalar type"); return 0;
    }
}

/* Frees what v owns (not v itself). */
static void value_free(struct gguf_value *v)
{
    if (v->type == GGUF_VTYPE_STRING) {
        free(v->str.s);
    } else if (v->type == GGUF_VTYPE_ARRAY) {
        if (v->arr.type == GGUF_VTYPE_STRING) {
            struct gguf_str *s = v->arr.data;
            for (uint64_t i = 0; i < v->arr.n; i++)
                free(s[i].s);
        } else if (v->arr.type == GGUF_VTYPE_ARRAY) {
            struct gguf_value *e = v->arr.data;
            for (uint64_t i = 0; i < v->arr.n; i++)
                value_free(&e[i]);
        }
        free(v->arr.data);
    }
    v->type = GGUF_VTYPE_UINT8;
}

/* ---- tensor shapes ---- */

/*
 * Checks a tensor shape and type and computes its byte size. Returns 0,
 * ERR_MODEL_TYPE or ERR_MODEL_FORMAT with the reason (without the tensor's
 * name) in msg.
 */
static int tensor_shape_check(uint32_t n_dims, const int64_t *ne, uint32_t type, uint64_t *size,
                              char *msg, size_t msglen)
{
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) {
        snprintf(msg, msglen, "has %" PRIu32 " dimensions (must be 1 to %d)", n_dims, GGUF_MAX_DIMS);
        return ERR_MODEL_FORMAT;
    }
    int64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] <= 0) {
            snprintf(msg, msglen, "has invalid size %" PRId64 " in dimension %" PRIu32, ne[d], d);
            return ERR_MODEL_FORMAT;
        }
        if (__builtin_mul_overflow(nel, ne[d], &nel)) {
            snprintf(msg, msglen, "has too many elements (the product of its sizes overflows int64)");
            return ERR_MODEL_FORMAT;
        }
    }
    const struct be_type_info *ti = be_type_info(type);
    if (!ti) {
        snprintf(msg, msglen, "has unsupported type %s", be_type_name(type));
        return ERR_MODEL_TYPE;
    }
    if (!ti->weight) {
        snprintf(msg, msglen, "has unsupported type %s (used for activations only)", ti->name);
        return ERR_MODEL_TYPE;
    }
    if (ne[0] % ti->blck != 0) {
        snprintf(msg, msglen, "has row length %" PRId64 ", not a multiple of the %s block size %" PRId32,
                 ne[0], ti->name, ti->blck);
        return ERR_MODEL_FORMAT;
    }
    uint64_t bytes = (uint64_t)(ne[0] / ti->blck);
    bool ovf = __builtin_mul_overflow(bytes, (uint64_t)ti->size, &bytes);
    for (uint32_t d = 1; d < n_dims && !ovf; d++)
        ovf = __builtin_mul_overflow(bytes, (uint64_t)ne[d], &bytes);
    if (ovf) {
        snprintf(msg, msglen, "is too large (its byte size overflows)");
        return ERR_MODEL_FORMAT;
    }
    *size = bytes;
    return 0;
}

/* Copies s for a one-line message: printable ASCII kept, other bytes as
 * \xNN, cut after NAME_SHOWN bytes. Returns out. */
static const char *msg_name(char *out, size_t n, const char *s)
{
    size_t o = 0;
    for (size_t i = 0; s[i] && o + 8 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == NAME_SHOWN) {
            o += (size_t)snprintf(out + o, n - o, "...");
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, n - o, "\\x%02x", c);
    }
    out[o < n ? o : n - 1] = '\0';
    return out;
}

/* ---- name index: open addressing over entries whose first field is a name ---- */

struct name_index {
    uint64_t mask;  /* capacity - 1; the capacity is a power of two */
    uint64_t *slot; /* entry index + 1, 0 for empty */
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static const char *entry_name(const void *base, size_t stride, uint64_t i)
{
    const char *const *p = (const char *const *)(const void *)((const char *)base + i * stride);
    return *p;
}

/* Builds the index of n entries. Returns 0, -ENOMEM, or 1 when two entries
 * share a name (*dup_a < *dup_b are their indices). */
static int name_index_build(struct name_index *ix, const void *base, size_t stride, uint64_t n,
                            uint64_t *dup_a, uint64_t *dup_b)
{
    uint64_t cap = 16;
    while (cap < n * 2)
        cap <<= 1;
    ix->slot = calloc(cap, sizeof *ix->slot);
    if (!ix->slot)
        return -ENOMEM;
    ix->mask = cap - 1;
    for (uint64_t i = 0; i < n; i++) {
        const char *name = entry_name(base, stride, i);
        uint64_t h = hash_str(name) & ix->mask;
        while (ix->slot[h]) {
            if (strcmp(entry_name(base, stride, ix->slot[h] - 1), name) == 0) {
                *dup_a = ix->slot[h] - 1;
                *dup_b = i;
                return 1;
            }
            h = (h + 1) & ix->mask;
        }
        ix->slot[h] = i + 1;
    }
    return 0;
}

/* Returns the index of the entry called name, or UINT64_MAX. */
static uint64_t name_index_find(const struct name_index *ix, const void *base, size_t stride,
                                const char *name)
{
    if (!ix->slot)
        return UINT64_MAX;
    uint64_t h = hash_str(name) & ix->mask;
    while (ix->slot[h]) {
        if (strcmp(entry_name(base, stride, ix->slot[h] - 1), name) == 0)
            return ix->slot[h] - 1;
        h = (h + 1) & ix->mask;
    }
    return UINT64_MAX;
}

/* ---- file I/O ---- */

/* Reads exactly n bytes at off. Returns 0, -errno, or ERR_IO at end of file. */
static int pread_full(int fd, void *dst, size_t n, uint64_t off)
{
    uint8_t *p = dst;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t got = pread(fd, p, chunk, (off_t)off);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (got == 0)
            return ERR_IO;
        p += got;
        n -= (size_t)got;
        off += (uint64_t)got;
    }
    return 0;
}

/* Writes exactly n bytes. Returns 0 or -errno. */
static int write_full(int fd, const void *src, size_t n)
{
    const uint8_t *p = src;
    while (n > 0) {
        ssize_t put = write(fd, p, n);
        if (put < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (put == 0)
            return -EIO;
        p += put;
        n -= (size_t)put;
    }
    return 0;
}

/* ---- reader ---- */

struct gguf_file_impl {
    struct gguf_file pub; /* first: gguf_close() and the lookups cast back */
    struct name_index kv_ix;
    struct name_index tensor_ix;
};

static const struct gguf_file_impl *impl_of(const struct gguf_file *f)
{
    return (const struct gguf_file_impl *)(const void *)f;
}

/* Parsing state: a window [buf_off, buf_off + buf_len) of the file in buf,
 * and pos, the next byte to parse (pos >= buf_off; pos only grows). */
struct rd {
    int fd;
    const char *path;
    uint64_t size;    /* file size, bytes */
    uint64_t pos;     /* absolute offset of the next byte to parse */
    uint8_t *buf;
    uint64_t buf_off; /* file offset of buf[0] */
    size_t buf_len;
    size_t buf_cap;
    char *err;
    size_t errlen;
    char ctx[320]; /* what is being parsed: "metadata key 3 ('general.name')" */
};

/* Writes "path: message" into the error buffer and returns rc. */
__attribute__((format(printf, 3, 4)))
static int rd_fail(struct rd *r, int rc, const char *fmt, ...)
{
    if (r->err && r->errlen) {
        int n = snprintf(r->err, r->errlen, "%s: ", r->path);
        if (n >= 0 && (size_t)n < r->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return rc;
}

static int rd_truncated(struct rd *r)
{
    return rd_fail(r, ERR_MODEL_FORMAT, "truncated file: %s runs past the end of the file (size %" PRIu64 ")",
                   r->ctx, r->size);
}

static int rd_io_error(struct rd *r, int rc)
{
    if (rc == ERR_IO)
        return rd_fail(r, rc, "read error: the file shrank while reading %s", r->ctx);
    return rd_fail(r, rc, "read error in %s: %s", r->ctx, err_str(rc));
}

/* Makes n bytes (n <= buf_cap) at pos available in the buffer. */
static int rd_fill(struct rd *r, size_t n)
{
    if (n > r->size - r->pos)
        return rd_truncated(r);
    uint64_t end = r->buf_off + r->buf_len;
    size_t keep = 0;
    if (r->pos < end) {
        keep = (size_t)(end - r->pos);
        memmove(r->buf, r->buf + (r->pos - r->buf_off), keep);
    }
    uint64_t left = r->size - r->pos - keep;
    size_t want = r->buf_cap - keep;
    if (want > left)
        want = (size_t)left;
    int rc = pread_full(r->fd, r->buf + keep, want, r->pos + keep);
    if (rc)
        return rd_io_error(r, rc);
    r->buf_off = r->pos;
    r->buf_len = keep + want;
    return 0;
}

/* Returns a pointer to n (<= 8) bytes at pos and advances pos, or NULL after
 * writing the error into *rc. Hot: called for every field. */
static inline const uint8_t *rd_take(struct rd *r, size_t n, int *rc)
{
    if (r->pos + n > r->buf_off + r->buf_len) {
        *rc = rd_fill(r, n);
        if (*rc)
            return NULL;
    }
    const uint8_t *p = r->buf + (r->pos - r->buf_off);
    r->pos += n;
    return p;
}

static int rd_u32(struct rd *r, uint32_t *out)
{
    int rc;
    const uint8_t *p = rd_take(r, 4, &rc);
    if (!p)
        return rc;
    memcpy(out, p, 4);
    return 0;
}

static int rd_u64(struct rd *r, uint64_t *out)
{
    int rc;
    const uint8_t *p = rd_take(r, 8, &rc);
    if (!p)
        return rc;
    memcpy(out, p, 8);
    return 0;
}

/* Copies n bytes at pos into dst and advances pos. */
static int rd_bytes(struct rd *r, void *dst, uint64_t n)
{
    uint8_t *d = dst;
    if (n > r->size - r->pos)
        return rd_truncated(r);
    uint64_t end = r->buf_off + r->buf_len;
    if (r->pos < end) {
        size_t c = (size_t)(end - r->pos < n ? end - r->pos : n);
        memcpy(d, r->buf + (r->pos - r->buf_off), c);
        d += c;
        n -= c;
        r->pos += c;
    }
    if (n == 0)
        return 0;
    if (n >= r->buf_cap / 2) { /* large: straight into dst */
        int rc = pread_full(r->fd, d, (size_t)n, r->pos);
        if (rc)
            return rd_io_error(r, rc);
        r->pos += n;
        return 0;
    }
    int rc = rd_fill(r, (size_t)n);
    if (rc)
        return rc;
    memcpy(d, r->buf, (size_t)n);
    r->pos += n;
    return 0;
}

/* Reads a GGUF string (uint64 length + bytes) into a NUL-terminated copy. */
static int rd_str(struct rd *r, struct gguf_str *out)
{
    uint64_t len;
    int rc = rd_u64(r, &len);
    if (rc)
        return rc;
    if (len > r->size - r->pos)
        return rd_fail(r, ERR_MODEL_FORMAT,
                       "truncated file: %s: a string of %" PRIu64 " bytes runs past the end of the file (size %" PRIu64 ")",
                       r->ctx, len, r->size);
    char *s = malloc((size_t)len + 1);
    if (!s)
        return rd_fail(r, -ENOMEM, "out of memory reading %s", r->ctx);
    rc = rd_bytes(r, s, len);
    if (rc) {
        free(s);
        return rc;
    }
    s[len] = '\0';
    out->len = len;
    out->s = s;
    return 0;
}

/* Grows *data (n_cap elements of esz bytes) to hold at least need elements
 * (need <= max). */
static int grow(void **data, uint64_t *n_cap, uint64_t need, uint64_t max, size_t esz)
{
    if (need <= *n_cap)
        return 0;
    uint64_t cap = *n_cap ? *n_cap * 2 : 64;
    if (cap > max)
        cap = max;
    if (cap < need)
        cap = need;
    void *p = realloc(*data, (size_t)cap * esz);
    if (!p)
        return -ENOMEM;
    *data = p;
    *n_cap = cap;
    return 0;
}

static int rd_value(struct rd *r, uint32_t type, struct gguf_value *v, int depth);

/* Reads an array body (element type, count, elements) into v. On failure v
 * holds what was read so far and value_free() releases it. */
static int rd_array(struct rd *r, struct gguf_value *v, int depth)
{
    uint32_t et;
    uint64_t n;
    int rc;

    v->type = GGUF_VTYPE_ARRAY;
    v->arr.type = GGUF_VTYPE_UINT8;
    v->arr.n = 0;
    v->arr.data = NULL;
    if ((rc = rd_u32(r, &et)))
        return rc;
    if (et >= GGUF_VTYPE_COUNT)
        return rd_fail(r, ERR_MODEL_FORMAT, "%s has invalid array element type %" PRIu32, r->ctx, et);
    if (et == GGUF_VTYPE_ARRAY && depth >= GGUF_MAX_DEPTH)
        return rd_fail(r, ERR_MODEL_FORMAT, "%s has arrays nested deeper than %d levels", r->ctx,
                       GGUF_MAX_DEPTH);
    if ((rc = rd_u64(r, &n)))
        return rc;
    if (n > (r->size - r->pos) / vtype_min_bytes(et))
        return rd_fail(r, ERR_MODEL_FORMAT,
                       "%s: an array of %" PRIu64 " %s values cannot fit in the file (size %" PRIu64 ")",
                       r->ctx, n, g_vtype_names[et], r->size);
    v->arr.type = (enum gguf_vtype)et;

    if (et != GGUF_VTYPE_STRING && et != GGUF_VTYPE_ARRAY) {
        uint64_t bytes = n * g_vtype_size[et]; /* <= bytes left in the file */
        v->arr.data = malloc(bytes ? (size_t)bytes : 1);
        if (!v->arr.data)
            return rd_fail(r, -ENOMEM, "out of memory reading %s", r->ctx);
        if ((rc = rd_bytes(r, v->arr.data, bytes)))
            return rc;
        v->arr.n = n;
        return 0;
    }

    /* Variable-size elements: grow as they are parsed, so memory follows the
     * bytes actually present rather than the count. */
    size_t esz = et == GGUF_VTYPE_STRING ? sizeof(struct gguf_str) : sizeof(struct gguf_value);
    uint64_t cap = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (grow(&v->arr.data, &cap, i + 1, n, esz))
            return rd_fail(r, -ENOMEM, "out of memory reading %s", r->ctx);
        if (et == GGUF_VTYPE_STRING) {
            struct gguf_str *s = (struct gguf_str *)v->arr.data + i;
            if ((rc = rd_str(r, s)))
                return rc;
        } else {
            struct gguf_value *e = (struct gguf_value *)v->arr.data + i;
            e->type = GGUF_VTYPE_UINT8;
            rc = rd_value(r, GGUF_VTYPE_ARRAY, e, depth + 1);
            if (rc) {
                value_free(e);
                return rc;
            }
        }
        v->arr.n = i + 1;
    }
    if (!v->arr.data && !(v->arr.data = malloc(1)))
        return rd_fail(r, -ENOMEM, "out of memory reading %s", r->ctx);
    return 0;
}

/* Reads a value of a valid type into v; on failure value_free(v) is safe. */
static int rd_value(struct rd *r, uint32_t type, struct gguf_value *v, int depth)
{
    int rc;
    if (type == GGUF_VTYPE_STRING) {
        v->type = GGUF_VTYPE_UINT8;
        if ((rc = rd_str(r, &v->str)))
            return rc;
        v->type = GGUF_VTYPE_STRING;
        return 0;
    }
    if (type == GGUF_VTYPE_ARRAY)
        return rd_array(r, v, depth);
    const uint8_t *p = rd_take(r, g_vtype_size[type], &rc);
    if (!p)
        return rc;
    scalar_decode(type, p, v);
    return 0;
}

/* Reads magic, version and counts; the counts are checked against the file size. */
static int rd_header(struct rd *r, struct gguf_file *f, uint64_t *out_kv, uint64_t *out_tensors)
{
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    int rc;

    snprintf(r->ctx, sizeof r->ctx, "the header");
    if (r->size < 4)
        return rd_fail(r, ERR_MODEL_FORMAT, "not a GGUF file (only %" PRIu64 " bytes)", r->size);
    if ((rc = rd_u32(r, &magic)))
        return rc;
    if (magic != GGUF_MAGIC) {
        const uint8_t *m = (const uint8_t *)&magic;
        return rd_fail(r, ERR_MODEL_FORMAT, "not a GGUF file (bad magic %02x %02x %02x %02x)", m[0],
                       m[1], m[2], m[3]);
    }
    if ((rc = rd_u32(r, &f->version)))
        return rc;
    if (f->version != 2 && f->version != 3) {
        uint32_t sw = __builtin_bswap32(f->version);
        return rd_fail(r, ERR_MODEL_FORMAT, "unsupported GGUF version %" PRIu32 "%s", f->version,
                       sw == 2 || sw == 3 ? " (a big-endian file?)" : " (2 and 3 are supported)");
    }
    if ((rc = rd_u64(r, &n_tensors)) || (rc = rd_u64(r, &n_kv)))
        return rc;
    uint64_t left = r->size - r->pos;
    if (n_kv > left / MIN_KV_BYTES)
        return rd_fail(r, ERR_MODEL_FORMAT,
                       "metadata key count %" PRIu64 " cannot fit in the file (size %" PRIu64 ")", n_kv,
                       r->size);
    if (n_tensors > left / MIN_TENSOR_INFO_BYTES)
        return rd_fail(r, ERR_MODEL_FORMAT, "tensor count %" PRIu64 " cannot fit in the file (size %" PRIu64 ")",
                       n_tensors, r->size);
    if (n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES > left)
        return rd_fail(r, ERR_MODEL_FORMAT,
                       "%" PRIu64 " metadata keys and %" PRIu64 " tensors cannot fit in the file (size %" PRIu64 ")",
                       n_kv, n_tensors, r->size);
    *out_kv = n_kv;
    *out_tensors = n_tensors;
    return 0;
}

static int rd_kvs(struct rd *r, struct gguf_file *f, uint64_t n_kv)
{
    char nm[NAME_SHOWN * 4 + 8];
    uint64_t cap = 0;
    int rc;

    for (uint64_t i = 0; i < n_kv; i++) {
        if (grow((void **)&f->kv, &cap, i + 1, n_kv, sizeof *f->kv))
            return rd_fail(r, -ENOMEM, "out of memory reading the metadata");
        struct gguf_kv *kv = &f->kv[i];
        struct gguf_str key;
        snprintf(r->ctx, sizeof r->ctx, "metadata key %" PRIu64, i);
        if ((rc = rd_str(r, &key)))
            return rc;
        kv->key = key.s;
        kv->v.type = GGUF_VTYPE_UINT8;
        f->n_kv = i + 1;
        msg_name(nm, sizeof nm, key.s);
        if (strlen(key.s) != key.len)
            return rd_fail(r, ERR_MODEL_FORMAT, "metadata key %" PRIu64 " ('%s') contains a NUL byte", i, nm);
        snprintf(r->ctx, sizeof r->ctx, "metadata key %" PRIu64 " ('%s')", i, nm);
        uint32_t type;
        if ((rc = rd_u32(r, &type)))
            return rc;
        if (type >= GGUF_VTYPE_COUNT)
            return rd_fail(r, ERR_MODEL_FORMAT, "%s has invalid value type %" PRIu32, r->ctx, type);
        if ((rc = rd_value(r, type, &kv->v, 0)))
            return rc;
    }
    return 0;
}

static int rd_tensor_infos(struct rd *r, struct gguf_file *f, uint64_t n_tensors)
{
    char nm[NAME_SHOWN * 4 + 8], why[160];
    uint64_t cap = 0;
    int rc;

    for (uint64_t i = 0; i < n_tensors; i++) {
        if (grow((void **)&f->tensors, &cap, i + 1, n_tensors, sizeof *f->tensors))
            return rd_fail(r, -ENOMEM, "out of memory reading the tensor infos");
        struct gguf_tensor *t = &f->tensors[i];
        struct gguf_str name;
        snprintf(r->ctx, sizeof r->ctx, "tensor info %" PRIu64, i);
        if ((rc = rd_str(r, &name)))
            return rc;
        memset(t, 0, sizeof *t);
        t->name = name.s;
        f->n_tensors = i + 1;
        msg_name(nm, sizeof nm, name.s);
        if (strlen(name.s) != name.len)
            return rd_fail(r, ERR_MODEL_FORMAT, "tensor %" PRIu64 " ('%s') has a NUL byte in its name", i, nm);
        snprintf(r->ctx, sizeof r->ctx, "tensor info %" PRIu64 " ('%s')", i, nm);
        if ((rc = rd_u32(r, &t->n_dims)))
            return rc;
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
            return rd_fail(r, ERR_MODEL_FORMAT, "tensor '%s' has %" PRIu32 " dimensions (must be 1 to %d)",
                           nm, t->n_dims, GGUF_MAX_DIMS);
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
            uint64_t ne = 1;
            if (d < t->n_dims && (rc = rd_u64(r, &ne)))
                return rc;
            if (ne == 0 || ne > INT64_MAX)
                return rd_fail(r, ERR_MODEL_FORMAT, "tensor '%s' has invalid size %" PRIu64 " in dimension %" PRIu32,
                               nm, ne, d);
            t->ne[d] = (int64_t)ne;
        }
        if ((rc = rd_u32(r, &t->type)) || (rc = rd_u64(r, &t->offset)))
            return rc;
        rc = tensor_shape_check(t->n_dims, t->ne, t->type, &t->size, why, sizeof why);
        if (rc)
            return rd_fail(r, rc, "tensor '%s' %s", nm, why);
    }
    return 0;
}

struct span {
    uint64_t off, end, idx;
};

static int span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Places the data section and checks every tensor's offset, extent and
 * overlap with the others. */
static int rd_check_layout(struct rd *r, struct gguf_file *f, uint64_t info_end)
{
    char nm[NAME_SHOWN * 4 + 8], nm2[NAME_SHOWN * 4 + 8];

    f->data_offset = (info_end + f->alignment - 1) / f->alignment * f->alignment;
    if (f->n_tensors == 0)
        return 0;
    struct span *s = malloc((size_t)f->n_tensors * sizeof *s);
    if (!s)
        return rd_fail(r, -ENOMEM, "out of memory checking the tensor layout");
    int rc = 0;
    for (uint64_t i = 0; i < f->n_tensors && !rc; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        uint64_t end;
        if (t->offset % f->alignment != 0) {
            rc = rd_fail(r, ERR_MODEL_FORMAT,
                         "tensor '%s' offset %" PRIu64 " is not a multiple of the alignment %" PRIu64,
                         msg_name(nm, sizeof nm, t->name), t->offset, f->alignment);
        } else if (__builtin_add_overflow(f->data_offset, t->offset, &end) ||
                   __builtin_add_overflow(end, t->size, &end)) {
            rc = rd_fail(r, ERR_MODEL_FORMAT,
                         "tensor '%s' (offset %" PRIu64 ", %" PRIu64 " bytes) runs past the end of the file (size %" PRIu64 ")",
                         msg_name(nm, sizeof nm, t->name), t->offset, t->size, r->size);
        } else if (end > r->size) {
            rc = rd_fail(r, ERR_MODEL_FORMAT,
                         "tensor '%s' ends at byte %" PRIu64 ", past the end of the file (size %" PRIu64 ")",
                         msg_name(nm, sizeof nm, t->name), end, r->size);
        }
        s[i] = (struct span){t->offset, t->offset + t->size, i};
    }
    if (!rc) {
        qsort(s, (size_t)f->n_tensors, sizeof *s, span_cmp);
        uint64_t far = 0; /* the span reaching furthest so far */
        for (uint64_t k = 1; k < f->n_tensors && !rc; k++) {
            if (s[k].off < s[far].end) {
                const struct gguf_tensor *a = &f->tensors[s[far].idx], *b = &f->tensors[s[k].idx];
                rc = rd_fail(r, ERR_MODEL_FORMAT,
                             "tensors '%s' (data bytes %" PRIu64 "..%" PRIu64 ") and '%s' (data bytes %" PRIu64 "..%" PRIu64 ") overlap",
                             msg_name(nm, sizeof nm, a->name), a->offset, a->offset + a->size,
                             msg_name(nm2, sizeof nm2, b->name), b->offset, b->offset + b->size);
            }
            if (s[k].end > s[far].end)
                far = k;
        }
    }
    free(s);
    return rc;
}

static int rd_alignment(struct rd *r, struct gguf_file *f)
{
    const struct gguf_kv *kv = gguf_find(f, "general.alignment");
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!kv)
        return 0;
    if (kv->v.type != GGUF_VTYPE_UINT32)
        return rd_fail(r, ERR_MODEL_FORMAT, "general.alignment has type %s (must be uint32)",
                       gguf_vtype_name(kv->v.type));
    if (kv->v.u == 0 || (kv->v.u & (kv->v.u - 1)) != 0)
        return rd_fail(r, ERR_MODEL_FORMAT, "general.alignment %" PRIu64 " is not a nonzero power of two",
                       kv->v.u);
    f->alignment = kv->v.u;
    return 0;
}

static int rd_file(struct rd *r, struct gguf_file_impl *fi)
{
    struct gguf_file *f = &fi->pub;
    char nm[NAME_SHOWN * 4 + 8];
    uint64_t a, b;
    int rc;

    uint64_t n_kv = 0, n_tensors = 0;
    if ((rc = rd_header(r, f, &n_kv, &n_tensors)))
        return rc;
    /* While parsing, f->n_kv and f->n_tensors count what was parsed so far,
     * so that gguf_close() frees exactly what exists. */
    if ((rc = rd_kvs(r, f, n_kv)))
        return rc;
    rc = name_index_build(&fi->kv_ix, f->kv, sizeof *f->kv, f->n_kv, &a, &b);
    if (rc < 0)
        return rd_fail(r, rc, "out of memory indexing the metadata");
    if (rc > 0)
        return rd_fail(r, ERR_MODEL_FORMAT, "duplicate metadata key '%s' (keys %" PRIu64 " and %" PRIu64 ")",
                       msg_name(nm, sizeof nm, f->kv[b].key), a, b);
    if ((rc = rd_alignment(r, f)))
        return rc;
    if ((rc = rd_tensor_infos(r, f, n_tensors)))
        return rc;
    rc = name_index_build(&fi->tensor_ix, f->tensors, sizeof *f->tensors, f->n_tensors, &a, &b);
    if (rc < 0)
        return rd_fail(r, rc, "out of memory indexing the tensors");
    if (rc > 0)
        return rd_fail(r, ERR_MODEL_FORMAT, "duplicate tensor name '%s' (tensors %" PRIu64 " and %" PRIu64 ")",
                       msg_name(nm, sizeof nm, f->tensors[b].name), a, b);
    return rd_check_layout(r, f, r->pos);
}

int gguf_open(struct gguf_file **out, const char *path, char *err, size_t errlen)
{
    struct rd r = {.fd = -1, .path = path, .err = err, .errlen = errlen};
    struct stat st;
    int rc;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    struct gguf_file_impl *fi = calloc(1, sizeof *fi);
    struct gguf_file *f = fi ? &fi->pub : NULL;
    if (!fi || !(f->path = strdup(path))) {
        free(fi);
        return rd_fail(&r, -ENOMEM, "out of memory");
    }
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        rc = -errno;
        rd_fail(&r, rc, "cannot open: %s", strerror(-rc));
        goto fail;
    }
    if (fstat(f->fd, &st) != 0) {
        rc = -errno;
        rd_fail(&r, rc, "cannot stat: %s", strerror(-rc));
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = rd_fail(&r, -EISDIR, "cannot read: %s", strerror(EISDIR));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = rd_fail(&r, ERR_MODEL_FORMAT, "not a regular file");
        goto fail;
    }
    f->file_size = (uint64_t)st.st_size;
    f->dev = st.st_dev;
    f->ino = st.st_ino;

    r.fd = f->fd;
    r.size = f->file_size;
    r.buf_cap = f->file_size < RD_BUF_SIZE ? (size_t)f->file_size + 16 : RD_BUF_SIZE;
    r.buf = malloc(r.buf_cap);
    if (!r.buf) {
        rc = rd_fail(&r, -ENOMEM, "out of memory");
        goto fail;
    }
    rc = rd_file(&r, fi);
    free(r.buf);
    if (rc)
        goto fail;
    *out = f;
    return 0;

fail:
    gguf_close(f);
    return rc;
}

void gguf_close(struct gguf_file *f)
{
    if (!f)
        return;
    struct gguf_file_impl *fi = (struct gguf_file_impl *)(void *)f;
    if (f->fd >= 0)
        close(f->fd);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        free(f->kv[i].key);
        value_free(&f->kv[i].v);
    }
    free(f->kv);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    free(fi->kv_ix.slot);
    free(fi->tensor_ix.slot);
    free(f->path);
    free(fi);
}

const struct gguf_kv *gguf_find(const struct gguf_file *f, const char *key)
{
    uint64_t i = name_index_find(&impl_of(f)->kv_ix, f->kv, sizeof *f->kv, key);
    return i == UINT64_MAX ? NULL : &f->kv[i];
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name)
{
    uint64_t i = name_index_find(&impl_of(f)->tensor_ix, f->tensors, sizeof *f->tensors, name);
    return i == UINT64_MAX ? NULL : &f->tensors[i];
}

/* ---- typed getters ---- */

static int get_value(const struct gguf_file *f, const char *key, const struct gguf_value **v)
{
    const struct gguf_kv *kv = gguf_find(f, key);
    if (!kv)
        return -ENOENT;
    *v = &kv->v;
    return 0;
}

/* Reads an integer value of any width and signedness: *neg is set when it
 * is below zero (then *i holds it), else *u holds it. Other types give
 * ERR_MODEL_FORMAT. */
static int get_int(const struct gguf_file *f, const char *key, bool *neg, uint64_t *u, int64_t *i)
{
    const struct gguf_value *v;
    int rc = get_value(f, key, &v);
    if (rc)
        return rc;
    if (vtype_is_unsigned(v->type)) {
        *neg = false;
        *u = v->u;
        return 0;
    }
    if (vtype_is_signed(v->type)) {
        *neg = v->i < 0;
        *i = v->i;
        *u = (uint64_t)v->i;
        return 0;
    }
    return ERR_MODEL_FORMAT;
}

int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out)
{
    bool neg;
    uint64_t u;
    int64_t i;
    int rc = get_int(f, key, &neg, &u, &i);
    if (rc)
        return rc;
    if (neg || u > UINT32_MAX)
        return ERR_MODEL_FORMAT;
    *out = (uint32_t)u;
    return 0;
}

int gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out)
{
    bool neg;
    uint64_t u;
    int64_t i;
    int rc = get_int(f, key, &neg, &u, &i);
    if (rc)
        return rc;
    if (neg)
        return ERR_MODEL_FORMAT;
    *out = u;
    return 0;
}

int gguf_get_i32(const struct gguf_file *f, const char *key, int32_t *out)
{
    bool neg;
    uint64_t u;
    int64_t i;
    int rc = get_int(f, key, &neg, &u, &i);
    if (rc)
        return rc;
    if (neg ? i < INT32_MIN : u > INT32_MAX)
        return ERR_MODEL_FORMAT;
    *out = neg ? (int32_t)i : (int32_t)u;
    return 0;
}

int gguf_get_f32(const struct gguf_file *f, const char *key, float *out)
{
    const struct gguf_value *v;
    int rc = get_value(f, key, &v);
    if (rc)
        return rc;
    if (vtype_is_float(v->type)) {
        if (isfinite(v->f) && fabs(v->f) > FLT_MAX)
            return ERR_MODEL_FORMAT;
        *out = (float)v->f;
    } else if (vtype_is_unsigned(v->type)) {
        *out = (float)v->u;
    } else if (vtype_is_signed(v->type)) {
        *out = (float)v->i;
    } else {
        return ERR_MODEL_FORMAT;
    }
    return 0;
}

int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out)
{
    const struct gguf_value *v;
    int rc = get_value(f, key, &v);
    if (rc)
        return rc;
    if (v->type != GGUF_VTYPE_BOOL)
        return ERR_MODEL_FORMAT;
    *out = v->b;
    return 0;
}

int gguf_get_str(const struct gguf_file *f, const char *key, const char **out)
{
    const struct gguf_value *v;
    int rc = get_value(f, key, &v);
    if (rc)
        return rc;
    if (v->type != GGUF_VTYPE_STRING)
        return ERR_MODEL_FORMAT;
    *out = v->str.s;
    return 0;
}

int gguf_get_arr(const struct gguf_file *f, const char *key, const struct gguf_value **out)
{
    const struct gguf_value *v;
    int rc = get_value(f, key, &v);
    if (rc)
        return rc;
    if (v->type != GGUF_VTYPE_ARRAY)
        return ERR_MODEL_FORMAT;
    *out = v;
    return 0;
}

/* Element i of a numeric (or bool) array, decoded. Asking for a string or
 * nested element, or past the end, is a bug. */
static struct gguf_value arr_elem(const struct gguf_value *arr, uint64_t i)
{
    struct gguf_value e;
    ASSERT(arr->type == GGUF_VTYPE_ARRAY);
    ASSERT(arr->arr.type < GGUF_VTYPE_COUNT && g_vtype_size[arr->arr.type] != 0);
    ASSERT(i < arr->arr.n);
    size_t esz = g_vtype_size[arr->arr.type];
    scalar_decode(arr->arr.type, (const uint8_t *)arr->arr.data + i * esz, &e);
    return e;
}

double gguf_arr_get_f64(const struct gguf_value *arr, uint64_t i)
{
    struct gguf_value e = arr_elem(arr, i);
    if (vtype_is_float(e.type))
        return e.f;
    if (vtype_is_unsigned(e.type))
        return (double)e.u;
    if (vtype_is_signed(e.type))
        return (double)e.i;
    return e.b ? 1.0 : 0.0;
}

int64_t gguf_arr_get_i64(const struct gguf_value *arr, uint64_t i)
{
    struct gguf_value e = arr_elem(arr, i);
    if (vtype_is_float(e.type)) {
        /* Saturate: converting an out-of-range double is undefined. */
        if (!(e.f == e.f))
            return 0;
        if (e.f >= 9223372036854775807.0)
            return INT64_MAX;
        if (e.f <= -9223372036854775808.0)
            return INT64_MIN;
        return (int64_t)e.f;
    }
    if (vtype_is_unsigned(e.type))
        return e.u > INT64_MAX ? INT64_MAX : (int64_t)e.u;
    if (vtype_is_signed(e.type))
        return e.i;
    return e.b ? 1 : 0;
}

/* ---- tensor data ---- */

int gguf_check_unchanged(const struct gguf_file *f)
{
    struct stat st;
    if (fstat(f->fd, &st) != 0)
        return -errno;
    if ((uint64_t)st.st_size != f->file_size || st.st_dev != f->dev || st.st_ino != f->ino)
        return ERR_MODEL_CHANGED;
    if (stat(f->path, &st) != 0)
        return errno == ENOENT || errno == ENOTDIR ? ERR_MODEL_CHANGED : -errno;
    if ((uint64_t)st.st_size != f->file_size || st.st_dev != f->dev || st.st_ino != f->ino)
        return ERR_MODEL_CHANGED;
    return 0;
}

int gguf_read_at(const struct gguf_file *f, uint64_t off, uint64_t size, void *dst)
{
    if (off > f->file_size || size > f->file_size - off)
        return -EINVAL;
    if (size > SIZE_MAX)
        return -EINVAL;
    int rc = gguf_check_unchanged(f);
    if (rc)
        return rc;
    return pread_full(f->fd, dst, (size_t)size, off);
}

int gguf_read_tensor(const struct gguf_file *f, const struct gguf_tensor *t, uint64_t off,
                     uint64_t size, void *dst)
{
    if (off > t->size || size > t->size - off)
        return -EINVAL;
    return gguf_read_at(f, f->data_offset + t->offset + off, size, dst);
}

/* ---- writer ---- */

enum wr_state { WR_STATE_DECLARE, WR_STATE_DATA, WR_STATE_DONE };

struct wr_tensor {
    char *name; /* first: the name index reads it */
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    uint64_t size;   /* bytes */
    uint64_t offset; /* from the start of the data section */
};

struct gguf_writer {
    char *path;
    int fd;
    bool is_reg; /* the file is a regular file we may remove on failure */
    dev_t dev;
    ino_t ino;
    uint32_t alignment;
    int err; /* first error; sticky */
    enum wr_state state;
    struct gguf_kv *kv;
    uint64_t n_kv, cap_kv;
    struct wr_tensor *t;
    uint64_t n_t, cap_t;
    uint8_t *buf; /* WR_BUF_SIZE bytes */
    size_t buf_len;
    uint64_t pos;      /* bytes written so far, buffered ones included */
    uint64_t cur;      /* tensor being written */
    uint64_t cur_done; /* bytes of it written */
};

/* Records the first error (logged once, here, with the path) and returns it. */
__attribute__((format(printf, 3, 4)))
static int wr_fail(struct gguf_writer *w, int rc, const char *fmt, ...)
{
    if (w->err)
        return w->err;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_err("gguf", "%s: %s", w->path, msg);
    w->err = rc;
    return rc;
}

static void wr_flush(struct gguf_writer *w)
{
    if (w->err || w->buf_len == 0)
        return;
    int rc = write_full(w->fd, w->buf, w->buf_len);
    w->buf_len = 0;
    if (rc)
        wr_fail(w, rc, "write failed: %s", strerror(-rc));
}

static void wr_bytes(struct gguf_writer *w, const void *p, size_t n)
{
    if (w->err || n == 0)
        return;
    if (n >= WR_BUF_SIZE) { /* large: flush, then straight to the file */
        wr_flush(w);
        int rc = w->err ? 0 : write_full(w->fd, p, n);
        if (rc)
            wr_fail(w, rc, "write failed: %s", strerror(-rc));
        w->pos += n;
        return;
    }
    if (w->buf_len + n > WR_BUF_SIZE)
        wr_flush(w);
    memcpy(w->buf + w->buf_len, p, n);
    w->buf_len += n;
    w->pos += n;
}

static void wr_zeros(struct gguf_writer *w, uint64_t n)
{
    static const uint8_t zeros[4096];
    while (n > 0 && !w->err) {
        size_t c = n > sizeof zeros ? sizeof zeros : (size_t)n;
        wr_bytes(w, zeros, c);
        n -= c;
    }
}

static void wr_u32(struct gguf_writer *w, uint32_t v) { wr_bytes(w, &v, 4); }
static void wr_u64(struct gguf_writer *w, uint64_t v) { wr_bytes(w, &v, 8); }

static void wr_str(struct gguf_writer *w, const char *s, uint64_t len)
{
    wr_u64(w, len);
    wr_bytes(w, s, (size_t)len);
}

/* Writes an array body: element type, count, elements. */
static void wr_array(struct gguf_writer *w, const struct gguf_value *v)
{
    wr_u32(w, v->arr.type);
    wr_u64(w, v->arr.n);
    if (v->arr.type == GGUF_VTYPE_STRING) {
        const struct gguf_str *s = v->arr.data;
        for (uint64_t i = 0; i < v->arr.n; i++)
            wr_str(w, s[i].s, s[i].len);
    } else if (v->arr.type == GGUF_VTYPE_ARRAY) {
        const struct gguf_value *e = v->arr.data;
        for (uint64_t i = 0; i < v->arr.n; i++)
            wr_array(w, &e[i]);
    } else {
        wr_bytes(w, v->arr.data, (size_t)(v->arr.n * g_vtype_size[v->arr.type]));
    }
}

static void wr_value(struct gguf_writer *w, const struct gguf_value *v)
{
    uint8_t b[8];
    if (v->type == GGUF_VTYPE_STRING)
        wr_str(w, v->str.s, v->str.len);
    else if (v->type == GGUF_VTYPE_ARRAY)
        wr_array(w, v);
    else
        wr_bytes(w, b, scalar_encode(v, b));
}

static char *dup_bytes(const char *s, uint64_t len)
{
    if (len >= SIZE_MAX)
        return NULL;
    char *d = malloc((size_t)len + 1);
    if (!d)
        return NULL;
    if (len)
        memcpy(d, s, (size_t)len);
    d[len] = '\0';
    return d;
}

/* Deep-copies src into dst. Returns 0, -ENOMEM or ERR_INVALID (a value the
 * reader would refuse); on failure dst owns nothing. */
static int value_copy(struct gguf_value *dst, const struct gguf_value *src, int depth)
{
    if (src->type >= GGUF_VTYPE_COUNT)
        return ERR_INVALID;
    *dst = *src;
    if (src->type == GGUF_VTYPE_STRING) {
        if (src->str.len && !src->str.s)
            return ERR_INVALID;
        dst->str.s = dup_bytes(src->str.s, src->str.len);
        return dst->str.s ? 0 : -ENOMEM;
    }
    if (src->type != GGUF_VTYPE_ARRAY)
        return 0;
    uint32_t et = src->arr.type;
    uint64_t n = src->arr.n;
    if (et >= GGUF_VTYPE_COUNT || (n && !src->arr.data))
        return ERR_INVALID;
    if (et == GGUF_VTYPE_ARRAY && depth >= GGUF_MAX_DEPTH)
        return ERR_INVALID;
    size_t esz = et == GGUF_VTYPE_STRING  ? sizeof(struct gguf_str)
                 : et == GGUF_VTYPE_ARRAY ? sizeof(struct gguf_value)
                                          : g_vtype_size[et];
    size_t bytes;
    if (__builtin_mul_overflow((size_t)n, esz, &bytes) || n > SIZE_MAX)
        return -ENOMEM;
    dst->arr.n = 0;
    dst->arr.data = malloc(bytes ? bytes : 1);
    if (!dst->arr.data) {
        dst->type = GGUF_VTYPE_UINT8;
        return -ENOMEM;
    }
    int rc = 0;
    if (et == GGUF_VTYPE_STRING) {
        const struct gguf_str *s = src->arr.data;
        struct gguf_str *d = dst->arr.data;
        for (uint64_t i = 0; i < n && !rc; i++) {
            if (s[i].len && !s[i].s) {
                rc = ERR_INVALID;
                break;
            }
            d[i].len = s[i].len;
            d[i].s = dup_bytes(s[i].s, s[i].len);
            if (!d[i].s)
                rc = -ENOMEM;
            else
                dst->arr.n = i + 1;
        }
    } else if (et == GGUF_VTYPE_ARRAY) {
        const struct gguf_value *s = src->arr.data;
        struct gguf_value *d = dst->arr.data;
        for (uint64_t i = 0; i < n && !rc; i++) {
            if (s[i].type != GGUF_VTYPE_ARRAY) {
                rc = ERR_INVALID;
                break;
            }
            rc = value_copy(&d[i], &s[i], depth + 1);
            if (!rc)
                dst->arr.n = i + 1;
        }
    } else {
        if (bytes)
            memcpy(dst->arr.data, src->arr.data, bytes);
        dst->arr.n = n;
    }
    if (rc)
        value_free(dst);
    return rc;
}

int gguf_writer_init(struct gguf_writer **out, const char *path, uint32_t alignment)
{
    struct stat st;
    *out = NULL;
    if (alignment == 0)
        alignment = GGUF_DEFAULT_ALIGNMENT;
    if (alignment & (alignment - 1))
        return -EINVAL;
    struct gguf_writer *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->fd = -1;
    w->alignment = alignment;
    w->path = strdup(path);
    w->buf = malloc(WR_BUF_SIZE);
    if (!w->path || !w->buf) {
        free(w->path);
        free(w->buf);
        free(w);
        return -ENOMEM;
    }
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int rc = -errno;
        log_err("gguf", "%s: cannot create: %s", path, strerror(-rc));
        free(w->path);
        free(w->buf);
        free(w);
        return rc;
    }
    if (fstat(w->fd, &st) == 0 && S_ISREG(st.st_mode)) {
        w->is_reg = true;
        w->dev = st.st_dev;
        w->ino = st.st_ino;
    }
    *out = w;
    return 0;
}

static void wr_kv_add(struct gguf_writer *w, const char *key, const struct gguf_value *v)
{
    ASSERT(w && key && v);
    if (w->err)
        return;
    if (w->state != WR_STATE_DECLARE) {
        wr_fail(w, ERR_INVALID, "metadata key '%s' added after gguf_writer_begin_data()", key);
        return;
    }
    if (strcmp(key, "general.alignment") == 0 &&
        (v->type != GGUF_VTYPE_UINT32 || v->u != w->alignment)) {
        wr_fail(w, ERR_INVALID, "general.alignment must be the uint32 %" PRIu32 " given to gguf_writer_init()",
                w->alignment);
        return;
    }
    if (grow((void **)&w->kv, &w->cap_kv, w->n_kv + 1, UINT64_MAX / 2, sizeof *w->kv)) {
        wr_fail(w, -ENOMEM, "out of memory");
        return;
    }
    struct gguf_kv *kv = &w->kv[w->n_kv];
    kv->key = strdup(key);
    if (!kv->key) {
        wr_fail(w, -ENOMEM, "out of memory");
        return;
    }
    int rc = value_copy(&kv->v, v, 0);
    if (rc) {
        free(kv->key);
        wr_fail(w, rc, "metadata key '%s': %s", key,
                rc == -ENOMEM ? "out of memory" : "invalid value (bad type, NULL data or nested too deep)");
        return;
    }
    w->n_kv++;
}

void gguf_writer_kv(struct gguf_writer *w, const char *key, const struct gguf_value *v)
{
    wr_kv_add(w, key, v);
}

void gguf_writer_kv_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
    struct gguf_value val = {.type = GGUF_VTYPE_UINT32, .u = v};
    wr_kv_add(w, key, &val);
}

void gguf_writer_kv_i32(struct gguf_writer *w, const char *key, int32_t v)
{
    struct gguf_value val = {.type = GGUF_VTYPE_INT32, .i = v};
    wr_kv_add(w, key, &val);
}

void gguf_writer_kv_u64(struct gguf_writer *w, const char *key, uint64_t v)
{
    struct gguf_value val = {.type = GGUF_VTYPE_UINT64, .u = v};
    wr_kv_add(w, key, &val);
}

void gguf_writer_kv_f32(struct gguf_writer *w, const char *key, float v)
{
    struct gguf_value val = {.type = GGUF_VTYPE_FLOAT32, .f = v};
    wr_kv_add(w, key, &val);
}

void gguf_writer_kv_bool(struct gguf_writer *w, const char *key, bool v)
{
    struct gguf_value val = {.type = GGUF_VTYPE_BOOL, .b = v};
    wr_kv_add(w, key, &val);
}

void gguf_writer_kv_str(struct gguf_writer *w, const char *key, const char *v)
{
    ASSERT(v);
    struct gguf_value val = {.type = GGUF_VTYPE_STRING, .str = {strlen(v), (char *)v}};
    wr_kv_add(w, key, &val);
}

void gguf_writer_kv_arr_str(struct gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    ASSERT(v || n == 0);
    if (w->err)
        return;
    struct gguf_str *s = n <= SIZE_MAX / sizeof *s ? malloc((size_t)(n ? n : 1) * sizeof *s) : NULL;
    if (!s) {
        wr_fail(w, -ENOMEM, "out of memory");
        return;
    }
    for (uint64_t i = 0; i < n; i++) {
        ASSERT(v[i]);
        s[i].len = strlen(v[i]);
        s[i].s = (char *)v[i];
    }
    struct gguf_value val = {.type = GGUF_VTYPE_ARRAY};
    val.arr.type = GGUF_VTYPE_STRING;
    val.arr.n = n;
    val.arr.data = s;
    wr_kv_add(w, key, &val);
    free(s);
}

void gguf_writer_kv_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, uint64_t n)
{
    struct gguf_value val = {.type = GGUF_VTYPE_ARRAY};
    val.arr.type = GGUF_VTYPE_INT32;
    val.arr.n = n;
    val.arr.data = (void *)v;
    wr_kv_add(w, key, &val);
}

void gguf_writer_kv_arr_f32(struct gguf_writer *w, const char *key, const float *v, uint64_t n)
{
    struct gguf_value val = {.type = GGUF_VTYPE_ARRAY};
    val.arr.type = GGUF_VTYPE_FLOAT32;
    val.arr.n = n;
    val.arr.data = (void *)v;
    wr_kv_add(w, key, &val);
}

void gguf_writer_tensor(struct gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                        uint32_t type)
{
    char why[160];
    ASSERT(w && name && ne);
    if (w->err)
        return;
    if (w->state != WR_STATE_DECLARE) {
        wr_fail(w, ERR_INVALID, "tensor '%s' declared after gguf_writer_begin_data()", name);
        return;
    }
    struct wr_tensor t = {.n_dims = n_dims, .type = type};
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t.ne[d] = d < n_dims ? ne[d] : 1;
    int rc = tensor_shape_check(n_dims, t.ne, type, &t.size, why, sizeof why);
    if (rc) {
        wr_fail(w, ERR_INVALID, "tensor '%s' %s", name, why);
        return;
    }
    if (grow((void **)&w->t, &w->cap_t, w->n_t + 1, UINT64_MAX / 2, sizeof *w->t) ||
        !(t.name = strdup(name))) {
        wr_fail(w, -ENOMEM, "out of memory");
        return;
    }
    w->t[w->n_t++] = t;
}

/* Pads the file with zeros to the next multiple of the alignment. */
static void wr_pad(struct gguf_writer *w)
{
    wr_zeros(w, (w->alignment - w->pos % w->alignment) % w->alignment);
}

int gguf_writer_begin_data(struct gguf_writer *w)
{
    struct name_index ix = {0};
    uint64_t a, b;
    int rc;

    if (w->err)
        return w->err;
    if (w->state != WR_STATE_DECLARE)
        return wr_fail(w, ERR_INVALID, "gguf_writer_begin_data() called twice");
    if (w->alignment != GGUF_DEFAULT_ALIGNMENT) { /* readers must learn it */
        bool have = false;
        for (uint64_t i = 0; i < w->n_kv && !have; i++)
            have = strcmp(w->kv[i].key, "general.alignment") == 0;
        if (!have)
            gguf_writer_kv_u32(w, "general.alignment", w->alignment);
        if (w->err)
            return w->err;
    }
    rc = name_index_build(&ix, w->kv, sizeof *w->kv, w->n_kv, &a, &b);
    free(ix.slot);
    if (rc < 0)
        return wr_fail(w, rc, "out of memory");
    if (rc > 0)
        return wr_fail(w, ERR_INVALID, "duplicate metadata key '%s'", w->kv[b].key);
    ix.slot = NULL;
    rc = name_index_build(&ix, w->t, sizeof *w->t, w->n_t, &a, &b);
    free(ix.slot);
    if (rc < 0)
        return wr_fail(w, rc, "out of memory");
    if (rc > 0)
        return wr_fail(w, ERR_INVALID, "duplicate tensor name '%s'", w->t[b].name);

    /* Offsets follow from the declared sizes: each tensor starts aligned. */
    uint64_t off = 0;
    for (uint64_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        if (__builtin_add_overflow(off, w->t[i].size, &off) ||
            __builtin_add_overflow(off, w->alignment - 1, &off))
            return wr_fail(w, ERR_INVALID, "tensor data larger than 2^64 bytes");
        off = off / w->alignment * w->alignment;
    }

    wr_u32(w, GGUF_MAGIC);
    wr_u32(w, GGUF_VERSION_WRITE);
    wr_u64(w, w->n_t);
    wr_u64(w, w->n_kv);
    for (uint64_t i = 0; i < w->n_kv; i++) {
        wr_str(w, w->kv[i].key, strlen(w->kv[i].key));
        wr_u32(w, w->kv[i].v.type);
        wr_value(w, &w->kv[i].v);
    }
    for (uint64_t i = 0; i < w->n_t; i++) {
        const struct wr_tensor *t = &w->t[i];
        wr_str(w, t->name, strlen(t->name));
        wr_u32(w, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            wr_u64(w, (uint64_t)t->ne[d]);
        wr_u32(w, t->type);
        wr_u64(w, t->offset);
    }
    wr_pad(w);
    w->state = WR_STATE_DATA;
    w->cur = 0;
    w->cur_done = 0;
    return w->err;
}

int gguf_writer_write(struct gguf_writer *w, const void *data, size_t n)
{
    const uint8_t *p = data;
    if (w->err)
        return w->err;
    if (w->state != WR_STATE_DATA)
        return wr_fail(w, ERR_INVALID, "gguf_writer_write() outside the data phase");
    while (n > 0) {
        if (w->cur >= w->n_t)
            return wr_fail(w, ERR_INVALID, "%zu bytes written past the end of the last tensor", n);
        const struct wr_tensor *t = &w->t[w->cur];
        uint64_t left = t->size - w->cur_done;
        size_t c = n < left ? n : (size_t)left;
        wr_bytes(w, p, c);
        p += c;
        n -= c;
        w->cur_done += c;
        if (w->cur_done == t->size) { /* complete: pad up to the next one */
            wr_pad(w);
            w->cur++;
            w->cur_done = 0;
        }
    }
    return w->err;
}

/* Removes the file when it is still the regular file we created. */
static void wr_remove(struct gguf_writer *w)
{
    struct stat st;
    if (w->is_reg && stat(w->path, &st) == 0 && st.st_dev == w->dev && st.st_ino == w->ino)
        unlink(w->path);
}

static void wr_free(struct gguf_writer *w)
{
    for (uint64_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        value_free(&w->kv[i].v);
    }
    free(w->kv);
    for (uint64_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->t);
    free(w->buf);
    free(w->path);
    free(w);
}

int gguf_writer_finish(struct gguf_writer *w)
{
    if (!w)
        return -EINVAL;
    if (!w->err && w->state == WR_STATE_DECLARE)
        gguf_writer_begin_data(w);
    if (!w->err && w->cur < w->n_t)
        wr_fail(w, ERR_INVALID, "tensor '%s' incomplete: %" PRIu64 " of %" PRIu64 " bytes written",
                w->t[w->cur].name, w->cur_done, w->t[w->cur].size);
    wr_flush(w);
    if (close(w->fd) != 0 && !w->err)
        wr_fail(w, -errno, "close failed: %s", strerror(errno));
    w->fd = -1;
    w->state = WR_STATE_DONE;
    int rc = w->err;
    if (rc)
        wr_remove(w);
    wr_free(w);
    return rc;
}

void gguf_writer_abort(struct gguf_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    wr_remove(w);
    wr_free(w);
}
