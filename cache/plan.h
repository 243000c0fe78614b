/* SPDX-License-Identifier: MIT */
/*
 * plan.h - the memory plan: how much of the machine each part of a loaded
 * model gets, computed once at start, logged, and printed by `moed inspect`.
 *
 *   limit      the smaller of the memory cgroup's limit (v1 or v2) and the
 *              machine's RAM; "available" is the smaller of the cgroup's
 *              headroom and MemAvailable
 *   resident   non-expert weights (always in memory)
 *   kv         the KV pool
 *   reserve    scratch, buffers and the process itself
 *   experts    all resident when they fit (or the budget says so), else a
 *              DEVICE tier of slots filled from the file (cache/store.h)
 *
 * Budgets (`--expert-cache`, `--host-cache`) are SIZE with K/M/G/T suffix,
 * PCT of the experts' bytes ("25%"), or "auto": what is available after
 * the rest of the plan, all experts when they fit.
 */
#ifndef MOED_CACHE_PLAN_H
#define MOED_CACHE_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/store.h"

/* A budget as written by the user. */
struct plan_budget {
    bool is_auto;
    bool is_pct;
    double pct;      /* 0..100 when is_pct */
    uint64_t bytes;  /* when neither */
};
/* Parses "auto", "25%", "512M", "1.5G", "1073741824". Returns 0 or
 * ERR_CONFIG with the reason in err. */
int plan_parse_budget(const char *s, struct plan_budget *b, char *err, size_t errlen);

/* What the machine allows this process: limit and available bytes and
 * where they came from. Reads /proc/self/cgroup, the cgroup v1/v2 files and
 * /proc/meminfo; root may be a test directory standing in for "/" (NULL =
 * the real one). */
struct plan_machine {
    uint64_t ram_total, ram_available;
    uint64_t cgroup_limit, cgroup_usage; /* 0 when none; usage without the page cache */
    char cgroup_src[160];                /* the file the limit came from, or "" */
};
void plan_read_machine(struct plan_machine *m, const char *root);

struct plan_in {
    uint64_t weights_bytes;   /* non-expert weights */
    uint64_t expert_bytes;    /* all experts */
    uint64_t kv_bytes;        /* the KV pool */
    uint64_t reserve_bytes;   /* scratch and the process (0 = a default) */
    struct plan_budget device, host;
    bool gpu;                 /* DEVICE is GPU memory (else the RAM arena) */
    const struct xs_params *xp; /* the experts' slices (slot sizes) */
    bool force_store;         /* use the store even when every expert fits */
    bool weights_loaded;      /* the weights are already in memory (counted in the usage read) */
};

struct plan {
    struct plan_machine mach;
    uint64_t limit, available;      /* what the plan may use */
    uint64_t weights, kv, reserve;
    uint64_t expert_bytes;
    bool experts_resident;          /* all experts loaded at start, no store */
    uint64_t device_budget;         /* slot memory when !experts_resident */
    uint32_t device_slots;
    uint64_t device_slot_bytes;     /* what the slots take */
    uint64_t host_budget;           /* HOST tier (GPU backend only) */
    uint64_t total;                 /* everything the process should use */
    bool over;                      /* total exceeds available (logged as a warning) */
    char why[200];                  /* how the expert budget was chosen */
};

/* Computes the plan. Returns 0, or ERR_CONFIG when the budget cannot hold
 * one expert per slot class (message in err). */
int plan_compute(const struct plan_in *in, const struct plan_machine *mach, struct plan *out, char *err,
                 size_t errlen);
/* Writes the plan as indented lines ("  resident: ...") into buf. */
void plan_format(const struct plan *p, char *buf, size_t len);
/* "1.50 GiB" style. */
void plan_bytes_str(uint64_t b, char *buf, size_t len);

#endif
