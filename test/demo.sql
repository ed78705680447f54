\pset footer off
\echo
\echo '-- 1. Install the extension. The key lives in a file named by dfend.api_key_file.'
CREATE EXTENSION dfend;
SHOW dfend.api_url;

\echo
\echo '-- 2. A users table, and every user registered with DFend; the returned id is stored on the row.'
CREATE TABLE users (id bigint PRIMARY KEY, email text, phone text, dfend_id text);
INSERT INTO users (id, email, phone) VALUES
    (1, 'ada@example.com', '+14155550101'),
    (2, 'grace@example.com', NULL),
    (3, 'linus@example.org', '+358401234567');
UPDATE users SET dfend_id = (dfend_register_identity(id::text, email, phone)).id;
SELECT * FROM users ORDER BY id;

\echo
\echo '-- 3. Registering again is safe: same id, created = false. merge => true adds new details.'
SELECT * FROM dfend_register_identity('1', 'ada.lovelace@example.com', merge => true,
                                      metadata => '{"plan": "pro"}');

\echo
\echo '-- 4. Fetch the Identity object by user id (or by DFend id).'
SELECT jsonb_pretty(dfend_get_identity('1') - 'ips' - 'devices' - 'locations' - 'vpns' - 'carriers' - 'tor') AS identity;
SELECT dfend_get_identity('no-such-user') IS NULL AS unknown_user_is_null;

\echo
\echo '-- 5. Bad input is refused before any request is sent.'
\set ON_ERROR_STOP 0
SELECT dfend_register_identity('4', 'not-an-email');
SELECT dfend_register_identity('4', phone => '555-0100');
\set ON_ERROR_STOP 1

\echo
\echo '-- 6. Attach the table: new users get their id through the outbox and the background worker.'
SELECT dfend_attach('users', 'id', 'dfend_id', email_column => 'email', phone_column => 'phone');
INSERT INTO users (id, email) VALUES (4, 'alan@example.com'), (5, 'katherine@example.com');
SELECT * FROM dfend_queue_status \gx
-- Wait (at most 10 s) for the worker, which the commit above woke up.
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM users WHERE dfend_id IS NULL);
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT id, email, dfend_id FROM users WHERE id >= 4 ORDER BY id;

\echo
\echo '-- 7. Backfill existing users in committed batches, many requests in flight.'
CREATE TABLE legacy_users (id bigint PRIMARY KEY, email text, dfend_id text);
INSERT INTO legacy_users SELECT g, 'legacy' || g || '@example.com' FROM generate_series(1, 2000) g;
CALL dfend_backfill('legacy_users', user_id_column => 'id', id_column => 'dfend_id',
                    email_column => 'email', batch_size => 500);
SELECT count(*) AS users, count(dfend_id) AS with_dfend_id FROM legacy_users;

\echo
\echo '-- 8. The key never travels in SQL: it lives in a key file (or postgresql.conf, shown'
\echo '--    as a mask), and a statement that would carry it is refused, superusers included.'
SHOW dfend.api_key;
\set ON_ERROR_STOP 0
SET dfend.api_key = 'sk_demo_secret_key';
\set ON_ERROR_STOP 1
\echo
