/*
 * util.c: strict number parsing, hex and UTC time text.
 *
 * strtol() accepts leading spaces, signs and "0x"; ids in URLs and tokens
 * must not, so the parsers here walk the digits themselves and check for
 * overflow before each step (memcached util.c safe_strto* does the same).
 */
#include "util.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static bool parse_digits(const char *s, size_t len, uint64_t max,
                         uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0 || len > 20)
        return false;
    if (s[0] == '0' && len > 1)
        return false; /* no leading zero */
    for (i = 0; i < len; i++) {
        unsigned d;

        if (s[i] < '0' || s[i] > '9')
            return false;
        d = (unsigned)(s[i] - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool util_parse_id(const char *s, size_t len, int64_t *out)
{
    uint64_t v;

    if (!parse_digits(s, len, (uint64_t)UTIL_ID_MAX, &v) || v == 0)
        return false;
    *out = (int64_t)v;
    return true;
}

bool util_parse_long(const char *s, long min, long max, long *out)
{
    uint64_t v;
    size_t len = 0;
    bool neg = false;

    if (s[0] == '-') {
        neg = true;
        s++;
    }
    while (s[len])
        len++;
    if (!parse_digits(s, len, (uint64_t)INT64_MAX, &v))
        return false;
    if (neg ? v > (uint64_t)LONG_MAX + 1 : v > (uint64_t)LONG_MAX)
        return false;
    {
        long r = neg ? (long)(0 - v) : (long)v;

        if (r < min || r > max)
            return false;
        *out = r;
    }
    return true;
}

bool util_parse_seconds(const char *s, int64_t max_us, int64_t *out_us)
{
    int64_t whole = 0, frac = 0;
    int ndigits = 0, nfrac = 0;

    for (; *s >= '0' && *s <= '9'; s++, ndigits++) {
        if (ndigits >= 9)
            return false;
        whole = whole * 10 + (*s - '0');
    }
    if (*s == '.') {
        s++;
        for (; *s >= '0' && *s <= '9'; s++, nfrac++) {
            if (nfrac >= 6)
                return false;
            frac = frac * 10 + (*s - '0');
        }
        if (nfrac == 0)
            return false;
    }
    if (*s != '\0' || ndigits == 0)
        return false;
    for (; nfrac < 6; nfrac++)
        frac *= 10;
    if (whole * 1000000 + frac > max_us)
        return false;
    *out_us = whole * 1000000 + frac;
    return true;
}

void util_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

void util_tm_text(const struct tm *tm, long usec, char *out)
{
    char buf[96]; /* room for any int fields, to keep the compiler sure */

    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
             tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday, tm->tm_hour,
             tm->tm_min, tm->tm_sec, usec);
    memcpy(out, buf, UTIL_TIME_TEXT_MAX - 1);
    out[UTIL_TIME_TEXT_MAX - 1] = '\0';
}

void util_utc_text(int64_t sec, long usec, char *out)
{
    time_t t = (time_t)sec;
    struct tm tm;

    gmtime_r(&t, &tm);
    util_tm_text(&tm, usec, out);
}

int64_t util_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t util_backoff_us(unsigned attempt, int64_t base_us, int64_t cap_us,
                        uint32_t rnd)
{
    int64_t ceiling = base_us;

    while (attempt-- > 0 && ceiling < cap_us)
        ceiling *= 2;
    if (ceiling > cap_us)
        ceiling = cap_us;
    return ceiling / 2 + (int64_t)(((uint64_t)(ceiling - ceiling / 2) * rnd) >>
                                   32);
}
