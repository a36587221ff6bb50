/*
 * conn_park.c: requests put aside in the connection layer until a time
 * (conn_park, conn.h): a claim over its user's pace waits here for its
 * token without a thread.  The loop (conn.c) keeps them in a heap by due
 * time (park.h), sleeps no longer than the earliest, and watches their
 * connections: when one is due, or its front closes the connection, or
 * the layer stops, it goes to the list of due requests, which conn_next
 * serves before new requests.  While parked the connection stays open and
 * counted (TICKETS_MAX_CONNS), in the list SLOT_PARKED.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "conn_int.h"

/* A parked request goes back to the workers (its entry out of the heap). */
static void resume(struct conn_layer *l, int fd)
{
    struct park_entry *p = l->slots[fd].parked;

    l->slots[fd].parked = NULL;
    conn_unwatch(l, fd);
    p->next = NULL;
    if (l->due_tail)
        l->due_tail->next = p;
    else
        l->due_head = p;
    l->due_tail = p;
    pthread_cond_signal(&l->ready_cv);
    conn_update_gauges(l);
}

/*
 * Something happened on a parked request's connection.  A front waiting
 * for the answer sends nothing more on it but an abort: EOF, an error or
 * bytes all mean that nobody waits for the answer any more.
 */
void conn_park_event(struct conn_layer *l, int fd, uint32_t events)
{
    char c;

    if (!(events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
        recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
        (errno == EAGAIN || errno == EINTR))
        return;
    l->slots[fd].parked->gone = true;
    park_remove(&l->parked, l->slots[fd].parked);
    resume(l, fd);
}

/* Hand back the parked requests whose time came (all of them: at stop). */
void conn_park_resume_due(struct conn_layer *l, int64_t now)
{
    struct park_entry *p;

    while ((p = park_pop_due(&l->parked, l->stopping ? INT64_MAX : now)))
        resume(l, p->fd);
}

int conn_park(struct conn_layer *l, struct park_entry *p, int fd,
              int64_t due_us)
{
    bool first = false;
    int rc = -ECANCELED;

    pthread_mutex_lock(&l->mu);
    if (!l->stopping && (rc = conn_try_watch(l, fd, SLOT_PARKED)) == 0) {
        p->fd = fd;
        p->due_us = due_us;
        p->gone = false;
        l->slots[fd].parked = p;
        park_push(&l->parked, p);
        first = park_peek(&l->parked) == p;
    }
    pthread_mutex_unlock(&l->mu);
    if (first) /* the loop may sleep past due_us: let it look again */
        conn_wake_loop(l);
    return rc;
}
