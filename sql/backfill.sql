-- CALL dfend_backfill and dfend_enqueue_backfill against the emulator.
-- (Cancel, terminate and concurrent writers: test/scenarios/backfill_interrupt.sh.)
-- DETAIL lines carry durations and rates, so only primary messages are shown.
\set VERBOSITY terse
\! test/emu reset

-- A bigint key, several batches, every field mapped: every row gets its own
-- id, DFend holds one identity per row, and one request was sent per row.
CREATE TABLE bf_users (id bigint PRIMARY KEY, email text, phone text, profile jsonb, dfend_id text);
INSERT INTO bf_users
SELECT g, 'user' || g || '@example.com',
       CASE WHEN g % 3 = 0 THEN '+1415555' || lpad(g::text, 4, '0') END,
       jsonb_build_object('plan', 'pro', 'n', g)
FROM generate_series(1, 40) AS g;
CALL dfend_backfill('bf_users', batch_size => 7, concurrency => 4,
                    user_id_column => 'id', id_column => 'dfend_id', email_column => 'email',
                    phone_column => 'phone', metadata_column => 'profile');
SELECT count(*) AS rows, count(dfend_id) AS with_id, count(DISTINCT dfend_id) AS distinct_ids,
       bool_and(dfend_id LIKE 'idn_%') AS dfend_ids
FROM bf_users;
\! test/emu stat posts
\! test/emu stat created
\! test/emu stat identities
SELECT bool_and(dfend_get_identity(id::text)->>'id' = dfend_id) AS ids_match
FROM bf_users WHERE id IN (1, 21, 40);
SELECT dfend_get_identity('3')->'identifiers'->'emails' AS emails,
       dfend_get_identity('3')->'identifiers'->'phones' AS phones,
       dfend_get_identity('3')->'metadata' AS metadata;
SELECT state, dry_run, pass, total, done, percent, registered, created, existing, failed,
       transient, eta
FROM dfend_backfill_progress ORDER BY run_id DESC LIMIT 1;
-- Nothing is left to do: a second run sends nothing.
CALL dfend_backfill('bf_users', user_id_column => 'id', id_column => 'dfend_id');
\! test/emu stat posts

-- A text key, and rows DFend cannot take: two invalid emails (refused
-- locally with invalid_fields 'reject', nothing sent) and one user DFend
-- answers 400 for. They become dead letters; every other row is stored.
-- (invalid_fields 'drop', the default: sql/fields.sql.)
\! test/emu reset
CREATE TABLE bf_accounts (login text PRIMARY KEY, email text, dfend_id varchar(64));
INSERT INTO bf_accounts VALUES
    ('alice', 'alice@example.com'), ('bob', 'bob@example'), ('carol', 'carol@example.com'),
    ('dave', 'dave@@example.com'), ('eve', 'eve@example.com'), ('frank', 'frank@example.com'),
    ('o''brien', 'ob@example.com');
\! test/emu config '{"fail_user_ids": ["eve"]}'
CALL dfend_backfill('bf_accounts', batch_size => 2, user_id_column => 'login',
                    id_column => 'dfend_id', email_column => 'email', invalid_fields => 'reject');
SELECT login, dfend_id IS NOT NULL AS stored FROM bf_accounts ORDER BY login;
SELECT user_id, reason, attempts, last_error FROM dfend_dead_letters
WHERE table_name = 'bf_accounts'::regclass ORDER BY user_id;
\! test/emu stat posts
-- Rows already dead-lettered are skipped: no request, no second dead letter.
CALL dfend_backfill('bf_accounts', batch_size => 2, user_id_column => 'login',
                    id_column => 'dfend_id', email_column => 'email', invalid_fields => 'reject');
\! test/emu stat posts
SELECT count(*) AS dead_letters FROM dfend_dead_letters WHERE table_name = 'bf_accounts'::regclass;
-- merge => true: a user DFend already knows gets the row's new email added.
UPDATE bf_accounts SET email = 'alice.new@example.com', dfend_id = NULL WHERE login = 'alice';
CALL dfend_backfill('bf_accounts', merge => true, user_id_column => 'login',
                    id_column => 'dfend_id', email_column => 'email');
