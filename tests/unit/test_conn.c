/*
 * test_conn.c: when the connection layer deems a request whole
 * (conn_scan_request, conn.c): the loop hands a connection to a worker only
 * then, so that no worker ever waits for a peer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "conn.h"

#define WINDOW 4096

struct stream {
    unsigned char b[WINDOW * 2];
    size_t len;
};

static void record(struct stream *s, int version, int type, int id,
                   size_t content, int padding)
{
    unsigned char *h = s->b + s->len;

    h[0] = (unsigned char)version;
    h[1] = (unsigned char)type;
    h[2] = (unsigned char)(id >> 8);
    h[3] = (unsigned char)id;
    h[4] = (unsigned char)(content >> 8);
    h[5] = (unsigned char)content;
    h[6] = (unsigned char)padding;
    h[7] = 0;
    memset(h + 8, 'x', content + (size_t)padding);
    s->len += 8 + content + (size_t)padding;
}

/* BEGIN_REQUEST, PARAMS, empty PARAMS, a body, empty STDIN: as nginx */
static void request(struct stream *s, size_t body)
{
    record(s, 1, 1, 1, 8, 0);
    record(s, 1, 4, 1, 300, 4);
    record(s, 1, 4, 1, 0, 0);
    if (body)
        record(s, 1, 5, 1, body, 0);
    record(s, 1, 5, 1, 0, 0);
}

static enum conn_scan scan(const struct stream *s, size_t len)
{
    return conn_scan_request(s->b, len, WINDOW);
}

static void whole_request_only_at_the_empty_stdin(void **state)
{
    struct stream s = {0};
    size_t cut;

    request(&s, 100);
    assert_int_equal(scan(&s, s.len), CONN_SCAN_COMPLETE);
    /* every proper prefix is still arriving: no worker may wait on it */
    for (cut = 0; cut < s.len; cut++)
        assert_int_equal(scan(&s, cut), CONN_SCAN_PARTIAL);
}

static void a_get_without_body(void **state)
{
    struct stream s = {0};

    request(&s, 0);
    assert_int_equal(scan(&s, s.len), CONN_SCAN_COMPLETE);
    assert_int_equal(scan(&s, s.len - 1), CONN_SCAN_PARTIAL);
}

static void management_records_are_skipped(void **state)
{
    struct stream s = {0};

    /* an empty STDIN record of request id 0 is not the end of a request */
    record(&s, 1, 5, 0, 0, 0);
    record(&s, 1, 9, 0, 20, 0); /* FCGI_GET_VALUES */
    assert_int_equal(scan(&s, s.len), CONN_SCAN_PARTIAL);
    request(&s, 10);
    assert_int_equal(scan(&s, s.len), CONN_SCAN_COMPLETE);
}

static void the_next_request_may_follow(void **state)
{
    struct stream s = {0};
    size_t first;

    request(&s, 5);
    first = s.len;
    record(&s, 1, 1, 1, 8, 0);
    assert_int_equal(scan(&s, s.len), CONN_SCAN_COMPLETE);
    assert_int_equal(scan(&s, first - 1), CONN_SCAN_PARTIAL);
}

/* A params record holding one pair's two lengths, as the PARAMS record
 * of a request would start. */
static void pair_lengths(struct stream *s, uint32_t name, uint32_t value)
{
    unsigned char *c;

    record(s, 1, 4, 1, 8, 0);
    c = s->b + s->len - 8;
    c[0] = (unsigned char)(0x80 | name >> 24);
    c[1] = (unsigned char)(name >> 16);
    c[2] = (unsigned char)(name >> 8);
    c[3] = (unsigned char)name;
    c[4] = (unsigned char)(0x80 | value >> 24);
    c[5] = (unsigned char)(value >> 16);
    c[6] = (unsigned char)(value >> 8);
    c[7] = (unsigned char)value;
}

static void params_that_libfcgi_must_not_see(void **state)
{
    struct stream s = {0};

    /* the lengths that abort libfcgi 2.4.2: refused as soon as they show,
     * before the rest of the request (which may never come) */
    record(&s, 1, 1, 1, 8, 0);
    pair_lengths(&s, 0x40000000, 0x40000000);
    assert_int_equal(scan(&s, s.len), CONN_SCAN_REFUSE);
    /* one byte more than CONN_PARAM_MAX in one pair */
    s.len = 0;
    record(&s, 1, 1, 1, 8, 0);
    pair_lengths(&s, 1, CONN_PARAM_MAX);
    assert_int_equal(scan(&s, s.len), CONN_SCAN_REFUSE);
    /* exactly CONN_PARAM_MAX is only large */
    s.len = 0;
    record(&s, 1, 1, 1, 8, 0);
    pair_lengths(&s, 1, CONN_PARAM_MAX - 1);
    assert_int_equal(scan(&s, s.len), CONN_SCAN_PARTIAL);
    /* params that do not end within the window */
    s.len = 0;
    record(&s, 1, 1, 1, 8, 0);
    record(&s, 1, 4, 1, 3000, 0);
    memset(s.b + s.len - 3000, 1, 3000); /* pairs of 1-byte names, values */
    record(&s, 1, 4, 1, 3000, 0);
    memset(s.b + s.len - 3000, 1, 3000);
    assert_int_equal(conn_scan_request(s.b, s.len, s.len), CONN_SCAN_REFUSE);
    assert_int_equal(conn_scan_request(s.b, s.len, s.len + 1),
                     CONN_SCAN_PARTIAL);
}

static void a_length_split_across_records(void **state)
{
    struct stream s = {0};
    unsigned char *c;

    /* a four-byte length cut between two PARAMS records still counts */
    record(&s, 1, 1, 1, 8, 0);
    record(&s, 1, 4, 1, 2, 0);
    c = s.b + s.len - 2;
    c[0] = 0x01; /* name length 1 */
    c[1] = 0xff; /* value length, first of four bytes: 0x7f...... */
    record(&s, 1, 4, 1, 3, 0);
    c = s.b + s.len - 3;
    c[0] = c[1] = c[2] = 0xff;
    assert_int_equal(scan(&s, s.len), CONN_SCAN_REFUSE);
}

static void not_ours_to_judge(void **state)
{
    struct stream s = {0};

    /* not FastCGI 1: libfcgi refuses it and closes */
    record(&s, 2, 1, 1, 8, 0);
    assert_int_equal(scan(&s, s.len), CONN_SCAN_HANDOVER);
    /* an abort: libfcgi answers it */
    s.len = 0;
    record(&s, 1, 1, 1, 8, 0);
    record(&s, 1, 2, 1, 0, 0);
    assert_int_equal(scan(&s, s.len), CONN_SCAN_HANDOVER);
    /* a body larger than the window: read under the read timeout */
    s.len = 0;
    record(&s, 1, 1, 1, 8, 0);
    record(&s, 1, 4, 1, 0, 0);
    record(&s, 1, 5, 1, WINDOW, 0);
    assert_int_equal(scan(&s, WINDOW), CONN_SCAN_HANDOVER);
    assert_int_equal(scan(&s, WINDOW - 1), CONN_SCAN_PARTIAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(whole_request_only_at_the_empty_stdin),
        cmocka_unit_test(a_get_without_body),
        cmocka_unit_test(management_records_are_skipped),
        cmocka_unit_test(the_next_request_may_follow),
        cmocka_unit_test(not_ours_to_judge),
        cmocka_unit_test(params_that_libfcgi_must_not_see),
        cmocka_unit_test(a_length_split_across_records),
    };

    return cmocka_run_group_tests_name("conn", tests, NULL, NULL);
}
