/*
 * config.h: the app's settings, from the environment and --flags.
 *
 * config_load() builds a struct config once, in main, before any thread
 * starts; afterwards it is passed around as const and never changes.
 * Status convention: 0 on success, -1 on error (message already printed).
 */
#ifndef TICKETS_CONFIG_H
#define TICKETS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* MySQL's limit for a named lock, in characters (MySQL 5.7+). */
#define CONFIG_LOCK_NAME_MAX 64
/*
 * fastcgi_read_timeout of the shipped nginx (nginx/snippets/
 * tickets-fastcgi.conf; a test keeps the two equal): a claim must be
 * answered before it, so --check-config warns when TICKETS_REQUEST_TIMEOUT
 * plus one statement's TICKETS_DB_TIMEOUT reach it.
 */
#define CONFIG_FRONT_READ_TIMEOUT_S 30

/* Digits of the largest user id (INT64_MAX). */
#define CONFIG_USER_ID_DIGITS 19
/* The shortest HS256 secret accepted: the hash's size (RFC 7518 §3.2). */
#define CONFIG_JWT_SECRET_MIN 32

/* TICKETS_DB_TLS_VERIFY: unset means "on when a CA is given". */
enum config_tls_verify { CONFIG_TLS_VERIFY_DEFAULT, CONFIG_TLS_VERIFY_ON,
                         CONFIG_TLS_VERIFY_OFF };

struct config {
    char *db_socket;        /* NULL: use db_host and db_port */
    char *db_host;
    long db_port;
    char *db_user;
    char *db_password;      /* read from db_password_file; NULL: none */
    char *db_password_file;
    char *db_name;
    char *db_tls_ca;        /* PEM CA file; NULL: the system's CAs */
    char *db_tls_cert;      /* PEM client certificate, with db_tls_key */
    char *db_tls_key;
    int db_tls_verify;      /* enum config_tls_verify */
    bool db_tls;            /* derived: any TLS setting given */
    bool db_tls_verify_server; /* derived: check the server's certificate */
    char *jwt_secret_file;
    unsigned char *jwt_secret; /* file content less one trailing newline */
    size_t jwt_secret_len;
    long threads;
    int64_t lock_timeout_us; /* GET_LOCK wait */
    int64_t db_timeout_us;   /* connect/read/write timeouts on top of it */
    int64_t request_timeout_us; /* a claim's budget from its arrival */
    char *lock_prefix;
    char *listen;           /* NULL: serve the socket on fd 0 */
    long max_conns;         /* open connections from the front, at most */
    int64_t read_timeout_us; /* a request must arrive whole within it */
    int64_t idle_timeout_us; /* kept idle connections; 0: no limit */
    long pace_rate;         /* claims/s a user may send to the database; 0: off */
    long pace_burst;        /* ... after this many at once */
    int64_t pace_park_us;   /* a claim over the pace waits at most this
                             * long for a token; 0: answered at once */
    int64_t events_cache_us; /* GET /api/events: how stale, at most */
    bool unsafe_no_lock;    /* TEST ONLY: no GET_LOCK, no coalescing; only
                               a test build (TICKETS_TEST_BUILD) sets it */
    char *config_file;      /* --config / TICKETS_CONFIG, or NULL */
    bool check_only;        /* --check-config: check, then exit */
};

enum config_action { CONFIG_RUN, CONFIG_EXIT_OK, CONFIG_EXIT_ERROR };

/*
 * Fill cfg from the environment, then argv (flags win).  Reads the secret
 * files.  Prints --help/--version or an error message itself and says
 * whether main should run or exit.  The caller frees with config_release().
 */
enum config_action config_load(struct config *cfg, int argc, char **argv);

void config_release(struct config *cfg);

/*
 * Apply a config file of KEY=VALUE lines (the environment variables' names)
 * to cfg.  0, or -1 with a message naming the line.  config_load calls it
 * for --config / TICKETS_CONFIG, before the environment and the flags.
 */
int config_read_file(struct config *cfg, const char *path);

/* Print the option table, as --help does. */
void config_usage(const char *argv0);

/*
 * Print the option table as man(7) source (.TP paragraphs): the SETTINGS
 * section of tickets-fcgi(8), built by man/man-settings.c.
 */
void config_man(FILE *out);

/*
 * Read a secret file into a NUL-terminated buffer, less one trailing
 * newline.  Returns malloc'ed memory (the caller frees) or NULL with errno.
 */
char *config_read_secret(const char *path, size_t *len);

#endif
