/*
 * claimdrv: drive MariaDB directly with the SQL of ticket claims, N threads
 * with one connection each, for the ceilings of docs/PERFORMANCE.md.
 *
 * Modes (what one "claim" costs on the wire):
 *   a        exactly what a creating claim of the app costs (fcgi-app/db_*.c,
 *            tickets.c): the first look (the glance SELECT, which reads the
 *            orders too once sold out), SELECT GET_LOCK, START
 *            TRANSACTION, INSERT ... ON DUPLICATE KEY UPDATE, the conditional
 *            seat UPDATE, COMMIT, SELECT RELEASE_LOCK: 7 round trips, prepared
 *            statements where the app prepares them, the same text, binds
 *            and session settings
 *   b        CALL tickets_claim(..., p_fast = 1): the whole claim, fast path
 *            included, in one round trip (bench/claim_procedure.sql)
 *   b2       the app's first look, then CALL tickets_claim(..., 0): the
 *            fast path stays in C, the locked part is one call (2 round trips
 *            for a new ticket, 1 for a repeat)
 *   glance   only the first look: what a repeated claim costs in the app
 *            (and in b2)
 *   facts    only the full facts SELECT (the read before the first look
 *            replaced it; and the refusal read under the lock)
 *   q:BINDS:SQL  any one prepared statement, its parameters bound in the
 *            order of BINDS (u: the user, e: the event), its rows fetched:
 *            what a statement shape costs (docs/PERFORMANCE.md)
 *   ping     mysql_ping: one round trip that runs no SQL (the floor; counted
 *            as "existing")
 * Every mode answers the claim the way the app would (the outcome is
 * counted: created, existing, refused, busy, error).
 *
 * Claim k (from a counter shared by the threads, starting at --start) is
 * the pair user = user_base + k % users, event = event_base + (k % events +
 * k / users) % events: neighbouring claims (those in flight together) are
 * of different users and mostly of different events, and the first
 * users * events claims are all different pairs; with --pairs N the counter wraps back to --start after N claims
 * (a repeat run over the pairs a run made before).  bench/lua/claim.lua maps requests to pairs the same way.
 *
 * Output: one JSON object on stdout.
 *
 *   claimdrv --socket S --user U --password-file F --db D --mode a
 *            --threads 32 --seconds 5 --users 20000 --event-base 1000
 *            --events 100 [--start K] [--pairs N] [--lock-prefix P]
 *            [--lock-timeout 3] [--seat-first | --seat-call]
 *
 * --seat-first (mode a): the order of before issue 12, the seat UPDATE
 * first (with its NOT EXISTS ticket check), then the INSERT, then COMMIT.
 * --seat-call (mode a): the INSERT, then the seat UPDATE and COMMIT in one
 * call of bench/seat_procedure.sql (a candidate, not the app).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <mysql.h>

#include "../fcgi-app/claim_sql.h"

enum mode { M_A, M_B, M_B2, M_GLANCE, M_FACTS, M_Q, M_PING };

static struct {
    const char *socket, *user, *password, *db, *lock_prefix, *q, *qbind;
    enum mode mode;
    int threads;
    double seconds, lock_timeout;
    bool seat_first, seat_call;
    int64_t users, user_base, event_base, events, start, pairs;
} opt = {
    .user = "tickets", .db = "tickets", .lock_prefix = "tickets:user:",
    .mode = M_A, .threads = 16, .seconds = 5, .lock_timeout = 3,
    .users = 1000, .user_base = 1, .event_base = 1, .events = 100,
};

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

enum { ST_FACTS, ST_LOCK, ST_UNLOCK, ST_SEAT, ST_INSERT, ST_CALL, ST_GLANCE,
       ST_Q, ST_SEATCALL, NST };
static const char *const st_sql[NST] = {
    CLAIM_SQL_FACTS, CLAIM_SQL_LOCK, CLAIM_SQL_UNLOCK, CLAIM_SQL_SEAT,
    CLAIM_SQL_INSERT, SQL_CALL, CLAIM_SQL_GLANCE, NULL, SQL_SEAT_CALL};

enum outcome { O_CREATED, O_EXISTING, O_REFUSED, O_BUSY, O_NOEVENT, O_ERROR,
               NOUT };
static const char *const out_name[NOUT] = {"created", "existing", "refused",
                                           "busy", "no_event", "error"};

/* the stages of a mode-a claim, timed from the client (wall time) */
enum stage { S_FACTS, S_LOCK, S_BEGIN, S_SEAT, S_INSERT, S_COMMIT, S_UNLOCK,
             NSTAGE };
