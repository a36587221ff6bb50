/*
 * tickets.c: the claim protocol.
 *
 * Two guards, both required (docs/API.md, "The two guards"):
 *   1. GET_LOCK('<prefix><user_id>') around the check-and-write of a claim
 *      serialises one user's claims across every thread and instance that
 *      share the database;
 *   2. UNIQUE KEY (user_id, event_id), written with INSERT ... ON DUPLICATE
 *      KEY UPDATE, lets the database itself refuse a second ticket even if
 *      the lock was lost or bypassed.
 *
 * A claim:
 *   glance   one lock-free read (event, user, ticket, quota; the orders,
 *            the costliest part of the full read, only once the quota is
 *            used up); an existing ticket, a refusal of rows 3 to 7, and,
 *            once sold out, rows 8 and 9 are answered from it at once: a
 *            refusal writes nothing, so it needs no lock, and a sold-out
 *            storm costs one read per claim.  "May create" goes on: the
 *            seat UPDATE checks the orders under the lock;
 *   lock     GET_LOCK, before the transaction (never inside one: a user
 *            lock and row locks can deadlock undetected);
 *   write    START TRANSACTION; INSERT the ticket (ODKU: 0 affected rows
 *            means it exists, roll back and answer it); UPDATE the event's
 *            counter on condition that every rule still holds and the
 *            user's only ticket is the one just inserted (a current read of
 *            the event row, so the quota cannot be oversold by other users;
 *            0 rows: roll back, read the facts again and answer the refusal
 *            or the ticket); COMMIT at once.  The seat comes last so that
 *            the event row, which every claim of the event writes, is
 *            locked for one round trip only (docs/PROTOCOL.md);
 *   release  RELEASE_LOCK after COMMIT or ROLLBACK, on the same
 *            connection, on every path.
 * Deadlocks (1213, also Galera's certification conflicts) retry the
 * transaction under the same lock after a jittered pause, while the
 * request's budget lasts (db_retry_pause); a lock wait timeout
 * means a hung database (db_conn.c) and answers 503.  When the connection is
 * lost mid-claim the answer is 503 and the server has rolled back and
 * released: a retry answers truthfully.
 */
#include "tickets.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

enum claim_outcome tickets_decide(const struct claim_facts *f)
{
    if (!f->event_found)
        return CLAIM_EVENT_NOT_FOUND; /* contract: claim row 3 */
    if (f->has_ticket)
        return CLAIM_EXISTING; /* contract: claim row 4, before refusals */
    if (!f->user_premium)
        return CLAIM_NOT_PREMIUM; /* contract: claim row 5 */
    if (!f->free_for_premium)
        return CLAIM_NOT_FREE; /* contract: claim row 6 */
    if (f->started)
        return CLAIM_EVENT_STARTED; /* contract: claim row 7 */
    if (f->paid_order)
        return CLAIM_PAID_ORDER; /* contract: claim row 8 */
    if (f->has_quota && f->free_issued >= f->free_quota)
        return CLAIM_SOLD_OUT; /* contract: claim row 9 */
    return CLAIM_CREATED; /* contract: claim row 10 */
}

void tickets_new_code(char code[TICKET_CODE_LEN + 1])
{
    unsigned char raw[TICKET_CODE_LEN / 2];
    size_t got = 0;

    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);

        if (n < 0) {
            log_msg(LOG_ERROR, "getrandom() failed");
            abort();
        }
        got += (size_t)n;
    }
    util_hex(raw, sizeof(raw), code);
}

static void new_ticket(struct ticket *t, int64_t user_id, int64_t event_id)
{
    struct timespec now;

    memset(t, 0, sizeof(*t));
    t->user_id = user_id;
    t->event_id = event_id;
    tickets_new_code(t->code);
    clock_gettime(CLOCK_REALTIME, &now);
    util_utc_text(now.tv_sec, now.tv_nsec / 1000, t->created_at);
}

/* After a write found a rule broken: which one, read again under the lock. */
static enum claim_outcome refusal(struct db *db, int64_t user_id,
                                  int64_t event_id, struct ticket *out)
{
    struct claim_facts f;

    if (db_claim_facts(db, user_id, event_id, &f) != DB_OK)
        return CLAIM_UNAVAILABLE;
    if (f.has_ticket)
        *out = f.ticket;
    return tickets_decide(&f);
}

enum coalesce_action tickets_coalesce(int64_t last_event_id,
                                      enum claim_outcome last,
                                      int64_t event_id, int64_t arrived_us,
                                      int64_t deadline_us,
                                      int64_t lock_timeout_us, int64_t now_us,
                                      enum claim_outcome *outcome,
                                      struct claim_budget *budget)
{
    int64_t waited = now_us - arrived_us;

    *outcome = last;
    if (now_us >= deadline_us) {
        *outcome = CLAIM_UNAVAILABLE;
        return COALESCE_COPY;
    }
    if (last == CLAIM_UNAVAILABLE)
        return COALESCE_COPY;
    if (event_id == last_event_id && last != CLAIM_BUSY) {
        if (last == CLAIM_CREATED)
            *outcome = CLAIM_EXISTING;
        return COALESCE_COPY;
    }
    if (waited >= lock_timeout_us) {
        *outcome = CLAIM_BUSY;
        return COALESCE_COPY;
    }
    budget->deadline_us = deadline_us;
    budget->lock_wait_us = lock_timeout_us - waited;
    return COALESCE_CLAIM;
}

/* Past the claim's deadline: start no statement, commit nothing. */
static bool late(const struct claim_budget *b)
{
    if (util_now_us() < b->deadline_us)
        return false;
    metrics_inc(METRIC_deadline_exceeded);
    return true;
}

