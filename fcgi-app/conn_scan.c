/*
 * conn_scan.c: whether the bytes queued on a connection hold a whole
 * FastCGI request (conn.h, conn_scan_request).  Pure, so that the unit
 * tests can feed it every prefix of a request; the connection layer calls
 * it on what a peek (MSG_PEEK) shows, and hands a connection to a worker
 * only when it says so.
 *
 * It walks the records up to the empty FCGI_STDIN record of a request and
 * reads the name-value lengths of the params on the way: a pair that
 * announces more than CONN_PARAM_MAX bytes is refused before libfcgi,
 * which allocates whatever is announced, sees it.
 */
#include "conn.h"

#include <fastcgi.h>

/* The params stream's name-value pairs, read as their records arrive. */
struct params_scan {
    uint32_t len[2]; /* name and value length of the pair being read */
    int field;       /* which of the two lengths is being read */
    int more;        /* bytes of a four-byte length still to come */
    uint64_t skip;   /* bytes of the pair's name and value still to come */
};

/* Feed n bytes of the params stream; false: a pair announces too much. */
static bool params_feed(struct params_scan *p, const unsigned char *d,
                        size_t n)
{
    size_t i = 0;

    while (i < n) {
        if (p->skip) {
            size_t k = p->skip < n - i ? (size_t)p->skip : n - i;

            p->skip -= k;
            i += k;
            continue;
        }
        if (p->more) {
            p->len[p->field] = p->len[p->field] << 8 | d[i++];
            if (--p->more)
                continue;
        } else if (d[i] & 0x80) { /* four bytes, high bit set */
            p->len[p->field] = d[i++] & 0x7fu;
            p->more = 3;
            continue;
        } else {
            p->len[p->field] = d[i++];
        }
        if (p->field == 0) {
            p->field = 1;
            continue;
        }
        p->field = 0;
        p->skip = (uint64_t)p->len[0] + p->len[1];
        if (p->skip > CONN_PARAM_MAX)
            return false;
    }
    return true;
}

enum conn_scan conn_scan_request(const unsigned char *buf, size_t len,
                                 size_t window)
{
    struct params_scan params = {0};
    bool params_end = false;
    size_t pos = 0;

    while (len - pos >= FCGI_HEADER_LEN) {
        const unsigned char *h = buf + pos;
        size_t content = (size_t)h[4] << 8 | h[5];
        size_t record = FCGI_HEADER_LEN + content + h[6];
        size_t here = len - pos - FCGI_HEADER_LEN;
        unsigned id = (unsigned)h[2] << 8 | h[3];

        if (h[0] != FCGI_VERSION_1 || h[1] == FCGI_ABORT_REQUEST)
            return CONN_SCAN_HANDOVER;
        if (h[1] == FCGI_PARAMS && id != 0 && !params_end) {
            if (!params_feed(&params, h + FCGI_HEADER_LEN,
                             content < here ? content : here))
                return CONN_SCAN_REFUSE;
            params_end = content == 0;
        }
        if (record > len - pos)
            break;
        if (h[1] == FCGI_STDIN && content == 0 && id != 0)
            return CONN_SCAN_COMPLETE;
        pos += record;
    }
    if (len < window)
        return CONN_SCAN_PARTIAL;
    return params_end ? CONN_SCAN_HANDOVER : CONN_SCAN_REFUSE;
}
