/* test_routes.c: path matching and Allow values (routes.c), pure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "routes.h"

static enum route_id match(const char *path, char *arg)
{
    const char *a = NULL;
    size_t n = 0;
    enum route_id id = routes_match(path, &a, &n);

    arg[0] = '\0';
    if (a) {
        memcpy(arg, a, n);
        arg[n] = '\0';
    }
    return id;
}

static void exact_paths(void **state)
{
    char arg[64];

    assert_int_equal(match("/api/events", arg), ROUTE_EVENTS);
    assert_int_equal(match("/api/health", arg), ROUTE_HEALTH);
    assert_int_equal(match("/metrics", arg), ROUTE_METRICS);
    assert_int_equal(match("/api/events/", arg), ROUTE_NONE);
    assert_int_equal(match("/api/events/x", arg), ROUTE_NONE);
    assert_int_equal(match("/api/eventsx", arg), ROUTE_NONE);
    assert_int_equal(match("/API/EVENTS", arg), ROUTE_NONE);
    assert_int_equal(match("/", arg), ROUTE_NONE);
    assert_int_equal(match("", arg), ROUTE_NONE);
    assert_int_equal(match("/metrics/", arg), ROUTE_NONE);
}

static void participation(void **state)
{
    char arg[64];

    assert_int_equal(match("/api/events/7/participation", arg),
                     ROUTE_PARTICIPATION);
    assert_string_equal(arg, "7");
    /* the id is not validated here: rows 1 (token) and 2 (id) are in order */
    assert_int_equal(match("/api/events/abc/participation", arg),
                     ROUTE_PARTICIPATION);
    assert_string_equal(arg, "abc");
    assert_int_equal(match("/api/events//participation", arg),
                     ROUTE_PARTICIPATION);
    assert_string_equal(arg, "");
    assert_int_equal(match("/api/events/1/2/participation", arg), ROUTE_NONE);
    assert_int_equal(match("/api/events/7/participation/", arg), ROUTE_NONE);
    assert_int_equal(match("/api/events/7/participationx", arg), ROUTE_NONE);
    assert_int_equal(match("/api/events/participation", arg), ROUTE_NONE);
    assert_int_equal(match("/api/events/7/Participation", arg), ROUTE_NONE);
}

static void allow_values(void **state)
{
    assert_string_equal(routes_allow(ROUTE_PARTICIPATION), "GET, HEAD, POST");
    assert_string_equal(routes_allow(ROUTE_EVENTS), "GET, HEAD");
    assert_string_equal(routes_allow(ROUTE_HEALTH), "GET, HEAD");
    assert_string_equal(routes_allow(ROUTE_METRICS), "GET, HEAD");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exact_paths),
        cmocka_unit_test(participation),
        cmocka_unit_test(allow_values),
    };

    return cmocka_run_group_tests_name("routes", tests, NULL, NULL);
}
