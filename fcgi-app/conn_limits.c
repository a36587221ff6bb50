/*
 * conn_limits.c: what the connection layer (conn.c) sets around the
 * connections it accepts: which fronts may connect (FCGI_WEB_SERVER_ADDRS:
 * conn_addr_parse, conn_addr_allowed), how many descriptors it needs
 * (conn_fit_descriptors), and each socket's options (conn_setup_socket).
 * Addresses are kept as IPv6, IPv4 ones mapped (::ffff:a.b.c.d), so one
 * comparison serves both; libfcgi's own check knows only IPv4.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <string.h>

#include "log.h"

static void mapped(struct in6_addr *a, const void *v4)
{
    memset(a, 0, sizeof(*a));
    a->s6_addr[10] = a->s6_addr[11] = 0xff;
    memcpy(&a->s6_addr[12], v4, 4);
}

int conn_addr_parse(const char *list, struct in6_addr *out, int max)
{
    char item[INET6_ADDRSTRLEN + 1];
    int n = 0;

    while (list && *list) {
        size_t len = strcspn(list, ",");
        const char *p = list;
        struct in_addr v4;

        while (len && (*p == ' ' || *p == '\t'))
            p++, len--;
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        list += strcspn(list, ",");
        list += *list == ',';
        if (len == 0)
            continue;
        if (len >= sizeof(item) || n == max)
            goto bad;
        memcpy(item, p, len);
        item[len] = '\0';
        if (inet_pton(AF_INET, item, &v4) == 1)
            mapped(&out[n++], &v4);
        else if (inet_pton(AF_INET6, item, &out[n]) == 1)
            n++;
        else
            goto bad;
    }
    return n;
bad:
    log_msg(LOG_ERROR, "FCGI_WEB_SERVER_ADDRS: '%.*s' is not an IPv4 or "
                       "IPv6 address (or more than %d are listed)",
            (int)strcspn(item, ","), item, max);
    return -1;
}

bool conn_addr_allowed(const struct in6_addr *allowed, int n,
                       const struct sockaddr_storage *sa)
{
    struct in6_addr a;
    int i;

    if (n == 0)
        return true;
    if (sa->ss_family == AF_INET)
        mapped(&a, &((const struct sockaddr_in *)(const void *)sa)->sin_addr);
    else if (sa->ss_family == AF_INET6)
        a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    else
        return true; /* a unix socket: its file mode guards it */
    for (i = 0; i < n; i++)
        if (memcmp(&a, &allowed[i], sizeof(a)) == 0)
            return true;
    return false;
}

/*
 * Raise the soft descriptor limit to what *max_conns needs (as nginx's
 * worker_rlimit_nofile, php-fpm's rlimit_files); with a lower hard limit,
 * lower *max_conns instead and say so.
 */
int conn_fit_descriptors(long *max_conns, long threads, long reserve)
{
    rlim_t need = (rlim_t)(*max_conns + 2 * threads + reserve);
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < need) {
        long fit = (long)rl.rlim_cur - 2 * threads - reserve;

        if (fit < 16)
            fit = 16;
        log_msg(LOG_WARN, "descriptor limit %lu allows %ld connections, "
                          "not TICKETS_MAX_CONNS=%ld",
                (unsigned long)rl.rlim_cur, fit, *max_conns);
        *max_conns = fit;
    }
    return 0;
}

void conn_setup_socket(int fd, const struct sockaddr_storage *sa,
                       int64_t timeout_us)
{
    struct timeval tv = {.tv_sec = timeout_us / 1000000,
                         .tv_usec = timeout_us % 1000000};
    int one = 1;

    /* bounds a worker's read of an oversized request and every write */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (sa->ss_family == AF_INET || sa->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}
