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

#include "db.h"

/* In the contract's order of checks (docs/API.md, claim table rows 3-10). */
enum claim_outcome {
    CLAIM_EVENT_NOT_FOUND, /* row 3: 404 */
    CLAIM_EXISTING,        /* row 4: 200, the ticket the user holds */
    CLAIM_NOT_PREMIUM,     /* row 5: 403 */
    CLAIM_NOT_FREE,        /* row 6: 409 */
    CLAIM_EVENT_STARTED,   /* row 7: 409 */
    CLAIM_PAID_ORDER,      /* row 8: 409 */
    CLAIM_SOLD_OUT,        /* row 9: 409 */
    CLAIM_CREATED,         /* row 10: 201 (from decide: "may create") */
    CLAIM_BUSY,            /* the per-user lock was not acquired: 503 */
    CLAIM_UNAVAILABLE,     /* the database failed: 503 */
    CLAIM_NO_TICKET,       /* GET: the user holds none: 404 */
};

/*
 * The contract's checks in order, over facts read in one statement.
 * Returns the first row that applies; CLAIM_CREATED means "may create".
 * Pure.  From facts without the orders (db_claim_glance) CLAIM_CREATED and
 * CLAIM_SOLD_OUT are not final: a paid order (row 8) would come first.
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
 * the ticket.  Holds no named lock on return.  With unsafe_no_lock (tests
 * only) the named lock is skipped and only the database's unique key
 * guards.
 */
enum claim_outcome tickets_claim(struct db *db, bool unsafe_no_lock,
                                 int64_t user_id, int64_t event_id,
                                 const struct claim_budget *budget,
                                 struct ticket *out);

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
