/*
 * conn.c: the connection layer (conn.h): one epoll loop thread that owns
 * every connection no worker is serving, and a queue of connections that
 * hold a whole request.
 *
 * Every open connection is in exactly one place: watched by the loop (a
 * slot in one of its lists: arriving, idle, closing, or parked: put aside
 * until a time, conn_park.c), in the ready queue or the list of parked
 * requests due, or with a worker (served, or parked behind a claim of the
 * same user).  `open` counts them all.  The loop and the workers share one
 * mutex; it is held for list and queue updates and for a peek at a socket,
 * never while waiting.  Connections are registered edge-triggered, so a
 * request that is still arriving wakes the loop once per new segment, not
 * in a spin.
 *
 * A connection the front asked us to close (no FCGI_KEEP_CONN) is closed
 * the way libfcgi and nginx do it, lingering: shut down our sending side,
 * then read and drop what the peer still sends until it closes or
 * LINGER_US pass, so that a TCP reset cannot destroy the answer in flight.
 * Here the loop does the waiting, not a worker.  A unix socket has no
 * resets: it is just closed.
 */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>


#include "conn_int.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define EVENTS_MAX 256
#define ACCEPT_BATCH 64        /* accepts per wake-up, then other events */
#define ACCEPT_PAUSE_US 100000 /* after EMFILE and the like */
#define LINGER_US 2000000      /* libfcgi's LIBFCGI_OS_CLOSE_POLL_TIMEOUT */
#define LIMIT_LOG_US 60000000  /* one "limit reached" line a minute */
#define FD_RESERVE 64          /* descriptors besides connections and DB */
#define TICK_MS 1000           /* the longest sleep of the loop */
#define DRAIN_US 500000        /* at stop: kept connections' last requests */

static void list_push(struct conn_layer *l, enum slot_state st, int fd)
{
    struct fd_list *q = &l->lists[st];
    struct slot *s = &l->slots[fd];

    s->state = (unsigned char)st;
    s->since_us = util_now_us();
    s->prev = q->tail;
    s->next = -1;
    if (q->tail >= 0)
        l->slots[q->tail].next = fd;
    else
        q->head = fd;
    q->tail = fd;
    q->n++;
}

static void list_del(struct conn_layer *l, int fd)
{
    struct slot *s = &l->slots[fd];
    struct fd_list *q = &l->lists[s->state];

    if (s->prev >= 0)
        l->slots[s->prev].next = s->next;
    else
        q->head = s->next;
    if (s->next >= 0)
        l->slots[s->next].prev = s->prev;
    else
        q->tail = s->prev;
    q->n--;
    s->state = SLOT_FREE;
}

void conn_update_gauges(const struct conn_layer *l)
{
    metrics_set_connections(l->open, l->lists[SLOT_IDLE].n,
                            l->lists[SLOT_PARKED].n);
}

static void set_listening(struct conn_layer *l, bool on)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE,
                             .data.fd = l->listen_fd};

    if (on == l->listening)
        return;
    if (epoll_ctl(l->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, l->listen_fd,
                  &ev) < 0) {
        log_msg(LOG_ERROR, "epoll_ctl() on the listening socket failed: %s",
                strerror(errno));
        return;
    }
    l->listening = on;
}

/* Still taking new connections: running, or draining at stop. */
static bool accepting(const struct conn_layer *l)
{
    return !l->stopping || l->draining;
}

/* A connection went away: accepting may resume. */
static void forget(struct conn_layer *l)
{
    l->open--;
    if (accepting(l) && !l->resume_us && l->open < l->max_conns)
        set_listening(l, true);
    conn_update_gauges(l);
}

/* Start watching fd in state st: 0, or a negative errno (fd untouched). */
int conn_try_watch(struct conn_layer *l, int fd, enum slot_state st)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET,
                             .data.fd = fd};

    if (fd >= l->nslots)
        return -EBADF;
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    list_push(l, st, fd);
    conn_update_gauges(l);
    return 0;
}

