/* SPDX-License-Identifier: MIT */
/*
 * test_cache_store.c - the expert store (cache/store.c) on a synthetic file
 * whose every byte is a known function of its offset, so a slice read from
 * the wrong place, or a slot overwritten while pinned, shows as a byte
 * mismatch. Slices have odd sizes so that they start at unaligned offsets
 * (the O_DIRECT span arithmetic). Covers: contents through io_uring with
 * O_DIRECT, buffered after EINVAL, and the pread pool; LRU order; pins and
 * XS_NOSLOT; protection of prefetched experts; prefetch accounting; injected
 * read failures (retried, then reported, then retried on the next acquire);
 * a file changed in place and a file replaced by rename; many threads
 * acquiring and releasing at once (run under ThreadSanitizer by
 * tests/test_cache_tsan.sh); the memory plan's budget parsing, slot
 * arithmetic and cgroup reading.
 */
#include "tests/testutil.h"

#include "cache/plan.h"
#include "cache/store.h"
#include "common/err.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { NL = 3, NE = 8 };
static const size_t g_sz[3] = {5003, 5003, 7001};
static char g_path[256];
static struct xs_layer g_layers[NL];

static uint8_t pat(uint64_t off) { return (uint8_t)((off * 2654435761u) >> 13); }

static void write_file(const char *path, uint64_t base)
{
    /* layer 0 and 2 are MoE, layer 1 is not */
    uint64_t off = base;
    for (int l = 0; l < NL; l++) {
        g_layers[l].moe = l != 1;
        if (!g_layers[l].moe)
            continue;
        for (int k = 0; k < 3; k++) {
            g_layers[l].s[k] = (struct xs_slice){.type = BE_TYPE_Q8_0, .bytes = g_sz[k], .off0 = off};
            off += g_sz[k] * NE + 17; /* a gap keeps the next tensor unaligned */
        }
    }
    size_t n = (size_t)off + 4096;
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = pat(i);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
}

static int setup(void **state)
{
    (void)state;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_path, sizeof g_path, "%s/moed-test-store-%d.bin", dir, (int)getpid());
    write_file(g_path, 1000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(g_path);
    return 0;
}

static struct xs_params params(uint32_t slots_per_class)
{
    struct xs_params p = xs_params_default();
    p.path = g_path;
    p.n_layer = NL;
    p.n_expert = NE;
    p.layers = g_layers;
    p.direct_min_bytes = 0; /* these small slices too go through O_DIRECT */
    p.device_bytes = xs_min_budget(&p, slots_per_class);
    return p;
}

static void check_data(const struct xs_handle *h, uint32_t l, uint32_t e)
{
    for (int k = 0; k < 3; k++) {
        uint64_t off = g_layers[l].s[k].off0 + (uint64_t)e * g_sz[k];
        const uint8_t *d = h->data[k];
        for (size_t i = 0; i < g_sz[k]; i++)
            if (d[i] != pat(off + i))
                fail_msg("layer %u expert %u slice %d byte %zu: %u, want %u", l, e, k, i, d[i], pat(off + i));
    }
}

/* Acquire, wait until ready, check. Returns the acquire's first answer. */
static int get(struct xstore *s, uint32_t l, uint32_t e, struct xs_handle *h)
{
    char err[256];
    uint64_t seen = 0;
    int rc = xs_acquire(s, l, e, h, err, sizeof err);
    int first = rc;
    while (rc == XS_PENDING) {
        rc = xs_check(s, h, err, sizeof err);
        if (rc == XS_PENDING)
            xs_wait(s, &seen);
    }
    if (rc == XS_READY)
        check_data(h, l, e);
    return rc < 0 ? rc : first;
}

