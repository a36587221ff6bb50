-- Least privilege for the app's MySQL account 'tickets'@'localhost' on the
-- database `tickets`. The account must already exist (CREATE USER ... with a
-- password of your choosing); this file only grants, and may be loaded again.
--
--   mariadb < sql/grants.sql      (as an administrator)
--
-- What the app reads and writes, to the column, and nothing more (the
-- statements are in fcgi-app/claim_sql.h and fcgi-app/db_stmt.c):
--   users         read id, premium_until; a site's other columns (e-mail,
--                 password hash, ...) stay out of reach: SELECT * is refused
--   events        read the columns the list and the claim use; bump
--                 free_issued when it issues a ticket
--   orders        read user_id, event_id, status (the shop writes them)
--   free_tickets  read; insert new tickets with
--                   INSERT ... ON DUPLICATE KEY UPDATE id = id
--                 (or id = LAST_INSERT_ID(id)), as the contract requires
-- GET_LOCK/RELEASE_LOCK need no privilege. Every grant names its columns, so
-- a column added to any table later is neither readable nor writable until
-- granted here.
--
-- Why free_tickets has column UPDATE privileges: MariaDB (checked on 10.11)
-- wants UPDATE for an INSERT ... ON DUPLICATE KEY UPDATE on the column after
-- UPDATE *and on every column of its insert list*, checked when the statement
-- is prepared, whether or not a duplicate occurs. Without it every claim fails
-- with error 1143 "UPDATE command denied ... for column 'user_id'". The grant
-- names exactly the columns the app inserts plus id, so a column added later
-- stays read-only; and the trigger free_tickets_immutable (schema.sql) refuses
-- any update that would change a ticket, so the grant cannot rewrite one.
--
-- Not granted: DELETE anywhere, any DDL, UPDATE of any other column of events,
-- any write to users or orders. The app cannot erase tickets, change quotas,
-- premium status or the shop's orders.
--
-- Upgrading from a version of this file that granted SELECT on whole tables:
-- grants only add, so take those back first (once, as an administrator):
--   REVOKE SELECT ON tickets.users FROM 'tickets'@'localhost';
--   REVOKE SELECT ON tickets.events FROM 'tickets'@'localhost';
--   REVOKE SELECT ON tickets.orders FROM 'tickets'@'localhost';
--   REVOKE SELECT ON tickets.free_tickets FROM 'tickets'@'localhost';

GRANT SELECT (id, premium_until) ON tickets.users TO 'tickets'@'localhost';
GRANT SELECT (id, title, starts_at, free_for_premium, free_quota, free_issued),
    UPDATE (free_issued) ON tickets.events TO 'tickets'@'localhost';
GRANT SELECT (user_id, event_id, status) ON tickets.orders TO 'tickets'@'localhost';
GRANT SELECT (id, user_id, event_id, code, created_at),
    INSERT (user_id, event_id, code, created_at),
    UPDATE (id, user_id, event_id, code, created_at)
    ON tickets.free_tickets TO 'tickets'@'localhost';
