/*
 * claim.pml: the claim protocol of tickets-fcgi, as fcgi-app/ implements it
 * (tickets.c, db_*.c, routes.c participation_post/lead, inflight.c,
 * server.c serve_one), for the spin model checker.  docs/PROTOCOL.md walks
 * through it beside the C code, step by step; model/verify.sh runs the
 * checks (make verify).
 *
 * Who is in it
 *   worker(w)   a FastCGI worker thread of app instance WI(w), with its own
 *               database connection (conn, locks = struct db's conn and
 *               locks_held), running the C code statement by statement;
 *   server      the database server's side of sessions that have ended (a
 *               client's close, a lost connection, a killed process): it
 *               rolls them back and frees their named locks, at a time of
 *               its own;
 *   killer      kill -9 of one app instance at any moment: its sessions
 *               end, nginx answers its requests 503, its workers stop;
 *   monitor     the invariants at every state, and what must hold once
 *               nothing can move any more;
 *   and the database as global state: sessions, re-entrant named locks,
 *   the event row and its X lock held to COMMIT, free_tickets with UNIQUE
 *   (user_id, event_id), transactions, READ COMMITTED reads.
 *
 * Failures: a budget `fails` (MAXFAIL, default 1; verify.sh uses 3 for the
 * protocol).  While it lasts, a connect may fail, an idle connection may
 * have been dropped, any statement may lose its connection before the
 * server ran it or after (the client cannot tell which: COMMIT), and an
 * instance may be killed.  Lock waits need no budget: whenever the lock is
 * held by another session, GET_LOCK may time out (0), and an InnoDB row
 * lock wait may end in 1205 (db_conn.c closes the connection) or 1213
 * (deadlock victim: rolled back, retried).
 *
 * Configurations: CFG_USER (default) one user, one event without a quota,
 * three claims: c0, c1 on instance 0 (workers w0, w1: one leads, the other
 * can be parked), c2 on instance 1 (worker w2).  -DCFG_QUOTA: two users,
 * one claim each on the two instances, quota 1.
 *
 * Properties (P1-P7 in docs/PROTOCOL.md): INV (one ticket per pair,
 * free_issued = rows <= quota) at every state; answer(): 201 only with its
 * own committed row, 200 only with the ticket in the table, one answer per
 * claim; after each request no named lock held (serve_one, and the
 * server's view); at quiescence every claim answered, no named lock held,
 * no transaction open; ltl live: eventually all answered and no named lock.
 *
 * Variants (-D; verify.sh knows which must hold and which must fail):
 *   NO_UNIQUE_KEY              free_tickets without UNIQUE (user_id, event_id)
 *   NO_LOCK                    TICKETS_TEST_UNSAFE_NO_LOCK: no GET_LOCK, no coalescing
 *   NO_TICKET_CHECK_IN_UPDATE  the seat UPDATE does not check for the user's ticket
 *   RELEASE_BEFORE_COMMIT      RELEASE_LOCK before COMMIT instead of after
 *   REUSE_AFTER_RECONNECT      a claim that lost its connection reconnects
 *                              (once) and carries on as if it held the lock
 *   AUTO_RECONNECT             MYSQL_OPT_RECONNECT: the library silently
 *                              reconnects and resends (autocommit, no lock)
 *   NO_TRANSACTION             seat UPDATE and INSERT in autocommit
 *   NO_QUOTA_IN_UPDATE         the quota only checked in the lock-free facts read
 *   LEAK_LOCK_ON_REFUSAL       RELEASE_LOCK skipped when the write was refused
 *   NO_LOCK_TIMEOUT            GET_LOCK waits without a timeout
 *   TAKE_ONCE                  the coalescing leader takes its queue once and
 *                              ends its lead in a second step
 *   NO_STALE_RETRY             without db_read.c's retry of a first read on a
 *                              stale connection (db_retry_stale)
 */

/* ------------------------------------------------------------------ */
/* configuration                                                        */

#ifdef CFG_QUOTA
#define NC 2            /* claims */
#define NW 2            /* worker threads, over all instances */
#define QUOTA 1
#define CU(c) (c)                    /* the user of claim c */
#define CI(c) (c)                    /* the instance nginx sends claim c to */
#define WI(w) (w)                    /* the instance of worker w */
#define ARRIVAL_ORDER(w) true
#else
#define NC 3
#define NW 3
#define QUOTA 255                    /* free_quota NULL: no limit */
#define CU(c) 0
#define CI(c) ((c) == 2 -> 1 : 0)
#define WI(w) ((w) == 2 -> 1 : 0)
/* w0 and w1 are alike: let w0 take the first claim of instance 0 (a run
   where w1 takes it is the same run with the names swapped) */
#define ARRIVAL_ORDER(w) ((w) != 1 || len(q[0]) < 2)
#endif
#define NU 2            /* users */
#define NI 2            /* app instances */

#ifndef MAXFAIL
#define MAXFAIL 1
#endif
/* sessions: one live per worker, plus ended ones the server has not yet
   cleaned up (each needs a failure or a close); new_session asserts that
   there are enough.  A claim that reconnects as if it held the lock opens
   one per attempt. */
