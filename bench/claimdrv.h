/*
 * claimdrv.h: what the parts of the ceiling driver share (bench/claimdrv.c
 * runs the threads and prints the result, claimdrv_db.c holds the
 * connection and its prepared statements, claimdrv_claim.c the claim of
 * each mode).
 */
#ifndef CLAIMDRV_H
#define CLAIMDRV_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>

#include <mysql.h>

#include "../fcgi-app/db_bind.h"

enum mode { M_A, M_B, M_B2, M_GLANCE, M_FACTS, M_Q, M_PING };

/* the command line (claimdrv.c) */
struct options {
    const char *socket, *user, *password, *db, *lock_prefix, *q, *qbind;
    enum mode mode;
    int threads;
    double seconds, lock_timeout;
    bool seat_first, seat_call;
    int64_t users, user_base, event_base, events, start, pairs;
};
extern struct options opt;

/* the prepared statements of a connection (claimdrv_db.c) */
enum { ST_FACTS, ST_LOCK, ST_UNLOCK, ST_SEAT, ST_INSERT, ST_CALL, ST_GLANCE,
       ST_Q, ST_SEATCALL, NST };

enum outcome { O_CREATED, O_EXISTING, O_REFUSED, O_BUSY, O_NOEVENT, O_ERROR,
               NOUT };

/* the stages of a mode-a claim, timed from the client (wall time) */
enum stage { S_FACTS, S_LOCK, S_BEGIN, S_SEAT, S_INSERT, S_COMMIT, S_UNLOCK,
             NSTAGE };

/* one driving thread and its connection */
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

/* claimdrv.c */
int64_t now_us(void);
void die(const char *what, const char *msg);

/* claimdrv_db.c: the connection, binds, fetches, the lock statements */
void connect_thr(struct thr *t);
int fail(struct thr *t, MYSQL_STMT *st, const char *what);
int fetch_one(MYSQL_STMT *st);
int simple(struct thr *t, const char *sql);
int lock_stmt(struct thr *t, int id, char *name, double *timeout,
              int64_t *got, my_bool *nul);
void b_double(MYSQL_BIND *b, double *v);
void b_time(MYSQL_BIND *b, MYSQL_TIME *v);
void new_code(char out[33]);
void new_time(MYSQL_TIME *mt);

/* claimdrv_claim.c: one claim of user on event in opt.mode */
int claim(struct thr *t, int64_t user, int64_t event);

#endif
