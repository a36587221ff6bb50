/*
 * db_health.c: is the database there and fit to serve: db_ping
 * (--check-config) and db_ready (/api/health), and what Galera adds.
 *
 * Readiness (db_ready) runs a real prepared statement of the app, not a
 * ping (mysql_ping succeeds on a Galera node that refuses every query); on
 * Galera (wsrep_on) the node must also be ready (wsrep_ready = ON) and
 * synced (wsrep_local_state = 4).  Whether the server is a Galera node is
 * read once per connection, when db_conn.c opens it (db_wsrep_detect).
 */
#include "db_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mysql.h>
#include <mysqld_error.h>

#include "log.h"
#include "metrics.h"

/* Galera: is this server a cluster node?  (MariaDB only; 0 or 1.) */
#define WSREP_ON_SQL "SELECT @@global.wsrep_on"
/* Galera: is the node ready and synced?  Rows (name, value). */
#define WSREP_STATE_SQL                                                       \
    "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS" \
    " WHERE VARIABLE_NAME IN ('WSREP_READY', 'WSREP_LOCAL_STATE')"
#define WSREP_SYNCED 4

/*
 * Is the server a Galera node?  Sets db->galera and, if so, prepares
 * WSREP_STATE_SQL.  A server built without wsrep knows no @@wsrep_on
 * (1193): not a node.  -1 on any other failure.
 */
int db_wsrep_detect(struct db *db)
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

    db_out_str(&r[0], &null[0], &len[0], name, sizeof(name));
    db_out_str(&r[1], &null[1], &len[1], value, sizeof(value));
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
    db_bind_i64(&p[0], &none);
    db_bind_i64(&p[1], &none);
    db_out_i64(&r[0], &null[0], &t.id);
    db_out_str(&r[1], &null[1], &len[1], t.code, sizeof(t.code));
    db_out_time(&r[2], &null[2], &created);
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
