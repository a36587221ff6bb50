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

void log_event(enum log_level level, const char *msg, json_t *obj)
{
    char ts[UTIL_TIME_TEXT_MAX];
    struct timeval tv;
    char *line;
    size_t len;

    if (!obj)
        obj = json_object();
    gettimeofday(&tv, NULL);
    util_utc_text(tv.tv_sec, (long)tv.tv_usec, ts);
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "level", json_string(level_names[level]));
    json_object_set_new(obj, "msg", json_string(msg));
    line = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!line)
        return;
    len = strlen(line);
    line[len] = '\n'; /* json_dumps leaves room: we overwrite the NUL */
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
