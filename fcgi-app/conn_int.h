/*
 * conn_int.h: the connection layer's state, shared by conn.c (the loop,
 * accepting and watching connections, the ready queue) and conn_park.c
 * (requests put aside until a time).  Private to conn*.c; conn.h is the
 * interface.  Everything in struct conn_layer but the constants is guarded
 * by its mutex, which every function below expects held.
 */
#ifndef TICKETS_CONN_INT_H
#define TICKETS_CONN_INT_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "park.h"

/*
 * The most of a request the loop looks at.  nginx's params stay far below
 * it (its request headers are bounded by large_client_header_buffers, 4 x
 * 8 KiB by default); params that do not end within it are refused.
 */
#define PEEK_WINDOW (128 * 1024)
#define ADDRS_MAX 32

enum slot_state { SLOT_FREE, SLOT_ARRIVING, SLOT_IDLE, SLOT_CLOSING,
                  SLOT_PARKED };

struct slot {
    int64_t since_us; /* entered its state: deadlines count from here */
    int prev, next;   /* neighbours in the list of its state; -1 ends */
    unsigned char state;
    struct park_entry *parked; /* SLOT_PARKED: its request's entry */
};

/* Oldest first: entries are appended with since_us = now. */
struct fd_list {
    int head, tail;
    long n;
};

struct conn_layer {
    pthread_mutex_t mu; /* guards everything below but the constants */
    pthread_cond_t ready_cv;
    pthread_t thread;
    int epfd, wakefd, listen_fd, dead_fd;
    bool unix_listener;
    long max_conns;
    int64_t read_timeout_us, idle_timeout_us;
    struct in6_addr allowed[ADDRS_MAX]; /* IPv4 as ::ffff:a.b.c.d */
    int nallowed;

    struct slot *slots; /* indexed by descriptor */
    int nslots;
    struct fd_list lists[SLOT_PARKED + 1]; /* by state; [SLOT_FREE] unused */
    struct park_heap parked; /* the SLOT_PARKED ones' requests, by time */
    struct park_entry *due_head, *due_tail; /* handed back, for conn_next */
    int *ready;         /* ring of descriptors holding a whole request */
    int64_t *ready_since; /* ... and when each began to arrive */
    long ready_cap, ready_head, ready_n;
    long open;
    bool listening;     /* listen_fd is in the epoll set */
    int64_t resume_us;  /* accepting paused until then (0: not for time) */
    int64_t limit_logged_us;
    bool stopping, exiting;
    bool draining;          /* stopping, kept connections' last requests */
    int64_t drain_until_us;
    unsigned char window[PEEK_WINDOW]; /* the loop thread's peek buffer */
};

/* conn.c */
int conn_try_watch(struct conn_layer *l, int fd, enum slot_state st);
void conn_unwatch(struct conn_layer *l, int fd);
void conn_update_gauges(const struct conn_layer *l);
/* Wake the loop from its epoll_wait (the mutex need not be held). */
void conn_wake_loop(const struct conn_layer *l);

/* conn_park.c: the loop's side.  An event on a parked connection; hand
 * back what is due at now (everything when stopping). */
void conn_park_event(struct conn_layer *l, int fd, uint32_t events);
void conn_park_resume_due(struct conn_layer *l, int64_t now);

#endif
