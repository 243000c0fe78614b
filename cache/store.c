/* SPDX-License-Identifier: MIT */
/*
 * store.c - the expert store (see store.h): slot classes, the LRU, pins and
 * protection, the priority queue of loads, and the loader (io_uring with
 * O_DIRECT, buffered and pread fallbacks, retries, file change checks).
 */
#include "cache/store.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define XS_ALIGN 4096u

enum slot_state { S_EMPTY, S_LOADING, S_READY, S_FAILED };

struct slot {
    int32_t unit;          /* layer * n_expert + e, or -1 */
    uint8_t cls;
    uint8_t state;
    bool queued;           /* waiting in the queue (not yet submitted) */
    bool prot;             /* protected (predicted) */
    bool prefetched;       /* loaded by xs_prefetch and not yet used */
    bool late_counted;
    int32_t pins;
    int32_t prio;
    uint64_t seq;          /* queue order within a priority */
    int32_t prev, next;    /* LRU list (head = most recent) */
    uint8_t *mem;
    const void *data[3];
    int err;
    char errmsg[320];
    /* loader-private while in flight */
    int attempts;
    int parts_left;
    bool part_failed;
    int part_err;
    double t_start;
};

struct slot_class {
    size_t bytes[3];       /* slice bytes */
    size_t cap[3];         /* slice capacity in the slot (aligned span) */
    size_t slot_bytes;
    bool direct;           /* O_DIRECT spans (else exact, buffered) */
    uint32_t n_slots, first;
    uint64_t units;        /* experts of this size in the model */
    uint8_t *arena;
};

struct fail_rule {
    int32_t unit;
    int remaining;         /* < 0: always */
};

struct xstore {
    struct xs_params p;
    struct xs_layer *layers;
    char *path;
    int fd_direct, fd_buf; /* -1 when absent */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    bool file_changed, replaced_logged;

    uint32_t n_class;
    struct slot_class cls[8];
    uint8_t *unit_cls;     /* per unit: its class (255: not an expert) */
    int32_t *map;          /* per unit: slot or -1 */
    struct slot *slots;
    uint32_t n_slots;
    int32_t lru_head, lru_tail;

    struct fail_rule *fails;
    int n_fails;

    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    uint64_t done_gen;
    uint64_t qseq;
    int n_queued;
    bool stop;
    pthread_t *threads;
    int n_threads;
    bool use_uring;
    struct io_uring ring;
    bool odirect_ok;

    struct xs_stats st;    /* under mu */
    int n_io;              /* experts being read */
    double t_busy0;
};

/* Time with at least one read in flight (under mu): achieved bandwidth is
 * bytes_disk / io_busy_seconds. */
static double now_s(void);
static void io_begin(struct xstore *s)
{
    if (s->n_io++ == 0)
        s->t_busy0 = now_s();
}

