/*
 * db_read.c: the reads that open a request, before any named lock: a
 * claim's facts (the full read, or its lock-free first look), the user's
 * ticket for an event, the upcoming events.  Each may reconnect first
 * (db_ensure), and runs once more on a new connection when the one it
 * found open turned out gone (db_retry_stale): a request is not answered
 * 503 for a server restart it did not see.  A deadlock (DB_RETRY) is not
 * retried here: a read is answered unavailable.
 */
#include "db_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <mysql.h>

#include "tickets.h"
#include "util.h"

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
    db_bind_i64(&p[0], &user_id); /* users (glance: orders) */
    db_bind_i64(&p[1], &user_id); /* orders (glance: users) */
    db_bind_i64(&p[2], &user_id); /* free_tickets */
    db_bind_i64(&p[3], &event_id);
    for (i = 0; i < 7; i++)
        db_out_i64(&r[i], &null[i], &v[i]);
    db_out_str(&r[7], &null[7], &len[7], f->ticket.code,
               sizeof(f->ticket.code));
    db_out_time(&r[8], &null[8], &created);
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
    db_bind_i64(&p[0], &user_id);
    db_bind_i64(&p[1], &event_id);
    db_out_i64(&r[0], &null[0], &t->id);
    db_out_str(&r[1], &null[1], &len[1], t->code, sizeof(t->code));
    db_out_time(&r[2], &null[2], &created);
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
    db_bind_i64(&p[0], &lim);
    db_out_i64(&r[0], &null[0], &e.id);
    db_out_str(&r[1], &null[1], &len[1], e.title, sizeof(e.title));
    db_out_str(&r[2], &null[2], &len[2], e.starts_at, sizeof(e.starts_at));
    db_out_i64(&r[3], &null[3], &v[0]);
    db_out_i64(&r[4], &null[4], &v[1]);
    db_out_i64(&r[5], &null[5], &v[2]);
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
