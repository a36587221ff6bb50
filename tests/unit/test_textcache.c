/*
 * test_textcache.c: the shared reads of GET /api/events (textcache.c).
 * The clock is made up; the cases with a second thread wait for it to be
 * blocked in the cache (its state says so), never for a length of time.
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "textcache.h"

#define S 1000000LL /* one second in microseconds */

static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

static void expect_hit(struct textcache *c, int64_t arrived, int64_t ttl,
                       const char *want)
{
    char *s;
    size_t len;

    assert_int_equal(textcache_get(c, arrived, ttl, &s, &len), TEXTCACHE_HIT);
    assert_int_equal(len, strlen(want));
    assert_string_equal(s, want);
    free(s);
}

static void expect_read(struct textcache *c, int64_t arrived, int64_t ttl)
{
    char *s;
    size_t len;

    assert_int_equal(textcache_get(c, arrived, ttl, &s, &len),
                     TEXTCACHE_READ);
    assert_null(s);
}

/* ttl 0: a text is good only for requests that arrived before its read */
static void fresh_only(void **state)
{
    struct textcache c = TEXTCACHE_INIT(fake_clock);

    fake_now = 10 * S;
    expect_read(&c, 10 * S, 0);
    textcache_put(&c, "a", 1);
    expect_hit(&c, 10 * S, 0, "a");     /* arrived as the read began */
    expect_hit(&c, 9 * S, 0, "a");      /* arrived before it */
    fake_now = 11 * S;
    expect_read(&c, 10 * S + 1, 0);     /* arrived after it began */
    textcache_put(&c, "b", 1);
    expect_hit(&c, 10 * S + 1, 0, "b");
    textcache_clear(&c);
}

/* ttl > 0: a text read up to ttl before the request arrived will do */
static void ttl_allows_older(void **state)
{
    struct textcache c = TEXTCACHE_INIT(fake_clock);

    fake_now = 10 * S;
    expect_read(&c, 10 * S, S);
    textcache_put(&c, "a", 1);
    expect_hit(&c, 11 * S, S, "a");
    expect_read(&c, 11 * S + 1, S);
    textcache_abandon(&c);
    /* the failed read changed nothing: a text that was good still is */
    expect_hit(&c, 11 * S, S, "a");
    textcache_clear(&c);
}

struct asker {
    struct textcache *c;
    int64_t arrived;
    enum textcache_take took;
    char *text;
};

static void *ask(void *arg)
{
    struct asker *a = arg;
    size_t len;

    a->took = textcache_get(a->c, a->arrived, 0, &a->text, &len);
    return NULL;
}

/* Starts a thread asking and returns once it waits in the cache. */
static void start_asker(pthread_t *t, struct asker *a, struct textcache *c,
                        int64_t arrived)
{
    uint64_t ended;
    int waiting = 0;

    a->c = c;
    a->arrived = arrived;
    a->text = NULL;
    pthread_mutex_lock(&c->lock);
    ended = c->reads_ended;
    pthread_mutex_unlock(&c->lock);
    assert_int_equal(pthread_create(t, NULL, ask, a), 0);
    /* blocked in pthread_cond_wait: the mutex is free and no read ended;
     * a thread that has not got there yet is still running, so keep
     * yielding until it has (it cannot finish without a put) */
    while (!waiting) {
        sched_yield();
        pthread_mutex_lock(&c->lock);
        waiting = c->waiting > 0 && c->reads_ended == ended;
        pthread_mutex_unlock(&c->lock);
    }
}

/*
 * A read begins at 10 s; a request that arrived at `arrived` asks while it
 * runs; at 12 s the read ends with text, or fails (text NULL).  What the
 * request got.
 */
static struct asker ask_during_read(struct textcache *c, int64_t arrived,
                                    const char *text)
{
    struct asker a;
    pthread_t t;

    fake_now = 10 * S;
    expect_read(c, 10 * S, 0);
    start_asker(&t, &a, c, arrived);
    fake_now = 12 * S;
    if (text)
        textcache_put(c, text, strlen(text));
    else
        textcache_abandon(c);
    pthread_join(t, NULL);
    return a;
}

/* A request that arrived before the running read began shares it. */
static void joins_a_young_read(void **state)
{
    struct textcache c = TEXTCACHE_INIT(fake_clock);
    struct asker a = ask_during_read(&c, 9 * S, "a");

    assert_int_equal(a.took, TEXTCACHE_HIT);
    assert_string_equal(a.text, "a");
    free(a.text);
    textcache_clear(&c);
}

/* One that arrived after it began waits for it, then reads itself. */
static void outwaits_an_old_read(void **state)
{
    struct textcache c = TEXTCACHE_INIT(fake_clock);
    struct asker a = ask_during_read(&c, 10 * S + 1, "old");

    assert_int_equal(a.took, TEXTCACHE_READ);
    assert_null(a.text);
    textcache_put(&c, "new", 3);
    expect_hit(&c, 11 * S, 0, "new"); /* its read began at 12 s */
    textcache_clear(&c);
}

/* The read it shared failed: it fails too, rather than read in turn. */
static void shares_a_failure(void **state)
{
    struct textcache c = TEXTCACHE_INIT(fake_clock);
    struct asker a = ask_during_read(&c, 10 * S, NULL);

    assert_int_equal(a.took, TEXTCACHE_FAILED);
    assert_null(a.text);
    expect_read(&c, 10 * S, 0); /* the next request reads again */
    textcache_abandon(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fresh_only),
        cmocka_unit_test(ttl_allows_older),
        cmocka_unit_test(joins_a_young_read),
        cmocka_unit_test(outwaits_an_old_read),
        cmocka_unit_test(shares_a_failure),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
