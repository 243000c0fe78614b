/* SPDX-License-Identifier: MIT */
/*
 * serve.c - `moed serve`: configuration, the loop, loading the model off
 * the loop thread, signals (SIGTERM/SIGINT drain, SIGHUP reopens the log),
 * systemd's readiness protocol, and the once-a-second tick.
 *
 * The server listens before the model is loaded, so /health answers 503
 * with progress while loading and 200 when ready. The engine is freed only
 * after every connection (and so every engine request) is gone, and the
 * wake handle only after the engine, whose thread sends to it.
 */
#include "server/impl.h"
#include "server/serve.h"

#include "common/err.h"
#include "common/log.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/vocab.h"
#include "kernels/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

double srv_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int srv_json_depth(const char *s, size_t n)
{
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                max = depth;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return max;
}

/* ---- systemd notify (sd_notify's datagram protocol, no library) ---- */

static void sd_notify_msg(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t pl = strlen(path);
    memcpy(a.sun_path, path, pl);
    if (a.sun_path[0] == '@')
        a.sun_path[0] = 0; /* abstract namespace */
    socklen_t al = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + pl);
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&a, al) < 0)
        log_debug("server", "NOTIFY_SOCKET: %s", strerror(errno));
    close(fd);
}

/* ---- loading ---- */

struct load_job {
    uv_work_t w;
    struct srv *s;
    struct engine *e;
    struct chat_template *tmpl;
    char *tmpl_error;
    int rc;
    char err[1024];
};

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        char *nb = realloc(b, cap * 2);
        if (!nb)
            free(b);
        b = nb;
        cap *= 2;
    }
    fclose(f);
    if (b)
        b[n] = 0;
    else
        snprintf(err, errlen, "%s: out of memory", path);
    return b;
}

static void load_work(uv_work_t *w)
{
    struct load_job *j = w->data;
    const struct app_config *c = j->s->cfg;
    struct eng_params ep = c->eng;
    ep.model_path = c->srv.model_path;
    j->rc = eng_init(&j->e, &ep, j->err, sizeof j->err);
    if (j->rc < 0)
        return;
    char err[512];
    const char *src = NULL, *name = "tokenizer.chat_template";
    char *file_src = NULL;
    if (c->srv.chat_template) {
        name = c->srv.chat_template;
        if (!(file_src = read_file(name, err, sizeof err))) {
            j->tmpl_error = strdup(err);
            return;
        }
        src = file_src;
    } else if (gguf_get_str(eng_model(j->e)->gguf, "tokenizer.chat_template", &src) < 0) {
        j->tmpl_error = strdup("the model has no tokenizer.chat_template (pass --chat-template FILE)");
        return;
    }
    if (chat_template_init(&j->tmpl, src, name, err, sizeof err) < 0)
        j->tmpl_error = strdup(err);
    free(file_src);
}

static bool g_loading; /* the model is being loaded on the pool */

static void shutdown_now(struct srv *s);

static void log_memory_plan(const struct srv *s)
{
    char buf[1024];
    plan_format(eng_plan(s->engine), buf, sizeof buf);
    log_info("server", "memory plan:\n%s", buf);
}

static void load_done(uv_work_t *w, int status)
{
    struct load_job *j = w->data;
    struct srv *s = j->s;
    g_loading = false;
    if (j->rc < 0) {
        log_err("server", "cannot load the model: %s", j->err);
        s->load_error = j->rc;
        s->exit_code = 1;
        free(j);
        shutdown_now(s);
        return;
    }
    s->engine = j->e;
    s->vocab = eng_vocab(j->e);
    s->tmpl = j->tmpl;
    s->tmpl_error = j->tmpl_error;
    free(j);
    s->t_ready = srv_now();
    if (s->tmpl_error)
        log_warn("server", "chat completions are unavailable: %s", s->tmpl_error);
    log_memory_plan(s);
    log_info("server", "model %s loaded in %.2f s; serving it as '%s' on %s", s->cfg->srv.model_path,
             s->t_ready - s->t_load_start, s->model_id, s->bound);
    if (s->draining) {
        shutdown_now(s);
        return;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "READY=1\nSTATUS=serving %s on %s", s->model_id, s->bound);
    sd_notify_msg(msg);
}

/* ---- lifetime ---- */

static void on_closed(uv_handle_t *h) {}

static void close_handle(uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h))
        uv_close(h, on_closed);
}

