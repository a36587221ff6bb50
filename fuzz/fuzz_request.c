/*
 * fuzz_request.c: libFuzzer target for the request path, from FastCGI
 * params and body to the response, without a database.
 *
 * Each input is turned into one FastCGI request (BEGIN_REQUEST, PARAMS,
 * STDIN records, as nginx sends them) and written to a real unix socket;
 * the app's own code takes it from there: the connection layer (conn.c:
 * accept, the peek for a whole request), libfcgi's FCGX_Accept_r and
 * http_accept (params, DOCUMENT_URI / REQUEST_URI fallback with
 * decode_path, the body and its 4 KiB limit), routes_dispatch (route table,
 * 404/405, auth_verify, util_parse_id, the JSON body check), tickets_claim
 * over stub_db.c, the JSON rendering and the access log.  The response is
 * read back and must be a CGI response with a Status line and, for
 * application/json, a JSON object of the contract's shape.
 *
 * Input format (readable seeds in fuzz/corpus/request/):
 *     NAME=VALUE lines (one FastCGI param each; bytes but '\n'), an empty
 *     line, then the body.  A value "@sign:<JSON>" of HTTP_AUTHORIZATION
 *     becomes "Bearer " and an HS256 token over that JSON payload, signed
 *     with the harness's secret, so that claims get past row 1.
 */
#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "config.h"
#include "conn.h"
#include "db.h"
#include "http.h"
#include "routes.h"
#include "util.h"

#define SECRET "fuzz-secret-0123456789abcdef0123"
#define FUZZ_MAX_INPUT 32768

static struct sockaddr_un addr;
static int listen_fd = -1;
static struct config cfg;
static struct http_request *req;
static struct db *db;
static struct conn_layer *conns;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* libfcgi: no 2 s lingering close, no 2 s wait for the first byte */
    setenv("LIBFCGI_OS_CLOSE_POLL_TIMEOUT", "0", 1);
    setenv("LIBFCGI_IS_AF_UNIX_KEEPER_POLL_TIMEOUT", "100", 1);
    signal(SIGPIPE, SIG_IGN);
    if (http_library_init() < 0)
        abort();
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    /* an abstract socket: no file to clean up */
    snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1,
             "tickets-fuzz-request-%ld", (long)getpid());
    listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&addr,
                              sizeof(addr)) < 0 || listen(listen_fd, 16) < 0) {
        perror("fuzz_request: listen");
        abort();
    }
    cfg.jwt_secret = (unsigned char *)SECRET;
    cfg.jwt_secret_len = strlen(SECRET);
    cfg.lock_prefix = (char *)"tickets:user:";
    cfg.lock_timeout_us = 1000000;
    cfg.db_timeout_us = 1000000;
    cfg.threads = 1;
    cfg.max_conns = 16;
    cfg.read_timeout_us = 1000000;
    db = db_new(&cfg);
    conns = conn_start(&cfg, listen_fd, 1);
    if (!conns)
        abort();
    req = http_request_new(conns);
    return 0;
}

/* --- a growing byte buffer */

struct buf {
    unsigned char *p;
    size_t len, cap;
};

static void put(struct buf *b, const void *d, size_t n)
{
    if (n == 0)
        return;
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void record(struct buf *out, int type, const unsigned char *c, size_t n)
{
    do {
        size_t chunk = n > 65535 ? 65535 : n;
        unsigned char h[8] = {1, (unsigned char)type, 0, 1,
                              (unsigned char)(chunk >> 8), (unsigned char)chunk,
                              0, 0};
        put(out, h, 8);
        if (chunk) {
            put(out, c, chunk);
            c += chunk;
            n -= chunk;
        }
    } while (n > 0);
}

static void length(struct buf *b, size_t n)
{
    unsigned char l[4] = {(unsigned char)(0x80 | (n >> 24)),
                          (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                          (unsigned char)n};

    if (n < 128) {
        l[0] = (unsigned char)n;
        put(b, l, 1);
    } else {
        put(b, l, 4);
    }
}

static void b64url(const unsigned char *in, size_t n, struct buf *out)
{
    unsigned char tmp[4 * (FUZZ_MAX_INPUT / 3 + 2) + 1];
    int m = EVP_EncodeBlock(tmp, in, (int)n), i;

    for (i = 0; i < m && tmp[i] != '='; i++) {
        unsigned char c = tmp[i] == '+' ? '-' : tmp[i] == '/' ? '_' : tmp[i];

        put(out, &c, 1);
    }
}

/* "Bearer " + HS256(header {"alg":"HS256"}, payload) */
static void signed_token(const unsigned char *payload, size_t n, struct buf *v)
{
    static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    size_t start;

    put(v, "Bearer ", 7);
    start = v->len;
    b64url((const unsigned char *)hdr, sizeof(hdr) - 1, v);
    put(v, ".", 1);
    b64url(payload, n, v);
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), v->p + start,
         v->len - start, mac, &mac_len);
    put(v, ".", 1);
    b64url(mac, mac_len, v);
}

