/* SPDX-License-Identifier: MIT */
/*
 * log.h - leveled logging to stderr (or a log file), and ASSERT for bugs.
 *
 * Log lines carry a level and a subsystem: "moed I engine: message". Safe to
 * call from any thread; each line is written with one write(2).
 */
#ifndef MOED_COMMON_LOG_H
#define MOED_COMMON_LOG_H

#include <stdio.h>
#include <stdlib.h>

enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Sets the most verbose level printed (default LOG_LEVEL_INFO). */
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
/* Redirects output to an open file descriptor (default 2). */
void log_set_fd(int fd);

void log_msg(enum log_level lvl, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_err(sub, ...)   log_msg(LOG_LEVEL_ERROR, sub, __VA_ARGS__)
#define log_warn(sub, ...)  log_msg(LOG_LEVEL_WARN, sub, __VA_ARGS__)
#define log_info(sub, ...)  log_msg(LOG_LEVEL_INFO, sub, __VA_ARGS__)
#define log_debug(sub, ...) log_msg(LOG_LEVEL_DEBUG, sub, __VA_ARGS__)

/* A failed ASSERT is a bug in moed: it prints file:line and aborts. */
#define ASSERT(x)                                                            \
    do {                                                                     \
        if (__builtin_expect(!(x), 0)) {                                     \
            fprintf(stderr, "moed: %s:%d: assertion failed: %s\n", __FILE__, \
                    __LINE__, #x);                                           \
            abort();                                                         \
        }                                                                    \
    } while (0)

#endif
