/*
 * db_bind.c: filling MYSQL_BINDs for parameters and result columns.
 * Shared with bench/claimdrv (its ceilings bind the same way).
 */
#include "db_bind.h"

#include <stdint.h>
#include <string.h>

void db_bind_i64(MYSQL_BIND *b, const int64_t *v)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = (void *)(uintptr_t)v;
}

void db_bind_str(MYSQL_BIND *b, const char *s, unsigned long *len)
{
    memset(b, 0, sizeof(*b));
    *len = strlen(s);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)(uintptr_t)s;
    b->buffer_length = *len;
    b->length = len;
}

void db_out_i64(MYSQL_BIND *b, my_bool *is_null, int64_t *v)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
    b->is_null = is_null;
}

void db_out_str(MYSQL_BIND *b, my_bool *is_null, unsigned long *len,
                char *buf, size_t size)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = buf;
    b->buffer_length = size; /* the client NUL-terminates when it fits */
    b->is_null = is_null;
    b->length = len;
}

/* A DATETIME column, fetched as MYSQL_TIME (cheaper for the server than
 * DATE_FORMAT) and turned into text by ticket_time (db_read.c). */
void db_out_time(MYSQL_BIND *b, my_bool *is_null, MYSQL_TIME *t)
{
    memset(b, 0, sizeof(*b));
    b->buffer_type = MYSQL_TYPE_DATETIME;
    b->buffer = t;
    b->buffer_length = sizeof(*t);
    b->is_null = is_null;
}
