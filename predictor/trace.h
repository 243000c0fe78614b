/* SPDX-License-Identifier: MIT */
/*
 * trace.h - the binary routing trace: which experts every token chose at
 * every layer, and the pre-gating predictions made for the layers ahead.
 *
 * Sits under predictor/ so the predictor and the cache can be developed and
 * tested from recorded runs (tools/replay, tests). Depends on common/ only.
 *
 * Format, all little-endian:
 *   header:  "MOEDTRC1" (8 bytes), u32 version (1), u32 n_layer, u32 n_expert,
 *            u32 k (experts per token), u32 D (lookahead distances recorded),
 *            u32 m (ids per recorded prediction list, -1 padded),
 *            n_layer x u64 expert bytes (one expert of that layer; 0 = not MoE)
 *   records: one per token, in the order the live run computed them:
 *            u32 step, u32 seq (request id), i32 pos, then per layer L:
 *              k x i32 expert id (-1 for a non-MoE layer),
 *              k x f32 gate weight,
 *              D x m x i32 pre-gating prediction for layer L+d (d = 1..D) made
 *                at layer L, best first (-1 where L+d is past the last layer
 *                or nothing was recorded).
 * Every record has the same size, so a file is valid only if its length is
 * the header plus a whole number of records.
 */
#ifndef MOED_PREDICTOR_TRACE_H
#define MOED_PREDICTOR_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define TRACE_MAGIC "MOEDTRC1"
#define TRACE_VERSION 1u
#define TRACE_MAX_LAYER 4096u
#define TRACE_MAX_EXPERT 65536u

/* Shape of a trace. expert_bytes has n_layer entries. */
struct trace_info {
    uint32_t n_layer;
    uint32_t n_expert;
    uint32_t k;          /* experts per token */
    uint32_t lookahead;  /* D: pre-gating distances recorded per layer (may be 0) */
    uint32_t m;          /* ids per prediction list (may be 0 when D is 0) */
    const uint64_t *expert_bytes; /* n_layer: bytes of one expert, 0 for a non-MoE layer */
};

/* One token. Arrays are laid out as in the file:
 *   ids  [n_layer][k], w [n_layer][k], pred [n_layer][D][m]
 * (pred entry for layer L, distance d = 1..D at pred[(L * D + d - 1) * m]). */
struct trace_token {
    uint32_t step;
    uint32_t seq;
    int32_t pos;
    const int32_t *ids;
    const float *w;
    const int32_t *pred; /* NULL or ignored when D == 0 */
};

/* Bytes of one token record for a shape. */
size_t trace_record_bytes(const struct trace_info *info);

/* ---- writer ---- */

struct trace_writer;

/* Creates (truncates) path and writes the header. info is copied. On failure
 * returns -errno or ERR_INVALID (bad shape), leaves *out NULL and, when err is
 * not NULL, writes one line naming the file and the problem. */
int trace_writer_open(struct trace_writer **out, const char *path, const struct trace_info *info,
                      char *err, size_t errlen);
/* Appends one token (buffered; does not allocate). t->pred may be NULL, which
 * writes -1 everywhere. Returns 0, ERR_INVALID for an id out of range, or
 * -errno from the write; the message is then in trace_writer_error(). */
int trace_writer_write_token(struct trace_writer *w, const struct trace_token *t);
/* Flushes, closes and frees w. Returns 0 or the first error of any write,
 * the flush or the close. NULL does nothing. */
int trace_writer_close(struct trace_writer *w);
/* The last error message (names the file); "" when none. Valid until the
 * next call on w. */
const char *trace_writer_error(const struct trace_writer *w);
/* Tokens written so far. */
uint64_t trace_writer_count(const struct trace_writer *w);

/* ---- reader ---- */

struct trace_reader;

/* Opens path and validates the header (magic, version, shape limits, expert
 * sizes) and, for regular files, that the length is a whole number of
 * records. On failure returns -errno or ERR_MODEL_FORMAT, leaves *out NULL
 * and writes one line naming the file and the problem into err. */
int trace_reader_open(struct trace_reader **out, const char *path, char *err, size_t errlen);
/* The header; valid until trace_reader_close(). */
const struct trace_info *trace_reader_info(const struct trace_reader *r);
/* Reads the next token into *t (its arrays belong to r and stay valid until
 * the next call). Returns 0 for a token, 1 at the clean end of the file,
 * ERR_MODEL_FORMAT for a truncated record or an out-of-range id, or -errno;
 * the message is in trace_reader_error(). */
int trace_reader_next(struct trace_reader *r, struct trace_token *t);
/* Tokens in the file (from its length), or 0 when unknown (not a regular file). */
uint64_t trace_reader_count(const struct trace_reader *r);
/* Seeks back to the first record. Returns 0 or -errno. */
int trace_reader_rewind(struct trace_reader *r);
const char *trace_reader_error(const struct trace_reader *r);
/* NULL does nothing. */
void trace_reader_close(struct trace_reader *r);

#endif
