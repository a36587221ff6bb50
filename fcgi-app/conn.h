/*
 * conn.h: the connection layer.  A connection costs a worker thread only
 * while one whole request on it is being served.
 *
 * One thread (the loop) owns the listening socket and every connection that
 * is not being served: new ones, ones still sending their request, and idle
 * ones the front keeps open (FCGI_KEEP_CONN: nginx `keepalive` with
 * `fastcgi_keep_conn on`, Apache `enablereuse=on`).  It watches them with
 * epoll and peeks (MSG_PEEK) at what arrived: once a whole request is
 * queued in the socket, up to the empty FCGI_STDIN record, the connection
 * goes to the ready queue, where a worker takes it with conn_next(), lets
 * libfcgi read the request (which then never waits for the peer), serves
 * it, and gives the connection back with conn_release() when the front may
 * send another request on it, or conn_closed() when it was closed.
 *
 * Bounds: at most max_conns open connections (at the limit, the longest
 * idle kept connection is closed for a new one; with none idle, accepting
 * pauses); a request must arrive whole within read_timeout of its first
 * byte (of the accept, for a new connection), else the connection is
 * closed; a request larger than the peek window is handed over as soon as
 * the window is full, and the worker's reads and writes time out after
 * read_timeout (SO_RCVTIMEO, SO_SNDTIMEO).  Idle kept connections are
 * closed after idle_timeout (0: never), by the front, at the limit, or at
 * shutdown.
 *
 * Where the layer accepts, it applies FCGI_WEB_SERVER_ADDRS (IPv4 and IPv6
 * addresses; libfcgi's own check knows only IPv4).
 *
 * Functions return 0 or a negative errno unless said otherwise.
 */
#ifndef TICKETS_CONN_H
#define TICKETS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "config.h"
#include "park.h"

/* A params pair may announce at most this many bytes (name and value). */
#define CONN_PARAM_MAX (1024 * 1024)

/* What a peek at a connection's queued bytes tells. */
enum conn_scan {
    CONN_SCAN_PARTIAL,  /* the request is still arriving */
    CONN_SCAN_COMPLETE, /* a whole request (through the empty STDIN record) */
    CONN_SCAN_HANDOVER, /* not ours to judge (a body past the window, not
                         * FastCGI 1, an abort): libfcgi reads it under the
                         * read timeout */
    CONN_SCAN_REFUSE,   /* params libfcgi must never see: a pair announcing
                         * more than CONN_PARAM_MAX bytes (libfcgi allocates
                         * what is announced, and aborts the process past
                         * 2^31: CVE-2025-23016, only partly fixed in
                         * Debian's 2.4.2), or params that do not end within
                         * the window: the connection is closed */
};

/*
 * Pure: scan the FastCGI records in buf[0..len) that a window of `window`
 * bytes could hold, and the params pairs in them.  Exposed for the unit
 * tests.
 */
enum conn_scan conn_scan_request(const unsigned char *buf, size_t len,
                                 size_t window);

/*
 * conn_limits.c.  Parse FCGI_WEB_SERVER_ADDRS (comma-separated IPv4 or
 * IPv6 addresses) into out[0..max), IPv4 as ::ffff:a.b.c.d: the count, or
 * -1 with a log line (pure).  Whether a peer is one of allowed[0..n) (n =
 * 0: any; a unix socket: always; pure).  Raise the descriptor limit for
 * *max_conns connections, `threads` workers (2 each) and `reserve` more,
 * or lower *max_conns to fit, with a log line.  A new connection's options:
 * read and write timeouts, TCP_NODELAY.
 */
int conn_addr_parse(const char *list, struct in6_addr *out, int max);
bool conn_addr_allowed(const struct in6_addr *allowed, int n,
                       const struct sockaddr_storage *sa);
int conn_fit_descriptors(long *max_conns, long threads, long reserve);
void conn_setup_socket(int fd, const struct sockaddr_storage *sa,
                       int64_t timeout_us);

struct conn_layer;

/*
 * Take over listen_fd (set non-blocking) and start the loop thread.  NULL
 * with a log line on failure.  threads is how many workers will share it
 * (for the descriptor budget).
 */
struct conn_layer *conn_start(const struct config *cfg, int listen_fd,
                              long threads);

/* conn_next's answer when a parked request is due (*resumed). */
#define CONN_RESUMED (-2)

/*
 * Block until a connection holds a whole request and return its
 * descriptor, now the caller's, with *arrived_us the time (util_now_us)
 * its request began to arrive (the accept, for a new connection): the
 * front's timer runs from about then.  Or, before new requests, a parked
 * one whose time came (conn_park): CONN_RESUMED, with *resumed, now the
 * caller's again (its `gone` set when the front closed the connection
 * meanwhile: nobody is left to answer).  -1 once the layer is stopping and
 * nothing is left to serve.
 */
int conn_next(struct conn_layer *l, int64_t *arrived_us,
              struct park_entry **resumed);

/*
 * Put a request aside, without a thread, until due_us: the layer keeps p
 * (embedded in the request) and watches fd, the request's connection, for
 * the front closing it; conn_next hands p back when due_us comes, when the
 * front closes the connection, or at once when the layer stops.  The
 * connection stays open (it counts against max_conns).  -ECANCELED when
 * stopping (the caller answers now), or another negative errno: then the
 * caller still owns p and fd.
 */
int conn_park(struct conn_layer *l, struct park_entry *p, int fd,
              int64_t due_us);

/* The caller is done with fd and the front may send another request. */
void conn_release(struct conn_layer *l, int fd);

/* The caller is done with fd and the front wants it closed (lingering). */
void conn_close(struct conn_layer *l, int fd);

/* The caller's connection was closed (by libfcgi or by itself). */
void conn_closed(struct conn_layer *l);

/* True when the listening socket is a unix socket (no TCP resets). */
bool conn_is_unix(const struct conn_layer *l);

/*
 * A socket on which accept() always fails at once, for libfcgi's
 * FCGX_InitRequest: FCGX_Accept_r falls back to accepting on it only after
 * it has closed a connection that held no valid request.
 */
int conn_dead_socket(const struct conn_layer *l);

/*
 * Stop: a short drain first (each kept connection is closed right after
 * its next answer, new connections are still served once), then no more
 * accepting and the idle rest closed; requests already queued or arriving
 * are still handed out (within the read timeout), after which conn_next()
 * returns -1.
 */
void conn_stop(struct conn_layer *l);

/* After every worker has returned: stop the loop thread, close the rest. */
void conn_free(struct conn_layer *l);

#endif
