/* SPDX-License-Identifier: MIT */
/*
 * test_kernels_backend.c - the backend registry: with no usable GPU (no
 * library, no driver, no device, or no CUDA compute backend in this build)
 * BE_GPU_AUTO falls back to the CPU backend, BE_GPU_REQUIRE fails with a
 * message saying why, and BE_GPU_OFF never looks for a GPU.
 */
#include "tests/testutil.h"

#include "kernels/backend.h"

#include <string.h>

static void test_auto_falls_back(void **st)
{
    (void)st;
    struct be *be = NULL;
    char err[512] = "";
    struct be_init_params p = {.gpu = BE_GPU_AUTO, .cpu = {.n_threads = 1}};
    ASSERT_OK(be_init(&be, &p, err, sizeof err));
    assert_non_null(be);
    /* This build has no CUDA compute backend, so whatever the machine has, the
     * engine runs on the CPU. */
    assert_string_equal(be->name, "cpu");
    be_free(be);
}

static void test_require_fails_clearly(void **st)
{
    (void)st;
    struct be *be = NULL;
    char err[512] = "";
    struct be_init_params p = {.gpu = BE_GPU_REQUIRE, .cpu = {.n_threads = 1}};
    int rc = be_init(&be, &p, err, sizeof err);
    assert_int_equal(rc, ERR_CUDA);
    assert_null(be);
    assert_non_null(strstr(err, "a GPU was required but none is usable: "));
    assert_true(strlen(err) > strlen("a GPU was required but none is usable: ") + 5);
}

static void test_off(void **st)
{
    (void)st;
    struct be *be = NULL;
    char err[512] = "";
    struct be_init_params p = {.gpu = BE_GPU_OFF, .cpu = {.n_threads = 2}};
    ASSERT_OK(be_init(&be, &p, err, sizeof err));
    assert_string_equal(be->name, "cpu");
    be_free(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auto_falls_back),
        cmocka_unit_test(test_require_fails_clearly),
        cmocka_unit_test(test_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
