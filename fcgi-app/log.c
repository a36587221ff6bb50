/*
 * log.c: JSON lines on stderr (12-factor style; spawn-fcgi -n or systemd
 * hand stderr to the supervisor, so the app keeps no log files).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "util.h"

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_event(enum log_level level, const char *msg, json_t *fields)
{
    char ts[UTIL_TIME_TEXT_MAX];
    struct timeval tv;
    json_t *line_obj;
    char *line;
    size_t len;

    gettimeofday(&tv, NULL);
    util_utc_text(tv.tv_sec, (long)tv.tv_usec, ts);
    line_obj = json_pack("{s:s, s:s, s:s?}", "ts", ts, "level",
                         level_names[level], "msg", msg);
    if (!line_obj) /* msg was not UTF-8 */
        line_obj = json_pack("{s:s, s:s, s:s}", "ts", ts, "level",
                             level_names[level], "msg", "?");
    if (fields) {
        json_object_update(line_obj, fields);
        json_decref(fields);
    }
    line = json_dumps(line_obj, JSON_COMPACT | JSON_ENSURE_ASCII |
                                    JSON_PRESERVE_ORDER |
                                    JSON_REAL_PRECISION(6));
    json_decref(line_obj);
    if (!line)
        return;
    len = strlen(line);
    line[len] = '\n'; /* replaces the NUL: written by length below */
    if (write(STDERR_FILENO, line, len + 1) < 0) {
        /* nowhere left to report it */
    }
    free(line);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    log_event(level, buf, NULL);
}