#ifdef REUSE_AFTER_RECONNECT
#define NS (NW + 4)
#else
#define NS (NW + 2)
#endif

#define CLAIM_ATTEMPTS 3  /* tickets.c */

/* ------------------------------------------------------------------ */
/* constants                                                            */

#define NONE 255

/* server side of a session */
#define FREE 0            /* no session */
#define LIVE 1
#define ENDED 2           /* client gone (closed, lost, killed); the server
                             has not yet rolled back and freed its locks */

/* enum db_status (db.h) */
#define DB_OK 0
#define DB_NOT_FOUND 1
#define DB_DUPLICATE 2
#define DB_RETRY 3
#define DB_LOCK_TIMEOUT 4
#define DB_UNAVAILABLE 5

/* enum claim_outcome (tickets.h), the ones a claim can reach here, and
   the answers */
#define O_NONE 0          /* not answered yet */
#define O_EXISTING 1      /* 200 {"created": false} */
#define O_SOLD_OUT 2      /* 409 sold_out */
#define O_CREATED 3       /* 201 */
#define O_BUSY 4          /* 503 busy */
#define O_UNAVAIL 5       /* 503 unavailable */
#define O_NGINX 6         /* 503 made by nginx: the instance died */
#define R_AGAIN 7         /* claim_attempt's -1: try again */

/* ------------------------------------------------------------------ */
/* the database                                                         */

byte ss[NS];              /* FREE, LIVE, ENDED */
byte ss_tid[NS];          /* its uncommitted free_tickets row (ticket id), 0: none */
byte ss_tu[NS];           /* ... of this user */
byte ss_i[NS];            /* the app instance whose worker opened it */

/* the event row: committed free_issued, and the X lock and uncommitted
   increment of the one transaction that updated it */
byte ev_val;
byte ev_owner = NONE;
byte ev_pend;

/* named locks: GET_LOCK('tickets:user:<u>') */
byte nl_owner[NU] = NONE; /* session holding it */
byte nl_cnt[NU];          /* re-entrant: acquisitions by that session */

/* committed free_tickets rows per user */
byte tk_cnt[NU];          /* how many */
int tk_bits[NU];          /* which tickets: bit (tid - 1) */
byte tk_first[NU];        /* the one a SELECT finds, 0: none */

/* ------------------------------------------------------------------ */
/* the app                                                              */

bool dead[NI];            /* instance killed */
bool if_ent[NI * NU];     /* inflight.c: an entry (a leader) for user u */
byte if_q[NI * NU];       /* ... and its parked claims, one bit per claim */
#define IX(i, u) ((i) * NU + (u))
#define DEAD dead[WI(w)]          /* (in a worker) its instance was killed */

chan q[NI] = [NC] of { byte };  /* claims nginx has sent to instance i */

/* answers */
byte ans[NC];
byte answered;
byte n201[NU];

byte fails = MAXFAIL;

/* a ticket id: claim c, attempt a (each attempt draws a new code) */
#define TID(c, a) ((c) * CLAIM_ATTEMPTS + (a) + 1)
#define COMMITTED(u, tid) ((tid) != 0 && (tk_bits[u] & (1 << ((tid) - 1))) != 0)

/* ------------------------------------------------------------------ */
/* properties                                                           */

/* never two tickets for one (user, event); free_issued = rows <= quota */
#define INV (tk_cnt[0] <= 1 && tk_cnt[1] <= 1 && \
             ev_val == tk_cnt[0] + tk_cnt[1] && ev_val <= QUOTA)
#define HOLDS(s) (nl_owner[0] == (s) || nl_owner[1] == (s))
#define NO_NAMED_LOCK (nl_owner[0] == NONE && nl_owner[1] == NONE)

/* assert(cond), saying first in the trace which property broke (what:
   "MSC: VIOLATED: ...\n"; Promela has no string arguments) */
#define CHECK(cond, what) \
    if \
    :: !(cond) -> printf(what) \
    :: else -> skip \
    fi; \
    assert(cond)

/* routes.c respond(): an answer, checked when it is given; a killed
   process answers nothing (nginx has answered for it: kill) */
inline answer(c, code, tid)
{
    atomic {
        if
        :: DEAD -> goto killed
        :: else ->
            CHECK(ans[c] == O_NONE, "MSC: VIOLATED: one answer per claim\n");
            ans[c] = code;
            answered++;
            if
            :: code == O_CREATED ->
                /* 201 only with its own row, and that row committed */
                CHECK((tid - 1) / CLAIM_ATTEMPTS == c && COMMITTED(CU(c), tid),
                      "MSC: VIOLATED: 201 only with its own committed row\n");
                n201[CU(c)]++;
                CHECK(n201[CU(c)] <= 1, "MSC: VIOLATED: one 201 per (user, event)\n");
                printf("MSC: c%d answered 201 created, ticket %d\n", c, tid)
            :: code == O_EXISTING ->
                /* 200 only with the ticket that is in the table */
                CHECK(COMMITTED(CU(c), tid), "MSC: VIOLATED: 200 only with the ticket in the table\n");
                printf("MSC: c%d answered 200 existing, ticket %d\n", c, tid)
            :: code == O_SOLD_OUT -> printf("MSC: c%d answered 409 sold_out\n", c)
            :: code == O_BUSY -> printf("MSC: c%d answered 503 busy\n", c)
            :: code == O_UNAVAIL -> printf("MSC: c%d answered 503 unavailable\n", c)
            :: else -> skip
            fi
        fi
    }
}

