/* SPDX-License-Identifier: MIT */
/*
 * testutil.h - helpers shared by the C tests, on top of cmocka.
 * Each tests/test_<module>_<topic>.c is its own executable; it exits 0 when
 * every test passes, 1 on a failure and 77 to skip (for example no GPU).
 */
#ifndef MOED_TESTS_TESTUTIL_H
#define MOED_TESTS_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <pthread.h>
#include <time.h>
#include <cmocka.h>

#include "common/err.h"

#define TEST_SKIP_CODE 77

/* Fails the test with the error's name when rc != 0. */
#define ASSERT_OK(rc)                                                              \
    do {                                                                           \
        int rc_ = (rc);                                                            \
        if (rc_ != 0)                                                              \
            fail_msg("%s returned %d (%s: %s)", #rc, rc_, err_name(rc_), err_str(rc_)); \
    } while (0)

/* Fails when |a - b| > tol. */
#define ASSERT_NEAR(a, b, tol)                                                     \
    do {                                                                           \
        double a_ = (a), b_ = (b), t_ = (tol);                                     \
        if (!(fabs(a_ - b_) <= t_))                                                \
            fail_msg("%s = %g, %s = %g, |diff| %g > tol %g", #a, a_, #b, b_,       \
                     fabs(a_ - b_), t_);                                           \
    } while (0)

/* Build output folder (BUILD in the environment, "build" by default). */
static inline const char *test_build_dir(void)
{
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

/* Path of a test model written by tests/make_models.sh, in a static buffer. */
static inline const char *test_model_path(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) & 3;
    snprintf(buf[i], sizeof buf[i], "%s/models/%s.gguf", test_build_dir(), name);
    return buf[i];
}

/* Small deterministic generator for test data (xorshift64*). */
static inline uint64_t test_rand_u64(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}
static inline float test_rand_f(uint64_t *s) /* uniform in [-1, 1) */
{
    return (float)((test_rand_u64(s) >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

/* Wakes a test thread waiting for engine events (the engine's notify
 * callback: test_waiter_notify with the waiter as ud). */
struct test_waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;
};
static inline void test_waiter_init(struct test_waiter *w)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->ready = 0;
}
static inline void test_waiter_destroy(struct test_waiter *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}
static inline void test_waiter_notify(void *ud)
{
    struct test_waiter *w = ud;
    pthread_mutex_lock(&w->mu);
    w->ready = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}
/* Waits for the next notification; fails the test after `seconds` without one. */
static inline void test_waiter_wait(struct test_waiter *w, int seconds)
{
    pthread_mutex_lock(&w->mu);
    while (!w->ready) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += seconds;
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) != 0)
            fail_msg("engine made no progress for %d s", seconds);
    }
    w->ready = 0;
    pthread_mutex_unlock(&w->mu);
}

#endif
