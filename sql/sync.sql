-- Sync mode: COMMIT registers a transaction's new rows, so DFend never gets
-- an identity for a row that is not stored. Counts POSTs at the emulator
-- around each case.
SET client_min_messages = warning;

CREATE TABLE parents (id int PRIMARY KEY);
CREATE TABLE signups (
    id text PRIMARY KEY,
    email text,
    plan text,
    parent int REFERENCES parents DEFERRABLE INITIALLY DEFERRED,
    dfend_id text);
SELECT dfend_attach('signups', 'id', 'dfend_id', email_column => 'email', mode => 'sync');
SELECT tgname, tgtype & 2 = 0 AS fires_after FROM pg_trigger
WHERE tgrelid = 'signups'::regclass AND tgname LIKE 'dfend%' ORDER BY 1;

-- A plain insert: the id is on the row when the statement's COMMIT returns.
\set before `test/emu stat posts`
INSERT INTO signups (id, email) VALUES ('s-1', 's1@example.com');
\set after `test/emu stat posts`
SELECT :after - :before AS posts_sent;
SELECT dfend_id LIKE 'idn_%' AS has_id FROM signups WHERE id = 's-1';
SELECT count(*) AS outbox FROM dfend_outbox;

-- In a transaction: nothing is sent before COMMIT.
\set before `test/emu stat posts`
BEGIN;
INSERT INTO signups (id, email) VALUES ('s-2', 's2@example.com');
SELECT dfend_id IS NULL AS no_id_yet FROM signups WHERE id = 's-2';
\set after `test/emu stat posts`
SELECT :after - :before AS posts_sent_before_commit;
COMMIT;
SELECT dfend_id LIKE 'idn_%' AS has_id FROM signups WHERE id = 's-2';

-- Rows never stored send nothing.
\set before `test/emu stat posts`
INSERT INTO signups (id, email) VALUES ('s-1', 'other@example.com') ON CONFLICT DO NOTHING;
INSERT INTO signups (id, email) VALUES ('s-1', 's1@example.com')
ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email; -- no mapped column changes
SELECT try($$INSERT INTO signups (id, email) VALUES ('s-1', 'dup@example.com')$$);
BEGIN;
INSERT INTO signups (id, email) VALUES ('rolled-back', 'rb@example.com');
ROLLBACK;
BEGIN;
INSERT INTO signups (id, email) VALUES ('kept', 'kept@example.com');
SAVEPOINT s;
INSERT INTO signups (id, email) VALUES ('to-savepoint', 'sp@example.com');
ROLLBACK TO SAVEPOINT s;
INSERT INTO signups (id, email) VALUES ('deleted-later', 'del@example.com');
DELETE FROM signups WHERE id = 'deleted-later';
COMMIT;
-- A deferred foreign key that fails at COMMIT: checked before dfend sends.
BEGIN;
INSERT INTO signups (id, email, parent) VALUES ('orphan', 'orphan@example.com', 42);
\set VERBOSITY terse
COMMIT;
\set VERBOSITY default
\set after `test/emu stat posts`
SELECT :after - :before AS posts_sent; -- 1: 'kept' only
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM signups ORDER BY id;
SELECT dfend_get_identity(user_id => 'rolled-back') IS NULL AS never_registered;
SELECT dfend_get_identity(user_id => 'to-savepoint') IS NULL AS never_registered;
SELECT dfend_get_identity(user_id => 'orphan') IS NULL AS never_registered;
SELECT dfend_get_identity(user_id => 'deleted-later') IS NULL AS never_registered;

-- ON CONFLICT DO UPDATE that changes the email: one merge for the stored row.
\set before `test/emu stat posts`
INSERT INTO signups (id, email) VALUES ('s-1', 's1-new@example.com')
ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email;
\set after `test/emu stat posts`
SELECT :after - :before AS posts_sent;
SELECT dfend_get_identity(user_id => 's-1')->'identifiers'->'emails' AS emails;

-- Inserted, then changed in the same transaction: one request, with the
-- values as committed.
\set before `test/emu stat posts`
BEGIN;
INSERT INTO signups (id, email) VALUES ('changed', 'first@example.com');
UPDATE signups SET email = 'second@example.com' WHERE id = 'changed';
UPDATE signups SET plan = 'pro' WHERE id = 'changed';
COMMIT;
\set after `test/emu stat posts`
SELECT :after - :before AS posts_sent;
SELECT dfend_get_identity(user_id => 'changed')->'identifiers'->'emails' AS emails;

-- A multi-row statement: all rows at once, each with its id (a budget no
-- busy test machine runs out of).
SET dfend.sync_timeout = '20s';
\set before `test/emu stat posts`
INSERT INTO signups (id, email) SELECT 'many-' || i, 'many' || i || '@example.com'
FROM generate_series(1, 40) AS i;
RESET dfend.sync_timeout;
\set after `test/emu stat posts`
SELECT :after - :before AS posts_sent;
SELECT count(*) FILTER (WHERE dfend_id LIKE 'idn_%') AS with_id, count(*) AS rows
FROM signups WHERE id LIKE 'many-%';

-- The time budget: DFend hangs, COMMIT gives up after dfend.sync_timeout
-- and the row is stored without an id, its entry pending for the worker.
\! test/emu config '{"rate_hang": 1}'
SET dfend.sync_timeout = '200ms';
\set VERBOSITY terse
INSERT INTO signups (id, email) VALUES ('slow-1', 'slow1@example.com');
\set VERBOSITY default
SELECT dfend_id IS NULL AS no_id FROM signups WHERE id = 'slow-1';
SELECT user_id, state, attempts, next_attempt_at <= now() AS due_now, last_error
FROM dfend_outbox WHERE user_id = 'slow-1';
-- statement_timeout shorter than the budget: COMMIT still ends in time.
SET dfend.sync_timeout = '30s';
SET statement_timeout = '400ms';
\set VERBOSITY terse
INSERT INTO signups (id, email) VALUES ('slow-2', 'slow2@example.com');
\set VERBOSITY default
RESET statement_timeout;
SELECT count(*) AS stored FROM signups WHERE id = 'slow-2';
-- sync_timeout 0: every row is left to the worker.
SET dfend.sync_timeout = 0;
INSERT INTO signups (id, email) VALUES ('later', 'later@example.com');
RESET dfend.sync_timeout;
SELECT user_id, state FROM dfend_outbox ORDER BY user_id;
\! test/emu reset
SELECT dfend_process_queue();
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM signups
WHERE id IN ('slow-1', 'slow-2', 'later') ORDER BY id;

-- Data dfend refuses, on_error 'queue': with invalid_fields 'drop' (the
-- default) the row is registered without the field, and the WARNING says so
-- ('reject': sql/fields.sql).
INSERT INTO signups (id, email) VALUES ('bad-email', 'not-an-email');
SELECT state, last_error FROM dfend_outbox WHERE user_id = 'bad-email';
DELETE FROM dfend_outbox;

SELECT dfend_detach('signups');
DROP TABLE signups, parents;
