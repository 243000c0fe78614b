/* SPDX-License-Identifier: MIT */
/*
 * store.h - the expert store: experts that do not all fit in fast memory
 * live in the GGUF file and are loaded on demand into a fixed set of slots
 * (the DEVICE tier: on the CPU backend an arena in RAM the kernels read
 * directly; on a GPU, device memory fed from pinned host buffers).
 *
 * An expert is a unit of three slices (gate, up, down) of the stacked expert
 * tensors of one layer; each slice is contiguous in the file, so a load is
 * three reads. Slots come in classes, one per distinct (gate, up, down) slice
 * size (a Q4_K_M file mixes Q4_K and Q6_K down projections); the budget is
 * split between classes in proportion to their experts' bytes.
 *
 * Life of a slot: EMPTY -> LOADING (queued, then in flight) -> READY, or
 * FAILED when the read failed after its retries. A slot is pinned (pins > 0)
 * while a batch uses it or waits for it: a pinned slot is never evicted, so
 * a batch never reads a slot being overwritten. Eviction takes the least
 * recently used unpinned READY or EMPTY slot, preferring those not protected
 * (experts the predictor expects soon); protection is advisory and never
 * blocks a step. When every slot of a class is pinned, xs_acquire says
 * XS_NOSLOT: the caller computes the experts it holds, releases them and
 * asks again (a layer that needs more experts than slots runs in waves).
 *
 * Loads are asynchronous and never run on the caller's thread: a loader
 * thread reads with io_uring, with O_DIRECT into 4096-aligned slot memory so
 * that the page cache does not hold (or hide) the experts; reads fall back to
 * buffered I/O when O_DIRECT is refused (EINVAL) and to a pread thread pool
 * when io_uring is unavailable, each logged once. Requests are served by
 * priority: what a batch waits for now (0) before prefetches (1 + distance).
 *
 * A read error or short read is retried; after the retries the slot is
 * FAILED and every xs_acquire/xs_check of that expert reports the error
 * (with a message) until the batch releases it; the next acquire tries
 * again. The file's size and modification time are checked around every
 * load: a file changed in place fails the loads with ERR_MODEL_CHANGED
 * instead of returning garbage; a file replaced by rename keeps being read
 * through the open descriptor (the old, consistent version) and is logged.
 *
 * Threading: every call may come from any thread (one mutex guards the
 * slots; the loader runs on its own threads); the engine calls from its
 * thread, the tests from many. A struct xs_handle belongs to one thread.
 */
#ifndef MOED_CACHE_STORE_H
#define MOED_CACHE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/quant.h"

enum xs_io {
    XS_IO_URING, /* io_uring, O_DIRECT where the file system allows it */
    XS_IO_PREAD, /* a pool of threads doing pread */
};

/* One stacked expert tensor of a layer: expert e's slice is bytes long at
 * absolute file offset off0 + e * bytes. */
struct xs_slice {
    enum be_type type;
    size_t bytes;
    uint64_t off0;
};

struct xs_layer {
    bool moe;
    struct xs_slice s[3]; /* gate, up, down */
};

struct xs_params {
    const char *path;          /* the GGUF file */
    uint32_t n_layer, n_expert;
    const struct xs_layer *layers; /* n_layer, copied */
    size_t device_bytes;       /* DEVICE tier budget (slot memory, alignment padding included) */
    enum xs_io io;
    int queue_depth;           /* experts in flight; 0 = 8 */
    int retries;               /* extra attempts after a failed read; < 0 = 2 */
    /* Experts whose smallest slice has at least this many bytes are read
     * with O_DIRECT into page-aligned spans (up to 8 KiB of padding per
     * slice); smaller ones with buffered reads into slots of their exact
     * size, where the padding would cost more than the page cache saves. */
    size_t direct_min_bytes;
    /* Test hooks (the tests' only way to reach the fallbacks and failures):
     * pretend io_uring_queue_init failed; pretend O_DIRECT reads give
     * EINVAL; fail reads of experts given as "L:E[:N],..." (N attempts, all
     * when omitted). */
    bool test_no_uring, test_odirect_einval;
    const char *test_fail;
};
struct xs_params xs_params_default(void);

