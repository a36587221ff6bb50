/*
 * config.c: one table of options (redis config.c static_configs[] style).
 *
 * Each row names the --flag, the environment variable, the default, how to
 * parse it and the help line; --help is printed from the same table, so the
 * two cannot drift apart.  Secret files are read here, once.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

enum opt_type { OPT_STRING, OPT_LONG, OPT_SECONDS, OPT_FLAG, OPT_TRISTATE };

/*
 * A test build (make builds build/tickets-fcgi-test with
 * -DTICKETS_TEST_BUILD) accepts the TEST ONLY switches; a release build
 * refuses to start when one is turned on, so an environment file cannot
 * silently remove a guard in production.
 */
#ifdef TICKETS_TEST_BUILD
#define TEST_BUILD 1
#else
#define TEST_BUILD 0
#endif

struct option_def {
    const char *flag;   /* without the leading "--" */
    const char *env;
    const char *def;    /* NULL: unset */
    enum opt_type type;
    size_t offset;      /* into struct config */
    long min, max;      /* OPT_LONG range; OPT_SECONDS max in seconds */
    const char *help;
};

#define OFF(field) offsetof(struct config, field)

static const struct option_def options[] = {
    {"db-socket", "TICKETS_DB_SOCKET", NULL, OPT_STRING, OFF(db_socket), 0, 0,
     "MySQL unix socket; used instead of host and port when set"},
    {"db-host", "TICKETS_DB_HOST", "127.0.0.1", OPT_STRING, OFF(db_host), 0, 0,
     "MySQL server host"},
    {"db-port", "TICKETS_DB_PORT", "3306", OPT_LONG, OFF(db_port), 1, 65535,
     "MySQL server port"},
    {"db-user", "TICKETS_DB_USER", "tickets", OPT_STRING, OFF(db_user), 0, 0,
     "MySQL user"},
    {"db-password-file", "TICKETS_DB_PASSWORD_FILE", NULL, OPT_STRING,
     OFF(db_password_file), 0, 0,
     "file holding the MySQL password (unset: no password)"},
    {"db-name", "TICKETS_DB_NAME", "tickets", OPT_STRING, OFF(db_name), 0, 0,
     "database name"},
    {"db-tls-ca", "TICKETS_DB_TLS_CA", NULL, OPT_STRING, OFF(db_tls_ca), 0,
     0, "PEM file of the CA that signed the MySQL server's certificate; "
        "turns TLS and its verification on"},
    {"db-tls-cert", "TICKETS_DB_TLS_CERT", NULL, OPT_STRING, OFF(db_tls_cert),
     0, 0, "PEM client certificate for MySQL (with TICKETS_DB_TLS_KEY); "
           "turns TLS on"},
    {"db-tls-key", "TICKETS_DB_TLS_KEY", NULL, OPT_STRING, OFF(db_tls_key), 0,
     0, "PEM private key of TICKETS_DB_TLS_CERT"},
    {"db-tls-verify", "TICKETS_DB_TLS_VERIFY", NULL, OPT_TRISTATE,
     OFF(db_tls_verify), 0, 0,
     "1: TLS, and check the server's certificate and host name (against "
     "the CA, else the system's CAs); 0: encrypt without checking; unset: "
     "1 when TICKETS_DB_TLS_CA is set"},
    {"jwt-secret-file", "TICKETS_JWT_SECRET_FILE", NULL, OPT_STRING,
     OFF(jwt_secret_file), 0, 0,
     "file holding the HS256 secret, at least 32 bytes (required)"},
    {"threads", "TICKETS_THREADS", "16", OPT_LONG, OFF(threads), 1, 1024,
     "worker threads, each with its own MySQL connection"},
    {"lock-timeout", "TICKETS_LOCK_TIMEOUT", "3", OPT_SECONDS,
     OFF(lock_timeout_us), 0, 3600,
     "seconds to wait for the per-user lock (decimals allowed)"},
    {"db-timeout", "TICKETS_DB_TIMEOUT", "10", OPT_SECONDS, OFF(db_timeout_us),
     1, 3600, "seconds a MySQL connect, read or write may take (on top of "
              "the lock wait)"},
    {"request-timeout", "TICKETS_REQUEST_TIMEOUT", "15", OPT_SECONDS,
     OFF(request_timeout_us), 1, 3600,
     "seconds a claim may take from its arrival; past it no statement "
     "starts and nothing commits (503 unavailable); keep it plus "
     "TICKETS_DB_TIMEOUT below the front's read timeout"},
    {"lock-prefix", "TICKETS_LOCK_PREFIX", "tickets:user:", OPT_STRING,
     OFF(lock_prefix), 0, 0, "named lock prefix; the user id follows it"},
    {"listen", "TICKETS_LISTEN", NULL, OPT_STRING, OFF(listen), 0, 0,
     "unix:/path or host:port to listen on (unset: the socket on fd 0)"},
    {"max-conns", "TICKETS_MAX_CONNS", "4096", OPT_LONG, OFF(max_conns), 16,
     1000000, "open connections from the front, at most (idle kept ones "
              "are closed first when a new one needs room)"},
    {"read-timeout", "TICKETS_READ_TIMEOUT", "10", OPT_SECONDS,
     OFF(read_timeout_us), 1, 3600,
     "seconds a request may take to arrive whole (and a response to be "
     "taken); then the connection is closed"},
    {"idle-timeout", "TICKETS_IDLE_TIMEOUT", "0", OPT_SECONDS,
     OFF(idle_timeout_us), 0, 86400,
     "seconds a kept connection may stay idle (0: until the front closes "
     "it); keep the front's keepalive timeout below it"},
    {"pace-rate", "TICKETS_PACE_RATE", "10", OPT_LONG, OFF(pace_rate), 0,
     1000000, "claims per second one user (by verified id) may send to the "
              "database; the excess waits for a token, then is answered "
              "from memory or 503 busy (0: no pacing)"},
    {"pace-burst", "TICKETS_PACE_BURST", "20", OPT_LONG, OFF(pace_burst), 1,
     1000000, "claims one user may send at once before the pace applies"},
    {"pace-park", "TICKETS_PACE_PARK", "1", OPT_SECONDS, OFF(pace_park_us), 0,
     60, "seconds a claim over the pace may wait, without a thread, for "
         "the user's next token (at most half its request budget; "
         "decimals allowed; 0: answered at once)"},
    {"events-cache", "TICKETS_EVENTS_CACHE", "0", OPT_SECONDS,
     OFF(events_cache_us), 0, 60,
     "seconds older than its request an answer of GET /api/events may be "
     "(decimals allowed; 0: read after the request arrived; requests "
     "arriving together share one read either way)"},
    {"config", "TICKETS_CONFIG", NULL, OPT_STRING, OFF(config_file), 0, 0,
     "file of KEY=VALUE lines with the variables above (the environment "
     "and flags win over it)"},
    {"check-config", "TICKETS_CHECK_CONFIG", NULL, OPT_FLAG,
     OFF(check_only), 0, 0,
     "check the configuration and the database connection, then exit"},
    {"test-unsafe-no-lock", "TICKETS_TEST_UNSAFE_NO_LOCK", NULL, OPT_FLAG,
     OFF(unsafe_no_lock), 0, 0,
     "TEST ONLY: skip the per-user lock, coalescing and pacing (=1 to "
     "enable)"},
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

/* TEST ONLY rows: refused ("1") and not listed unless TEST_BUILD. */
static bool is_test_only(const struct option_def *o)
{
    return o->offset == OFF(unsafe_no_lock);
}

void config_usage(const char *argv0)
{
    size_t i;

    printf("usage: %s [--flag=value ...]\n\n"
           "tickets-fcgi " TICKETS_VERSION
           ": a FastCGI responder that issues free event tickets.\n"
           "Each option is an environment variable or a --flag (the flag "
           "wins).\n\n",
           argv0);
    for (i = 0; i < NOPTIONS; i++) {
        const struct option_def *o = &options[i];

        if (is_test_only(o) && !TEST_BUILD)
            continue;
        printf("  --%-20s %-28s %s", o->flag, o->env, o->help);
        if (o->def)
            printf(" [default: %s]", o->def);
        putchar('\n');
    }
    printf("\n  --help      print this and exit\n"
           "  --version   print the version and exit\n");
}

/* Text for man(7): backslashes doubled, '-' as a minus (\-). */
static void man_text(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", out);
        else if (*s == '-')
            fputs("\\-", out);
        else
            fputc(*s, out);
    }
}