/* ------------------------------------------------------------------ */
/* the server's side of sessions                                        */

inline tx_commit(x)
{
    if
    :: ev_owner == x -> ev_val = ev_val + ev_pend; ev_pend = 0; ev_owner = NONE
    :: else -> skip
    fi;
    if
    :: ss_tid[x] != 0 -> row_commit(ss_tu[x], ss_tid[x]); ss_tid[x] = 0; ss_tu[x] = 0
    :: else -> skip
    fi
}

inline row_commit(u, tid)
{
    tk_cnt[u]++;
    tk_bits[u] = tk_bits[u] | (1 << (tid - 1));
    if
    :: tk_first[u] == 0 -> tk_first[u] = tid
    :: else -> skip
    fi
}

inline tx_rollback(x)
{
    if
    :: ev_owner == x -> ev_pend = 0; ev_owner = NONE
    :: else -> skip
    fi;
    ss_tid[x] = 0; ss_tu[x] = 0
}

/* the session ended: roll back, free its named locks (also re-entrant
   ones: all of them), forget it */
inline reap(x)
{
    tx_rollback(x);
    if
    :: nl_owner[0] == x -> nl_owner[0] = NONE; nl_cnt[0] = 0
    :: else -> skip
    fi;
    if
    :: nl_owner[1] == x -> nl_owner[1] = NONE; nl_cnt[1] = 0
    :: else -> skip
    fi;
    ss[x] = FREE
}

#define REAP(x) :: atomic { ss[x] == ENDED -> reap(x); \
    printf("MSC: server: session s%d ends: rolled back, its named locks freed\n", x) }

active proctype server()
{
end_reap:
    do
    REAP(0)
    REAP(1)
    REAP(2)
    REAP(3)
#if NS > 4
    REAP(4)
#endif
#if NS > 5
    REAP(5)
#endif
#if NS > 6
    REAP(6)
#endif
#if NS > 7
    REAP(7)
#endif
#if NS > 8
    REAP(8)
#endif
#if NS > 9
#error "more sessions than REAP branches"
#endif
    od
}

/* ------------------------------------------------------------------ */
/* db_*.c: the client's side                                            */

/*
 * One statement is one atomic step: the server runs it (or not) and the
 * client takes in the answer, and on an error db_fail closes the handle in
 * the same step.  So a worker's handle `conn` is either NONE (closed) or a
 * LIVE session, and `locks` is struct db's locks_held.
 */
#define S conn

/* The connection is lost, before or after the server ran the statement:
   the client gets an error (2013/2006) and closes the handle (db_fail);
   the server ends the session when it notices (proctype server). */
inline lost_before(rc)
{
    printf("MSC: w%d: connection to s%d lost before the server ran the statement\n", w, S);
    lost(rc)
}

inline lost_after(rc)
{
    printf("MSC: w%d: the server ran the statement; then the connection to s%d was lost\n", w, S);
    lost(rc)
}

inline lost(rc)
{
    fails--;
    ss[S] = ENDED;
    S = NONE;
    locks = 0;
    intx = 0;
    rc = DB_UNAVAILABLE
}

/* the end of a trace line: a db_status in words */
inline say(rc)
{
    if
    :: rc == DB_OK -> printf("ok\n")
    :: rc == DB_NOT_FOUND -> printf("0 rows / not found\n")
    :: rc == DB_DUPLICATE -> printf("0 rows: duplicate key\n")
    :: rc == DB_RETRY -> printf("lock wait timeout (1205): retry\n")
    :: rc == DB_LOCK_TIMEOUT -> printf("0: timed out\n")
    :: rc == DB_UNAVAILABLE -> printf("error: connection lost\n")
    :: else -> printf("%d\n", rc)
    fi
}

/* A killed process runs no more statements: at its next step it is gone
   (the killer has already ended its sessions, and nginx has answered its
   requests). */
inline gone(rc)
{
    goto killed
}

/* db_close: mysql_close; locks_held = 0 */
inline db_close()
{
    if
    :: S != NONE -> ss[S] = ENDED; S = NONE
    :: else -> skip
    fi;
    locks = 0;
    intx = 0
}

/* mysql_real_connect: a new session, the lowest free slot */
inline new_session()
{
    k = 0;
    do
    :: k < NS && ss[k] != FREE -> k++
    :: else -> break
    od;
    assert(k < NS);
    ss[k] = LIVE; ss_i[k] = WI(w); S = k; intx = 0;
    k = 0
}

#ifdef AUTO_RECONNECT
/* MYSQL_OPT_RECONNECT: the connection was dropped before this statement;
   the library reconnects and sends the statement on the new session, which
   has no transaction and no named lock, and says nothing. */