/* Start watching fd, which the loop now owns, in state st. */
static void watch(struct conn_layer *l, int fd, enum slot_state st)
{
    int rc = conn_try_watch(l, fd, st);

    if (rc < 0) {
        log_msg(LOG_ERROR, "cannot watch connection %d: %s", fd,
                rc == -EBADF ? "descriptor out of range" : strerror(-rc));
        close(fd);
        forget(l);
    }
}

void conn_unwatch(struct conn_layer *l, int fd)
{
    list_del(l, fd);
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void close_watched(struct conn_layer *l, int fd)
{
    conn_unwatch(l, fd);
    close(fd);
    forget(l);
}

static void hand_over(struct conn_layer *l, int fd)
{
    long at = (l->ready_head + l->ready_n) % l->ready_cap;

    /* an idle kept connection's request began now, on this event */
    l->ready_since[at] = l->slots[fd].state == SLOT_IDLE
                             ? util_now_us()
                             : l->slots[fd].since_us;
    conn_unwatch(l, fd);
    l->ready[at] = fd;
    l->ready_n++;
    pthread_cond_signal(&l->ready_cv);
    conn_update_gauges(l);
}

/* Read and drop what a lingering peer sends; close at its EOF. */
static void on_lingering(struct conn_layer *l, int fd)
{
    ssize_t n;

    while ((n = recv(fd, l->window, sizeof(l->window), MSG_DONTWAIT)) > 0)
        ;
    if (n == 0 || (errno != EAGAIN && errno != EINTR))
        close_watched(l, fd);
}

static void on_readable(struct conn_layer *l, int fd, uint32_t events)
{
    struct slot *s = &l->slots[fd];
    ssize_t n;

    if (s->state == SLOT_CLOSING) {
        on_lingering(l, fd);
        return;
    }
    if (s->state == SLOT_PARKED) {
        conn_park_event(l, fd, events);
        return;
    }
    n = recv(fd, l->window, sizeof(l->window), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (events & (EPOLLERR | EPOLLHUP))
            close_watched(l, fd);
        return;
    }
    if (n <= 0) { /* the front closed it, or it broke */
        close_watched(l, fd);
        return;
    }
    switch (conn_scan_request(l->window, (size_t)n, sizeof(l->window))) {
    case CONN_SCAN_COMPLETE:
    case CONN_SCAN_HANDOVER:
        hand_over(l, fd);
        return;
    case CONN_SCAN_REFUSE:
        metrics_inc(METRIC_fastcgi_errors);
        close_watched(l, fd);
        return;
    case CONN_SCAN_PARTIAL:
        break;
    }
    if (events & (EPOLLRDHUP | EPOLLHUP)) { /* no more will come */
        close_watched(l, fd);
        return;
    }
    if (s->state == SLOT_IDLE) { /* a request began: its clock starts */
        list_del(l, fd);
        list_push(l, SLOT_ARRIVING, fd);
        conn_update_gauges(l);
    }
}

/* At the limit: make room by closing the longest idle kept connection. */
static bool make_room(struct conn_layer *l, int64_t now)
{
    int oldest = l->lists[SLOT_IDLE].head;

    metrics_inc(METRIC_connection_limit);
    if (now - l->limit_logged_us >= LIMIT_LOG_US || !l->limit_logged_us) {
        l->limit_logged_us = now;
        log_msg(LOG_WARN, "connection limit reached (%ld open, "
                          "TICKETS_MAX_CONNS): %s", l->open,
                oldest >= 0 ? "closing the longest idle connections"
                            : "not accepting until one closes");
    }
    if (oldest < 0)
        return false;
    close_watched(l, oldest);
    return true;
}

static void accept_some(struct conn_layer *l)
{
    struct sockaddr_storage sa;
    socklen_t len;
    int i, fd;

    for (i = 0; i < ACCEPT_BATCH; i++) {
        if (l->open >= l->max_conns && !make_room(l, util_now_us())) {
            set_listening(l, false);
            return;
        }
        len = sizeof(sa);
        fd = accept4(l->listen_fd, (struct sockaddr *)&sa, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            /* EMFILE, ENFILE, ENOMEM, ...: transient, pause a moment */
            metrics_inc(METRIC_accept_errors);
            log_msg(LOG_ERROR, "accept() failed: %s", strerror(errno));
            set_listening(l, false);
            l->resume_us = util_now_us() + ACCEPT_PAUSE_US;
            return;
        }
        if (!conn_addr_allowed(l->allowed, l->nallowed, &sa)) {
            metrics_inc(METRIC_connections_refused);
            close(fd);
            continue;
        }
        conn_setup_socket(fd, &sa, l->read_timeout_us);
        l->open++;
        metrics_inc(METRIC_connections_accepted);
        watch(l, fd, SLOT_ARRIVING);
    }
}

/* Close what outstayed its deadline; each list is oldest first. */
static void sweep(struct conn_layer *l, int64_t now)
{
    int fd;

    while ((fd = l->lists[SLOT_ARRIVING].head) >= 0 &&
           now - l->slots[fd].since_us >= l->read_timeout_us) {
        metrics_inc(METRIC_read_timeouts);
        close_watched(l, fd);
    }
    while ((fd = l->lists[SLOT_CLOSING].head) >= 0 &&
           now - l->slots[fd].since_us >= LINGER_US)
        close_watched(l, fd);
    while (l->idle_timeout_us && (fd = l->lists[SLOT_IDLE].head) >= 0 &&
           now - l->slots[fd].since_us >= l->idle_timeout_us)
        close_watched(l, fd);
    if (l->resume_us && now >= l->resume_us) {
        l->resume_us = 0;
        if (accepting(l) && l->open < l->max_conns)
            set_listening(l, true);
    }
}

/*
 * The end of a stop's drain: no more new connections; idle kept ones are
 * closed, but one whose next request began arriving stays to be served,
 * like any request in flight.
 */
static void end_drain(struct conn_layer *l)
{
    int fd, next;

    l->draining = false;
    set_listening(l, false);
    for (fd = l->lists[SLOT_IDLE].head; fd >= 0; fd = next) {
        next = l->slots[fd].next;
        on_readable(l, fd, 0);
        if (l->slots[fd].state == SLOT_IDLE)
            close_watched(l, fd);
    }
}

/* Workers may leave: stopping, and nothing left that a worker must serve. */
static bool all_served(const struct conn_layer *l)
{
    return l->stopping && !l->draining && l->ready_n == 0 &&
           l->lists[SLOT_ARRIVING].n == 0 && l->parked.n == 0 &&
           !l->due_head;
}

/* How long the loop may sleep: a tick, less if a parked request is due. */
static int loop_timeout(const struct conn_layer *l, int64_t now)
{
    const struct park_entry *p = park_peek(&l->parked);
    int64_t ms = l->draining ? (l->drain_until_us - now) / 1000 + 1 : TICK_MS;

    if (p && p->due_us - now < ms * 1000) /* rounded up: never early */
        ms = p->due_us <= now ? 0 : (p->due_us - now + 999) / 1000;
    return (int)ms;
}

static void *loop_main(void *arg)
{
    struct conn_layer *l = arg;
    struct epoll_event evs[EVENTS_MAX];
    uint64_t drained;
    int64_t now;
    int i, n, timeout = TICK_MS;

    for (;;) {
        n = epoll_wait(l->epfd, evs, EVENTS_MAX, timeout);
        pthread_mutex_lock(&l->mu);
        if (l->exiting) {
            pthread_mutex_unlock(&l->mu);
            break;
        }
        for (i = 0; i < n; i++) {
            int fd = evs[i].data.fd;

            if (fd == l->wakefd) {
                if (read(fd, &drained, sizeof(drained)) < 0)
                    drained = 0;
            } else if (fd == l->listen_fd) {
                if (l->listening)
                    accept_some(l);
            } else if (fd < l->nslots && l->slots[fd].state != SLOT_FREE) {
                on_readable(l, fd, evs[i].events);
            }
        }
        now = util_now_us();
        sweep(l, now);
        conn_park_resume_due(l, now);
        if (l->draining && (l->lists[SLOT_IDLE].n == 0 ||
                            now >= l->drain_until_us))
            end_drain(l);
        if (all_served(l))
            pthread_cond_broadcast(&l->ready_cv); /* workers may leave */
        timeout = loop_timeout(l, now);
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}

void conn_wake_loop(const struct conn_layer *l)
{
    uint64_t one = 1;

    if (write(l->wakefd, &one, sizeof(one)) < 0)
        log_msg(LOG_WARN, "cannot wake the connection loop: %s",
                strerror(errno));
}

struct conn_layer *conn_start(const struct config *cfg, int listen_fd,
                              long threads)
{
    struct conn_layer *l = calloc(1, sizeof(*l));
    struct epoll_event ev = {.events = EPOLLIN};
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);
    int i, flags, err;

    if (!l)
        abort();
    l->listen_fd = listen_fd;
    l->epfd = l->wakefd = l->dead_fd = -1;
    l->max_conns = cfg->max_conns;
    l->read_timeout_us = cfg->read_timeout_us;
    l->idle_timeout_us = cfg->idle_timeout_us;
    for (i = 0; i <= SLOT_PARKED; i++)
        l->lists[i].head = l->lists[i].tail = -1;
    l->unix_listener = getsockname(listen_fd, (struct sockaddr *)&sa,
                                   &len) == 0 && sa.ss_family == AF_UNIX;
    l->nallowed = conn_addr_parse(getenv("FCGI_WEB_SERVER_ADDRS"),
                                  l->allowed, ADDRS_MAX);
    if (l->nallowed < 0 ||
        conn_fit_descriptors(&l->max_conns, threads, FD_RESERVE) < 0)
        goto fail;
    /* descriptors are allocated lowest first: the open ones stay below */
    l->nslots = (int)(l->max_conns + 2 * threads + FD_RESERVE);
    l->slots = calloc((size_t)l->nslots, sizeof(*l->slots));
    l->ready_cap = l->max_conns;
    l->ready = calloc((size_t)l->ready_cap, sizeof(*l->ready));
    l->ready_since = calloc((size_t)l->ready_cap, sizeof(*l->ready_since));
    if (!l->slots || !l->ready || !l->ready_since)
        abort();
    flags = fcntl(listen_fd, F_GETFL);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    l->dead_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ev.data.fd = l->wakefd;
    if (flags < 0 || fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
        l->epfd < 0 || l->wakefd < 0 || l->dead_fd < 0 ||
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev) < 0) {
        log_msg(LOG_ERROR, "cannot set up the connection loop: %s",
                strerror(errno));
        goto fail;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->ready_cv, NULL);
    set_listening(l, true);
    if (!l->listening)
        goto fail_sync;
    err = pthread_create(&l->thread, NULL, loop_main, l);
    if (err) {
        log_msg(LOG_ERROR, "pthread_create() failed: %s", strerror(err));
        goto fail_sync;
    }
    return l;
fail_sync:
    pthread_cond_destroy(&l->ready_cv);
    pthread_mutex_destroy(&l->mu);
fail:
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->wakefd >= 0)
        close(l->wakefd);
    if (l->dead_fd >= 0)
        close(l->dead_fd);
    free(l->ready);
    free(l->ready_since);
    free(l->slots);
    free(l);
    return NULL;
}

