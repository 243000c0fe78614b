/* SPDX-License-Identifier: MIT */
/*
 * bench_kernels.c - CPU kernel benchmarks: the memory-bandwidth bound, the
 * thread pool's per-call cost, and the CPU backend's matmul per weight type
 * in decode (n_tok = 1) and prefill (n_tok = 128) shapes, and decode
 * attention over a long context, at 1 and 2 (or more) threads, each beside
 * the bound.
 *
 * Built and run by bench/run.sh (`make bench`). Decode cycles through enough
 * copies of the weights to exceed the last-level cache, so every call reads
 * its weights from DRAM as a MoE expert does; "%bw" is the weight bytes per
 * second over the streaming read bandwidth of the same thread count.
 * Options: -t N (largest thread count, default the CPUs this process may
 * use), -q (quick: shorter runs), -s MiB (bandwidth buffer, default 2048),
 * -f TEXT (only the matmul rows whose "type shape" contains TEXT; skips the
 * bandwidth and pool sections' repeats: 0 MiB buffer means no bandwidth).
 */
#include "kernels/backend.h"
#include "kernels/cpu/impl.h"
#include "kernels/quant.h"
#include "common/log.h"

#include <immintrin.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double g_min_time = 0.5; /* seconds per measurement */

/* ---- streaming read bandwidth ---- */

struct bw_arg {
    const uint8_t *p;
    size_t n;
    uint64_t sink;
    pthread_barrier_t *bar;
    int reps;
};

