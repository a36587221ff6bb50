/*
 * textcache.h: one rendered answer shared by every thread for a short time.
 *
 * GET /api/events needs no token, so a flood of it reaches the app from
 * anywhere; with a cache of one second the database sees at most one list
 * query a second per process, however many ask.  While one thread
 * refreshes a stale text, the others keep serving the stale one instead of
 * queueing on the database too (one refresher at a time).
 *
 * Pure apart from the mutex: time comes in as an argument.
 */
#ifndef TICKETS_TEXTCACHE_H
#define TICKETS_TEXTCACHE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct textcache {
    pthread_mutex_t lock;
    char *text;        /* NULL: nothing cached */
    size_t len;
    int64_t at_us;     /* when it was made (monotonic) */
    bool refreshing;   /* a thread is making a new one */
};

#define TEXTCACHE_INIT {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, false}

/*
 * A copy of the cached text (the caller frees it), if it is younger than
 * ttl_us, or if it is older but another thread is already refreshing it.
 * NULL: the caller makes the text itself and, if *refresh is true, hands it
 * to textcache_put (or calls textcache_abandon when it failed).  ttl_us 0:
 * always NULL, nothing cached.
 */
char *textcache_get(struct textcache *c, int64_t now_us, int64_t ttl_us,
                    size_t *len, bool *refresh);

/* The refresher's new text (copied), made at now_us. */
void textcache_put(struct textcache *c, const char *text, size_t len,
                   int64_t now_us);

/* The refresher could not make a new text: let the next caller try. */
void textcache_abandon(struct textcache *c);

/* Drop the text (tests, shutdown). */
void textcache_clear(struct textcache *c);

#endif