static void contents(const struct xs_params *p)
{
    struct xstore *s = NULL;
    char err[256];
    ASSERT_OK(xs_open(&s, p, err, sizeof err));
    struct xs_handle h;
    for (uint32_t l = 0; l < NL; l += 2)
        for (uint32_t e = 0; e < NE; e++) {
            assert_int_equal(get(s, l, e, &h), XS_PENDING);
            xs_release(s, &h);
        }
    struct xs_stats st;
    xs_get_stats(s, &st);
    assert_int_equal(st.misses, 2 * NE);
    assert_int_equal(st.loads, 2 * NE);
    assert_true(st.bytes_disk >= st.bytes_useful);
    assert_int_equal(st.bytes_useful, 2 * NE * (g_sz[0] + g_sz[1] + g_sz[2]));
    /* a non-MoE layer has no experts */
    assert_int_equal(xs_acquire(s, 1, 0, &h, err, sizeof err), ERR_INVALID);
    xs_close(s);
}

static void test_contents_uring(void **state)
{
    (void)state;
    struct xs_params p = params(3);
    contents(&p);
}

static void test_contents_einval_fallback(void **state)
{
    (void)state;
    struct xs_params p = params(3);
    p.test_odirect_einval = true;
    contents(&p);
    p.test_no_uring = true; /* the pread pool meets the same refusal */
    contents(&p);
}

static void test_contents_buffered_class(void **state)
{
    (void)state;
    struct xs_params p = params(3);
    p.direct_min_bytes = 6000; /* gate and up are smaller: exact slots, buffered */
    p.device_bytes = xs_min_budget(&p, 3);
    uint32_t n;
    size_t used = xs_plan_slots(&p, p.device_bytes, &n);
    assert_int_equal(n, 3);
    assert_int_equal(used, 3 * (5056 + 5056 + 7040)); /* each slice rounded up to 64 bytes */
    contents(&p);
}

static void test_contents_pread(void **state)
{
    (void)state;
    struct xs_params p = params(3);
    p.test_no_uring = true;
    contents(&p);
    p = params(3);
    p.io = XS_IO_PREAD;
    contents(&p);
}

static void test_lru_and_pins(void **state)
{
    (void)state;
    struct xs_params p = params(2); /* one class, 2 slots */
    uint32_t n;
    xs_plan_slots(&p, p.device_bytes, &n);
    assert_int_equal(n, 2);
    struct xstore *s = NULL;
    char err[256];
    ASSERT_OK(xs_open(&s, &p, err, sizeof err));
    struct xs_handle a, b, c;
    get(s, 0, 0, &a);
    xs_release(s, &a);
    get(s, 0, 1, &b);
    xs_release(s, &b);
    assert_int_equal(get(s, 0, 0, &a), XS_READY); /* a hit, now most recent */
    xs_release(s, &a);
    get(s, 0, 2, &c); /* evicts expert 1, the least recently used */
    xs_release(s, &c);
    assert_true(xs_resident(s, 0, 0));
    assert_false(xs_resident(s, 0, 1));
    assert_true(xs_resident(s, 0, 2));

    /* Both slots pinned: no slot for a third expert, nothing pinned by the refusal. */
    get(s, 0, 0, &a);
    get(s, 0, 2, &b);
    assert_int_equal(xs_acquire(s, 0, 5, &c, err, sizeof err), XS_NOSLOT);
    assert_int_equal(c.slot, -1);
    xs_release(s, &a);
    assert_int_equal(get(s, 0, 5, &c), XS_PENDING); /* takes expert 0's slot, not the pinned 2 */
    assert_true(xs_resident(s, 0, 2));
    assert_false(xs_resident(s, 0, 0));
    check_data(&b, 0, 2); /* the pinned slot was not touched */
    xs_release(s, &b);
    xs_release(s, &c);
    struct xs_stats st;
    xs_get_stats(s, &st);
    assert_int_equal(st.hits, 3); /* 0 again, then 0 and 2 for the pins */
    assert_int_equal(st.evictions, 2);
    assert_int_equal(st.slots_pinned, 0);
    xs_close(s);
}

