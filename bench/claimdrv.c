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
 *
 * The parts: claimdrv.c (the options, the threads, the result),
 * claimdrv_db.c (the connection and its statements), claimdrv_claim.c
 * (the claim of each mode); claimdrv.h between them.
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
#include <time.h>
#include <unistd.h>

#include <mysql.h>

#include "claimdrv.h"

struct options opt = {
    .user = "tickets", .db = "tickets", .lock_prefix = "tickets:user:",
    .mode = M_A, .threads = 16, .seconds = 5, .lock_timeout = 3,
    .users = 1000, .user_base = 1, .event_base = 1, .events = 100,
};

static const char *const out_name[NOUT] = {"created", "existing", "refused",
                                           "busy", "no_event", "error"};

/* the names of the stages in the output */
static const char *const stage_name[NSTAGE] = {
    "facts", "get_lock", "start_transaction", "update", "insert", "commit",
    "release_lock"};

static atomic_int_fast64_t next_pair;
static atomic_bool stop_flag;
static pthread_barrier_t ready;

int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void die(const char *what, const char *msg)
{
    fprintf(stderr, "claimdrv: %s: %s\n", what, msg);
    exit(2);
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
