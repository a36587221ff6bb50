/*
 * textcache.h: one rendered answer shared by the threads that ask for it
 * at about the same time.
 *
 * GET /api/events needs no token, so a flood of it reaches the app from
 * anywhere.  Requests that arrive while the list is being read wait for
 * that read and share its text, instead of each reading the database:
 * under a flood the database sees one list query at a time per process,
 * however many ask.
 *
 * An answer is never older than its request allows: a request that
 * arrived at time a is answered from a read that began at or after
 * a - ttl.  With ttl 0 (the default) that is a read begun after the
 * request arrived, so a client that got its 201 and then asks for the
 * list sees its own ticket counted, on any instance.  A read already
 * running when a request arrives is too old for it: the request waits for
 * that read to end and joins the next one.
 *
 * Pure apart from the mutex and the clock, which comes with the cache.
 */
#ifndef TICKETS_TEXTCACHE_H
#define TICKETS_TEXTCACHE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct textcache {
    pthread_mutex_t lock;
    pthread_cond_t read_done;
    int64_t (*now_us)(void); /* monotonic clock */
    char *text;              /* NULL: nothing kept */
    size_t len;
    int64_t read_at_us;      /* when the read that made text began */
    bool reading;            /* a thread is reading now */
    int64_t reading_since_us;
    uint64_t reads_ended;    /* reads ended so far (put or abandon) */
    bool last_failed;        /* the last read ended in textcache_abandon */
    int waiting;             /* threads waiting for a read to end */
};

#define TEXTCACHE_INIT(clock)                                              \
    {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, (clock), NULL, 0, \
     0, false, 0, 0, false, 0}

enum textcache_take {
    TEXTCACHE_HIT,    /* *text is a copy to send (the caller frees it) */
    TEXTCACHE_READ,   /* the caller reads, then textcache_put or _abandon */
    TEXTCACHE_FAILED, /* the read this request waited for failed */
};

/*
 * For a request that arrived at arrived_us (same clock), allowed answers
 * up to ttl_us older than that.  May wait for a read of another thread.
 */
enum textcache_take textcache_get(struct textcache *c, int64_t arrived_us,
                                  int64_t ttl_us, char **text, size_t *len);

/* The reader's text (copied); wakes the requests waiting for it. */
void textcache_put(struct textcache *c, const char *text, size_t len);

/* The reader could not make it: those that joined its read fail too. */
void textcache_abandon(struct textcache *c);

/* Drop the text (the unit tests free theirs with it); not while a read
 * runs. */
void textcache_clear(struct textcache *c);

#endif