#define AUTO_RC \
    if \
    :: fails > 0 -> fails--; ss[S] = ENDED; new_session(); \
        printf("MSC: w%d: connection lost; silent reconnect as s%d\n", w, S) \
    :: true -> skip \
    fi;
#else
#define AUTO_RC
#endif

/* db_ensure: an idle connection (unused for IDLE_PING_US, so only at the
   start of a request: idle = 1) is pinged, only when no named lock is
   held, and reopened if the server dropped it; a closed one is reopened
   (db_open: READ COMMITTED, the server's lock waits shorter than our read
   timeout, no auto-reconnect; it may fail).  `reused`: the connection was
   already open (db->reused). */
inline db_ensure(rc, idle)
{
    atomic {
        if
        :: DEAD -> gone(rc)
        :: else ->
            if
            :: idle && S != NONE && !locks && fails > 0 ->
                printf("MSC: w%d: idle connection s%d was dropped; ping fails, reconnect\n", w, S);
                fails--; db_close()      /* idle, dropped by the server: ping fails */
            :: true -> skip
            fi;
            reused = (S != NONE);
            if
            :: S != NONE -> rc = DB_OK
            :: else ->
                if
                :: fails > 0 -> fails--; rc = DB_UNAVAILABLE;   /* cannot connect */
                    printf("MSC: w%d: cannot connect\n", w)
                :: true -> new_session(); rc = DB_OK
                fi
            fi
        fi
    }
}

/* A read that lost a connection opened before this request (db->stale:
   reused, no named lock held) is run once more on a new connection
   (db_retry_stale; the server restarted or dropped it).  -DNO_STALE_RETRY:
   without it, as db.c was before commit 1846863. */
#ifdef NO_STALE_RETRY
#define STALE_RETRY false
#else
#define STALE_RETRY (reused && !locks)
#endif

/* claim_facts_once: the lock-free read (READ COMMITTED: committed rows) */
inline facts_once(u, rc, idle)
{
    f_tid = 0; f_sold = 0; stale = 0;
    db_ensure(rc, idle);
    if
    :: rc == DB_OK ->
        atomic {
            if
            :: DEAD -> gone(rc)
            :: else ->
                AUTO_RC
                if
                :: fails > 0 -> stale = STALE_RETRY; lost_before(rc)
                :: true -> f_tid = tk_first[u]; f_sold = (ev_val >= QUOTA)
                fi
            fi
        }
    :: else -> skip
    fi
}

/* db_claim_facts */
inline db_claim_facts(u, rc, idle)
{
    facts_once(u, rc, idle);
    if
    :: stale -> stale = 0; printf("MSC: w%d: that connection was stale: read again\n", w);
        facts_once(u, rc, 0)
    :: else -> skip
    fi;
    stale = 0; reused = 0
}

/* db_user_lock: SELECT GET_LOCK(name, timeout): 1, 0 (timeout), or an
   error/NULL, which closes the connection */
inline db_user_lock(u, rc)
{
    assert(!locks);           /* db_claim.c aborts: GET_LOCK with a lock held */
    db_ensure(rc, 0);
    if
    :: rc == DB_OK ->
        atomic {
            if
            :: DEAD -> gone(rc)
            :: else ->
                AUTO_RC
                if
                :: fails > 0 -> lost_before(rc)             /* before it ran, or while it waited */
                :: nl_owner[u] == NONE || nl_owner[u] == S ->
                    nl_owner[u] = S; nl_cnt[u]++; rc = DB_OK; locks = 1;
                    if
                    :: fails > 0 -> lost_after(rc)   /* granted, the answer lost */
                    :: true -> skip
                    fi
    #ifndef NO_LOCK_TIMEOUT
                :: nl_owner[u] != NONE && nl_owner[u] != S ->
                    rc = DB_LOCK_TIMEOUT             /* GET_LOCK = 0 after the timeout */
#endif
                fi;
                printf("MSC: w%d: GET_LOCK(u%d) -> ", w, u); say(rc)
            fi
        }
    :: else -> skip
    fi
}

/* db_user_unlock: SELECT RELEASE_LOCK(name); anything but 1 closes the
   connection, which frees the lock on the server */
inline db_user_unlock(u)
{
    if
    :: S == NONE || !locks -> locks = 0
    :: else ->
        atomic {
            if
            :: DEAD -> gone(rc)
            :: else ->
                AUTO_RC
                if
                :: fails > 0 -> lost_before(rc)
                :: true ->
                    if
                    :: nl_owner[u] == S ->
                        nl_cnt[u]--;
                        if
                        :: nl_cnt[u] == 0 -> nl_owner[u] = NONE
                        :: else -> skip
                        fi;
                        rc = DB_OK                   /* 1 */
                    :: else -> rc = DB_NOT_FOUND     /* 0: another's; NULL: nobody's */
                    fi;
                    if
                    :: fails > 0 -> lost_after(rc)   /* released, the answer lost */
                    :: true -> skip
                    fi;
                    if
                    :: rc != DB_OK -> db_close()
                    :: else -> skip
                    fi
                fi;
                printf("MSC: w%d: RELEASE_LOCK(u%d) -> ", w, u); say(rc);
                locks = 0;
                rc = 0
            fi
        }
    fi
}

