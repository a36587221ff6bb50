/*
 * test_tickets.c: the claim decision (tickets_decide) row by row, in the
 * contract's order, and ticket codes.  No database: the facts are built
 * by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tickets.h"

/* Facts under which a claim may create a ticket. */
static struct claim_facts allowed(void)
{
    struct claim_facts f;

    memset(&f, 0, sizeof(f));
    f.event_found = true;
    f.free_for_premium = true;
    f.user_premium = true;
    f.has_quota = true;
    f.free_quota = 10;
    f.free_issued = 3;
    return f;
}

static void row10_created(void **state)
{
    struct claim_facts f = allowed();

    assert_int_equal(tickets_decide(&f), CLAIM_CREATED);
    f.has_quota = false; /* NULL quota: no limit */
    f.free_issued = 4000000000u;
    assert_int_equal(tickets_decide(&f), CLAIM_CREATED);
}

static void each_row_alone(void **state)
{
    struct claim_facts f;

    f = allowed();
    f.event_found = false;
    assert_int_equal(tickets_decide(&f), CLAIM_EVENT_NOT_FOUND); /* row 3 */
    f = allowed();
    f.has_ticket = true;
    assert_int_equal(tickets_decide(&f), CLAIM_EXISTING); /* row 4 */
    f = allowed();
    f.user_premium = false;
    assert_int_equal(tickets_decide(&f), CLAIM_NOT_PREMIUM); /* row 5 */
    f = allowed();
    f.free_for_premium = false;
    assert_int_equal(tickets_decide(&f), CLAIM_NOT_FREE); /* row 6 */
    f = allowed();
    f.started = true;
    assert_int_equal(tickets_decide(&f), CLAIM_EVENT_STARTED); /* row 7 */
    f = allowed();
    f.paid_order = true;
    assert_int_equal(tickets_decide(&f), CLAIM_PAID_ORDER); /* row 8 */
    f = allowed();
    f.free_issued = 10;
    assert_int_equal(tickets_decide(&f), CLAIM_SOLD_OUT); /* row 9 */
    f.free_quota = 0;
    f.free_issued = 0;
    assert_int_equal(tickets_decide(&f), CLAIM_SOLD_OUT); /* quota 0 */
    f.free_quota = 5;
    f.free_issued = 9; /* over quota (changed by hand): still sold out */
    assert_int_equal(tickets_decide(&f), CLAIM_SOLD_OUT);
}

/* When several rows apply, the earliest wins. */
static void order_of_rows(void **state)
{
    struct claim_facts f = allowed();

    f.user_premium = false;
    f.free_for_premium = false;
    f.started = true;
    f.paid_order = true;
    f.free_issued = 10;
    assert_int_equal(tickets_decide(&f), CLAIM_NOT_PREMIUM);
    f.has_ticket = true; /* an existing ticket beats every refusal */
    assert_int_equal(tickets_decide(&f), CLAIM_EXISTING);
    f.event_found = false;
    assert_int_equal(tickets_decide(&f), CLAIM_EVENT_NOT_FOUND);

    f = allowed();
    f.free_for_premium = false;
    f.started = true;
    assert_int_equal(tickets_decide(&f), CLAIM_NOT_FREE);
    f = allowed();
    f.started = true;
    f.paid_order = true;
    assert_int_equal(tickets_decide(&f), CLAIM_EVENT_STARTED);
    f = allowed();
    f.paid_order = true;
    f.free_issued = 10;
    assert_int_equal(tickets_decide(&f), CLAIM_PAID_ORDER);
}

static void codes(void **state)
{
    char a[TICKET_CODE_LEN + 1], b[TICKET_CODE_LEN + 1];
    size_t i;

    tickets_new_code(a);
    tickets_new_code(b);
    assert_int_equal(strlen(a), 32);
    for (i = 0; i < 32; i++)
        assert_true((a[i] >= '0' && a[i] <= '9') ||
                    (a[i] >= 'a' && a[i] <= 'f'));
    assert_string_not_equal(a, b);
}

static void outcome_names(void **state)
{
    assert_string_equal(tickets_outcome_name(CLAIM_PAID_ORDER),
                        "paid_order_exists");
    assert_string_equal(tickets_outcome_name(CLAIM_CREATED), "created");
    assert_string_equal(tickets_outcome_name(CLAIM_NO_TICKET), "no_ticket");
}

