/*
 * pace.c: a token bucket per verified user id, and the user's last answer
 * (see pace.h for what is answered when).
 *
 * Tokens are counted in millionths, so that a bucket refills exactly at
 * `rate` per second (`rate` millionths a microsecond) from microsecond
 * timestamps with integer arithmetic.  A reserved token is taken at once:
 * the count goes below zero, by at most wait_max_us * rate, and the
 * refill pays the debt first.
 */
#include "pace.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define UNIT 1000000LL /* one token */
#define WAYS 2

struct entry {
    int64_t user_id;          /* 0: free */
    int64_t last_us;          /* last claim seen (refill and eviction) */
    int64_t tokens;           /* in millionths */
    int64_t known_event;      /* 0: nothing known */
    int64_t known_until_us;
    enum claim_outcome known; /* a final answer for known_event */
    struct ticket ticket;     /* when known == CLAIM_EXISTING */
};

struct pace {
    int64_t rate;  /* tokens per second */
    int64_t burst; /* in millionths */
    pthread_mutex_t lock[PACE_LOCKS];
    struct entry set[PACE_SETS][WAYS];
};

struct pace *pace_new(long rate, long burst)
{
    struct pace *p;
    int i;

    if (rate < 0 || burst < 1)
        return NULL;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->rate = rate;
    p->burst = (int64_t)burst * UNIT;
    for (i = 0; i < PACE_LOCKS; i++)
        pthread_mutex_init(&p->lock[i], NULL);
    return p;
}

void pace_free(struct pace *p)
{
    int i;

    if (!p)
        return;
    for (i = 0; i < PACE_LOCKS; i++)
        pthread_mutex_destroy(&p->lock[i]);
    free(p);
}

static unsigned set_of(int64_t user_id)
{
    uint64_t h = (uint64_t)user_id * 0x9E3779B97F4A7C15ULL; /* Fibonacci */

    return (unsigned)(h >> 40) % PACE_SETS;
}

/* The user's entry in its (locked) set, made if missing: a free way or the
 * least recently seen one gives way, with a full bucket. */
static struct entry *entry_of(struct pace *p, unsigned s, int64_t user_id,
                              int64_t now_us)
{
    struct entry *ways = p->set[s], *e = &ways[0];
    int i;

    for (i = 0; i < WAYS; i++)
        if (ways[i].user_id == user_id)
            return &ways[i];
    for (i = 1; i < WAYS; i++)
        if (ways[i].user_id == 0 ||
            (e->user_id != 0 && ways[i].last_us < e->last_us))
            e = &ways[i];
    memset(e, 0, sizeof(*e));
    e->user_id = user_id;
    e->last_us = now_us;
    e->tokens = p->burst;
    return e;
}

enum pace_verdict pace_claim(struct pace *p, int64_t user_id,
                             int64_t event_id, int64_t now_us,
                             int64_t wait_max_us, enum claim_outcome *o,
                             struct ticket *t, int64_t *due_us)
{
    unsigned s;
    struct entry *e;
    enum pace_verdict v;
    int64_t wait_us;

    if (!p || p->rate == 0)
        return PACE_GO;
    s = set_of(user_id);
    pthread_mutex_lock(&p->lock[s % PACE_LOCKS]);
    e = entry_of(p, s, user_id, now_us);
    if (now_us > e->last_us) {
        int64_t dt = now_us - e->last_us;

        /* dt * rate may not overflow: cap dt at the time to fill up */
        if (dt >= (p->burst - e->tokens) / p->rate + 1)
            e->tokens = p->burst;
        else if ((e->tokens += dt * p->rate) > p->burst)
            e->tokens = p->burst;
        e->last_us = now_us;
    }
    /* how long until the bucket holds a whole token */
    wait_us = (UNIT - e->tokens + p->rate - 1) / p->rate;
    if (e->tokens >= UNIT) {
        e->tokens -= UNIT;
        v = PACE_GO;
    } else if (wait_max_us > 0 && wait_us <= wait_max_us) {
        e->tokens -= UNIT;
        *due_us = now_us + wait_us;
        v = PACE_RESERVED;
    } else if (e->known_event == event_id && now_us < e->known_until_us) {
        *o = e->known;
        if (e->known == CLAIM_EXISTING)
            *t = e->ticket;
        v = PACE_KNOWN;
    } else {
        v = PACE_OVER;
    }
    pthread_mutex_unlock(&p->lock[s % PACE_LOCKS]);
    return v;
}

static bool is_final(enum claim_outcome o)
{
    switch (o) {
    case CLAIM_EVENT_NOT_FOUND:
    case CLAIM_EXISTING:
    case CLAIM_NOT_PREMIUM:
    case CLAIM_NOT_FREE:
    case CLAIM_EVENT_STARTED:
    case CLAIM_PAID_ORDER:
    case CLAIM_SOLD_OUT:
    case CLAIM_CREATED:
        return true;
    default:
        return false;
    }
}

void pace_learn(struct pace *p, int64_t user_id, int64_t event_id,
                enum claim_outcome o, const struct ticket *t, int64_t now_us)
{
    unsigned s;
    struct entry *e;

    if (!p || p->rate == 0 || !is_final(o))
        return;
    s = set_of(user_id);
    pthread_mutex_lock(&p->lock[s % PACE_LOCKS]);
    e = entry_of(p, s, user_id, now_us);
    e->known_event = event_id;
    e->known_until_us = now_us + PACE_KNOWN_US;
    e->known = o == CLAIM_CREATED ? CLAIM_EXISTING : o;
    if (e->known == CLAIM_EXISTING)
        e->ticket = *t;
    pthread_mutex_unlock(&p->lock[s % PACE_LOCKS]);
}
