/*
 * test_inflight.c: the per-user coalescing table (inflight.c): who leads,
 * who parks, that the leader gets every waiter exactly once, and that an
 * entry is gone when its leader leaves.  The threaded case is meant for
 * `make SANITIZE=thread unit` as well.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "inflight.h"

static void lead_then_park(void **state)
{
    struct inflight_waiter a, b, c, *list;

    assert_int_equal(inflight_enter(1, &a), INFLIGHT_LEAD);
    assert_int_equal(inflight_enter(1, &b), INFLIGHT_PARKED);
    assert_int_equal(inflight_enter(1, &c), INFLIGHT_PARKED);
    assert_int_equal(inflight_enter(2, &a), INFLIGHT_LEAD); /* other user */
    list = inflight_take(1);
    assert_ptr_equal(list, &b); /* oldest first */
    assert_ptr_equal(list->next, &c);
    assert_null(c.next);
    assert_null(inflight_take(1)); /* nothing left: the lead ends */
    assert_int_equal(inflight_enter(1, &a), INFLIGHT_LEAD); /* a new lead */
    assert_null(inflight_take(1));
    assert_null(inflight_take(2));
}

static void parking_is_bounded(void **state)
{
    static struct inflight_waiter w[INFLIGHT_MAX_PARKED + 2];
    struct inflight_waiter *list;
    size_t i, n = 0;

    assert_int_equal(inflight_enter(9, &w[0]), INFLIGHT_LEAD);
    for (i = 1; i <= INFLIGHT_MAX_PARKED; i++)
        assert_int_equal(inflight_enter(9, &w[i]), INFLIGHT_PARKED);
    assert_int_equal(inflight_enter(9, &w[i]), INFLIGHT_ALONE);
    for (list = inflight_take(9); list; list = list->next)
        n++;
    assert_int_equal(n, INFLIGHT_MAX_PARKED);
    assert_null(inflight_take(9));
}

#define THREADS 8
#define ROUNDS 2000

/* waiters live until every thread is joined: a leader may still read one */
static struct inflight_waiter waiters[THREADS][ROUNDS];
static atomic_int answered[THREADS][ROUNDS];

static void answer(struct inflight_waiter *w)
{
    size_t i = (size_t)(w - &waiters[0][0]);

    atomic_fetch_add(&answered[i / ROUNDS][i % ROUNDS], 1);
}

/* Each thread enters as user 5; leaders drain the queue like routes.c. */
static void *worker(void *arg)
{
    struct inflight_waiter *mine = arg;
    int i;

    for (i = 0; i < ROUNDS; i++) {
        enum inflight_role r = inflight_enter(5, &mine[i]);
        struct inflight_waiter *w, *next;

        if (r == INFLIGHT_PARKED)
            continue; /* a leader answers it */
        answer(&mine[i]);
        if (r == INFLIGHT_ALONE)
            continue;
        while ((w = inflight_take(5)))
            for (; w; w = next) {
                next = w->next;
                answer(w);
            }
    }
    return NULL;
}

/* Every claim is answered exactly once, however the threads interleave. */
static void threads_answer_each_once(void **state)
{
    pthread_t t[THREADS];
    int i, j;

    for (i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, waiters[i]);
    for (i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (i = 0; i < THREADS; i++)
        for (j = 0; j < ROUNDS; j++)
            assert_int_equal(atomic_load(&answered[i][j]), 1);
    assert_null(inflight_take(5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lead_then_park),
        cmocka_unit_test(parking_is_bounded),
        cmocka_unit_test(threads_answer_each_once),
    };

    return cmocka_run_group_tests_name("inflight", tests, NULL, NULL);
}
