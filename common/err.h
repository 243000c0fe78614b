/* SPDX-License-Identifier: MIT */
/*
 * err.h - error codes shared by every module.
 *
 * A function that can fail returns int: 0 is success, a negative value is an
 * error. Failed system calls return -errno; moed's own codes start at -5000
 * and are listed once, in ERR_MAP below. err_name() and err_str() accept both.
 */
#ifndef MOED_COMMON_ERR_H
#define MOED_COMMON_ERR_H

#define ERR_MAP(X)                                                          \
    X(MODEL_FORMAT, -5000, "malformed or unsupported model file")          \
    X(MODEL_ARCH,   -5001, "unsupported model architecture")               \
    X(MODEL_TYPE,   -5002, "unsupported tensor type")                      \
    X(CTX_FULL,     -5003, "context is full")                              \
    X(BUSY,         -5004, "resource busy")                                \
    X(CANCELED,     -5005, "operation canceled")                           \
    X(CUDA,         -5006, "CUDA error")                                   \
    X(CONFIG,       -5007, "invalid configuration")                        \
    X(IO,           -5008, "I/O error")                                    \
    X(TOKENIZER,    -5009, "tokenizer error")                              \
    X(TEMPLATE,     -5010, "chat template error")                          \
    X(INVALID,      -5011, "invalid argument")                             \
    X(MODEL_CHANGED,-5012, "model file changed under the server")

enum err_code {
#define ERR_ENUM(name, val, str) ERR_##name = (val),
    ERR_MAP(ERR_ENUM)
#undef ERR_ENUM
};

/* Returns a short constant name such as "ERR_MODEL_FORMAT" or "ENOENT". */
const char *err_name(int code);
/* Returns a human-readable constant description of the code. */
const char *err_str(int code);

#endif
