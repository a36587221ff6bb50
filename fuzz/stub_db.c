/*
 * stub_db.c: db.h without a database, for the request fuzzer.
 *
 * The facts of (user, event) follow from the ids (so every contract row is
 * reachable from a fuzzed path and token), tickets live in a small table,
 * and the lock rules of the real db_claim.c are asserted: GET_LOCK never taken
 * twice, no transaction without the lock, nothing held after a request.
 */
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NTICKETS 64

struct db {
    int locks_held;
    bool in_tx;
    int64_t locked_user;
    bool pending;          /* a ticket inserted in the open transaction */
    struct ticket row;     /* ... which COMMIT writes into the table */
};

static struct ticket table[NTICKETS];
static int64_t next_id = 1;

static void fail(const char *what)
{
    fprintf(stderr, "stub_db: %s\n", what);
    abort();
}

int db_library_init(void) { return 0; }
void db_library_end(void) {}

struct db *db_new(const struct config *cfg)
{
    struct db *db = calloc(1, sizeof(*db));

    (void)cfg;
    if (!db)
        abort();
    return db;
}

void db_free(struct db *db) { free(db); }

int db_locks_held(const struct db *db) { return db->locks_held; }

enum db_status db_ping(struct db *db)
{
    (void)db;
    return DB_OK;
}

enum db_status db_ready(struct db *db)
{
    (void)db;
    return DB_OK;
}

bool db_retry_pause(struct db *db, unsigned attempt, int64_t deadline_us)
{
    (void)db;
    (void)deadline_us;
    return attempt < 3;
}

static struct ticket *find(int64_t user_id, int64_t event_id)
{
    int i;

    for (i = 0; i < NTICKETS; i++)
        if (table[i].id && table[i].user_id == user_id &&
            table[i].event_id == event_id)
            return &table[i];
    return NULL;
}

static uint32_t issued(int64_t event_id)
{
    uint32_t n = 0;
    int i;

    for (i = 0; i < NTICKETS; i++)
        if (table[i].id && table[i].event_id == event_id)
            n++;
    return n;
}

static bool unavailable(int64_t user_id) { return user_id % 23 == 0; }

enum db_status db_claim_facts(struct db *db, int64_t user_id,
                              int64_t event_id, struct claim_facts *f)
{
    struct ticket *t;

    (void)db;
    memset(f, 0, sizeof(*f));
    if (user_id <= 0 || event_id <= 0)
        fail("facts of an id out of range");
    if (unavailable(user_id) && event_id % 2)
        return DB_UNAVAILABLE;
    if (event_id % 11 == 0)
        return DB_OK;               /* no such event */
    f->event_found = true;
    f->free_for_premium = event_id % 5 != 0;
    f->started = event_id % 7 == 0;
    f->has_quota = event_id % 3 == 0;
    f->free_quota = (uint32_t)(event_id % 4);
    f->free_issued = issued(event_id);
    f->user_premium = user_id % 13 != 0;
    f->paid_order = ((uint64_t)user_id + (uint64_t)event_id) % 17 == 0;
    t = find(user_id, event_id);
    if (t) {
        f->has_ticket = true;
        f->ticket = *t;
    }
    return DB_OK;
}

/* The first look, as db_read.c's ST_GLANCE: the orders only when sold out. */
enum db_status db_claim_glance(struct db *db, int64_t user_id,
                               int64_t event_id, struct claim_facts *f)
{
    enum db_status rc = db_claim_facts(db, user_id, event_id, f);

    /* the orders only once the quota is used up */
    if (!f->has_quota || f->free_issued < f->free_quota)
        f->paid_order = false;
    return rc;
}

enum db_status db_get_ticket(struct db *db, int64_t user_id, int64_t event_id,
                             struct ticket *out)
{
    struct ticket *t = find(user_id, event_id);

    (void)db;
    memset(out, 0, sizeof(*out));
    if (!t)
        return DB_NOT_FOUND;
    *out = *t;
    return DB_OK;
}

enum db_status db_list_events(struct db *db, unsigned limit,
                              void (*row)(const struct event_row *, void *),
                              void *ctx)
{
    static const char *const titles[] = {
        "Jazz in the park", "\xc3\xa9t\xc3\xa9", "quote \" and \\ and \x01",
        ""};
    struct event_row e;
    unsigned i;

    (void)db;
    for (i = 0; i < 4 && i < limit; i++) {
        memset(&e, 0, sizeof(e));
        e.id = (int64_t)i + 1;
        snprintf(e.title, sizeof(e.title), "%s", titles[i]);
        snprintf(e.starts_at, sizeof(e.starts_at), "2030-01-0%uT18:00:00Z",
                 i + 1);
        e.free_for_premium = i % 2;
        e.has_quota = i % 3 == 0;
        e.free_quota = i;
        e.free_issued = issued(e.id);
        row(&e, ctx);
    }
    return DB_OK;
}

enum db_status db_user_lock(struct db *db, int64_t user_id, int64_t wait_us)
{
    if (db->locks_held)
        fail("GET_LOCK while a named lock is held");
    if (user_id % 19 == 0)
        return DB_LOCK_TIMEOUT;
    if (unavailable(user_id))
        return DB_UNAVAILABLE;
    db->locks_held = 1;
    db->locked_user = user_id;
    return DB_OK;
}

void db_user_unlock(struct db *db, int64_t user_id)
{
    if (db->locks_held && db->locked_user != user_id)
        fail("RELEASE_LOCK of another user's lock");
    if (db->in_tx)
        fail("RELEASE_LOCK inside a transaction");
    db->locks_held = 0;
}

enum db_status db_begin(struct db *db)
{
    if (db->in_tx)
        fail("nested transaction");
    db->in_tx = true;
    return DB_OK;
}

enum db_status db_commit(struct db *db)
{
    if (!db->in_tx)
        fail("COMMIT outside a transaction");
    if (db->pending)
        table[db->row.id % NTICKETS] = db->row;
    db->pending = false;
    db->in_tx = false;
    return DB_OK;
}

void db_rollback(struct db *db)
{
    db->pending = false;
    db->in_tx = false;
}

enum db_status db_take_seat(struct db *db, int64_t user_id, int64_t event_id)
{
    struct claim_facts f;

    if (!db->in_tx || !db->locks_held)
        fail("seat taken outside the locked transaction");
    /* the seat comes last: after this transaction's own ticket */
    if (!db->pending || db->row.user_id != user_id ||
        db->row.event_id != event_id)
        fail("seat taken before the ticket's INSERT");
    if (db_claim_facts(db, user_id, event_id, &f) != DB_OK)
        return DB_UNAVAILABLE;
    if (!f.event_found || f.has_ticket || !f.user_premium ||
        !f.free_for_premium || f.started || f.paid_order ||
        (f.has_quota && f.free_issued >= f.free_quota))
        return DB_NOT_FOUND;
    return DB_OK;
}

enum db_status db_insert_ticket(struct db *db, struct ticket *t)
{
    if (!db->in_tx || !db->locks_held)
        fail("ticket inserted outside the locked transaction");
    if (db->pending)
        fail("two INSERTs in one transaction");
    if (find(t->user_id, t->event_id))
        return DB_DUPLICATE;
    if (strlen(t->code) != TICKET_CODE_LEN)
        fail("ticket code of the wrong length");
    t->id = next_id++;
    db->row = *t;
    db->pending = true; /* written by COMMIT, dropped by ROLLBACK */
    return DB_OK;
}
