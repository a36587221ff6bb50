/*
 * db.c: MySQL/MariaDB access through libmariadb prepared statements.
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
 *   jittered backoff within the request's budget).  Not retried: 1205
 *   (a lock wait already as long as the database timeout: the database is
 *   hung), 1047 and other errors of a node that is not ready (a retry on
 *   the same node fails the same way; the health check takes it out of
 *   the load balancer and the next connect, after the pause, goes where
 *   the balancer sends it).
 * - Readiness (db_ready, /api/health) runs a real prepared statement of
 *   the app, not a ping (mysql_ping succeeds on a Galera node that refuses
 *   every query); on Galera (wsrep_on) the node must also be ready
 *   (wsrep_ready = ON) and synced (wsrep_local_state = 4).
 */
#include "db.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>

#include "claim_sql.h"
#include "log.h"
#include "metrics.h"

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

/*
 * Retries of a claim's transaction after DB_RETRY: at most this many, each
 * after util_backoff_us(attempt, RETRY_BASE_US, RETRY_CAP_US), and only
 * while the pause ends before the request's deadline (its budget,
 * TICKETS_REQUEST_TIMEOUT from its arrival).  Galera's certification conflicts
 * come in bursts when several nodes write the same event row: an immediate
 * retry collides again.
 */
#define RETRY_MAX 8
#define RETRY_BASE_US 10000
#define RETRY_CAP_US 320000

/* Galera: is this server a cluster node?  (MariaDB only; 0 or 1.) */
#define WSREP_ON_SQL "SELECT @@global.wsrep_on"
/* Galera: is the node ready and synced?  Rows (name, value). */
#define WSREP_STATE_SQL                                                       \
    "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS" \
    " WHERE VARIABLE_NAME IN ('WSREP_READY', 'WSREP_LOCAL_STATE')"
#define WSREP_SYNCED 4

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

static const char *const stmt_sql[NSTMT] = {
    [ST_GLANCE] = CLAIM_SQL_GLANCE,
    [ST_FACTS] = CLAIM_SQL_FACTS,
    [ST_TICKET] = "SELECT t.id, t.code, t.created_at"
                  " FROM free_tickets t WHERE t.user_id = ? AND t.event_id = ?",
    [ST_EVENTS] =
        "SELECT id, title, DATE_FORMAT(starts_at, '%Y-%m-%dT%H:%i:%sZ'),"
        " free_for_premium, free_quota, free_issued FROM events"
        " WHERE starts_at > UTC_TIMESTAMP() ORDER BY starts_at, id LIMIT ?",
    [ST_LOCK] = CLAIM_SQL_LOCK,
    [ST_UNLOCK] = CLAIM_SQL_UNLOCK,
    [ST_SEAT] = CLAIM_SQL_SEAT,
    [ST_INSERT] = CLAIM_SQL_INSERT,
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

int db_library_init(void)
{
    return mysql_library_init(0, NULL, NULL) ? -1 : 0;
}

void db_library_end(void)
{
    mysql_library_end();
}

static void db_close(struct db *db)
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

/*
 * Is the server a Galera node?  Sets db->galera and, if so, prepares
 * WSREP_STATE_SQL.  A server built without wsrep knows no @@wsrep_on
 * (1193): not a node.  -1 on any other failure.
 */
static int wsrep_detect(struct db *db)
{
    MYSQL_RES *res;
    MYSQL_ROW row;

    if (mysql_real_query(db->conn, WSREP_ON_SQL, strlen(WSREP_ON_SQL))) {
        if (mysql_errno(db->conn) == ER_UNKNOWN_SYSTEM_VARIABLE)
            return 0;
        log_msg(LOG_ERROR, "cannot read @@wsrep_on: %s", mysql_error(db->conn));
        return -1;
    }
    res = mysql_store_result(db->conn);
    if (!res) {
        log_msg(LOG_ERROR, "cannot read @@wsrep_on: %s", mysql_error(db->conn));
        return -1;
    }
    row = mysql_fetch_row(res);
    db->galera = row && row[0] && strcmp(row[0], "1") == 0;
    mysql_free_result(res);
    if (!db->galera)
        return 0;
    db->wsrep_state = mysql_stmt_init(db->conn);
    if (!db->wsrep_state ||
        mysql_stmt_prepare(db->wsrep_state, WSREP_STATE_SQL,
                           strlen(WSREP_STATE_SQL))) {
        log_msg(LOG_ERROR, "cannot prepare the wsrep state query: %s",
                db->wsrep_state ? mysql_stmt_error(db->wsrep_state)
                                : mysql_error(db->conn));
        return -1;
    }
    return 0;
}

static enum db_status db_open(struct db *db)
{
    const struct config *cfg = db->cfg;
    unsigned int connect_s = ceil_seconds(cfg->db_timeout_us);
    unsigned int read_s = ceil_seconds(cfg->lock_timeout_us + cfg->db_timeout_us);
    char waits[96];
    my_bool off = 0;
    int64_t now = util_now_us();
    int i;

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
        if (wsrep_detect(db) < 0)
            goto fail;
    }
    for (i = 0; i < NSTMT; i++) {
        db->stmt[i] = mysql_stmt_init(db->conn);
        if (!db->stmt[i] ||
            mysql_stmt_prepare(db->stmt[i], stmt_sql[i], strlen(stmt_sql[i]))) {
            log_msg(LOG_ERROR, "cannot prepare statement %d: %s", i,
                    db->stmt[i] ? mysql_stmt_error(db->stmt[i])
                                : mysql_error(db->conn));
            goto fail;
        }
    }
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
static enum db_status db_ensure(struct db *db)
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
static enum db_status db_fail(struct db *db, MYSQL_STMT *st, const char *what)
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
static bool db_retry_stale(struct db *db, enum db_status rc)
{
    bool retry = rc == DB_UNAVAILABLE && db->stale;

    db->stale = false;
    return retry;
}

static void bind_i64(MYSQL_BIND *b, const int64_t *v)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = (void *)(uintptr_t)v;
}

