/*
 * claimdrv_db.c: the driver's connection to MariaDB (one a thread, the
 * app's session settings, its statements prepared once), the bind helpers
 * and the fetches, the way fcgi-app/db_conn.c and db_stmt.c do them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "claimdrv.h"
#include "../fcgi-app/claim_sql.h"

/*
 * --seat-first: mode a in the order of before (issue 12): the seat UPDATE
 * first, holding the event row across the INSERT and COMMIT, its ticket
 * check a NOT EXISTS (nothing inserted yet).  For the before/after ratio in
 * one run; the app no longer sends it.
 */
static const char SQL_SEAT_FIRST[] =
    "UPDATE events SET free_issued = free_issued + 1"
    " WHERE id = ? AND free_for_premium = 1"
    " AND starts_at > UTC_TIMESTAMP()"
    " AND (free_quota IS NULL OR free_issued < free_quota)"
    " AND EXISTS(SELECT 1 FROM users WHERE id = ?"
    "            AND premium_until > UTC_TIMESTAMP())"
    " AND NOT EXISTS(SELECT 1 FROM orders WHERE user_id = ?"
    "            AND event_id = ? AND status IN ('pending', 'paid'))"
    " AND NOT EXISTS(SELECT 1 FROM free_tickets WHERE user_id = ?"
    "            AND event_id = ?)";

/*
 * --seat-call: the seat UPDATE and the COMMIT in one round trip, a call of
 * bench/seat_procedure.sql (the UPDATE's text, then COMMIT, or
 * ROLLBACK when it matched nothing; one row: 1 taken, 0 not).
 */
static const char SQL_SEAT_CALL[] = "CALL tickets_take_seat(?, ?)";

/* The app's statements, word for word: the header fcgi-app/db_stmt.c uses. */
static const char SQL_CALL[] = "CALL tickets_claim(?, ?, ?, ?, ?, ?, ?)";
static const char *const st_sql[NST] = {
    CLAIM_SQL_FACTS, CLAIM_SQL_LOCK, CLAIM_SQL_UNLOCK, CLAIM_SQL_SEAT,
    CLAIM_SQL_INSERT, SQL_CALL, CLAIM_SQL_GLANCE, NULL, SQL_SEAT_CALL};

void b_double(MYSQL_BIND *b, double *v)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_DOUBLE;
    b->buffer = v;
}

void b_time(MYSQL_BIND *b, MYSQL_TIME *v)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_DATETIME;
    b->buffer = v;
}

void connect_thr(struct thr *t)
{
    unsigned int to = 30;
    my_bool off = 0;
    int i;

    t->c = mysql_init(NULL);
    mysql_options(t->c, MYSQL_OPT_CONNECT_TIMEOUT, &to);
    mysql_options(t->c, MYSQL_OPT_READ_TIMEOUT, &to);
    mysql_options(t->c, MYSQL_OPT_WRITE_TIMEOUT, &to);
    mysql_options(t->c, MYSQL_OPT_RECONNECT, &off);
    mysql_options(t->c, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(t->c, MYSQL_INIT_COMMAND,
                  "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
    if (!mysql_real_connect(t->c, NULL, opt.user, opt.password, opt.db, 0,
                            opt.socket, 0))
        die("connect", mysql_error(t->c));
    for (i = 0; i < NST; i++) {
        if ((i == ST_CALL && opt.mode != M_B && opt.mode != M_B2) ||
            (i == ST_Q && opt.mode != M_Q) ||
            (i == ST_SEATCALL && !opt.seat_call))
            continue;
        if (i == ST_Q) {
            t->st[i] = mysql_stmt_init(t->c);
            if (mysql_stmt_prepare(t->st[i], opt.q, strlen(opt.q)))
                die(opt.q, mysql_stmt_error(t->st[i]));
            continue;
        }
        {
            const char *sql = i == ST_SEAT && opt.seat_first ? SQL_SEAT_FIRST
                                                            : st_sql[i];

            t->st[i] = mysql_stmt_init(t->c);
            if (mysql_stmt_prepare(t->st[i], sql, strlen(sql)))
                die(sql, mysql_stmt_error(t->st[i]));
        }
    }
}

int fail(struct thr *t, MYSQL_STMT *st, const char *what)
{
    fprintf(stderr, "claimdrv: thread %d: %s: %s (%u)\n", t->id, what,
            st ? mysql_stmt_error(st) : mysql_error(t->c),
            st ? mysql_stmt_errno(st) : mysql_errno(t->c));
    t->fatal++;
    return O_ERROR;
}

/* fetch one row and drain, as db_fetch_one */
int fetch_one(MYSQL_STMT *st)
{
    int rc = mysql_stmt_fetch(st), d;

    if (rc == 1)
        return -1;
    if (rc == MYSQL_NO_DATA)
        return 0;
    while ((d = mysql_stmt_fetch(st)) == 0 || d == MYSQL_DATA_TRUNCATED)
        ;
    return d == MYSQL_NO_DATA ? 1 : -1;
}

void new_code(char out[33])
{
    unsigned char raw[16];
    static const char hex[] = "0123456789abcdef";
    int i;

    if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
        die("getrandom", strerror(errno));
    for (i = 0; i < 16; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[32] = 0;
}

void new_time(MYSQL_TIME *mt)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    memset(mt, 0, sizeof(*mt));
    mt->year = (unsigned)tm.tm_year + 1900;
    mt->month = (unsigned)tm.tm_mon + 1;
    mt->day = (unsigned)tm.tm_mday;
    mt->hour = (unsigned)tm.tm_hour;
    mt->minute = (unsigned)tm.tm_min;
    mt->second = (unsigned)tm.tm_sec;
    mt->second_part = (unsigned long)(ts.tv_nsec / 1000);
    mt->time_type = MYSQL_TIMESTAMP_DATETIME;
}

int simple(struct thr *t, const char *sql)
{
    if (mysql_real_query(t->c, sql, strlen(sql)))
        return fail(t, NULL, sql);
    return 0;
}

/* One select with one integer column (GET_LOCK, RELEASE_LOCK). */
int lock_stmt(struct thr *t, int id, char *name, double *timeout,
              int64_t *got, my_bool *nul)
{
    MYSQL_STMT *st = t->st[id];
    MYSQL_BIND p[2], r[1];
    unsigned long nlen;

    db_bind_str(&p[0], name, &nlen);
    if (timeout)
        b_double(&p[1], timeout);
    db_out_i64(&r[0], nul, got);
    if (mysql_stmt_bind_param(st, p) || mysql_stmt_execute(st) ||
        mysql_stmt_bind_result(st, r) || fetch_one(st) != 1)
        return fail(t, st, id == ST_LOCK ? "GET_LOCK" : "RELEASE_LOCK");
    return 0;
}