/* tickets_coalesce: what the leader does with a parked claim.  Times in
 * seconds from 0; the lock timeout is 3 s, the request timeout 15 s. */
#define S 1000000
#define LOCK (3 * S)

static enum coalesce_action coalesce(int64_t last_event,
                                     enum claim_outcome last, int64_t event,
                                     int64_t arrived, int64_t now,
                                     enum claim_outcome *o,
                                     struct claim_budget *b)
{
    memset(b, 0, sizeof(*b));
    return tickets_coalesce(last_event, last, event, arrived,
                            arrived + 15 * S, LOCK, now, o, b);
}

static void coalesce_same_event_copies(void **state)
{
    enum claim_outcome o;
    struct claim_budget b;

    /* a created ticket is "existing" for the claims behind it */
    assert_int_equal(coalesce(7, CLAIM_CREATED, 7, 0, S, &o, &b),
                     COALESCE_COPY);
    assert_int_equal(o, CLAIM_EXISTING);
    assert_int_equal(coalesce(7, CLAIM_SOLD_OUT, 7, 0, S, &o, &b),
                     COALESCE_COPY);
    assert_int_equal(o, CLAIM_SOLD_OUT);
    assert_int_equal(coalesce(7, CLAIM_EXISTING, 7, 0, S, &o, &b),
                     COALESCE_COPY);
    assert_int_equal(o, CLAIM_EXISTING);
}

static void coalesce_other_event_claims(void **state)
{
    enum claim_outcome o;
    struct claim_budget b;

    assert_int_equal(coalesce(7, CLAIM_CREATED, 8, S, 2 * S, &o, &b),
                     COALESCE_CLAIM);
    assert_int_equal(b.deadline_us, 16 * S);
    assert_int_equal(b.lock_wait_us, 2 * S); /* 3 s less the 1 s waited */
}

static void coalesce_busy_is_not_passed_on(void **state)
{
    enum claim_outcome o;
    struct claim_budget b;

    /* the case: the leader (event 1) waited 3 s for a lock held
     * elsewhere; a claim of event 2 came 2.9 s in: it waits its own 2.9 s */
    assert_int_equal(coalesce(1, CLAIM_BUSY, 2, (int64_t)(2.9 * S), 3 * S,
                              &o, &b), COALESCE_CLAIM);
    assert_int_equal(b.lock_wait_us, (int64_t)(2.9 * S));
    /* the same for a claim of the same event */
    assert_int_equal(coalesce(1, CLAIM_BUSY, 1, 2 * S, 3 * S, &o, &b),
                     COALESCE_CLAIM);
    assert_int_equal(b.lock_wait_us, 2 * S);
    /* one that has waited its whole lock timeout already is busy */
    assert_int_equal(coalesce(1, CLAIM_BUSY, 2, 0, 3 * S, &o, &b),
                     COALESCE_COPY);
    assert_int_equal(o, CLAIM_BUSY);
}

static void coalesce_unavailable_and_late(void **state)
{
    enum claim_outcome o;
    struct claim_budget b;

    /* the database failing: no claim behind it piles on */
    assert_int_equal(coalesce(1, CLAIM_UNAVAILABLE, 2, 0, S, &o, &b),
                     COALESCE_COPY);
    assert_int_equal(o, CLAIM_UNAVAILABLE);
    /* past its deadline a parked claim does no work, whatever came before */
    assert_int_equal(coalesce(1, CLAIM_CREATED, 2, 0, 15 * S, &o, &b),
                     COALESCE_COPY);
    assert_int_equal(o, CLAIM_UNAVAILABLE);
    assert_int_equal(coalesce(1, CLAIM_CREATED, 1, 0, 16 * S, &o, &b),
                     COALESCE_COPY);
    assert_int_equal(o, CLAIM_UNAVAILABLE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(row10_created), cmocka_unit_test(each_row_alone),
        cmocka_unit_test(order_of_rows), cmocka_unit_test(codes),
        cmocka_unit_test(outcome_names),
        cmocka_unit_test(coalesce_same_event_copies),
        cmocka_unit_test(coalesce_other_event_claims),
        cmocka_unit_test(coalesce_busy_is_not_passed_on),
        cmocka_unit_test(coalesce_unavailable_and_late),
    };

    return cmocka_run_group_tests_name("tickets", tests, NULL, NULL);
}