__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t n)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a0 = _mm256_xor_si256(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_xor_si256(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_xor_si256(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    return (uint64_t)_mm256_extract_epi64(a0, 0) ^ (uint64_t)_mm256_extract_epi64(a0, 3);
}

__attribute__((target("avx512f"))) static uint64_t read_avx512(const uint8_t *p, size_t n)
{
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 256 <= n; i += 256) {
        a0 = _mm512_xor_si512(a0, _mm512_load_si512(p + i));
        a1 = _mm512_xor_si512(a1, _mm512_load_si512(p + i + 64));
        a2 = _mm512_xor_si512(a2, _mm512_load_si512(p + i + 128));
        a3 = _mm512_xor_si512(a3, _mm512_load_si512(p + i + 192));
    }
    a0 = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
    return (uint64_t)_mm512_reduce_add_epi64(a0);
}

static int g_use_avx512;

static void *bw_thread(void *arg)
{
    struct bw_arg *a = arg;
    for (int r = 0; r < a->reps; r++) {
        pthread_barrier_wait(a->bar);
        a->sink ^= g_use_avx512 ? read_avx512(a->p, a->n) : read_avx2(a->p, a->n);
        pthread_barrier_wait(a->bar);
    }
    return NULL;
}

/* Best GB/s of reading buf (n bytes) split among nt threads. */
static double stream_bw(const uint8_t *buf, size_t n, int nt, int reps)
{
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)nt + 1);
    pthread_t th[64];
    struct bw_arg args[64];
    size_t per = n / (size_t)nt / 4096 * 4096;
    for (int i = 0; i < nt; i++) {
        args[i] = (struct bw_arg){.p = buf + per * (size_t)i, .n = per, .bar = &bar, .reps = reps};
        pthread_create(&th[i], NULL, bw_thread, &args[i]);
    }
    double best = 0;
    for (int r = 0; r < reps; r++) {
        pthread_barrier_wait(&bar);
        double t0 = now_s();
        pthread_barrier_wait(&bar);
        double gbs = (double)per * nt / (now_s() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    for (int i = 0; i < nt; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&bar);
    return best;
}

/* Fills bw[i] with the streaming read bound of thr[i] threads. The bound is
 * the best any plain read loop reaches: AVX2 and, where the CPU has it,
 * AVX-512 loads, best of several passes each (bandwidth in a VM is noisy). */
static int measure_bw(size_t mib, const int *thr, int n_thr, double *bw)
{
    size_t bytes = mib << 20;
    uint8_t *buf = aligned_alloc(4096, bytes);
    if (!buf) {
        fprintf(stderr, "cannot allocate %zu MiB\n", mib);
        return -1;
    }
    memset(buf, 1, bytes);
    int has512 = __builtin_cpu_supports("avx512f");
    printf("streaming read bandwidth (%zu MiB buffer, best of 6 passes x %s)\n", mib,
           has512 ? "AVX2 and AVX-512 loads" : "AVX2 loads");
    for (int i = 0; i < n_thr; i++) {
        g_use_avx512 = 0;
        bw[i] = stream_bw(buf, bytes, thr[i], 6);
        if (has512) {
            g_use_avx512 = 1;
            double b2 = stream_bw(buf, bytes, thr[i], 6);
            bw[i] = b2 > bw[i] ? b2 : bw[i];
        }
        printf("  %d thread%s: %6.1f GB/s\n", thr[i], thr[i] > 1 ? "s" : " ", bw[i]);
    }
    free(buf);
    return 0;
}

/* ---- pool overhead ---- */

static void empty_task(void *ctx, int64_t task, int thread_id)
{
    (void)ctx;
    (void)task;
    (void)thread_id;
}

static void bench_pool(int nt)
{
    struct be_cpu_pool *pool;
    if (be_cpu__pool_init(&pool, nt) != 0)
        return;
    for (int tasks = nt; tasks <= nt * 8; tasks *= 8) {
        long iters = 0;
        double t0 = now_s(), t;
        do {
            for (int i = 0; i < 1000; i++)
                be_cpu__pool_run(pool, empty_task, NULL, tasks);
            iters += 1000;
        } while ((t = now_s() - t0) < g_min_time);
        printf("  pool_run, %d threads, %2d empty tasks, back to back: %6.2f us/call\n", nt, tasks,
               t / (double)iters * 1e6);
    }
    /* After an idle gap longer than the spin: the workers sleep. */
    double sum = 0;
    int n = 200;
    for (int i = 0; i < n; i++) {
        usleep(300);
        double t0 = now_s();
        be_cpu__pool_run(pool, empty_task, NULL, nt);
        sum += now_s() - t0;
    }
    printf("  pool_run, %d threads, %2d empty tasks, after 300 us idle: %6.2f us/call\n", nt, nt,
           sum / n * 1e6);
    be_cpu__pool_free(pool);
}

/* ---- matmul ---- */

struct mm_case {
    const char *name;
    int64_t n_in, n_out, n_tok;
};

static double bench_matmul(struct be *be, enum be_type wt, const struct mm_case *mc, const uint8_t *w,
                           size_t w_bytes, int n_copies, const float *x, float *y, double *us_call)
{
    long calls = 0;
    double t0 = now_s(), t;
    do {
        for (int i = 0; i < n_copies; i++)
            be->ops->matmul(be, y, w + (size_t)i * w_bytes, wt, mc->n_in, mc->n_out, x, mc->n_tok);
        calls += n_copies;
    } while ((t = now_s() - t0) < g_min_time);
    *us_call = t / (double)calls * 1e6;
    return t / (double)calls;
}

/* ---- attention ---- */

/* Decode attention of n_seq sequences (one query token each) over n_ctx
 * cached positions: Qwen3-30B-A3B's shape (32 query heads, 4 KV heads of
 * 128). GB/s counts the K and V bytes read. */
static void bench_attention(const int *thr, int n_thr, const double *bw)
{
    static const enum be_type kv_types[] = {BE_TYPE_F32, BE_TYPE_F16, BE_TYPE_Q8_0};
    const int32_t n_head = 32, n_head_kv = 4, hd = 128, bs = 16, n_ctx = 4096, n_seq = 4;
    const int64_t row_len = (int64_t)n_head_kv * hd;
    const int32_t n_blocks = n_ctx / bs;
    printf("\nattention decode: %d sequences x %d positions, %d/%d heads of %d (GB/s = K+V bytes / time)\n",
           n_seq, n_ctx, n_head, n_head_kv, hd);
    printf("%-6s %3s %10s %9s %6s\n", "kv", "thr", "us/call", "GB/s", "%bw");
    float *q = malloc((size_t)n_seq * n_head * hd * sizeof(float));
    float *out = malloc((size_t)n_seq * n_head * hd * sizeof(float));
    float *row = malloc((size_t)row_len * sizeof(float));
    int32_t *tab = malloc((size_t)n_seq * n_blocks * sizeof(int32_t));
    const int32_t *bt[4];
    int32_t n_kv[4];
    for (int i = 0; i < n_seq * n_head * hd; i++)
        q[i] = (float)(i % 17) * 0.01f - 0.08f;
    for (int i = 0; i < row_len; i++)
        row[i] = (float)(i % 13) * 0.1f - 0.6f;
    for (int sq = 0; sq < n_seq; sq++) {
        for (int b = 0; b < n_blocks; b++)
            tab[sq * n_blocks + b] = b * n_seq + sq; /* interleaved, as a shared pool */
        bt[sq] = tab + sq * n_blocks;
        n_kv[sq] = n_ctx;
    }
    for (size_t ki = 0; ki < sizeof kv_types / sizeof kv_types[0]; ki++) {
        const enum be_type t = kv_types[ki];
        size_t rb = be_row_size(t, row_len), n_slots = (size_t)n_seq * n_ctx;
        uint8_t *k = malloc(rb * n_slots), *v = malloc(rb * n_slots);
        for (size_t sl = 0; sl < n_slots; sl++) {
            be_quant_row(t, row, k + sl * rb, row_len);
            be_quant_row(t, row, v + sl * rb, row_len);
        }
        struct be_kv_layer kv = {.type = t, .block_size = bs, .row_bytes = rb, .k = k, .v = v};
        struct be_attn a = {.n_head = n_head, .n_head_kv = n_head_kv, .head_dim = hd,
                            .scale = 0.088f, .kv = &kv, .block_tab = bt, .n_kv = n_kv};
        for (int i = 0; i < n_thr; i++) {
            struct be *be;
            struct be_cpu_params p = {.n_threads = thr[i]};
            if (be_cpu_init(&be, &p) != 0 || be->ops->reserve(be, n_seq, n_head * hd, n_ctx) != 0)
                exit(1);
            long calls = 0;
            double t0 = now_s(), tt;
            do {
                be->ops->attention(be, out, q, n_seq, &a);
                calls++;
            } while ((tt = now_s() - t0) < g_min_time);
            double sec = tt / (double)calls, gbs = 2.0 * (double)rb * (double)n_slots / sec / 1e9;
            printf("%-6s %3d %10.1f %9.2f %5.0f%%\n", be_type_name(t), thr[i], sec * 1e6, gbs,
                   100.0 * gbs / bw[i]);
            be_free(be);
        }
        free(k);
        free(v);
    }
    free(q);
    free(out);
    free(row);
    free(tab);
}

/* (e) One MoE layer of the medium preset (1024 wide, 64 experts, top 8,
 * expert FFN 512; gate/up Q4_K, down Q6_K, as Q4_K_M) through moe_ffn,
 * with the experts as stored and rewritten by expert_pack (where the
 * kernels have its layout), at 1, 16 and 512 tokens (random routing),
 * from DRAM (16 layers of distinct experts, cycled) and in cache (every
 * expert the same memory): ms a layer and packed / stored. */
static uint64_t g_moe_rs = 88172645463325252ull;
static uint32_t moe_rand(void)
{
    g_moe_rs ^= g_moe_rs << 13;
    g_moe_rs ^= g_moe_rs >> 7;
    g_moe_rs ^= g_moe_rs << 17;
    return (uint32_t)g_moe_rs;
}

static double bench_moe_case(struct be *be, int n, bool cache, const uint8_t *G, const uint8_t *U, const uint8_t *D,
                             bool packed)
{
    enum { NE = 64, K = 8, E = 1024, FF = 512 };
    const size_t gs = be_row_size(BE_TYPE_Q4_K, E) * FF, ds = be_row_size(BE_TYPE_Q6_K, FF) * E;
    float *x = malloc((size_t)n * E * sizeof(float)), *y = malloc((size_t)n * E * sizeof(float));
    int32_t *tok = malloc((size_t)n * K * sizeof(int32_t)), off[NE + 1];
    float *wt = malloc((size_t)n * K * sizeof(float));
    int (*ids)[K] = malloc((size_t)n * sizeof *ids);
    const void *gp[NE], *up[NE], *dp[NE];
    for (int64_t i = 0; i < (int64_t)n * E; i++)
        x[i] = (float)(moe_rand() % 2001) / 1000.0f - 1.0f;
    double total = 0;
    int calls = 0;
    const int reps = n >= 512 ? 3 : n >= 16 ? 12 : 40;
    for (int rep = 0; rep < reps; rep++) {
        for (int l = 0; l < 16; l++) {
            for (int t = 0; t < n; t++)
                for (int c = 0; c < K;) {
                    int e = (int)(moe_rand() % NE), dup = 0;
                    for (int q = 0; q < c; q++)
                        dup |= ids[t][q] == e;
                    if (!dup)
                        ids[t][c++] = e;
                }
            int a = 0, p = 0;
            for (int e = 0; e < NE; e++) {
                int first = p;
                for (int t = 0; t < n; t++)
                    for (int q = 0; q < K; q++)
                        if (ids[t][q] == e) {
                            tok[p] = t;
                            wt[p++] = 0.125f;
                        }
                if (p == first)
                    continue;
                const size_t ix = cache ? 0 : (size_t)l * NE + (size_t)e;
                gp[a] = G + ix * gs;
                up[a] = U + ix * gs;
                dp[a] = D + ix * ds;
                off[a++] = first;
            }
            off[a] = p;
            struct be_moe_layer ml = {.n_embd = E, .n_ff = FF, .gate_type = BE_TYPE_Q4_K, .up_type = BE_TYPE_Q4_K,
                                      .down_type = BE_TYPE_Q6_K, .n_active = a, .gate = gp, .up = up, .down = dp,
                                      .offset = off, .tok = tok, .weight = wt, .gate_packed = packed,
                                      .up_packed = packed, .down_packed = packed};
            memset(y, 0, (size_t)n * E * sizeof(float));
            double t0 = now_s();
            be->ops->moe_ffn(be, y, x, n, &ml);
            if (rep > 0) {
                total += now_s() - t0;
                calls++;
            }
        }
    }
    free(x);
    free(y);
    free(tok);
    free(wt);
    free(ids);
    return total / calls;
}

static void bench_moe(int nt)
{
    enum { NE = 64, E = 1024, FF = 512, N_LAYERS = 16 };
    const size_t gs = be_row_size(BE_TYPE_Q4_K, E) * FF, ds = be_row_size(BE_TYPE_Q6_K, FF) * E;
    const size_t n_ex = (size_t)N_LAYERS * NE;
    struct be *be;
    struct be_cpu_params p = {.n_threads = nt};
    if (be_cpu_init(&be, &p) != 0 || be->ops->reserve(be, 512, 4096, 16) != 0 ||
        be->ops->reserve_moe(be, 512 * 8, FF, E) != 0) {
        fprintf(stderr, "bench_kernels: cannot set up the CPU backend\n");
        return;
    }
    /* [0]: as stored, [1]: rewritten; 4 distinct experts quantized, tiled */
    uint8_t *G[2], *U[2], *D[2];
    for (int v = 0; v < 2; v++) {
        G[v] = malloc(gs * n_ex);
        U[v] = malloc(gs * n_ex);
        D[v] = malloc(ds * n_ex);
        if (!G[v] || !U[v] || !D[v]) {
            fprintf(stderr, "bench_kernels: out of memory for the MoE layer benchmark\n");
            return;
        }
    }
    float *row = malloc(E * sizeof(float));
    for (int e = 0; e < 4; e++) {
        for (int r = 0; r < FF; r++)
            for (int m = 0; m < 2; m++) {
                for (int i = 0; i < E; i++)
                    row[i] = (float)(moe_rand() % 2001) / 1000.0f - 1.0f;
                be_quant_row(BE_TYPE_Q4_K, row, (m ? U[0] : G[0]) + e * gs + r * be_row_size(BE_TYPE_Q4_K, E), E);
            }
        for (int r = 0; r < E; r++) {
            for (int i = 0; i < FF; i++)
                row[i] = (float)(moe_rand() % 2001) / 1000.0f - 1.0f;
            be_quant_row(BE_TYPE_Q6_K, row, D[0] + e * ds + r * be_row_size(BE_TYPE_Q6_K, FF), FF);
        }
    }
    free(row);
    for (size_t e = 4; e < n_ex; e++) {
        memcpy(G[0] + e * gs, G[0] + (e % 4) * gs, gs);
        memcpy(U[0] + e * gs, U[0] + (e % 4) * gs, gs);
        memcpy(D[0] + e * ds, D[0] + (e % 4) * ds, ds);
    }
    memcpy(G[1], G[0], gs * n_ex);
    memcpy(U[1], U[0], gs * n_ex);
    memcpy(D[1], D[0], ds * n_ex);
    const bool packed = be->ops->expert_pack && be->ops->expert_pack(be, G[1], BE_TYPE_Q4_K, E, FF, (int64_t)n_ex) == 1 &&
                        be->ops->expert_pack(be, U[1], BE_TYPE_Q4_K, E, FF, (int64_t)n_ex) == 1 &&
                        be->ops->expert_pack(be, D[1], BE_TYPE_Q6_K, FF, E, (int64_t)n_ex) == 1;
    printf("\nMoE layer (1024 wide, 64 experts, top 8, FFN 512, Q4_K/Q4_K/Q6_K), %d thread%s: ms a layer\n", nt,
           nt == 1 ? "" : "s");
    if (!packed)
        printf("  (these kernels have no stored panels: experts as stored only)\n");
    printf("%-7s %-7s %10s %10s %9s\n", "tokens", "from", "as stored", "rewritten", "ratio");
    static const int toks[] = {1, 16, 512};
    for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++)
        for (int cache = 0; cache < 2; cache++) {
            double a = bench_moe_case(be, toks[i], cache, G[0], U[0], D[0], false);
            double b = packed ? bench_moe_case(be, toks[i], cache, G[1], U[1], D[1], true) : 0;
            printf("%-7d %-7s %10.3f %10.3f %8.2fx\n", toks[i], cache ? "cache" : "DRAM", a * 1e3, b * 1e3,
                   b > 0 ? a / b : 0.0);
            fflush(stdout);
        }
    for (int v = 0; v < 2; v++) {
        free(G[v]);
        free(U[v]);
        free(D[v]);
    }
    be_free(be);
}

