-- The extension's own life cycle, in one open session: DROP EXTENSION says
-- what it discards, and the session follows DROP EXTENSION ... CASCADE and
-- CREATE EXTENSION in another schema (no stale cache of the schema or the
-- attachments). Runs last: it leaves dfend installed as it found it.
SET client_min_messages = warning;
CREATE TABLE life_users (id int PRIMARY KEY, email text, dfend_id text);
SELECT dfend_attach('life_users', 'id', 'dfend_id', email_column => 'email');
INSERT INTO life_users VALUES (1, 'one@example.com'), (2, 'two@example.com');
-- 100 more in one statement: one row of dfend_outbox_bulk.
INSERT INTO life_users SELECT g, 'l' || g || '@example.com' FROM generate_series(100, 199) g;
SELECT count(*) AS pending FROM dfend_outbox WHERE state = 'pending';
SELECT count(*) AS bulk_rows FROM dfend_outbox_bulk;
SELECT pending FROM dfend_queue_status;

-- Dropping the extension discards the pending entries, and says so.
DROP EXTENSION dfend CASCADE;
SELECT count(*) AS dfend_triggers FROM pg_trigger WHERE tgrelid = 'life_users'::regclass AND NOT tgisinternal;

-- Without the extension, inserts are plain inserts.
INSERT INTO life_users VALUES (3, 'three@example.com');

-- Installed again in another schema, in the same session.
CREATE SCHEMA dfend_elsewhere;
CREATE EXTENSION dfend SCHEMA dfend_elsewhere;
SELECT dfend_elsewhere.dfend_attach('life_users', 'id', 'dfend_id', email_column => 'email');
INSERT INTO life_users VALUES (4, 'four@example.com');
-- A bulk statement writes to the new schema's dfend_outbox_bulk.
INSERT INTO life_users SELECT g, 'l' || g || '@example.com' FROM generate_series(200, 299) g;
SELECT user_id, state FROM dfend_elsewhere.dfend_outbox ORDER BY user_id;
SELECT count(*) AS bulk_rows FROM dfend_elsewhere.dfend_outbox_bulk;
SELECT dfend_elsewhere.dfend_enqueue_backfill('life_users');
SELECT dfend_elsewhere.dfend_process_queue();
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM life_users WHERE id < 100 ORDER BY id;
SELECT count(*) AS rows, count(*) FILTER (WHERE dfend_id LIKE 'idn_%') AS with_id
FROM life_users WHERE id >= 100;
-- Sync mode too: COMMIT finds the outbox in its new schema.
SELECT dfend_elsewhere.dfend_detach('life_users');
SELECT dfend_elsewhere.dfend_attach('life_users', 'id', 'dfend_id', email_column => 'email', mode => 'sync');
INSERT INTO life_users VALUES (5, 'five@example.com');
SELECT dfend_id LIKE 'idn_%' AS has_id FROM life_users WHERE id = 5;

-- Nothing pending: no WARNING.
DROP EXTENSION dfend CASCADE;
DROP SCHEMA dfend_elsewhere;
DROP TABLE life_users;
CREATE EXTENSION dfend;
