/*
 * server.h: the worker threads.
 *
 * server_start() starts n workers on the listening socket; each owns one
 * request and one database connection for life.  server_stop() lets
 * in-flight requests finish, wakes the idle workers and joins them.
 * Both are called from the main thread only.
 */
#ifndef TICKETS_SERVER_H
#define TICKETS_SERVER_H

#include <stdint.h>

#include "config.h"

struct server;

/* Start cfg->threads workers on listen_fd; NULL with a logged error. */
struct server *server_start(const struct config *cfg, int listen_fd);

/*
 * Stop: no new requests are taken; requests in flight are answered.
 * Returns 0 when every worker ended within deadline_us, -1 otherwise (the
 * caller should then exit without waiting).  Frees the server on success.
 */
int server_stop(struct server *s, int64_t deadline_us);

#endif