\! test/emu stat merged
SELECT dfend_get_identity('alice')->'identifiers'->'emails' AS emails;

-- A dry run validates every row locally and sends nothing at all.
\! test/emu reset
CREATE TABLE bf_dry (id integer PRIMARY KEY, email text, phone text, meta json, dfend_id text);
INSERT INTO bf_dry
SELECT g, CASE WHEN g % 5 = 0 THEN 'no-at-sign' ELSE 'd' || g || '@example.com' END,
       CASE WHEN g = 7 THEN '555-0100' END,
       CASE WHEN g = 8 THEN '[1, 2]' ELSE '{"ok": true}' END::json
FROM generate_series(1, 60) AS g;
CALL dfend_backfill('bf_dry', dry_run => true, batch_size => 25, user_id_column => 'id',
                    id_column => 'dfend_id', email_column => 'email', phone_column => 'phone',
                    metadata_column => 'meta', invalid_fields => 'reject');
\! test/emu stat requests
SELECT count(dfend_id) AS stored FROM bf_dry;
SELECT count(*) AS outbox FROM dfend_outbox WHERE table_name = 'bf_dry'::regclass;
SELECT state, dry_run, total, done, registered AS would_send, failed AS invalid
FROM dfend_backfill_progress ORDER BY run_id DESC LIMIT 1;

-- Resume: a run that fails where a trigger refuses to store row 13 keeps
-- what the batches before committed. Which rows those are depends on
-- timing: a batch stores the answers that came in while its own rows went
-- out, and leaves the ones still on their way to the next batch. The next
-- run continues with the rows still without an id: those sent before get
-- their existing identity, and no identity is created twice.
\! test/emu reset
CREATE TABLE bf_resume (id integer PRIMARY KEY, dfend_id text);
INSERT INTO bf_resume SELECT g FROM generate_series(1, 20) AS g;
CREATE FUNCTION bf_refuse_13() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = 13 THEN
        RAISE EXCEPTION 'simulated failure while storing row 13';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER bf_refuse BEFORE UPDATE ON bf_resume FOR EACH ROW EXECUTE FUNCTION bf_refuse_13();
CALL dfend_backfill('bf_resume', batch_size => 5, user_id_column => 'id', id_column => 'dfend_id');
SELECT count(dfend_id) AS stored_first FROM bf_resume \gset
\set posts_first `test/emu stat posts`
SELECT count(*) FILTER (WHERE id = 13) AS row_13_stored FROM bf_resume WHERE dfend_id IS NOT NULL;
-- Each row was sent once at most (a request handed to the engine while its
-- connection was still opening may never have left when the run failed).
SELECT :posts_first BETWEEN :stored_first AND 20 AS sent_once_at_most;
SELECT state, total, done = :stored_first AS done_is_stored, registered = :stored_first AS registered_is_stored
FROM dfend_backfill_progress ORDER BY run_id DESC LIMIT 1;
DROP TRIGGER bf_refuse ON bf_resume;
SET client_min_messages = warning; -- its NOTICE's figures depend on timing
CALL dfend_backfill('bf_resume', batch_size => 5, user_id_column => 'id', id_column => 'dfend_id');
RESET client_min_messages;
SELECT count(dfend_id) AS stored, count(DISTINCT dfend_id) AS distinct_ids FROM bf_resume;
\set posts `test/emu stat posts`
SELECT :posts = :posts_first + 20 - :stored_first AS each_unstored_row_sent_once_more;
\! test/emu stat created
\! test/emu stat identities
-- Created: the rows never sent before; the others answer as existing.
SELECT state, total = 20 - :stored_first AS total_is_unstored, done = total AS all_done,
       registered = total AS all_registered, created = 20 - :posts_first AS created_never_sent,
       existing = :posts_first - :stored_first AS existing_were_sent
FROM dfend_backfill_progress ORDER BY run_id DESC LIMIT 1;