/* db_begin: START TRANSACTION (needs the open session: never reconnects).
   The server starts nothing visible until the next statement, so the
   session's "in a transaction" is kept with the client (intx), and a
   connection lost at START TRANSACTION is modelled as the next statement's
   "lost before it ran": the same answer (claim_attempt returns
   CLAIM_UNAVAILABLE either way; db_rollback on a closed handle is a no-op). */
inline db_begin(rc)
{
    if
    :: S == NONE -> rc = DB_UNAVAILABLE
    :: else ->
#ifndef NO_TRANSACTION
        intx = 1;
#endif
        rc = DB_OK
    fi
}

/* db_commit: COMMIT.  Lost before: the server rolls back.  Lost after: it
   committed, and the client cannot know which. */
inline db_commit(rc)
{
    if
    :: S == NONE -> rc = DB_UNAVAILABLE
    :: else ->
        atomic {
            if
            :: DEAD -> gone(rc)
            :: else ->
                AUTO_RC
                if
                :: fails > 0 -> lost_before(rc)
                :: true ->
                    tx_commit(S); intx = 0; rc = DB_OK;
                    if
                    :: fails > 0 -> lost_after(rc)   /* committed, the answer lost */
                    :: true -> skip
                    fi
                fi;
                printf("MSC: w%d: COMMIT -> ", w); say(rc)
            fi
        }
    fi
}

/* db_rollback: ROLLBACK; a no-op on a closed connection; a failure closes
   it, which rolls back too */
inline db_rollback()
{
    if
    :: S == NONE -> skip
    :: else ->
        atomic {
            if
            :: DEAD -> gone(rc2)
            :: else ->
                AUTO_RC
                if
                :: fails > 0 -> lost_before(rc2)
                :: true -> tx_rollback(S); intx = 0
                fi;
                rc2 = 0
            fi
        }
    fi
}

/*
 * A row lock held by another transaction: the wait ends when that one
 * commits or rolls back (the statement then goes on), or, here, fails:
 *  - innodb_lock_wait_timeout (set to the db timeout, below our read
 *    timeout): 1205; db_fail closes the connection ("the database is hung"),
 *    which ends the session: 503 unavailable;
 *  - InnoDB chooses this transaction as a deadlock victim: 1213, the whole
 *    transaction rolled back; DB_RETRY (claim_attempt rolls back, retries).
 *    (No lock cycle exists in the model; this over-approximates InnoDB, and
 *    keeps the retry path in the model.)
 */
inline lock_wait_fails(rc)
{
    if
    :: printf("MSC: w%d: lock wait timeout (1205): closes the connection\n", w);
        db_close(); rc = DB_UNAVAILABLE
    :: printf("MSC: w%d: deadlock victim (1213): transaction rolled back\n", w);
        tx_rollback(S); intx = 0; rc = DB_RETRY
    fi
}

#ifdef NO_QUOTA_IN_UPDATE
#define SEAT_LEFT true
#else
#define SEAT_LEFT (QUOTA == 255 || ev_val + ev_pend < QUOTA)
#endif

/*
 * db_take_seat, the last statement before COMMIT: UPDATE events SET
 * free_issued = free_issued + 1 WHERE id = ? AND <rules> AND (free_quota IS
 * NULL OR free_issued < free_quota) AND (SELECT COUNT(*) FROM free_tickets
 * WHERE user_id = ? AND event_id = ?) = 1, after the INSERT of the ticket.
 * Two steps on the server:
 *  1. the COUNT subquery: under READ COMMITTED InnoDB reads the subquery of
 *     an UPDATE without locks: the committed rows plus this transaction's
 *     own uncommitted row, and the optimizer may evaluate this constant
 *     subquery when the statement starts, before the event row is read: a
 *     read that may be stale by the time step 2 runs (scripts/rc-check.py,
 *     case 3).  "= 1": the user's only ticket is the one just inserted;
 *  2. the event row: its X lock (wait, or innodb_lock_wait_timeout: 1205,
 *     DB_RETRY), then the current free_issued; the lock is kept until
 *     COMMIT or ROLLBACK, which comes next.
 */
inline db_take_seat(u, rc)
{
    if
    :: S == NONE -> rc = DB_UNAVAILABLE
    :: else ->
        atomic {
            /* seen: what the COUNT subquery counts (committed rows and our
               own uncommitted one); the seat is taken only if it is 1 */
#ifdef NO_TICKET_CHECK_IN_UPDATE
            seen = 1;
#else
            seen = tk_cnt[u] + ((ss_tid[S] != 0 && ss_tu[S] == u) -> 1 : 0);
#endif
            printf("MSC: w%d: UPDATE seat (u%d) starts: its COUNT subquery counts %d ticket(s), ours included\n", w, u, seen)
        }
        atomic {
            if
            :: DEAD -> gone(rc)
            :: else ->
                AUTO_RC
                if
                :: fails > 0 -> lost_before(rc)
                :: ev_owner == NONE || ev_owner == S ->
                    if
                    :: seen == 1 && SEAT_LEFT ->
                        if
                        :: intx -> ev_owner = S; ev_pend++
                        :: else -> ev_val++                   /* autocommit */
                        fi;
                        rc = DB_OK
                    :: else -> rc = DB_NOT_FOUND              /* 0 rows */
                    fi;
                    if
                    :: fails > 0 -> lost_after(rc)
                    :: true -> skip
                    fi
                :: ev_owner != NONE && ev_owner != S -> lock_wait_fails(rc)
                fi;
                seen = 0;
                printf("MSC: w%d: UPDATE seat (u%d) gets the event row -> ", w, u); say(rc)
            fi
        }
    fi
}

