/*
 * tickets.h: the rules of a claim, and reading tickets and events.
 *
 * Knows neither HTTP nor FastCGI: handlers pass ids in and get an outcome
 * enum (and a ticket) back.  The decision is a pure function over facts
 * read in one statement, so every contract row is unit-tested without a
 * database.  Thread-safety: each call uses only the caller's struct db.
 */
#ifndef TICKETS_TICKETS_H
#define TICKETS_TICKETS_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct db;

#define TICKET_CODE_LEN 32

struct ticket {
    int64_t id;
    int64_t user_id;
    int64_t event_id;
    char code[TICKET_CODE_LEN + 1];
    char created_at[UTIL_TIME_TEXT_MAX]; /* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" */
};

/* What a claim needs to know, read in one consistent statement. */
struct claim_facts {
    bool event_found;
    bool free_for_premium;
    bool started;      /* starts_at <= now */
    bool has_quota;    /* free_quota is not NULL */
    uint32_t free_quota;
    uint32_t free_issued;
    bool user_premium; /* the user exists and premium_until > now */
    bool paid_order;   /* an order with status pending or paid */
    bool has_ticket;
    struct ticket ticket; /* valid when has_ticket */
};

#define EVENT_TITLE_MAX 800 /* VARCHAR(200) of utf8mb4 */

struct event_row {
    int64_t id;
    char title[EVENT_TITLE_MAX + 1];
    char starts_at[UTIL_TIME_TEXT_MAX]; /* "YYYY-MM-DDTHH:MM:SSZ" */
    bool free_for_premium;
    bool has_quota;
    uint32_t free_quota;
    uint32_t free_issued;
};

/*
 * Every outcome of a claim or a read, listed once, in the contract's order
 * of checks (docs/API.md, claim table rows 3-10):
 *     X(id, name, HTTP status, error code (NULL: a ticket body), message)
 * The enum below, tickets_outcome_name() (logs), the claims counter of
 * /metrics and routes.c's answers are all made from this list.
 */
#define CLAIM_OUTCOMES(X)                                                     \
    X(EVENT_NOT_FOUND, event_not_found, 404, "event_not_found",               \
      "no such event")                                       /* row 3 */     \
    X(EXISTING, existing, 200, NULL, NULL) /* row 4: the ticket the user holds */ \
    X(NOT_PREMIUM, not_premium, 403, "not_premium",                           \
      "free tickets are for premium members only")           /* row 5 */     \
    X(NOT_FREE, not_free, 409, "not_free",                                    \
      "this event is not free for premium members")          /* row 6 */     \
    X(EVENT_STARTED, event_started, 409, "event_started",                     \
      "the event has already started")                       /* row 7 */     \
    X(PAID_ORDER, paid_order_exists, 409, "paid_order_exists",                \
      "you already hold an order for this event")            /* row 8 */     \
    X(SOLD_OUT, sold_out, 409, "sold_out",                                    \
      "no free tickets are left")                            /* row 9 */     \
    X(CREATED, created, 201, NULL, NULL) /* row 10 (from decide: "may create") */ \
    X(BUSY, busy, 503, "busy",                                                \
      "another claim of yours is still running; try again") /* no lock */    \
    X(UNAVAILABLE, unavailable, 503, "unavailable",                           \
      "the service is unavailable; try again shortly") /* database, budget */ \
    X(NO_TICKET, no_ticket, 404, "no_ticket",                                 \
      "you hold no ticket for this event")                /* GET: none */

enum claim_outcome {
#define X(id, name, status, error, message) CLAIM_##id,
    CLAIM_OUTCOMES(X)
#undef X
    CLAIM_NOUTCOMES
};

/*
 * The contract's checks in order, over facts read in one statement.
 * Returns the first row that applies; CLAIM_CREATED means "may create".
 * Pure.  From the first look (db_claim_glance, which reads the orders only
 * once the quota is used up) CLAIM_CREATED is not final: a paid order
 * (row 8) would come first; the seat UPDATE checks it under the lock.
 */
enum claim_outcome tickets_decide(const struct claim_facts *f);

/*
 * The time a claim may take (util_now_us clock).  Past deadline_us no
 * statement starts and nothing commits: the claim answers
 * CLAIM_UNAVAILABLE (so the front, whose timeout lies beyond it, gets a
 * true answer in time, never a 504 for a claim that may still commit).
 * lock_wait_us bounds GET_LOCK's wait.
 */
struct claim_budget {
    int64_t deadline_us;
    int64_t lock_wait_us;
};

/*
 * Claim the free ticket of (user, event): read the facts without a lock
 * (an existing ticket or a refusal is answered at once), else take the
 * per-user named lock, create the ticket in one transaction, release the
 * lock, all within budget.  On CLAIM_CREATED and CLAIM_EXISTING *out holds
 * the ticket.  Holds no named lock on return.
 */
enum claim_outcome tickets_claim(struct db *db, int64_t user_id,
                                 int64_t event_id,
                                 const struct claim_budget *budget,
                                 struct ticket *out);

#ifdef TICKETS_TEST_BUILD
/*
 * TEST ONLY (compiled into the test build alone): the same claim without
 * the per-user lock, so that the tests can show the unique key alone
 * still keeps one ticket per pair (TICKETS_TEST_UNSAFE_NO_LOCK).
 */
enum claim_outcome tickets_claim_unguarded(struct db *db, int64_t user_id,
                                           int64_t event_id,
                                           const struct claim_budget *budget,
                                           struct ticket *out);
#endif

/*
 * Coalescing: the leader of a user's claims in this process answers each
 * claim parked behind it in turn.  What to do with one, given the outcome
 * of the claim answered last (of last_event_id):
 */
enum coalesce_action {
    COALESCE_COPY,  /* answer *outcome at once, without the database */
    COALESCE_CLAIM, /* claim it, within *budget */
};

/*
 * Pure.  A parked claim whose request deadline has passed is answered
 * unavailable; the database failing is answered unavailable to all; a
 * claim of the event just claimed gets that outcome (a created ticket is
 * "existing" for it, as for any retry).  A claim of another event, or one
 * behind a leader that found the user's lock busy, is claimed itself with
 * the lock wait it has left of lock_timeout_us since it arrived: the user's
 * lock being held elsewhere is never a reason to answer busy sooner than a
 * claim on its own would.  With no wait left it is busy.
 */
enum coalesce_action tickets_coalesce(int64_t last_event_id,
                                      enum claim_outcome last,
                                      int64_t event_id, int64_t arrived_us,
                                      int64_t deadline_us,
                                      int64_t lock_timeout_us, int64_t now_us,
                                      enum claim_outcome *outcome,
                                      struct claim_budget *budget);

/* The user's ticket: CLAIM_EXISTING, CLAIM_NO_TICKET, CLAIM_EVENT_NOT_FOUND
 * or CLAIM_UNAVAILABLE. */
enum claim_outcome tickets_get(struct db *db, int64_t user_id,
                               int64_t event_id, struct ticket *out);

/* A short name of the outcome, for logs and metrics. */
const char *tickets_outcome_name(enum claim_outcome o);

/* Fill code with 128 bits from the OS's random source, as 32 hex digits. */
void tickets_new_code(char code[TICKET_CODE_LEN + 1]);

#endif
