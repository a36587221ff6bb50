/*
 * claimdrv_claim.c: one claim as each mode sends it (see the modes in
 * bench/claimdrv.c): mode a statement for statement as the app, the
 * stored procedure's CALL (b, b2), the first look alone (glance, facts),
 * any one statement (q), a round trip without SQL (ping); and the
 * decision of the app's tickets_decide on the facts read.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "claimdrv.h"

struct facts {
    bool found, free, started, has_quota, premium, paid, has_ticket;
    int64_t quota, issued, tid;
    char code[40], created[40];
};

/* the decision of tickets_decide: may this claim create? */
static int decide(const struct facts *f)
{
    if (!f->found)
        return O_NOEVENT;
    if (f->has_ticket)
        return O_EXISTING;
    if (!f->premium || !f->free || f->started || f->paid ||
        (f->has_quota && f->issued >= f->quota))
        return O_REFUSED;
    return O_CREATED;
}

/* The app's first look (full = false: ST_GLANCE, the orders only once
 * sold out) or its full facts read (ST_FACTS), as claim_facts_once in
 * fcgi-app/db_read.c: the same 4 parameters and 9 columns. */
static int read_facts(struct thr *t, bool full, int64_t user, int64_t event,
                      struct facts *f)
{
    MYSQL_STMT *st = t->st[full ? ST_FACTS : ST_GLANCE];
    int i, rc;
    MYSQL_BIND p[4], r[9];
    my_bool nul[9];
    unsigned long len[9];
    int64_t v[7];
    MYSQL_TIME created;

    memset(f, 0, sizeof(*f));
    db_bind_i64(&p[0], &user);
    db_bind_i64(&p[1], &user);
    db_bind_i64(&p[2], &user);
    db_bind_i64(&p[3], &event);
    for (i = 0; i < 7; i++)
        db_out_i64(&r[i], &nul[i], &v[i]);
    db_out_str(&r[7], &nul[7], &len[7], f->code, sizeof(f->code));
    memset(&r[8], 0, sizeof(r[8]));
    r[8].buffer_type = MYSQL_TYPE_DATETIME;
    r[8].buffer = &created;
    r[8].buffer_length = sizeof(created);
    r[8].is_null = &nul[8];
    if (mysql_stmt_bind_param(st, p) || mysql_stmt_execute(st) ||
        mysql_stmt_bind_result(st, r))
        return fail(t, st, "facts");
    rc = fetch_one(st);
    if (rc < 0)
        return fail(t, st, "facts fetch");
    if (rc == 0)
        return 0;
    f->found = true;
    f->free = v[0] != 0;
    f->started = v[1] != 0;
    f->has_quota = !nul[2];
    f->quota = v[2];
    f->issued = v[3];
    f->premium = v[4] != 0;
    f->paid = v[5] != 0;
    f->has_ticket = !nul[6];
    f->tid = v[6];
    return 0;
}

/* The lock-free part of the app's claim (tickets_claim): the first look,
 * which reads the orders itself once the quota is used up. */
static int do_facts(struct thr *t, int64_t user, int64_t event,
                    struct facts *f)
{
    return read_facts(t, false, user, event, f) ? -1 : 0;
}

static void stage(struct thr *t, enum stage s)
{
    int64_t now = now_us();

    t->stage_us[s] += now - t->mark;
    t->stage_n[s]++;
    t->mark = now;
}

/* The seat UPDATE (rolled back when it matches nothing): 0 taken, 1 not,
 * -1 failed.  The app's statement, or with --seat-first the order and
 * statement of before (seat first, its ticket check NOT EXISTS). */
static int seat(struct thr *t, int64_t user, int64_t event)
{
    MYSQL_STMT *st = t->st[ST_SEAT];
    MYSQL_BIND p[6];

    db_bind_i64(&p[0], &event);
    db_bind_i64(&p[1], &user);
    db_bind_i64(&p[2], &user);
    db_bind_i64(&p[3], &event);
    db_bind_i64(&p[4], &user);
    db_bind_i64(&p[5], &event);
    if (mysql_stmt_bind_param(st, p) || mysql_stmt_execute(st)) {
        fail(t, st, "seat");
        return -1;
    }
    stage(t, S_SEAT);
    if (mysql_stmt_affected_rows(st) != 1) {
        simple(t, "ROLLBACK");
        return 1;
    }
    return 0;
}