-- Injected faults: 503s, 429s with Retry-After: 1 and dropped connections
-- are retried; every id is stored, and DFend holds no duplicate.
\! test/emu reset
CREATE TABLE bf_faults (id integer PRIMARY KEY, dfend_id text);
INSERT INTO bf_faults SELECT g FROM generate_series(1, 30) AS g;
\! test/emu config '{"fail_next_5xx": 3, "fail_next_429": 2, "retry_after": 1, "drop_next": 2}'
CALL dfend_backfill('bf_faults', batch_size => 10, concurrency => 4,
                    user_id_column => 'id', id_column => 'dfend_id');
SELECT count(dfend_id) AS stored, count(DISTINCT dfend_id) AS distinct_ids FROM bf_faults;
\! test/emu stat created
\! test/emu stat identities
-- A response lost after DFend stored the identity: the retry gets the same
-- identity back.
\! test/emu reset
UPDATE bf_faults SET dfend_id = NULL WHERE id <= 5;
\! test/emu config '{"drop_next": 2, "drop_after_commit": true}'
CALL dfend_backfill('bf_faults', user_id_column => 'id', id_column => 'dfend_id');
SELECT count(dfend_id) AS stored, count(DISTINCT dfend_id) AS distinct_ids FROM bf_faults;
\! test/emu stat identities
-- 429s never fail a backfill, even with no retries allowed for other errors.
\! test/emu reset
UPDATE bf_faults SET dfend_id = NULL WHERE id <= 5;
SET dfend.max_retries = 0;
\! test/emu config '{"fail_next_429": 3, "retry_after": 1}'
CALL dfend_backfill('bf_faults', concurrency => 2, user_id_column => 'id', id_column => 'dfend_id');
SELECT count(dfend_id) AS stored FROM bf_faults;
\! test/emu stat posts
-- A transient failure that outlives the retries leaves the row without an
-- id; a second pass, from that row on, stores it.
\! test/emu reset
UPDATE bf_faults SET dfend_id = NULL WHERE id <= 5;
\! test/emu config '{"fail_next_5xx": 1}'
CALL dfend_backfill('bf_faults', concurrency => 1, user_id_column => 'id', id_column => 'dfend_id');
SELECT count(dfend_id) AS stored FROM bf_faults;
\! test/emu stat posts
SELECT state, pass, done, registered, transient FROM dfend_backfill_progress ORDER BY run_id DESC LIMIT 1;
-- When every request of a batch (of at least 10) fails, DFend is down: the
-- run stops with DFend's error instead of walking the whole table.
\! test/emu reset
UPDATE bf_faults SET dfend_id = NULL WHERE id <= 12;
\! test/emu config '{"rate_5xx": 1}'
CALL dfend_backfill('bf_faults', user_id_column => 'id', id_column => 'dfend_id');
\echo :LAST_ERROR_SQLSTATE
\! test/emu config '{"rate_5xx": 0}'
SELECT count(dfend_id) AS stored FROM bf_faults;
SELECT count(*) AS dead_letters FROM dfend_outbox WHERE table_name = 'bf_faults'::regclass;
RESET dfend.max_retries;
-- A rejected key stops the run too, rather than dead-lettering every row.
\getenv wrong_key_file DFEND_WRONG_KEY_FILE
SET dfend.api_key_file = :'wrong_key_file';
CALL dfend_backfill('bf_faults', user_id_column => 'id', id_column => 'dfend_id');
\echo :LAST_ERROR_SQLSTATE
RESET dfend.api_key_file;
SELECT count(*) AS dead_letters FROM dfend_outbox WHERE table_name = 'bf_faults'::regclass;
-- A few rows that keep failing do not stop a run: they are reported.
CALL dfend_backfill('bf_faults', user_id_column => 'id', id_column => 'dfend_id');
\! test/emu config '{"rate_5xx": 1}'
UPDATE bf_faults SET dfend_id = NULL WHERE id > 12 AND id <= 15;
CALL dfend_backfill('bf_faults', user_id_column => 'id', id_column => 'dfend_id');
\! test/emu config '{"rate_5xx": 0}'
CALL dfend_backfill('bf_faults', user_id_column => 'id', id_column => 'dfend_id');
SELECT count(*) - count(dfend_id) AS still_missing FROM bf_faults;
SELECT state FROM dfend_backfill_progress ORDER BY run_id DESC LIMIT 1;
CALL dfend_backfill('bf_faults', user_id_column => 'id', id_column => 'dfend_id');