static const char *const stage_name[NSTAGE] = {
    "facts", "get_lock", "start_transaction", "update", "insert", "commit",
    "release_lock"};

struct thr {
    pthread_t t;
    int64_t stage_us[NSTAGE];
    int64_t stage_n[NSTAGE];
    int64_t mark;
    int id;
    MYSQL *c;
    MYSQL_STMT *st[NST];
    uint32_t *lat; /* microseconds */
    size_t nlat, cap;
    uint64_t out[NOUT];
    int fatal;
};

static atomic_int_fast64_t next_pair;
static atomic_bool stop_flag;
static pthread_barrier_t ready;

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "claimdrv: %s: %s\n", what, msg);
    exit(2);
}

static void b_i64(MYSQL_BIND *b, int64_t *v)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
}

static void b_str(MYSQL_BIND *b, char *s, unsigned long *len)
{
    memset(b, 0, sizeof(*b));
    *len = strlen(s);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = s;
    b->buffer_length = *len;
    b->length = len;
}

static void b_out_i64(MYSQL_BIND *b, my_bool *isnull, int64_t *v)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
    b->is_null = isnull;
}

static void b_out_str(MYSQL_BIND *b, my_bool *isnull, unsigned long *len,
                      char *buf, size_t size)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = buf;
    b->buffer_length = size;
    b->is_null = isnull;
    b->length = len;
}

static void connect_thr(struct thr *t)
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

static int fail(struct thr *t, MYSQL_STMT *st, const char *what)
{
    fprintf(stderr, "claimdrv: thread %d: %s: %s (%u)\n", t->id, what,
            st ? mysql_stmt_error(st) : mysql_error(t->c),
            st ? mysql_stmt_errno(st) : mysql_errno(t->c));
    t->fatal++;
    return O_ERROR;
}

/* fetch one row and drain, as db_fetch_one */
static int fetch_one(MYSQL_STMT *st)
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
    b_i64(&p[0], &user);
    b_i64(&p[1], &user);
    b_i64(&p[2], &user);
    b_i64(&p[3], &event);
    for (i = 0; i < 7; i++)
        b_out_i64(&r[i], &nul[i], &v[i]);
    b_out_str(&r[7], &nul[7], &len[7], f->code, sizeof(f->code));
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

static void new_code(char out[33])
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

static void new_time(MYSQL_TIME *mt)
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

static int simple(struct thr *t, const char *sql)
{
    if (mysql_real_query(t->c, sql, strlen(sql)))
        return fail(t, NULL, sql);
    return 0;
}

