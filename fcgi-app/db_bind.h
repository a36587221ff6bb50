/*
 * db_bind.h: MYSQL_BINDs for prepared statements, one helper a type.
 * Used by the db files (db_internal.h) and bench/claimdrv; <mysql.h> is
 * theirs to include, as everywhere in the app.
 */
#ifndef TICKETS_DB_BIND_H
#define TICKETS_DB_BIND_H

#include <stddef.h>
#include <stdint.h>

#include <mysql.h>

/* Parameters: v and s are borrowed until the statement has run; *len is
 * set to strlen(s). */
void db_bind_i64(MYSQL_BIND *b, const int64_t *v);
void db_bind_str(MYSQL_BIND *b, const char *s, unsigned long *len);
/* Result columns, written by each fetch; is_null and len may be read after
 * it.  A string column is NUL-terminated when it fits in size. */
void db_out_i64(MYSQL_BIND *b, my_bool *is_null, int64_t *v);
void db_out_str(MYSQL_BIND *b, my_bool *is_null, unsigned long *len,
                char *buf, size_t size);
/* A DATETIME column, fetched as MYSQL_TIME (cheaper for the server than
 * DATE_FORMAT). */
void db_out_time(MYSQL_BIND *b, my_bool *is_null, MYSQL_TIME *t);

#endif