/* (f) The stored panels (kernels' stored[], what expert_pack and prepack
 * keep) against the small-batch rows kernel on the rows as stored (and the
 * dot kernel at one token), one thread, 256 rows of 1024 in cache: ns a
 * row, and rows / panel. */
static void bench_panels(const struct be_cpu_kernels *k)
{
    static const enum be_type types[] = {BE_TYPE_Q4_K, BE_TYPE_Q6_K};
    static const int toks[] = {1, 2, 3, 8, 16};
    const int64_t n = 1024;
    const int rows = 256;
    if (!k)
        return;
    printf("\nstored panels against the rows as stored: one thread, %d rows of %lld in cache, ns a row\n", rows,
           (long long)n);
    printf("%-6s %6s %10s %12s %9s\n", "type", "tokens", "panel", "rows kernel", "ratio");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const enum be_type wt = types[ti];
        const struct be_cpu_gemm *g = &k->stored[wt];
        if (!g->pack || !k->rows[wt])
            continue;
        const size_t wrow = be_row_size(wt, n), yrow = be_row_size(BE_TYPE_Q8_K, n);
        const size_t panel = (size_t)g->bytes_per_blk * (size_t)(n / 256);
        uint8_t *w = aligned_alloc(64, wrow * rows), *pk = aligned_alloc(64, panel * (rows / 16));
        uint8_t *y = aligned_alloc(64, (yrow * 16 + 63) / 64 * 64);
        float *x = malloc((size_t)n * sizeof(float)), *out = malloc((size_t)rows * 16 * sizeof(float));
        for (int r = 0; r < rows + 16; r++) {
            for (int64_t i = 0; i < n; i++)
                x[i] = (float)(moe_rand() % 2001) / 1000.0f - 1.0f;
            if (r < rows)
                be_quant_row(wt, x, w + (size_t)r * wrow, n);
            else
                be_quant_row(BE_TYPE_Q8_K, x, y + (size_t)(r - rows) * yrow, n);
        }
        for (int p = 0; p < rows / 16; p++)
            g->pack(w + (size_t)p * 16 * wrow, wrow, 16, n, pk + (size_t)p * panel);
        for (size_t ki = 0; ki < sizeof toks / sizeof toks[0]; ki++) {
            const int ny = toks[ki];
            double best_p = 1e30, best_r = 1e30;
            const int reps = 4000 / ny + 1;
            for (int trial = 0; trial < 5; trial++) {
                double t0 = now_s();
                for (int rep = 0; rep < reps; rep++)
                    for (int p = 0; p < rows / 16; p++)
                        for (int t = 0; t < ny; t += BE_CPU_GEMM_NY)
                            g->run(n, pk + (size_t)p * panel, y + (size_t)t * yrow, yrow,
                                   ny - t < BE_CPU_GEMM_NY ? ny - t : BE_CPU_GEMM_NY, out + (size_t)t * rows + 16 * p,
                                   rows, 16);
                double dt = (now_s() - t0) / reps / rows * 1e9;
                best_p = dt < best_p ? dt : best_p;
                t0 = now_s();
                for (int rep = 0; rep < reps; rep++)
                    k->rows[wt](n, w, wrow, rows, y, yrow, ny, out, rows);
                dt = (now_s() - t0) / reps / rows * 1e9;
                best_r = dt < best_r ? dt : best_r;
            }
            printf("%-6s %6d %10.1f %12.1f %8.2fx\n", be_type_name(wt), ny, best_p, best_r, best_r / best_p);
        }
        free(w);
        free(pk);
        free(y);
        free(x);
        free(out);
    }
}

