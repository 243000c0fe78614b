/* SPDX-License-Identifier: MIT */
/*
 * backend.c - the backend registry: picks the backend the engine runs on.
 *
 * The CUDA backend lives in libmoed-cuda.so, loaded with dlopen only when a
 * GPU is asked for (BE_GPU_AUTO or BE_GPU_REQUIRE), so `moed` links no CUDA
 * library and runs on machines without one. Every way of not getting a GPU
 * (no library, no driver, no device, or a library without the compute
 * backend) ends on the CPU backend with one log line that says why.
 */
#include "kernels/backend.h"

#include "common/err.h"
#include "common/log.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef int (*probe_fn)(char *buf, size_t len);
typedef int (*cuda_init_fn)(struct be **out, int device, char *err, size_t errlen);

/* Opens libmoed-cuda.so from beside the executable, else the library path. */
static void *open_cuda_lib(char *why, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 32);
    void *h = NULL;
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            strcpy(slash + 1, "libmoed-cuda.so");
            h = dlopen(exe, RTLD_NOW | RTLD_LOCAL);
        }
    }
    if (!h)
        h = dlopen("libmoed-cuda.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, len, "libmoed-cuda.so not loaded (%s)", e ? e : "not found");
    }
    return h;
}

int be_init(struct be **out, const struct be_init_params *p, char *err, size_t errlen)
{
    char why[512] = "";
    *out = NULL;
    if (p->gpu != BE_GPU_OFF) {
        void *h = open_cuda_lib(why, sizeof why);
        if (h) {
            probe_fn probe = (probe_fn)dlsym(h, "be_cuda_probe");
            cuda_init_fn init = (cuda_init_fn)dlsym(h, "be_cuda_init");
            char desc[400] = "";
            int n = probe ? probe(desc, sizeof desc) : -1;
            if (!probe)
                snprintf(why, sizeof why, "libmoed-cuda.so has no be_cuda_probe");
            else if (n <= 0)
                snprintf(why, sizeof why, "no CUDA device (%s)", desc);
            else if (!init)
                snprintf(why, sizeof why, "found %s, but this build's CUDA backend does not run models yet", desc);
            else if (init(out, p->device, why, sizeof why) == 0) {
                log_info("backend", "CUDA backend on device %d (%s)", p->device, desc);
                return 0; /* the library stays loaded for the process's life */
            }
            dlclose(h);
        }
        if (p->gpu == BE_GPU_REQUIRE) {
            snprintf(err, errlen, "a GPU was required but none is usable: %s", why);
            return ERR_CUDA;
        }
        log_info("backend", "using the CPU backend: %s", why);
    }
    int rc = be_cpu_init(out, &p->cpu);
    if (rc < 0)
        snprintf(err, errlen, "cannot start the CPU backend: %s", err_str(rc));
    return rc;
}