/* One select with one integer column (GET_LOCK, RELEASE_LOCK). */
static int lock_stmt(struct thr *t, int id, char *name, double *timeout,
                     int64_t *got, my_bool *nul)
{
    MYSQL_STMT *st = t->st[id];
    MYSQL_BIND p[2], r[1];
    unsigned long nlen;

    b_str(&p[0], name, &nlen);
    if (timeout) {
        memset(&p[1], 0, sizeof(p[1]));
        p[1].buffer_type = MYSQL_TYPE_DOUBLE;
        p[1].buffer = timeout;
    }
    b_out_i64(&r[0], nul, got);
    if (mysql_stmt_bind_param(st, p) || mysql_stmt_execute(st) ||
        mysql_stmt_bind_result(st, r) || fetch_one(st) != 1)
        return fail(t, st, id == ST_LOCK ? "GET_LOCK" : "RELEASE_LOCK");
    return 0;
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

    b_i64(&p[0], &event);
    b_i64(&p[1], &user);
    b_i64(&p[2], &user);
    b_i64(&p[3], &event);
    b_i64(&p[4], &user);
    b_i64(&p[5], &event);
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

    b_i64(&p[0], &event);
    b_i64(&p[1], &user);
    b_out_i64(&r[0], &nul, &got);
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
    b_i64(&p[0], &user);
    b_i64(&p[1], &event);
    b_str(&p[2], code, &clen);
    memset(&p[3], 0, sizeof(p[3]));
    p[3].buffer_type = MYSQL_TYPE_DATETIME;
    p[3].buffer = &mt;
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
    b_i64(&p[0], &user);
    b_i64(&p[1], &event);
    b_str(&p[2], name, &nlen);
    memset(&p[3], 0, sizeof(p[3]));
    p[3].buffer_type = MYSQL_TYPE_DOUBLE;
    p[3].buffer = &timeout;
    b_str(&p[4], code, &clen);
    memset(&p[5], 0, sizeof(p[5]));
    p[5].buffer_type = MYSQL_TYPE_DATETIME;
    p[5].buffer = &mt;
    b_i64(&p[6], &fast64);
    for (i = 0; i < 8; i++)
        b_out_i64(&r[i], &nul[i], &v[i]);
    b_out_str(&r[8], &nul[8], &len[8], rcode, sizeof(rcode));
    b_out_str(&r[9], &nul[9], &len[9], rcreated, sizeof(rcreated));
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

static int claim(struct thr *t, int64_t user, int64_t event)
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
            b_i64(&p[i], opt.qbind[i] == 'u' ? &user : &event);
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

static void *thr_main(void *arg)
{
    struct thr *t = arg;

    mysql_thread_init();
    connect_thr(t);
    t->cap = 65536;
    t->lat = malloc(t->cap * sizeof(*t->lat));
    pthread_barrier_wait(&ready);
    while (!atomic_load(&stop_flag) && t->fatal < 10) {
        int64_t k = atomic_fetch_add(&next_pair, 1), user, event, t0, dt;
        int o;

        if (opt.pairs > 0)
            k = opt.start + (k - opt.start) % opt.pairs;
        user = opt.user_base + k % opt.users;
        event = opt.event_base + (k % opt.events + k / opt.users) % opt.events;
        t0 = now_us();
        o = claim(t, user, event);
        dt = now_us() - t0;
        t->out[o]++;
        if (t->nlat == t->cap) {
            t->cap *= 2;
            t->lat = realloc(t->lat, t->cap * sizeof(*t->lat));
        }
        t->lat[t->nlat++] = (uint32_t)dt;
        if (o == O_ERROR && t->fatal) {
            /* a failed statement leaves the session unknown: start over */
            mysql_close(t->c);
            memset(t->st, 0, sizeof(t->st));
            connect_thr(t);
        }
    }
    mysql_close(t->c);
    mysql_thread_end();
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static char *read_file_line(const char *path)
{
    static char buf[512];
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        die(path, strerror(errno));
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    if (n && buf[n - 1] == '\n')
        buf[n - 1] = 0;
    return buf;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"socket", 1, 0, 's'},       {"user", 1, 0, 'u'},
        {"password-file", 1, 0, 'p'}, {"db", 1, 0, 'd'},
        {"mode", 1, 0, 'm'},         {"threads", 1, 0, 't'},
        {"seconds", 1, 0, 'S'},      {"users", 1, 0, 'U'},
        {"user-base", 1, 0, 'B'},    {"event-base", 1, 0, 'e'},
        {"events", 1, 0, 'E'},       {"start", 1, 0, 'k'},
        {"pairs", 1, 0, 'P'},        {"lock-prefix", 1, 0, 'l'},
        {"lock-timeout", 1, 0, 'T'}, {"seat-first", 0, 0, 'F'},
        {"seat-call", 0, 0, 'C'}, {0, 0, 0, 0}};
    struct thr *th;
    uint64_t out[NOUT] = {0}, n = 0;
    uint32_t *all;
    size_t k = 0;
    int64_t t0, t1;
    int c, i, j;

    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 's': opt.socket = optarg; break;
        case 'u': opt.user = optarg; break;
        case 'p': opt.password = read_file_line(optarg); break;
        case 'd': opt.db = optarg; break;
        case 'm':
            if (!strcmp(optarg, "a")) opt.mode = M_A;
            else if (!strcmp(optarg, "b")) opt.mode = M_B;
            else if (!strcmp(optarg, "b2")) opt.mode = M_B2;
            else if (!strncmp(optarg, "q:", 2)) {
                char *c = strchr(optarg + 2, ':');
                opt.mode = M_Q;
                if (!c) die("--mode", "q:BINDS:SQL");
                *c = 0;
                opt.qbind = optarg + 2;
                opt.q = c + 1;
            }
            else if (!strcmp(optarg, "glance")) opt.mode = M_GLANCE;
            else if (!strcmp(optarg, "facts")) opt.mode = M_FACTS;
            else if (!strcmp(optarg, "ping")) opt.mode = M_PING;
            else die("--mode", "a, b, b2, glance, facts, q:BINDS:SQL or ping");
            break;
        case 't': opt.threads = atoi(optarg); break;
        case 'S': opt.seconds = atof(optarg); break;
        case 'U': opt.users = atoll(optarg); break;
        case 'B': opt.user_base = atoll(optarg); break;
        case 'e': opt.event_base = atoll(optarg); break;
        case 'E': opt.events = atoll(optarg); break;
        case 'k': opt.start = atoll(optarg); break;
        case 'P': opt.pairs = atoll(optarg); break;
        case 'l': opt.lock_prefix = optarg; break;
        case 'T': opt.lock_timeout = atof(optarg); break;
        case 'F': opt.seat_first = true; break;
        case 'C': opt.seat_call = true; break;
        default: die("usage", "see the comment at the top of claimdrv.c");
        }
    }
    if (!opt.socket || opt.threads < 1 || opt.events < 1 || opt.users < 1)
        die("usage", "--socket, --threads >= 1, --events >= 1, --users >= 1");
    if (mysql_library_init(0, NULL, NULL))
        die("mysql_library_init", "failed");
    atomic_store(&next_pair, opt.start);
    th = calloc((size_t)opt.threads, sizeof(*th));
    pthread_barrier_init(&ready, NULL, (unsigned)opt.threads + 1);
    for (i = 0; i < opt.threads; i++) {
        th[i].id = i;
        pthread_create(&th[i].t, NULL, thr_main, &th[i]);
    }
    pthread_barrier_wait(&ready); /* every connection open and prepared */
    t0 = now_us();
    usleep((useconds_t)(opt.seconds * 1e6));
    atomic_store(&stop_flag, true);
    for (i = 0; i < opt.threads; i++)
        pthread_join(th[i].t, NULL);
    t1 = now_us();
    for (i = 0; i < opt.threads; i++) {
        n += th[i].nlat;
        for (j = 0; j < NOUT; j++)
            out[j] += th[i].out[j];
    }
    all = malloc((n ? n : 1) * sizeof(*all));
    for (i = 0; i < opt.threads; i++) {
        memcpy(all + k, th[i].lat, th[i].nlat * sizeof(*all));
        k += th[i].nlat;
    }
    qsort(all, n, sizeof(*all), cmp_u32);
