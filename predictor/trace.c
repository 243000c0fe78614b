/* SPDX-License-Identifier: MIT */
/*
 * trace.c - reading and writing routing traces (format in trace.h).
 *
 * Invariant: every buffer (one record's bytes, the decoded arrays) is sized
 * at open from the header; writing or reading a token only encodes or
 * decodes into them, so the per-token path never allocates. Byte order is
 * handled explicitly, so traces move between machines.
 */
#include "predictor/trace.h"

#include "common/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HEADER_FIXED 32u /* magic + 6 x u32 */

struct trace_writer {
    FILE *fp;
    char *path;
    struct trace_info info;
    uint64_t *expert_bytes;
    uint8_t *rec;        /* one record */
    size_t rec_bytes;
    uint64_t count;
    int first_err;
    char err[512];
};

struct trace_reader {
    FILE *fp;
    char *path;
    struct trace_info info;
    uint64_t *expert_bytes;
    uint8_t *rec;
    size_t rec_bytes;
    size_t header_bytes;
    int32_t *ids;
    float *w;
    int32_t *pred;
    uint64_t count;      /* records in the file, 0 when unknown */
    uint64_t index;      /* records read */
    char err[512];
};

/* ---- byte order ---- */

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}
static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p) { return get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }
static void put_f32(uint8_t *p, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(p, v);
}
static float get_f32(const uint8_t *p)
{
    uint32_t v = get_u32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

static void fmt_err(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fmt_err(char *buf, size_t len, const char *fmt, ...)
{
    if (!buf || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

size_t trace_record_bytes(const struct trace_info *info)
{
    return 12 + (size_t)info->n_layer * ((size_t)info->k * 8 + (size_t)info->lookahead * info->m * 4);
}

/* Shape checks shared by the writer and the reader; NULL when valid. */
static const char *check_shape(const struct trace_info *in)
{
    if (in->n_layer == 0 || in->n_layer > TRACE_MAX_LAYER)
        return "n_layer out of range";
    if (in->n_expert == 0 || in->n_expert > TRACE_MAX_EXPERT)
        return "n_expert out of range";
    if (in->k == 0 || in->k > in->n_expert)
        return "k (experts per token) is 0 or larger than n_expert";
    if (in->lookahead >= in->n_layer)
        return "lookahead D is not smaller than n_layer";
    if (in->lookahead > 0 && (in->m == 0 || in->m > in->n_expert))
        return "m (ids per prediction list) is 0 or larger than n_expert";
    return NULL;
}

/* ---- writer ---- */

int trace_writer_open(struct trace_writer **out, const char *path, const struct trace_info *info,
                      char *err, size_t errlen)
{
    *out = NULL;
    const char *why = check_shape(info);
    if (why) {
        fmt_err(err, errlen, "%s: cannot write trace: %s", path, why);
        return ERR_INVALID;
    }
    struct trace_writer *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->info = *info;
    if (w->info.lookahead == 0)
        w->info.m = 0;
    w->rec_bytes = trace_record_bytes(&w->info);
    w->path = strdup(path);
    w->expert_bytes = calloc(info->n_layer, sizeof *w->expert_bytes);
    w->rec = malloc(w->rec_bytes);
    if (!w->path || !w->expert_bytes || !w->rec) {
        trace_writer_close(w);
        return -ENOMEM;
    }
    memcpy(w->expert_bytes, info->expert_bytes, info->n_layer * sizeof *w->expert_bytes);
    w->info.expert_bytes = w->expert_bytes;
    w->fp = fopen(path, "wb");
    if (!w->fp) {
        int rc = -errno;
        fmt_err(err, errlen, "%s: cannot create trace: %s", path, strerror(errno));
        trace_writer_close(w);
        return rc;
    }
    setvbuf(w->fp, NULL, _IOFBF, 1 << 20);
    uint8_t hdr[HEADER_FIXED];
    memcpy(hdr, TRACE_MAGIC, 8);
    put_u32(hdr + 8, TRACE_VERSION);
    put_u32(hdr + 12, w->info.n_layer);
    put_u32(hdr + 16, w->info.n_expert);
    put_u32(hdr + 20, w->info.k);
    put_u32(hdr + 24, w->info.lookahead);
    put_u32(hdr + 28, w->info.m);
    bool ok = fwrite(hdr, 1, sizeof hdr, w->fp) == sizeof hdr;
    for (uint32_t l = 0; ok && l < w->info.n_layer; l++) {
        uint8_t b[8];
        put_u64(b, w->expert_bytes[l]);
        ok = fwrite(b, 1, 8, w->fp) == 8;
    }
    if (!ok) {
        int rc = errno ? -errno : ERR_IO;
        fmt_err(err, errlen, "%s: cannot write trace header: %s", path, strerror(errno));
        trace_writer_close(w);
        return rc;
    }
    *out = w;
    return 0;
}

int trace_writer_write_token(struct trace_writer *w, const struct trace_token *t)
{
    const struct trace_info *in = &w->info;
    const uint32_t K = in->k, D = in->lookahead, M = in->m;
    uint8_t *p = w->rec;
    put_u32(p, t->step);
    put_u32(p + 4, t->seq);
    put_u32(p + 8, (uint32_t)t->pos);
    p += 12;
    for (uint32_t l = 0; l < in->n_layer; l++) {
        for (uint32_t j = 0; j < K; j++) {
            int32_t id = t->ids[l * K + j];
            if (id < -1 || id >= (int32_t)in->n_expert) {
                fmt_err(w->err, sizeof w->err, "%s: token %llu layer %u: expert id %d out of range",
                        w->path, (unsigned long long)w->count, l, id);
                return ERR_INVALID;
            }
            put_u32(p + 4 * j, (uint32_t)id);
            put_f32(p + 4 * (K + j), t->w ? t->w[l * K + j] : 0.0f);
        }
        p += 8 * K;
        for (uint32_t i = 0; i < D * M; i++) {
            int32_t id = t->pred ? t->pred[(size_t)l * D * M + i] : -1;
            if (id < -1 || id >= (int32_t)in->n_expert) {
                fmt_err(w->err, sizeof w->err, "%s: token %llu layer %u: predicted id %d out of range",
                        w->path, (unsigned long long)w->count, l, id);
                return ERR_INVALID;
            }
            put_u32(p + 4 * i, (uint32_t)id);
        }
        p += 4 * (size_t)D * M;
    }
    if (fwrite(w->rec, 1, w->rec_bytes, w->fp) != w->rec_bytes) {
        int rc = errno ? -errno : ERR_IO;
        fmt_err(w->err, sizeof w->err, "%s: write failed at token %llu: %s", w->path,
                (unsigned long long)w->count, strerror(errno));
        if (!w->first_err)
            w->first_err = rc;
        return rc;
    }
    w->count++;
    return 0;
}

int trace_writer_close(struct trace_writer *w)
{
    if (!w)
        return 0;
    int rc = w->first_err;
    if (w->fp) {
        if (fflush(w->fp) != 0 && !rc) {
            rc = errno ? -errno : ERR_IO;
            fmt_err(w->err, sizeof w->err, "%s: flush failed: %s", w->path, strerror(errno));
        }
        if (fclose(w->fp) != 0 && !rc)
            rc = errno ? -errno : ERR_IO;
    }
    free(w->path);
    free(w->expert_bytes);
    free(w->rec);
    free(w);
    return rc;
}

const char *trace_writer_error(const struct trace_writer *w) { return w->err; }
uint64_t trace_writer_count(const struct trace_writer *w) { return w->count; }

/* ---- reader ---- */

int trace_reader_open(struct trace_reader **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        int rc = -errno;
        fmt_err(err, errlen, "%s: cannot open trace: %s", path, strerror(errno));
        return rc;
    }
    uint8_t hdr[HEADER_FIXED];
    size_t got = fread(hdr, 1, sizeof hdr, fp);
    if (got < 8 || memcmp(hdr, TRACE_MAGIC, 8) != 0) {
        fmt_err(err, errlen, "%s: not a routing trace (magic is not " TRACE_MAGIC ")", path);
        fclose(fp);
        return ERR_MODEL_FORMAT;
    }
    if (got < sizeof hdr) {
        fmt_err(err, errlen, "%s: truncated trace header (%zu of %u bytes)", path, got, HEADER_FIXED);
        fclose(fp);
        return ERR_MODEL_FORMAT;
    }
    uint32_t version = get_u32(hdr + 8);
    if (version != TRACE_VERSION) {
        fmt_err(err, errlen, "%s: unsupported trace version %u (expected %u)", path, version, TRACE_VERSION);
        fclose(fp);
        return ERR_MODEL_FORMAT;
    }
    struct trace_info in = {
        .n_layer = get_u32(hdr + 12), .n_expert = get_u32(hdr + 16), .k = get_u32(hdr + 20),
        .lookahead = get_u32(hdr + 24), .m = get_u32(hdr + 28),
    };
    const char *why = check_shape(&in);
    if (why) {
        fmt_err(err, errlen, "%s: corrupt trace header: %s (n_layer %u n_expert %u k %u D %u m %u)", path,
                why, in.n_layer, in.n_expert, in.k, in.lookahead, in.m);
        fclose(fp);
        return ERR_MODEL_FORMAT;
    }
    if (in.lookahead == 0 && in.m != 0) {
        fmt_err(err, errlen, "%s: corrupt trace header: m is %u with no lookahead", path, in.m);
        fclose(fp);
        return ERR_MODEL_FORMAT;
    }
    struct trace_reader *r = calloc(1, sizeof *r);
    if (!r) {
        fclose(fp);
        return -ENOMEM;
    }
    r->fp = fp;
    r->info = in;
    r->rec_bytes = trace_record_bytes(&in);
    r->header_bytes = HEADER_FIXED + 8 * (size_t)in.n_layer;
    r->path = strdup(path);
    r->expert_bytes = calloc(in.n_layer, 8);
    r->rec = malloc(r->rec_bytes);
    r->ids = malloc((size_t)in.n_layer * in.k * 4);
    r->w = malloc((size_t)in.n_layer * in.k * 4);
    r->pred = malloc((size_t)in.n_layer * in.lookahead * in.m * 4 + 4);
    if (!r->path || !r->expert_bytes || !r->rec || !r->ids || !r->w || !r->pred) {
        trace_reader_close(r);
        return -ENOMEM;
    }
    r->info.expert_bytes = r->expert_bytes;
    bool any_moe = false;
    for (uint32_t l = 0; l < in.n_layer; l++) {
        uint8_t b[8];
        if (fread(b, 1, 8, fp) != 8) {
            fmt_err(err, errlen, "%s: truncated trace header: expert sizes end at layer %u of %u", path, l,
                    in.n_layer);
            trace_reader_close(r);
            return ERR_MODEL_FORMAT;
        }
        r->expert_bytes[l] = get_u64(b);
        if (r->expert_bytes[l] > (1ull << 40)) {
            fmt_err(err, errlen, "%s: corrupt trace header: layer %u expert size %llu bytes", path, l,
                    (unsigned long long)r->expert_bytes[l]);
            trace_reader_close(r);
            return ERR_MODEL_FORMAT;
        }
        any_moe |= r->expert_bytes[l] != 0;
    }
    if (!any_moe) {
        fmt_err(err, errlen, "%s: corrupt trace header: no layer has experts (all sizes 0)", path);
        trace_reader_close(r);
        return ERR_MODEL_FORMAT;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode)) {
        uint64_t body = (uint64_t)st.st_size - r->header_bytes;
        if (body % r->rec_bytes) {
            fmt_err(err, errlen,
                    "%s: truncated trace: %llu bytes after the header is not a whole number of "
                    "%zu-byte token records (last record has %llu bytes)",
                    path, (unsigned long long)body, r->rec_bytes,
                    (unsigned long long)(body % r->rec_bytes));
            trace_reader_close(r);
            return ERR_MODEL_FORMAT;
        }
        r->count = body / r->rec_bytes;
    }
    *out = r;
    return 0;
}

const struct trace_info *trace_reader_info(const struct trace_reader *r) { return &r->info; }
uint64_t trace_reader_count(const struct trace_reader *r) { return r->count; }
const char *trace_reader_error(const struct trace_reader *r) { return r->err; }

int trace_reader_rewind(struct trace_reader *r)
{
    if (fseek(r->fp, (long)r->header_bytes, SEEK_SET) != 0) {
        int rc = -errno;
        fmt_err(r->err, sizeof r->err, "%s: seek failed: %s", r->path, strerror(errno));
        return rc;
    }
    r->index = 0;
    return 0;
}

int trace_reader_next(struct trace_reader *r, struct trace_token *t)
{
    const struct trace_info *in = &r->info;
    const uint32_t K = in->k, D = in->lookahead, M = in->m;
    size_t got = fread(r->rec, 1, r->rec_bytes, r->fp);
    if (got == 0 && feof(r->fp))
        return 1;
    if (got != r->rec_bytes) {
        if (ferror(r->fp)) {
            int rc = errno ? -errno : ERR_IO;
            fmt_err(r->err, sizeof r->err, "%s: read failed at token %llu: %s", r->path,
                    (unsigned long long)r->index, strerror(errno));
            return rc;
        }
        fmt_err(r->err, sizeof r->err, "%s: truncated trace: token %llu has %zu of %zu bytes", r->path,
                (unsigned long long)r->index, got, r->rec_bytes);
        return ERR_MODEL_FORMAT;
    }
    const uint8_t *p = r->rec;
    t->step = get_u32(p);
    t->seq = get_u32(p + 4);
    t->pos = (int32_t)get_u32(p + 8);
    p += 12;
    for (uint32_t l = 0; l < in->n_layer; l++) {
        bool moe = r->expert_bytes[l] != 0;
        for (uint32_t j = 0; j < K; j++) {
            int32_t id = (int32_t)get_u32(p + 4 * j);
            if (id < -1 || id >= (int32_t)in->n_expert || (id >= 0) != moe) {
                fmt_err(r->err, sizeof r->err,
                        "%s: corrupt trace: token %llu layer %u: expert id %d is invalid (n_expert %u, "
                        "layer %s)",
                        r->path, (unsigned long long)r->index, l, id, in->n_expert, moe ? "MoE" : "not MoE");
                return ERR_MODEL_FORMAT;
            }
            r->ids[l * K + j] = id;
            r->w[l * K + j] = get_f32(p + 4 * (K + j));
        }
        p += 8 * K;
        for (uint32_t i = 0; i < D * M; i++) {
            int32_t id = (int32_t)get_u32(p + 4 * i);
            if (id < -1 || id >= (int32_t)in->n_expert) {
                fmt_err(r->err, sizeof r->err,
                        "%s: corrupt trace: token %llu layer %u: predicted id %d out of range", r->path,
                        (unsigned long long)r->index, l, id);
                return ERR_MODEL_FORMAT;
            }
            r->pred[(size_t)l * D * M + i] = id;
        }
        p += 4 * (size_t)D * M;
    }
    t->ids = r->ids;
    t->w = r->w;
    t->pred = D ? r->pred : NULL;
    r->index++;
    return 0;
}

void trace_reader_close(struct trace_reader *r)
{
    if (!r)
        return;
    if (r->fp)
        fclose(r->fp);
    free(r->path);
    free(r->expert_bytes);
    free(r->rec);
    free(r->ids);
    free(r->w);
    free(r->pred);
    free(r);
}
