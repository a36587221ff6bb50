/* test_util.c: strict id and number parsing, hex, time text (util.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util.h"

static bool id(const char *s, int64_t *out)
{
    return util_parse_id(s, strlen(s), out);
}

static void ids_accepted(void **state)
{
    int64_t v;

    assert_true(id("1", &v));
    assert_int_equal(v, 1);
    assert_true(id("7", &v));
    assert_true(id("10", &v));
    assert_int_equal(v, 10);
    assert_true(id("9223372036854775807", &v));
    assert_int_equal(v, INT64_MAX);
}

static void ids_refused(void **state)
{
    static const char *const bad[] = {
        "",     "0",    "00",   "01",   "-1",    "+1",  " 1",
        "1 ",   "1a",   "a1",   "0x10", "1e3",   "1.0", "9223372036854775808",
        "18446744073709551616", "99999999999999999999999", "１",
    };
    int64_t v = 123;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(id(bad[i], &v));
        assert_int_equal(v, 123); /* untouched on failure */
    }
    /* the length bounds the parse: "12" inside "123" */
    assert_true(util_parse_id("123", 2, &v));
    assert_int_equal(v, 12);
}

static void longs(void **state)
{
    long v;

    assert_true(util_parse_long("3306", 1, 65535, &v));
    assert_int_equal(v, 3306);
    assert_false(util_parse_long("70000", 1, 65535, &v));
    assert_false(util_parse_long("0", 1, 65535, &v));
    assert_false(util_parse_long("9x", 1, 65535, &v));
    assert_false(util_parse_long("", 1, 65535, &v));
    assert_true(util_parse_long("-5", -10, 10, &v));
    assert_int_equal(v, -5);
}

static void seconds(void **state)
{
    int64_t us;

    assert_true(util_parse_seconds("3", 3600000000LL, &us));
    assert_int_equal(us, 3000000);
    assert_true(util_parse_seconds("0.25", 3600000000LL, &us));
    assert_int_equal(us, 250000);
    assert_true(util_parse_seconds("1.000001", 3600000000LL, &us));
    assert_int_equal(us, 1000001);
    assert_true(util_parse_seconds("0", 3600000000LL, &us));
    assert_int_equal(us, 0);
    assert_false(util_parse_seconds("-1", 3600000000LL, &us));
    assert_false(util_parse_seconds("1.", 3600000000LL, &us));
    assert_false(util_parse_seconds(".5", 3600000000LL, &us));
    assert_false(util_parse_seconds("1e3", 3600000000LL, &us));
    assert_false(util_parse_seconds("0.0000001", 3600000000LL, &us));
    assert_false(util_parse_seconds("3601", 3600000000LL, &us));
    assert_false(util_parse_seconds("", 3600000000LL, &us));
}

static void hex_and_time(void **state)
{
    const unsigned char in[] = {0x00, 0x9f, 0xab, 0xff};
    char hex[9], t[UTIL_TIME_TEXT_MAX];

    util_hex(in, sizeof(in), hex);
    assert_string_equal(hex, "009fabff");
    util_utc_text(1764101700, 123456, t);
    assert_string_equal(t, "2025-11-25T20:15:00.123456Z");
    util_utc_text(0, 0, t);
    assert_string_equal(t, "1970-01-01T00:00:00.000000Z");
}

static void backoff(void **state)
{
    unsigned a;

    /* half the ceiling at the least, the whole ceiling at the most */
    assert_int_equal(util_backoff_us(0, 10000, 200000, 0), 5000);
    assert_true(util_backoff_us(0, 10000, 200000, UINT32_MAX) <= 10000);
    assert_true(util_backoff_us(0, 10000, 200000, UINT32_MAX) > 9990);
    /* the ceiling doubles per attempt */
    assert_int_equal(util_backoff_us(1, 10000, 200000, 0), 10000);
    assert_int_equal(util_backoff_us(2, 10000, 200000, 0), 20000);
    assert_int_equal(util_backoff_us(2, 10000, 200000, 1u << 31), 30000);
    /* and stops at the cap, however many attempts (no overflow) */
    for (a = 5; a < 200; a += 13) {
        assert_int_equal(util_backoff_us(a, 10000, 200000, 0), 100000);
        assert_true(util_backoff_us(a, 10000, 200000, UINT32_MAX) <= 200000);
    }
    /* a cap below the base is the cap */
    assert_int_equal(util_backoff_us(0, 10000, 4000, 0), 2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ids_accepted), cmocka_unit_test(ids_refused),
        cmocka_unit_test(longs),        cmocka_unit_test(seconds),
        cmocka_unit_test(hex_and_time), cmocka_unit_test(backoff),
    };

    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
