/*
 * park.h: requests put aside until a time, in time order (a binary heap).
 *
 * A claim over its user's pace (pace.h) is not answered at once: the
 * connection layer (conn.h, conn_park) keeps it, without a thread, until
 * the user's bucket gives it a token or its longest wait is over, and then
 * hands it back to a worker.  This is the layer's timer: the earliest due
 * entry is at the top, an entry can be taken out early (the front closed
 * the connection), and entries due at the same time leave in the order
 * they came.
 *
 * Pure: no locks (the layer's mutex guards its heap), no clock (times are
 * arguments).  park_push aborts when out of memory.
 */
#ifndef TICKETS_PARK_H
#define TICKETS_PARK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Embedded in what is parked (struct http_request). */
struct park_entry {
    int64_t due_us;          /* when it is handed back */
    uint64_t seq;            /* arrival order, for ties */
    size_t index;            /* its place in the heap while queued */
    int fd;                  /* its connection, watched while parked */
    bool gone;               /* the front closed it while it was parked */
    struct park_entry *next; /* in the layer's list of entries due */
};

struct park_heap {
    struct park_entry **e;
    size_t n, cap;
    uint64_t seq;
};

#define PARK_HEAP_INIT {NULL, 0, 0, 0}

void park_push(struct park_heap *h, struct park_entry *e);
/* The earliest entry, or NULL when empty. */
struct park_entry *park_peek(const struct park_heap *h);
/* Take out the earliest entry if it is due at now_us; else NULL. */
struct park_entry *park_pop_due(struct park_heap *h, int64_t now_us);
/* Take out e, which is in h, wherever it is. */
void park_remove(struct park_heap *h, struct park_entry *e);
void park_heap_release(struct park_heap *h);

#endif
