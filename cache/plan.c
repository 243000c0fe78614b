/* SPDX-License-Identifier: MIT */
/*
 * plan.c - the memory plan (see plan.h).
 */
#include "cache/plan.h"

#include "common/err.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int plan_parse_budget(const char *s, struct plan_budget *b, char *err, size_t errlen)
{
    memset(b, 0, sizeof *b);
    if (!s || !*s || strcmp(s, "auto") == 0) {
        b->is_auto = true;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0 || v != v) {
        snprintf(err, errlen, "bad size '%s' (SIZE like 512M or 2G, PCT like 25%%, or auto)", s);
        return ERR_CONFIG;
    }
    if (*end == '%' && end[1] == 0) {
        if (v > 100) {
            snprintf(err, errlen, "bad size '%s': a percentage of the experts' bytes is at most 100%%", s);
            return ERR_CONFIG;
        }
        b->is_pct = true;
        b->pct = v;
        return 0;
    }
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 0: break;
    case 'K': mul = 1024.0; break;
    case 'M': mul = 1024.0 * 1024; break;
    case 'G': mul = 1024.0 * 1024 * 1024; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
    default:
        snprintf(err, errlen, "bad size '%s' (SIZE like 512M or 2G, PCT like 25%%, or auto)", s);
        return ERR_CONFIG;
    }
    if (*end && end[1] && !((end[1] == 'i' || end[1] == 'B') && (end[2] == 0 || (end[2] == 'B' && !end[3])))) {
        snprintf(err, errlen, "bad size '%s' (SIZE like 512M or 2G, PCT like 25%%, or auto)", s);
        return ERR_CONFIG;
    }
    if (v * mul > 1.8e19) {
        snprintf(err, errlen, "bad size '%s': too large", s);
        return ERR_CONFIG;
    }
    b->bytes = (uint64_t)(v * mul);
    return 0;
}

static bool read_u64_file(const char *path, uint64_t *v)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char buf[64];
    bool ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok)
        return false;
    if (strncmp(buf, "max", 3) == 0) {
        *v = 0;
        return true;
    }
    char *end;
    unsigned long long x = strtoull(buf, &end, 10);
    if (end == buf)
        return false;
    /* v1 says "no limit" with a huge page-rounded number */
    *v = x >= (1ull << 60) ? 0 : (uint64_t)x;
    return true;
}

