/*
 * http.c: the FastCGI side of a request (libfcgi's thread-safe FCGX_* API).
 *
 * libfcgi reads and writes; the connection layer (conn.c) accepts and owns
 * idle connections.  The two meet through FCGX_Request.ipcFd: a connection
 * handed over is put there before FCGX_Accept_r, which then reads from it
 * as from a connection kept from an earlier request, and taken out again
 * after FCGX_Finish_r.  libfcgi's own accept is never used: its listening
 * socket is one on which accept() fails at once (conn_dead_socket), which is
 * where FCGX_Accept_r ends up after closing a connection that carried no
 * valid request.
 *
 * The body is read to EOF even when it is not needed: with
 * fastcgi_keep_conn a leftover STDIN record would break the next request on
 * the connection.  At most HTTP_DRAIN_MAX bytes are read; a request with
 * more is answered and its connection closed.
 */
#include "http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "conn.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define HTTP_DRAIN_MAX (1024 * 1024)
#define HTTP_PATH_MAX 2048

struct http_conn {
    FCGX_Request fcgx;
    struct conn_layer *layer;
    bool accepted;   /* between http_accept and http_finish */
    bool responded;
    bool undrained;  /* the body was not read to its end: close after */
    char body[HTTP_BODY_MAX + 1];
    char path[HTTP_PATH_MAX + 1]; /* REQUEST_URI fallback, decoded */
};

int http_library_init(void)
{
    return FCGX_Init() == 0 ? 0 : -1;
}

struct http_request *http_request_new(struct conn_layer *l)
{
    struct http_request *r = calloc(1, sizeof(*r));

    if (!r || !(r->conn = calloc(1, sizeof(*r->conn))))
        abort();
    if (FCGX_InitRequest(&r->conn->fcgx, conn_dead_socket(l), 0) != 0)
        abort();
    r->conn->layer = l;
    return r;
}