static void test_prefetch_protection(void **state)
{
    (void)state;
    struct xs_params p = params(3); /* 3 slots of the one class */
    struct xstore *s = NULL;
    char err[256];
    ASSERT_OK(xs_open(&s, &p, err, sizeof err));
    struct xs_handle h;
    get(s, 0, 0, &h);
    xs_release(s, &h);
    get(s, 0, 1, &h);
    xs_release(s, &h);
    int32_t want[2] = {6, 7};
    /* 3 slots: 0 and 1 resident, one empty; both prefetches start (the
     * empty slot, then the least recently used: expert 0) */
    assert_int_equal(xs_prefetch(s, 2, want, 2, 1, 0), 2);
    assert_false(xs_resident(s, 0, 0));
    uint64_t seen = 0;
    while (!(xs_resident(s, 2, 6) && xs_resident(s, 2, 7)))
        xs_wait(s, &seen);
    /* the two prefetched experts are protected: a miss evicts the unprotected one */
    get(s, 0, 3, &h);
    xs_release(s, &h);
    assert_true(xs_resident(s, 2, 6));
    assert_true(xs_resident(s, 2, 7));
    /* prefetching what is resident starts nothing */
    assert_int_equal(xs_prefetch(s, 2, want, 2, 1, 0), 0);
    /* every other slot is protected or pinned: a prefetch starts nothing */
    int32_t more[1] = {5};
    struct xs_handle pin;
    get(s, 0, 3, &pin);
    assert_int_equal(xs_prefetch(s, 2, more, 1, 1, 0), 0);
    xs_release(s, &pin);
    get(s, 2, 6, &h); /* used: counted */
    xs_release(s, &h);
    xs_unprotect_layer(s, 2);
    /* now 7 is the least recently used and unprotected: an acquire takes it */
    get(s, 0, 4, &h);
    xs_release(s, &h);
    get(s, 0, 5, &h);
    xs_release(s, &h);
    struct xs_stats st;
    xs_get_stats(s, &st);
    assert_int_equal(st.prefetch_issued, 2);
    assert_int_equal(st.prefetch_used, 1);
    assert_int_equal(st.prefetch_wasted, 1); /* 7 evicted unused */
    xs_close(s);
}

static void test_prefetch_budget(void **state)
{
    (void)state;
    struct xs_params p = params(4);
    struct xstore *s = NULL;
    char err[256];
    ASSERT_OK(xs_open(&s, &p, err, sizeof err));
    int32_t want[3] = {1, 2, 3};
    size_t slot = 0;
    for (int k = 0; k < 3; k++)
        slot += ((g_sz[k] + 4095) / 4096 + 1) * 4096;
    /* a byte budget of two slots starts two loads */
    assert_int_equal(xs_prefetch(s, 0, want, 3, 2, 2 * slot + 1), 2);
    uint64_t seen = 0;
    while (!(xs_resident(s, 0, 1) && xs_resident(s, 0, 2)))
        xs_wait(s, &seen);
    struct xs_handle h;
    assert_int_equal(get(s, 0, 1, &h), XS_READY);
    xs_release(s, &h);
    xs_close(s);
}

static void test_injected_failures(void **state)
{
    (void)state;
    struct xs_params p = params(3);
    p.test_fail = "0:3:2,2:5"; /* 0:3 fails twice (retried), 2:5 always */
    struct xstore *s = NULL;
    char err[256];
    ASSERT_OK(xs_open(&s, &p, err, sizeof err));
    struct xs_handle h;
    assert_int_equal(get(s, 0, 3, &h), XS_PENDING);
    xs_release(s, &h);
    struct xs_stats st;
    xs_get_stats(s, &st);
    assert_int_equal(st.read_retries, 2);
    assert_int_equal(st.load_failures, 0);
    /* always failing: reported with a message naming the expert and the file */
    int rc = get(s, 2, 5, &h);
    assert_int_equal(rc, ERR_IO);
    assert_int_equal(h.slot, -1);
    xs_get_stats(s, &st);
    assert_int_equal(st.load_failures, 1);
    assert_int_equal(st.slots_pinned, 0);
    /* the next acquire tries again (and fails again); others still load */
    assert_int_equal(get(s, 2, 5, &h), ERR_IO);
    assert_int_equal(get(s, 2, 4, &h), XS_PENDING);
    xs_release(s, &h);
    char msg[256];
    uint64_t seen = 0;
    rc = xs_acquire(s, 2, 5, &h, msg, sizeof msg);
    while (rc == XS_PENDING) {
        rc = xs_check(s, &h, msg, sizeof msg);
        if (rc == XS_PENDING)
            xs_wait(s, &seen);
    }
    assert_int_equal(rc, ERR_IO);
    assert_non_null(strstr(msg, "expert 5 of layer 2"));
    assert_non_null(strstr(msg, g_path));
    xs_close(s);
    /* a bad hook spec is refused */
    p.test_fail = "9:1";
    assert_true(xs_open(&s, &p, err, sizeof err) < 0);
    assert_non_null(strstr(err, "9:1"));
}

