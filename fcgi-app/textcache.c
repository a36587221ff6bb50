/*
 * textcache.c: see textcache.h.
 */
#include "textcache.h"

#include <stdlib.h>
#include <string.h>

static char *copy(const char *text, size_t len)
{
    char *s = malloc(len + 1);

    if (!s)
        abort();
    memcpy(s, text, len);
    s[len] = '\0';
    return s;
}

enum textcache_take textcache_get(struct textcache *c, int64_t arrived_us,
                                  int64_t ttl_us, char **text, size_t *len)
{
    int64_t oldest = arrived_us - (ttl_us > 0 ? ttl_us : 0);
    uint64_t seen;
    bool joined;

    *text = NULL;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        if (c->text && c->read_at_us >= oldest) {
            *text = copy(c->text, c->len);
            *len = c->len;
            pthread_mutex_unlock(&c->lock);
            return TEXTCACHE_HIT;
        }
        if (!c->reading) {
            /* begun now, after every request waiting here arrived */
            c->reading = true;
            c->reading_since_us = c->now_us();
            pthread_mutex_unlock(&c->lock);
            return TEXTCACHE_READ;
        }
        /* a read runs: share it if it is young enough, else outwait it */
        joined = c->reading_since_us >= oldest;
        seen = c->reads_ended;
        c->waiting++;
        while (c->reads_ended == seen)
            pthread_cond_wait(&c->read_done, &c->lock);
        c->waiting--;
        if (joined && c->last_failed &&
            !(c->text && c->read_at_us >= oldest)) {
            pthread_mutex_unlock(&c->lock);
            return TEXTCACHE_FAILED;
        }
    }
}

static void read_ended(struct textcache *c, bool failed)
{
    c->reading = false;
    c->last_failed = failed;
    c->reads_ended++;
    pthread_cond_broadcast(&c->read_done);
}

void textcache_put(struct textcache *c, const char *text, size_t len)
{
    char *s = copy(text, len), *old;

    pthread_mutex_lock(&c->lock);
    old = c->text;
    c->text = s;
    c->len = len;
    c->read_at_us = c->reading_since_us;
    read_ended(c, false);
    pthread_mutex_unlock(&c->lock);
    free(old);
}

void textcache_abandon(struct textcache *c)
{
    pthread_mutex_lock(&c->lock);
    read_ended(c, true);
    pthread_mutex_unlock(&c->lock);
}

void textcache_clear(struct textcache *c)
{
    char *old;

    pthread_mutex_lock(&c->lock);
    old = c->text;
    c->text = NULL;
    c->len = 0;
    pthread_mutex_unlock(&c->lock);
    free(old);
}
