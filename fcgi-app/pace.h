/*
 * pace.h: claims paced by who the user is, not by how a header is spelled.
 *
 * nginx limits per bearer token (nginx/snippets/tickets-public.conf); a
 * frontend that mints a fresh token per call, or a front other than nginx,
 * escapes that.  Here every verified user id has a token bucket: `rate`
 * claims a second go to the database, after a free `burst`.  A claim over
 * the limit may reserve the user's next token if it comes within
 * `wait_max_us` (PACE_RESERVED: the caller puts the claim aside until then,
 * conn_park, and it goes to the database; the bucket owes the token, so
 * the next claim waits one token longer).  Else it is answered without the
 * database, truthfully (the caller first puts it aside for its longest
 * wait, then asks again with wait_max_us 0):
 *   - the user's last final answer for that event, if it is at most
 *     PACE_KNOWN_US old (a ticket is permanent; a refusal such as sold_out
 *     was true that recently): CLAIM_EXISTING with the ticket, or the
 *     refusal;
 *   - else PACE_OVER: the caller answers 503 busy with Retry-After, unless
 *     a claim of the user is already running in this process (then the
 *     claim parks behind it, inflight.h, and gets its answer: the
 *     contract's "never a 5xx merely because another claim of the same user
 *     was running").
 * Outcomes are learned from every claim that went to the database
 * (pace_learn).
 *
 * The table is fixed-size: PACE_SETS sets of two entries (the least
 * recently seen of a set gives way), guarded by PACE_LOCKS mutexes, each
 * held for one lookup.  A user pushed out starts again with a full bucket.
 * Pure apart from the mutexes: time comes in as an argument.
 */
#ifndef TICKETS_PACE_H
#define TICKETS_PACE_H

#include <stdint.h>

#include "tickets.h"

#define PACE_SETS 8192
#define PACE_LOCKS 64
/* How long a learned answer may be given again without the database. */
#define PACE_KNOWN_US 1000000

struct pace;

enum pace_verdict {
    PACE_GO,    /* a token taken: claim as usual */
    PACE_RESERVED, /* the token of *due_us taken: claim at that time */
    PACE_KNOWN, /* over the limit; *o (and *t) is the answer */
    PACE_OVER,  /* over the limit, nothing known: busy, see above */
};

/* rate: claims per second (0: pacing off, pace_claim always says GO);
 * burst: bucket size (>= 1).  NULL on allocation failure. */
struct pace *pace_new(long rate, long burst);
void pace_free(struct pace *p);

/* A claim of (user, event) at now_us (monotonic), which may wait up to
 * wait_max_us for a token.  On PACE_RESERVED, *due_us is when its token
 * comes (at most now_us + wait_max_us); on PACE_KNOWN, *o is the answer
 * and, for CLAIM_EXISTING, *t the ticket. */
enum pace_verdict pace_claim(struct pace *p, int64_t user_id,
                             int64_t event_id, int64_t now_us,
                             int64_t wait_max_us, enum claim_outcome *o,
                             struct ticket *t, int64_t *due_us);

/* The outcome of a claim that went to the database.  Final answers are
 * remembered (CLAIM_CREATED as CLAIM_EXISTING, with t); busy and
 * unavailable are not. */
void pace_learn(struct pace *p, int64_t user_id, int64_t event_id,
                enum claim_outcome o, const struct ticket *t, int64_t now_us);

#endif