int conn_next(struct conn_layer *l, int64_t *arrived_us,
              struct park_entry **resumed)
{
    int fd = -1;

    *resumed = NULL;
    pthread_mutex_lock(&l->mu);
    while (l->ready_n == 0 && !l->due_head && !all_served(l))
        pthread_cond_wait(&l->ready_cv, &l->mu);
    if (l->due_head) { /* waited longest */
        *resumed = l->due_head;
        if (!(l->due_head = l->due_head->next))
            l->due_tail = NULL;
        fd = CONN_RESUMED;
    } else if (l->ready_n > 0) {
        fd = l->ready[l->ready_head];
        *arrived_us = l->ready_since[l->ready_head];
        l->ready_head = (l->ready_head + 1) % l->ready_cap;
        l->ready_n--;
    }
    pthread_mutex_unlock(&l->mu);
    return fd;
}

void conn_release(struct conn_layer *l, int fd)
{
    bool stopping;
    char c;

    pthread_mutex_lock(&l->mu);
    stopping = l->stopping;
    if (!stopping)
        watch(l, fd, SLOT_IDLE);
    pthread_mutex_unlock(&l->mu);
    if (!stopping)
        return;
    /*
     * Stopping: close it right after its answer, so that the front sees
     * the close before it reuses the connection.  But the front may have
     * been quicker (seen here: under load, nginx sends the next request
     * while this worker waits for the mutex above): a request already on
     * it is served like any in flight, and the close comes after that.
     */
    if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 1) {
        pthread_mutex_lock(&l->mu);
        watch(l, fd, SLOT_ARRIVING);
        pthread_mutex_unlock(&l->mu);
        return;
    }
    conn_close(l, fd);
}

