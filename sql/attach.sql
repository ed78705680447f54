-- dfend_attach / dfend_detach, the sync and async triggers, and
-- dfend_process_queue. (No worker serves this database: the queue is drained
-- explicitly; test/scenarios/worker.sh covers the worker.)
\! test/emu reset
SET client_min_messages = warning;

CREATE TABLE users (id bigint PRIMARY KEY, email text, phone text, meta jsonb, dfend_id text);

-- Checks before anything is created.
SELECT try($$SELECT dfend_attach('users', 'id', 'dfend_id', mode => 'later')$$);
SELECT try($$SELECT dfend_attach('users', 'id', 'dfend_id', on_error => 'ignore')$$);
SELECT try($$SELECT dfend_attach('no_such_table', 'id', 'dfend_id')$$);
SELECT try($$SELECT dfend_attach('users', 'uid', 'dfend_id')$$);
SELECT try($$SELECT dfend_attach('users', 'id', 'missing')$$);
SELECT try($$SELECT dfend_attach('users', 'id', 'id')$$);
SELECT try_verbose($$SELECT dfend_attach('users', 'email', 'id')$$);
SELECT try($$SELECT dfend_attach('users', 'meta', 'dfend_id')$$);
SELECT try($$SELECT dfend_attach('users', 'id', 'dfend_id', email_column => 'id')$$);
SELECT try($$SELECT dfend_attach('users', 'id', 'dfend_id', metadata_column => 'email')$$);
CREATE VIEW users_view AS SELECT * FROM users;
SELECT try($$SELECT dfend_attach('users_view', 'id', 'dfend_id')$$);
SELECT count(*) AS attachments FROM dfend_attachments;

-- Async: the insert only writes the outbox; nothing leaves before commit.
SELECT dfend_attach('users', 'id', 'dfend_id', email_column => 'email', phone_column => 'phone',
                    metadata_column => 'meta');
SELECT try($$SELECT dfend_attach('users', 'id', 'dfend_id')$$);
SELECT tgname, tgtype FROM pg_trigger WHERE tgrelid = 'users'::regclass ORDER BY tgname;
INSERT INTO users (id, email, phone, meta) VALUES
    (1, 'ada@example.com', '+14155550101', '{"plan": "pro"}'),
    (2, 'grace@example.com', NULL, NULL);
BEGIN;
INSERT INTO users (id, email) VALUES (3, 'rolled.back@example.com');
ROLLBACK;
SELECT user_id, reason, state FROM dfend_outbox ORDER BY entry_id;
\! test/emu stat posts
SELECT dfend_process_queue();
\! test/emu stat posts
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM users ORDER BY id;
SELECT count(*) AS outbox FROM dfend_outbox;
SELECT dfend_get_identity('1')->'metadata' AS metadata;

-- An update of the email re-registers with merge; of the id alone, nothing.
UPDATE users SET email = 'ada.lovelace@example.com' WHERE id = 1;
UPDATE users SET dfend_id = dfend_id WHERE id = 2;
SELECT user_id, reason FROM dfend_outbox ORDER BY entry_id;
SELECT dfend_process_queue();
SELECT dfend_get_identity('1')->'identifiers'->'emails' AS emails;

-- A row deleted before the queue is drained sends nothing; its entry is
-- removed once the row has been invisible for dfend.missing_row_timeout
-- (sql/missing.sql), here made to have passed.
INSERT INTO users (id, email) VALUES (4, 'gone@example.com');
DELETE FROM users WHERE id = 4;
\! test/emu reset
SELECT dfend_process_queue();
SELECT user_id, state, missing_since IS NOT NULL AS missing FROM dfend_outbox;
UPDATE dfend_outbox SET next_attempt_at = now(), missing_since = now() - interval '2 days';
SELECT dfend_process_queue();
\! test/emu stat posts
SELECT count(*) AS outbox FROM dfend_outbox;

-- An inserted row that already has its id needs no call.
INSERT INTO users (id, email, dfend_id) VALUES (5, 'restored@example.com', 'idn_restored');
SELECT count(*) AS outbox FROM dfend_outbox;