static void bind_str(MYSQL_BIND *b, const char *s, unsigned long *len)
{
    memset(b, 0, sizeof(*b));
    *len = strlen(s);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)(uintptr_t)s;
    b->buffer_length = *len;
    b->length = len;
}

/* A result column: its buffer and whether it was NULL. */
struct col {
    MYSQL_BIND *b;
    my_bool is_null;
    unsigned long len;
};

static void out_i64(MYSQL_BIND *b, my_bool *is_null, int64_t *v)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
    b->is_null = is_null;
}

static void out_str(MYSQL_BIND *b, my_bool *is_null, unsigned long *len,
                    char *buf, size_t size)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = buf;
    b->buffer_length = size; /* the client NUL-terminates when it fits */
    b->is_null = is_null;
    b->length = len;
}

/* A DATETIME column, fetched as MYSQL_TIME (cheaper for the server than
 * DATE_FORMAT) and turned into text by ticket_time. */
static void out_time(MYSQL_BIND *b, my_bool *is_null, MYSQL_TIME *t)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_DATETIME;
    b->buffer = t;
    b->buffer_length = sizeof(*t);
    b->is_null = is_null;
}

/* MYSQL_TIME (UTC, as stored) to the API's text, util_tm_text's. */
static void ticket_time(const MYSQL_TIME *t, char out[UTIL_TIME_TEXT_MAX])
{
    struct tm tm = {
        .tm_year = (int)t->year - 1900,
        .tm_mon = (int)t->month - 1,
        .tm_mday = (int)t->day,
        .tm_hour = (int)t->hour,
        .tm_min = (int)t->minute,
        .tm_sec = (int)t->second,
    };

    util_tm_text(&tm, (long)t->second_part, out);
}

/* Execute a statement, binding params and results (either may be NULL). */
static enum db_status db_exec(struct db *db, enum stmt_id id,
                              MYSQL_BIND *params, MYSQL_BIND *results)
{
    MYSQL_STMT *st = db->stmt[id];

    if ((params && mysql_stmt_bind_param(st, params)) ||
        mysql_stmt_execute(st) ||
        (results && mysql_stmt_bind_result(st, results)))
        return db_fail(db, st, "statement");
    db->proven = true;
    return DB_OK;
}

/* Fetch the next row: DB_OK, DB_NOT_FOUND at the end, or a failure. */
static enum db_status db_fetch(struct db *db, enum stmt_id id)
{
    int rc = mysql_stmt_fetch(db->stmt[id]);

    if (rc == 0 || rc == MYSQL_DATA_TRUNCATED)
        return DB_OK;
    if (rc == MYSQL_NO_DATA)
        return DB_NOT_FOUND;
    return db_fail(db, db->stmt[id], "fetch");
}

