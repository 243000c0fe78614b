// SPDX-License-Identifier: MIT
/*
 * device.cu - the entry points of libmoed-cuda.so that exist today: probing
 * the CUDA driver and devices. The registry (kernels/backend.c) loads this
 * library with dlopen only when a GPU is asked for, so `moed` itself links
 * no CUDA library and starts on machines without one. The compute backend
 * (ops on the GPU, the expert cache in GPU memory) is the CUDA issue's work;
 * until it lands the registry logs what it found and uses the CPU backend.
 *
 * Invariant: nothing here throws or aborts; every CUDA error becomes a
 * message in the caller's buffer.
 */
#include <cuda_runtime.h>

#include <stdio.h>
#include <string.h>

extern "C" {

/* Describes the CUDA devices into buf (one line). Returns the number of
 * usable devices, 0 when none, or -1 on a driver error (buf says which). */
__attribute__((visibility("default"))) int be_cuda_probe(char *buf, size_t len)
{
    int n = 0, drv = 0, rt = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(buf, len, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return e == cudaErrorNoDevice ? 0 : -1;
    }
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    size_t off = (size_t)snprintf(buf, len, "driver %d.%d, runtime %d.%d, %d device%s", drv / 1000,
                                  (drv % 1000) / 10, rt / 1000, (rt % 1000) / 10, n, n == 1 ? "" : "s");
    for (int i = 0; i < n && off < len; i++) {
        cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) != cudaSuccess)
            continue;
        off += (size_t)snprintf(buf + off, len - off, "%s %d: %s, sm_%d%d, %.1f GiB", i ? ";" : ":", i,
                                p.name, p.major, p.minor, (double)p.totalGlobalMem / (1 << 30));
    }
    return n;
}

}