-- A permanent failure is a dead letter; dfend_retry_dead requeues it.
\! test/emu config '{"fail_user_ids": ["6"]}'
INSERT INTO users (id, email) VALUES (6, 'rejected@example.com');
SELECT dfend_process_queue();
SELECT user_id, attempts, last_error FROM dfend_dead_letters;
\! test/emu config '{"fail_user_ids": []}'
SELECT dfend_retry_dead('users');
SELECT dfend_process_queue();
SELECT dfend_id IS NOT NULL AS has_id FROM users WHERE id = 6;

-- A transient failure stays pending with a later attempt time.
\! test/emu config '{"rate_5xx": 1}'
SET dfend.max_retries = 0;
INSERT INTO users (id, email) VALUES (7, 'later@example.com');
SELECT dfend_process_queue();
SELECT state, attempts, next_attempt_at > now() AS later, last_error FROM dfend_outbox;
SELECT pending, due, dead FROM dfend_queue_status;
\! test/emu config '{"rate_5xx": 0}'
RESET dfend.max_retries;
UPDATE dfend_outbox SET next_attempt_at = now();
SELECT dfend_process_queue();
SELECT count(*) AS missing FROM users WHERE dfend_id IS NULL;

-- Sync: COMMIT registers the row, so the id is on it when COMMIT returns
-- (sql/sync.sql tests the cases where a row is never stored).
CREATE TABLE members ("Member Id" text PRIMARY KEY, "E-mail" text, dfend_id varchar(64));
SELECT dfend_attach('members', 'Member Id', 'dfend_id', email_column => 'E-mail', mode => 'sync');
INSERT INTO members VALUES ('m-1', 'm1@example.com');
SELECT "Member Id", dfend_id LIKE 'idn_%' AS has_id FROM members;
SELECT count(*) AS outbox FROM dfend_outbox;

-- DFend down, on_error 'queue': the row is committed without an id, and its
-- outbox entry stays for the worker.
SET dfend.api_url = 'http://127.0.0.1:1';
SET dfend.max_retries = 0;
SET client_min_messages = error; -- the WARNING's detail names a port and a time
INSERT INTO members VALUES ('m-2', 'm2@example.com');
SET client_min_messages = warning;
SELECT "Member Id", dfend_id FROM members WHERE "Member Id" = 'm-2';
SELECT user_id, reason FROM dfend_outbox;
RESET dfend.api_url;
UPDATE dfend_outbox SET next_attempt_at = now(); -- skip the backoff
SELECT dfend_process_queue();
SELECT dfend_id LIKE 'idn_%' AS has_id FROM members WHERE "Member Id" = 'm-2';

-- on_error 'error': COMMIT fails with the mapped error, and nothing is stored.
SELECT dfend_detach('members');
SELECT dfend_attach('members', 'Member Id', 'dfend_id', email_column => 'E-mail', mode => 'sync',
                    on_error => 'error', invalid_fields => 'reject');
SET dfend.api_url = 'http://127.0.0.1:1';
\set VERBOSITY terse
INSERT INTO members VALUES ('m-3', 'm3@example.com');
\set VERBOSITY default
RESET dfend.api_url;
RESET dfend.max_retries;
SELECT count(*) FROM members WHERE "Member Id" = 'm-3';
-- Bad input in the row fails the same way, before any request (with
-- invalid_fields 'reject'; 'drop' registers it without the field).
INSERT INTO members VALUES ('m-4', 'not-an-email');
SELECT count(*) FROM members WHERE "Member Id" = 'm-4';

-- Odd names: quotes, spaces, mixed case, another schema. No injection.
CREATE SCHEMA "Odd ""Schema""";
CREATE TABLE "Odd ""Schema"""."Users; DROP TABLE users; --" ("Id's" int PRIMARY KEY, "Mail ""x""" text, "DFend Id" text);
SELECT dfend_attach('"Odd ""Schema"""."Users; DROP TABLE users; --"', 'Id''s', 'DFend Id', email_column => 'Mail "x"');
INSERT INTO "Odd ""Schema"""."Users; DROP TABLE users; --" VALUES (1, 'odd@example.com');
SELECT dfend_process_queue();
SELECT "DFend Id" LIKE 'idn_%' AS has_id FROM "Odd ""Schema"""."Users; DROP TABLE users; --";
SELECT count(*) AS users_still_there FROM users;
SELECT table_name, user_id_column, id_column FROM dfend_attachments ORDER BY 1::text;