/*
 * db_insert_ticket: INSERT ... ON DUPLICATE KEY UPDATE id = id.
 * With the unique key: a committed row of the user: 0 rows affected
 * (DB_DUPLICATE); another session's uncommitted row: wait for it (or
 * innodb_lock_wait_timeout); else a new row, uncommitted.
 */
inline db_insert_ticket(u, tid, rc)
{
    if
    :: S == NONE -> rc = DB_UNAVAILABLE
    :: else ->
        atomic {
            if
            :: DEAD -> gone(rc)
            :: else ->
                AUTO_RC
                k = 0; other = 0;
                do
                :: k < NS ->
                    if
                    :: k != S && ss[k] != FREE && ss_tid[k] != 0 && ss_tu[k] == u -> other = 1
                    :: else -> skip
                    fi;
                    k++
                :: else -> break
                od;
                k = 0;
                if
                :: fails > 0 -> lost_before(rc)
#ifndef NO_UNIQUE_KEY
                :: tk_cnt[u] > 0 -> rc = DB_DUPLICATE
                :: tk_cnt[u] == 0 && other -> lock_wait_fails(rc)
                :: tk_cnt[u] == 0 && !other ->
#else
                :: true ->
#endif
                    if
                    :: intx -> ss_tid[S] = tid; ss_tu[S] = u
                    :: else -> row_commit(u, tid)             /* autocommit */
                    fi;
                    rc = DB_OK;
                    if
                    :: fails > 0 -> lost_after(rc)
                    :: true -> skip
                    fi
                fi;
                other = 0;
                printf("MSC: w%d: INSERT ticket %d (u%d) -> ", w, tid, u); say(rc)
            fi
        }
    fi
}

/* get_ticket_once: SELECT the user's ticket; may reconnect */
inline get_ticket_once(u, rc)
{
    stale = 0;
    db_ensure(rc, 0);
    if
    :: rc == DB_OK ->
        atomic {
            if
            :: DEAD -> gone(rc)
            :: else ->
                AUTO_RC
                if
                :: fails > 0 -> stale = STALE_RETRY; lost_before(rc)
                :: true ->
                    t = tk_first[u];
                    rc = (t != 0 -> DB_OK : DB_NOT_FOUND)
                fi
            fi
        }
    :: else -> skip
    fi
}

/* db_get_ticket */
inline db_get_ticket(u, rc)
{
    get_ticket_once(u, rc);
    if
    :: stale -> stale = 0; printf("MSC: w%d: that connection was stale: read again\n", w);
        get_ticket_once(u, rc)
    :: else -> skip
    fi;
    stale = 0; reused = 0
}

/* ------------------------------------------------------------------ */
/* tickets.c                                                            */

/* tickets_decide, over the facts (the other rules hold in this model) */
inline decide(o)
{
    if
    :: f_tid != 0 -> o = O_EXISTING
    :: f_tid == 0 && f_sold -> o = O_SOLD_OUT
    :: else -> o = O_CREATED
    fi
}

/* refusal: after the seat UPDATE matched no row, read again which rule */
inline refusal(u, r)
{
    db_claim_facts(u, rc, 0);
    if
    :: rc != DB_OK -> r = O_UNAVAIL
    :: else ->
        if
        :: f_tid != 0 -> t = f_tid
        :: else -> skip
        fi;
        decide(r)
    fi;
    f_tid = 0; f_sold = 0
}

/* claim_attempt: one transaction; r = an outcome, or R_AGAIN (-1) */
inline claim_attempt(u, c)
{
    t = TID(c, attempt);                  /* new_ticket: a fresh code */
    r = 0;
    db_begin(rc);
    if
    :: rc != DB_OK -> r = O_UNAVAIL
    :: else ->
        /* the ticket first, the seat last (the event row's lock is held
           from the seat UPDATE to the COMMIT right after it) */
        db_insert_ticket(u, t, rc);
        if
        :: rc == DB_DUPLICATE ->
            db_rollback();
            db_get_ticket(u, rc);
            if
            :: rc == DB_OK -> r = O_EXISTING
            :: rc == DB_NOT_FOUND -> r = R_AGAIN
            :: else -> r = O_UNAVAIL
            fi
        :: else ->
            if
            :: rc == DB_OK -> db_take_seat(u, rc)
            :: else -> skip
            fi;
            if
            :: rc == DB_NOT_FOUND ->
                db_rollback();
                refusal(u, r);
                if
                :: r == O_CREATED -> r = R_AGAIN     /* the rules changed: again */
                :: else -> skip
                fi
            :: else ->
                if
                :: rc == DB_OK ->
#ifdef RELEASE_BEFORE_COMMIT
                    if
                    :: locked -> db_user_unlock(u)
                    :: else -> skip
                    fi;
#endif
                    db_commit(rc);
                    if
                    :: rc == DB_OK -> r = O_CREATED
                    :: else -> skip
                    fi
                :: else -> skip
                fi;
                if
                :: r == 0 && rc == DB_RETRY -> db_rollback(); r = R_AGAIN
                :: r == 0 && rc != DB_RETRY -> db_rollback(); r = O_UNAVAIL
                :: else -> skip
                fi
            fi
        fi
    fi
}

