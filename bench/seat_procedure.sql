-- CANDIDATE (issue 12), not used by the app: the seat UPDATE and the COMMIT
-- of a claim in one round trip.
--
-- The app sends the ticket's INSERT first and the seat UPDATE last, then
-- COMMIT (fcgi-app/claim_sql.h), so the hot event row of a flash is locked
-- from the UPDATE to that COMMIT: one client round trip. This procedure
-- takes that round trip out too: the UPDATE (the app's CLAIM_SQL_SEAT, word
-- for word but for the parameter names), then COMMIT, or ROLLBACK when it
-- matched nothing, all in the server; the row lock is held for the two
-- statements only. bench/run loads it (as root) to measure the ceiling
-- `a-seat-call` of the flash scenario with `bench/claimdrv --seat-call`
-- (docs/PERFORMANCE.md, "Flash"). The caller starts the transaction and
-- inserts the ticket first, as the app does:
--
--   START TRANSACTION; INSERT ... ODKU; CALL tickets_take_seat(event, user)
--
-- One row: 1 = the seat is taken and the claim committed, 0 = refused and
-- rolled back (read the facts again, as after the app's 0-row UPDATE).
-- SQL SECURITY INVOKER: the app's least-privilege table grants still apply;
-- it would need `GRANT EXECUTE ON PROCEDURE tickets.tickets_take_seat`.

DELIMITER //

CREATE OR REPLACE PROCEDURE tickets_take_seat(
    IN p_event_id BIGINT UNSIGNED,
    IN p_user_id  BIGINT UNSIGNED)
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
    COMMENT 'tickets-fcgi: seat UPDATE + COMMIT in one call (candidate, issue 12)'
BEGIN
    UPDATE events SET free_issued = free_issued + 1
     WHERE id = p_event_id AND free_for_premium = 1
       AND starts_at > UTC_TIMESTAMP()
       AND (free_quota IS NULL OR free_issued < free_quota)
       AND EXISTS(SELECT 1 FROM users WHERE id = p_user_id
                  AND premium_until > UTC_TIMESTAMP())
       AND NOT EXISTS(SELECT 1 FROM orders WHERE user_id = p_user_id
                  AND event_id = p_event_id AND status IN ('pending', 'paid'))
       AND (SELECT COUNT(*) FROM free_tickets WHERE user_id = p_user_id
                  AND event_id = p_event_id) = 1;
    IF ROW_COUNT() = 1 THEN
        COMMIT;
        SELECT 1;
    ELSE
        ROLLBACK;
        SELECT 0;
    END IF;
END //

DELIMITER ;
