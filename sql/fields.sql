-- invalid_fields: an email, phone or metadata that fails dfend's validation
-- is left out of the registration ('drop', the default), so the user still
-- gets its DFend id, instead of keeping the row from being registered at all
-- ('reject'). What was left out, and why, is in dfend_dropped_field, for the
-- users' latest registrations; an UPDATE that corrects the value registers
-- the user again, with merge.
\! test/emu reset
SET client_min_messages = warning;

-- The option and its checks.
CREATE TABLE f_async (id int PRIMARY KEY, email text, phone text, meta jsonb, dfend_id text);
SELECT try_verbose($$SELECT dfend_attach('f_async', 'id', 'dfend_id', invalid_fields => 'ignore')$$);
SELECT try($$SELECT dfend_attach('f_async', 'id', 'dfend_id', invalid_fields => NULL)$$);
SELECT dfend_attach('f_async', 'id', 'dfend_id', email_column => 'email', phone_column => 'phone',
                    metadata_column => 'meta');
SELECT table_name, invalid_fields FROM dfend_attachments;

-- Async, 'drop': every row gets its id; DFend's identity lacks the bad
-- fields and keeps the good ones.
INSERT INTO f_async (id, email, phone, meta) VALUES
    (1, 'josé@example.com', '+14155550101', '{"plan": "pro"}'),
    (2, 'two@example.com', '+1 415 555 0100', '[1, 2]'),
    (3, 'three@example.com', '+14155550103', '{"plan": "free"}');
SELECT dfend_process_queue();
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM f_async ORDER BY id;
SELECT count(*) AS outbox FROM dfend_outbox;
\! test/emu stat posts
SELECT id, dfend_get_identity(user_id => id::text)->'identifiers' AS identifiers,
       dfend_get_identity(user_id => id::text)->'metadata' AS metadata
FROM f_async ORDER BY id;
SELECT table_name, user_id, field, reason, dropped_at <= now() AS dated
FROM dfend_dropped_field ORDER BY user_id, field;

-- Correcting the email registers the user again, with merge: DFend adds
-- it, and the user is no longer listed. User 2 still is.
UPDATE f_async SET email = 'jose@example.com' WHERE id = 1;
\set before `test/emu stat merged`
SELECT dfend_process_queue();
\set after `test/emu stat merged`
SELECT :after - :before AS merged;
SELECT dfend_get_identity(user_id => '1')->'identifiers'->'emails' AS emails;
SELECT user_id, field FROM dfend_dropped_field ORDER BY user_id, field;
-- A registration again that still drops a field keeps it listed.
UPDATE f_async SET meta = '"still not an object"' WHERE id = 2;
SELECT dfend_process_queue();
SELECT user_id, field, reason FROM dfend_dropped_field ORDER BY user_id, field;

-- Async, 'reject': the entry is dead at its first attempt, as before 0.3.0,
-- and nothing is listed.
CREATE TABLE f_strict (id int PRIMARY KEY, email text, phone text, dfend_id text);
SELECT dfend_attach('f_strict', 'id', 'dfend_id', email_column => 'email', phone_column => 'phone',
                    invalid_fields => 'reject');
INSERT INTO f_strict (id, email) VALUES (1, 'josé@example.com');
\set before `test/emu stat posts`
SELECT dfend_process_queue();
\set after `test/emu stat posts`
SELECT :after - :before AS posts_sent;
SELECT dfend_id IS NULL AS no_id FROM f_strict WHERE id = 1;
SELECT user_id, attempts, last_error FROM dfend_dead_letters WHERE table_name = 'f_strict'::regclass;
SELECT count(*) AS listed FROM dfend_dropped_field WHERE table_name = 'f_strict'::regclass;
DELETE FROM dfend_outbox;

-- Sync, 'drop': COMMIT stores the id and its WARNING says what was left out.
CREATE TABLE f_sync (id text PRIMARY KEY, email text, phone text, dfend_id text);
SELECT dfend_attach('f_sync', 'id', 'dfend_id', email_column => 'email', phone_column => 'phone',
                    mode => 'sync');
INSERT INTO f_sync (id, email, phone) VALUES ('s-1', 'josé@example.com', '+14155550111');
SELECT dfend_id LIKE 'idn_%' AS has_id FROM f_sync WHERE id = 's-1';
SELECT dfend_get_identity(user_id => 's-1')->'identifiers' AS identifiers;
INSERT INTO f_sync (id, email, phone) VALUES
    ('s-2', 'two@example.com', '+1 415 555 0100'),
    ('s-3', 'josé@example.com', '+1 (415) 555-0100'),
    ('s-4', 'four@example.com', '+14155550114');
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM f_sync ORDER BY id;
SELECT count(*) AS outbox FROM dfend_outbox;
SELECT user_id, field FROM dfend_dropped_field WHERE table_name = 'f_sync'::regclass
ORDER BY user_id, field;
-- Corrected in a later transaction: registered again at COMMIT, with merge.
\set before `test/emu stat merged`
UPDATE f_sync SET email = 'jose@example.com' WHERE id = 's-1';
\set after `test/emu stat merged`
SELECT :after - :before AS merged;
SELECT dfend_get_identity(user_id => 's-1')->'identifiers'->'emails' AS emails;
SELECT user_id, field FROM dfend_dropped_field WHERE table_name = 'f_sync'::regclass
ORDER BY user_id, field;

