/*
 * test_pace.c: the per-user pacing table (pace.c).  Time is an argument,
 * so every case runs on a made-up clock: no sleeps, no timed assertions.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pace.h"

#define S 1000000LL /* one second in microseconds */

static enum pace_verdict claim(struct pace *p, int64_t user, int64_t event,
                               int64_t now, enum claim_outcome *o,
                               struct ticket *t)
{
    int64_t due;

    return pace_claim(p, user, event, now, 0, o, t, &due);
}

static struct ticket ticket_of(int64_t id, int64_t user, int64_t event)
{
    struct ticket t;

    memset(&t, 0, sizeof(t));
    t.id = id;
    t.user_id = user;
    t.event_id = event;
    strcpy(t.code, "00112233445566778899aabbccddeeff");
    strcpy(t.created_at, "2026-12-07T01:00:00.000001Z");
    return t;
}

/* burst claims go at once, the next waits for the rate */
static void burst_then_rate(void **state)
{
    struct pace *p = pace_new(5, 3);
    enum claim_outcome o;
    struct ticket t;
    int i;

    assert_non_null(p);
    for (i = 0; i < 3; i++)
        assert_int_equal(claim(p, 1, 7, 10 * S, &o, &t), PACE_GO);
    assert_int_equal(claim(p, 1, 7, 10 * S, &o, &t), PACE_OVER);
    /* 5 a second: one token after 0.2 s, not before */
    assert_int_equal(claim(p, 1, 7, 10 * S + S / 5 - 1, &o, &t), PACE_OVER);
    assert_int_equal(claim(p, 1, 7, 10 * S + S / 5, &o, &t), PACE_GO);
    assert_int_equal(claim(p, 1, 7, 10 * S + S / 5, &o, &t), PACE_OVER);
    /* a long pause fills the bucket up to the burst, no more */
    for (i = 0; i < 3; i++)
        assert_int_equal(claim(p, 1, 7, 1000 * S, &o, &t), PACE_GO);
    assert_int_equal(claim(p, 1, 7, 1000 * S, &o, &t), PACE_OVER);
    pace_free(p);
}

/* over the burst, a claim may reserve the next token within its wait: the
 * tokens come one per 1/rate, each later claim one token later, none
 * beyond the wait; the debt is paid before the bucket fills again */
static void reserve_within_wait(void **state)
{
    struct pace *p = pace_new(5, 2); /* a token every 0.2 s */
    enum claim_outcome o;
    struct ticket t;
    int64_t due = 0;
    int i;

    for (i = 0; i < 2; i++)
        assert_int_equal(pace_claim(p, 1, 7, 10 * S, S, &o, &t, &due),
                         PACE_GO);
    for (i = 1; i <= 5; i++) {
        assert_int_equal(pace_claim(p, 1, 7, 10 * S, S, &o, &t, &due),
                         PACE_RESERVED);
        assert_int_equal(due, 10 * S + i * S / 5);
    }
    /* the 6th would wait 1.2 s, more than its 1 s: over, nothing taken */
    assert_int_equal(pace_claim(p, 1, 7, 10 * S, S, &o, &t, &due), PACE_OVER);
    /* without a wait, as before: over */
    assert_int_equal(claim(p, 1, 7, 10 * S, &o, &t), PACE_OVER);
    /* at 11 s the 5 reserved tokens are paid: the bucket is empty, not
     * full (the refill pays the debt first) */
    assert_int_equal(claim(p, 1, 7, 11 * S, &o, &t), PACE_OVER);
    assert_int_equal(claim(p, 1, 7, 11 * S + S / 5, &o, &t), PACE_GO);
    /* a long pause after a debt fills the bucket to the burst, no more */
    assert_int_equal(pace_claim(p, 1, 7, 11 * S + S / 5, S, &o, &t, &due),
                     PACE_RESERVED);
    for (i = 0; i < 2; i++)
        assert_int_equal(claim(p, 1, 7, 1000 * S, &o, &t), PACE_GO);
    assert_int_equal(claim(p, 1, 7, 1000 * S, &o, &t), PACE_OVER);
    pace_free(p);
}

/* buckets are per user: one user's storm leaves another's untouched */
static void per_user(void **state)
{
    struct pace *p = pace_new(1, 2);
    enum claim_outcome o;
    struct ticket t;
    int i;

    for (i = 0; i < 2; i++)
        assert_int_equal(claim(p, 1, 7, S, &o, &t), PACE_GO);
    for (i = 0; i < 100; i++)
        assert_int_equal(claim(p, 1, 7, S, &o, &t), PACE_OVER);
    assert_int_equal(claim(p, 2, 7, S, &o, &t), PACE_GO);
    assert_int_equal(claim(p, 2, 7, S, &o, &t), PACE_GO);
    assert_int_equal(claim(p, 2, 7, S, &o, &t), PACE_OVER);
    pace_free(p);
}

