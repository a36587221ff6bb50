/*
 * main.c: start and stop.
 *
 *   config_load -> the listening socket -> block signals -> library init
 *   -> server_start -> sigwait -> server_stop -> exit 0
 *
 * Signals are blocked in every thread before any starts (threads inherit
 * the mask), and the main thread takes them with sigwait(): libfcgi's own
 * SIGTERM handler would only set a flag.  SIGUSR1 gets a handler that does
 * nothing, installed before FCGX_Init so that libfcgi keeps its own (which
 * would mark the library as shutting down) out.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "server.h"
#include "util.h"

#define LISTEN_BACKLOG 1024

static void on_usr1(int sig)
{
    (void)sig; /* see above: only here so that libfcgi's is not */
}

/* Refuse to take over a unix socket a live process still serves. */
static int unix_socket_in_use(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), live;

    if (fd < 0)
        return 0;
    live = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;
    close(fd);
    return live;
}

/*
 * A file already at path: only a socket of a previous run may be replaced
 * (lstat: a symlink is not followed to whatever it points at); anything
 * else, or a socket a live process serves, is refused.  0, or -1 said.
 */
static int unix_path_free(const struct sockaddr_un *sa)
{
    const char *path = sa->sun_path;
    struct stat st;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        fprintf(stderr, "tickets-fcgi: cannot check %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "tickets-fcgi: %s exists and is not a socket; "
                        "refusing to remove it (TICKETS_LISTEN=unix:%s)\n",
                path, path);
        return -1;
    }
    if (unix_socket_in_use(sa)) {
        fprintf(stderr, "tickets-fcgi: socket %s is in use by another "
                        "process\n", path);
        return -1;
    }
    if (unlink(path) < 0 && errno != ENOENT) { /* a stale socket */
        fprintf(stderr, "tickets-fcgi: cannot remove the old socket %s: "
                        "%s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* On the way out: our socket, unless something else took its place. */
static void unlink_socket(const char *path)
{
    struct stat st;

    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
}

/*
 * The socket file gets mode 0660 as bind() creates it (the umask, set
 * around bind only; no thread runs yet), never by a chmod() of the path
 * afterwards, which would follow whatever someone put there meanwhile.
 */
static int listen_unix(const char *path)
{
    struct sockaddr_un sa;
    mode_t old_mask;
    int fd, rc;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (!*path || strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "tickets-fcgi: bad unix socket path '%s'\n", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    if (unix_path_free(&sa) < 0)
        return -1;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    old_mask = umask(S_IXUSR | S_IXGRP | S_IRWXO); /* 0117: rw-rw---- */
    rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old_mask);
    if (rc < 0 || listen(fd, LISTEN_BACKLOG) < 0)
        goto fail;
    return fd;
fail:
    fprintf(stderr, "tickets-fcgi: cannot listen on %s: %s\n", path,
            strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

/* host:port, [v6addr]:port; the port is strictly 1..65535. */
static int listen_tcp(const char *spec)
{
    char host[256];
    const char *colon = strrchr(spec, ':'), *h = spec;
    size_t hlen;
    long port;
    struct addrinfo hints, *ai = NULL;
    int fd = -1, one = 1, rc;

    if (!colon || !util_parse_long(colon + 1, 1, 65535, &port))
        goto bad;
    hlen = (size_t)(colon - spec);
    if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
        h = spec + 1;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(host))
        goto bad;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host, colon + 1, &hints, &ai);
    if (rc) {
        fprintf(stderr, "tickets-fcgi: cannot resolve '%s': %s\n", host,
                gai_strerror(rc));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
        listen(fd, LISTEN_BACKLOG) < 0) {
        fprintf(stderr, "tickets-fcgi: cannot listen on %s: %s\n", spec,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
bad:
    fprintf(stderr, "tickets-fcgi: TICKETS_LISTEN must be unix:/path or "
                    "host:port, not '%s'\n", spec);
    return -1;
}

/* fd 0 must be a listening stream socket, as spawn-fcgi hands it over. */
static int inherited_socket(void)
{
    int accepting = 0;
    socklen_t len = sizeof(accepting);

    if (getsockopt(0, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0 ||
        !accepting) {
        fprintf(stderr,
                "tickets-fcgi: file descriptor 0 is not a listening socket; "
                "start me under spawn-fcgi, or set TICKETS_LISTEN "
                "(unix:/path or host:port)\n");
        return -1;
    }
    return 0;
}

static int open_listener(const struct config *cfg)
{
    if (!cfg->listen)
        return inherited_socket();
    if (strncmp(cfg->listen, "unix:", 5) == 0)
        return listen_unix(cfg->listen + 5);
    return listen_tcp(cfg->listen);
}

static void setup_signals(sigset_t *waited)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL); /* a peer gone mid-write is EPIPE */
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sigemptyset(waited);
    sigaddset(waited, SIGTERM);
    sigaddset(waited, SIGINT);
    sigaddset(waited, SIGQUIT);
    sigaddset(waited, SIGHUP);
    pthread_sigmask(SIG_BLOCK, waited, NULL);
}

/*
 * --check-config: the configuration was valid (config_load said so); now
 * connect to the database and prepare every statement, as a worker would.
 */
static int check_config(const struct config *cfg)
{
    struct db *db;
    const char *cipher;
    int ok;

    if (cfg->request_timeout_us + cfg->db_timeout_us >=
        (int64_t)CONFIG_FRONT_READ_TIMEOUT_S * 1000000)
        fprintf(stderr, "tickets-fcgi: warning: TICKETS_REQUEST_TIMEOUT "
                        "(%.1f s) plus TICKETS_DB_TIMEOUT (%.1f s) reach the "
                        "shipped nginx fastcgi_read_timeout (%d s): a claim "
                        "could commit after nginx has answered 504\n",
                (double)cfg->request_timeout_us / 1e6,
                (double)cfg->db_timeout_us / 1e6, CONFIG_FRONT_READ_TIMEOUT_S);
    if (db_library_init() < 0) {
        fprintf(stderr, "tickets-fcgi: cannot initialise the MySQL client\n");
        return 2;
    }
    db = db_new(cfg);
    ok = db_ping(db) == DB_OK;
    cipher = ok ? db_tls_cipher(db) : NULL;
    if (ok)
        printf("tickets-fcgi: database connection %s%s\n",
               cipher ? "over TLS, cipher " : "without TLS",
               cipher ? cipher : "");
    db_free(db);
    db_library_end();
    if (!ok) {
        fprintf(stderr, "tickets-fcgi: configuration valid, but the database "
                        "%s is not usable (see the error above)\n",
                cfg->db_name);
        return 1;
    }
    printf("tickets-fcgi: configuration OK; database %s reachable as %s, "
           "statements prepared\n",
           cfg->db_name, cfg->db_user);
    return 0;
}

int main(int argc, char **argv)
{
    struct config cfg;
    struct server *srv;
    sigset_t waited;
    int listen_fd, sig = 0, status = EXIT_FAILURE;

    switch (config_load(&cfg, argc, argv)) {
    case CONFIG_EXIT_OK:
        config_release(&cfg);
        return EXIT_SUCCESS;
    case CONFIG_EXIT_ERROR:
        config_release(&cfg);
        return 2;
    case CONFIG_RUN:
        break;
    }
    if (cfg.check_only) {
        status = check_config(&cfg);
        config_release(&cfg);
        return status;
    }
    listen_fd = open_listener(&cfg);
    if (listen_fd < 0) {
        config_release(&cfg);
        return 2;
    }
    setup_signals(&waited);
    if (db_library_init() < 0 || http_library_init() < 0) {
        fprintf(stderr, "tickets-fcgi: library initialisation failed\n");
        goto out;
    }
    if (cfg.unsafe_no_lock)
        log_msg(LOG_WARN, "TEST ONLY: TICKETS_TEST_UNSAFE_NO_LOCK is set; "
                          "claims run without the per-user lock");
    srv = server_start(&cfg, listen_fd);
    if (!srv)
        goto out;
    log_msg(LOG_INFO, "tickets-fcgi %s started: %ld threads, listening on %s",
            TICKETS_VERSION, cfg.threads, cfg.listen ? cfg.listen : "fd 0");
    for (;;) {
        if (sigwait(&waited, &sig) != 0)
            continue;
        if (sig != SIGHUP)
            break;
        log_msg(LOG_INFO, "SIGHUP ignored: logs go to stderr, nothing to "
                          "reopen");
    }
    log_msg(LOG_INFO, "signal %d: stopping after the requests in flight", sig);
    if (server_stop(srv, util_now_us() + cfg.lock_timeout_us +
                             cfg.db_timeout_us + 5000000) < 0)
        _exit(EXIT_FAILURE); /* workers stuck: leave without joining */
    log_msg(LOG_INFO, "stopped");
    status = EXIT_SUCCESS;
out:
    if (cfg.listen && strncmp(cfg.listen, "unix:", 5) == 0)
        unlink_socket(cfg.listen + 5);
    db_library_end();
    config_release(&cfg);
    return status;
}
