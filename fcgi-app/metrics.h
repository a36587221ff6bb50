/*
 * metrics.h: the app's counters, for GET /metrics (Prometheus text format).
 *
 * Every counter is listed once in the X-macros below; increments are
 * relaxed atomics, so any thread may call these at any time.
 */
#ifndef TICKETS_METRICS_H
#define TICKETS_METRICS_H

#include <stdint.h>

/* Plain counters: X(field, prometheus name, help). */
#define METRICS_COUNTERS(X)                                                   \
    X(lock_timeouts, "tickets_lock_timeouts_total",                           \
      "Claims answered busy because the per-user lock was not acquired")      \
    X(db_errors, "tickets_db_errors_total",                                   \
      "Database calls that failed (the request got 503 or was retried)")      \
    X(db_connects, "tickets_db_connects_total",                               \
      "Database connections opened (first connect and reconnects)")           \
    X(db_reconnects, "tickets_db_reconnects_total",                           \
      "Attempts to open a connection in place of one that was closed")        \
    X(db_connect_failures, "tickets_db_connect_failures_total",               \
      "Connects that failed, or whose first statement failed (each starts "   \
      "the reconnect pause)")                                                 \
    X(tx_retries, "tickets_db_transaction_retries_total",                     \
      "Claim transactions retried after a deadlock or a certification "      \
      "conflict (1213), after a jittered pause")                              \
    X(tx_retry_giveups, "tickets_db_transaction_retry_giveups_total",         \
      "Claims answered unavailable because their retries ran out of "         \
      "attempts or of the request's time budget")                             \
    X(health_unready, "tickets_health_unready_total",                         \
      "Health checks answered 503 (statement failed, or a Galera node not "   \
      "ready and synced)")                                                    \
    X(deadline_exceeded, "tickets_claim_deadline_exceeded_total",            \
      "Claims answered 503 unavailable because TICKETS_REQUEST_TIMEOUT "      \
      "passed before they could finish (nothing was committed)")            \
    X(coalesced, "tickets_coalesced_claims_total",                            \
      "Claims answered from a concurrent claim of the same user in this "     \
      "process")                                                              \
    X(accept_errors, "tickets_accept_errors_total",                           \
      "Failed accepts of new connections (retried after a pause)")            \
    X(connections_accepted, "tickets_connections_accepted_total",             \
      "Connections accepted from the front")                                  \
    X(connections_refused, "tickets_connections_refused_total",               \
      "Connections closed at once: peer not in FCGI_WEB_SERVER_ADDRS")        \
    X(read_timeouts, "tickets_connection_read_timeouts_total",                \
      "Connections closed because a request did not arrive whole within "     \
      "TICKETS_READ_TIMEOUT")                                                 \
    X(connection_limit, "tickets_connection_limit_reached_total",             \
      "New connections that found TICKETS_MAX_CONNS open (an idle one was "   \
      "closed for each, or accepting paused)")                                \
    X(fastcgi_errors, "tickets_fastcgi_errors_total",                         \
      "Connections closed because they carried no valid FastCGI request")    \
    X(paced_parked, "tickets_paced_parked_total",                             \
      "Claims over their user's pace put aside until a token or their "       \
      "longest wait (TICKETS_PACE_PARK), without a thread")                   \
    X(paced_gone, "tickets_paced_gone_total",                                 \
      "Claims put aside for the pace whose front closed the connection "      \
      "meanwhile (dropped unanswered)")

/* Routes, in the order of enum route_id (routes.h): X(route name). */
#define METRICS_ROUTES(X)                                                     \
    X(unknown) X(events) X(participation) X(health) X(metrics) X(ping)

enum metrics_route {
#define X(name) METRIC_ROUTE_##name,
    METRICS_ROUTES(X)
#undef X
    METRIC_NROUTES
};

enum metrics_counter {
#define X(field, name, help) METRIC_##field,
    METRICS_COUNTERS(X)
#undef X
    METRIC_NCOUNTERS
};


void metrics_inc(enum metrics_counter c);
/* Count a claim's answer: an enum claim_outcome (tickets.h). */
void metrics_claim(int outcome);
/* Count a request by route (enum metrics_route). */
void metrics_route(int route);
/* Count a response by HTTP status. */
void metrics_response(int status);
/* Record how long a GET_LOCK took, acquired or not. */
void metrics_lock_wait(int64_t us);
/* Gauges: a worker started or stopped serving a request; parked claims. */
void metrics_busy(int delta);
void metrics_parked(int delta);
void metrics_set_threads(long n);
/* Gauges of the connection layer: open connections, idle kept ones, and
 * claims parked for their user's pace (conn_park). */
void metrics_set_connections(long open, long idle, long paced);

/*
 * Render all metrics in the Prometheus text exposition format.
 * Returns malloc'ed text; the caller frees.
 */
char *metrics_render(void);

#endif
