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

char *textcache_get(struct textcache *c, int64_t now_us, int64_t ttl_us,
                    size_t *len, bool *refresh)
{
    char *out = NULL;

    *refresh = false;
    if (ttl_us <= 0)
        return NULL;
    pthread_mutex_lock(&c->lock);
    if (c->text && (now_us - c->at_us < ttl_us || c->refreshing)) {
        out = copy(c->text, c->len);
        *len = c->len;
    } else if (!c->refreshing) {
        c->refreshing = true; /* this caller makes the new one */
        *refresh = true;
    }
    pthread_mutex_unlock(&c->lock);
    return out;
}

void textcache_put(struct textcache *c, const char *text, size_t len,
                   int64_t now_us)
{
    char *s = copy(text, len), *old;

    pthread_mutex_lock(&c->lock);
    old = c->text;
    c->text = s;
    c->len = len;
    c->at_us = now_us;
    c->refreshing = false;
    pthread_mutex_unlock(&c->lock);
    free(old);
}

void textcache_abandon(struct textcache *c)
{
    pthread_mutex_lock(&c->lock);
    c->refreshing = false;
    pthread_mutex_unlock(&c->lock);
}

void textcache_clear(struct textcache *c)
{
    char *old;

    pthread_mutex_lock(&c->lock);
    old = c->text;
    c->text = NULL;
    c->len = 0;
    c->refreshing = false;
    pthread_mutex_unlock(&c->lock);
    free(old);
}