void config_man(FILE *out)
{
    static const char *const metavar[] = {
        [OPT_STRING] = "VALUE", [OPT_LONG] = "N", [OPT_SECONDS] = "SECONDS",
        [OPT_FLAG] = NULL, [OPT_TRISTATE] = "BOOL"};
    size_t i;

    fputs(".\\\" generated from the option table of fcgi-app/config.c\n", out);
    for (i = 0; i < NOPTIONS; i++) {
        const struct option_def *o = &options[i];

        if (is_test_only(o) && !TEST_BUILD)
            continue;
        fputs(".TP\n\\fB\\-\\-", out);
        man_text(out, o->flag);
        fputs("\\fR", out);
        if (metavar[o->type])
            fprintf(out, "=\\fI%s\\fR", metavar[o->type]);
        fputs(", \\fB", out);
        man_text(out, o->env);
        fputs("\\fR\n\\&", out);
        man_text(out, o->help);
        fputs(".\n.br\nDefault: ", out);
        if (o->def) {
            fputs("\\fB", out);
            man_text(out, o->def);
            fputs("\\fR", out);
        } else {
            fputs("unset", out);
        }
        fputs(".\n", out);
    }
}

static int set_option(struct config *cfg, const struct option_def *o,
                      const char *value, const char *origin)
{
    char *base = (char *)cfg + o->offset;
    long l;
    int64_t us;

    switch (o->type) {
    case OPT_STRING: {
        char **slot = (char **)(void *)base;
        char *copy = strdup(value);

        if (!copy)
            abort();
        free(*slot);
        *slot = copy;
        return 0;
    }
    case OPT_LONG:
        if (!util_parse_long(value, o->min, o->max, &l))
            break;
        *(long *)(void *)base = l;
        return 0;
    case OPT_SECONDS:
        if (!util_parse_seconds(value, (int64_t)o->max * 1000000, &us) ||
            us < (int64_t)o->min * 1000000)
            break;
        *(int64_t *)(void *)base = us;
        return 0;
    case OPT_FLAG:
        if (strcmp(value, "1") && strcmp(value, "0") && strcmp(value, ""))
            break;
        if (is_test_only(o) && !TEST_BUILD && strcmp(value, "1") == 0) {
            fprintf(stderr,
                    "tickets-fcgi: %s=1 is refused: it is a TEST ONLY "
                    "switch that this release build does not have (the "
                    "tests use build/tickets-fcgi-test); remove it from the "
                    "environment, config file or command line\n",
                    o->env);
            return -1;
        }
        *(bool *)(void *)base = strcmp(value, "1") == 0;
        return 0;
    case OPT_TRISTATE:
        if (strcmp(value, "1") && strcmp(value, "0") && strcmp(value, ""))
            break;
        *(int *)(void *)base = !*value ? CONFIG_TLS_VERIFY_DEFAULT
                               : *value == '1' ? CONFIG_TLS_VERIFY_ON
                                               : CONFIG_TLS_VERIFY_OFF;
        return 0;
    }
    fprintf(stderr, "tickets-fcgi: invalid value for %s: '%s'\n", origin,
            value);
    return -1;
}