static void test_file_changed(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s.copy", g_path);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", g_path, path);
    assert_int_equal(system(cmd), 0);
    struct xs_params p = params(3);
    p.path = path;
    struct xstore *s = NULL;
    char err[256];
    ASSERT_OK(xs_open(&s, &p, err, sizeof err));
    struct xs_handle h;
    assert_int_equal(get(s, 0, 0, &h), XS_PENDING);
    xs_release(s, &h);
    /* replaced by rename: the open descriptor still reads the old, correct bytes */
    char other[320];
    snprintf(other, sizeof other, "%s.new", path);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && mv '%s' '%s'", g_path, other, other, path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(get(s, 0, 1, &h), XS_PENDING);
    xs_release(s, &h);
    xs_close(s);
    /* changed in place (truncated): loads fail with ERR_MODEL_CHANGED */
    ASSERT_OK(xs_open(&s, &p, err, sizeof err));
    assert_int_equal(truncate(path, 20000), 0);
    assert_int_equal(get(s, 2, 7, &h), ERR_MODEL_CHANGED);
    assert_int_equal(get(s, 0, 0, &h), ERR_MODEL_CHANGED);
    struct xs_stats st;
    xs_get_stats(s, &st);
    assert_true(st.file_changed);
    xs_close(s);
    /* opening a file too short for its experts is refused */
    assert_true(xs_open(&s, &p, err, sizeof err) < 0);
    assert_non_null(strstr(err, "past the end"));
    unlink(path);
}

struct worker {
    struct xstore *s;
    int id;
    int errors;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t r = 0x9e3779b97f4a7c15ull * (uint64_t)(w->id + 1);
    char err[256];
    for (int it = 0; it < 400; it++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        uint32_t l = (r & 1) ? 2 : 0, e = (uint32_t)(r >> 8) % NE;
        struct xs_handle h;
        uint64_t seen = 0;
        int rc = xs_acquire(w->s, l, e, &h, err, sizeof err);
        if (rc == XS_NOSLOT) {
            usleep(50);
            continue;
        }
        while (rc == XS_PENDING) {
            rc = xs_check(w->s, &h, err, sizeof err);
            if (rc == XS_PENDING)
                xs_wait(w->s, &seen);
        }
        if (rc != XS_READY) {
            w->errors++;
            continue;
        }
        /* the slot must hold this expert for as long as it is pinned */
        for (int k = 0; k < 3; k++) {
            uint64_t off = g_layers[l].s[k].off0 + (uint64_t)e * g_sz[k];
            const uint8_t *d = h.data[k];
            for (size_t i = 0; i < g_sz[k]; i += 97)
                if (d[i] != pat(off + i))
                    w->errors++;
        }
        if (r & 4) {
            int32_t pf[2] = {(int32_t)((e + 1) % NE), (int32_t)((e + 2) % NE)};
            xs_prefetch(w->s, 2 - l, pf, 2, 1, 0);
        }
        xs_release(w->s, &h);
    }
    return NULL;
}

