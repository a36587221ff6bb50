/*
 * routes.h: the route table and the thin handlers (parse, call, render).
 *
 * Unknown path: 404 not_found; known path, other method: 405 with Allow.
 * Outcome to HTTP status and error code: one table in routes.c.
 */
#ifndef TICKETS_ROUTES_H
#define TICKETS_ROUTES_H

#include <stddef.h>

#include "config.h"
#include "db.h"
#include "http.h"

/* What a handler may use: the worker's own connection and the config. */
struct route_ctx {
    struct db *db;
    const struct config *cfg;
};

enum route_result {
    ROUTE_DONE,   /* answered; the caller finishes the request */
    ROUTE_PARKED, /* handed to a leading claim, or put aside for the pace
                   * (http_park): the caller must forget it */
};

enum route_result routes_dispatch(const struct route_ctx *ctx,
                                  struct http_request *r);

/* A claim put aside for its user's pace came back (conn_next): go on with
 * it, or drop it when its front is gone. */
enum route_result routes_resume(const struct route_ctx *ctx,
                                struct http_request *r);

/* Route ids, for routes_match. */
enum route_id {
    ROUTE_NONE,
    ROUTE_EVENTS,
    ROUTE_PARTICIPATION,
    ROUTE_HEALTH,
    ROUTE_METRICS,
    ROUTE_PING,
};

/*
 * Match a path against the table (pure).  For ROUTE_PARTICIPATION, *arg and
 * *arg_len are the raw {event_id} segment (not yet validated).
 */
enum route_id routes_match(const char *path, const char **arg,
                           size_t *arg_len);

/* The JSON of a ticket and of an event, as the API shows them (pure; the
 * caller owns the result). */
json_t *routes_ticket_json(const struct ticket *t);
json_t *routes_event_json(const struct event_row *e);

/* The Allow header value of a route, e.g. "GET, HEAD, POST". */
const char *routes_allow(enum route_id id);

#endif
