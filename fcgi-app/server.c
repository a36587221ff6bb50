/*
 * server.c: a fixed pool of worker threads over the connection layer.
 *
 * - The connection layer (conn.c) accepts and watches connections; a
 *   worker takes one only when a whole request is waiting on it
 *   (conn_next), so neither an idle kept connection nor a slow peer holds
 *   a thread.
 * - A worker owns its struct db (one MySQL connection: a named lock belongs
 *   to a session, so it must be released on the connection that took it).
 * - A claim may be parked (routes.c, inflight.c): the worker hands its
 *   request to the leading claim and takes a fresh one.  A claim over its
 *   user's pace is put aside in the connection layer (conn_park) the same
 *   way; conn_next hands it back to any worker when its time comes.
 * - Stopping: conn_stop stops accepting and closes idle connections; the
 *   workers serve what is queued or still arriving, then conn_next returns
 *   -1 and they leave.  The listening socket itself is never shut down: on
 *   fd 0 it is shared with spawn-fcgi siblings or systemd.
 */
#include "server.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "routes.h"
#include "util.h"

struct worker {
    int id;
    pthread_t thread;
    struct server *srv;
    struct http_request *req; /* NULL after it was parked */
    struct db *db;
    bool joined;
};

struct server {
    const struct config *cfg;
    struct conn_layer *conns;
    long nworkers;
    struct worker workers[];
};

/* r: the worker's own request, or one put aside that came back (freed). */
static void serve_one(struct worker *w, const struct route_ctx *ctx,
                      struct http_request *r)
{
    metrics_busy(1);
    if (r != w->req) {
        if (routes_resume(ctx, r) != ROUTE_PARKED)
            http_request_free(r); /* finishes it */
    } else if (routes_dispatch(ctx, r) == ROUTE_PARKED) {
        w->req = NULL; /* its leader, or the layer, has it now */
    } else {
        http_finish(r);
    }
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
    struct park_entry *back;
    int64_t arrived;
    int fd;

    w->db = db_new(s->cfg);
    ctx.db = w->db;
    ctx.cfg = s->cfg;
    while ((fd = conn_next(s->conns, &arrived, &back)) != -1) {
        if (back) {
            serve_one(w, &ctx,
                      UTIL_CONTAINER_OF(back, struct http_request, park));
            continue;
        }
        if (!w->req)
            w->req = http_request_new(s->conns);
        if (http_accept(w->req, fd, arrived) == 0)
            serve_one(w, &ctx, w->req);
    }
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
    s->conns = conn_start(cfg, listen_fd, cfg->threads);
    if (!s->conns) {
        free(s);
        return NULL;
    }
    for (i = 0; i < cfg->threads; i++) {
        struct worker *w = &s->workers[i];

        w->id = (int)i;
        w->srv = s;
        err = pthread_create(&w->thread, NULL, worker_main, w);
        if (err) {
            log_msg(LOG_ERROR, "pthread_create() failed: %s", strerror(err));
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

int server_stop(struct server *s, int64_t deadline_us)
{
    long i, left;

    conn_stop(s->conns);
    do {
        left = 0;
        for (i = 0; i < s->nworkers; i++) {
            struct worker *w = &s->workers[i];

            if (w->joined)
                continue;
            if (pthread_tryjoin_np(w->thread, NULL) == 0)
                w->joined = true;
            else
                left++;
        }
        if (left)
            nanosleep(&(struct timespec){0, 10000000L}, NULL);
    } while (left && util_now_us() < deadline_us);
    if (left) {
        log_msg(LOG_ERROR, "%ld workers did not stop in time", left);
        return -1;
    }
    conn_free(s->conns);
    free(s);
    return 0;
}
