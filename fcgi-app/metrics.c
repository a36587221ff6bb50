/*
 * metrics.c: atomic counters and their text rendering.
 *
 * memcached keeps per-thread stats and sums them on read; with a few dozen
 * threads and a handful of increments per request, shared relaxed atomics
 * cost less than that bookkeeping and are simpler to read.
 */
#include "metrics.h"

#include "tickets.h" /* CLAIM_OUTCOMES: the claims counter's labels */

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static atomic_ullong counters[METRIC_NCOUNTERS];
static atomic_ullong outcomes[CLAIM_NOUTCOMES];
static atomic_ullong routes[METRIC_NROUTES];

static const int statuses[] = {200, 201, 400, 401, 403, 404,
                               405, 409, 413, 500, 503};
#define NSTATUSES (sizeof(statuses) / sizeof(statuses[0]))
static atomic_ullong responses[NSTATUSES + 1]; /* last: any other status */

/* Lock wait histogram bounds in microseconds; +Inf is implied. */
static const int64_t wait_bounds_us[] = {1000,   5000,   10000,   50000,
                                         100000, 500000, 1000000, 3000000};
#define NBOUNDS (sizeof(wait_bounds_us) / sizeof(wait_bounds_us[0]))
static atomic_ullong wait_buckets[NBOUNDS + 1];
static atomic_ullong wait_sum_us;

static atomic_long busy_threads, parked, threads, conns_open, conns_idle,
    conns_paced;

void metrics_inc(enum metrics_counter c)
{
    atomic_fetch_add_explicit(&counters[c], 1, memory_order_relaxed);
}

void metrics_claim(int outcome)
{
    if (outcome >= 0 && outcome < CLAIM_NOUTCOMES)
        atomic_fetch_add_explicit(&outcomes[outcome], 1,
                                  memory_order_relaxed);
}

void metrics_route(int route)
{
    if (route >= 0 && route < METRIC_NROUTES)
        atomic_fetch_add_explicit(&routes[route], 1, memory_order_relaxed);
}

void metrics_response(int status)
{
    size_t i;

    for (i = 0; i < NSTATUSES && statuses[i] != status; i++)
        ;
    atomic_fetch_add_explicit(&responses[i], 1, memory_order_relaxed);
}

void metrics_lock_wait(int64_t us)
{
    size_t i;

    for (i = 0; i < NBOUNDS && us > wait_bounds_us[i]; i++)
        ;
    atomic_fetch_add_explicit(&wait_buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&wait_sum_us, (unsigned long long)us,
                              memory_order_relaxed);
}

void metrics_busy(int delta)
{
    atomic_fetch_add_explicit(&busy_threads, delta, memory_order_relaxed);
}

void metrics_parked(int delta)
{
    atomic_fetch_add_explicit(&parked, delta, memory_order_relaxed);
}

void metrics_set_threads(long n)
{
    atomic_store(&threads, n);
}

void metrics_set_connections(long open, long idle, long paced)
{
    atomic_store_explicit(&conns_open, open, memory_order_relaxed);
    atomic_store_explicit(&conns_idle, idle, memory_order_relaxed);
    atomic_store_explicit(&conns_paced, paced, memory_order_relaxed);
}

static unsigned long long get(atomic_ullong *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            abort();
        if ((size_t)n < b->cap - b->len)
            break;
        b->cap = b->cap * 2 + (size_t)n;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    b->len += (size_t)n;
}

