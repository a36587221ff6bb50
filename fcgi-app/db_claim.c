/*
 * db_claim.c: what a claim does on its worker's open session, in the order
 * tickets.c calls it: the per-user named lock (db_user_lock,
 * db_user_unlock), the transaction (db_begin, db_commit, db_rollback), the
 * ticket's insert and the seat (db_insert_ticket, db_take_seat), and the
 * pause before a transaction runs again (db_retry_pause).
 *
 * Only db_user_lock may reconnect, since no lock is held yet; everything
 * after it needs the session that holds the lock and fails with
 * DB_UNAVAILABLE on a closed connection.  Release closes the session when
 * RELEASE_LOCK does not answer 1: the server then frees the lock.
 */
#include "db_internal.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mysql.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "tickets.h"
#include "util.h"

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
    db_bind_str(&p[0], name, &name_len);
    memset(&p[1], 0, sizeof(p[1]));
    p[1].buffer_type = MYSQL_TYPE_DOUBLE;
    p[1].buffer = &timeout;
    db_out_i64(&r[0], &null, &got);
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
    db_bind_str(&p[0], name, &name_len);
    db_out_i64(&r[0], &null, &got);
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
    db_bind_i64(&p[0], &t->user_id);
    db_bind_i64(&p[1], &t->event_id);
    db_bind_str(&p[2], t->code, &code_len);
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

enum db_status db_take_seat(struct db *db, int64_t user_id, int64_t event_id)
{
    MYSQL_BIND p[6];
    enum db_status rc;

    if (!db->conn)
        return DB_UNAVAILABLE;
    db_bind_i64(&p[0], &event_id);
    db_bind_i64(&p[1], &user_id);
    db_bind_i64(&p[2], &user_id);
    db_bind_i64(&p[3], &event_id);
    db_bind_i64(&p[4], &user_id);
    db_bind_i64(&p[5], &event_id);
    rc = db_exec(db, ST_SEAT, p, NULL);
    if (rc != DB_OK)
        return rc;
    return mysql_stmt_affected_rows(db->stmt[ST_SEAT]) == 1 ? DB_OK
                                                            : DB_NOT_FOUND;
}

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
