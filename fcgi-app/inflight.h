/*
 * inflight.h: one claim per user at a time in this process; the others
 * wait parked, without holding a worker thread.
 *
 * Why: a worker thread that waits on a user's named lock serves nobody
 * else, so one user's storm of clicks could occupy every thread.  Instead
 * the first claim of a user leads; later claims of the same user are queued
 * here and the worker goes back to accept other requests.  The leader, when
 * done, takes the queue and answers it (a queued claim of the same event
 * gets the leader's outcome: the same ticket, as a retry would).
 *
 * The table is guarded by one mutex, held only for a hash lookup and a
 * list splice.  At most INFLIGHT_MAX_PARKED claims are parked at once (each
 * holds a connection from nginx); past that, claims run unparked and wait
 * on the named lock like any other.
 */
#ifndef TICKETS_INFLIGHT_H
#define TICKETS_INFLIGHT_H

#include <stdbool.h>
#include <stdint.h>

#define INFLIGHT_MAX_PARKED 512

/* Embedded in whatever is parked; the list is FIFO. */
struct inflight_waiter {
    struct inflight_waiter *next;
};

enum inflight_role {
    INFLIGHT_LEAD,   /* no claim of this key was running: caller leads */
    INFLIGHT_PARKED, /* queued behind the leader: it now owns w */
    INFLIGHT_ALONE,  /* too many parked: run without coalescing */
};

/* Join the claims of key; see enum inflight_role. */
enum inflight_role inflight_enter(int64_t key, struct inflight_waiter *w);

/*
 * Leader only: take the queued waiters of key (oldest first), or, when none
 * are queued, end the lead and return NULL.  The leader calls this until
 * it returns NULL and answers every waiter it got.
 */
struct inflight_waiter *inflight_take(int64_t key);

/*
 * Whether a claim of key is being led right now (a hint: it may end the
 * next moment).  pace.h's over-the-limit claims park behind a running one
 * rather than answer 503 busy.
 */
bool inflight_running(int64_t key);

#endif