void conn_close(struct conn_layer *l, int fd)
{
    if (l->unix_listener || shutdown(fd, SHUT_WR) < 0) {
        close(fd);
        conn_closed(l);
        return;
    }
    pthread_mutex_lock(&l->mu);
    watch(l, fd, SLOT_CLOSING);
    pthread_mutex_unlock(&l->mu);
}

void conn_closed(struct conn_layer *l)
{
    pthread_mutex_lock(&l->mu);
    forget(l);
    pthread_mutex_unlock(&l->mu);
}

bool conn_is_unix(const struct conn_layer *l)
{
    return l->unix_listener;
}

int conn_dead_socket(const struct conn_layer *l)
{
    return l->dead_fd;
}

void conn_stop(struct conn_layer *l)
{
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    /*
     * Closing a kept connection while the front sends a request on it
     * loses that request (nginx resends no POST).  So first a drain: each
     * kept connection is closed right after its next answer, which the
     * front sees before it could reuse it, and new connections are still
     * served, one request each; after DRAIN_US, or once no kept connection
     * is left, the idle rest is closed and accepting ends.
     */
    l->draining = l->lists[SLOT_IDLE].n > 0;
    l->drain_until_us = util_now_us() + DRAIN_US;
    if (!l->draining)
        end_drain(l);
    conn_park_resume_due(l, 0); /* answered now, not lost */
    pthread_cond_broadcast(&l->ready_cv);
    pthread_mutex_unlock(&l->mu);
    conn_wake_loop(l);
}

void conn_free(struct conn_layer *l)
{
    int fd;

    pthread_mutex_lock(&l->mu);
    l->exiting = true;
    pthread_mutex_unlock(&l->mu);
    conn_wake_loop(l);
    pthread_join(l->thread, NULL);
    for (fd = 0; fd < l->nslots; fd++)
        if (l->slots[fd].state != SLOT_FREE)
            close_watched(l, fd);
    while (l->ready_n > 0) {
        close(l->ready[l->ready_head]);
        l->ready_head = (l->ready_head + 1) % l->ready_cap;
        l->ready_n--;
    }
    close(l->epfd);
    close(l->wakefd);
    close(l->dead_fd);
    pthread_cond_destroy(&l->ready_cv);
    pthread_mutex_destroy(&l->mu);
    park_heap_release(&l->parked);
    free(l->ready);
    free(l->ready_since);
    free(l->slots);
    free(l);
}
