/*
 * routes.c: which handler serves a request, and the HTTP face of outcomes.
 *
 * Claims go through pace.c, then inflight.c: a claim over its user's pace
 * is put aside in the connection layer until a token comes (or its longest
 * wait passes); the first claim of a user in this process leads, later
 * ones are parked and answered by the leader (see inflight.h for why).
 * Every other route is a plain call.
 */
#include "routes.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "inflight.h"
#include "log.h"
#include "metrics.h"
#include "pace.h"
#include "textcache.h"
#include "tickets.h"
#include "util.h"

#define EVENTS_LIST_MAX 1000
#define RETRY_AFTER "Retry-After: 1\r\n"

typedef void (*handler_fn)(const struct route_ctx *, struct http_request *,
                           const char *arg, size_t arg_len);

static void events_list(const struct route_ctx *, struct http_request *,
                        const char *, size_t);
static void participation_get(const struct route_ctx *, struct http_request *,
                              const char *, size_t);
static void health(const struct route_ctx *, struct http_request *,
                   const char *, size_t);
static void metrics(const struct route_ctx *, struct http_request *,
                    const char *, size_t);
static void ping(const struct route_ctx *, struct http_request *,
                 const char *, size_t);

static const struct route {
    enum route_id id;
    const char *prefix; /* the path, or what comes before {event_id} */
    const char *suffix; /* NULL: exact path; else what follows {event_id} */
    handler_fn get;     /* GET and HEAD */
    bool post;          /* POST: the claim, which may park the request */
    const char *allow;
} routes[] = {
    {ROUTE_EVENTS, "/api/events", NULL, events_list, false, "GET, HEAD"},
    {ROUTE_PARTICIPATION, "/api/events/", "/participation", participation_get,
     true, "GET, HEAD, POST"},
    {ROUTE_HEALTH, "/api/health", NULL, health, false, "GET, HEAD"},
    {ROUTE_METRICS, "/metrics", NULL, metrics, false, "GET, HEAD"},
    {ROUTE_PING, "/ping", NULL, ping, false, "GET, HEAD"},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* Outcome -> HTTP: the columns of CLAIM_OUTCOMES (tickets.h). */
static const struct {
    int status;
    const char *error; /* NULL: a ticket body */
    const char *message;
} outcome_http[] = {
#define X(id, name, status, error, message) [CLAIM_##id] = {status, error, message},
    CLAIM_OUTCOMES(X)
#undef X
};

static const struct route *find(const char *path, const char **arg,
                                size_t *arg_len)
{
    size_t i, plen = strlen(path);

    for (i = 0; i < NROUTES; i++) {
        const struct route *rt = &routes[i];
        size_t pre = strlen(rt->prefix), suf;
        const char *seg;

        if (!rt->suffix) {
            if (strcmp(path, rt->prefix) == 0)
                return rt;
            continue;
        }
        suf = strlen(rt->suffix);
        if (plen < pre + suf || strncmp(path, rt->prefix, pre) != 0 ||
            strcmp(path + plen - suf, rt->suffix) != 0)
            continue;
        seg = path + pre;
        if (memchr(seg, '/', plen - pre - suf))
            continue; /* the id is one segment */
        *arg = seg;
        *arg_len = plen - pre - suf;
        return rt;
    }
    return NULL;
}

enum route_id routes_match(const char *path, const char **arg,
                           size_t *arg_len)
{
    const struct route *rt = find(path, arg, arg_len);

    return rt ? rt->id : ROUTE_NONE;
}

const char *routes_allow(enum route_id id)
{
    size_t i;

    for (i = 0; i < NROUTES; i++)
        if (routes[i].id == id)
            return routes[i].allow;
    return "";
}

json_t *routes_ticket_json(const struct ticket *t)
{
    return json_pack("{s:I, s:s, s:I, s:I, s:s}", "id", (json_int_t)t->id,
                     "code", t->code, "user_id", (json_int_t)t->user_id,
                     "event_id", (json_int_t)t->event_id, "created_at",
                     t->created_at);
}

json_t *routes_event_json(const struct event_row *e)
{
    json_t *quota = e->has_quota ? json_integer(e->free_quota) : json_null();
    json_t *left = e->has_quota
                       ? json_integer(e->free_issued >= e->free_quota
                                          ? 0
                                          : e->free_quota - e->free_issued)
                       : json_null();

    return json_pack("{s:I, s:s, s:s, s:b, s:o, s:o}", "id", (json_int_t)e->id,
                     "title", e->title, "starts_at", e->starts_at,
                     "free_for_premium", e->free_for_premium, "free_quota",
                     quota, "free_left", left);
}

/* Answer a claim or a read with its outcome. */
static void respond(struct http_request *r, enum claim_outcome o,
                    const struct ticket *t, bool is_claim)
{
    int status = outcome_http[o].status;

    r->outcome = tickets_outcome_name(o);
    if (is_claim)
        metrics_claim(o);
    if (outcome_http[o].error) {
        http_send_error(r, status, outcome_http[o].error,
                        outcome_http[o].message,
                        status == 503 ? RETRY_AFTER : NULL);
        return;
    }
    if (is_claim)
        http_send_json(r, status,
                       json_pack("{s:o, s:b}", "ticket", routes_ticket_json(t),
                                 "created", o == CLAIM_CREATED),
                       NULL);
    else
        http_send_json(r, status, json_pack("{s:o}", "ticket", routes_ticket_json(t)),
                       NULL);
}

static const char *auth_message(enum auth_result a)
{
    switch (a) {
    case AUTH_MISSING: return "a bearer token is required";
    case AUTH_EXPIRED: return "the token has expired";
    case AUTH_NOT_YET_VALID: return "the token is not valid yet";
    case AUTH_BAD_ALG: return "only HS256 tokens are accepted";
    default: return "the token is not valid";
    }
}

/*
 * Rows 1 and 2 of the contract (token, then event id), shared by GET and
 * POST.  Returns false when it has answered.
 */
static bool authorize(const struct route_ctx *ctx, struct http_request *r,
                      const char *arg, size_t arg_len)
{
    enum auth_result a;

    a = auth_verify(r->authorization, ctx->cfg->jwt_secret,
                    ctx->cfg->jwt_secret_len, (int64_t)time(NULL),
                    &r->user_id);
    if (a != AUTH_OK) { /* contract: claim row 1, unauthorized */
        r->user_id = 0;
        r->outcome = auth_result_name(a);
        http_send_error(r, 401, "unauthorized", auth_message(a),
                        "WWW-Authenticate: Bearer\r\n");
        return false;
    }
    if (!util_parse_id(arg, arg_len, &r->event_id)) {
        /* contract: claim row 2, bad_request */
        http_send_error(r, 400, "bad_request",
                        "the event id must be a decimal integer from 1 to "
                        "9223372036854775807",
                        NULL);
        return false;
    }
    return true;
}

/* The request body: ignored when empty, else JSON of at most 4 KiB. */
static bool body_ok(struct http_request *r)
{
    json_t *doc;

    if (r->body_too_large) {
        http_send_error(r, 413, "payload_too_large",
                        "the request body is limited to 4096 bytes", NULL);
        return false;
    }
    if (r->body_len == 0)
        return true;
    doc = json_loadb(r->body, r->body_len, JSON_DECODE_ANY, NULL);
    if (!doc) {
        http_send_error(r, 400, "bad_request", "the request body is not JSON",
                        NULL);
        return false;
    }
    json_decref(doc);
    return true;
}

/* A claim's budget: its request's deadline, the whole lock timeout. */
static const struct claim_budget *budget_of(const struct route_ctx *ctx,
                                            const struct http_request *r,
                                            struct claim_budget *b)
{
    b->deadline_us = r->start_us + ctx->cfg->request_timeout_us;
    b->lock_wait_us = ctx->cfg->lock_timeout_us;
    return b;
}

/* The process's pacing table (pace.h), made on first use from the config
 * (handed to pthread_once's function in a variable of the calling thread's
 * own, so that no two threads write one). */
static struct pace *pacer;
static pthread_once_t pacer_once = PTHREAD_ONCE_INIT;
static _Thread_local const struct config *pacer_cfg;

static void pacer_make(void)
{
    pacer = pace_new(pacer_cfg->pace_rate, pacer_cfg->pace_burst);
    if (!pacer && pacer_cfg->pace_rate > 0)
        log_msg(LOG_WARN, "no memory for the pacing table: claims unpaced");
}

static struct pace *pacing(const struct route_ctx *ctx)
{
    pacer_cfg = ctx->cfg;
    pthread_once(&pacer_once, pacer_make);
    return pacer;
}

static enum claim_outcome claim_one(const struct route_ctx *ctx,
                                    struct http_request *r,
                                    const struct claim_budget *b,
                                    struct ticket *t)
{
    enum claim_outcome o;

#ifdef TICKETS_TEST_BUILD
    if (ctx->cfg->unsafe_no_lock) /* TEST ONLY: the unique key alone */
        return tickets_claim_unguarded(ctx->db, r->user_id, r->event_id, b,
                                       t);
#endif
    o = tickets_claim(ctx->db, r->user_id, r->event_id, b, t);
    pace_learn(pacing(ctx), r->user_id, r->event_id, o, t, util_now_us());
    return o;
}

/* r->paced: what the pace did with a claim so far. */
enum { PACED_NOT, PACED_RESERVED, PACED_WAITED };

/* How long a claim may wait for the pace: TICKETS_PACE_PARK, and at most
 * half of what is left of its budget (its claim needs the rest). */
static int64_t park_max(const struct route_ctx *ctx,
                        const struct http_request *r, int64_t now)
{
    struct claim_budget b;
    int64_t left = (budget_of(ctx, r, &b)->deadline_us - now) / 2;

    if (left < 0)
        left = 0;
    return left < ctx->cfg->pace_park_us ? left : ctx->cfg->pace_park_us;
}

/*
 * The user's pace (pace.h), before a claim.  Returns true when r is
 * answered, or put aside (*aside; the layer hands it back to
 * routes_resume, and r is no longer the caller's).
 *
 * A claim over the pace is put aside, without a thread, until the user's
 * next token if it comes within park_max (then it claims as usual), else
 * for park_max itself, so that a client that loops on claims loops at the
 * pace, not as fast as it is answered; then it is answered without the
 * database: from what is known, or 503 busy unless a claim of the user
 * runs here (then it parks behind it as usual).
 */
static bool paced(const struct route_ctx *ctx, struct http_request *r,
                  bool *aside)
{
    int64_t now = util_now_us(), wait = 0, due = 0;
    enum pace_verdict v;
    struct ticket t;
    enum claim_outcome o;

    *aside = false;
    if (r->paced == PACED_RESERVED)
        return false; /* its token has come */
    if (r->paced == PACED_NOT)
        wait = park_max(ctx, r, now);
    v = pace_claim(pacing(ctx), r->user_id, r->event_id, now, wait, &o, &t,
                   &due);
    if (v == PACE_GO)
        return false;
    r->paced = v == PACE_RESERVED ? PACED_RESERVED : PACED_WAITED;
    if (wait > 0 && http_park(r, v == PACE_RESERVED ? due : now + wait) == 0) {
        metrics_inc(METRIC_paced_parked);
        *aside = true;
        return true;
    }
    switch (v) {
    case PACE_GO:
    case PACE_RESERVED: /* the layer is stopping: the token is its own */
        return false;
    case PACE_KNOWN:
        respond(r, o, &t, true);
        r->outcome = "paced";
        return true;
    case PACE_OVER:
        if (inflight_running(r->user_id))
            return false;
        metrics_claim(CLAIM_BUSY);
        r->outcome = "paced";
        http_send_error(r, 503, "busy",
                        "too many claims of yours in a short time; try again",
                        RETRY_AFTER);
        return true;
    }
    return false;
}

/* The leader's memory of the claim it answered last. */
struct lead {
    int64_t event_id;
    enum claim_outcome outcome;
    struct ticket ticket;
};

/* One claim parked behind the leader: as tickets_coalesce() decides. */
static void answer_parked(const struct route_ctx *ctx, struct http_request *f,
                          struct lead *l)
{
    struct claim_budget b;
    enum claim_outcome o;

    budget_of(ctx, f, &b);
    if (tickets_coalesce(l->event_id, l->outcome, f->event_id, f->start_us,
                         b.deadline_us, ctx->cfg->lock_timeout_us,
                         util_now_us(), &o, &b) == COALESCE_CLAIM) {
        l->event_id = f->event_id;
        o = l->outcome = claim_one(ctx, f, &b, &l->ticket);
    } else if (o == CLAIM_UNAVAILABLE && util_now_us() >= b.deadline_us) {
        metrics_inc(METRIC_deadline_exceeded);
    } else {
        metrics_inc(METRIC_coalesced);
    }
    respond(f, o, &l->ticket, true);
    http_request_free(f); /* finishes it */
}

/* A claim, once its token and body are checked (again after a pause for
 * the pace: routes_resume). */
static enum route_result claim_post(const struct route_ctx *ctx,
                                    struct http_request *r)
{
    struct inflight_waiter *w;
    struct claim_budget b;
    struct lead l;
    struct ticket t;
    int64_t user_id;
    bool aside;

    if (!ctx->cfg->unsafe_no_lock && paced(ctx, r, &aside))
        return aside ? ROUTE_PARKED : ROUTE_DONE;
    if (ctx->cfg->unsafe_no_lock) {
        respond(r, claim_one(ctx, r, budget_of(ctx, r, &b), &t), &t, true);
        return ROUTE_DONE;
    }
    /*
     * The first claim of a user in this process leads; the others park
     * behind it and are answered by it, their workers free meanwhile.
     * The lead begins in inflight_enter and ends in the inflight_take
     * that finds nothing more parked.
     */
    switch (inflight_enter(r->user_id, &r->waiter)) {
    case INFLIGHT_PARKED:
        return ROUTE_PARKED; /* the leader answers and frees it */
    case INFLIGHT_ALONE:     /* too many parked: on its own */
        respond(r, claim_one(ctx, r, budget_of(ctx, r, &b), &t), &t, true);
        return ROUTE_DONE;
    case INFLIGHT_LEAD:
        break;
    }
    user_id = r->user_id; /* r is finished before the lead ends */
    l.event_id = r->event_id;
    l.outcome = claim_one(ctx, r, budget_of(ctx, r, &b), &l.ticket);
    respond(r, l.outcome, &l.ticket, true);
    http_finish(r);
    while ((w = inflight_take(user_id))) /* NULL: the lead has ended */
        while (w) {
            struct http_request *f =
                UTIL_CONTAINER_OF(w, struct http_request, waiter);

            w = w->next; /* before f is answered and freed */
            answer_parked(ctx, f, &l);
        }
    return ROUTE_DONE;
}

static enum route_result participation_post(const struct route_ctx *ctx,
                                            struct http_request *r,
                                            const char *arg, size_t arg_len)
{
    if (!authorize(ctx, r, arg, arg_len) || !body_ok(r))
        return ROUTE_DONE;
    return claim_post(ctx, r);
}

enum route_result routes_resume(const struct route_ctx *ctx,
                                struct http_request *r)
{
    if (r->park.gone) { /* nobody waits for the answer: claim nothing */
        metrics_inc(METRIC_paced_gone);
        r->outcome = "gone";
        http_drop(r);
        return ROUTE_DONE;
    }
    return claim_post(ctx, r);
}

static void participation_get(const struct route_ctx *ctx,
                              struct http_request *r, const char *arg,
                              size_t arg_len)
{
    struct ticket t;

    if (!authorize(ctx, r, arg, arg_len))
        return;
    respond(r, tickets_get(ctx->db, r->user_id, r->event_id, &t), &t, false);
}

static void add_event(const struct event_row *e, void *ctx)
{
    json_array_append_new(ctx, routes_event_json(e));
}

/* The list, shared by requests that arrive together (textcache.h). */
static struct textcache events_cache = TEXTCACHE_INIT(util_now_us);

static void events_list(const struct route_ctx *ctx, struct http_request *r,
                        const char *arg, size_t arg_len)
{
    json_t *list, *doc;
    char *text;
    size_t len;

    switch (textcache_get(&events_cache, r->start_us,
                          ctx->cfg->events_cache_us, &text, &len)) {
    case TEXTCACHE_HIT:
        http_send_text(r, 200, "application/json", text);
        free(text);
        return;
    case TEXTCACHE_FAILED:
        goto unavailable;
    case TEXTCACHE_READ:
        break;
    }
    list = json_array();
    if (db_list_events(ctx->db, EVENTS_LIST_MAX, add_event, list) != DB_OK) {
        json_decref(list);
        textcache_abandon(&events_cache);
        goto unavailable;
    }
    doc = json_pack("{s:o}", "events", list);
    text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        abort(); /* out of memory */
    textcache_put(&events_cache, text, strlen(text));
    http_send_text(r, 200, "application/json", text);
    free(text);
    return;
unavailable:
    http_send_error(r, 503, outcome_http[CLAIM_UNAVAILABLE].error,
                    outcome_http[CLAIM_UNAVAILABLE].message, RETRY_AFTER);
}

static void health(const struct route_ctx *ctx, struct http_request *r,
                   const char *arg, size_t arg_len)
{
    if (db_ready(ctx->db) == DB_OK)
        http_send_json(r, 200, json_pack("{s:s}", "status", "ok"), NULL);
    else
        http_send_json(r, 503, json_pack("{s:s}", "status", "unavailable"),
                       RETRY_AFTER);
}

/*
 * Liveness, as php-fpm's ping: answered without the database, so that an
 * orchestrator can tell "process stuck" (no answer) from "database down"
 * (/api/health 503).  The shipped nginx serves it on the internal server.
 */
static void ping(const struct route_ctx *ctx, struct http_request *r,
                 const char *arg, size_t arg_len)
{
    http_send_json(r, 200, json_pack("{s:s}", "status", "alive"), NULL);
}

static void metrics(const struct route_ctx *ctx, struct http_request *r,
                    const char *arg, size_t arg_len)
{
    char *text = metrics_render();

    http_send_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", text);
    free(text);
}

enum route_result routes_dispatch(const struct route_ctx *ctx,
                                  struct http_request *r)
{
    const char *arg = NULL;
    size_t arg_len = 0;
    const struct route *rt;
    char allow[64];

    if (r->incomplete) {
        /* the peer went away or aborted mid-request: act on nothing */
        http_send_error(r, 400, "bad_request", "the request was cut short",
                        NULL);
        return ROUTE_DONE;
    }
    rt = r->bad_path ? NULL : find(r->path, &arg, &arg_len);
    metrics_route(rt ? (int)rt->id : (int)ROUTE_NONE);
    if (!rt) {
        http_send_error(r, 404, "not_found", "no such path", NULL);
        return ROUTE_DONE;
    }
    if (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0) {
        rt->get(ctx, r, arg, arg_len);
        return ROUTE_DONE;
    }
    if (rt->post && strcmp(r->method, "POST") == 0)
        return participation_post(ctx, r, arg, arg_len);
    snprintf(allow, sizeof(allow), "Allow: %s\r\n", rt->allow);
    http_send_error(r, 405, "method_not_allowed",
                    "this method is not allowed here", allow);
    return ROUTE_DONE;
}

_Static_assert((int)METRIC_ROUTE_events == (int)ROUTE_EVENTS &&
                   (int)METRIC_ROUTE_ping == (int)ROUTE_PING,
               "metrics routes follow enum route_id");
