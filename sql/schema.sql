-- tickets-fcgi schema (MariaDB 10.11 / MySQL 8; InnoDB, utf8mb4, all times UTC).
--
-- Load into an existing, selected database, e.g.
--   mariadb tickets < sql/schema.sql
-- It creates no database and is idempotent (CREATE TABLE IF NOT EXISTS): loading
-- it twice changes nothing, and it never alters a table that already exists.
--
-- No foreign keys, on purpose: `orders` is written by the shop, not by this
-- app, and a claim for an unknown user or event must be answered (403/404) by
-- the app, not refused by the database; FKs would also make parent rows take
-- shared locks on every insert and stop the tests from TRUNCATEing tables.

-- Site members. Premium while premium_until > UTC now.
CREATE TABLE IF NOT EXISTS users (
    id            BIGINT UNSIGNED NOT NULL,
    premium_until DATETIME        NULL DEFAULT NULL,
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Events. free_issued is kept equal to the number of free_tickets rows of the
-- event, by the same transaction that inserts the row, so the quota check is
-- one row read and the counter is the row lock that serializes a quota race.
CREATE TABLE IF NOT EXISTS events (
    id               BIGINT UNSIGNED NOT NULL,
    title            VARCHAR(200)    NOT NULL,
    starts_at        DATETIME        NOT NULL,
    free_for_premium TINYINT(1)      NOT NULL DEFAULT 0,
    free_quota       INT UNSIGNED    NULL DEFAULT NULL,  -- NULL: no limit
    free_issued      INT UNSIGNED    NOT NULL DEFAULT 0,
    PRIMARY KEY (id),
    -- GET /api/events lists upcoming events: WHERE starts_at > now ORDER BY
    -- starts_at, a range scan of this index instead of a sort of the table.
    KEY events_starts_at (starts_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Paid orders, written by the shop. This app only reads them.
CREATE TABLE IF NOT EXISTS orders (
    id       BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    user_id  BIGINT UNSIGNED NOT NULL,
    event_id BIGINT UNSIGNED NOT NULL,
    status   ENUM('pending','paid','cancelled','refunded') NOT NULL,
    PRIMARY KEY (id),
    -- Claim rule 8 ("the user has a pending or paid order for the event") is
    -- answered from this index alone (covering: user, event, status), without
    -- reading order rows; it also serves the shop's "orders of a user".
    KEY orders_user_event_status (user_id, event_id, status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Free tickets issued to premium members.
CREATE TABLE IF NOT EXISTS free_tickets (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    user_id    BIGINT UNSIGNED NOT NULL,
    event_id   BIGINT UNSIGNED NOT NULL,
    -- 128 random bits as 32 lower-case hex digits: one byte per character in
    -- ascii (utf8mb4 would reserve 4), compared byte for byte.
    code       CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at DATETIME(6)     NOT NULL,  -- UTC
    PRIMARY KEY (id),
    -- The second guard of the contract: at most one free ticket per (user,
    -- event) whatever the app does, even with the per-user lock lost or
    -- bypassed. Claims write with INSERT ... ON DUPLICATE KEY UPDATE and read
    -- "the user's ticket for this event" through it (rule 4, GET).
    UNIQUE KEY free_tickets_user_event (user_id, event_id),
    -- A ticket code identifies one ticket; a (practically impossible)
    -- collision fails the insert instead of handing out a shared code.
    UNIQUE KEY free_tickets_code (code),
    -- Counting or listing one event's tickets (free_issued checks, support
    -- queries) without a full scan; the unique key above starts with user_id
    -- and cannot serve it.
    KEY free_tickets_event (event_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Tickets are never rewritten. The app writes with INSERT ... ON DUPLICATE
-- KEY UPDATE id = id, and MariaDB requires the UPDATE privilege on every
-- inserted column for that statement, even when no row is updated (see
-- grants.sql). This trigger takes back what that grant would allow: an
-- update that changes any column of a ticket fails, for every user, while
-- the no-op `id = id` of a duplicate claim passes.
DELIMITER //
CREATE TRIGGER IF NOT EXISTS free_tickets_immutable
BEFORE UPDATE ON free_tickets FOR EACH ROW
BEGIN
    IF NOT (NEW.id <=> OLD.id AND NEW.user_id <=> OLD.user_id
            AND NEW.event_id <=> OLD.event_id AND NEW.code <=> OLD.code
            AND NEW.created_at <=> OLD.created_at) THEN
        SIGNAL SQLSTATE '45000'
            SET MESSAGE_TEXT = 'free_tickets rows are immutable';
    END IF;
END//
DELIMITER ;