static const struct option_def *find_flag(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].flag) == len &&
            memcmp(options[i].flag, name, len) == 0)
            return &options[i];
    return NULL;
}

static int parse_argv(struct config *cfg, int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *eq, *value;
        const struct option_def *o;

        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "tickets-fcgi: unexpected argument '%s'\n", arg);
            return -1;
        }
        arg += 2;
        eq = strchr(arg, '=');
        o = find_flag(arg, eq ? (size_t)(eq - arg) : strlen(arg));
        if (!o) {
            fprintf(stderr, "tickets-fcgi: unknown option '%s' (see --help)\n",
                    argv[i]);
            return -1;
        }
        if (eq) {
            value = eq + 1;
        } else if (o->type == OPT_FLAG) {
            value = "1";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "tickets-fcgi: option --%s needs a value\n",
                    o->flag);
            return -1;
        }
        if (set_option(cfg, o, value, o->flag) < 0)
            return -1;
    }
    return 0;
}

char *config_read_secret(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;

    if (!f)
        return NULL;
    for (;;) {
        size_t got;

        if (n + 256 + 1 > cap) {
            char *nb;

            cap = cap ? cap * 2 : 512;
            if (cap > (1u << 20)) { /* a secret file is small */
                free(buf);
                fclose(f);
                errno = EFBIG;
                return NULL;
            }
            nb = realloc(buf, cap);
            if (!nb)
                abort();
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        errno = EIO;
        return NULL;
    }
    fclose(f);
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    buf[n] = '\0';
    *len = n;
    return buf;
}

/*
 * A secret file that does not exist is what a first start after installing
 * the package looks like: say what to put there and how.
 */
static void missing_secret_hint(const char *path, const char *what)
{
    fprintf(stderr,
            "tickets-fcgi: first start? The operator creates %s with %s, "
            "one line, readable by the app's group only:\n"
            "    install -m 0640 -g tickets /dev/null %s  # then write it\n"
            "  (see tickets-fcgi(8), FILES)\n",
            path, what, path);
}

/* Any TLS setting turns TLS on (and required); a CA turns verification on. */
static int check_tls(struct config *cfg)
{
    if (!cfg->db_tls_cert != !cfg->db_tls_key) {
        fprintf(stderr, "tickets-fcgi: TICKETS_DB_TLS_CERT and "
                        "TICKETS_DB_TLS_KEY go together: set both or "
                        "neither\n");
        return -1;
    }
    cfg->db_tls = cfg->db_tls_ca || cfg->db_tls_cert ||
                  cfg->db_tls_verify != CONFIG_TLS_VERIFY_DEFAULT;
    cfg->db_tls_verify_server =
        cfg->db_tls_verify == CONFIG_TLS_VERIFY_ON ||
        (cfg->db_tls_verify == CONFIG_TLS_VERIFY_DEFAULT && cfg->db_tls_ca);
    return 0;
}

static int check(struct config *cfg)
{
    size_t len;

    if (!cfg->jwt_secret_file) {
        fprintf(stderr, "tickets-fcgi: TICKETS_JWT_SECRET_FILE (or "
                        "--jwt-secret-file) is required\n");
        return -1;
    }
    cfg->jwt_secret =
        (unsigned char *)config_read_secret(cfg->jwt_secret_file, &len);
    if (!cfg->jwt_secret) {
        int err = errno;

        fprintf(stderr, "tickets-fcgi: cannot read JWT secret file '%s': %s\n",
                cfg->jwt_secret_file, strerror(err));
        if (err == ENOENT)
            missing_secret_hint(cfg->jwt_secret_file,
                                "the HS256 secret shared with the site that "
                                "issues the tokens");
        return -1;
    }
    if (len < CONFIG_JWT_SECRET_MIN) {
        fprintf(stderr,
                "tickets-fcgi: the JWT secret in '%s' is %zu bytes; an HS256 "
                "secret must have at least %d (RFC 7518 section 3.2): "
                "generate one with `openssl rand -hex 32`\n",
                cfg->jwt_secret_file, len, CONFIG_JWT_SECRET_MIN);
        return -1;
    }
    cfg->jwt_secret_len = len;
    if (check_tls(cfg) < 0)
        return -1;
    if (cfg->db_password_file) {
        cfg->db_password = config_read_secret(cfg->db_password_file, &len);
        if (!cfg->db_password) {
            int err = errno;

            fprintf(stderr,
                    "tickets-fcgi: cannot read password file '%s': %s\n",
                    cfg->db_password_file, strerror(err));
            if (err == ENOENT)
                missing_secret_hint(cfg->db_password_file,
                                    "the database account's password");
            return -1;
        }
    }
    if (strlen(cfg->lock_prefix) + CONFIG_USER_ID_DIGITS >
        CONFIG_LOCK_NAME_MAX) {
        fprintf(stderr,
                "tickets-fcgi: lock prefix '%s' is too long: with a user id "
                "the lock name must stay within %d characters, so at most "
                "%d\n",
                cfg->lock_prefix, CONFIG_LOCK_NAME_MAX,
                CONFIG_LOCK_NAME_MAX - CONFIG_USER_ID_DIGITS);
        return -1;
    }
    if (cfg->lock_prefix[0] == '\0') {
        fprintf(stderr, "tickets-fcgi: lock prefix must not be empty\n");
        return -1;
    }
    return 0;
}

static const struct option_def *find_env(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].env) == len &&
            memcmp(options[i].env, name, len) == 0)
            return &options[i];
    return NULL;
}