#define PCT(p) (n ? all[(size_t)((double)(n - 1) * (p))] : 0)
    printf("{\"mode\": \"%s\", \"threads\": %d, \"seconds\": %.3f, "
           "\"claims\": %" PRIu64 ", \"rps\": %.1f, \"next\": %" PRId64 ", "
           "\"lat_us\": {\"p50\": %u, \"p90\": %u, \"p99\": %u, \"max\": %u}, "
           "\"outcomes\": {",
           opt.mode == M_A    ? "a"
           : opt.mode == M_B  ? "b"
           : opt.mode == M_B2 ? "b2"
           : opt.mode == M_GLANCE ? "glance"
           : opt.mode == M_FACTS ? "facts"
           : opt.mode == M_Q ? "q" : "ping",
           opt.threads, (t1 - t0) / 1e6, n, n / ((t1 - t0) / 1e6),
           (int64_t)atomic_load(&next_pair), PCT(0.5), PCT(0.9), PCT(0.99),
           n ? all[n - 1] : 0);
    for (j = 0; j < NOUT; j++)
        printf("%s\"%s\": %" PRIu64, j ? ", " : "", out_name[j], out[j]);
    printf("}");
    if (opt.mode == M_A) {
        /* mean wall time of each statement of a claim, microseconds */
        printf(", \"stage_us\": {");
        for (j = 0; j < NSTAGE; j++) {
            int64_t us = 0, cnt = 0;

            for (i = 0; i < opt.threads; i++) {
                us += th[i].stage_us[j];
                cnt += th[i].stage_n[j];
            }
            printf("%s\"%s\": %.1f", j ? ", " : "", stage_name[j],
                   cnt ? (double)us / (double)cnt : 0.0);
        }
        printf("}");
    }
    printf("}\n");
    mysql_library_end();
    return out[O_ERROR] ? 1 : 0;
}
