/* SPDX-License-Identifier: MIT */
/*
 * bench_io.c - the disk's raw sequential read bandwidth through io_uring
 * with O_DIRECT, the baseline the expert cache's achieved read bandwidth is
 * compared with (same file, same queue depth), and a way to drop a file's
 * pages from the page cache before a cold run.
 *
 * usage: bench_io FILE [--qd N] [--bs SIZE] [--max SIZE] [--drop] [--drop-only]
 *   --qd N      reads in flight (default 24: the expert loader's 8 experts x 3 slices)
 *   --bs SIZE   bytes per read, a multiple of 4096 (default 512K)
 *   --max SIZE  stop after this many bytes (default the whole file)
 *   --drop      drop the file's pages from the page cache first (and after)
 *   --drop-only only that
 * Prints "read_gb_per_s X bytes N seconds S qd Q bs B" on one line.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static long long parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0)
        return -1;
    switch (*end) {
    case 0: return (long long)v;
    case 'K': case 'k': return (long long)(v * 1024);
    case 'M': case 'm': return (long long)(v * 1048576);
    case 'G': case 'g': return (long long)(v * 1073741824.0);
    default: return -1;
    }
}

static int drop(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "bench_io: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fdatasync(fd);
    int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    if (rc) {
        fprintf(stderr, "bench_io: %s: posix_fadvise: %s\n", path, strerror(rc));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int qd = 24;
    long long bs = 512 * 1024, max = -1;
    int do_drop = 0, drop_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--qd") && i + 1 < argc) qd = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bs") && i + 1 < argc) bs = parse_size(argv[++i]);
        else if (!strcmp(argv[i], "--max") && i + 1 < argc) max = parse_size(argv[++i]);
        else if (!strcmp(argv[i], "--drop")) do_drop = 1;
        else if (!strcmp(argv[i], "--drop-only")) do_drop = drop_only = 1;
        else if (argv[i][0] != '-' && !path) path = argv[i];
        else {
            fprintf(stderr, "usage: bench_io FILE [--qd N] [--bs SIZE] [--max SIZE] [--drop] [--drop-only]\n");
            return 2;
        }
    }
    if (!path || qd < 1 || qd > 4096 || bs < 4096 || bs % 4096) {
        fprintf(stderr, "usage: bench_io FILE [--qd N] [--bs SIZE multiple of 4096] [--max SIZE] [--drop]\n");
        return 2;
    }
    if (do_drop && drop(path) < 0)
        return 1;
    if (drop_only)
        return 0;
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0) {
        fprintf(stderr, "bench_io: %s: O_DIRECT open: %s\n", path, strerror(errno));
        return 1;
    }
    struct stat st;
    fstat(fd, &st);
    long long size = (long long)st.st_size / 4096 * 4096;
    if (max > 0 && max < size)
        size = max / 4096 * 4096;
    struct io_uring ring;
    int rc = io_uring_queue_init((unsigned)qd, &ring, 0);
    if (rc < 0) {
        fprintf(stderr, "bench_io: io_uring: %s\n", strerror(-rc));
        return 1;
    }
    void *buf;
    if (posix_memalign(&buf, 4096, (size_t)bs * (size_t)qd)) {
        fprintf(stderr, "bench_io: out of memory\n");
        return 1;
    }
    long long next = 0, done = 0;
    int inflight = 0;
    double t0 = now_s();
    while (done < size) {
        while (inflight < qd && next < size) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            if (!sqe)
                break;
            long long len = size - next < bs ? size - next : bs;
            int slot = (int)((next / bs) % qd);
            io_uring_prep_read(sqe, fd, (char *)buf + (size_t)slot * (size_t)bs, (unsigned)len, (unsigned long long)next);
            next += len;
            inflight++;
        }
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe;
        if ((rc = io_uring_wait_cqe(&ring, &cqe)) < 0) {
            fprintf(stderr, "bench_io: wait: %s\n", strerror(-rc));
            return 1;
        }
        do {
            if (cqe->res <= 0) {
                fprintf(stderr, "bench_io: read failed: %s\n", cqe->res < 0 ? strerror(-cqe->res) : "end of file");
                return 1;
            }
            done += cqe->res;
            inflight--;
            io_uring_cqe_seen(&ring, cqe);
        } while (io_uring_peek_cqe(&ring, &cqe) == 0);
    }
    double dt = now_s() - t0;
    printf("read_gb_per_s %.3f bytes %lld seconds %.3f qd %d bs %lld\n", (double)done / dt / 1e9, done, dt, qd, bs);
    io_uring_queue_exit(&ring);
    close(fd);
    free(buf);
    if (do_drop)
        drop(path);
    return 0;
}
