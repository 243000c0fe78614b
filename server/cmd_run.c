/* SPDX-License-Identifier: MIT */
/*
 * cmd_run.c - `moed run`: one prompt through the engine, the generated text
 * streamed to stdout (exactly the detokenized tokens, nothing else), the
 * speeds to stderr, and optionally the run's figures as JSON.
 *
 * Also `moed tokenize` and `moed detokenize`, which need only the
 * vocabulary of the model file.
 */
#include "server/impl.h"

#include "common/err.h"
#include "common/log.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/vocab.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- reading input ---- */

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t r = fread(b + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
        if (n + 1 >= cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
            cap *= 2;
        }
    }
    if (b) {
        b[n] = 0;
        *len = n;
    }
    return b;
}

/* Opens just the vocabulary of a model file. */
static int open_vocab(const char *path, struct gguf_file **g, struct vocab **v)
{
    char err[1024];
    int rc = gguf_open(g, path, err, sizeof err);
    if (rc == 0 && (rc = vocab_init_gguf(v, *g, err, sizeof err)) < 0) {
        gguf_close(*g);
        *g = NULL;
    }
    if (rc < 0)
        fprintf(stderr, "moed: %s\n", err);
    return rc;
}

/* ---- tokenize / detokenize ---- */

static void print_piece(const char *s, size_t n)
{
    putchar('\'');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c == '\'' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('\'');
}

