/* SPDX-License-Identifier: MIT */
/*
 * pool.c - the CPU backend's thread pool: persistent workers that run the
 * tasks of one op beside the calling (engine) thread.
 *
 * Where it sits: backend_cpu.c creates one pool at init and calls
 * be_cpu__pool_run() inside ops (matmul, attention, ...); nothing else does.
 *
 * How a run works, and the invariants that make it safe without locks:
 *  - One 64-bit atomic word holds (n_tasks << 32 | next task). The caller
 *    publishes a run by storing (n, 0) with release order after writing fn
 *    and ctx; any thread claims a task with one fetch_add, which returns n
 *    and the task index together, so a claim is valid exactly when
 *    index < n. A claim can only be valid for the run whose word it read,
 *    and that run cannot end (nor fn/ctx change) before the claimed task is
 *    done, so reading fn/ctx after a valid claim is safe even for a worker
 *    that woke up late. Each task is therefore run exactly once.
 *  - `done` counts finished tasks; the caller returns when it reaches n, and
 *    only then may the next run reset the word and `done`.
 *  - `seq` (a 32-bit futex word) is bumped once per run to wake workers.
 *    Workers spin on it (with _mm_pause) for about SPIN_NS, then sleep in
 *    futex_wait. Sleepers announce themselves in n_sleeping before their last
 *    check of seq, and the caller reads n_sleeping after bumping seq (both
 *    seq_cst), so either the caller sees the sleeper and wakes it or the
 *    sleeper sees the new seq: no wake-up is lost. The caller issues the
 *    futex_wake system call only when someone sleeps.
 *  - The per-run path allocates nothing and takes no lock.
 */
#include "kernels/cpu/impl.h"

#include "common/log.h"

#include <errno.h>
#include <immintrin.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* How long an idle worker spins before it sleeps: long enough to cover the
 * gap between the ops of one layer, short enough not to burn a core between
 * steps. */
#define SPIN_NS 50000
/* How long the caller spins waiting for workers before it starts yielding
 * the CPU (a worker may have been preempted). */
#define WAIT_SPIN_NS 2000000

struct worker {
    struct be_cpu_pool *pool;
    pthread_t thread;
    int id;
};

struct be_cpu_pool {
    /* Written by the caller before each run is published. */
    be_cpu_task_fn fn;
    void *ctx;
    int n_threads;
    struct worker *workers; /* n_threads - 1 */

    /* Shared, each on its own cache line. */
    _Alignas(64) _Atomic uint64_t word; /* n_tasks << 32 | next task */
    _Alignas(64) _Atomic int64_t done;  /* tasks finished by workers */
    _Alignas(64) _Atomic uint32_t seq;  /* futex word, bumped per run */
    _Atomic int n_sleeping;
    _Atomic int stop;
};

/* ---- helpers ---- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Claims and runs tasks of the current run until none is left; returns how
 * many this thread ran. */
static int64_t run_tasks(struct be_cpu_pool *p, int id)
{
    int64_t ran = 0;
    for (;;) {
        uint64_t w = atomic_fetch_add_explicit(&p->word, 1, memory_order_acq_rel);
        uint32_t n = (uint32_t)(w >> 32), i = (uint32_t)w;
        if (i >= n)
            return ran;
        p->fn(p->ctx, (int64_t)i, id);
        ran++;
        if (id != 0)
            atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
}

/* ---- workers ---- */

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    struct be_cpu_pool *p = wk->pool;
    /* The value at pool creation, not a fresh load: a worker that starts
     * late must still see the runs (and the stop) published before it. */
    uint32_t seen = 0;

    for (;;) {
        /* Wait for the next run: spin first, then sleep. */
        uint32_t s = atomic_load_explicit(&p->seq, memory_order_acquire);
        if (s == seen) {
            uint64_t t0 = now_ns();
            for (int k = 1;; k++) {
                _mm_pause();
                s = atomic_load_explicit(&p->seq, memory_order_acquire);
                if (s != seen)
                    break;
                if ((k & 63) == 0 && now_ns() - t0 > SPIN_NS) {
                    atomic_fetch_add(&p->n_sleeping, 1);
                    s = atomic_load(&p->seq);
                    if (s == seen)
                        futex_wait(&p->seq, seen);
                    atomic_fetch_sub(&p->n_sleeping, 1);
                    s = atomic_load(&p->seq);
                    if (s != seen)
                        break;
                    t0 = now_ns();
                }
            }
        }
        seen = s;
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        run_tasks(p, wk->id);
    }
}

/* ---- CPU count ---- */

/* Reads "quota period" (v2 cpu.max) and returns quota/period rounded up, or
 * 0 when there is no limit or the file cannot be read. */
