-- Demo data for `make run` (and for trying the API by hand). Load it into an
-- empty database after sql/schema.sql, as an administrator:
--   mariadb tickets < sql/demo.sql
-- Times are relative to the moment of loading, in UTC, so the events stay
-- upcoming. events.free_issued equals the number of free_tickets rows of each
-- event, as the app keeps it.

-- Users: 1 and 2 premium, 3 premium expired yesterday, 4 never premium.
INSERT INTO users (id, premium_until) VALUES
    (1, UTC_TIMESTAMP() + INTERVAL 10 YEAR),
    (2, UTC_TIMESTAMP() + INTERVAL 10 YEAR),
    (3, UTC_TIMESTAMP() - INTERVAL 1 DAY),
    (4, NULL);

INSERT INTO events (id, title, starts_at, free_for_premium, free_quota, free_issued) VALUES
    -- free for premium members, no quota
    (1, 'Open rehearsal',           UTC_TIMESTAMP() + INTERVAL 7 DAY,  1, NULL, 0),
    -- free, 100 tickets (user 2 has a pending order for it: 409 paid_order_exists)
    (2, 'Jazz in the park',         UTC_TIMESTAMP() + INTERVAL 14 DAY, 1, 100,  0),
    -- free, only 2 tickets: the third claimant gets 409 sold_out
    (3, 'Chamber music, small hall', UTC_TIMESTAMP() + INTERVAL 3 DAY, 1, 2,    0),
    -- not free for premium members: 409 not_free
    (4, 'Opera gala',               UTC_TIMESTAMP() + INTERVAL 10 DAY, 0, NULL, 0),
    -- free, but started an hour ago: 409 event_started
    (5, 'Morning lecture',          UTC_TIMESTAMP() - INTERVAL 1 HOUR, 1, NULL, 0),
    -- free, quota 1, already taken by user 2: 409 sold_out for anyone else
    (6, 'Sold-out preview',         UTC_TIMESTAMP() + INTERVAL 5 DAY,  1, 1,    1);

-- The one ticket of event 6 (free_issued = 1 above).
INSERT INTO free_tickets (user_id, event_id, code, created_at) VALUES
    (2, 6, '5f2c8e1a9b3d4c7e8f6a0b1c2d3e4f50', UTC_TIMESTAMP(6) - INTERVAL 1 DAY);

-- Orders, as the shop writes them.
INSERT INTO orders (user_id, event_id, status) VALUES
    (1, 4, 'paid'),
    (2, 2, 'pending');
