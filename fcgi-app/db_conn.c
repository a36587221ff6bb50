/*
 * db_conn.c: a worker's connection to MySQL/MariaDB: open, reuse, close,
 * and what a failed call means for it.
 *
 * Design notes:
 * - One connection per worker thread, autocommit on, READ COMMITTED (every
 *   statement sees what the previous lock holder committed), no automatic
 *   reconnect (it would drop a named lock without telling us), no
 *   CLIENT_FOUND_ROWS (so an ON DUPLICATE KEY UPDATE that changed nothing
 *   reports 0 affected rows, not 1).
 * - The read timeout is the lock timeout plus the database timeout, so a
 *   GET_LOCK that waits its full time is not mistaken for a lost server.
 * - The server's own waits for row and table locks (innodb_lock_wait_timeout,
 *   lock_wait_timeout) are the database timeout, so they end no later than
 *   our read timeout: a session we gave up on does not wait on in the
 *   server, holding its named lock and a connection, for the server's
 *   defaults (50 s, a day) while every retry opens another.  A lock wait
 *   timeout is then "the database is hung": closed and unavailable, not
 *   retried.
 * - After any unexpected error the connection is closed: the server then
 *   rolls back its transaction and frees its named locks, which is the only
 *   safe state when we do not know what the server did.
 * - A failed connect makes the thread fail fast for RECONNECT_PAUSE_US.  So
 *   does a fresh connection whose first statement the server refuses (a
 *   server error other than a lock wait or statement timeout, see
 *   refused()): a Galera node outside the Primary Component accepts the
 *   connect, the SETs and every PREPARE, then answers 1047 to the first
 *   real statement; without the pause every request opened one more
 *   connection to it (thousands in seconds, tests/galera).
 * - Try again (DB_RETRY) means 1213 only: a deadlock, or on Galera a
 *   certification conflict or brute-force abort, which MariaDB reports as
 *   1213.  The caller retries the transaction after db_retry_pause (a
 *   jittered backoff within the request's budget, db_claim.c).  Not
 *   retried: 1205 (a lock wait already as long as the database timeout:
 *   the database is hung), 1047 and other errors of a node that is not
 *   ready (a retry on the same node fails the same way; the health check
 *   takes it out of the load balancer and the next connect, after the
 *   pause, goes where the balancer sends it).
 */
#include "db_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

/* After a failed connect, fail fast for this long before trying again. */
#define RECONNECT_PAUSE_US 500000
/*
 * A connection idle this long is pinged before use: the server may have
 * dropped it (wait_timeout, a restart), and a request should not pay for
 * that with a 503 when a fresh connection would serve it.
 */
#define IDLE_PING_US 30000000
/*
 * MariaDB ends a session that sits idle inside a transaction this long.  A
 * claim's transaction never pauses between statements (milliseconds), so
 * this only fires when the app's host is cut off mid-claim: then the server
 * rolls back and frees the event row and the named lock at once, instead of
 * keeping every claim of that event on every other host waiting until TCP
 * notices (tests/cluster showed whole-cluster stalls for the outage).
 * MySQL has no such variable; there, set the server's wait_timeout low.
 */
#define IDLE_TRX_SQL "SET SESSION idle_transaction_timeout = 2"

int db_library_init(void)
{
    return mysql_library_init(0, NULL, NULL) ? -1 : 0;
}

void db_library_end(void)
{
    mysql_library_end();
}

void db_close(struct db *db)
{
    int i;

    if (!db->conn)
        return;
    for (i = 0; i < NSTMT; i++) {
        if (db->stmt[i])
            mysql_stmt_close(db->stmt[i]);
        db->stmt[i] = NULL;
    }
    if (db->wsrep_state)
        mysql_stmt_close(db->wsrep_state);
    db->wsrep_state = NULL;
    mysql_close(db->conn);
    db->conn = NULL;
    if (db->locks_held)
        log_msg(LOG_WARN, "closed a connection that held a named lock; the "
                          "server has released it");
    db->locks_held = 0;
}

/*
 * TLS to the server (TICKETS_DB_TLS_*): any setting makes TLS required
 * (MYSQL_OPT_SSL_ENFORCE: a server without it is refused, never a silent
 * fall back to clear text); a CA turns the check of the server's
 * certificate and host name on unless TICKETS_DB_TLS_VERIFY=0, which then
 * checks nothing (libmariadb checks the chain whenever it has a CA, so the
 * CA is only given when verifying).
 */