/*
 * The config file: one KEY=VALUE per line, the keys being the environment
 * variables of the table (as in a systemd EnvironmentFile); blank lines and
 * lines starting with # are skipped; no quoting, the value is the rest of
 * the line less trailing spaces.
 */
int config_read_file(struct config *cfg, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[4096], origin[64];
    unsigned lineno = 0;
    int rc = 0;

    if (!f) {
        fprintf(stderr, "tickets-fcgi: cannot read config file '%s': %s\n",
                path, strerror(errno));
        return -1;
    }
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        char *p = line, *eq, *end;
        const struct option_def *o;

        lineno++;
        end = p + strlen(p);
        while (end > p && (end[-1] == '\n' || end[-1] == '\r' ||
                           end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        eq = strchr(p, '=');
        o = eq ? find_env(p, (size_t)(eq - p)) : NULL;
        if (!o || o->offset == OFF(config_file)) {
            fprintf(stderr, "tickets-fcgi: %s:%u: expected KEY=VALUE with a "
                            "known key, not '%s'\n",
                    path, lineno, p);
            rc = -1;
            break;
        }
        snprintf(origin, sizeof(origin), "%s line %u", o->env, lineno);
        rc = set_option(cfg, o, eq + 1, origin);
    }
    fclose(f);
    return rc;
}

/* The config file named by --config or TICKETS_CONFIG, if any. */
static const char *config_path(int argc, char **argv)
{
    int a;

    for (a = 1; a < argc; a++) {
        if (strncmp(argv[a], "--config=", 9) == 0)
            return argv[a] + 9;
        if (strcmp(argv[a], "--config") == 0 && a + 1 < argc)
            return argv[a + 1];
    }
    return getenv("TICKETS_CONFIG");
}

enum config_action config_load(struct config *cfg, int argc, char **argv)
{
    const char *file;
    size_t i;
    int a;

    memset(cfg, 0, sizeof(*cfg));
    for (a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--help") == 0 || strcmp(argv[a], "-h") == 0) {
            config_usage(argv[0]);
            return CONFIG_EXIT_OK;
        }
        if (strcmp(argv[a], "--version") == 0) {
            printf("tickets-fcgi %s\n", TICKETS_VERSION);
            return CONFIG_EXIT_OK;
        }
    }
    /* defaults, then the config file, then the environment, then flags */
    for (i = 0; i < NOPTIONS; i++)
        if (options[i].def &&
            set_option(cfg, &options[i], options[i].def, options[i].flag) < 0)
            return CONFIG_EXIT_ERROR;
    file = config_path(argc, argv);
    if (file && *file && config_read_file(cfg, file) < 0)
        return CONFIG_EXIT_ERROR;
    for (i = 0; i < NOPTIONS; i++) {
        const char *v = getenv(options[i].env);

        if (v && *v && set_option(cfg, &options[i], v, options[i].env) < 0)
            return CONFIG_EXIT_ERROR;
    }
    if (parse_argv(cfg, argc, argv) < 0 || check(cfg) < 0)
        return CONFIG_EXIT_ERROR;
    return CONFIG_RUN;
}

void config_release(struct config *cfg)
{
    size_t i;

    for (i = 0; i < NOPTIONS; i++)
        if (options[i].type == OPT_STRING)
            free(*(char **)(void *)((char *)cfg + options[i].offset));
    if (cfg->db_password) {
        memset(cfg->db_password, 0, strlen(cfg->db_password));
        free(cfg->db_password);
    }
    if (cfg->jwt_secret) {
        memset(cfg->jwt_secret, 0, cfg->jwt_secret_len);
        free(cfg->jwt_secret);
    }
    memset(cfg, 0, sizeof(*cfg));
}
