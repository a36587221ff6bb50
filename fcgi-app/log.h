/*
 * log.h: one line per event on stderr.
 *
 * log_msg() writes a JSON object {"ts","level","msg",...}; the line is
 * written with one write(2), so lines from different threads never mix.
 * Safe from any thread.
 */
#ifndef TICKETS_LOG_H
#define TICKETS_LOG_H

#include <jansson.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Log a message; printf-style, lower case, no full stop. */
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Log a structured event: ts, level, msg, then the fields of the object
 * fields (which may be NULL).  Takes the reference to fields.
 */
void log_event(enum log_level level, const char *msg, json_t *fields);

#endif