void plan_read_machine(struct plan_machine *m, const char *root)
{
    memset(m, 0, sizeof *m);
    if (!root)
        root = "";
    char path[512];
    snprintf(path, sizeof path, "%s/proc/meminfo", root);
    FILE *f = fopen(path, "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
                m->ram_total = kb * 1024ull;
            else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
                m->ram_available = kb * 1024ull;
        }
        fclose(f);
    }
    /* /proc/self/cgroup: "0::/path" (v2) or "N:memory:/path" (v1). */
    snprintf(path, sizeof path, "%s/proc/self/cgroup", root);
    f = fopen(path, "r");
    if (!f)
        return;
    char line[512], v1[400] = "", v2[400] = "";
    bool has_v1 = false, has_v2 = false;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *a = strchr(line, ':');
        char *b = a ? strchr(a + 1, ':') : NULL;
        if (!b)
            continue;
        *a = *b = 0;
        const char *ctrl = a + 1, *cg = b + 1;
        if (strcmp(line, "0") == 0 && *ctrl == 0) {
            snprintf(v2, sizeof v2, "%s", cg);
            has_v2 = true;
        } else {
            for (char *tok = strtok((char *)ctrl, ","); tok; tok = strtok(NULL, ","))
                if (strcmp(tok, "memory") == 0) {
                    snprintf(v1, sizeof v1, "%s", cg);
                    has_v1 = true;
                }
        }
    }
    fclose(f);
    uint64_t lim = 0, use = 0;
    /* The tightest limit on the way from the process's group to the root. */
    for (int pass = 0; pass < 2; pass++) {
        if ((pass == 0 && !has_v1) || (pass == 1 && !has_v2))
            continue;
        char cg[400];
        snprintf(cg, sizeof cg, "%s", pass == 0 ? v1 : v2);
        for (;;) {
            char lp[600], up[600];
            if (pass == 0) {
                snprintf(lp, sizeof lp, "%s/sys/fs/cgroup/memory%s/memory.limit_in_bytes", root, cg);
                snprintf(up, sizeof up, "%s/sys/fs/cgroup/memory%s/memory.usage_in_bytes", root, cg);
            } else {
                snprintf(lp, sizeof lp, "%s/sys/fs/cgroup%s/memory.max", root, cg);
                snprintf(up, sizeof up, "%s/sys/fs/cgroup%s/memory.current", root, cg);
            }
            uint64_t l;
            if (read_u64_file(lp, &l) && l && (!lim || l < lim)) {
                lim = l;
                use = 0;
                read_u64_file(up, &use);
                /* the page cache is reclaimable: not counted as used */
                char sp[600], sl[256];
                snprintf(sp, sizeof sp, "%.*s/memory.stat", (int)(strrchr(lp, '/') - lp), lp);
                FILE *sf = fopen(sp, "r");
                if (sf) {
                    unsigned long long cache = 0, v;
                    while (fgets(sl, sizeof sl, sf))
                        if ((pass == 0 && sscanf(sl, "cache %llu", &v) == 1) ||
                            (pass == 1 && sscanf(sl, "file %llu", &v) == 1))
                            cache = v;
                    fclose(sf);
                    use = cache < use ? use - cache : 0;
                }
                snprintf(m->cgroup_src, sizeof m->cgroup_src, "%s", lp + strlen(root));
            }
            char *slash = strrchr(cg, '/');
            if (!slash || cg[0] == 0 || strcmp(cg, "/") == 0)
                break;
            if (slash == cg)
                cg[1] = 0;
            else
                *slash = 0;
        }
    }
    m->cgroup_limit = lim;
    m->cgroup_usage = use;
}

void plan_bytes_str(uint64_t b, char *buf, size_t len)
{
    if (b >= (1ull << 30))
        snprintf(buf, len, "%.2f GiB", (double)b / (double)(1ull << 30));
    else if (b >= (1ull << 20))
        snprintf(buf, len, "%.1f MiB", (double)b / (double)(1ull << 20));
    else
        snprintf(buf, len, "%.1f KiB", (double)b / 1024.0);
}