/* claim_locked: up to CLAIM_ATTEMPTS transactions; never on a connection
   that lost its lock */
inline claim_locked(u, c)
{
    attempt = 0;
    do
    :: attempt < CLAIM_ATTEMPTS ->
#ifdef REUSE_AFTER_RECONNECT
        if
        :: locked && S == NONE && !rec ->
            /* reconnect (once a claim, to keep the state space small),
               and carry on as the lock holder */
            rec = 1;
            db_ensure(rc, 0);
            if
            :: rc == DB_OK -> locks = 1;
                printf("MSC: w%d: reconnected as s%d and carries on as if it held the lock\n", w, S)
            :: else -> skip
            fi
        :: else -> skip
        fi;
#endif
        if
        :: locked && !locks -> o = O_UNAVAIL; break
        :: else -> skip
        fi;
        claim_attempt(u, c);
#ifdef REUSE_AFTER_RECONNECT
        if
        :: locked && r == O_UNAVAIL && S == NONE && !rec -> r = R_AGAIN
        :: else -> skip
        fi;
#endif
        if
        :: r != R_AGAIN -> o = r; break
        :: else -> attempt++
        fi
    :: else -> o = O_UNAVAIL; break
    od;
    attempt = 0; r = 0; rec = 0
}

/* tickets_claim: the facts (the lock-free fast path), then lock, write,
   release */
inline tickets_claim(u, c)
{
    t = 0;
    db_claim_facts(u, rc, 1);
    if
    :: rc != DB_OK -> o = O_UNAVAIL
    :: else ->
        decide(o);
        if
        :: o == O_EXISTING -> t = f_tid
        :: else -> skip
        fi;
        f_tid = 0; f_sold = 0;
        if
        :: o == O_EXISTING -> printf("MSC: w%d c%d: facts: ticket %d exists\n", w, c, t)
        :: o == O_SOLD_OUT -> printf("MSC: w%d c%d: facts: sold out\n", w, c)
        :: else -> printf("MSC: w%d c%d: facts: no ticket yet, may create\n", w, c)
        fi;
        if
        :: o == O_CREATED ->
#ifdef NO_LOCK
            locked = 0;
            claim_locked(u, c)
#else
            db_user_lock(u, rc);
            if
            :: rc == DB_OK ->
                locked = 1;
                claim_locked(u, c);
#ifdef LEAK_LOCK_ON_REFUSAL
                if
                :: o == O_CREATED || o == O_UNAVAIL -> db_user_unlock(u)
                :: else -> skip
                fi;
#else
                db_user_unlock(u);
#endif
                locked = 0
            :: rc == DB_LOCK_TIMEOUT -> o = O_BUSY
            :: else -> o = O_UNAVAIL
            fi
#endif
        :: else -> skip
        fi
    fi;
    rc = 0
}

/* ------------------------------------------------------------------ */
/* routes.c and inflight.c                                              */

#define ME IX(WI(w), u)

/* answer the parked claims in `list` with the leader's outcome: one event
   here, so the same-event branch of lead(): created becomes existing */
inline answer_parked()
{
    k = 0;
    do
    :: k < NC ->
        if
        :: (list & (1 << k)) != 0 -> answer(k, (o == O_CREATED -> O_EXISTING : o), t)
        :: else -> skip
        fi;
        k++
    :: else -> break
    od;
    k = 0; list = 0
}

/* lead: answer our own claim, then every claim parked meanwhile, until
   inflight_take finds none and ends the lead */
inline lead(u, c)
{
    tickets_claim(u, c);
    answer(c, o, t);
#ifdef TAKE_ONCE
    atomic { list = if_q[ME]; if_q[ME] = 0 }
    answer_parked();
    atomic { if_ent[ME] = 0; if_q[ME] = 0 }
#else
    do
    :: atomic {                                   /* inflight_take */
        if
        :: if_q[ME] != 0 -> list = if_q[ME]; if_q[ME] = 0
        :: else -> if_ent[ME] = 0; list = 0
        fi
       }
        if
        :: list == 0 -> break
        :: else -> answer_parked()
        fi
    od
#endif
}

