/*
 * db.h: the database module's one interface.  Its files, db_*.c and
 * db_internal.h (which lists them, one concern each), are the only ones of
 * the app that include <mysql.h> (the Makefile gives no other its path).
 *
 * One struct db per worker thread: one MySQL connection with its prepared
 * statements, owned by that thread for life and never shared.  The
 * connection opens lazily and reopens after a failure, but only where no
 * named lock can be held (a reconnect would drop the lock silently): calls
 * marked "needs the open session" below fail with DB_UNAVAILABLE instead of
 * reconnecting.  The db files know SQL, not the rules: the decisions are in
 * tickets.c.
 *
 * Status convention: enum db_status.  Every failure is logged here, once,
 * with the server's message; after DB_UNAVAILABLE the connection is closed
 * and any named lock it held is gone (the server frees a session's locks
 * when it ends).
 */
#ifndef TICKETS_DB_H
#define TICKETS_DB_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "tickets.h" /* the domain types it reads and writes */

enum db_status {
    DB_OK,
    DB_NOT_FOUND,    /* no such row, or a conditional write matched none */
    DB_DUPLICATE,    /* the insert hit an existing row: nothing written */
    DB_RETRY,        /* 1213 (deadlock, Galera conflict): roll back, retry */
    DB_LOCK_TIMEOUT, /* GET_LOCK gave up after the lock timeout */
    DB_UNAVAILABLE,  /* cannot reach the server, or it failed */
};

struct db;

/* The connection: db_conn.c */

/* Call once in main before any thread: mysql_library_init. */
int db_library_init(void);
void db_library_end(void);

/* Per worker thread: allocate (and try to connect); never returns NULL. */
struct db *db_new(const struct config *cfg);
/* Close the connection and free; also ends the thread's client state. */
void db_free(struct db *db);

/* How many named locks this connection holds (0 or 1). */
int db_locks_held(const struct db *db);

/* The TLS cipher of the open connection, or NULL (closed, or no TLS). */
const char *db_tls_cipher(const struct db *db);

/* Is the database there and fit to serve: db_health.c */

/* Reconnect if needed and check that the server answers (connected, the
 * statements prepared: --check-config).  Not readiness: see db_ready. */
enum db_status db_ping(struct db *db);

/*
 * Readiness (/api/health): reconnect if needed, run one of the app's own
 * prepared SELECTs, and on a Galera node check that it is ready and synced
 * (wsrep_ready = ON, wsrep_local_state = 4).  DB_OK or DB_UNAVAILABLE.
 */
enum db_status db_ready(struct db *db);

/* The reads that open a request: db_read.c */

/* Read the facts of (user, event); may reconnect.  DB_OK or unavailable. */
enum db_status db_claim_facts(struct db *db, int64_t user_id,
                              int64_t event_id, struct claim_facts *out);
/* The same without the order check (paid_order stays false): cheaper, for
 * the lock-free first look of a claim. */
enum db_status db_claim_glance(struct db *db, int64_t user_id,
                               int64_t event_id, struct claim_facts *out);

/* The user's ticket for the event: DB_OK, DB_NOT_FOUND; may reconnect. */
enum db_status db_get_ticket(struct db *db, int64_t user_id, int64_t event_id,
                             struct ticket *out);

/* Upcoming events ordered by starts_at, at most limit; may reconnect. */
enum db_status db_list_events(struct db *db, unsigned limit,
                              void (*row)(const struct event_row *, void *),
                              void *ctx);

/* A claim on its open session: db_claim.c */

/*
 * The per-user named lock, GET_LOCK(prefix || user_id, wait_us / 1e6 s):
 * the caller's share of TICKETS_LOCK_TIMEOUT.  Must not be held already (a
 * session may hold a name twice and would then owe two releases).  DB_OK:
 * held; DB_LOCK_TIMEOUT; DB_UNAVAILABLE.  May reconnect first, since no
 * lock is held yet.
 */
enum db_status db_user_lock(struct db *db, int64_t user_id, int64_t wait_us);
/*
 * Release it.  If RELEASE_LOCK fails or does not answer 1, the connection
 * is closed, which frees the lock on the server.  Always leaves no lock held.
 */
void db_user_unlock(struct db *db, int64_t user_id);

/* Transactions; these need the open session (no reconnect). */
enum db_status db_begin(struct db *db);
enum db_status db_commit(struct db *db);
/* Roll back; on failure the connection is closed, which rolls back too. */
void db_rollback(struct db *db);

/*
 * In a transaction, first: INSERT ... ON DUPLICATE KEY UPDATE the ticket t (user,
 * event, code and created_at set).  DB_OK: a new row, t->id set;
 * DB_DUPLICATE: a row with the same (user, event) or code exists.  Needs
 * the open session.
 */
enum db_status db_insert_ticket(struct db *db, struct ticket *t);

/*
 * In a transaction, after db_insert_ticket and right before COMMIT (it
 * locks the event row until then): count one seat of the event, if the
 * claim is allowed right now (premium user, free event, not started, no
 * pending or paid order, quota left, and the user's only ticket for it is
 * the one this transaction inserted).  DB_OK: counted; DB_NOT_FOUND: some
 * condition failed.  Needs the open session.
 */
enum db_status db_take_seat(struct db *db, int64_t user_id, int64_t event_id);

/*
 * A claim's transaction failed with DB_RETRY (or must run again): pause a
 * jittered backoff for retry number attempt (0 first) and return true, or
 * return false when the attempts are used up or the pause would not end
 * before deadline_us (util_now_us clock: the request's budget).  Both are
 * counted.
 */
bool db_retry_pause(struct db *db, unsigned attempt, int64_t deadline_us);

#endif