void http_request_free(struct http_request *r)
{
    if (!r)
        return;
    http_finish(r);
    FCGX_Free(&r->conn->fcgx, 1);
    free(r->conn);
    free(r);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * The path part of REQUEST_URI, percent-decoded as nginx decodes
 * DOCUMENT_URI.  False if it is too long, badly escaped, or decodes to NUL.
 */
static bool decode_path(const char *uri, char *out, size_t size)
{
    size_t n = 0;

    for (; *uri && *uri != '?' && *uri != '#'; uri++) {
        char c = *uri;

        if (c == '%') {
            int hi = hexval(uri[1]), lo = hi < 0 ? -1 : hexval(uri[2]);

            if (lo < 0 || (hi == 0 && lo == 0))
                return false;
            c = (char)(hi * 16 + lo);
            uri += 2;
        }
        if (n + 1 >= size)
            return false;
        out[n++] = c;
    }
    out[n] = '\0';
    return true;
}

static void read_body(struct http_request *r)
{
    struct http_conn *c = r->conn;
    char scratch[4096];
    size_t total = 0;
    int n;

    while (total < HTTP_BODY_MAX + 1 &&
           (n = FCGX_GetStr(c->body + total, (int)(HTTP_BODY_MAX + 1 - total),
                            c->fcgx.in)) > 0)
        total += (size_t)n;
    if (total > HTTP_BODY_MAX) {
        r->body_too_large = true;
        total = HTTP_BODY_MAX;
        /* drain what is left, bounded */
        while ((n = FCGX_GetStr(scratch, sizeof(scratch), c->fcgx.in)) > 0)
            if ((total += (size_t)n) >= HTTP_DRAIN_MAX) {
                c->undrained = true;
                break;
            }
        total = HTTP_BODY_MAX;
    }
    /* EOF before the empty FCGI_STDIN record, or an abort: cut short */
    r->incomplete = FCGX_GetError(c->fcgx.in) != 0;
    c->body[total] = '\0';
    r->body = c->body;
    r->body_len = total;
}

int http_accept(struct http_request *r, int fd, int64_t arrived_us)
{
    struct http_conn *c = r->conn;
    char **env;
    const char *uri;
    int rc;

    c->fcgx.ipcFd = fd;
    /* FCGX_Accept_r first finishes the previous request: keep fd open */
    c->fcgx.keepConnection = 1;
    /* if it closes fd (no valid request), at once, without lingering */
    FCGX_Detach(&c->fcgx);
    rc = FCGX_Accept_r(&c->fcgx);
    if (rc < 0) {
        if (c->fcgx.ipcFd >= 0) { /* not closed after all */
            close(c->fcgx.ipcFd);
            c->fcgx.ipcFd = -1;
        }
        metrics_inc(METRIC_fastcgi_errors);
        conn_closed(c->layer);
        return rc;
    }
    memset(r, 0, offsetof(struct http_request, conn));
    c->accepted = true;
    c->responded = false;
    c->undrained = false;
    r->start_us = arrived_us;
    env = c->fcgx.envp;
    r->method = FCGX_GetParam("REQUEST_METHOD", env);
    if (!r->method)
        r->method = "";
    r->head = strcmp(r->method, "HEAD") == 0;
    r->authorization = FCGX_GetParam("HTTP_AUTHORIZATION", env);
    r->request_id = FCGX_GetParam("REQUEST_ID", env);
    r->path = FCGX_GetParam("DOCUMENT_URI", env);
    if (!r->path || !*r->path) {
        uri = FCGX_GetParam("REQUEST_URI", env);
        r->path = c->path;
        if (!uri || !decode_path(uri, c->path, sizeof(c->path))) {
            c->path[0] = '\0';
            r->bad_path = true;
        }
    }
    read_body(r);
    return 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

static void send_raw(struct http_request *r, int status,
                     const char *content_type, const char *extra_headers,
                     const char *body, size_t len)
{
    struct http_conn *c = r->conn;
    char head[512];
    int n;

    if (!c->accepted || c->responded)
        return;
    c->responded = true;
    r->status = status;
    /* snprintf, not FCGX_FPrintF: libfcgi's own printf lacks %zu */
    n = snprintf(head, sizeof(head),
                 "Status: %d %s\r\n"
                 "Content-Type: %s\r\n"
                 "Content-Length: %zu\r\n"
                 "Cache-Control: no-store\r\n"
                 "%s\r\n",
                 status, reason(status), content_type, len,
                 extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof(head))
        abort(); /* the headers are ours and short */
    FCGX_PutStr(head, n, c->fcgx.out);
    if (!r->head) /* RFC 9110 9.3.2; RFC 3875 6.3.3 */
        FCGX_PutStr(body, (int)len, c->fcgx.out);
}

void http_send_json(struct http_request *r, int status, json_t *body,
                    const char *extra_headers)
{
    char *text = json_dumps(body, JSON_COMPACT);
    size_t len;

    json_decref(body);
    if (!text)
        abort(); /* out of memory */
    len = strlen(text);
    send_raw(r, status, "application/json", extra_headers, text, len);
    free(text);
}

void http_send_error(struct http_request *r, int status, const char *code,
                     const char *message, const char *extra_headers)
{
    http_send_json(r, status,
                   json_pack("{s:s, s:s}", "error", code, "message", message),
                   extra_headers);
}

void http_send_text(struct http_request *r, int status,
                    const char *content_type, const char *text)
{
    send_raw(r, status, content_type, NULL, text, strlen(text));
}

/* A string field; text that is not UTF-8 is logged as "?" rather than lost. */
static void set_text(json_t *o, const char *key, const char *s)
{
    json_t *v = json_string(s ? s : "");

    json_object_set_new(o, key, v ? v : json_string("?"));
}

static void access_log(const struct http_request *r)
{
    json_t *o = json_object();

    if (!o)
        return;
    set_text(o, "method", r->method);
    set_text(o, "path", r->path);
    json_object_set_new(o, "status", json_integer(r->status));
    json_object_set_new(
        o, "duration_ms",
        json_real((double)(util_now_us() - r->start_us) / 1000.0));
    if (r->user_id)
        json_object_set_new(o, "user_id", json_integer(r->user_id));
    if (r->event_id)
        json_object_set_new(o, "event_id", json_integer(r->event_id));
    if (r->outcome)
        set_text(o, "outcome", r->outcome);
    if (r->request_id)
        set_text(o, "request_id", r->request_id);
    log_event(LOG_INFO, "request", o);
}

int http_park(struct http_request *r, int64_t due_us)
{
    struct http_conn *c = r->conn;

    return conn_park(c->layer, &r->park, c->fcgx.ipcFd, due_us);
}

void http_drop(struct http_request *r)
{
    struct http_conn *c = r->conn;

    if (!c->accepted)
        return;
    c->responded = true; /* nobody is there to answer */
    c->undrained = true; /* closed, never kept */
    r->status = 499;
    http_finish(r);
}

void http_finish(struct http_request *r)
{
    struct http_conn *c = r->conn;
    bool keep;
    int fd;

    if (!c->accepted)
        return;
    if (!c->responded)
        http_send_error(r, 500, "internal", "no response was produced", NULL);
    metrics_response(r->status);
    access_log(r);
    c->accepted = false;
    /*
     * Whether the connection stays open is ours to decide, not libfcgi's:
     * it closes in FCGX_Finish_r only after a stream error (the peer went
     * away, a write timed out), and then at once.  The front's
     * FCGI_KEEP_CONN is honoured on every path that reaches here.
     */
    keep = c->fcgx.keepConnection && !c->undrained;
    c->fcgx.keepConnection = 1;
    FCGX_Detach(&c->fcgx);
    FCGX_Finish_r(&c->fcgx);
    fd = c->fcgx.ipcFd;
    c->fcgx.ipcFd = -1;
    if (fd < 0)
        conn_closed(c->layer);
    else if (keep)
        conn_release(c->layer, fd);
    else
        conn_close(c->layer, fd);
}