int main(int argc, char **argv)
{
    int max_threads = be_cpu__cpu_count();
    size_t bw_mib = 2048;
    const char *filter = NULL;
    int bw_only = 0; /* -B: only the bandwidth, as "bandwidth THREADS GB/s" lines */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc)
            max_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-q"))
            g_min_time = 0.15;
        else if (!strcmp(argv[i], "-f") && i + 1 < argc)
            filter = argv[++i];
        else if (!strcmp(argv[i], "-s") && i + 1 < argc)
            bw_mib = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "-B"))
            bw_only = 1;
    }
    if (max_threads < 1)
        max_threads = 1;
    log_set_level(LOG_LEVEL_WARN);
    int thr[8], n_thr = 0;
    for (int t = 1; t < max_threads && n_thr < 7; t *= 2)
        thr[n_thr++] = t;
    thr[n_thr++] = max_threads;
    const struct be_cpu_kernels *k = be_cpu__kernels(be_cpu__isa_detect());
    printf("moed kernel benchmarks: kernels %s, threads up to %d\n\n", k ? k->isa_name : "reference",
           max_threads);

    /* (a) the bound */
    double bw[8];
    for (int i = 0; i < 8; i++)
        bw[i] = 1e30; /* -s 0: no bound, %bw shows 0 */
    if (bw_mib > 0 && measure_bw(bw_mib, thr, n_thr, bw) != 0)
        return 1;
    if (bw_only) {
        for (int i = 0; i < n_thr; i++)
            printf("bandwidth %d %.3f\n", thr[i], bw[i]);
        return 0;
    }

    /* (b) pool */
    printf("\nthread pool per-call overhead\n");
    for (int i = 0; i < n_thr; i++)
        if (thr[i] > 1)
            bench_pool(thr[i]);

    /* (c) attention */
    if (!filter || strstr("attention", filter))
        bench_attention(thr, n_thr, bw);

    /* (e) MoE layer, with -f moe or no filter (after the matmuls) */
    const bool moe = !filter || strstr("moe", filter);

    /* (d) matmul */
    static const enum be_type types[] = {BE_TYPE_Q8_0, BE_TYPE_Q4_K, BE_TYPE_Q6_K,
                                         BE_TYPE_Q4_0, BE_TYPE_F16,  BE_TYPE_BF16};
    static const struct mm_case cases[] = {
        {"decode expert 768x2048", 2048, 768, 1},
        {"hot expert 512x1024", 1024, 512, 1}, /* in cache: per-call cost */
        {"decode dense 4096x4096", 4096, 4096, 1},
        {"prefill 4096x4096 x128", 4096, 4096, 128},
    };
    const size_t dram_set = 256u << 20; /* well past the last-level cache */
    printf("\nmatmul (GB/s = weight bytes / time; %%bw = of the streaming bound at that thread count)\n");
    printf("%-6s %-24s %3s %10s %9s %9s %6s\n", "type", "shape", "thr", "us/call", "GB/s", "GFLOP/s",
           "%bw");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const enum be_type wt = types[ti];
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            const struct mm_case *mc = &cases[ci];
            char label[64];
            snprintf(label, sizeof label, "%s %s", be_type_name(wt), mc->name);
            if (filter && !strstr(label, filter))
                continue;
            size_t w_bytes = be_row_size(wt, mc->n_in) * (size_t)mc->n_out;
            const bool hot = !strncmp(mc->name, "hot", 3);
            int n_copies = mc->n_tok == 1 && !hot ? (int)((dram_set + w_bytes - 1) / w_bytes) : 1;
            uint8_t *w = aligned_alloc(64, (w_bytes * (size_t)n_copies + 63) / 64 * 64);
            float *rowf = malloc((size_t)mc->n_in * sizeof(float));
            float *x = malloc((size_t)mc->n_in * mc->n_tok * sizeof(float));
            float *y = malloc((size_t)mc->n_out * mc->n_tok * sizeof(float));
            uint64_t s = 42;
            for (int64_t i = 0; i < mc->n_in * mc->n_tok; i++)
                x[i] = (float)((s = s * 6364136223846793005ull + 1) >> 40) / 16777216.0f - 0.5f;
            /* Quantize a few distinct rows and tile them (quantizing 256 MiB
             * of K-quants would take longer than the benchmark). */
            size_t rb = be_row_size(wt, mc->n_in);
            for (int r = 0; r < 16; r++) {
                for (int64_t i = 0; i < mc->n_in; i++)
                    rowf[i] = (float)((s = s * 6364136223846793005ull + 1) >> 40) / 16777216.0f - 0.5f;
                be_quant_row(wt, rowf, w + (size_t)r * rb, mc->n_in);
            }
            for (size_t off = 16 * rb; off < w_bytes * (size_t)n_copies; off += 16 * rb) {
                size_t len = w_bytes * (size_t)n_copies - off < 16 * rb ? w_bytes * (size_t)n_copies - off : 16 * rb;
                memcpy(w + off, w, len);
            }
            for (int i = 0; i < n_thr; i++) {
                struct be *be;
                struct be_cpu_params p = {.n_threads = thr[i]};
                if (be_cpu_init(&be, &p) != 0 || be->ops->reserve(be, mc->n_tok, mc->n_in, 16) != 0)
                    return 1;
                double us;
                be->ops->matmul(be, y, w, wt, mc->n_in, mc->n_out, x, mc->n_tok); /* warm */
                double sec = bench_matmul(be, wt, mc, w, w_bytes, n_copies, x, y, &us);
                double gbs = (double)w_bytes / sec / 1e9;
                double gflops = 2.0 * (double)mc->n_in * (double)mc->n_out * (double)mc->n_tok / sec / 1e9;
                char pct[16] = "     -"; /* prefill is bound by compute, not bandwidth */
                if (mc->n_tok == 1 && !hot)
                    snprintf(pct, sizeof pct, "%5.0f%%", 100.0 * gbs / bw[i]);
                printf("%-6s %-24s %3d %10.1f %9.2f %9.1f %s\n", be_type_name(wt), mc->name, thr[i], us,
                       gbs, gflops, pct);
                fflush(stdout);
                be_free(be);
            }
            free(w);
            free(rowf);
            free(x);
            free(y);
        }
    }
    if (moe)
        bench_moe(max_threads);
    if (!filter || strstr("panels", filter))
        bench_panels(k);
    return 0;
}