int plan_compute(const struct plan_in *in, const struct plan_machine *mach, struct plan *p, char *err,
                 size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->mach = *mach;
    p->weights = in->weights_bytes;
    p->kv = in->kv_bytes;
    p->expert_bytes = in->expert_bytes;
    /* scratch, tokenizer, thread stacks, buffers: measured ~100-200 MiB on
     * the medium model; a floor plus 5% of the weights */
    p->reserve = in->reserve_bytes ? in->reserve_bytes : (192ull << 20) + in->weights_bytes / 20;
    p->limit = mach->ram_total;
    p->available = mach->ram_available ? mach->ram_available : mach->ram_total;
    /* weights already loaded are in the usage figures; the plan counts them itself */
    const uint64_t own = in->weights_loaded ? in->weights_bytes : 0;
    p->available += own;
    if (mach->cgroup_limit) {
        if (!p->limit || mach->cgroup_limit < p->limit)
            p->limit = mach->cgroup_limit;
        uint64_t head = mach->cgroup_limit > mach->cgroup_usage ? mach->cgroup_limit - mach->cgroup_usage : 0;
        head += own;
        if (head > mach->cgroup_limit)
            head = mach->cgroup_limit;
        if (head < p->available)
            p->available = head;
    }
    const uint64_t fixed = p->weights + p->kv + p->reserve;
    const uint64_t room = p->available > fixed ? p->available - fixed : 0;
    char a[32], b[32];

    if (in->expert_bytes == 0 || !in->xp) {
        p->experts_resident = true;
        snprintf(p->why, sizeof p->why, "no experts");
    } else if (in->device.is_auto) {
        if (in->expert_bytes <= room && !in->force_store) {
            p->experts_resident = true;
            plan_bytes_str(room, a, sizeof a);
            snprintf(p->why, sizeof p->why, "auto: all experts fit (%s available after the rest)", a);
        } else {
            p->device_budget = room;
            plan_bytes_str(room, a, sizeof a);
            snprintf(p->why, sizeof p->why, "auto: %s available after weights, KV and reserve", a);
        }
    } else {
        uint64_t want = in->device.is_pct ? (uint64_t)((long double)in->expert_bytes * in->device.pct / 100.0L)
                                          : in->device.bytes;
        uint32_t n_all = 0;
        uint64_t all_slots = xs_plan_slots(in->xp, (size_t)-1 / 2, &n_all);
        if (want >= in->expert_bytes && !in->force_store) {
            p->experts_resident = true;
            snprintf(p->why, sizeof p->why, "the budget holds every expert");
        } else {
            p->device_budget = want < all_slots ? want : all_slots;
            if (in->device.is_pct)
                snprintf(p->why, sizeof p->why, "%.4g%% of the experts' bytes", in->device.pct);
            else
                snprintf(p->why, sizeof p->why, "as configured");
        }
    }
    if (!p->experts_resident) {
        uint64_t min = xs_min_budget(in->xp, 1);
        if (p->device_budget < min) {
            plan_bytes_str(p->device_budget, a, sizeof a);
            plan_bytes_str(min, b, sizeof b);
            if (in->device.is_auto)
                snprintf(err, errlen,
                         "not enough memory for the expert cache: %s available after weights, KV pool and "
                         "reserve, at least %s needed (lower --kv-tokens or --ctx-size, or set --expert-cache)",
                         a, b);
            else
                snprintf(err, errlen, "expert cache of %s is too small: at least %s (one expert of each size)",
                         a, b);
            return ERR_CONFIG;
        }
        p->device_slot_bytes = xs_plan_slots(in->xp, (size_t)p->device_budget, &p->device_slots);
    }
    /* HOST tier: only between a GPU's DEVICE tier and the file. */
    if (in->gpu && !in->host.is_auto)
        p->host_budget = in->host.is_pct ? (uint64_t)((long double)in->expert_bytes * in->host.pct / 100.0L)
                                         : in->host.bytes;
    p->total = fixed + (p->experts_resident ? in->expert_bytes : p->device_slot_bytes);
    p->over = p->total > p->available;
    return 0;
}

void plan_format(const struct plan *p, char *buf, size_t len)
{
    char w[32], kv[32], rs[32], ex[32], dv[32], tot[32], lim[32], av[32];
    plan_bytes_str(p->weights, w, sizeof w);
    plan_bytes_str(p->kv, kv, sizeof kv);
    plan_bytes_str(p->reserve, rs, sizeof rs);
    plan_bytes_str(p->expert_bytes, ex, sizeof ex);
    plan_bytes_str(p->device_slot_bytes, dv, sizeof dv);
    plan_bytes_str(p->total, tot, sizeof tot);
    plan_bytes_str(p->limit, lim, sizeof lim);
    plan_bytes_str(p->available, av, sizeof av);
    size_t n = 0;
#define OUT(...) n += (size_t)snprintf(buf + (n < len ? n : len), n < len ? len - n : 0, __VA_ARGS__)
    OUT("  limit:      %s (%s), %s available\n", lim, p->mach.cgroup_limit ? p->mach.cgroup_src : "RAM", av);
    OUT("  resident:   %s non-expert weights\n", w);
    OUT("  KV pool:    %s\n", kv);
    OUT("  reserve:    %s (scratch, buffers, the process)\n", rs);
    if (p->experts_resident)
        OUT("  experts:    %s, all resident (%s)\n", ex, p->why);
    else
        OUT("  experts:    %s in the file; expert cache %s in %u slots (%.1f%% of expert bytes; %s), "
            "loaded on demand\n",
            ex, dv, p->device_slots, p->expert_bytes ? 100.0 * (double)p->device_slot_bytes / (double)p->expert_bytes : 0,
            p->why);
    if (p->host_budget) {
        char hb[32];
        plan_bytes_str(p->host_budget, hb, sizeof hb);
        OUT("  host tier:  %s\n", hb);
    }
    OUT("  total:      %s%s\n", tot, p->over ? " (MORE than available)" : "");
#undef OUT
}