/* Fetch at most one row and drain the rest of the result. */
static enum db_status db_fetch_one(struct db *db, enum stmt_id id)
{
    enum db_status rc = db_fetch(db, id), drain;

    if (rc != DB_OK)
        return rc;
    while ((drain = db_fetch(db, id)) == DB_OK)
        ;
    return drain == DB_NOT_FOUND ? DB_OK : drain;
}

static enum db_status db_ping_once(struct db *db)
{
    if (db_ensure(db) != DB_OK)
        return DB_UNAVAILABLE;
    if (mysql_ping(db->conn))
        return db_fail(db, NULL, "ping");
    return DB_OK;
}

enum db_status db_ping(struct db *db)
{
    enum db_status rc = db_ping_once(db);

    return db_retry_stale(db, rc) ? db_ping_once(db) : rc;
}

/*
 * Galera: the node is ready (wsrep_ready = ON) and synced
 * (wsrep_local_state = 4).  A donor or joiner, or a node outside the
 * Primary Component, is not: DB_NOT_FOUND, the connection stays open.
 */
static enum db_status wsrep_synced(struct db *db)
{
    MYSQL_STMT *st = db->wsrep_state;
    MYSQL_BIND r[2];
    my_bool null[2];
    unsigned long len[2];
    char name[64], value[64];
    bool ready = false, synced = false;
    int rc;

    out_str(&r[0], &null[0], &len[0], name, sizeof(name));
    out_str(&r[1], &null[1], &len[1], value, sizeof(value));
    if (mysql_stmt_execute(st) || mysql_stmt_bind_result(st, r))
        return db_fail(db, st, "wsrep state");
    while ((rc = mysql_stmt_fetch(st)) == 0 || rc == MYSQL_DATA_TRUNCATED) {
        if (null[0] || null[1])
            continue;
        if (strcasecmp(name, "WSREP_READY") == 0)
            ready = strcasecmp(value, "ON") == 0;
        else if (strcasecmp(name, "WSREP_LOCAL_STATE") == 0)
            synced = atoi(value) == WSREP_SYNCED;
    }
    if (rc != MYSQL_NO_DATA)
        return db_fail(db, st, "wsrep state fetch");
    if (!ready || !synced) {
        log_msg(LOG_INFO, "not ready: Galera node%s%s",
                ready ? "" : " not ready (wsrep_ready)",
                synced ? "" : " not synced (wsrep_local_state)");
        return DB_NOT_FOUND;
    }
    return DB_OK;
}

/*
 * One of the app's own prepared statements (a ticket looked up by its
 * unique key, for a user that cannot exist: no row), then Galera's state.
 */
static enum db_status ready_once(struct db *db)
{
    int64_t none = 0;
    struct ticket t;
    MYSQL_BIND p[2], r[3];
    my_bool null[3];
    unsigned long len[3];
    MYSQL_TIME created;
    enum db_status rc;

    if (db_ensure(db) != DB_OK)
        return DB_UNAVAILABLE;
    bind_i64(&p[0], &none);
    bind_i64(&p[1], &none);
    out_i64(&r[0], &null[0], &t.id);
    out_str(&r[1], &null[1], &len[1], t.code, sizeof(t.code));
    out_time(&r[2], &null[2], &created);
    rc = db_exec(db, ST_TICKET, p, r);
    if (rc == DB_OK)
        rc = db_fetch_one(db, ST_TICKET);
    if (rc == DB_NOT_FOUND)
        rc = DB_OK;
    if (rc == DB_OK && db->galera)
        rc = wsrep_synced(db);
    return rc == DB_OK ? DB_OK : DB_UNAVAILABLE;
}

enum db_status db_ready(struct db *db)
{
    enum db_status rc = ready_once(db);

    if (db_retry_stale(db, rc))
        rc = ready_once(db);
    if (rc != DB_OK)
        metrics_inc(METRIC_health_unready);
    return rc;
}