static void test_concurrency(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        struct xs_params p = params(5);
        p.test_no_uring = mode == 1;
        struct xstore *s = NULL;
        char err[256];
        ASSERT_OK(xs_open(&s, &p, err, sizeof err));
        enum { NT = 4 };
        pthread_t th[NT];
        struct worker w[NT];
        for (int i = 0; i < NT; i++) {
            w[i] = (struct worker){.s = s, .id = i};
            assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
        }
        for (int i = 0; i < NT; i++) {
            pthread_join(th[i], NULL);
            assert_int_equal(w[i].errors, 0);
        }
        struct xs_stats st;
        xs_get_stats(s, &st);
        assert_int_equal(st.slots_pinned, 0);
        assert_true(st.evictions > 0);
        xs_close(s);
    }
}

static void test_plan(void **state)
{
    (void)state;
    struct plan_budget b;
    char err[256];
    ASSERT_OK(plan_parse_budget("auto", &b, err, sizeof err));
    assert_true(b.is_auto);
    ASSERT_OK(plan_parse_budget("25%", &b, err, sizeof err));
    assert_true(b.is_pct && b.pct == 25);
    ASSERT_OK(plan_parse_budget("512M", &b, err, sizeof err));
    assert_int_equal(b.bytes, 512ull << 20);
    ASSERT_OK(plan_parse_budget("1.5GiB", &b, err, sizeof err));
    assert_int_equal(b.bytes, 3ull << 29);
    ASSERT_OK(plan_parse_budget("4096", &b, err, sizeof err));
    assert_int_equal(b.bytes, 4096);
    const char *bad[] = {"", "x", "12Q", "150%", "-1G", "5%%", "1GG"};
    for (size_t i = 1; i < sizeof bad / sizeof bad[0]; i++)
        if (plan_parse_budget(bad[i], &b, err, sizeof err) != ERR_CONFIG)
            fail_msg("'%s' accepted", bad[i]);

    /* Slots: the budget split by class, padding counted. */
    struct xs_params p = params(1);
    struct plan_machine mach = {.ram_total = 8ull << 30, .ram_available = 6ull << 30};
    struct plan_in in = {.weights_bytes = 100 << 20, .expert_bytes = 2 * NE * (g_sz[0] + g_sz[1] + g_sz[2]),
                         .kv_bytes = 64 << 20, .xp = &p};
    struct plan pl;
    ASSERT_OK(plan_parse_budget("auto", &in.device, err, sizeof err));
    ASSERT_OK(plan_compute(&in, &mach, &pl, err, sizeof err));
    assert_true(pl.experts_resident); /* fits */
    ASSERT_OK(plan_parse_budget("50%", &in.device, err, sizeof err));
    ASSERT_OK(plan_compute(&in, &mach, &pl, err, sizeof err));
    assert_false(pl.experts_resident);
    assert_true(pl.device_slot_bytes <= in.expert_bytes / 2);
    /* a slot holds each slice's aligned span: 3 x 12 KiB for 17007 bytes */
    assert_int_equal(pl.device_slots, (2 * NE * 17007 / 2) / (3 * 12288));
    ASSERT_OK(plan_parse_budget("1K", &in.device, err, sizeof err));
    assert_int_equal(plan_compute(&in, &mach, &pl, err, sizeof err), ERR_CONFIG);
    assert_non_null(strstr(err, "too small"));
    /* auto under a cgroup that leaves no room: refused with advice */
    mach.cgroup_limit = 180ull << 20;
    ASSERT_OK(plan_parse_budget("auto", &in.device, err, sizeof err));
    assert_int_equal(plan_compute(&in, &mach, &pl, err, sizeof err), ERR_CONFIG);
    assert_non_null(strstr(err, "not enough memory"));
    /* auto under a cgroup with room for part of the experts */
    in.reserve_bytes = 1 << 20;
    in.weights_bytes = 1 << 20;
    in.kv_bytes = 1 << 20;
    mach.cgroup_limit = 3 * 1048576 + 100000;
    mach.cgroup_usage = 0;
    ASSERT_OK(plan_compute(&in, &mach, &pl, err, sizeof err));
    assert_false(pl.experts_resident);
    assert_true(pl.device_slot_bytes <= 100000);
    assert_true(pl.total <= mach.cgroup_limit);
}