char *metrics_render(void)
{
    struct buf b = {malloc(4096), 0, 4096};
    unsigned long long cum = 0;
    size_t i;

    if (!b.p)
        abort();
    put(&b, "# HELP tickets_build_info Build information\n"
            "# TYPE tickets_build_info gauge\n"
            "tickets_build_info{version=\"%s\"} 1\n",
        TICKETS_VERSION);
#define X(field, name, help)                                                  \
    put(&b, "# HELP " name " " help "\n# TYPE " name " counter\n" name " %llu\n", \
        get(&counters[METRIC_##field]));
    METRICS_COUNTERS(X)
#undef X
    put(&b, "# HELP tickets_claims_total Claims by outcome\n"
            "# TYPE tickets_claims_total counter\n");
#define X(id, name, status, error, message)                                    \
    if (CLAIM_##id != CLAIM_NO_TICKET) /* a read's, never a claim's */       \
        put(&b, "tickets_claims_total{outcome=\"" #name "\"} %llu\n",         \
            get(&outcomes[CLAIM_##id]));
    CLAIM_OUTCOMES(X)
#undef X
    put(&b, "# HELP tickets_http_requests_total Requests by route\n"
            "# TYPE tickets_http_requests_total counter\n");
#define X(name)                                                               \
    put(&b, "tickets_http_requests_total{route=\"" #name "\"} %llu\n",       \
        get(&routes[METRIC_ROUTE_##name]));
    METRICS_ROUTES(X)
#undef X
    put(&b, "# HELP tickets_http_responses_total Responses by HTTP status\n"
            "# TYPE tickets_http_responses_total counter\n");
    for (i = 0; i < NSTATUSES; i++)
        put(&b, "tickets_http_responses_total{code=\"%d\"} %llu\n",
            statuses[i], get(&responses[i]));
    put(&b, "tickets_http_responses_total{code=\"other\"} %llu\n",
        get(&responses[NSTATUSES]));
    put(&b, "# HELP tickets_lock_wait_seconds Time spent in GET_LOCK\n"
            "# TYPE tickets_lock_wait_seconds histogram\n");
    for (i = 0; i < NBOUNDS; i++) {
        cum += get(&wait_buckets[i]);
        put(&b, "tickets_lock_wait_seconds_bucket{le=\"%g\"} %llu\n",
            (double)wait_bounds_us[i] / 1e6, cum);
    }
    cum += get(&wait_buckets[NBOUNDS]);
    put(&b, "tickets_lock_wait_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    put(&b, "tickets_lock_wait_seconds_sum %.6f\n",
        (double)get(&wait_sum_us) / 1e6);
    put(&b, "tickets_lock_wait_seconds_count %llu\n", cum);
    put(&b, "# HELP tickets_worker_threads Worker threads\n"
            "# TYPE tickets_worker_threads gauge\n"
            "tickets_worker_threads %ld\n"
            "# HELP tickets_busy_threads Worker threads serving a request\n"
            "# TYPE tickets_busy_threads gauge\n"
            "tickets_busy_threads %ld\n"
            "# HELP tickets_idle_threads Worker threads waiting for a "
            "request\n"
            "# TYPE tickets_idle_threads gauge\n"
            "tickets_idle_threads %ld\n"
            "# HELP tickets_parked_claims Claims waiting for a concurrent "
            "claim of the same user\n"
            "# TYPE tickets_parked_claims gauge\n"
            "tickets_parked_claims %ld\n"
            "# HELP tickets_inflight_requests Requests being served or "
            "parked\n"
            "# TYPE tickets_inflight_requests gauge\n"
            "tickets_inflight_requests %ld\n"
            "# HELP tickets_connections_open Connections open from the "
            "front (served, parked, arriving or idle)\n"
            "# TYPE tickets_connections_open gauge\n"
            "tickets_connections_open %ld\n"
            "# HELP tickets_connections_idle Kept connections waiting for "
            "the front's next request\n"
            "# TYPE tickets_connections_idle gauge\n"
            "tickets_connections_idle %ld\n"
            "# HELP tickets_paced_claims Claims put aside for their user's "
            "pace, waiting for a token (no thread held)\n"
            "# TYPE tickets_paced_claims gauge\n"
            "tickets_paced_claims %ld\n",
        atomic_load(&threads), atomic_load(&busy_threads),
        atomic_load(&threads) - atomic_load(&busy_threads),
        atomic_load(&parked),
        atomic_load(&busy_threads) + atomic_load(&parked),
        atomic_load(&conns_open), atomic_load(&conns_idle),
        atomic_load(&conns_paced));
    return b.p;
}