/* Slots each class gets for a budget (what xs_open would allocate), for the
 * memory plan. Returns the bytes those slots take; *n_slots their number. */
size_t xs_plan_slots(const struct xs_params *p, size_t budget, uint32_t *n_slots);
/* Bytes of the smallest budget that still gives every class `per_class`
 * slots. */
size_t xs_min_budget(const struct xs_params *p, uint32_t per_class);

struct xstore;

/* Opens the file, allocates the slots and starts the loader. On failure
 * returns < 0 with one line (naming the file and the problem) in err. */
int xs_open(struct xstore **out, const struct xs_params *p, char *err, size_t errlen);
void xs_close(struct xstore *s);

enum xs_state { XS_READY = 0, XS_PENDING = 1, XS_NOSLOT = 2 };

/* A pinned expert: its slices' data once ready. */
struct xs_handle {
    int32_t slot;
    const void *data[3]; /* gate, up, down; valid while pinned and ready */
};

/*
 * Pins expert e of layer (starting its load on a miss). Returns XS_READY
 * (data valid), XS_PENDING (loading: poll with xs_check), XS_NOSLOT (every
 * slot of its class is pinned: release some and ask again; nothing pinned),
 * or < 0 when its load failed (message in err; nothing pinned).
 */
int xs_acquire(struct xstore *s, uint32_t layer, uint32_t e, struct xs_handle *h, char *err,
               size_t errlen);
/* The state of a pending handle: XS_READY (data filled), XS_PENDING, or < 0
 * when the load failed (the handle is released then; message in err). */
int xs_check(struct xstore *s, struct xs_handle *h, char *err, size_t errlen);
/* Blocks until some load completes after *seen (a completion counter the
 * caller keeps; start at 0); the time spent is counted as stall. */
void xs_wait(struct xstore *s, uint64_t *seen);
void xs_release(struct xstore *s, struct xs_handle *h);

/* Starts loading experts not resident, at a priority >= 1 (lower first),
 * without evicting pinned or protected slots and without exceeding
 * max_bytes of new loads (0 = no limit); the loaded experts are protected.
 * Returns the number of loads started. */
int xs_prefetch(struct xstore *s, uint32_t layer, const int32_t *experts, int n, int priority,
                size_t max_bytes);
/* Protects expert e of layer (if present or loading) until
 * xs_unprotect_layer(layer). */
void xs_protect(struct xstore *s, uint32_t layer, uint32_t e);
void xs_unprotect_layer(struct xstore *s, uint32_t layer);
/* Loads queued or in flight (xs_wait returns once one completes). */
int xs_in_flight(struct xstore *s);
/* True when expert e of layer is resident (READY). */
bool xs_resident(struct xstore *s, uint32_t layer, uint32_t e);

#define XS_LAT_BUCKETS 16 /* load latency: bucket i counts loads < 2^i * 64 us */

struct xs_stats {
    uint64_t hits;             /* acquire found the expert ready */
    uint64_t hits_loading;     /* acquire found it already loading (a late prefetch) */
    uint64_t misses;           /* acquire started a load */
    uint64_t loads, load_failures, read_retries;
    uint64_t bytes_disk;       /* bytes read from the file (DISK -> DEVICE) */
    uint64_t bytes_useful;     /* of which expert bytes (without alignment padding) */
    double load_seconds;       /* summed latency of completed loads */
    double stall_seconds;      /* time callers waited in xs_wait */
    double io_busy_seconds;    /* time with at least one read in flight */
    uint64_t lat_hist[XS_LAT_BUCKETS];
    uint64_t prefetch_issued, prefetch_used, prefetch_late, prefetch_wasted;
    uint64_t evictions;
    uint32_t slots, slots_ready, slots_loading, slots_pinned;
    size_t device_bytes;       /* slot memory */
    bool uring, odirect;       /* what the loader ended up using */
    bool file_changed;
};
void xs_get_stats(struct xstore *s, struct xs_stats *st);

#endif