/* plan_read_machine on a fake root: cgroup v1 and v2 files. */
static void test_plan_cgroup(void **state)
{
    (void)state;
    char root[300], cmd[2048];
    snprintf(root, sizeof root, "%s.root", g_path);
    snprintf(cmd, sizeof cmd,
             "set -e; r='%s'; rm -rf \"$r\"; mkdir -p \"$r/proc/self\" \"$r/sys/fs/cgroup/memory/a/b\" "
             "\"$r/sys/fs/cgroup/x/y\"; printf 'MemTotal: 16000000 kB\\nMemFree: 1 kB\\nMemAvailable: 8000000 kB\\n' "
             "> \"$r/proc/meminfo\"; printf '4:memory:/a/b\\n1:cpu:/\\n' > \"$r/proc/self/cgroup\"; "
             "echo 9223372036854771712 > \"$r/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes\"; "
             "echo 2147483648 > \"$r/sys/fs/cgroup/memory/a/memory.limit_in_bytes\"; "
             "echo 1073741824 > \"$r/sys/fs/cgroup/memory/a/memory.usage_in_bytes\"; "
             "printf 'cache 536870912\\nrss 1\\n' > \"$r/sys/fs/cgroup/memory/a/memory.stat\"",
             root);
    assert_int_equal(system(cmd), 0);
    struct plan_machine m;
    plan_read_machine(&m, root);
    assert_int_equal(m.ram_total, 16000000ull * 1024);
    assert_int_equal(m.ram_available, 8000000ull * 1024);
    assert_int_equal(m.cgroup_limit, 2147483648ull); /* the parent's limit, the child's is "none" */
    assert_int_equal(m.cgroup_usage, 1073741824ull - 536870912ull); /* the page cache is not counted */
    snprintf(cmd, sizeof cmd,
             "set -e; r='%s'; printf '0::/x/y\\n' > \"$r/proc/self/cgroup\"; "
             "echo max > \"$r/sys/fs/cgroup/x/y/memory.max\"; echo 3221225472 > \"$r/sys/fs/cgroup/x/memory.max\"; "
             "echo 5 > \"$r/sys/fs/cgroup/x/memory.current\"",
             root);
    assert_int_equal(system(cmd), 0);
    plan_read_machine(&m, root);
    assert_int_equal(m.cgroup_limit, 3221225472ull);
    assert_int_equal(m.cgroup_usage, 5);
    struct plan_in in = {.weights_bytes = 1 << 20, .expert_bytes = 10 << 20, .kv_bytes = 1 << 20};
    struct plan pl;
    char err[256];
    ASSERT_OK(plan_parse_budget("auto", &in.device, err, sizeof err));
    ASSERT_OK(plan_compute(&in, &m, &pl, err, sizeof err));
    assert_int_equal(pl.limit, 3221225472ull);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest all[] = {
        cmocka_unit_test(test_contents_uring),
        cmocka_unit_test(test_contents_einval_fallback),
        cmocka_unit_test(test_contents_pread),
        cmocka_unit_test(test_contents_buffered_class),
        cmocka_unit_test(test_lru_and_pins),
        cmocka_unit_test(test_prefetch_protection),
        cmocka_unit_test(test_prefetch_budget),
        cmocka_unit_test(test_injected_failures),
        cmocka_unit_test(test_file_changed),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_plan),
        cmocka_unit_test(test_plan_cgroup),
    };
    /* `test_cache_store concurrency` runs only the threaded test (TSan) */
    if (argc > 1 && strcmp(argv[1], "concurrency") == 0) {
        const struct CMUnitTest one[] = {cmocka_unit_test(test_concurrency)};
        return cmocka_run_group_tests(one, setup, teardown);
    }
    return cmocka_run_group_tests(all, setup, teardown);
}
