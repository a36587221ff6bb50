/*
 * inflight.c: a small hash table of users with a claim in flight.
 *
 * An entry exists exactly while its key has a leader; it is created by
 * inflight_enter and removed by the inflight_take that finds it empty,
 * both under the same mutex, so a waiter can never be queued on an entry
 * whose leader has already left (the classic fault of per-key lock maps:
 * an entry removed while a waiter joins it lets the next caller make a
 * fresh entry and run beside the first).
 */
#include "inflight.h"

#include <pthread.h>
#include <stdlib.h>

#include "metrics.h"

#define NBUCKETS 1024 /* a power of two */

struct entry {
    int64_t key;
    struct inflight_waiter *head, *tail;
    struct entry *next; /* hash chain */
};

/* guards buckets, every entry and nparked */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *buckets[NBUCKETS];
static unsigned nparked;

static struct entry **slot(int64_t key)
{
    uint64_t h = (uint64_t)key * 0x9e3779b97f4a7c15ull;

    return &buckets[h >> 54]; /* top 10 bits */
}

static struct entry **find(int64_t key)
{
    struct entry **e;

    for (e = slot(key); *e && (*e)->key != key; e = &(*e)->next)
        ;
    return e;
}

enum inflight_role inflight_enter(int64_t key, struct inflight_waiter *w)
{
    enum inflight_role role;
    struct entry **e;

    w->next = NULL;
    pthread_mutex_lock(&lock);
    e = find(key);
    if (!*e) {
        struct entry *n = calloc(1, sizeof(*n));

        if (!n)
            abort();
        n->key = key;
        *e = n;
        role = INFLIGHT_LEAD;
    } else if (nparked >= INFLIGHT_MAX_PARKED) {
        role = INFLIGHT_ALONE;
    } else {
        if ((*e)->tail)
            (*e)->tail->next = w;
        else
            (*e)->head = w;
        (*e)->tail = w;
        nparked++;
        role = INFLIGHT_PARKED;
    }
    pthread_mutex_unlock(&lock);
    if (role == INFLIGHT_PARKED)
        metrics_parked(1);
    return role;
}

struct inflight_waiter *inflight_take(int64_t key)
{
    struct inflight_waiter *list = NULL;
    struct entry **e, *gone = NULL;
    unsigned n = 0;

    pthread_mutex_lock(&lock);
    e = find(key);
    if (*e && (*e)->head) {
        struct inflight_waiter *w;

        list = (*e)->head;
        for (w = list; w; w = w->next)
            n++;
        (*e)->head = (*e)->tail = NULL;
        nparked -= n;
    } else if (*e) {
        gone = *e;
        *e = gone->next;
    }
    pthread_mutex_unlock(&lock);
    free(gone);
    if (n)
        metrics_parked(-(int)n);
    return list;
}

bool inflight_running(int64_t key)
{
    bool running;

    pthread_mutex_lock(&lock);
    running = *find(key) != NULL;
    pthread_mutex_unlock(&lock);
    return running;
}
