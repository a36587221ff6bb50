/*
 * test_park.c: the connection layer's timer (park.c): a heap of requests
 * put aside until a time.  Pure, on made-up times: no sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "park.h"

#define N 1000

static struct park_entry *entry(struct park_entry *e, int64_t due, int fd)
{
    memset(e, 0, sizeof(*e));
    e->due_us = due;
    e->fd = fd;
    return e;
}

/* nothing leaves before its time; what is due leaves earliest first */
static void due_in_time_order(void **state)
{
    struct park_heap h = PARK_HEAP_INIT;
    struct park_entry e[4];

    assert_null(park_peek(&h));
    assert_null(park_pop_due(&h, INT64_MAX));
    park_push(&h, entry(&e[0], 300, 0));
    park_push(&h, entry(&e[1], 100, 1));
    park_push(&h, entry(&e[2], 200, 2));
    park_push(&h, entry(&e[3], 100, 3)); /* a tie: after e[1] */
    assert_ptr_equal(park_peek(&h), &e[1]);
    assert_null(park_pop_due(&h, 99));
    assert_ptr_equal(park_pop_due(&h, 100), &e[1]);
    assert_ptr_equal(park_pop_due(&h, 100), &e[3]);
    assert_null(park_pop_due(&h, 199));
    assert_ptr_equal(park_pop_due(&h, 1000), &e[2]);
    assert_ptr_equal(park_pop_due(&h, 1000), &e[0]);
    assert_null(park_pop_due(&h, 1000));
    assert_int_equal(h.n, 0);
    park_heap_release(&h);
}

/* an entry taken out early (its front closed) never comes out again, and
 * the rest keep their order, whichever place it had */
static void remove_anywhere(void **state)
{
    struct park_heap h = PARK_HEAP_INIT;
    static struct park_entry e[N];
    int64_t last = -1;
    size_t i, left = N;

    srand(7);
    for (i = 0; i < N; i++)
        park_push(&h, entry(&e[i], rand() % 5000, (int)i));
    for (i = 0; i < N; i += 3) { /* a third, from everywhere in the heap */
        e[i].gone = true;
        park_remove(&h, &e[i]);
        left--;
    }
    assert_int_equal(h.n, left);
    for (i = 0; i < left; i++) {
        struct park_entry *p = park_pop_due(&h, INT64_MAX);

        assert_non_null(p);
        assert_false(p->gone);
        assert_true(p->due_us >= last);
        last = p->due_us;
    }
    assert_null(park_peek(&h));
    park_heap_release(&h);
}

/* the last entry removed, the only one, and the top: the index of every
 * entry stays right (each remove would break otherwise) */
static void remove_edges(void **state)
{
    struct park_heap h = PARK_HEAP_INIT;
    struct park_entry e[3];

    park_push(&h, entry(&e[0], 10, 0));
    park_remove(&h, &e[0]);
    assert_null(park_peek(&h));
    park_push(&h, entry(&e[0], 10, 0));
    park_push(&h, entry(&e[1], 20, 1));
    park_push(&h, entry(&e[2], 30, 2));
    park_remove(&h, &e[2]); /* the last slot */
    park_remove(&h, &e[0]); /* the top */
    assert_ptr_equal(park_peek(&h), &e[1]);
    assert_int_equal(e[1].index, 0);
    assert_ptr_equal(park_pop_due(&h, 20), &e[1]);
    assert_null(park_peek(&h));
    park_heap_release(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(due_in_time_order),
        cmocka_unit_test(remove_anywhere),
        cmocka_unit_test(remove_edges),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