-- Odd identifiers: another schema, mixed case, spaces and quotes.
\! test/emu reset
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."User ""Table""" ("User Id" text PRIMARY KEY, "E-Mail" text, "DFend Id" text);
INSERT INTO "Odd Schema"."User ""Table""" VALUES
    ('a b', 'ab@example.com'), ('x"y', 'xy@example.com'), ('Z''s', NULL);
CALL dfend_backfill('"Odd Schema"."User ""Table"""', batch_size => 2,
                    user_id_column => 'User Id', id_column => 'DFend Id',
                    email_column => 'E-Mail');
SELECT "User Id", "DFend Id" LIKE 'idn_%' AS stored FROM "Odd Schema"."User ""Table""" ORDER BY 1;
SELECT dfend_get_identity('x"y')->'identifiers'->'emails' AS emails;

-- A partitioned table.
CREATE TABLE bf_parts (id integer PRIMARY KEY, dfend_id text) PARTITION BY RANGE (id);
CREATE TABLE bf_parts_low PARTITION OF bf_parts FOR VALUES FROM (1) TO (5);
CREATE TABLE bf_parts_high PARTITION OF bf_parts FOR VALUES FROM (5) TO (100);
INSERT INTO bf_parts SELECT generate_series(1, 8);
CALL dfend_backfill('bf_parts', batch_size => 3, user_id_column => 'id', id_column => 'dfend_id');
SELECT tableoid::regclass AS partition, count(dfend_id) AS stored FROM bf_parts GROUP BY 1 ORDER BY 1;

-- The mapping of an attached table (here inserted directly) is used when no
-- columns are given; a uuid key. dfend_enqueue_backfill queues each row
-- without an id once.
\! test/emu reset
CREATE TABLE bf_attached (uid uuid PRIMARY KEY, mail text, did text);
INSERT INTO bf_attached
SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'm' || g || '@example.com'
FROM generate_series(1, 6) AS g;
INSERT INTO dfend_attachment (table_name, user_id_column, id_column, email_column, mode)
VALUES ('bf_attached', 'uid', 'did', 'mail', 'async');
SELECT dfend_enqueue_backfill('bf_attached') AS queued;
SELECT dfend_enqueue_backfill('bf_attached') AS queued_again;
CALL dfend_backfill('bf_attached', batch_size => 4);
SELECT count(did) AS stored FROM bf_attached;
SELECT dfend_get_identity('00000000-0000-0000-0000-000000000004')->'identifiers'->'emails' AS emails;
DELETE FROM dfend_outbox WHERE table_name = 'bf_attached'::regclass;
INSERT INTO bf_attached VALUES ('00000000-0000-0000-0000-000000000007', 'm7@example.com');
SELECT dfend_enqueue_backfill('bf_attached') AS queued_new_row;
SELECT user_id, reason, state FROM dfend_outbox WHERE table_name = 'bf_attached'::regclass;
DELETE FROM dfend_outbox WHERE table_name = 'bf_attached'::regclass;
DELETE FROM dfend_attachment WHERE table_name = 'bf_attached'::regclass;
SELECT try($$SELECT dfend_enqueue_backfill('bf_attached')$$);

