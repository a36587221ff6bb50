/*
 * claim_sql.h: the statements of a claim, as text.
 *
 * One copy for the two programs that must send exactly these: the app
 * (db_stmt.c prepares them) and the benchmark's ceiling driver (bench/
 * claimdrv.c, ceiling (a) of docs/PERFORMANCE.md, which is only a ceiling
 * of the app if its SQL is the app's, word for word).
 */
#ifndef TICKETS_CLAIM_SQL_H
#define TICKETS_CLAIM_SQL_H

/*
 * The first look of a claim: the facts, lock-free, with the order check
 * (which alone costs MariaDB about a third of the full read, docs/
 * PERFORMANCE.md, statement shapes) only when the quota is used up: IF()
 * evaluates the chosen branch only.  Enough to answer rows 3 to 7 of the
 * contract, an existing ticket (row 4), and, once sold out, rows 8 and 9:
 * under a sold-out storm every claim is this one read, no lock, no write.
 * Otherwise the order column is 0 and "may create" is not final: the seat
 * UPDATE checks the orders under the lock.  The same columns and
 * parameters as the full read below.
 */
#define CLAIM_SQL_GLANCE \
    "SELECT e.free_for_premium, e.starts_at <= UTC_TIMESTAMP()," \
    " e.free_quota, e.free_issued, u.id IS NOT NULL," \
    " IF(e.free_issued >= e.free_quota," \
    "    EXISTS(SELECT 1 FROM orders o WHERE o.user_id = ?" \
    "           AND o.event_id = e.id AND o.status IN ('pending', 'paid'))," \
    "    0)," \
    " t.id, t.code, t.created_at" \
    " FROM events e" \
    " LEFT JOIN users u ON u.id = ? AND u.premium_until > UTC_TIMESTAMP()" \
    " LEFT JOIN free_tickets t ON t.user_id = ? AND t.event_id = e.id" \
    " WHERE e.id = ?"

/* One consistent read for everything a claim decides on. */
#define CLAIM_SQL_FACTS \
    "SELECT e.free_for_premium, e.starts_at <= UTC_TIMESTAMP()," \
    " e.free_quota, e.free_issued," \
    " EXISTS(SELECT 1 FROM users u WHERE u.id = ?" \
    "        AND u.premium_until > UTC_TIMESTAMP())," \
    " EXISTS(SELECT 1 FROM orders o WHERE o.user_id = ?" \
    "        AND o.event_id = e.id AND o.status IN ('pending', 'paid'))," \
    " t.id, t.code, t.created_at" \
    " FROM events e LEFT JOIN free_tickets t" \
    " ON t.user_id = ? AND t.event_id = e.id" \
    " WHERE e.id = ?"

#define CLAIM_SQL_LOCK "SELECT GET_LOCK(?, ?)"
#define CLAIM_SQL_UNLOCK "SELECT RELEASE_LOCK(?)"

/*
 * The ticket first: INSERT ... ON DUPLICATE KEY UPDATE, in the claim's
 * transaction.  The unique key (user_id, event_id) is the guard of last
 * resort: 0 affected rows means the user's ticket exists.  It locks only the
 * user's own index entries, never the event row, so claims of one event do
 * not queue behind it.
 */
#define CLAIM_SQL_INSERT \
    "INSERT INTO free_tickets (user_id, event_id, code, created_at)" \
    " VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE id = id"

/*
 * The seat last, right before COMMIT: the check-and-count of a claim in one
 * statement, every rule and the quota in one current (locking) read of the
 * event row, so the quota cannot be oversold by other users.  It is the only
 * statement that locks the event row, so that lock is held from this
 * statement to the COMMIT that follows it: one client round trip, not two
 * (the seat UPDATE used to come first and hold the row across the INSERT's
 * round trip too).
 *
 * The user's tickets are counted again: the row this transaction has just
 * inserted (visible to it) and, under READ COMMITTED, every committed one.
 * Exactly 1 means "only ours", so the named lock alone (the next holder
 * starts after this one's COMMIT) still keeps one ticket per pair even
 * without the unique key (docs/PROTOCOL.md, lock-alone).
 */
#define CLAIM_SQL_SEAT \
    "UPDATE events SET free_issued = free_issued + 1" \
    " WHERE id = ? AND free_for_premium = 1" \
    " AND starts_at > UTC_TIMESTAMP()" \
    " AND (free_quota IS NULL OR free_issued < free_quota)" \
    " AND EXISTS(SELECT 1 FROM users WHERE id = ?" \
    "            AND premium_until > UTC_TIMESTAMP())" \
    " AND NOT EXISTS(SELECT 1 FROM orders WHERE user_id = ?" \
    "            AND event_id = ? AND status IN ('pending', 'paid'))" \
    " AND (SELECT COUNT(*) FROM free_tickets WHERE user_id = ?" \
    "            AND event_id = ?) = 1"

#endif