static void shutdown_now(struct srv *s)
{
    static bool done;
    if (g_loading) { /* load_done finishes the job */
        s->draining = true;
        return;
    }
    if (done)
        return;
    done = true;
    srv_stop_accepting(s);
    srv_close_all(s); /* releases every engine request */
    srv_openai_abort_all(s);
    eng_free(s->engine);
    s->engine = NULL;
    close_handle((uv_handle_t *)&s->tick);
    close_handle((uv_handle_t *)&s->sig_term);
    close_handle((uv_handle_t *)&s->sig_int);
    close_handle((uv_handle_t *)&s->sig_hup);
    close_handle((uv_handle_t *)&s->wake);
}

static void on_tick(uv_timer_t *t)
{
    struct srv *s = t->data;
    double now = srv_now();
    srv_openai_poll_all(s); /* a lost wake-up costs at most one tick */
    srv_openai_tick(s, now);
    srv_http_tick(s, now);
    if (g_loading)
        sd_notify_msg("EXTEND_TIMEOUT_USEC=10000000\nSTATUS=loading the model");
    if (s->draining && !g_loading) {
        if (s->n_active == 0 && !srv__http_busy(s)) {
            log_info("server", "drained; exiting");
            shutdown_now(s);
        } else if (now - s->t_drain > s->cfg->srv.drain_timeout_s) {
            log_warn("server", "server.drain_timeout_s (%g s) passed with %d requests still running; exiting",
                     s->cfg->srv.drain_timeout_s, s->n_active);
            shutdown_now(s);
        }
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct srv *s = h->data;
    if (signum == SIGHUP) {
        const char *f = s->cfg->srv.log_file;
        if (f) {
            int fd = open(f, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
            if (fd >= 0) {
                log_set_fd(fd);
                if (s->log_fd > 2)
                    close(s->log_fd);
                s->log_fd = fd;
                log_info("server", "SIGHUP: reopened %s", f);
            } else {
                log_err("server", "SIGHUP: cannot reopen %s: %s", f, strerror(errno));
            }
        }
        return;
    }
    if (s->draining) {
        /* A second Ctrl-C means "now"; a repeated SIGTERM (a supervisor and
         * its process group may both send one) changes nothing. */
        if (signum == SIGINT) {
            log_warn("server", "%s again: exiting now", strsignal(signum));
            shutdown_now(s);
        }
        return;
    }
    log_info("server", "%s: no new connections; draining %d requests (up to %g s)", strsignal(signum), s->n_active,
             s->cfg->srv.drain_timeout_s);
    sd_notify_msg("STOPPING=1");
    s->draining = true;
    s->t_drain = srv_now();
    srv_stop_accepting(s);
    uv_timer_start(&s->tick, on_tick, 100, 100);
}

static void on_wake(uv_async_t *a) { srv_openai_poll_all(a->data); }

/* <repo>/build/models/demo.gguf, from <repo>/<build>/moed. */
static char *default_model(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = 0;
    for (int i = 0; i < 2; i++) {
        char *sl = strrchr(exe, '/');
        if (!sl)
            return NULL;
        *sl = 0;
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/build/models/demo.gguf", exe);
    return strdup(path);
}

/* Computing cold
 * experts on the CPU beside a GPU needs the GPU backend: a setting that
 * asks for them is refused rather than silently ignored. */
static int check_supported(const struct app_config *c, char *err, size_t errlen)
{
    if (strcmp(c->cache.cpu_compute, "auto") != 0) {
        snprintf(err, errlen, "cache.cpu_compute: choosing where cold experts run needs the GPU backend; on the "
                              "CPU backend every expert runs on the CPU (leave it at auto)");
        return ERR_CONFIG;
    }
    return 0;
}

int srv_cmd_serve(int argc, char **argv)
{
    struct app_config cfg;
    char err[1024];
    int rc = srv_config_load(&cfg, argc, argv, err, sizeof err);
    if (rc == 0)
        rc = check_supported(&cfg, err, sizeof err);
    /* Test hook (tests/test_cache_server.sh): expert reads that fail. */
    cfg.eng.test_fail = getenv("MOED_TEST_EXPERT_FAIL");
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "moed serve: %s\n", err);
        srv_config_free(&cfg);
        return rc < 0 ? 2 : 0;
    }
    struct srv s = {0};
    s.log_fd = 2;
    enum log_level lvl;
    if (log_level_parse(cfg.srv.log_level, &lvl) == 0)
        log_set_level(lvl);
    if (cfg.srv.log_file) {
        int fd = open(cfg.srv.log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0) {
            fprintf(stderr, "moed serve: log.file %s: %s\n", cfg.srv.log_file, strerror(errno));
            srv_config_free(&cfg);
            return 1;
        }
        log_set_fd(fd);
        s.log_fd = fd;
    }
    if (!cfg.srv.model_path) {
        char *def = default_model();
        struct stat st;
        if (!def || stat(def, &st) != 0) {
            fprintf(stderr, "moed serve: no model given (-m MODEL) and the demo model %s is missing: run "
                            "`make setup` to write it, or pass -m MODEL.gguf\n", def ? def : "build/models/demo.gguf");
            free(def);
            srv_config_free(&cfg);
            return 1;
        }
        cfg.srv.model_path = def;
        log_info("server", "no -m given: serving the demo model %s (random weights: its text is gibberish)", def);
    }
    struct stat st;
    if (stat(cfg.srv.model_path, &st) != 0) {
        fprintf(stderr, "moed serve: model.path %s: %s\n", cfg.srv.model_path, strerror(errno));
        srv_config_free(&cfg);
        return 1;
    }
    srv_config_log(&cfg);
    signal(SIGPIPE, SIG_IGN);

    s.loop = uv_default_loop();
    s.cfg = &cfg;
    s.t_load_start = srv_now();
    s.model_size = (double)st.st_size;
    s.created = (int64_t)time(NULL);
    const char *base = strrchr(cfg.srv.model_path, '/');
    s.model_id = strdup(cfg.srv.model_alias ? cfg.srv.model_alias : base ? base + 1 : cfg.srv.model_path);
    snprintf(s.fingerprint, sizeof s.fingerprint, "fp_moed_%08llx",
             (unsigned long long)((uint64_t)st.st_size ^ (uint64_t)st.st_mtime * 2654435761u) & 0xffffffffull);
    if (!s.model_id || srv_metrics_init(&s.metrics) < 0) {
        fprintf(stderr, "moed serve: out of memory\n");
        srv_config_free(&cfg);
        return 1;
    }
    uv_async_init(s.loop, &s.wake, on_wake);
    s.wake.data = &s;
    uv_timer_init(s.loop, &s.tick);
    s.tick.data = &s;
    uv_signal_init(s.loop, &s.sig_term);
    uv_signal_init(s.loop, &s.sig_int);
    uv_signal_init(s.loop, &s.sig_hup);
    s.sig_term.data = s.sig_int.data = s.sig_hup.data = &s;
    uv_signal_start(&s.sig_term, on_signal, SIGTERM);
    uv_signal_start(&s.sig_int, on_signal, SIGINT);
    uv_signal_start(&s.sig_hup, on_signal, SIGHUP);
    if ((rc = srv_listen(&s)) < 0) {
        s.exit_code = 1;
        shutdown_now(&s);
    } else {
        uv_timer_start(&s.tick, on_tick, 1000, 1000);
        struct load_job *j = calloc(1, sizeof *j);
        s.rchar_at_load = 0;
        FILE *f = fopen("/proc/self/io", "r");
        if (f) {
            char line[128];
            while (fgets(line, sizeof line, f))
                if (strncmp(line, "rchar:", 6) == 0)
                    s.rchar_at_load = strtod(line + 6, NULL);
            fclose(f);
        }
        if (!j) {
            s.exit_code = 1;
            shutdown_now(&s);
        } else {
            j->s = &s;
            j->w.data = j;
            g_loading = true;
            log_info("server", "loading %s", cfg.srv.model_path);
            sd_notify_msg("STATUS=loading the model");
            if (uv_queue_work(s.loop, &j->w, load_work, load_done) < 0) {
                g_loading = false;
                free(j);
                s.exit_code = 1;
                shutdown_now(&s);
            }
        }
    }
    uv_run(s.loop, UV_RUN_DEFAULT);
    uv_loop_close(s.loop);
    chat_template_free(s.tmpl);
    free(s.tmpl_error);
    free(s.model_id);
    srv_metrics_free(s.metrics);
    if (s.log_fd > 2) {
        log_set_fd(2);
        close(s.log_fd);
    }
    srv_config_free(&cfg);
    return s.exit_code;
}
