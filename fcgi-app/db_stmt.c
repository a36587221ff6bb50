/*
 * db_stmt.c: the app's prepared statements: their text (a claim's from
 * claim_sql.h, shared with bench/claimdrv.c), preparing them on a new
 * connection, running, fetching (binding: db_bind.c).
 * A failure goes to db_fail (db_conn.c), which logs and maps it.
 */
#include "db_internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <mysql.h>

#include "claim_sql.h"
#include "log.h"

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

/* Prepare every statement of stmt_sql on the new connection. */
int db_prepare(struct db *db)
{
    int i;

    for (i = 0; i < NSTMT; i++) {
        db->stmt[i] = mysql_stmt_init(db->conn);
        if (!db->stmt[i] ||
            mysql_stmt_prepare(db->stmt[i], stmt_sql[i], strlen(stmt_sql[i]))) {
            log_msg(LOG_ERROR, "cannot prepare statement %d: %s", i,
                    db->stmt[i] ? mysql_stmt_error(db->stmt[i])
                                : mysql_error(db->conn));
            return -1;
        }
    }
    return 0;
}

/* Execute a statement, binding params and results (either may be NULL). */
enum db_status db_exec(struct db *db, enum stmt_id id, MYSQL_BIND *params,
                       MYSQL_BIND *results)
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
enum db_status db_fetch(struct db *db, enum stmt_id id)
{
    int rc = mysql_stmt_fetch(db->stmt[id]);

    if (rc == 0 || rc == MYSQL_DATA_TRUNCATED)
        return DB_OK;
    if (rc == MYSQL_NO_DATA)
        return DB_NOT_FOUND;
    return db_fail(db, db->stmt[id], "fetch");
}

/* Fetch at most one row and drain the rest of the result. */
enum db_status db_fetch_one(struct db *db, enum stmt_id id)
{
    enum db_status rc = db_fetch(db, id), drain;

    if (rc != DB_OK)
        return rc;
    while ((drain = db_fetch(db, id)) == DB_OK)
        ;
    return drain == DB_NOT_FOUND ? DB_OK : drain;
}
