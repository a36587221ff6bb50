/*
 * util.h: strict parsing of numbers, hex, and UTC time text.
 *
 * Pure functions: no allocation, no global state, safe from any thread.
 * Parsers return true on success and leave *out untouched on failure.
 */
#ifndef TICKETS_UTIL_H
#define TICKETS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest id the API accepts (the contract's 9223372036854775807). */
#define UTIL_ID_MAX INT64_MAX

/* Room for "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" and its NUL. */
#define UTIL_TIME_TEXT_MAX 32

/* The struct of type that holds *ptr as its member (the kernel's). */
#define UTIL_CONTAINER_OF(ptr, type, member)                                  \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/*
 * Parse an id: a canonical decimal integer in 1 .. UTIL_ID_MAX, digits only
 * (no sign, no leading zero, no spaces), exactly len bytes long.
 */
bool util_parse_id(const char *s, size_t len, int64_t *out);

/* Parse a whole decimal string into a long in [min, max]. */
bool util_parse_long(const char *s, long min, long max, long *out);

/*
 * Parse a non-negative decimal number of seconds ("3", "0.25") into
 * microseconds, at most max_us.  No sign, no exponent, at most 6 decimals.
 */
bool util_parse_seconds(const char *s, int64_t max_us, int64_t *out_us);

/* Write 2*n lower-case hex digits and a NUL to out (size 2*n+1). */
void util_hex(const unsigned char *in, size_t n, char *out);

/*
 * Format a UTC time given as seconds and microseconds since the epoch as
 * "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" into out (UTIL_TIME_TEXT_MAX bytes).
 */
void util_utc_text(int64_t sec, long usec, char *out);

/* The same from broken-down UTC fields (tm_year since 1900, tm_mon 0-11). */
struct tm;
void util_tm_text(const struct tm *tm, long usec, char *out);

/* Microseconds on the monotonic clock, for durations. */
int64_t util_now_us(void);

/*
 * The pause before retry number attempt (0 for the first retry): "equal
 * jitter" backoff.  The ceiling doubles from base_us with each attempt up
 * to cap_us; the pause is half the ceiling plus rnd's share of the other
 * half (rnd uniform over uint32_t), so that claims which failed together
 * spread out instead of colliding again, yet none retries at once.
 */
int64_t util_backoff_us(unsigned attempt, int64_t base_us, int64_t cap_us,
                        uint32_t rnd);

#endif