static void db_tls_options(MYSQL *conn, const struct config *cfg)
{
    my_bool on = 1, verify = cfg->db_tls_verify_server;

    if (!cfg->db_tls)
        return;
    mysql_optionsv(conn, MYSQL_OPT_SSL_ENFORCE, &on);
    mysql_optionsv(conn, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
    if (cfg->db_tls_ca && verify)
        mysql_optionsv(conn, MYSQL_OPT_SSL_CA, cfg->db_tls_ca);
    if (cfg->db_tls_cert) {
        mysql_optionsv(conn, MYSQL_OPT_SSL_CERT, cfg->db_tls_cert);
        mysql_optionsv(conn, MYSQL_OPT_SSL_KEY, cfg->db_tls_key);
    }
}

/* A failed connect, with the TLS settings named when TLS failed. */
static void db_log_connect_error(const struct db *db)
{
    const struct config *cfg = db->cfg;

    if (cfg->db_tls && mysql_errno(db->conn) == CR_SSL_CONNECTION_ERROR) {
        log_msg(LOG_ERROR,
                "cannot connect to the database over TLS: %s (server "
                "certificate %s; TICKETS_DB_TLS_CA=%s, "
                "TICKETS_DB_TLS_CERT=%s, TICKETS_DB_TLS_VERIFY=%d)",
                mysql_error(db->conn),
                cfg->db_tls_verify_server ? "checked" : "not checked",
                cfg->db_tls_ca ? cfg->db_tls_ca : "(system CAs)",
                cfg->db_tls_cert ? cfg->db_tls_cert : "(none)",
                cfg->db_tls_verify_server);
        return;
    }
    log_msg(LOG_ERROR, "cannot connect to the database: %s",
            mysql_error(db->conn));
}

static unsigned int ceil_seconds(int64_t us)
{
    return (unsigned int)((us + 999999) / 1000000);
}

static enum db_status db_open(struct db *db)
{
    const struct config *cfg = db->cfg;
    unsigned int connect_s = ceil_seconds(cfg->db_timeout_us);
    unsigned int read_s = ceil_seconds(cfg->lock_timeout_us + cfg->db_timeout_us);
    char waits[96];
    my_bool off = 0;
    int64_t now = util_now_us();

    if (now < db->next_connect_us)
        return DB_UNAVAILABLE;
    if (db->opened_before)
        metrics_inc(METRIC_db_reconnects);
    db->opened_before = true;
    db->proven = false;
    db->galera = false;
    db->conn = mysql_init(NULL);
    if (!db->conn) {
        log_msg(LOG_ERROR, "mysql_init() failed: out of memory");
        abort();
    }
    mysql_options(db->conn, MYSQL_OPT_CONNECT_TIMEOUT, &connect_s);
    mysql_options(db->conn, MYSQL_OPT_READ_TIMEOUT, &read_s);
    mysql_options(db->conn, MYSQL_OPT_WRITE_TIMEOUT, &connect_s);
    mysql_options(db->conn, MYSQL_OPT_RECONNECT, &off);
    mysql_options(db->conn, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(db->conn, MYSQL_INIT_COMMAND,
                  "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
    snprintf(waits, sizeof(waits),
             "SET SESSION innodb_lock_wait_timeout = %u,"
             " lock_wait_timeout = %u",
             connect_s, connect_s);
    mysql_options(db->conn, MYSQL_INIT_COMMAND, waits);
    db_tls_options(db->conn, cfg);
    if (!mysql_real_connect(db->conn, cfg->db_socket ? NULL : cfg->db_host,
                            cfg->db_user, cfg->db_password, cfg->db_name,
                            cfg->db_socket ? 0 : (unsigned int)cfg->db_port,
                            cfg->db_socket, 0)) {
        db_log_connect_error(db);
        goto fail;
    }
    if (strstr(mysql_get_server_info(db->conn), "MariaDB")) {
        if (mysql_real_query(db->conn, IDLE_TRX_SQL, strlen(IDLE_TRX_SQL))) {
            log_msg(LOG_ERROR, "cannot set idle_transaction_timeout: %s",
                    mysql_error(db->conn));
            goto fail;
        }
        if (db_wsrep_detect(db) < 0)
            goto fail;
    }
    if (db_prepare(db) < 0)
        goto fail;
    metrics_inc(METRIC_db_connects);
    return DB_OK;
fail:
    metrics_inc(METRIC_db_errors);
    metrics_inc(METRIC_db_connect_failures);
    db_close(db);
    db->next_connect_us = now + RECONNECT_PAUSE_US;
    return DB_UNAVAILABLE;
}

/*
 * Connect if needed, only where no named lock can be held: this is the one
 * place a connection is (re)opened, between requests or at the first
 * statement of one.
 */
enum db_status db_ensure(struct db *db)
{
    int64_t now = util_now_us();

    if (db->conn && db->locks_held == 0 &&
        now - db->last_used_us > IDLE_PING_US && mysql_ping(db->conn)) {
        log_msg(LOG_INFO, "idle connection lost (%s); reconnecting",
                mysql_error(db->conn));
        db_close(db);
    }
    db->last_used_us = now;
    db->reused = db->conn != NULL;
    db->stale = false;
    if (db->conn)
        return DB_OK;
    return db_open(db);
}

struct db *db_new(const struct config *cfg)
{
    struct db *db = calloc(1, sizeof(*db));

    if (!db)
        abort();
    mysql_thread_init();
    db->cfg = cfg;
    if (getrandom(&db->rng, sizeof(db->rng), 0) != (ssize_t)sizeof(db->rng))
        db->rng = (uint32_t)util_now_us();
    db->rng |= 1; /* xorshift32 must not start at 0 */
    db_ensure(db); /* open at start; a failure is retried on first use */
    return db;
}

void db_free(struct db *db)
{
    if (!db)
        return;
    db_close(db);
    free(db);
    mysql_thread_end();
}

const char *db_tls_cipher(const struct db *db)
{
    return db->conn ? mysql_get_ssl_cipher(db->conn) : NULL;
}

int db_locks_held(const struct db *db)
{
    return db->locks_held;
}

/*
 * A server error that refuses the statement (1047 on a Galera node that is
 * not ready, a privilege, a missing table), as opposed to one that ran and
 * waited too long: a lock wait timeout or a statement timeout says the
 * database is busy or hung, not that this connection is useless, and a
 * pause after it would turn away the first requests once the lock goes.
 */
static bool refused(unsigned int err)
{
    return err > 0 && err < CR_MIN_ERROR && err != ER_LOCK_WAIT_TIMEOUT &&
           err != ER_STATEMENT_TIMEOUT && err != ER_QUERY_INTERRUPTED;
}

/*
 * Map a failed call.  A deadlock leaves the session usable; anything else,
 * a lock wait timeout included, closes it (see the file comment).
 */
enum db_status db_fail(struct db *db, MYSQL_STMT *st, const char *what)
{
    unsigned int err = st ? mysql_stmt_errno(st) : mysql_errno(db->conn);
    const char *msg = st ? mysql_stmt_error(st) : mysql_error(db->conn);

    if (err == ER_LOCK_DEADLOCK) {
        log_msg(LOG_WARN, "%s: %s (will retry)", what, msg);
        return DB_RETRY;
    }
    log_msg(LOG_ERROR, "%s failed: %s (%u)", what, msg, err);
    metrics_inc(METRIC_db_errors);
    if (!db->proven && refused(err)) {
        /* the first statement of a fresh connection, refused by the
         * server: a failed connect (see the file comment) */
        metrics_inc(METRIC_db_connect_failures);
        db->next_connect_us = util_now_us() + RECONNECT_PAUSE_US;
    }
    /* a connection opened before this request and now gone (the server
     * restarted, or dropped it): a fresh one may well work */
    db->stale = db->reused && db->locks_held == 0 &&
                (err == CR_SERVER_GONE_ERROR || err == CR_SERVER_LOST);
    db_close(db);
    return DB_UNAVAILABLE;
}

/*
 * After a first statement failed because its connection was gone: true
 * once, so that the caller runs it again on a new connection.  Only for
 * statements that open a request (no lock held, nothing written), so a
 * request is not answered 503 for a server restart it did not see.
 */
bool db_retry_stale(struct db *db, enum db_status rc)
{
    bool retry = rc == DB_UNAVAILABLE && db->stale;

    db->stale = false;
    return retry;
}