-- Detaching removes the triggers; detaching twice is an error.
SELECT dfend_detach('"Odd ""Schema"""."Users; DROP TABLE users; --"');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = '"Odd ""Schema"""."Users; DROP TABLE users; --"'::regclass;
SELECT try($$SELECT dfend_detach('"Odd ""Schema"""."Users; DROP TABLE users; --"')$$);
SELECT try($$SELECT dfend_detach('pg_class')$$);

-- Dropping an attached table removes its mapping and entries.
INSERT INTO members VALUES ('m-5', 'm5@example.com');
DROP TABLE members;
SELECT table_name FROM dfend_attachments ORDER BY 1::text;

-- Nobody else can read or change the outbox, or attach tables.
CREATE ROLE dfend_outsider;
GRANT SELECT, INSERT, UPDATE ON users TO dfend_outsider;
SET ROLE dfend_outsider;
SELECT try($$SELECT * FROM dfend_outbox$$);
SELECT try($$DELETE FROM dfend_outbox$$);
SELECT try($$SELECT * FROM dfend_outbox_bulk$$);
SELECT try($$INSERT INTO dfend_outbox_bulk (table_name, user_ids) VALUES ('users', '{x}')$$);
SELECT try($$SELECT nextval('dfend_outbox_bulk_bulk_id_seq')$$);
SELECT try($$SELECT * FROM dfend_attachment$$);
SELECT try($$SELECT * FROM dfend_queue_status$$);
SELECT try($$SELECT dfend_attach('users', 'id', 'dfend_id')$$);
SELECT try($$SELECT dfend_process_queue()$$);
-- ... yet its inserts into an attached table are queued (SECURITY DEFINER).
INSERT INTO users (id, email) VALUES (8, 'outsider@example.com');
-- ... in bulk too, under the table the rows went into.
INSERT INTO users (id, email) SELECT g, 'o' || g || '@example.com' FROM generate_series(1000, 1099) g;
RESET ROLE;
SELECT user_id FROM dfend_outbox;
SELECT table_name, cardinality(user_ids) AS user_count FROM dfend_outbox_bulk;
SELECT dfend_process_queue();
-- The trigger function cannot be used elsewhere.
SELECT try($$SELECT dfend_trigger()$$);
CREATE TABLE outsider_table (id int);
ALTER TABLE outsider_table OWNER TO dfend_outsider;
SET ROLE dfend_outsider;
-- Creating such a trigger works (EXECUTE is PUBLIC, for partitions), but it
-- refuses to fire: no attachment says so (sql/attacks.sql has more).
SELECT try($$CREATE TRIGGER t AFTER INSERT ON outsider_table FOR EACH ROW EXECUTE FUNCTION dfend_trigger('async', 'id', 'id', '', '', '', 'f', 'queue')$$);
SELECT try($$INSERT INTO outsider_table VALUES (1)$$);
RESET ROLE;
DROP TABLE outsider_table;
REVOKE ALL ON users FROM dfend_outsider;
DROP ROLE dfend_outsider;

-- A rejected key is the same for every row: entries stay pending, cost no
-- attempt, and nothing is dead-lettered. It opens the session's circuit
-- breaker, which paces the entry from now on: it is due again at once, and
-- the next call probes with it.
\getenv wrong_key_file DFEND_WRONG_KEY_FILE
SET dfend.api_key_file = :'wrong_key_file';
INSERT INTO users (id, email) VALUES (9, 'nine@example.com');
SELECT dfend_process_queue();
SELECT state, attempts, next_attempt_at <= clock_timestamp() AS due, last_error
FROM dfend_outbox;
RESET dfend.api_key_file;
SELECT dfend_process_queue();