-- Sync, 'reject': the row is stored without an id, its entry dead.
SELECT dfend_detach('f_sync');
SELECT dfend_attach('f_sync', 'id', 'dfend_id', email_column => 'email', phone_column => 'phone',
                    mode => 'sync', invalid_fields => 'reject');
INSERT INTO f_sync (id, email) VALUES ('s-5', 'josé@example.com');
SELECT dfend_id IS NULL AS no_id FROM f_sync WHERE id = 's-5';
SELECT user_id, state, attempts FROM dfend_outbox;
SELECT count(*) AS listed FROM dfend_dropped_field WHERE user_id = 's-5';
DELETE FROM dfend_outbox;

-- Backfills: the same option, 'drop' by default (or the attachment's). Their
-- NOTICEs say how many rows were registered without a field.
SET client_min_messages = notice;
\set VERBOSITY terse
\! test/emu reset
CREATE TABLE f_backfill (id int PRIMARY KEY, email text, phone text, dfend_id text);
INSERT INTO f_backfill VALUES
    (1, 'one@example.com', '+14155550121', NULL),
    (2, 'josé@example.com', '+14155550122', NULL),
    (3, 'three@example.com', '555-0123', NULL),
    (4, 'not-an-email', '+1 415 555 0124', NULL);
SELECT try($$CALL dfend_backfill('f_backfill', user_id_column => 'id', id_column => 'dfend_id', invalid_fields => 'skip')$$);
-- A dry run lists what would be left out, and sends nothing.
CALL dfend_backfill('f_backfill', dry_run => true, user_id_column => 'id', id_column => 'dfend_id',
                    email_column => 'email', phone_column => 'phone');
\! test/emu stat requests
CALL dfend_backfill('f_backfill', user_id_column => 'id', id_column => 'dfend_id',
                    email_column => 'email', phone_column => 'phone');
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM f_backfill ORDER BY id;
SELECT dfend_get_identity(user_id => '4')->'identifiers' AS identifiers;
SELECT user_id, field, reason FROM dfend_dropped_field WHERE table_name = 'f_backfill'::regclass
ORDER BY user_id, field;
SELECT count(*) AS dead_letters FROM dfend_dead_letters WHERE table_name = 'f_backfill'::regclass;
-- 'reject': dead letters, as before.
UPDATE f_backfill SET dfend_id = NULL;
DELETE FROM dfend_dropped_field WHERE table_name = 'f_backfill'::regclass;
CALL dfend_backfill('f_backfill', user_id_column => 'id', id_column => 'dfend_id',
                    email_column => 'email', phone_column => 'phone', invalid_fields => 'reject');
SELECT id, dfend_id IS NOT NULL AS stored FROM f_backfill ORDER BY id;
SELECT user_id FROM dfend_dead_letters WHERE table_name = 'f_backfill'::regclass ORDER BY user_id;
SELECT count(*) AS listed FROM dfend_dropped_field WHERE table_name = 'f_backfill'::regclass;
-- An attached table's backfill takes its attachment's option: f_strict rejects.
INSERT INTO f_strict (id, phone) VALUES (2, '555-0102');
CALL dfend_backfill('f_strict');
SELECT user_id, state FROM dfend_outbox WHERE table_name = 'f_strict'::regclass ORDER BY user_id, state;
DELETE FROM dfend_outbox;
\set VERBOSITY default
SET client_min_messages = warning;

-- Only dfend's owner reads the table; a dropped table takes its rows along.
CREATE ROLE f_nobody;
SET ROLE f_nobody;
SELECT try($$SELECT count(*) FROM dfend_dropped_field$$);
RESET ROLE;
DROP ROLE f_nobody;
SELECT 'f_async'::regclass::oid AS f_async_oid \gset
SELECT count(*) AS listed FROM dfend_dropped_field WHERE table_name::oid = :f_async_oid;
DROP TABLE f_async;
SELECT count(*) AS listed_after_drop FROM dfend_dropped_field WHERE table_name::oid = :f_async_oid;
SELECT count(*) AS other_tables_kept FROM dfend_dropped_field;

SELECT dfend_detach('f_strict');
SELECT dfend_detach('f_sync');
DROP TABLE f_strict, f_sync, f_backfill;