static uint32_t xorshift32(uint32_t *s)
{
    uint32_t x = *s;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

bool db_retry_pause(struct db *db, unsigned attempt, int64_t deadline_us)
{
    int64_t pause = util_backoff_us(attempt, RETRY_BASE_US, RETRY_CAP_US,
                                    xorshift32(&db->rng));
    struct timespec ts;

    if (attempt >= RETRY_MAX || util_now_us() + pause >= deadline_us) {
        metrics_inc(METRIC_tx_retry_giveups);
        log_msg(LOG_WARN, "claim gave up after %u attempts", attempt + 1);
        return false;
    }
    metrics_inc(METRIC_tx_retries);
    ts.tv_sec = (time_t)(pause / 1000000);
    ts.tv_nsec = (long)(pause % 1000000) * 1000;
    while (nanosleep(&ts, &ts) != 0)
        ;
    return true;
}

/*
 * The facts of a claim: the full read (ST_FACTS) or the first look
 * (ST_GLANCE: the order column only once the quota is used up, else 0).
 * Both have the same columns and parameters in the same order.
 */
static enum db_status claim_facts_once(struct db *db, bool full,
                                       int64_t user_id, int64_t event_id,
                                       struct claim_facts *f)
{
    enum stmt_id id = full ? ST_FACTS : ST_GLANCE;
    int i;
    MYSQL_BIND p[4], r[9];
    my_bool null[9];
    unsigned long len[9];
    int64_t v[7];
    MYSQL_TIME created;
    enum db_status rc;

    memset(f, 0, sizeof(*f));
    if (db_ensure(db) != DB_OK)
        return DB_UNAVAILABLE;
    bind_i64(&p[0], &user_id); /* users (glance: orders) */
    bind_i64(&p[1], &user_id); /* orders (glance: users) */
    bind_i64(&p[2], &user_id); /* free_tickets */
    bind_i64(&p[3], &event_id);
    for (i = 0; i < 7; i++)
        out_i64(&r[i], &null[i], &v[i]);
    out_str(&r[7], &null[7], &len[7], f->ticket.code, sizeof(f->ticket.code));
    out_time(&r[8], &null[8], &created);
    rc = db_exec(db, id, p, r);
    if (rc == DB_OK)
        rc = db_fetch_one(db, id);
    if (rc == DB_NOT_FOUND)
        return DB_OK; /* no such event: event_found stays false */
    if (rc != DB_OK)
        return rc == DB_RETRY ? DB_UNAVAILABLE : rc;
    f->event_found = true;
    f->free_for_premium = v[0] != 0;
    f->started = v[1] != 0;
    f->has_quota = !null[2];
    f->free_quota = null[2] ? 0 : (uint32_t)v[2];
    f->free_issued = (uint32_t)v[3];
    f->user_premium = v[4] != 0;
    f->paid_order = v[5] != 0;
    f->has_ticket = !null[6];
    if (f->has_ticket) {
        f->ticket.id = v[6];
        ticket_time(&created, f->ticket.created_at);
        f->ticket.user_id = user_id;
        f->ticket.event_id = event_id;
    }
    return DB_OK;
}

static enum db_status claim_facts(struct db *db, bool full, int64_t user_id,
                                  int64_t event_id, struct claim_facts *f)
{
    enum db_status rc = claim_facts_once(db, full, user_id, event_id, f);

    return db_retry_stale(db, rc)
               ? claim_facts_once(db, full, user_id, event_id, f)
               : rc;
}

enum db_status db_claim_facts(struct db *db, int64_t user_id,
                              int64_t event_id, struct claim_facts *f)
{
    return claim_facts(db, true, user_id, event_id, f);
}

enum db_status db_claim_glance(struct db *db, int64_t user_id,
                               int64_t event_id, struct claim_facts *f)
{
    return claim_facts(db, false, user_id, event_id, f);
}

static enum db_status get_ticket_once(struct db *db, int64_t user_id,
                                      int64_t event_id, struct ticket *t)
{
    MYSQL_BIND p[2], r[3];
    my_bool null[3];
    unsigned long len[3];
    MYSQL_TIME created;
    enum db_status rc;

    memset(t, 0, sizeof(*t));
    if (db_ensure(db) != DB_OK)
        return DB_UNAVAILABLE;
    bind_i64(&p[0], &user_id);
    bind_i64(&p[1], &event_id);
    out_i64(&r[0], &null[0], &t->id);
    out_str(&r[1], &null[1], &len[1], t->code, sizeof(t->code));
    out_time(&r[2], &null[2], &created);
    rc = db_exec(db, ST_TICKET, p, r);
    if (rc == DB_OK)
        rc = db_fetch_one(db, ST_TICKET);
    if (rc == DB_OK)
        ticket_time(&created, t->created_at);
    if (rc == DB_RETRY)
        rc = DB_UNAVAILABLE;
    t->user_id = user_id;
    t->event_id = event_id;
    return rc;
}

enum db_status db_get_ticket(struct db *db, int64_t user_id, int64_t event_id,
                             struct ticket *t)
{
    enum db_status rc = get_ticket_once(db, user_id, event_id, t);

    return db_retry_stale(db, rc) ? get_ticket_once(db, user_id, event_id, t)
                                  : rc;
}

static enum db_status list_events_once(struct db *db, unsigned limit,
                                       void (*row)(const struct event_row *,
                                                   void *),
                                       void *ctx, unsigned *rows)
{
    MYSQL_BIND p[1], r[6];
    my_bool null[6];
    unsigned long len[6];
    int64_t lim = limit, v[3];
    struct event_row e;
    enum db_status rc;

    if (db_ensure(db) != DB_OK)
        return DB_UNAVAILABLE;
    bind_i64(&p[0], &lim);
    out_i64(&r[0], &null[0], &e.id);
    out_str(&r[1], &null[1], &len[1], e.title, sizeof(e.title));
    out_str(&r[2], &null[2], &len[2], e.starts_at, sizeof(e.starts_at));
    out_i64(&r[3], &null[3], &v[0]);
    out_i64(&r[4], &null[4], &v[1]);
    out_i64(&r[5], &null[5], &v[2]);
    rc = db_exec(db, ST_EVENTS, p, r);
    while (rc == DB_OK && (rc = db_fetch(db, ST_EVENTS)) == DB_OK) {
        e.free_for_premium = v[0] != 0;
        e.has_quota = !null[4];
        e.free_quota = null[4] ? 0 : (uint32_t)v[1];
        e.free_issued = (uint32_t)v[2];
        row(&e, ctx);
        (*rows)++;
    }
    if (rc == DB_NOT_FOUND)
        return DB_OK;
    return rc == DB_RETRY ? DB_UNAVAILABLE : rc;
}

enum db_status db_list_events(struct db *db, unsigned limit,
                              void (*row)(const struct event_row *, void *),
                              void *ctx)
{
    unsigned rows = 0;
    enum db_status rc = list_events_once(db, limit, row, ctx, &rows);

    /* retried only when it failed before handing out any row */
    if (db_retry_stale(db, rc) && rows == 0)
        rc = list_events_once(db, limit, row, ctx, &rows);
    return rc;
}

static void lock_name(const struct db *db, int64_t user_id, char *out,
                      size_t size)
{
    snprintf(out, size, "%s%" PRId64, db->cfg->lock_prefix, user_id);
}

enum db_status db_user_lock(struct db *db, int64_t user_id, int64_t wait_us)
{
    char name[CONFIG_LOCK_NAME_MAX + 1];
    unsigned long name_len;
    double timeout = (double)wait_us / 1e6;
    MYSQL_BIND p[2], r[1];
    my_bool null = 0;
    int64_t got = 0, t0;
    enum db_status rc;

    if (db->locks_held) {
        log_msg(LOG_ERROR, "bug: GET_LOCK while a named lock is held");
        abort();
    }
    if (db_ensure(db) != DB_OK)
        return DB_UNAVAILABLE;
    lock_name(db, user_id, name, sizeof(name));
    bind_str(&p[0], name, &name_len);
    memset(&p[1], 0, sizeof(p[1]));
    p[1].buffer_type = MYSQL_TYPE_DOUBLE;
    p[1].buffer = &timeout;
    out_i64(&r[0], &null, &got);
    t0 = util_now_us();
    rc = db_exec(db, ST_LOCK, p, r);
    if (rc == DB_OK)
        rc = db_fetch_one(db, ST_LOCK);
    metrics_lock_wait(util_now_us() - t0);
    if (rc == DB_RETRY) /* a lock deadlock: we are the victim, not holding */
        return DB_LOCK_TIMEOUT;
    if (rc != DB_OK)
        return DB_UNAVAILABLE;
    if (null) {
        /* killed or out of memory: we cannot know what we hold, start over */
        log_msg(LOG_ERROR, "GET_LOCK('%s') returned NULL", name);
        metrics_inc(METRIC_db_errors);
        db_close(db);
        return DB_UNAVAILABLE;
    }
    if (got != 1) {
        metrics_inc(METRIC_lock_timeouts);
        return DB_LOCK_TIMEOUT;
    }
    db->locks_held = 1;
    return DB_OK;
}

void db_user_unlock(struct db *db, int64_t user_id)
{
    char name[CONFIG_LOCK_NAME_MAX + 1];
    unsigned long name_len;
    MYSQL_BIND p[1], r[1];
    my_bool null = 0;
    int64_t got = 0;
    enum db_status rc;

    if (!db->conn || !db->locks_held) {
        db->locks_held = 0; /* the session ended, and the lock with it */
        return;
    }
    lock_name(db, user_id, name, sizeof(name));
    bind_str(&p[0], name, &name_len);
    out_i64(&r[0], &null, &got);
    rc = db_exec(db, ST_UNLOCK, p, r);
    if (rc == DB_OK)
        rc = db_fetch_one(db, ST_UNLOCK);
    if (rc != DB_OK || null || got != 1) {
        /* closing the session is the release that cannot fail */
        if (rc == DB_OK || rc == DB_RETRY) {
            log_msg(LOG_ERROR, "RELEASE_LOCK('%s') did not release it", name);
            metrics_inc(METRIC_db_errors);
        }
        db_close(db);
    }
    db->locks_held = 0;
}

/* Transaction control needs the session: never reconnect here. */
static enum db_status db_simple(struct db *db, const char *sql,
                                const char *what)
{
    if (!db->conn)
        return DB_UNAVAILABLE;
    if (mysql_real_query(db->conn, sql, strlen(sql)))
        return db_fail(db, NULL, what);
    db->proven = true;
    return DB_OK;
}

enum db_status db_begin(struct db *db)
{
    return db_simple(db, "START TRANSACTION", "START TRANSACTION");
}

enum db_status db_commit(struct db *db)
{
    return db_simple(db, "COMMIT", "COMMIT");
}

void db_rollback(struct db *db)
{
    if (db_simple(db, "ROLLBACK", "ROLLBACK") == DB_RETRY)
        db_close(db);
}

enum db_status db_take_seat(struct db *db, int64_t user_id, int64_t event_id)
{
    MYSQL_BIND p[6];
    enum db_status rc;

    if (!db->conn)
        return DB_UNAVAILABLE;
    bind_i64(&p[0], &event_id);
    bind_i64(&p[1], &user_id);
    bind_i64(&p[2], &user_id);
    bind_i64(&p[3], &event_id);
    bind_i64(&p[4], &user_id);
    bind_i64(&p[5], &event_id);
    rc = db_exec(db, ST_SEAT, p, NULL);
    if (rc != DB_OK)
        return rc;
    return mysql_stmt_affected_rows(db->stmt[ST_SEAT]) == 1 ? DB_OK
                                                            : DB_NOT_FOUND;
}

/* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" to MYSQL_TIME. */
static int parse_time(const char *s, MYSQL_TIME *t)
{
    unsigned y, mo, d, h, mi, sec;
    unsigned long us;

    memset(t, 0, sizeof(*t));
    if (sscanf(s, "%4u-%2u-%2uT%2u:%2u:%2u.%6luZ", &y, &mo, &d, &h, &mi, &sec,
               &us) != 7)
        return -1;
    t->year = y;
    t->month = mo;
    t->day = d;
    t->hour = h;
    t->minute = mi;
    t->second = sec;
    t->second_part = us;
    t->time_type = MYSQL_TIMESTAMP_DATETIME;
    return 0;
}

enum db_status db_insert_ticket(struct db *db, struct ticket *t)
{
    MYSQL_BIND p[4];
    MYSQL_TIME created;
    unsigned long code_len;
    enum db_status rc;

    if (!db->conn)
        return DB_UNAVAILABLE;
    if (parse_time(t->created_at, &created) < 0) {
        log_msg(LOG_ERROR, "bug: bad ticket time '%s'", t->created_at);
        abort();
    }
    bind_i64(&p[0], &t->user_id);
    bind_i64(&p[1], &t->event_id);
    bind_str(&p[2], t->code, &code_len);
    memset(&p[3], 0, sizeof(p[3]));
    p[3].buffer_type = MYSQL_TYPE_DATETIME;
    p[3].buffer = &created;
    rc = db_exec(db, ST_INSERT, p, NULL);
    if (rc != DB_OK)
        return rc;
    /* 1: inserted; 0: the row exists (id = id changed nothing) */
    if (mysql_stmt_affected_rows(db->stmt[ST_INSERT]) != 1)
        return DB_DUPLICATE;
    t->id = (int64_t)mysql_stmt_insert_id(db->stmt[ST_INSERT]);
    return DB_OK;
}
