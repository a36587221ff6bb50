-- CANDIDATE MIGRATION (issue 4), not used by the app yet.
--
-- One claim as one stored-procedure call: the lock-free fast path, the
-- per-user named lock, the transaction and the release, in one round trip
-- instead of seven. bench/run loads it (as root) to measure ceiling (b) with
-- bench/claimdrv; docs/PERFORMANCE.md has the figures and the change the app
-- would need. Load it into the tickets database after schema.sql:
--
--   mariadb tickets < bench/claim_procedure.sql
--
-- and give the app's account the right to call it (sql/grants.sql would gain
-- this line; nothing else: the procedure runs with the caller's rights, SQL
-- SECURITY INVOKER, so the least-privilege grants on the tables still apply):
--
--   GRANT EXECUTE ON PROCEDURE tickets.tickets_claim TO 'tickets'@'localhost';
--
-- Both guards of the contract stay as they are:
--   1. GET_LOCK(p_lock_name, p_lock_timeout) is taken before the transaction
--      begins and released after it commits or rolls back, on the caller's
--      own connection (a procedure runs in the caller's session), on every
--      path: an error releases it in the exit handler, and if the client
--      loses the connection the server ends the session, rolls back and
--      frees the lock.
--   2. INSERT ... ON DUPLICATE KEY UPDATE id = id on UNIQUE (user_id,
--      event_id): 0 affected rows means the ticket exists; the procedure
--      rolls back and answers it.
-- The conditional UPDATE of events.free_issued is the app's statement
-- (fcgi-app/claim_sql.h, CLAIM_SQL_SEAT) word for word: every rule and the
-- user's existing ticket, in one locking read of the event row, so the quota
-- cannot be oversold and the lock alone keeps one ticket per pair.
--
-- The decision in the contract's order stays in C (tickets_decide): the
-- procedure only needs "may this claim create?", the conjunction of every
-- rule, whose order does not matter. It answers one row:
--
--   result  0  no such event (404)
--           1  facts: the columns of the app's facts statement; the app
--              decides (an existing ticket: 200; a refusal: 403/409), as
--              after its own facts read
--           2  created: ticket_id, code, created_at are the new ticket (201)
--           3  busy: the lock was not acquired in p_lock_timeout (503)
--   then    free_for_premium, started, free_quota, free_issued, premium,
--           paid_order, ticket_id, code, created_at (text, as the app
--           formats it): the app's ST_FACTS columns, in its order
--
-- p_fast = 1: read the facts first, without the lock, and answer an
-- existing ticket or a refusal at once (a repeated click is one call that
-- takes no lock). p_fast = 0: the caller has read the facts itself (the app's
-- current fast path) and wants only the locked part.
--
-- p_code and p_created_at come from the app (getrandom, the app's clock), as
-- now. Only if the random code collides with another ticket's (2^-128) does
-- the procedure draw a new one with RANDOM_BYTES (MariaDB >= 10.10).
-- Deadlocks and lock wait timeouts retry the transaction under the same
-- lock, at most three attempts, like the app.

DELIMITER //

CREATE OR REPLACE PROCEDURE tickets_claim(
    IN p_user_id      BIGINT UNSIGNED,
    IN p_event_id     BIGINT UNSIGNED,
    IN p_lock_name    VARCHAR(64),
    IN p_lock_timeout DOUBLE,
    IN p_code         CHAR(32) CHARACTER SET ascii,
    IN p_created_at   DATETIME(6),
    IN p_fast         TINYINT)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
    COMMENT 'tickets-fcgi: one claim in one call (candidate, issue 4)'
proc: BEGIN
    DECLARE v_result TINYINT DEFAULT 1;
    DECLARE v_found, v_free, v_started, v_premium, v_paid TINYINT DEFAULT 0;
    DECLARE v_quota, v_issued INT UNSIGNED DEFAULT NULL;
    DECLARE v_tid BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_tcode CHAR(32) CHARACTER SET ascii DEFAULT NULL;
    DECLARE v_tcreated VARCHAR(40) DEFAULT NULL;
    DECLARE v_code CHAR(32) CHARACTER SET ascii DEFAULT p_code;
    DECLARE v_locked, v_retry, v_attempt TINYINT DEFAULT 0;
    DECLARE v_rows BIGINT DEFAULT 0;
    DECLARE v_got INT DEFAULT NULL;

    -- a SELECT ... INTO that finds no row: v_found stays 0
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    -- deadlock, lock wait timeout: roll back and try again, under the lock
    DECLARE CONTINUE HANDLER FOR 1213, 1205 SET v_retry = 1;
    -- anything else: undo, release, and let the caller see the error (the
    -- app then closes the connection, which frees whatever is left)
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        IF v_locked THEN
            DO RELEASE_LOCK(p_lock_name);
        END IF;
        RESIGNAL;
    END;

    IF p_fast THEN
        SET v_found = 0;
        SELECT 1, e.free_for_premium, e.starts_at <= UTC_TIMESTAMP(),
               e.free_quota, e.free_issued,
               EXISTS(SELECT 1 FROM users u WHERE u.id = p_user_id
                      AND u.premium_until > UTC_TIMESTAMP()),
               EXISTS(SELECT 1 FROM orders o WHERE o.user_id = p_user_id
                      AND o.event_id = e.id AND o.status IN ('pending', 'paid')),
               t.id, t.code, DATE_FORMAT(t.created_at, '%Y-%m-%dT%H:%i:%s.%fZ')
          INTO v_found, v_free, v_started, v_quota, v_issued, v_premium,
               v_paid, v_tid, v_tcode, v_tcreated
          FROM events e LEFT JOIN free_tickets t
            ON t.user_id = p_user_id AND t.event_id = e.id
         WHERE e.id = p_event_id;
        IF NOT v_found THEN
            SELECT 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL;
            LEAVE proc;
        END IF;
        IF v_tid IS NOT NULL OR NOT v_premium OR NOT v_free OR v_started
           OR v_paid OR (v_quota IS NOT NULL AND v_issued >= v_quota) THEN
            SELECT 1, v_free, v_started, v_quota, v_issued, v_premium, v_paid,
                   v_tid, v_tcode, v_tcreated;
            LEAVE proc;
        END IF;
    END IF;

    -- guard 1, before any transaction
    SET v_got = GET_LOCK(p_lock_name, p_lock_timeout);
    IF v_got IS NULL THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'GET_LOCK returned NULL';
    END IF;
    IF v_got <> 1 THEN
        SELECT 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL;
        LEAVE proc;
    END IF;
    SET v_locked = 1;

    attempts: LOOP
        SET v_attempt = v_attempt + 1, v_retry = 0;
        IF v_attempt > 3 THEN
            SIGNAL SQLSTATE '45000'
                SET MESSAGE_TEXT = 'claim gave up after 3 attempts';
        END IF;
        START TRANSACTION;
        UPDATE events SET free_issued = free_issued + 1
         WHERE id = p_event_id AND free_for_premium = 1
           AND starts_at > UTC_TIMESTAMP()
           AND (free_quota IS NULL OR free_issued < free_quota)
           AND EXISTS(SELECT 1 FROM users WHERE id = p_user_id
                      AND premium_until > UTC_TIMESTAMP())
           AND NOT EXISTS(SELECT 1 FROM orders WHERE user_id = p_user_id
                      AND event_id = p_event_id AND status IN ('pending', 'paid'))
           AND NOT EXISTS(SELECT 1 FROM free_tickets WHERE user_id = p_user_id
                      AND event_id = p_event_id);
        SET v_rows = ROW_COUNT();
        IF v_retry THEN
            ROLLBACK;
            ITERATE attempts;
        END IF;
        IF v_rows = 0 THEN
            -- a rule failed or the ticket exists: the facts again, under the
            -- lock, for the app to decide which
            ROLLBACK;
            SET v_found = 0, v_tid = NULL, v_tcode = NULL, v_tcreated = NULL;
            SELECT 1, e.free_for_premium, e.starts_at <= UTC_TIMESTAMP(),
                   e.free_quota, e.free_issued,
                   EXISTS(SELECT 1 FROM users u WHERE u.id = p_user_id
                          AND u.premium_until > UTC_TIMESTAMP()),
                   EXISTS(SELECT 1 FROM orders o WHERE o.user_id = p_user_id
                          AND o.event_id = e.id AND o.status IN ('pending', 'paid')),
                   t.id, t.code, DATE_FORMAT(t.created_at, '%Y-%m-%dT%H:%i:%s.%fZ')
              INTO v_found, v_free, v_started, v_quota, v_issued, v_premium,
                   v_paid, v_tid, v_tcode, v_tcreated
              FROM events e LEFT JOIN free_tickets t
                ON t.user_id = p_user_id AND t.event_id = e.id
             WHERE e.id = p_event_id;
            SET v_result = IF(v_found, 1, 0);
            IF v_found AND v_tid IS NULL AND v_premium AND v_free
               AND NOT v_started AND NOT v_paid
               AND (v_quota IS NULL OR v_issued < v_quota) THEN
                ITERATE attempts;  -- the rules changed under us: again
            END IF;
            LEAVE attempts;
        END IF;
        -- guard 2
        INSERT INTO free_tickets (user_id, event_id, code, created_at)
        VALUES (p_user_id, p_event_id, v_code, p_created_at)
        ON DUPLICATE KEY UPDATE id = id;
        SET v_rows = ROW_COUNT();
        IF v_retry THEN
            ROLLBACK;
            ITERATE attempts;
        END IF;
        IF v_rows = 1 THEN
            SET v_tid = LAST_INSERT_ID();
            COMMIT;
            IF v_retry THEN
                ROLLBACK;
                ITERATE attempts;
            END IF;
            SET v_result = 2, v_tcode = v_code,
                v_tcreated = DATE_FORMAT(p_created_at, '%Y-%m-%dT%H:%i:%s.%fZ');
            LEAVE attempts;
        END IF;
        -- 0 rows: the pair exists (only a claim without the lock can meet
        -- it) or, practically never, the code collided with another ticket's
        ROLLBACK;
        SET v_tid = NULL;
        SELECT t.id, t.code, DATE_FORMAT(t.created_at, '%Y-%m-%dT%H:%i:%s.%fZ')
          INTO v_tid, v_tcode, v_tcreated
          FROM free_tickets t
         WHERE t.user_id = p_user_id AND t.event_id = p_event_id;
        IF v_tid IS NOT NULL THEN
            SET v_result = 1;
            LEAVE attempts;
        END IF;
        SET v_code = LOWER(HEX(RANDOM_BYTES(16)));
    END LOOP;

    SET v_locked = 0;
    IF RELEASE_LOCK(p_lock_name) IS NOT TRUE THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'RELEASE_LOCK failed';
    END IF;
    SELECT v_result, v_free, v_started, v_quota, v_issued, v_premium, v_paid,
           v_tid, v_tcode, v_tcreated;
END//

DELIMITER ;