inline participation_post(u, c)
{
#ifdef NO_LOCK
    tickets_claim(u, c);                          /* unsafe_no_lock: no coalescing */
    answer(c, o, t)
#else
    atomic {                                      /* inflight_enter */
        if
        :: !if_ent[ME] -> if_ent[ME] = 1; role = 0                    /* LEAD */
        :: else -> if_q[ME] = if_q[ME] | (1 << c); role = 1           /* PARKED */
        fi
    }
    if
    :: role == 0 -> lead(u, c)
    :: else -> printf("MSC: w%d c%d: parked behind the leader\n", w, c)
    fi;
    role = 0
#endif
}

/* server.c: worker_main and serve_one; its struct db is (conn, locks) */
proctype worker(byte w)
{
    byte conn = NONE;
    bool locks;
    byte c, u, o, t, rc, rc2, r, k, seen, f_tid, attempt, list, other, role;
    bool f_sold, locked, intx, reused, stale, rec;

end_accept:
    do
    :: atomic {
        ARRIVAL_ORDER(w) && nempty(q[WI(w)]) -> q[WI(w)] ? c;
        u = CU(c);
        printf("MSC: w%d (instance %d) takes claim c%d of user u%d\n", w, WI(w), c, u)
       }
        participation_post(u, c);
        atomic {
            if
            :: DEAD -> goto killed
            :: else ->
                /* serve_one's check, and the server agrees */
                CHECK(!locks, "MSC: VIOLATED: serve_one: no named lock held after a request\n");
                CHECK(S == NONE || !HOLDS(S), "MSC: VIOLATED: the server: no named lock held after a request\n")
            fi
        };
        c = 0; u = 0; o = 0; t = 0
    od;
killed:
    /* kill -9: nothing more happens in this process */
    atomic {
        conn = NONE; locks = 0; locked = 0; intx = 0; reused = 0; stale = 0; rec = 0;
        c = 0; u = 0; o = 0; t = 0; rc = 0; rc2 = 0; r = 0; k = 0; seen = 0;
        f_tid = 0; attempt = 0; list = 0; other = 0; role = 0; f_sold = 0
    }
}

/* ------------------------------------------------------------------ */
/* kill -9 of one instance                                              */

inline kill(i)
{
    fails--;
    dead[i] = 1;
    /* the process is gone: the server sees its sessions end */
    k = 0;
    do
    :: k < NS ->
        if
        :: ss[k] == LIVE && ss_i[k] == i -> ss[k] = ENDED
        :: else -> skip
        fi;
        k++
    :: else -> break
    od;
    /* and nginx can no longer reach it: the requests queued there */
    do
    :: nempty(q[i]) -> q[i] ? k
    :: empty(q[i]) -> break
    od;
    /* nginx: every request it sent there (running, parked, queued) fails
       with 502, answered as 503; a sent POST is never resent
       (fastcgi_next_upstream without non_idempotent) */
    k = 0;
    do
    :: k < NC ->
        if
        :: CI(k) == i && ans[k] == O_NONE -> ans[k] = O_NGINX; answered++
        :: else -> skip
        fi;
        k++
    :: else -> break
    od;
    k = 0;
    if_ent[IX(i, 0)] = 0; if_ent[IX(i, 1)] = 0;
    if_q[IX(i, 0)] = 0; if_q[IX(i, 1)] = 0
}

active proctype killer()
{
    byte k;
end_kill:
    if
    :: atomic { fails > 0 && answered < NC -> kill(0); printf("MSC: instance 0 killed (kill -9)\n") }
    :: atomic { fails > 0 && answered < NC -> kill(1); printf("MSC: instance 1 killed (kill -9)\n") }
    fi
}

/* ------------------------------------------------------------------ */
/* the invariants at every step; and once nothing can move any more
   (`timeout`: every process blocked), every claim has its answer and no
   named lock is held */

active proctype monitor()
{
end_monitor:
    do
    :: atomic {
        !INV ->
        CHECK(tk_cnt[0] <= 1 && tk_cnt[1] <= 1, "MSC: VIOLATED: never two tickets for one (user, event)\n");
        CHECK(ev_val == tk_cnt[0] + tk_cnt[1], "MSC: VIOLATED: free_issued equals the rows\n");
        CHECK(ev_val <= QUOTA, "MSC: VIOLATED: free_issued never exceeds the quota\n")
       }
    :: atomic {
        timeout ->
        CHECK(answered == NC, "MSC: VIOLATED: every claim ends with an answer\n");
        CHECK(NO_NAMED_LOCK, "MSC: VIOLATED: when all is quiet, no named lock is held\n");
        CHECK(ev_owner == NONE, "MSC: VIOLATED: when all is quiet, no transaction is open\n")
       };
        break
    od
}

init {
    byte i;
    atomic {
        i = 0;
        do
        :: i < NC -> q[CI(i)] ! i; i++
        :: else -> break
        od;
        i = 0;
        do
        :: i < NW -> run worker(i); i++
        :: else -> break
        od;
        i = 0
    }
}

/* liveness: on every path, every claim is answered and every named lock
   freed (no wait without bound, no lock left behind) */
ltl live { <> (answered == NC && NO_NAMED_LOCK) }
