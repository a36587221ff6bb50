/* test_routes.c: path matching and Allow values (routes.c), pure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
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
    assert_int_equal(match("/ping", arg), ROUTE_PING);
    assert_int_equal(match("/ping/", arg), ROUTE_NONE);
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

/* The JSON the API shows: exact text, key order included. */
static void ticket_json(void **state)
{
    struct ticket t = {.id = 12,
                       .user_id = 42,
                       .event_id = 9223372036854775807LL,
                       .code = "9f0c0000000000000000000000000001",
                       .created_at = "2026-11-25T20:15:00.123456Z"};
    json_t *j = routes_ticket_json(&t);
    char *text = json_dumps(j, JSON_COMPACT);

    assert_string_equal(text, "{\"id\":12,\"code\":"
                              "\"9f0c0000000000000000000000000001\","
                              "\"user_id\":42,"
                              "\"event_id\":9223372036854775807,"
                              "\"created_at\":"
                              "\"2026-11-25T20:15:00.123456Z\"}");
    free(text);
    json_decref(j);
}

static void event_json(void **state)
{
    struct event_row e = {.id = 7,
                          .title = "Caf\xc3\xa9 \"live\"",
                          .starts_at = "2026-12-01T18:00:00Z",
                          .free_for_premium = true,
                          .has_quota = true,
                          .free_quota = 100,
                          .free_issued = 63};
    json_t *j = routes_event_json(&e);
    char *text = json_dumps(j, JSON_COMPACT);

    assert_string_equal(text, "{\"id\":7,\"title\":\"Caf\xc3\xa9 \\\"live\\\"\","
                              "\"starts_at\":\"2026-12-01T18:00:00Z\","
                              "\"free_for_premium\":true,\"free_quota\":100,"
                              "\"free_left\":37}");
    free(text);
    json_decref(j);
    /* no quota: both null; over quota (edited by hand): 0 left, never negative */
    e.has_quota = false;
    j = routes_event_json(&e);
    assert_true(json_is_null(json_object_get(j, "free_quota")));
    assert_true(json_is_null(json_object_get(j, "free_left")));
    json_decref(j);
    e.has_quota = true;
    e.free_quota = 5;
    e.free_issued = 9;
    j = routes_event_json(&e);
    assert_int_equal(json_integer_value(json_object_get(j, "free_left")), 0);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exact_paths),
        cmocka_unit_test(participation),
        cmocka_unit_test(allow_values),
        cmocka_unit_test(ticket_json),
        cmocka_unit_test(event_json),
    };

    return cmocka_run_group_tests_name("routes", tests, NULL, NULL);
}