static int quota_v2(const char *path)
{
    char buf[128];
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char *ok = fgets(buf, sizeof buf, f);
    fclose(f);
    long long q, per;
    if (!ok || strncmp(buf, "max", 3) == 0 || sscanf(buf, "%lld %lld", &q, &per) != 2 || q <= 0 ||
        per <= 0)
        return 0;
    return (int)((q + per - 1) / per);
}

static long long read_ll(const char *path)
{
    long long v = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    if (fscanf(f, "%lld", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

static int quota_v1(const char *dir)
{
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/cpu.cfs_quota_us", dir);
    snprintf(b, sizeof b, "%s/cpu.cfs_period_us", dir);
    long long q = read_ll(a), per = read_ll(b);
    if (q <= 0 || per <= 0)
        return 0;
    return (int)((q + per - 1) / per);
}

/* The smallest positive quota among the process's cgroup (v2 or v1, at its
 * own path and at the mount root, as containers often show only the root);
 * 0 when none is set. */
static int cgroup_cpu_quota(void)
{
    int best = 0;
    char line[512], path[700];
    FILE *f = fopen("/proc/self/cgroup", "r");
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = 0;
        const char *ctrl = c1 + 1, *cg = c2 + 1;
        int q = 0;
        if (*ctrl == 0) { /* v2 unified */
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", cg);
            q = quota_v2(path);
        } else if (strstr(ctrl, "cpu") && !strstr(ctrl, "cpuset")) {
            const char *dirs[] = {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"};
            for (int d = 0; d < 2 && q == 0; d++) {
                snprintf(path, sizeof path, "%s%s", dirs[d], cg);
                q = quota_v1(path);
                if (q == 0)
                    q = quota_v1(dirs[d]);
            }
        }
        if (q > 0 && (best == 0 || q < best))
            best = q;
    }
    if (f)
        fclose(f);
    int root = quota_v2("/sys/fs/cgroup/cpu.max");
    if (root > 0 && (best == 0 || root < best))
        best = root;
    return best;
}

int be_cpu__cpu_count(void)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int q = cgroup_cpu_quota();
    if (q > 0 && q < n)
        n = q;
    return n > 0 ? n : 1;
}

/* ---- pool ---- */

int be_cpu__pool_init(struct be_cpu_pool **out, int n_threads)
{
    *out = NULL;
    if (n_threads <= 0)
        n_threads = be_cpu__cpu_count();
    struct be_cpu_pool *p = aligned_alloc(64, (sizeof *p + 63) / 64 * 64);
    if (!p)
        return -ENOMEM;
    memset(p, 0, sizeof *p);
    p->n_threads = n_threads;
    atomic_init(&p->word, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->seq, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->stop, 0);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            free(p);
            return -ENOMEM;
        }
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker *wk = &p->workers[i - 1];
        wk->pool = p;
        wk->id = i;
        int rc = pthread_create(&wk->thread, NULL, worker_main, wk);
        if (rc != 0) {
            log_err("cpu", "pool: cannot start worker %d: %s", i, strerror(rc));
            p->n_threads = i; /* free() joins the ones started */
            be_cpu__pool_free(p);
            return -rc;
        }
    }
    *out = p;
    return 0;
}

void be_cpu__pool_free(struct be_cpu_pool *p)
{
    if (!p)
        return;
    atomic_store_explicit(&p->stop, 1, memory_order_release);
    atomic_fetch_add(&p->seq, 1);
    futex_wake_all(&p->seq);
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->workers[i - 1].thread, NULL);
    free(p->workers);
    free(p);
}

int be_cpu__pool_threads(const struct be_cpu_pool *p)
{
    return p->n_threads;
}

void be_cpu__pool_run(struct be_cpu_pool *p, be_cpu_task_fn fn, void *ctx, int64_t n_tasks)
{
    if (n_tasks <= 0)
        return;
    ASSERT(n_tasks < INT32_MAX);
    /* hot: one task or one thread needs no hand-off */
    if (n_tasks == 1 || p->n_threads == 1) {
        for (int64_t i = 0; i < n_tasks; i++)
            fn(ctx, i, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->word, (uint64_t)n_tasks << 32, memory_order_release);
    atomic_fetch_add(&p->seq, 1); /* seq_cst: pairs with n_sleeping */
    if (atomic_load(&p->n_sleeping) > 0)
        futex_wake_all(&p->seq);

    int64_t mine = run_tasks(p, 0);
    int64_t want = n_tasks - mine;
    if (atomic_load_explicit(&p->done, memory_order_acquire) == want)
        return;
    uint64_t t0 = now_ns();
    for (int k = 1; atomic_load_explicit(&p->done, memory_order_acquire) != want; k++) {
        _mm_pause();
        if ((k & 255) == 0 && now_ns() - t0 > WAIT_SPIN_NS)
            sched_yield();
    }
}