/* --seat-call: CALL tickets_take_seat: 0 taken and committed, 1 refused
 * (rolled back), -1 failed. */
static int seat_call(struct thr *t, int64_t user, int64_t event)
{
    MYSQL_STMT *st = t->st[ST_SEATCALL];
    MYSQL_BIND p[2], r[1];
    my_bool nul = 0;
    int64_t got = -1;
    int rc;

    db_bind_i64(&p[0], &event);
    db_bind_i64(&p[1], &user);
    db_out_i64(&r[0], &nul, &got);
    if (mysql_stmt_bind_param(st, p) || mysql_stmt_execute(st) ||
        mysql_stmt_bind_result(st, r) || fetch_one(st) != 1) {
        fail(t, st, "seat call");
        return -1;
    }
    while ((rc = mysql_stmt_next_result(st)) == 0)
        if (mysql_stmt_field_count(st) > 0)
            while (mysql_stmt_fetch(st) == 0)
                ;
    if (rc > 0) {
        fail(t, st, "seat call next_result");
        return -1;
    }
    stage(t, S_SEAT);
    return got == 1 ? 0 : 1;
}

/* Mode a: the app's claim of a new pair, statement for statement. */
static int claim_a(struct thr *t, int64_t user, int64_t event)
{
    struct facts f;
    char name[80], code[33];
    double timeout = opt.lock_timeout;
    int64_t got = 0;
    my_bool nul = 0;
    MYSQL_BIND p[6];
    MYSQL_TIME mt;
    unsigned long clen;
    int o, res, sr;

    t->mark = now_us();
    if (do_facts(t, user, event, &f))
        return O_ERROR;
    stage(t, S_FACTS);
    o = decide(&f);
    if (o != O_CREATED)
        return o;
    snprintf(name, sizeof(name), "%s%" PRId64, opt.lock_prefix, user);
    if (lock_stmt(t, ST_LOCK, name, &timeout, &got, &nul))
        return O_ERROR;
    stage(t, S_LOCK);
    if (nul || got != 1)
        return O_BUSY;
    if (simple(t, "START TRANSACTION"))
        return O_ERROR;
    stage(t, S_BEGIN);
    if (opt.seat_first && (sr = seat(t, user, event)) != 0) {
        if (sr < 0)
            return O_ERROR;
        res = O_REFUSED;
        goto release;
    }
    new_code(code);
    new_time(&mt);
    db_bind_i64(&p[0], &user);
    db_bind_i64(&p[1], &event);
    db_bind_str(&p[2], code, &clen);
    b_time(&p[3], &mt);
    if (mysql_stmt_bind_param(t->st[ST_INSERT], p) ||
        mysql_stmt_execute(t->st[ST_INSERT]))
        return fail(t, t->st[ST_INSERT], "insert");
    stage(t, S_INSERT);
    if (mysql_stmt_affected_rows(t->st[ST_INSERT]) != 1) {
        simple(t, "ROLLBACK");
        res = O_EXISTING;
        goto release;
    }
    if (opt.seat_call) {
        if ((sr = seat_call(t, user, event)) < 0)
            return O_ERROR;
        res = sr ? O_REFUSED : O_CREATED;
        goto release;
    }
    if (!opt.seat_first && (sr = seat(t, user, event)) != 0) {
        if (sr < 0)
            return O_ERROR;
        res = O_REFUSED;
        goto release;
    }
    (void)mysql_stmt_insert_id(t->st[ST_INSERT]);
    if (simple(t, "COMMIT"))
        return O_ERROR;
    stage(t, S_COMMIT);
    res = O_CREATED;
release:
    if (lock_stmt(t, ST_UNLOCK, name, NULL, &got, &nul) || nul || got != 1)
        return fail(t, NULL, "release");
    stage(t, S_UNLOCK);
    return res;
}