/*
 * One transaction attempt: the ticket first, the seat last, then COMMIT, so
 * the event row (the one row every claim of an event writes) is locked
 * from the seat UPDATE to the COMMIT right after it, nothing in between.
 * Returns CLAIM_* or -1 to try again.
 */
static int claim_attempt(struct db *db, int64_t user_id, int64_t event_id,
                         const struct claim_budget *b, struct ticket *out)
{
    enum db_status rc;
    enum claim_outcome o;

    new_ticket(out, user_id, event_id);
    if (late(b) || db_begin(db) != DB_OK)
        return CLAIM_UNAVAILABLE;
    rc = late(b) ? DB_UNAVAILABLE : db_insert_ticket(db, out);
    if (rc == DB_DUPLICATE) {
        /* only without the lock (or a lost one): the ticket exists */
        db_rollback(db);
        rc = db_get_ticket(db, user_id, event_id, out);
        if (rc == DB_OK)
            return CLAIM_EXISTING;
        /* not ours: the random code collided with another ticket's */
        return rc == DB_NOT_FOUND ? -1 : CLAIM_UNAVAILABLE;
    }
    if (rc == DB_OK)
        rc = late(b) ? DB_UNAVAILABLE : db_take_seat(db, user_id, event_id);
    if (rc == DB_NOT_FOUND) {
        /* a rule failed, or another ticket of the user is committed:
         * undo our row, read again which */
        db_rollback(db);
        o = refusal(db, user_id, event_id, out);
        /* "may create" now: the rules changed under us, try again */
        return o == CLAIM_CREATED ? -1 : (int)o;
    }
    if (rc == DB_OK) {
        rc = late(b) ? DB_UNAVAILABLE : db_commit(db);
        if (rc == DB_OK)
            return CLAIM_CREATED;
    }
    if (rc == DB_RETRY) {
        db_rollback(db);
        return -1;
    }
    db_rollback(db); /* a no-op when the connection was closed */
    return CLAIM_UNAVAILABLE;
}

/*
 * The write, under the user's lock (without it only in the test build's
 * tickets_claim_unguarded).  A connection that lost its lock (closed after
 * an error) is never used as if it held it.
 */
static enum claim_outcome claim_write(struct db *db, bool locked,
                                       int64_t user_id, int64_t event_id,
                                       const struct claim_budget *b,
                                       struct ticket *out)
{
    unsigned attempt;
    int r;

    for (attempt = 0;; attempt++) {
        if (locked && db_locks_held(db) == 0)
            return CLAIM_UNAVAILABLE;
        r = claim_attempt(db, user_id, event_id, b, out);
        if (r >= 0)
            return (enum claim_outcome)r;
        /* a jittered pause, within the request's budget (db_claim.c) */
        if (!db_retry_pause(db, attempt, b->deadline_us))
            return CLAIM_UNAVAILABLE;
    }
}

/*
 * The lock-free first look: the answer (an existing ticket, a refusal), or
 * CLAIM_CREATED for "may create: go on under the lock".
 */
static enum claim_outcome first_look(struct db *db, int64_t user_id,
                                     int64_t event_id,
                                     const struct claim_budget *budget,
                                     struct ticket *out)
{
    struct claim_facts f;
    enum claim_outcome o;

    if (late(budget) || db_claim_glance(db, user_id, event_id, &f) != DB_OK)
        return CLAIM_UNAVAILABLE;
    /* sold out: final too, the first look read the orders (row 8 first) */
    o = tickets_decide(&f);
    if (o == CLAIM_EXISTING)
        *out = f.ticket;
    return o;
}

enum claim_outcome tickets_claim(struct db *db, int64_t user_id,
                                 int64_t event_id,
                                 const struct claim_budget *budget,
                                 struct ticket *out)
{
    enum claim_outcome o;
    enum db_status rc;
    int64_t wait;

    o = first_look(db, user_id, event_id, budget, out);
    if (o != CLAIM_CREATED)
        return o;
    /* the lock wait ends by the deadline, then at least a little */
    wait = budget->deadline_us - util_now_us();
    if (wait > budget->lock_wait_us)
        wait = budget->lock_wait_us;
    if (wait <= 0 && late(budget))
        return CLAIM_UNAVAILABLE;
    rc = db_user_lock(db, user_id, wait);
    if (rc != DB_OK) /* busy or unavailable: nothing held */
        return rc == DB_LOCK_TIMEOUT ? CLAIM_BUSY : CLAIM_UNAVAILABLE;
    o = claim_write(db, true, user_id, event_id, budget, out);
    db_user_unlock(db, user_id); /* created, refused or failed: all pass here */
    return o;
}

#ifdef TICKETS_TEST_BUILD
enum claim_outcome tickets_claim_unguarded(struct db *db, int64_t user_id,
                                           int64_t event_id,
                                           const struct claim_budget *budget,
                                           struct ticket *out)
{
    enum claim_outcome o = first_look(db, user_id, event_id, budget, out);

    return o == CLAIM_CREATED
               ? claim_write(db, false, user_id, event_id, budget, out)
               : o;
}
#endif

enum claim_outcome tickets_get(struct db *db, int64_t user_id,
                               int64_t event_id, struct ticket *out)
{
    struct claim_facts f;

    if (db_claim_glance(db, user_id, event_id, &f) != DB_OK)
        return CLAIM_UNAVAILABLE;
    if (!f.event_found)
        return CLAIM_EVENT_NOT_FOUND;
    if (!f.has_ticket)
        return CLAIM_NO_TICKET;
    *out = f.ticket;
    return CLAIM_EXISTING;
}

const char *tickets_outcome_name(enum claim_outcome o)
{
    static const char *const names[] = {
#define X(id, name, status, error, message) [CLAIM_##id] = #name,
        CLAIM_OUTCOMES(X)
#undef X
    };

    return names[o];
}