/* The canonical id the contract defines, the slow way, to check util.c. */
static bool ref_parse_id(const char *s, size_t n, int64_t *out)
{
    static const char max[] = "9223372036854775807";
    size_t i;

    if (n == 0 || n > 19 || (s[0] == '0'))
        return false;
    for (i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    if (n == 19 && memcmp(s, max, 19) > 0)
        return false;
    *out = 0;
    for (i = 0; i < n; i++)
        *out = *out * 10 + (s[i] - '0');
    return true;
}

static void check_id(const char *s, size_t n)
{
    int64_t a = -1, b = -1;
    bool ra = util_parse_id(s, n, &a), rb = ref_parse_id(s, n, &b);

    if (ra != rb || (ra && a != b)) {
        fprintf(stderr, "util_parse_id disagrees on '%.*s'\n", (int)n, s);
        abort();
    }
}

/* A HEAD answer has the headers of the GET answer and no body. */
static void check_response(const unsigned char *d, size_t n, bool head_only)
{
    struct buf out = {0};
    const char *head, *body, *p;
    int status = 0, ended = 0;
    json_t *doc;

    while (n >= 8) {
        size_t clen = ((size_t)d[4] << 8) | d[5], plen = d[6];

        if (n < 8 + clen + plen)
            break;
        if (d[1] == 6)
            put(&out, d + 8, clen);
        if (d[1] == 3)
            ended = 1;
        d += 8 + clen + plen;
        n -= 8 + clen + plen;
    }
    if (!ended) {
        fprintf(stderr, "no FCGI_END_REQUEST\n");
        abort();
    }
    put(&out, "", 1);
    head = (const char *)out.p;
    body = strstr(head, "\r\n\r\n");
    if (strncmp(head, "Status: ", 8) != 0 || !body) {
        fprintf(stderr, "not a CGI response: %.200s\n", head);
        abort();
    }
    status = atoi(head + 8);
    if (status < 200 || status > 599 || status == 500) {
        fprintf(stderr, "status %d\n", status);
        abort();
    }
    body += 4;
    if (head_only) {
        if (*body) {
            fprintf(stderr, "a body for HEAD: %.300s\n", body);
            abort();
        }
        free(out.p);
        return;
    }
    p = strstr(head, "Content-Type: application/json");
    if (p && p < body) {
        doc = json_loads(body, 0, NULL);
        if (!json_is_object(doc) ||
            (status >= 400 && status != 503 &&
             (!json_is_string(json_object_get(doc, "error")) ||
              !json_is_string(json_object_get(doc, "message"))))) {
            fprintf(stderr, "bad JSON body for %d: %.300s\n", status, body);
            abort();
        }
        json_decref(doc);
    }
    free(out.p);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    struct buf params = {0}, stream = {0}, resp = {0};
    const unsigned char *p = data, *end = data + size, *body = end;
    static const unsigned char begin[8] = {0, 1, 0, 0, 0, 0, 0, 0};
    struct route_ctx ctx = {db, &cfg};
    unsigned char tmp[65536];
    int fd;
    ssize_t got;
    bool head_only;
    struct park_entry *back;
    int64_t arrived;
    int fd_ready;

    if (size > FUZZ_MAX_INPUT)
        return 0;
    /* params, until an empty line */
    while (p < end) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *line_end = nl ? nl : end, *eq;
        struct buf v = {0};
        size_t nlen;

        if (line_end == p) {
            body = nl ? nl + 1 : end;
            break;
        }
        eq = memchr(p, '=', (size_t)(line_end - p));
        nlen = (size_t)((eq ? eq : line_end) - p);
        if (eq) {
            size_t vlen = (size_t)(line_end - eq - 1);

            if (nlen == 18 && memcmp(p, "HTTP_AUTHORIZATION", 18) == 0 &&
                vlen >= 6 && memcmp(eq + 1, "@sign:", 6) == 0)
                signed_token(eq + 7, vlen - 6, &v);
            else
                put(&v, eq + 1, vlen);
            check_id((const char *)eq + 1, vlen);
        }
        length(&params, nlen);
        length(&params, v.len);
        put(&params, p, nlen);
        if (v.len)
            put(&params, v.p, v.len);
        free(v.p);
        p = nl ? nl + 1 : end;
        if (!nl)
            body = end;
    }
    record(&stream, 1, begin, 8); /* role 1: responder; no FCGI_KEEP_CONN */
    if (params.len)
        record(&stream, 4, params.p, params.len);
    record(&stream, 4, NULL, 0);
    if (body < end)
        record(&stream, 5, body, (size_t)(end - body));
    record(&stream, 5, NULL, 0);

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        write(fd, stream.p, stream.len) != (ssize_t)stream.len) {
        perror("fuzz_request: client");
        abort();
    }
    shutdown(fd, SHUT_WR);
    fd_ready = conn_next(conns, &arrived, &back);
    if (http_accept(req, fd_ready, arrived) != 0) {
        fprintf(stderr, "http_accept failed on a well-formed request\n");
        abort();
    }
    if (req->path)
        check_id(req->path, strlen(req->path));
    head_only = req->head;
    if (routes_dispatch(&ctx, req) == ROUTE_PARKED) {
        fprintf(stderr, "parked with nobody to lead\n");
        abort();
    }
    http_finish(req);
    if (db_locks_held(db) != 0) {
        fprintf(stderr, "a named lock is held after the request\n");
        abort();
    }
    while ((got = read(fd, tmp, sizeof(tmp))) > 0)
        put(&resp, tmp, (size_t)got);
    close(fd);
    check_response(resp.p, resp.len, head_only);
    free(resp.p);
    free(params.p);
    free(stream.p);
    return 0;
}