int srv_cmd_tokenize(int argc, char **argv)
{
    const char *path = NULL, *prompt = NULL;
    bool pieces = false, no_special = false, no_bos = false;
    static const struct option lo[] = {{"model", 1, 0, 'm'}, {"prompt", 1, 0, 'p'},
                                       {"pieces", 0, 0, 'P'}, {"no-special", 0, 0, 'S'},
                                       {"no-bos", 0, 0, 'B'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:", lo, NULL)) != -1) {
        switch (c) {
        case 'm': path = optarg; break;
        case 'p': prompt = optarg; break;
        case 'P': pieces = true; break;
        case 'S': no_special = true; break;
        case 'B': no_bos = true; break;
        default: return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: moed tokenize -m MODEL [-p TEXT] [--pieces] [--no-special] [--no-bos]\n"
                        "reads the text from stdin when -p is not given\n");
        return 2;
    }
    struct gguf_file *g = NULL;
    struct vocab *v = NULL;
    if (open_vocab(path, &g, &v) < 0)
        return 1;
    size_t len = 0;
    char *text = prompt ? strdup(prompt) : read_all(stdin, &len);
    if (prompt && text)
        len = strlen(text);
    int rc = 1;
    if (text) {
        struct vocab_encode_opts o = vocab_encode_opts_default();
        o.parse_special = !no_special;
        o.add_special = !no_bos;
        struct vocab_tokens t = {0};
        int e = vocab_encode(v, text, len, &o, &t);
        if (e < 0) {
            fprintf(stderr, "moed: tokenize: %s\n", err_str(e));
        } else {
            for (size_t i = 0; i < t.n; i++) {
                if (pieces) {
                    char *s = NULL;
                    size_t sl = 0;
                    struct vocab_detok_opts dopt = {.show_special = true};
                    if (vocab_decode(v, &t.ids[i], 1, &dopt, &s, &sl) == 0) {
                        printf("%d ", t.ids[i]);
                        print_piece(s, sl);
                        putchar('\n');
                        free(s);
                    }
                } else {
                    printf(i ? " %d" : "%d", t.ids[i]);
                }
            }
            if (!pieces)
                putchar('\n');
            rc = 0;
        }
        vocab_tokens_free(&t);
    }
    free(text);
    vocab_free(v);
    gguf_close(g);
    return rc;
}

int srv_cmd_detokenize(int argc, char **argv)
{
    const char *path = NULL;
    bool special = false;
    static const struct option lo[] = {{"model", 1, 0, 'm'}, {"special", 0, 0, 'S'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:", lo, NULL)) != -1) {
        switch (c) {
        case 'm': path = optarg; break;
        case 'S': special = true; break;
        default: return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: moed detokenize -m MODEL [--special] < ids\n");
        return 2;
    }
    struct gguf_file *g = NULL;
    struct vocab *v = NULL;
    if (open_vocab(path, &g, &v) < 0)
        return 1;
    size_t len = 0, n = 0, cap = 256;
    char *in = read_all(stdin, &len);
    int32_t *ids = malloc(cap * sizeof *ids);
    int rc = 1;
    if (in && ids) {
        char *p = in;
        rc = 0;
        while (*p) {
            while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t' || *p == '\r' || *p == '[' || *p == ']')
                p++;
            if (!*p)
                break;
            char *end;
            long x = strtol(p, &end, 10);
            if (end == p || x < 0 || x >= (long)vocab_n_tokens(v)) {
                fprintf(stderr, "moed: detokenize: '%.20s' is not a token id of this model (0..%u)\n", p,
                        vocab_n_tokens(v) - 1);
                rc = 1;
                break;
            }
            if (n == cap) {
                int32_t *ni = realloc(ids, cap * 2 * sizeof *ids);
                if (!ni) {
                    rc = 1;
                    break;
                }
                ids = ni;
                cap *= 2;
            }
            ids[n++] = (int32_t)x;
            p = end;
        }
        if (rc == 0) {
            struct vocab_detok_opts o = {.show_special = special, .strip_lead_space = true};
            char *s = NULL;
            size_t sl = 0;
            if (vocab_decode(v, ids, n, &o, &s, &sl) == 0) {
                fwrite(s, 1, sl, stdout);
                free(s);
            } else {
                rc = 1;
            }
        }
    }
    free(in);
    free(ids);
    vocab_free(v);
    gguf_close(g);
    return rc;
}

/* ---- run ---- */

static char *g_think_start, *g_think_end; /* copies of the template's think tags */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
};

static void on_notify(void *ud)
{
    struct waiter *w = ud;
    pthread_mutex_lock(&w->mu);
    w->ready = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* One chat turn: the prompt as the user's message through the model's (or
 * the given) chat template. Sets the think tags when the template has them.
 * Returns the rendered prompt (malloc'd) or NULL after printing the error. */
static char *render_chat(const struct engine *e, const char *user, const char *tmpl_file,
                         const char *kwargs_json, struct eng_req_params *rp)
{
    const struct model *m = eng_model(e);
    const struct vocab *v = eng_vocab(e);
    char err[1024];
    const char *src = NULL, *name = "tokenizer.chat_template";
    char *file_src = NULL;
    if (tmpl_file) {
        FILE *f = fopen(tmpl_file, "rb");
        size_t n = 0;
        if (!f || !(file_src = read_all(f, &n))) {
            fprintf(stderr, "moed: --chat-template %s: %s\n", tmpl_file, strerror(errno));
            if (f)
                fclose(f);
            return NULL;
        }
        fclose(f);
        src = file_src;
        name = tmpl_file;
    } else if (gguf_get_str(m->gguf, "tokenizer.chat_template", &src) != 0) {
        fprintf(stderr, "moed: the model has no tokenizer.chat_template; pass --chat-template FILE\n");
        return NULL;
    }
    struct chat_template *t = NULL;
    char *out = NULL;
    size_t out_len = 0;
    cJSON *msgs = cJSON_CreateArray(), *kw = NULL;
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddStringToObject(msg, "role", "user");
    cJSON_AddStringToObject(msg, "content", user);
    cJSON_AddItemToArray(msgs, msg);
    if (kwargs_json) {
        kw = cJSON_Parse(kwargs_json);
        if (!cJSON_IsObject(kw)) {
            fprintf(stderr, "moed: --chat-kwargs: expected a JSON object\n");
            goto done;
        }
    }
    if (chat_template_init(&t, src, name, err, sizeof err) != 0 ||
        chat_messages_prepare(t, msgs, err, sizeof err) != 0) {
        fprintf(stderr, "moed: %s\n", err);
        goto done;
    }
    const struct vocab_special *sp = vocab_special(v);
    struct chat_render_args a = {
        .messages = msgs, .add_generation_prompt = true,
        .bos_token = sp->bos >= 0 ? vocab_token_text(v, sp->bos) : "",
        .eos_token = sp->eos >= 0 ? vocab_token_text(v, sp->eos) : "", .kwargs = kw,
    };
    if (chat_template_render(t, &a, &out, &out_len, err, sizeof err) != 0) {
        fprintf(stderr, "moed: %s\n", err);
        out = NULL;
        goto done;
    }
    const char *ts, *te;
    if (chat_template_thinking(t, &ts, &te)) {
        g_think_start = strdup(ts);
        g_think_end = strdup(te);
        rp->think_start = g_think_start;
        rp->think_end = g_think_end;
        rp->think_open = chat_prompt_opens_thinking(t, out, out_len);
    }
done:
    cJSON_Delete(msgs);
    cJSON_Delete(kw);
    free(file_src);
    chat_template_free(t);
    return out;
}

int srv_cmd_run(int argc, char **argv)
{
    struct eng_params ep = eng_params_default();
    struct eng_req_params rp = eng_req_params_default();
    const char *prompt = NULL, *stats = NULL, *kv = NULL, *tmpl_file = NULL, *kwargs = NULL;
    bool chat = false;
    int n_predict = 128;
    bool verbose = false, no_special = false;
    rp.sample.temperature = 0.8f;
    ep.parallel = 1;
    enum { O_TEMP = 256, O_SEED, O_TOPK, O_TOPP, O_MINP, O_REP, O_STATS, O_KV, O_NOPC, O_IGN, O_NOSP,
           O_CHAT, O_TMPL, O_KW, O_XC, O_HC, O_IO, O_XFORCE, O_PRED, O_LA, O_KP, O_PFB, O_PFD, O_PGI, O_TRACE,
           O_SCHED, O_MAXSKIP, O_STEPSEQS, O_UNSUP };
    static const struct option lo[] = {
        {"model", 1, 0, 'm'}, {"prompt", 1, 0, 'p'}, {"n-predict", 1, 0, 'n'},
        {"threads", 1, 0, 't'}, {"ctx-size", 1, 0, 'c'}, {"batch-size", 1, 0, 'b'},
        {"temp", 1, 0, O_TEMP}, {"seed", 1, 0, O_SEED}, {"top-k", 1, 0, O_TOPK},
        {"top-p", 1, 0, O_TOPP}, {"min-p", 1, 0, O_MINP}, {"repeat-penalty", 1, 0, O_REP},
        {"stats-json", 1, 0, O_STATS}, {"kv-type", 1, 0, O_KV}, {"no-prefix-cache", 0, 0, O_NOPC},
        {"ignore-eos", 0, 0, O_IGN}, {"no-special", 0, 0, O_NOSP}, {"verbose", 0, 0, 'v'},
        {"chat", 0, 0, O_CHAT}, {"chat-template", 1, 0, O_TMPL}, {"chat-kwargs", 1, 0, O_KW},
        {"expert-cache", 1, 0, O_XC}, {"host-cache", 1, 0, O_HC}, {"cpu-experts", 1, 0, O_UNSUP},
        {"io", 1, 0, O_IO}, {"expert-store-always", 0, 0, O_XFORCE}, {"predictor", 1, 0, O_PRED}, {"lookahead", 1, 0, O_LA},
        {"k-pred", 1, 0, O_KP}, {"prefetch-budget", 1, 0, O_PFB}, {"prefetch-depth", 1, 0, O_PFD},
        {"pregate-at", 1, 0, O_PGI},
        {"sched", 1, 0, O_SCHED}, {"max-skip", 1, 0, O_MAXSKIP}, {"step-seqs", 1, 0, O_STEPSEQS},
        {"trace-routing", 1, 0, O_TRACE},
        {0, 0, 0, 0}};
    int c;
    optind = 1;
    int li = -1;
    while ((c = getopt_long(argc, argv, "m:p:n:t:c:b:v", lo, &li)) != -1) {
        switch (c) {
        case 'm': ep.model_path = optarg; break;
        case 'p': prompt = optarg; break;
        case 'n': n_predict = atoi(optarg); break;
        case 't': ep.n_threads = atoi(optarg); break;
        case 'c': ep.ctx_size = atoi(optarg); break;
        case 'b': ep.batch_tokens = atoi(optarg); break;
        case 'v': verbose = true; break;
        case O_TEMP: rp.sample.temperature = strtof(optarg, NULL); break;
        case O_SEED: rp.sample.seed = strtoull(optarg, NULL, 0); rp.sample.has_seed = true; break;
        case O_TOPK: rp.sample.top_k = atoi(optarg); break;
        case O_TOPP: rp.sample.top_p = strtof(optarg, NULL); break;
        case O_MINP: rp.sample.min_p = strtof(optarg, NULL); break;
        case O_REP: rp.sample.repetition_penalty = strtof(optarg, NULL); break;
        case O_STATS: stats = optarg; break;
        case O_KV: kv = optarg; break;
        case O_NOPC: ep.prefix_cache = false; break;
        case O_IGN: rp.ignore_eos = true; break;
        case O_NOSP: no_special = true; break;
        case O_CHAT: chat = true; break;
        case O_TMPL: tmpl_file = optarg; chat = true; break;
        case O_KW: kwargs = optarg; chat = true; break;
        case O_XC: ep.expert_cache = optarg; break;
        case O_HC: ep.host_cache = optarg; break;
        case O_XFORCE: ep.store_always = true; break;
        case O_PRED: ep.predictor = optarg; break;
        case O_LA: ep.lookahead = atoi(optarg); break;
        case O_KP: ep.k_pred = atoi(optarg); break;
        case O_PFB: ep.prefetch_budget = strtod(optarg, NULL); break;
        case O_PFD: ep.prefetch_depth = atoi(optarg); break;
        case O_PGI:
            if (!strcmp(optarg, "input")) ep.pregate_input = true;
            else if (!strcmp(optarg, "attention")) ep.pregate_input = false;
            else {
                fprintf(stderr, "moed: --pregate-at: attention or input, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_TRACE: ep.trace_routing = optarg; break;
        case O_IO:
            if (!strcmp(optarg, "io_uring")) ep.io = XS_IO_URING;
            else if (!strcmp(optarg, "pread")) ep.io = XS_IO_PREAD;
            else {
                fprintf(stderr, "moed: --io: io_uring or pread, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_SCHED:
            if (!strcmp(optarg, "fcfs")) ep.sched = ENG_SCHED_FCFS;
            else if (!strcmp(optarg, "regroup")) ep.sched = ENG_SCHED_REGROUP;
            else {
                fprintf(stderr, "moed: --sched: fcfs or regroup, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_MAXSKIP: ep.max_skip = atoi(optarg); break;
        case O_STEPSEQS: ep.step_seqs = atoi(optarg); break;
        case O_UNSUP:
            fprintf(stderr, "moed: --%s: choosing where cold experts run needs the GPU backend "
                            "(on the CPU backend every expert runs on the CPU)\n",
                    li >= 0 ? lo[li].name : "?");
            return 2;
        default: return 2;
        }
    }
    if (!ep.model_path || n_predict < 0) {
        fprintf(stderr, "usage: moed run -m MODEL [-p PROMPT] [-n N] [--temp T] [--seed S] [-t THREADS]\n"
                        "       [-c CTX] [-b BATCH] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]\n"
                        "       [--kv-type f32|f16|q8_0] [--ignore-eos] [--no-special] [--stats-json FILE] [-v]\n"
                        "       [--expert-cache S] [--sched fcfs|regroup] [--max-skip N] [--step-seqs N]\n"
                        "       [--chat [--chat-template FILE] [--chat-kwargs JSON]]\n"
                        "       [--expert-cache S] [--io io_uring|pread] [--predictor none|pregate|path|combined]\n"
                        "       [--lookahead N] [--prefetch-depth N] [--k-pred N] [--prefetch-budget F] [--pregate-at attention|input]\n"
                        "       [--trace-routing FILE]\n"
                        "reads the prompt from stdin when -p is not given; --chat sends it as one user message\n"
                        "through the chat template and prints the answer (reasoning goes to stderr)\n");
        return 2;
    }
    if (kv) {
        if (!strcmp(kv, "f32")) ep.kv_type = BE_TYPE_F32;
        else if (!strcmp(kv, "f16")) ep.kv_type = BE_TYPE_F16;
        else if (!strcmp(kv, "q8_0")) ep.kv_type = BE_TYPE_Q8_0;
        else {
            fprintf(stderr, "moed: --kv-type: f32, f16 or q8_0, not '%s'\n", kv);
            return 2;
        }
    }
    if (!verbose)
        log_set_level(LOG_LEVEL_WARN);
    size_t plen = 0;
    char *ptext = prompt ? strdup(prompt) : read_all(stdin, &plen);
    if (!ptext)
        return 1;
    if (prompt)
        plen = strlen(ptext);

    char err[1024];
    struct engine *e = NULL;
    int rc = eng_init(&e, &ep, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "moed: %s\n", err);
        free(ptext);
        return 1;
    }
    if (chat) {
        char *rendered = render_chat(e, ptext, tmpl_file, kwargs, &rp);
        free(ptext);
        if (!rendered) {
            eng_free(e);
            return 1;
        }
        ptext = rendered;
        plen = strlen(ptext);
    }
    struct vocab_encode_opts eo = vocab_encode_opts_default();
    eo.parse_special = !no_special;
    struct vocab_tokens toks = {0};
    double t_tok0 = now_s();
    rc = vocab_encode(eng_vocab(e), ptext, plen, &eo, &toks);
    double t_tok = now_s() - t_tok0;
    free(ptext);
    if (rc < 0 || toks.n == 0) {
        fprintf(stderr, "moed: the prompt gives no tokens to start from\n");
        vocab_tokens_free(&toks);
        eng_free(e);
        return 1;
    }
    if ((int64_t)toks.n + n_predict > eng_ctx_size(e)) {
        int32_t room = eng_ctx_size(e) - (int32_t)toks.n;
        if (room <= 0) {
            fprintf(stderr, "moed: the prompt (%zu tokens) does not fit the context (%d)\n", toks.n,
                    eng_ctx_size(e));
            vocab_tokens_free(&toks);
            eng_free(e);
            return 1;
        }
        n_predict = room;
    }
    rp.max_tokens = n_predict;
    if (n_predict == 0) {
        vocab_tokens_free(&toks);
        eng_free(e);
        return 0;
    }
    struct waiter w = {.ready = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    struct eng_req *r = NULL;
    rc = eng_submit(e, toks.ids, (int32_t)toks.n, &rp, on_notify, &w, &r);
    free(g_think_start); /* eng_submit copied them */
    free(g_think_end);
    g_think_start = g_think_end = NULL;
    if (rc < 0) {
        fprintf(stderr, "moed: cannot start the request: %s\n", err_str(rc));
        vocab_tokens_free(&toks);
        eng_free(e);
        return 1;
    }
    struct eng_usage usage = {0};
    enum eng_finish fin = ENG_FINISH_NONE;
    bool done = false;
    rc = 0;
    while (!done) {
        pthread_mutex_lock(&w.mu);
        while (!w.ready)
            pthread_cond_wait(&w.cv, &w.mu);
        w.ready = false;
        pthread_mutex_unlock(&w.mu);
        struct eng_event ev;
        while (eng_poll(r, &ev) == 0) {
            if (ev.type == ENG_EV_DELTA) {
                fwrite(ev.reasoning ? ev.reasoning : "", 1, ev.reasoning_len, chat ? stderr : stdout);
                fwrite(ev.text ? ev.text : "", 1, ev.text_len, stdout);
                fflush(stdout);
            } else if (ev.type == ENG_EV_DONE) {
                usage = ev.usage;
                fin = ev.finish;
                done = true;
            } else {
                fprintf(stderr, "\nmoed: generation failed: %s\n", ev.errmsg);
                rc = 1;
                done = true;
            }
            eng_event_clear(&ev);
        }
    }
    eng_release(r);
    struct eng_metrics met;
    eng_get_metrics(e, &met);
    double t_prompt = usage.t_first_token - usage.t_queue;
    double t_gen = usage.t_total - usage.t_first_token;
    int32_t n_after_first = usage.completion_tokens > 0 ? usage.completion_tokens - 1 : 0;
    fprintf(stderr, "\nmoed: prompt %d tokens in %.3f s (%.2f tokens/s), generation %d tokens in %.3f s "
                    "(%.2f tokens/s), finish %s\n",
            usage.prompt_tokens, t_prompt, t_prompt > 0 ? usage.prompt_tokens / t_prompt : 0.0,
            usage.completion_tokens, t_gen, t_gen > 0 ? n_after_first / t_gen : 0.0,
            fin == ENG_FINISH_STOP ? "stop" : fin == ENG_FINISH_LENGTH ? "length" : "canceled");
    const struct xs_stats *xs = &met.xs;
    const uint64_t lookups = xs->hits + xs->hits_loading + xs->misses;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (verbose && met.expert_store) {
        char lat[256];
        size_t n = 0;
        for (int i = 0; i < XS_LAT_BUCKETS; i++)
            if (xs->lat_hist[i])
                n += (size_t)snprintf(lat + n, n < sizeof lat ? sizeof lat - n : 0, " <%gms:%llu",
                                      0.064 * (double)(1u << i), (unsigned long long)xs->lat_hist[i]);
        fprintf(stderr,
                "moed: expert cache: %u slots (%.1f MiB, %s%s), hit rate %.1f%% (%llu hits, %llu while loading, "
                "%llu misses), %llu loads (%.1f MiB read, %.2f ms mean), %llu failed, %llu retries, "
                "stall %.3f s (%.2f ms per generated token), evictions %llu, load latency%s\n",
                xs->slots, (double)xs->device_bytes / 1048576.0, xs->uring ? "io_uring" : "pread",
                xs->odirect ? ", O_DIRECT" : ", buffered", lookups ? 100.0 * (double)xs->hits / (double)lookups : 0.0,
                (unsigned long long)xs->hits, (unsigned long long)xs->hits_loading,
                (unsigned long long)xs->misses, (unsigned long long)xs->loads, (double)xs->bytes_disk / 1048576.0,
                xs->loads ? 1e3 * xs->load_seconds / (double)xs->loads : 0.0,
                (unsigned long long)xs->load_failures, (unsigned long long)xs->read_retries, xs->stall_seconds,
                usage.completion_tokens ? 1e3 * xs->stall_seconds / usage.completion_tokens : 0.0,
                (unsigned long long)xs->evictions, n ? lat : " -");
    }
    if (verbose && met.predicting) {
        fprintf(stderr, "moed: predictor %s: prefetches %llu issued, %llu used, %llu late, %llu wasted; pre-gating %.3f s, "
                        "merging %.3f s;", ep.predictor, (unsigned long long)xs->prefetch_issued,
                (unsigned long long)xs->prefetch_used, (unsigned long long)xs->prefetch_late,
                (unsigned long long)xs->prefetch_wasted, met.pregate_seconds, met.predict_seconds);
        for (int32_t d = 1; d <= met.lookahead && d <= ENG_MAX_LOOKAHEAD; d++)
            fprintf(stderr, " d=%d precision %.3f recall %.3f", d,
                    met.pred_d[d - 1].precision,
                    met.pred_d[d - 1].recall);
        fprintf(stderr, "\n");
    }
    if (stats) {
        const struct plan *pl = eng_plan(e);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "prompt_tokens", usage.prompt_tokens);
        cJSON_AddNumberToObject(j, "completion_tokens", usage.completion_tokens);
        cJSON_AddNumberToObject(j, "cached_tokens", usage.cached_tokens);
        cJSON_AddStringToObject(j, "finish_reason",
                                fin == ENG_FINISH_STOP ? "stop" : fin == ENG_FINISH_LENGTH ? "length" : "canceled");
        cJSON_AddNumberToObject(j, "tokenize_s", t_tok);
        cJSON_AddNumberToObject(j, "queue_s", usage.t_queue);
        cJSON_AddNumberToObject(j, "prompt_s", t_prompt);
        cJSON_AddNumberToObject(j, "generation_s", t_gen);
        cJSON_AddNumberToObject(j, "total_s", usage.t_total);
        cJSON_AddNumberToObject(j, "prompt_tokens_per_s", t_prompt > 0 ? usage.prompt_tokens / t_prompt : 0.0);
        cJSON_AddNumberToObject(j, "generation_tokens_per_s", t_gen > 0 ? n_after_first / t_gen : 0.0);
        cJSON_AddNumberToObject(j, "peak_rss_bytes", (double)ru.ru_maxrss * 1024.0);
        cJSON *en = cJSON_AddObjectToObject(j, "engine");
        cJSON_AddNumberToObject(en, "steps", (double)met.steps);
        cJSON_AddNumberToObject(en, "step_tokens", (double)met.step_tokens);
        cJSON_AddNumberToObject(en, "preemptions", (double)met.preemptions);
        cJSON_AddNumberToObject(en, "kv_blocks", met.kv_blocks);
        cJSON_AddNumberToObject(en, "kv_used", met.kv_used);
        cJSON_AddNumberToObject(en, "kv_cached", met.kv_cached);
        const struct eng_sched_stats *ss = &met.sched;
        cJSON *sc = cJSON_AddObjectToObject(j, "scheduler");
        cJSON_AddStringToObject(sc, "policy", ep.sched == ENG_SCHED_REGROUP ? "regroup" : "fcfs");
        cJSON_AddNumberToObject(sc, "max_skip", ss->max_skip);
        cJSON_AddNumberToObject(sc, "steps_fcfs", (double)ss->steps_fcfs);
        cJSON_AddNumberToObject(sc, "steps_regroup", (double)ss->steps_regroup);
        cJSON_AddNumberToObject(sc, "steps_chosen", (double)ss->steps_chosen);
        cJSON_AddNumberToObject(sc, "seq_skips", (double)ss->seq_skips);
        cJSON_AddNumberToObject(sc, "forced", (double)ss->forced);
        cJSON_AddNumberToObject(sc, "unknown_picks", (double)ss->unknown_picks);
        cJSON_AddNumberToObject(sc, "max_wait_steps", ss->max_wait_steps);
        cJSON_AddNumberToObject(sc, "admit_regrouped", (double)ss->admit_regrouped);
        cJSON_AddNumberToObject(sc, "max_admit_overtaken", ss->max_admit_overtaken);
        cJSON_AddNumberToObject(sc, "admit_bound", ss->admit_bound);
        cJSON_AddNumberToObject(sc, "moe_layer_steps", (double)ss->layer_steps);
        cJSON_AddNumberToObject(sc, "distinct_experts_per_layer_step",
                                ss->layer_steps ? (double)ss->distinct_sum / (double)ss->layer_steps : 0.0);
        cJSON_AddNumberToObject(sc, "uniform_experts_per_layer_step",
                                ss->layer_steps ? ss->uniform_sum / (double)ss->layer_steps : 0.0);
        cJSON_AddNumberToObject(sc, "decode_moe_layer_steps", (double)ss->decode_layer_steps);
        cJSON_AddNumberToObject(sc, "decode_distinct_experts_per_layer_step",
                                ss->decode_layer_steps ? (double)ss->decode_distinct_sum / (double)ss->decode_layer_steps
                                                       : 0.0);
        cJSON_AddNumberToObject(sc, "decode_uniform_experts_per_layer_step",
                                ss->decode_layer_steps ? ss->decode_uniform_sum / (double)ss->decode_layer_steps : 0.0);
        cJSON *dl = cJSON_AddArrayToObject(sc, "distinct_experts_le");
        cJSON *dc = cJSON_AddArrayToObject(sc, "distinct_experts_count");
        for (int i = 0; i < ENG_DISTINCT_BUCKETS; i++) {
            cJSON_AddItemToArray(dl, i < ENG_DISTINCT_BUCKETS - 1 ? cJSON_CreateNumber(eng_distinct_le(i))
                                                                  : cJSON_CreateString("+Inf"));
            cJSON_AddItemToArray(dc, cJSON_CreateNumber((double)ss->distinct_hist[i]));
        }
        cJSON *mp = cJSON_AddObjectToObject(j, "memory_plan");
        cJSON_AddNumberToObject(mp, "limit_bytes", (double)pl->limit);
        cJSON_AddNumberToObject(mp, "available_bytes", (double)pl->available);
        cJSON_AddNumberToObject(mp, "weights_bytes", (double)pl->weights);
        cJSON_AddNumberToObject(mp, "kv_bytes", (double)pl->kv);
        cJSON_AddNumberToObject(mp, "reserve_bytes", (double)pl->reserve);
        cJSON_AddNumberToObject(mp, "expert_bytes", (double)pl->expert_bytes);
        cJSON_AddBoolToObject(mp, "experts_resident", pl->experts_resident);
        cJSON_AddNumberToObject(mp, "expert_cache_bytes", (double)pl->device_slot_bytes);
        cJSON_AddNumberToObject(mp, "expert_cache_slots", pl->device_slots);
        cJSON_AddNumberToObject(mp, "total_bytes", (double)pl->total);
        cJSON *cc = cJSON_AddObjectToObject(j, "cache");
        cJSON_AddBoolToObject(cc, "enabled", met.expert_store);
        if (met.expert_store) {
            cJSON_AddStringToObject(cc, "io", xs->uring ? "io_uring" : "pread");
            cJSON_AddBoolToObject(cc, "o_direct", xs->odirect);
            cJSON_AddNumberToObject(cc, "slots", xs->slots);
            cJSON_AddNumberToObject(cc, "slots_ready", xs->slots_ready);
            cJSON_AddNumberToObject(cc, "device_hits", (double)xs->hits);
            cJSON_AddNumberToObject(cc, "device_hits_loading", (double)xs->hits_loading);
            cJSON_AddNumberToObject(cc, "device_misses", (double)xs->misses);
            cJSON_AddNumberToObject(cc, "host_hits", 0);
            cJSON_AddNumberToObject(cc, "host_misses", 0);
            cJSON_AddNumberToObject(cc, "hit_rate", lookups ? (double)xs->hits / (double)lookups : 0.0);
            cJSON_AddNumberToObject(cc, "loads", (double)xs->loads);
            cJSON_AddNumberToObject(cc, "load_failures", (double)xs->load_failures);
            cJSON_AddNumberToObject(cc, "read_retries", (double)xs->read_retries);
            cJSON_AddNumberToObject(cc, "bytes_disk_to_device", (double)xs->bytes_disk);
            cJSON_AddNumberToObject(cc, "bytes_disk_to_host", 0);
            cJSON_AddNumberToObject(cc, "bytes_host_to_device", 0);
            cJSON_AddNumberToObject(cc, "expert_bytes_loaded", (double)xs->bytes_useful);
            cJSON_AddNumberToObject(cc, "load_seconds", xs->load_seconds);
            cJSON_AddNumberToObject(cc, "stall_seconds", xs->stall_seconds);
            cJSON_AddNumberToObject(cc, "io_busy_seconds", xs->io_busy_seconds);
            cJSON_AddNumberToObject(cc, "read_gb_per_s",
                                    xs->io_busy_seconds > 0 ? (double)xs->bytes_disk / xs->io_busy_seconds / 1e9 : 0.0);
            cJSON_AddNumberToObject(cc, "evictions", (double)xs->evictions);
            cJSON_AddNumberToObject(cc, "expert_waves", (double)met.expert_waves);
            cJSON_AddNumberToObject(cc, "moe_layer_steps", (double)met.moe_layer_steps);
            cJSON *h = cJSON_AddArrayToObject(cc, "load_latency_us_le");
            cJSON *hv = cJSON_AddArrayToObject(cc, "load_latency_count");
            for (int i = 0; i < XS_LAT_BUCKETS; i++) {
                cJSON_AddItemToArray(h, cJSON_CreateNumber(64.0 * (double)(1u << i)));
                cJSON_AddItemToArray(hv, cJSON_CreateNumber((double)xs->lat_hist[i]));
            }
        }
        cJSON *pj = cJSON_AddObjectToObject(j, "predictor");
        cJSON_AddStringToObject(pj, "mode", met.predicting ? (ep.predictor ? ep.predictor : "none") : "none");
        cJSON_AddNumberToObject(pj, "lookahead", met.lookahead);
        cJSON_AddNumberToObject(pj, "pregate_seconds", met.pregate_seconds);
        cJSON_AddNumberToObject(pj, "predict_seconds", met.predict_seconds);
        cJSON_AddNumberToObject(pj, "prefetch_issued", (double)xs->prefetch_issued);
        cJSON_AddNumberToObject(pj, "prefetch_used", (double)xs->prefetch_used);
        cJSON_AddNumberToObject(pj, "prefetch_late", (double)xs->prefetch_late);
        cJSON_AddNumberToObject(pj, "prefetch_wasted", (double)xs->prefetch_wasted);
        cJSON *pd = cJSON_AddArrayToObject(pj, "by_distance");
        for (int32_t d = 1; d <= met.lookahead && d <= ENG_MAX_LOOKAHEAD; d++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "d", d);
            cJSON_AddNumberToObject(o, "precision", met.pred_d[d - 1].precision);
            cJSON_AddNumberToObject(o, "recall", met.pred_d[d - 1].recall);
            cJSON *rl = cJSON_AddArrayToObject(o, "recall_by_layer");
            for (int32_t l = 0; l < (int32_t)eng_model(e)->hp.n_layer; l++) {
                double pr, rc2;
                if (eng_pred_score(e, (uint32_t)d, l, &pr, &rc2) == 0)
                    cJSON_AddItemToArray(rl, cJSON_CreateNumber(rc2));
            }
            cJSON_AddItemToArray(pd, o);
        }
        cJSON_AddNumberToObject(pj, "trace_tokens", (double)met.trace_tokens);
        char *txt = cJSON_Print(j);
        cJSON_Delete(j);
        FILE *f = fopen(stats, "w");
        if (!f || !txt) {
            fprintf(stderr, "moed: %s: %s\n", stats, strerror(errno));
            rc = 1;
            if (f)
                fclose(f);
        } else {
            fputs(txt, f);
            fputc('\n', f);
            if (fclose(f) != 0)
                rc = 1;
        }
        free(txt);
    }
    vocab_tokens_free(&toks);
    eng_free(e);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}