/* over the limit, the learned ticket is the answer, for that event only */
static void known_ticket(void **state)
{
    struct pace *p = pace_new(1, 1);
    struct ticket mine = ticket_of(99, 1, 7), t;
    enum claim_outcome o;

    assert_int_equal(claim(p, 1, 7, S, &o, &t), PACE_GO);
    pace_learn(p, 1, 7, CLAIM_CREATED, &mine, S);
    memset(&t, 0, sizeof(t));
    assert_int_equal(claim(p, 1, 7, S + 1, &o, &t), PACE_KNOWN);
    assert_int_equal(o, CLAIM_EXISTING); /* a retry: created false */
    assert_int_equal(t.id, 99);
    assert_string_equal(t.code, mine.code);
    assert_string_equal(t.created_at, mine.created_at);
    /* another event: nothing known */
    assert_int_equal(claim(p, 1, 8, S + 2, &o, &t), PACE_OVER);
    pace_free(p);
}

/* a learned refusal is given again for PACE_KNOWN_US, then not */
static void known_refusal_expires(void **state)
{
    struct pace *p = pace_new(1, 1);
    enum claim_outcome o;
    struct ticket t;

    assert_int_equal(claim(p, 1, 7, S, &o, &t), PACE_GO);
    pace_learn(p, 1, 7, CLAIM_SOLD_OUT, NULL, S);
    assert_int_equal(claim(p, 1, 7, S + 1, &o, &t), PACE_KNOWN);
    assert_int_equal(o, CLAIM_SOLD_OUT);
    /* a token comes back after 1 s: it goes to the database again */
    assert_int_equal(claim(p, 1, 7, S + PACE_KNOWN_US, &o, &t), PACE_GO);
    assert_int_equal(claim(p, 1, 7, S + PACE_KNOWN_US + 1, &o, &t),
                     PACE_OVER);
    pace_free(p);
}

/* busy and unavailable are not answers to give again */
static void transient_not_learned(void **state)
{
    struct pace *p = pace_new(1, 1);
    enum claim_outcome o;
    struct ticket t;

    assert_int_equal(claim(p, 1, 7, S, &o, &t), PACE_GO);
    pace_learn(p, 1, 7, CLAIM_BUSY, NULL, S);
    assert_int_equal(claim(p, 1, 7, S + 1, &o, &t), PACE_OVER);
    pace_learn(p, 1, 7, CLAIM_UNAVAILABLE, NULL, S);
    assert_int_equal(claim(p, 1, 7, S + 2, &o, &t), PACE_OVER);
    pace_free(p);
}

/* rate 0: pacing off, every claim goes */
static void off(void **state)
{
    struct pace *p = pace_new(0, 1);
    enum claim_outcome o;
    struct ticket t;
    int i;

    for (i = 0; i < 1000; i++)
        assert_int_equal(claim(p, 1, 7, S, &o, &t), PACE_GO);
    assert_int_equal(claim(NULL, 1, 7, S, &o, &t), PACE_GO);
    assert_null(pace_new(-1, 1));
    assert_null(pace_new(1, 0));
    pace_free(p);
}

/* many users: each still gets its burst (a full table evicts the least
 * recently seen, who starts again with a full bucket) */
static void many_users(void **state)
{
    struct pace *p = pace_new(1, 1);
    enum claim_outcome o;
    struct ticket t;
    int64_t u;

    for (u = 1; u <= 100000; u++)
        assert_int_equal(claim(p, u, 7, S + u, &o, &t), PACE_GO);
    /* the last one is still there and still empty */
    assert_int_equal(claim(p, 100000, 7, S + 100001, &o, &t), PACE_OVER);
    pace_free(p);
}

/* threads claiming and learning at once (for `make SANITIZE=thread unit`):
 * every claim gets a verdict, and the buckets stay exact per user */
struct hammer {
    struct pace *p;
    int64_t user;
    int go;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    struct ticket t = ticket_of(1, h->user, 7);
    enum claim_outcome o;
    int64_t due;
    int i;

    for (i = 0; i < 20000; i++) {
        /* the clock stands still: only the burst of 5 may go */
        if (pace_claim(h->p, h->user, 7, S, 0, &o, &t, &due) == PACE_GO)
            h->go++;
        if (i % 7 == 0)
            pace_learn(h->p, h->user + 1, 7, CLAIM_SOLD_OUT, NULL, S);
    }
    return NULL;
}

static void threads(void **state)
{
    struct pace *p = pace_new(1, 5);
    struct hammer h[4];
    pthread_t t[4];
    int i;

    for (i = 0; i < 4; i++) {
        h[i].p = p;
        h[i].user = 1000 + 2 * (i / 2); /* two threads per user */
        h[i].go = 0;
        assert_int_equal(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
    }
    for (i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    /* a user's two threads share one bucket of 5 */
    assert_int_equal(h[0].go + h[1].go, 5);
    assert_int_equal(h[2].go + h[3].go, 5);
    pace_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_then_rate),
        cmocka_unit_test(reserve_within_wait),
        cmocka_unit_test(per_user),
        cmocka_unit_test(known_ticket),
        cmocka_unit_test(known_refusal_expires),
        cmocka_unit_test(transient_not_learned),
        cmocka_unit_test(off),
        cmocka_unit_test(many_users),
        cmocka_unit_test(threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
