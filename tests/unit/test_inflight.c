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

static atomic_int leaders_now, served;
static atomic_bool overlap;
/* waiters live until every thread is joined: a leader may still read one */
static struct inflight_waiter waiters[THREADS][ROUNDS];

/* Each thread enters as user 5; leaders drain the queue like routes.c. */
static void *worker(void *arg)
{
    struct inflight_waiter *mine = arg;
    int i;

    for (i = 0; i < ROUNDS; i++) {
        enum inflight_role r = inflight_enter(5, &mine[i]);
        struct inflight_waiter *w;

        if (r == INFLIGHT_PARKED)
            continue; /* a leader will count it */
        if (r == INFLIGHT_ALONE) {
            atomic_fetch_add(&served, 1);
            continue;
        }
        if (atomic_fetch_add(&leaders_now, 1) != 0)
            atomic_store(&overlap, true);
        atomic_fetch_add(&served, 1);
        while ((w = inflight_take(5)))
            for (; w; w = w->next)
                atomic_fetch_add(&served, 1);
        atomic_fetch_sub(&leaders_now, 1);
    }
    return NULL;
}

static void threads_one_leader_at_a_time(void **state)
{
    pthread_t t[THREADS];
    int i;

    for (i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, waiters[i]);
    for (i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_false(atomic_load(&overlap));
    assert_int_equal(atomic_load(&served), THREADS * ROUNDS);
    assert_null(inflight_take(5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lead_then_park),
        cmocka_unit_test(parking_is_bounded),
        cmocka_unit_test(threads_one_leader_at_a_time),
    };

    return cmocka_run_group_tests_name("inflight", tests, NULL, NULL);
}
