/*
 * server.c: a fixed pool of worker threads serving one FastCGI socket.
 *
 * Design notes:
 * - Every worker calls FCGX_Accept_r on the shared socket with no mutex:
 *   Linux accept() is thread-safe, and libfcgi's example mutex would also
 *   cover the params read, so one slow peer would stall the process.
 * - A worker owns its struct db (one MySQL connection: a named lock belongs
 *   to a session, so it must be released on the connection that took it).
 * - A claim may be parked (routes.c, inflight.c): the worker hands its
 *   request to the leading claim and takes a fresh one.
 * - Stopping: main sets `stopping`, tells libfcgi (FCGX_ShutdownPending),
 *   replaces the listening descriptor with a dead socket in this process
 *   (stop_accepting: libfcgi's accept loop would otherwise keep taking new
 *   connections as long as nginx sends them), and then sends SIGUSR1 to
 *   the workers still waiting in accept on the old socket: with
 *   FCGI_FAIL_ACCEPT_ON_INTR the accept fails with EINTR and the worker
 *   sees the flag.  Busy workers finish their request first.  The listening
 *   socket itself is never shut down: on fd 0 it is shared with spawn-fcgi
 *   siblings or systemd.
 */
#include "server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>

#include <fcgiapp.h>

#include "db.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "routes.h"
#include "util.h"

#define ACCEPT_PAUSE_NS 100000000L /* after a failed accept */
#define KICK_DELAY_US 100000         /* between SIGUSR1s to idle workers */

struct worker {
    int id;
    pthread_t thread;
    struct server *srv;
    struct http_request *req; /* NULL after it was parked */
    struct db *db;
    atomic_bool idle;         /* waiting in accept: safe to interrupt */
    bool joined;
};

struct server {
    const struct config *cfg;
    int listen_fd;
    long nworkers;
    atomic_bool stopping;
    struct worker workers[];
};

static void serve_one(struct worker *w, const struct route_ctx *ctx)
{
    metrics_busy(1);
    if (routes_dispatch(ctx, w->req) == ROUTE_PARKED)
        w->req = NULL; /* its leader answers and frees it */
    else
        http_finish(w->req);
    metrics_busy(-1);
    if (db_locks_held(w->db) != 0) {
        log_msg(LOG_ERROR, "bug: worker %d holds a named lock after a "
                           "request", w->id);
        abort();
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct server *s = w->srv;
    struct route_ctx ctx;
    int rc;

    w->db = db_new(s->cfg);
    ctx.db = w->db;
    ctx.cfg = s->cfg;
    while (!atomic_load(&s->stopping)) {
        if (!w->req)
            w->req = http_request_new(s->listen_fd);
        atomic_store(&w->idle, true);
        if (atomic_load(&s->stopping))
            break;
        rc = http_accept(w->req);
        atomic_store(&w->idle, false);
        if (rc == 0) {
            serve_one(w, &ctx);
            continue;
        }
        if (atomic_load(&s->stopping) || rc == -EINTR)
            continue;
        /* EMFILE, ENOMEM, ...: transient, never a reason to die */
        metrics_inc(METRIC_accept_errors);
        log_msg(LOG_ERROR, "worker %d: accept failed: %s", w->id,
                strerror(-rc));
        nanosleep(&(struct timespec){0, ACCEPT_PAUSE_NS}, NULL);
    }
    atomic_store(&w->idle, false);
    http_request_free(w->req);
    w->req = NULL;
    db_free(w->db);
    return NULL;
}

struct server *server_start(const struct config *cfg, int listen_fd)
{
    struct server *s;
    long i;
    int err;

    s = calloc(1, sizeof(*s) + (size_t)cfg->threads * sizeof(struct worker));
    if (!s)
        abort();
    s->cfg = cfg;
    s->listen_fd = listen_fd;
    for (i = 0; i < cfg->threads; i++) {
        struct worker *w = &s->workers[i];

        w->id = (int)i;
        w->srv = s;
        err = pthread_create(&w->thread, NULL, worker_main, w);
        if (err) {
            log_msg(LOG_ERROR, "pthread_create() failed: %s", strerror(err));
            atomic_store(&s->stopping, true);
            break;
        }
        s->nworkers++;
    }
    metrics_set_threads(s->nworkers);
    if (s->nworkers < cfg->threads) {
        server_stop(s, util_now_us() + 5000000);
        return NULL;
    }
    return s;
}

/*
 * Take the listening socket away from this process only: dup2 an unbound,
 * non-listening socket over its descriptor, so that every later accept()
 * here fails (EINVAL) while the socket itself stays open for whoever else
 * holds it (spawn-fcgi -F siblings, systemd).  shutdown() would break it
 * for all of them.
 */
static void stop_accepting(int listen_fd)
{
    int dummy = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (dummy < 0 || dup2(dummy, listen_fd) < 0)
        log_msg(LOG_WARN, "cannot detach the listening socket: %s",
                strerror(errno));
    if (dummy >= 0)
        close(dummy);
}

int server_stop(struct server *s, int64_t deadline_us)
{
    int64_t next_kick = util_now_us() + KICK_DELAY_US;
    long i, left;

    atomic_store(&s->stopping, true);
    FCGX_ShutdownPending();
    stop_accepting(s->listen_fd);
    do {
        bool kick = util_now_us() >= next_kick;

        left = 0;
        for (i = 0; i < s->nworkers; i++) {
            struct worker *w = &s->workers[i];

            if (w->joined)
                continue;
            /*
             * A worker still waiting in accept() on the old socket: wake
             * it.  Not at once and not often: one that has just accepted a
             * connection and is reading its params (also "idle" to us)
             * would lose that request to the EINTR.
             */
            if (kick && atomic_load(&w->idle))
                pthread_kill(w->thread, SIGUSR1);
            if (pthread_tryjoin_np(w->thread, NULL) == 0)
                w->joined = true;
            else
                left++;
        }
        if (kick)
            next_kick = util_now_us() + KICK_DELAY_US;
        if (left)
            nanosleep(&(struct timespec){0, 10000000L}, NULL);
    } while (left && util_now_us() < deadline_us);
    if (left) {
        log_msg(LOG_ERROR, "%ld workers did not stop in time", left);
        return -1;
    }
    free(s);
    return 0;
}