-- Dropping a column keeps the attachment; changing the user id re-registers.
ALTER TABLE users ADD COLUMN junk int;
ALTER TABLE users DROP COLUMN junk;
SELECT count(*) AS still_attached FROM dfend_attachments WHERE table_name = 'users'::regclass;
UPDATE users SET id = 10 WHERE id = 9;
SELECT user_id, reason FROM dfend_outbox;
SELECT dfend_process_queue();
SELECT dfend_get_identity('10') IS NOT NULL AS registered_under_new_id;

-- The worker (and dfend_process_queue, here run by a superuser) touch a
-- user's table only as its owner, in a security-restricted operation: a
-- trigger on the table cannot borrow superuser rights.
CREATE ROLE dfend_table_owner;
CREATE TABLE owned (id int PRIMARY KEY, dfend_id text);
ALTER TABLE owned OWNER TO dfend_table_owner;
CREATE TABLE who_ran (role name, superuser boolean);
GRANT INSERT ON who_ran TO dfend_table_owner;
CREATE FUNCTION note_who() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.who_ran SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    RETURN NEW;
END $$;
CREATE TRIGGER note_who BEFORE UPDATE ON owned FOR EACH ROW EXECUTE FUNCTION note_who();
SELECT dfend_attach('owned', 'id', 'dfend_id');
INSERT INTO owned VALUES (1);
SELECT dfend_process_queue();
SELECT * FROM who_ran;
SELECT dfend_id IS NOT NULL AS has_id FROM owned;

-- An id column too short for DFend's id: the error is recorded on the
-- entry, which stays pending; nothing crashes or is lost.
CREATE TABLE short_ids (id int PRIMARY KEY, dfend_id varchar(5));
SELECT dfend_attach('short_ids', 'id', 'dfend_id');
INSERT INTO short_ids VALUES (1);
SELECT dfend_process_queue();
SELECT state, attempts, last_error FROM dfend_outbox;
SELECT dfend_detach('short_ids');

-- char(n) keys are matched by value, not by their text output.
CREATE TABLE padded (code char(8) PRIMARY KEY, dfend_id text);
SELECT dfend_attach('padded', 'code', 'dfend_id');
INSERT INTO padded VALUES ('abc');
SELECT dfend_process_queue();
SELECT code, dfend_id IS NOT NULL AS has_id FROM padded;

-- A partitioned table is attached whole; its rows queue under it.
CREATE TABLE parted (id int PRIMARY KEY, dfend_id text) PARTITION BY RANGE (id);
CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (100);
SELECT try($$SELECT dfend_attach('parted_low', 'id', 'dfend_id')$$);
SELECT dfend_attach('parted', 'id', 'dfend_id');
INSERT INTO parted VALUES (5);
SELECT table_name FROM dfend_outbox;
SELECT dfend_process_queue();
SELECT id, dfend_id IS NOT NULL AS has_id FROM parted;

DROP TABLE owned, who_ran, short_ids, padded, parted;
DROP FUNCTION note_who();
DROP ROLE dfend_table_owner;
SELECT dfend_detach('users');
DROP TABLE users CASCADE;
\! test/emu stat identities

-- A LATIN1 database: the outbox sends UTF-8, as the sync and backfill paths do.
CREATE DATABASE dfend_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c dfend_latin1
\! test/emu reset
SET client_encoding = 'UTF8';
SET client_min_messages = warning;
CREATE EXTENSION dfend;
CREATE TABLE users (id int PRIMARY KEY, email text, meta jsonb, dfend_id text);
SELECT dfend_attach('users', 'id', 'dfend_id', 'email', metadata_column => 'meta');
INSERT INTO users VALUES (1, 'jose@example.com', '{"name": "José"}');
SELECT dfend_process_queue();
SELECT id, dfend_id IS NOT NULL AS has_id FROM users;
SELECT count(*) AS dead FROM dfend_dead_letters;
SELECT dfend_get_identity('1')->'metadata' AS metadata;
\c contrib_regression
DROP DATABASE dfend_latin1;