-- Errors, all raised before anything is sent, with their SQLSTATEs.
SELECT try($$CALL dfend_backfill('bf_missing')$$);
SELECT try($$CALL dfend_backfill('bf_users')$$);
SELECT try($$CALL dfend_backfill('bf_users', user_id_column => 'id', id_column => 'nope')$$);
SELECT try($$CALL dfend_backfill('bf_users', user_id_column => 'id', id_column => 'id')$$);
CREATE TABLE bf_types (id integer PRIMARY KEY, n integer, j json, dfend_id text);
SELECT try($$CALL dfend_backfill('bf_types', user_id_column => 'id', id_column => 'n')$$);
SELECT try($$CALL dfend_backfill('bf_types', user_id_column => 'j', id_column => 'dfend_id')$$);
SELECT try($$CALL dfend_backfill('bf_types', user_id_column => 'id', id_column => 'dfend_id', email_column => 'n')$$);
SELECT try($$CALL dfend_backfill('bf_types', user_id_column => 'id', id_column => 'dfend_id', metadata_column => 'n')$$);
SELECT try($$CALL dfend_backfill('bf_types', batch_size => 0, user_id_column => 'id', id_column => 'dfend_id')$$);
SELECT try($$CALL dfend_backfill('bf_types', concurrency => 2000, user_id_column => 'id', id_column => 'dfend_id')$$);
SELECT try($$CALL dfend_backfill('bf_types', max_rate => 0, user_id_column => 'id', id_column => 'dfend_id')$$);
CREATE VIEW bf_view AS SELECT * FROM bf_types;
SELECT try($$CALL dfend_backfill('bf_view', user_id_column => 'id', id_column => 'dfend_id')$$);
-- A procedure that commits cannot run inside a transaction block.
BEGIN;
CALL dfend_backfill('bf_types', user_id_column => 'id', id_column => 'dfend_id');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- No index on the key: a warning, since each batch then reads the whole table.
CREATE TABLE bf_noindex (id integer, dfend_id text);
INSERT INTO bf_noindex VALUES (1), (2);
CALL dfend_backfill('bf_noindex', user_id_column => 'id', id_column => 'dfend_id');

-- Every run so far, as another session would see it (bf_resume's figures
-- depend on timing; they were checked above).
SELECT table_name, state, dry_run, pass, total, done, registered, created, existing, failed, transient
FROM dfend_backfill_progress WHERE table_name OPERATOR(pg_catalog.<>) 'bf_resume'::regclass ORDER BY run_id;

-- Privileges: nothing is granted to PUBLIC.
CREATE ROLE bf_someone;
SET ROLE bf_someone;
CALL dfend_backfill('bf_types', user_id_column => 'id', id_column => 'dfend_id');
SELECT dfend_enqueue_backfill('bf_types');
SELECT count(*) FROM dfend_backfill_progress;
SELECT count(*) FROM dfend_backfill_run;
RESET ROLE;
DROP ROLE bf_someone;
-- A role given EXECUTE and access to dfend's tables can backfill the tables
-- it may update.
\! test/emu reset
CREATE ROLE bf_dba;
GRANT EXECUTE ON PROCEDURE dfend_backfill(regclass, integer, integer, float8, boolean, boolean, name, name, name, name, name, text) TO bf_dba;
GRANT EXECUTE ON FUNCTION dfend_backfill_batch(regclass, name, name, name, name, name, boolean, text, boolean, integer, integer, float8, boolean, integer, text, boolean) TO bf_dba;
GRANT EXECUTE ON FUNCTION dfend_internal_count_missing(regclass, name, name) TO bf_dba;
GRANT SELECT ON dfend_attachment, dfend_backfill_progress TO bf_dba;
GRANT SELECT, INSERT ON dfend_outbox TO bf_dba;
GRANT SELECT, INSERT, UPDATE, DELETE ON dfend_backfill_run TO bf_dba;
GRANT USAGE ON SEQUENCE dfend_outbox_entry_id_seq, dfend_backfill_run_run_id_seq TO bf_dba;
CREATE TABLE bf_owned (id integer PRIMARY KEY, email text, dfend_id text);
INSERT INTO bf_owned VALUES (1, 'one@example.com'), (2, 'two@'), (3, NULL);
ALTER TABLE bf_owned OWNER TO bf_dba;
SET ROLE bf_dba;
-- Row 2 is registered without its email: recording that needs no grant.
CALL dfend_backfill('bf_owned', user_id_column => 'id', id_column => 'dfend_id', email_column => 'email');
SELECT count(dfend_id) AS stored FROM bf_owned;
SELECT try($$CALL dfend_backfill('bf_types', user_id_column => 'id', id_column => 'dfend_id')$$);
SELECT try($$SELECT count(*) FROM dfend_dropped_field$$);
RESET ROLE;
SELECT user_id, field FROM dfend_dropped_field WHERE table_name = 'bf_owned'::regclass;
DELETE FROM dfend_outbox WHERE table_name = 'bf_owned'::regclass;
DROP OWNED BY bf_dba;
DROP ROLE bf_dba;

