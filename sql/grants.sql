-- Least privilege for the app's MySQL account 'tickets'@'localhost' on the
-- database `tickets`. The account must already exist (CREATE USER ... with a
-- password of your choosing); this file only grants, and may be loaded again.
--
--   mariadb < sql/grants.sql      (as an administrator)
--
-- What the app does, and nothing more:
--   users         read premium_until
--   events        read; bump free_issued when it issues a ticket
--   orders        read (the shop writes them)
--   free_tickets  read; insert new tickets with
--                   INSERT ... ON DUPLICATE KEY UPDATE id = id
--                 (or id = LAST_INSERT_ID(id)), as the contract requires
-- GET_LOCK/RELEASE_LOCK need no privilege.
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

GRANT SELECT ON tickets.users TO 'tickets'@'localhost';
GRANT SELECT, UPDATE (free_issued) ON tickets.events TO 'tickets'@'localhost';
GRANT SELECT ON tickets.orders TO 'tickets'@'localhost';
GRANT SELECT, INSERT, UPDATE (id, user_id, event_id, code, created_at)
    ON tickets.free_tickets TO 'tickets'@'localhost';