/* CALL tickets_claim: one row, then the end-of-call status. */
static int call_claim(struct thr *t, int64_t user, int64_t event, int fast)
{
    MYSQL_STMT *st = t->st[ST_CALL];
    MYSQL_BIND p[7], r[10];
    my_bool nul[10];
    unsigned long len[10], nlen, clen;
    int64_t v[8], fast64 = fast;
    char name[80], code[33], rcode[40], rcreated[40];
    double timeout = opt.lock_timeout;
    MYSQL_TIME mt;
    struct facts f;
    int i, rc, o;

    snprintf(name, sizeof(name), "%s%" PRId64, opt.lock_prefix, user);
    new_code(code);
    new_time(&mt);
    db_bind_i64(&p[0], &user);
    db_bind_i64(&p[1], &event);
    db_bind_str(&p[2], name, &nlen);
    b_double(&p[3], &timeout);
    db_bind_str(&p[4], code, &clen);
    b_time(&p[5], &mt);
    db_bind_i64(&p[6], &fast64);
    for (i = 0; i < 8; i++)
        db_out_i64(&r[i], &nul[i], &v[i]);
    db_out_str(&r[8], &nul[8], &len[8], rcode, sizeof(rcode));
    db_out_str(&r[9], &nul[9], &len[9], rcreated, sizeof(rcreated));
    if (mysql_stmt_bind_param(st, p) || mysql_stmt_execute(st))
        return fail(t, st, "call");
    if (mysql_stmt_field_count(st) == 0)
        return fail(t, st, "call: no result set");
    if (mysql_stmt_bind_result(st, r))
        return fail(t, st, "call bind");
    rc = fetch_one(st);
    if (rc != 1)
        return fail(t, st, "call fetch");
    /* the status of the CALL itself */
    while ((rc = mysql_stmt_next_result(st)) == 0) {
        if (mysql_stmt_field_count(st) > 0)
            while (mysql_stmt_fetch(st) == 0)
                ;
    }
    if (rc > 0)
        return fail(t, st, "call next_result");
    switch (v[0]) {
    case 0:
        return O_NOEVENT;
    case 2:
        return O_CREATED;
    case 3:
        return O_BUSY;
    case 1:
        memset(&f, 0, sizeof(f));
        f.found = true;
        f.free = v[1] != 0;
        f.started = v[2] != 0;
        f.has_quota = !nul[3];
        f.quota = v[3];
        f.issued = v[4];
        f.premium = v[5] != 0;
        f.paid = v[6] != 0;
        f.has_ticket = !nul[7];
        o = decide(&f);
        return o == O_CREATED ? O_ERROR : o;
    default:
        return fail(t, NULL, "call: unknown result");
    }
}

int claim(struct thr *t, int64_t user, int64_t event)
{
    struct facts f;
    int o;

    switch (opt.mode) {
    case M_A:
        return claim_a(t, user, event);
    case M_B:
        return call_claim(t, user, event, 1);
    case M_B2:
        if (do_facts(t, user, event, &f))
            return O_ERROR;
        o = decide(&f);
        if (o != O_CREATED)
            return o;
        return call_claim(t, user, event, 0);
    case M_Q: {
        MYSQL_STMT *st = t->st[ST_Q];
        MYSQL_BIND p[8];
        size_t i, nb = strlen(opt.qbind);

        memset(p, 0, sizeof(p));
        for (i = 0; i < nb && i < 8; i++)
            db_bind_i64(&p[i], opt.qbind[i] == 'u' ? &user : &event);
        if (mysql_stmt_bind_param(st, p) || mysql_stmt_execute(st))
            return fail(t, st, "q");
        while ((o = mysql_stmt_fetch(st)) == 0 || o == MYSQL_DATA_TRUNCATED)
            ;
        return O_EXISTING;
    }
    case M_FACTS:
    case M_GLANCE:
        if (read_facts(t, opt.mode == M_FACTS, user, event, &f))
            return O_ERROR;
        return decide(&f);
    case M_PING:
        return mysql_ping(t->c) ? fail(t, NULL, "ping") : O_EXISTING;
    }
    return O_ERROR;
}
