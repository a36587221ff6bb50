/*
 * http.h: one request as FastCGI hands it over, and its response.
 *
 * http_accept() reads the request waiting on a connection that the
 * connection layer (conn.h) handed over, and parses what the app needs from
 * the params: the method, the path (DOCUMENT_URI, else the path of
 * REQUEST_URI, percent-decoded), the Authorization header and the body (at
 * most HTTP_BODY_MAX bytes are kept; more is remembered as too large).
 * Strings point into the request and live until http_finish(), which gives
 * the connection back to the layer (kept for the front's next request when
 * it asked for FCGI_KEEP_CONN, else closed).
 *
 * A request is owned by one thread at a time; it may be handed to another
 * (a parked claim is answered by its leader), never shared.
 */
#ifndef TICKETS_HTTP_H
#define TICKETS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "inflight.h"
#include "park.h"

#define HTTP_BODY_MAX 4096

struct http_conn; /* the FastCGI side, private to http.c */

struct http_request {
    const char *method;
    const char *path;          /* decoded, without the query */
    const char *authorization; /* NULL when absent */
    const char *request_id;    /* nginx's $request_id, or NULL */
    const char *body;          /* NUL-terminated, body_len bytes */
    size_t body_len;
    bool body_too_large;       /* more than HTTP_BODY_MAX bytes came */
    bool bad_path;             /* the path could not be decoded */
    bool incomplete;           /* the input ended in an error (peer gone,
                                * FCGI_ABORT_REQUEST): not a whole request */
    bool head;                 /* HEAD: the answer goes without its body */
    /* filled in by the handlers, for the log line */
    int64_t user_id;           /* 0: unknown */
    int64_t event_id;          /* 0: unknown */
    const char *outcome;
    int status;
    int64_t start_us;          /* when it began to arrive */
    struct inflight_waiter waiter; /* while parked behind a claim */
    struct park_entry park;    /* while put aside for the pace (http_park) */
    unsigned char paced;       /* routes.c: how the pace has treated it */
    struct http_conn *conn;
};

/* Once in main, before any thread: FCGX_Init. 0 or -1. */
int http_library_init(void);

struct conn_layer;

/* A request of the connection layer l; aborts when out of memory. */
struct http_request *http_request_new(struct conn_layer *l);
/* Finish r if it was not, then free it. */
void http_request_free(struct http_request *r);

/*
 * Read the request waiting on fd, a connection the layer handed over, which
 * r now owns; arrived_us is when the request began to arrive (conn_next),
 * its start_us.  0 on success; a negative errno from FCGX_Accept_r when fd
 * held no valid request, in which case it was closed.
 */
int http_accept(struct http_request *r, int fd, int64_t arrived_us);

/*
 * Send a response.  status is the HTTP status; body is taken (its reference
 * is stolen).  extra_headers is NULL or one or more "Name: value\r\n" lines.
 * Only the first response of a request is sent.
 */
void http_send_json(struct http_request *r, int status, json_t *body,
                    const char *extra_headers);
/* {"error": code, "message": message} */
void http_send_error(struct http_request *r, int status, const char *code,
                     const char *message, const char *extra_headers);
void http_send_text(struct http_request *r, int status,
                    const char *content_type, const char *text);

/*
 * Put r aside without a thread until due_us (conn_park): a worker gets it
 * back from conn_next as CONN_RESUMED, through r->park.  0, or a negative
 * errno when the layer is stopping or cannot watch the connection: r is
 * still the caller's, to answer now.
 */
int http_park(struct http_request *r, int64_t due_us);

/*
 * End a request whose front closed the connection while it was parked:
 * nothing is sent, the access log says status 499 (nginx's "client closed
 * request"), the connection is closed.
 */
void http_drop(struct http_request *r);

/*
 * End the request: flush, write the access log line, and give the
 * connection back to the layer (kept or closed, see above).  Calling it
 * again does nothing until the next http_accept().
 */
void http_finish(struct http_request *r);

#endif
