/*
 * db_internal.h: what the files behind db.h share, and only they include.
 *
 * db.h is the database module's one interface; six files implement it,
 * one concern each, in the order a claim meets them:
 *
 *   db_read.c    the reads that open a request, may reconnect and run once
 *                more on a stale connection: a claim's facts and first
 *                look, a ticket, the events list
 *   db_conn.c    the connection: open (timeouts, session settings, TLS),
 *                reuse or reopen (db_ensure), close; error mapping (db_fail)
 *   db_stmt.c    the prepared statements: their text, preparing,
 *                running and fetching
 *   db_claim.c   what a claim does on its open session: the named lock, the
 *                transaction, the ticket's insert, the seat, the retry pause
 *   db_health.c  db_ping, db_ready, and what Galera adds to them
 *   db_bind.c    MYSQL_BINDs for parameters and columns (db_bind.h, which
 *                bench/claimdrv shares)
 *
 * These files and these headers are the only ones of the app that include
 * <mysql.h> (the Makefile gives no other its path): struct db stays opaque
 * to everything else.
 *
 * Status convention: enum db_status, as db.h; the int helpers return 0 or
 * -1.  Every helper here runs on the calling worker's own struct db.
 */
#ifndef TICKETS_DB_INTERNAL_H
#define TICKETS_DB_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mysql.h>

#include "config.h"
#include "db.h"
#include "db_bind.h"

/* The prepared statements of a connection (their text: db_stmt.c). */
enum stmt_id {
    ST_GLANCE,
    ST_FACTS,
    ST_TICKET,
    ST_EVENTS,
    ST_LOCK,
    ST_UNLOCK,
    ST_SEAT,
    ST_INSERT,
    NSTMT
};

struct db {
    const struct config *cfg;
    MYSQL *conn;              /* NULL: closed */
    MYSQL_STMT *stmt[NSTMT];
    int locks_held;           /* named locks this session holds */
    int64_t next_connect_us;  /* monotonic; fail fast before this */
    int64_t last_used_us;     /* monotonic; see IDLE_PING_US */
    bool reused;              /* this request found the connection open */
    bool stale;               /* and it turned out gone: retry once */
    bool proven;              /* a statement succeeded on this connection */
    bool opened_before;       /* an open was tried before: next is a reconnect */
    bool galera;              /* the server is a Galera node (wsrep_on) */
    MYSQL_STMT *wsrep_state;  /* WSREP_STATE_SQL, when galera */
    uint32_t rng;             /* xorshift32 state for the retry jitter */
};

/* db_conn.c */

/* Close the connection, its statements with it; a named lock it held is
 * freed by the server (logged).  A no-op when closed. */
void db_close(struct db *db);
/*
 * Connect if needed, only where no named lock can be held: this is the one
 * place a connection is (re)opened, between requests or at the first
 * statement of one.  DB_OK or DB_UNAVAILABLE.
 */
enum db_status db_ensure(struct db *db);
/*
 * Map a failed call on st (NULL: on the connection), logged once as what.
 * DB_RETRY for a deadlock, the session still usable; anything else closes
 * it and is DB_UNAVAILABLE.
 */
enum db_status db_fail(struct db *db, MYSQL_STMT *st, const char *what);
/*
 * After a first statement failed because its connection was gone: true
 * once, so that the caller runs it again on a new connection.
 */
bool db_retry_stale(struct db *db, enum db_status rc);

/* db_stmt.c */

/* Prepare every statement on the new connection: 0, or -1 logged. */
int db_prepare(struct db *db);
/* Execute a statement, binding params and results (either may be NULL). */
enum db_status db_exec(struct db *db, enum stmt_id id, MYSQL_BIND *params,
                       MYSQL_BIND *results);
/* Fetch the next row: DB_OK, DB_NOT_FOUND at the end, or a failure. */
enum db_status db_fetch(struct db *db, enum stmt_id id);
/* Fetch at most one row and drain the rest of the result. */
enum db_status db_fetch_one(struct db *db, enum stmt_id id);

/* db_health.c */

/*
 * Is the server a Galera node?  Sets db->galera and, if so, prepares the
 * wsrep state query; at the open of a MariaDB connection.  0, or -1 logged.
 */
int db_wsrep_detect(struct db *db);

#endif