static void io_end(struct xstore *s)
{
    if (--s->n_io == 0)
        s->st.io_busy_seconds += now_s() - s->t_busy0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct xs_params xs_params_default(void)
{
    return (struct xs_params){.io = XS_IO_URING, .queue_depth = 8, .retries = 2, .direct_min_bytes = 64 << 10};
}

static void errf(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t len, const char *fmt, ...)
{
    if (!err || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/* ---- classes and slots ---- */

static size_t span_cap(size_t bytes)
{
    /* An unaligned slice of n bytes spans at most ceil(n/A)+1 pages. */
    return ((bytes + XS_ALIGN - 1) / XS_ALIGN + 1) * XS_ALIGN;
}

/* Fills classes from the layers; returns their number (0 when the model has
 * none, -1 when more than the table holds). */
static int make_classes(const struct xs_params *p, struct slot_class *cls, int max)
{
    int n = 0;
    for (uint32_t l = 0; l < p->n_layer; l++) {
        const struct xs_layer *L = &p->layers[l];
        if (!L->moe)
            continue;
        int c;
        for (c = 0; c < n; c++)
            if (cls[c].bytes[0] == L->s[0].bytes && cls[c].bytes[1] == L->s[1].bytes &&
                cls[c].bytes[2] == L->s[2].bytes)
                break;
        if (c == n) {
            if (n == max)
                return -1;
            memset(&cls[n], 0, sizeof cls[n]);
            cls[n].slot_bytes = 0;
            size_t mn = L->s[0].bytes;
            for (int k = 1; k < 3; k++)
                mn = L->s[k].bytes < mn ? L->s[k].bytes : mn;
            cls[n].direct = mn >= p->direct_min_bytes;
            for (int k = 0; k < 3; k++) {
                cls[n].bytes[k] = L->s[k].bytes;
                cls[n].cap[k] = cls[n].direct ? span_cap(L->s[k].bytes) : (L->s[k].bytes + 63) / 64 * 64;
                cls[n].slot_bytes += cls[n].cap[k];
            }
            n++;
        }
        cls[c].units += p->n_expert;
    }
    return n;
}

/* Splits budget between classes in proportion to their experts' bytes; at
 * most one slot per expert. */
static size_t assign_slots(struct slot_class *cls, int n, size_t budget)
{
    uint64_t total = 0;
    for (int c = 0; c < n; c++)
        total += cls[c].units * cls[c].slot_bytes;
    size_t used = 0;
    for (int c = 0; c < n; c++) {
        long double share = total ? (long double)budget * (long double)(cls[c].units * cls[c].slot_bytes) /
                                        (long double)total
                                  : 0;
        uint64_t k = (uint64_t)(share / (long double)cls[c].slot_bytes);
        if (k > cls[c].units)
            k = cls[c].units;
        cls[c].n_slots = (uint32_t)k;
        used += (size_t)k * cls[c].slot_bytes;
    }
    /* What rounding left over buys more slots, smallest classes first. */
    for (bool more = true; more;) {
        more = false;
        for (int c = 0; c < n; c++)
            if (cls[c].n_slots < cls[c].units && used + cls[c].slot_bytes <= budget) {
                cls[c].n_slots++;
                used += cls[c].slot_bytes;
                more = true;
            }
    }
    return used;
}

size_t xs_plan_slots(const struct xs_params *p, size_t budget, uint32_t *n_slots)
{
    struct slot_class cls[8];
    int n = make_classes(p, cls, 8);
    if (n <= 0) {
        *n_slots = 0;
        return 0;
    }
    size_t used = assign_slots(cls, n, budget);
    uint32_t k = 0;
    for (int c = 0; c < n; c++)
        k += cls[c].n_slots;
    *n_slots = k;
    return used;
}

size_t xs_min_budget(const struct xs_params *p, uint32_t per_class)
{
    struct slot_class cls[8];
    int n = make_classes(p, cls, 8);
    /* proportional split: the budget where the smallest share reaches per_class slots */
    uint64_t total = 0;
    for (int c = 0; c < n; c++)
        total += cls[c].units * cls[c].slot_bytes;
    size_t need = 0;
    for (int c = 0; c < n; c++) {
        long double b = (long double)per_class * (long double)cls[c].slot_bytes * (long double)total /
                        (long double)(cls[c].units * cls[c].slot_bytes);
        if ((size_t)b + 1 > need)
            need = (size_t)b + 1;
    }
    return need;
}

static void lru_unlink(struct xstore *s, int32_t i)
{
    struct slot *x = &s->slots[i];
    if (x->prev >= 0)
        s->slots[x->prev].next = x->next;
    else
        s->lru_head = x->next;
    if (x->next >= 0)
        s->slots[x->next].prev = x->prev;
    else
        s->lru_tail = x->prev;
    x->prev = x->next = -1;
}

static void lru_front(struct xstore *s, int32_t i)
{
    struct slot *x = &s->slots[i];
    if (s->lru_head == i)
        return;
    if (x->prev >= 0 || x->next >= 0 || s->lru_tail == i)
        lru_unlink(s, i);
    x->next = s->lru_head;
    x->prev = -1;
    if (s->lru_head >= 0)
        s->slots[s->lru_head].prev = i;
    s->lru_head = i;
    if (s->lru_tail < 0)
        s->lru_tail = i;
}

/* The least recently used evictable slot of class c: unpinned, not loading,
 * unprotected unless allow_prot. */
static int32_t find_victim(struct xstore *s, int c, bool allow_prot)
{
    int32_t prot = -1;
    for (int32_t i = s->lru_tail; i >= 0; i = s->slots[i].prev) {
        const struct slot *x = &s->slots[i];
        if (x->cls != c || x->pins > 0 || x->state == S_LOADING)
            continue;
        if (x->state == S_EMPTY || !x->prot)
            return i;
        if (allow_prot && prot < 0)
            prot = i;
    }
    return prot;
}

static void drop_unit(struct xstore *s, int32_t i)
{
    struct slot *x = &s->slots[i];
    if (x->unit >= 0) {
        if (x->state == S_READY) {
            s->st.evictions++;
            if (x->prefetched)
                s->st.prefetch_wasted++;
        }
        s->map[x->unit] = -1;
    }
    x->unit = -1;
    x->state = S_EMPTY;
    x->prot = x->prefetched = x->late_counted = false;
    x->err = 0;
}

static void set_data(struct xstore *s, struct slot *x)
{
    const struct slot_class *c = &s->cls[x->cls];
    uint32_t layer = (uint32_t)x->unit / s->p.n_expert, e = (uint32_t)x->unit % s->p.n_expert;
    uint8_t *m = x->mem;
    for (int k = 0; k < 3; k++) {
        uint64_t off = s->layers[layer].s[k].off0 + (uint64_t)e * s->layers[layer].s[k].bytes;
        x->data[k] = m + (c->direct ? off % XS_ALIGN : 0);
        m += c->cap[k];
    }
}

static void enqueue(struct xstore *s, int32_t i, int prio)
{
    struct slot *x = &s->slots[i];
    x->queued = true;
    x->prio = prio;
    x->seq = s->qseq++;
    x->attempts = 0;
    s->n_queued++;
    pthread_cond_signal(&s->cv_work);
}

/* ---- file checks ---- */

/* Under mu. Returns 0, or ERR_MODEL_CHANGED with the message in x. */
static int check_file(struct xstore *s, char *msg, size_t len)
{
    if (s->file_changed) {
        errf(msg, len, "model file %s changed under the server; restart to load the new version", s->path);
        return ERR_MODEL_CHANGED;
    }
    struct stat sb;
    int fd = s->fd_direct >= 0 ? s->fd_direct : s->fd_buf;
    if (fstat(fd, &sb) == 0 &&
        (sb.st_size != s->size || sb.st_mtim.tv_sec != s->mtime.tv_sec || sb.st_mtim.tv_nsec != s->mtime.tv_nsec)) {
        s->file_changed = true;
        s->st.file_changed = true;
        log_err("cache", "model file %s changed under the server (size %lld -> %lld bytes); its experts can no "
                         "longer be loaded, restart to load the new version",
                s->path, (long long)s->size, (long long)sb.st_size);
        errf(msg, len, "model file %s changed under the server; restart to load the new version", s->path);
        return ERR_MODEL_CHANGED;
    }
    if (!s->replaced_logged && stat(s->path, &sb) == 0 && (sb.st_ino != s->ino || sb.st_dev != s->dev)) {
        s->replaced_logged = true;
        log_warn("cache", "model file %s was replaced on disk; still serving the version opened at start "
                          "(restart to load the new one)", s->path);
    }
    return 0;
}

/* ---- loader ---- */

static bool inject_failure(struct xstore *s, int32_t unit)
{
    for (int i = 0; i < s->n_fails; i++)
        if (s->fails[i].unit == unit && s->fails[i].remaining != 0) {
            if (s->fails[i].remaining > 0)
                s->fails[i].remaining--;
            return true;
        }
    return false;
}

/* Pops the best queued slot (lowest priority, then oldest); under mu. */
static int32_t pop_queue(struct xstore *s)
{
    int32_t best = -1;
    for (uint32_t i = 0; i < s->n_slots; i++) {
        const struct slot *x = &s->slots[i];
        if (!x->queued)
            continue;
        if (best < 0 || x->prio < s->slots[best].prio ||
            (x->prio == s->slots[best].prio && x->seq < s->slots[best].seq))
            best = (int32_t)i;
    }
    if (best >= 0) {
        s->slots[best].queued = false;
        s->n_queued--;
    }
    return best;
}

struct read_part {
    int fd;
    uint64_t off;          /* aligned start */
    size_t len;            /* aligned length */
    size_t need;           /* bytes that must arrive (to the slice's end) */
    uint8_t *dst;
};

/* The three reads of a slot. A direct class reads whole pages (or, after
 * O_DIRECT was refused, the same span buffered); other classes read each
 * slice exactly. need: the bytes that must arrive. */
static void parts_of(struct xstore *s, struct slot *x, struct read_part *rp, bool direct)
{
    const struct slot_class *c = &s->cls[x->cls];
    uint32_t layer = (uint32_t)x->unit / s->p.n_expert, e = (uint32_t)x->unit % s->p.n_expert;
    uint8_t *m = x->mem;
    direct = direct && c->direct;
    for (int k = 0; k < 3; k++) {
        uint64_t off = s->layers[layer].s[k].off0 + (uint64_t)e * s->layers[layer].s[k].bytes;
        uint64_t end = off + s->layers[layer].s[k].bytes;
        uint64_t a = c->direct ? off / XS_ALIGN * XS_ALIGN : off;
        rp[k].need = (size_t)(end - a);
        rp[k].fd = direct ? s->fd_direct : s->fd_buf;
        rp[k].off = a;
        rp[k].len = direct ? (size_t)((end + XS_ALIGN - 1) / XS_ALIGN * XS_ALIGN - a) : rp[k].need;
        rp[k].dst = m;
        m += c->cap[k];
    }
}

static int lat_bucket(double sec)
{
    double us = sec * 1e6;
    int b = 0;
    while (b < XS_LAT_BUCKETS - 1 && us >= 64.0 * (double)(1u << b))
        b++;
    return b;
}

/* A load finished (ok or not); under mu. */
static void finish_load(struct xstore *s, int32_t i, int err, const char *why)
{
    struct slot *x = &s->slots[i];
    uint32_t layer = (uint32_t)x->unit / s->p.n_expert, e = (uint32_t)x->unit % s->p.n_expert;
    double dt = now_s() - x->t_start;
    char msg[160];
    if (err == 0) {
        /* a file changed while we read it must not pass as data */
        err = check_file(s, msg, sizeof msg);
        if (err)
            why = msg;
    }
    if (err == 0) {
        x->state = S_READY;
        set_data(s, x);
        s->st.loads++;
        s->st.load_seconds += dt;
        s->st.lat_hist[lat_bucket(dt)]++;
        const struct slot_class *c = &s->cls[x->cls];
        s->st.bytes_useful += c->bytes[0] + c->bytes[1] + c->bytes[2];
    } else if (err != ERR_MODEL_CHANGED && x->attempts <= s->p.retries) {
        s->st.read_retries++;
        log_warn("cache", "reading expert %u of layer %u from %s failed (%s); retrying", e, layer, s->path, why);
        x->queued = true;
        x->seq = s->qseq++;
        s->n_queued++;
        return;
    } else {
        s->st.load_failures++;
        x->state = S_FAILED;
        x->err = err == ERR_MODEL_CHANGED ? ERR_MODEL_CHANGED : ERR_IO;
        if (err == ERR_MODEL_CHANGED)
            snprintf(x->errmsg, sizeof x->errmsg, "%s", why);
        else
            snprintf(x->errmsg, sizeof x->errmsg, "reading expert %u of layer %u from %s failed: %s", e, layer,
                     s->path, why);
        log_err("cache", "%s", x->errmsg);
        if (x->pins == 0)
            drop_unit(s, i);
    }
    s->done_gen++;
    pthread_cond_broadcast(&s->cv_done);
}

/* Synchronous read of one slot (pread workers, and the uring path's
 * fallback after EINVAL). Returns 0 or an error code with why filled. */
static int read_slot_sync(struct xstore *s, struct slot *x, char *why, size_t len)
{
    struct read_part rp[3];
    bool direct = s->odirect_ok && s->fd_direct >= 0 && s->cls[x->cls].direct;
    parts_of(s, x, rp, direct);
    for (int k = 0; k < 3; k++) {
        size_t got = 0;
        while (got < rp[k].need) {
            ssize_t r;
            if (direct && s->p.test_odirect_einval) {
                r = -1;
                errno = EINVAL;
            } else {
                r = pread(rp[k].fd, rp[k].dst + got, rp[k].len - got, (off_t)(rp[k].off + got));
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && errno == EINVAL && direct) {
                pthread_mutex_lock(&s->mu);
                if (s->odirect_ok) {
                    s->odirect_ok = false;
                    s->st.odirect = false;
                    log_warn("cache", "%s: O_DIRECT reads refused (EINVAL); using buffered reads", s->path);
                }
                pthread_mutex_unlock(&s->mu);
                direct = false;
                parts_of(s, x, rp, false);
                k = -1;
                break;
            }
            if (r < 0) {
                snprintf(why, len, "%s", strerror(errno));
                return ERR_IO;
            }
            if (r == 0) {
                snprintf(why, len, "short read (%zu of %zu bytes)", got, rp[k].need);
                return ERR_IO;
            }
            got += (size_t)r;
            pthread_mutex_lock(&s->mu);
            s->st.bytes_disk += (uint64_t)r;
            pthread_mutex_unlock(&s->mu);
        }
    }
    return 0;
}

static void *pread_worker(void *arg)
{
    struct xstore *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && s->n_queued == 0)
            pthread_cond_wait(&s->cv_work, &s->mu);
        if (s->stop)
            break;
        int32_t i = pop_queue(s);
        if (i < 0)
            continue;
        struct slot *x = &s->slots[i];
        x->attempts++;
        x->t_start = x->attempts == 1 ? now_s() : x->t_start;
        char why[128] = "";
        int err = check_file(s, why, sizeof why);
        bool inject = err == 0 && inject_failure(s, x->unit);
        io_begin(s);
        pthread_mutex_unlock(&s->mu);
        if (err == 0 && inject) {
            snprintf(why, sizeof why, "injected read failure (test hook)");
            err = ERR_IO;
        } else if (err == 0) {
            err = read_slot_sync(s, x, why, sizeof why);
        }
        pthread_mutex_lock(&s->mu);
        io_end(s);
        finish_load(s, i, err, why);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* io_uring loader: one thread keeps up to queue_depth experts (3 reads
 * each) in flight. user_data = slot << 2 | part. */
static void *uring_worker(void *arg)
{
    struct xstore *s = arg;
    const int qd = s->p.queue_depth;
    int inflight = 0; /* experts */
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && s->n_queued == 0 && inflight == 0)
            pthread_cond_wait(&s->cv_work, &s->mu);
        if (s->stop && inflight == 0)
            break;
        /* submit what fits */
        int submitted = 0;
        while (!s->stop && inflight < qd && s->n_queued > 0) {
            int32_t i = pop_queue(s);
            if (i < 0)
                break;
            struct slot *x = &s->slots[i];
            x->attempts++;
            if (x->attempts == 1)
                x->t_start = now_s();
            char why[160] = "";
            int err = check_file(s, why, sizeof why);
            if (err == 0 && inject_failure(s, x->unit)) {
                snprintf(why, sizeof why, "injected read failure (test hook)");
                err = ERR_IO;
            }
            if (err) {
                finish_load(s, i, err, why);
                continue;
            }
            bool direct = s->odirect_ok && s->fd_direct >= 0 && s->cls[x->cls].direct;
            struct read_part rp[3];
            parts_of(s, x, rp, direct);
            x->parts_left = 3;
            x->part_failed = false;
            x->part_err = 0;
            for (int k = 0; k < 3; k++) {
                struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
                ASSERT(sqe != NULL); /* the ring holds 3 * queue_depth entries */
                io_uring_prep_read(sqe, rp[k].fd, rp[k].dst, (unsigned)rp[k].len, rp[k].off);
                io_uring_sqe_set_data64(sqe, (uint64_t)i << 2 | (uint64_t)k);
            }
            inflight++;
            io_begin(s);
            submitted++;
        }
        if (submitted)
            io_uring_submit(&s->ring);
        if (inflight == 0)
            continue;
        pthread_mutex_unlock(&s->mu);
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(&s->ring, &cqe);
        pthread_mutex_lock(&s->mu);
        if (rc < 0) {
            if (rc != -EINTR)
                log_err("cache", "io_uring wait failed: %s", strerror(-rc));
            continue;
        }
        do {
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            int res = cqe->res;
            io_uring_cqe_seen(&s->ring, cqe);
            if (ud == UINT64_MAX)
                continue; /* xs_close's wake-up */
            int32_t i = (int32_t)(ud >> 2);
            int k = (int)(ud & 3);
            struct slot *x = &s->slots[i];
            struct read_part rp[3];
            bool direct = s->odirect_ok && s->fd_direct >= 0 && s->cls[x->cls].direct;
            parts_of(s, x, rp, direct);
            if (s->p.test_odirect_einval && direct)
                res = -EINVAL;
            if (res >= 0)
                s->st.bytes_disk += (uint64_t)res;
            if (res < 0 || (size_t)res < rp[k].need) {
                if (!x->part_failed) {
                    x->part_failed = true;
                    x->part_err = res < 0 ? -res : 0;
                }
            }
            if (--x->parts_left == 0) {
                inflight--;
                io_end(s);
                if (!x->part_failed) {
                    finish_load(s, i, 0, NULL);
                } else if (x->part_err == EINVAL && direct) {
                    /* O_DIRECT refused: buffered from now on, this one again */
                    s->odirect_ok = false;
                    s->st.odirect = false;
                    log_warn("cache", "%s: O_DIRECT reads refused (EINVAL); using buffered reads", s->path);
                    x->attempts--;
                    x->queued = true;
                    x->seq = s->qseq++;
                    s->n_queued++;
                } else {
                    char why[128];
                    if (x->part_err)
                        snprintf(why, sizeof why, "%s", strerror(x->part_err));
                    else
                        snprintf(why, sizeof why, "short read");
                    finish_load(s, i, ERR_IO, why);
                }
            }
        } while (io_uring_peek_cqe(&s->ring, &cqe) == 0);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- open/close ---- */

static int parse_fails(struct xstore *s, const char *spec, char *err, size_t errlen)
{
    int n = 1;
    for (const char *c = spec; *c; c++)
        n += *c == ',';
    s->fails = calloc((size_t)n, sizeof *s->fails);
    if (!s->fails)
        return -ENOMEM;
    const char *c = spec;
    while (*c) {
        unsigned l, e;
        int cnt = -1, used = 0;
        if (sscanf(c, "%u:%u%n", &l, &e, &used) != 2 || l >= s->p.n_layer || e >= s->p.n_expert) {
            errf(err, errlen, "bad test failure spec '%s' (L:E[:N],...)", spec);
            return ERR_CONFIG;
        }
        c += used;
        if (*c == ':') {
            int u2 = 0;
            if (sscanf(c + 1, "%d%n", &cnt, &u2) != 1) {
                errf(err, errlen, "bad test failure spec '%s' (L:E[:N],...)", spec);
                return ERR_CONFIG;
            }
            c += 1 + u2;
        }
        s->fails[s->n_fails++] = (struct fail_rule){.unit = (int32_t)(l * s->p.n_expert + e), .remaining = cnt};
        if (*c == ',')
            c++;
        else if (*c) {
            errf(err, errlen, "bad test failure spec '%s' (L:E[:N],...)", spec);
            return ERR_CONFIG;
        }
    }
    return 0;
}

int xs_open(struct xstore **out, const struct xs_params *pp, char *err, size_t errlen)
{
    *out = NULL;
    struct xstore *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->p = *pp;
    if (s->p.queue_depth <= 0)
        s->p.queue_depth = 8;
    if (s->p.retries < 0)
        s->p.retries = 2;
    s->fd_direct = s->fd_buf = -1;
    s->lru_head = s->lru_tail = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv_work, NULL);
    pthread_cond_init(&s->cv_done, NULL);
    int rc = -ENOMEM;
    const uint64_t n_units = (uint64_t)s->p.n_layer * s->p.n_expert;
    s->path = strdup(pp->path);
    s->layers = malloc(sizeof *s->layers * s->p.n_layer);
    s->map = malloc(sizeof *s->map * (n_units ? n_units : 1));
    s->unit_cls = malloc(n_units ? n_units : 1);
    if (!s->path || !s->layers || !s->map || !s->unit_cls)
        goto fail;
    memcpy(s->layers, pp->layers, sizeof *s->layers * s->p.n_layer);
    s->p.layers = s->layers;
    s->p.path = s->path;
    s->p.test_fail = NULL;
    if (pp->test_fail && pp->test_fail[0] && (rc = parse_fails(s, pp->test_fail, err, errlen)) < 0)
        goto fail;

    int nc = make_classes(&s->p, s->cls, 8);
    if (nc < 0) {
        errf(err, errlen, "%s: more than 8 distinct expert sizes", s->path);
        rc = ERR_MODEL_FORMAT;
        goto fail;
    }
    s->n_class = (uint32_t)nc;
    assign_slots(s->cls, nc, s->p.device_bytes);
    for (int c = 0; c < nc; c++) {
        if (s->cls[c].n_slots == 0) {
            errf(err, errlen, "expert cache of %zu bytes holds no expert of %zu bytes (need at least %zu)",
                 s->p.device_bytes, s->cls[c].slot_bytes, xs_min_budget(&s->p, 1));
            rc = ERR_CONFIG;
            goto fail;
        }
        s->cls[c].first = s->n_slots;
        s->n_slots += s->cls[c].n_slots;
        s->cls[c].arena = aligned_alloc(XS_ALIGN, (size_t)s->cls[c].n_slots * s->cls[c].slot_bytes);
        if (!s->cls[c].arena) {
            errf(err, errlen, "out of memory allocating the expert cache (%zu bytes)",
                 (size_t)s->cls[c].n_slots * s->cls[c].slot_bytes);
            rc = -ENOMEM;
            goto fail;
        }
        s->st.device_bytes += (size_t)s->cls[c].n_slots * s->cls[c].slot_bytes;
    }
    for (uint64_t u = 0; u < n_units; u++) {
        s->map[u] = -1;
        s->unit_cls[u] = 255;
    }
    for (uint32_t l = 0; l < s->p.n_layer; l++) {
        if (!s->layers[l].moe)
            continue;
        for (int c = 0; c < nc; c++)
            if (s->cls[c].bytes[0] == s->layers[l].s[0].bytes && s->cls[c].bytes[1] == s->layers[l].s[1].bytes &&
                s->cls[c].bytes[2] == s->layers[l].s[2].bytes)
                memset(s->unit_cls + (size_t)l * s->p.n_expert, c, s->p.n_expert);
    }
    s->slots = calloc(s->n_slots ? s->n_slots : 1, sizeof *s->slots);
    if (!s->slots)
        goto fail;
    for (int c = 0; c < nc; c++)
        for (uint32_t k = 0; k < s->cls[c].n_slots; k++) {
            struct slot *x = &s->slots[s->cls[c].first + k];
            x->unit = -1;
            x->cls = (uint8_t)c;
            x->state = S_EMPTY;
            x->prev = x->next = -1;
            x->mem = s->cls[c].arena + (size_t)k * s->cls[c].slot_bytes;
            lru_front(s, (int32_t)(s->cls[c].first + k));
        }
    s->st.slots = s->n_slots;

    /* The file: O_DIRECT where allowed, buffered beside it (fallback). */
    s->fd_buf = open(s->path, O_RDONLY | O_CLOEXEC);
    if (s->fd_buf < 0) {
        errf(err, errlen, "%s: %s", s->path, strerror(errno));
        rc = -errno;
        goto fail;
    }
    s->fd_direct = open(s->path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (s->fd_direct < 0)
        log_warn("cache", "%s: O_DIRECT refused (%s); using buffered reads", s->path, strerror(errno));
    s->odirect_ok = s->fd_direct >= 0;
    s->st.odirect = s->odirect_ok;
    struct stat sb;
    if (fstat(s->fd_buf, &sb) < 0) {
        errf(err, errlen, "%s: %s", s->path, strerror(errno));
        rc = -errno;
        goto fail;
    }
    s->dev = sb.st_dev;
    s->ino = sb.st_ino;
    s->size = sb.st_size;
    s->mtime = sb.st_mtim;
    /* Every slice must lie inside the file. */
    for (uint32_t l = 0; l < s->p.n_layer; l++) {
        if (!s->layers[l].moe)
            continue;
        for (int k = 0; k < 3; k++) {
            const struct xs_slice *x = &s->layers[l].s[k];
            if (x->off0 + (uint64_t)x->bytes * s->p.n_expert > (uint64_t)sb.st_size) {
                errf(err, errlen, "%s: experts of layer %u end past the end of the file (truncated?)", s->path, l);
                rc = ERR_MODEL_FORMAT;
                goto fail;
            }
        }
    }

    if (s->p.io == XS_IO_URING) {
        int r = s->p.test_no_uring ? -ENOSYS
                                   : io_uring_queue_init((unsigned)(3 * s->p.queue_depth), &s->ring, 0);
        if (r < 0)
            log_warn("cache", "io_uring unavailable (%s%s); loading experts with a pread thread pool",
                     strerror(-r), s->p.test_no_uring ? ", test hook" : "");
        else
            s->use_uring = true;
    }
    s->st.uring = s->use_uring;
    s->n_threads = s->use_uring ? 1 : (s->p.queue_depth < 4 ? s->p.queue_depth : 4);
    s->threads = calloc((size_t)s->n_threads, sizeof *s->threads);
    if (!s->threads)
        goto fail;
    for (int t = 0; t < s->n_threads; t++) {
        if (pthread_create(&s->threads[t], NULL, s->use_uring ? uring_worker : pread_worker, s) != 0) {
            s->n_threads = t;
            errf(err, errlen, "cannot start the expert loader thread");
            rc = -EAGAIN;
            goto fail;
        }
    }
    bool any_direct = false;
    for (uint32_t c = 0; c < s->n_class; c++)
        any_direct |= s->cls[c].direct;
    s->odirect_ok = s->odirect_ok && any_direct;
    s->st.odirect = s->odirect_ok;
    log_info("cache", "expert cache: %u slots, %.1f MiB (%s%s), %u classes", s->n_slots,
             (double)s->st.device_bytes / 1048576.0, s->use_uring ? "io_uring" : "pread",
             s->odirect_ok ? ", O_DIRECT" : ", buffered", s->n_class);
    *out = s;
    return 0;
fail:
    xs_close(s);
    return rc;
}

void xs_close(struct xstore *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cv_work);
    if (s->use_uring && s->n_threads > 0) {
        /* wake the thread if it sits in io_uring_wait_cqe (the ring is
         * only touched under mu) */
        struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
        if (sqe) {
            io_uring_prep_nop(sqe);
            io_uring_sqe_set_data64(sqe, UINT64_MAX);
            io_uring_submit(&s->ring);
        }
    }
    pthread_mutex_unlock(&s->mu);
    for (int t = 0; t < s->n_threads; t++)
        pthread_join(s->threads[t], NULL);
    if (s->use_uring)
        io_uring_queue_exit(&s->ring);
    free(s->threads);
    for (uint32_t c = 0; c < s->n_class; c++)
        free(s->cls[c].arena);
    if (s->fd_direct >= 0)
        close(s->fd_direct);
    if (s->fd_buf >= 0)
        close(s->fd_buf);
    free(s->slots);
    free(s->map);
    free(s->unit_cls);
    free(s->layers);
    free(s->fails);
    free(s->path);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv_work);
    pthread_cond_destroy(&s->cv_done);
    free(s);
}

/* ---- the caller's side ---- */

static void fill_handle(struct slot *x, struct xs_handle *h)
{
    for (int k = 0; k < 3; k++)
        h->data[k] = x->data[k];
}

int xs_acquire(struct xstore *s, uint32_t layer, uint32_t e, struct xs_handle *h, char *err, size_t errlen)
{
    h->slot = -1;
    if (layer >= s->p.n_layer || e >= s->p.n_expert || !s->layers[layer].moe)
        return ERR_INVALID;
    const int32_t u = (int32_t)(layer * s->p.n_expert + e);
    pthread_mutex_lock(&s->mu);
    int32_t i = s->map[u];
    int rc;
    if (i >= 0) {
        struct slot *x = &s->slots[i];
        if (x->state == S_FAILED) {
            errf(err, errlen, "%s", x->errmsg);
            rc = x->err;
            goto out;
        }
        x->pins++;
        h->slot = i;
        lru_front(s, i);
        if (x->state == S_READY) {
            s->st.hits++;
            if (x->prefetched) {
                s->st.prefetch_used++;
                x->prefetched = false;
            }
            fill_handle(x, h);
            rc = XS_READY;
        } else {
            s->st.hits_loading++;
            if (x->prefetched && !x->late_counted) {
                s->st.prefetch_late++;
                s->st.prefetch_used++;
                x->late_counted = true;
                x->prefetched = false;
            }
            if (x->queued)
                x->prio = 0; /* needed now */
            rc = XS_PENDING;
        }
        goto out;
    }
    if (s->file_changed) {
        char msg[160];
        rc = check_file(s, msg, sizeof msg);
        errf(err, errlen, "%s", msg);
        goto out;
    }
    i = find_victim(s, s->unit_cls[u], true);
    if (i < 0) {
        rc = XS_NOSLOT;
        goto out;
    }
    struct slot *x = &s->slots[i];
    drop_unit(s, i);
    x->unit = u;
    x->state = S_LOADING;
    x->pins = 1;
    s->map[u] = i;
    lru_front(s, i);
    s->st.misses++;
    enqueue(s, i, 0);
    h->slot = i;
    rc = XS_PENDING;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int xs_check(struct xstore *s, struct xs_handle *h, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    struct slot *x = &s->slots[h->slot];
    int rc;
    if (x->state == S_READY) {
        fill_handle(x, h);
        rc = XS_READY;
    } else if (x->state == S_FAILED) {
        errf(err, errlen, "%s", x->errmsg);
        rc = x->err;
        if (--x->pins == 0)
            drop_unit(s, h->slot);
        h->slot = -1;
    } else {
        rc = XS_PENDING;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void xs_wait(struct xstore *s, uint64_t *seen)
{
    double t0 = now_s();
    pthread_mutex_lock(&s->mu);
    while (s->done_gen <= *seen)
        pthread_cond_wait(&s->cv_done, &s->mu);
    *seen = s->done_gen;
    s->st.stall_seconds += now_s() - t0;
    pthread_mutex_unlock(&s->mu);
}

void xs_release(struct xstore *s, struct xs_handle *h)
{
    if (h->slot < 0)
        return;
    pthread_mutex_lock(&s->mu);
    struct slot *x = &s->slots[h->slot];
    ASSERT(x->pins > 0);
    if (--x->pins == 0 && x->state == S_FAILED)
        drop_unit(s, h->slot);
    pthread_mutex_unlock(&s->mu);
    h->slot = -1;
}

int xs_prefetch(struct xstore *s, uint32_t layer, const int32_t *experts, int n, int priority, size_t max_bytes)
{
    if (layer >= s->p.n_layer || !s->layers[layer].moe)
        return 0;
    if (priority < 1)
        priority = 1;
    int started = 0;
    size_t bytes = 0;
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < n; k++) {
        if (experts[k] < 0 || (uint32_t)experts[k] >= s->p.n_expert)
            continue;
        const int32_t u = (int32_t)(layer * s->p.n_expert + (uint32_t)experts[k]);
        int32_t i = s->map[u];
        if (i >= 0) {
            s->slots[i].prot = true;
            continue;
        }
        if (s->file_changed)
            break;
        const struct slot_class *c = &s->cls[s->unit_cls[u]];
        if (max_bytes && bytes + c->slot_bytes > max_bytes)
            break;
        i = find_victim(s, s->unit_cls[u], false);
        if (i < 0)
            continue;
        struct slot *x = &s->slots[i];
        drop_unit(s, i);
        x->unit = u;
        x->state = S_LOADING;
        x->pins = 0;
        x->prot = true;
        x->prefetched = true;
        s->map[u] = i;
        lru_front(s, i);
        enqueue(s, i, priority);
        s->st.prefetch_issued++;
        bytes += c->slot_bytes;
        started++;
    }
    pthread_mutex_unlock(&s->mu);
    return started;
}

void xs_protect(struct xstore *s, uint32_t layer, uint32_t e)
{
    if (layer >= s->p.n_layer || e >= s->p.n_expert)
        return;
    pthread_mutex_lock(&s->mu);
    int32_t i = s->map[layer * s->p.n_expert + e];
    if (i >= 0)
        s->slots[i].prot = true;
    pthread_mutex_unlock(&s->mu);
}

void xs_unprotect_layer(struct xstore *s, uint32_t layer)
{
    pthread_mutex_lock(&s->mu);
    for (uint32_t i = 0; i < s->n_slots; i++) {
        struct slot *x = &s->slots[i];
        if (x->unit >= 0 && (uint32_t)x->unit / s->p.n_expert == layer)
            x->prot = false;
    }
    pthread_mutex_unlock(&s->mu);
}

int xs_in_flight(struct xstore *s)
{
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (uint32_t i = 0; i < s->n_slots; i++)
        n += s->slots[i].state == S_LOADING;
    pthread_mutex_unlock(&s->mu);
    return n;
}

bool xs_resident(struct xstore *s, uint32_t layer, uint32_t e)
{
    if (layer >= s->p.n_layer || e >= s->p.n_expert)
        return false;
    pthread_mutex_lock(&s->mu);
    int32_t i = s->map[layer * s->p.n_expert + e];
    bool r = i >= 0 && s->slots[i].state == S_READY;
    pthread_mutex_unlock(&s->mu);
    return r;
}

void xs_get_stats(struct xstore *s, struct xs_stats *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    st->slots_ready = st->slots_loading = st->slots_pinned = 0;
    for (uint32_t i = 0; i < s->n_slots; i++) {
        const struct slot *x = &s->slots[i];
        st->slots_ready += x->state == S_READY;
        st->slots_loading += x->state == S_LOADING;
        st->slots_pinned += x->pins > 0;
    }
    pthread_mutex_unlock(&s->mu);
}
