-- A LATIN1 database: every path that sends DFend a user sends UTF-8 (the
-- direct call, the async outbox, a sync COMMIT, CALL dfend_backfill and
-- dfend_enqueue_backfill), so a user id or metadata with characters outside
-- ASCII is registered, found again, and never dead-lettered. The client
-- speaks UTF-8; the database stores LATIN1. (Characters LATIN1 lacks cannot
-- be stored here; replies that carry them: sql/replies.sql.)
\set regress_db :DBNAME
CREATE DATABASE dfend_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c dfend_latin1
\encoding UTF8
SET client_min_messages = warning; -- attach's NOTICE depends on the setup
CREATE EXTENSION dfend;
SHOW server_encoding;
\! test/emu reset

-- The direct call.
SELECT id LIKE 'idn_%' AS registered
FROM dfend_register_identity('rené', metadata => '{"name": "René"}');
SELECT dfend_get_identity('rené')->'metadata' AS metadata;

-- Async: the outbox, drained by dfend_process_queue.
CREATE TABLE users (id text PRIMARY KEY, email text, meta jsonb, dfend_id text);
SELECT dfend_attach('users', 'id', 'dfend_id', 'email', metadata_column => 'meta');
INSERT INTO users VALUES ('josé', 'jose@example.com', '{"name": "José"}');
SELECT dfend_process_queue();
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM users;
SELECT dfend_get_identity('josé')->'metadata' AS metadata,
       dfend_get_identity('josé')->>'id' = (SELECT dfend_id FROM users) AS same_id;

-- Sync: the id is on the row when COMMIT returns, and nothing is queued.
CREATE TABLE signups (id text PRIMARY KEY, meta jsonb, dfend_id text);
SELECT dfend_attach('signups', 'id', 'dfend_id', metadata_column => 'meta', mode => 'sync',
                    on_error => 'error');
INSERT INTO signups VALUES ('zoë', '{"city": "Zürich", "note": "ça va"}');
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM signups;
SELECT count(*) AS queued FROM dfend_outbox WHERE table_name = 'signups'::regclass;
SELECT dfend_get_identity('zoë')->'metadata' AS metadata;

-- CALL dfend_backfill on rows that exist before any attachment.
CREATE TABLE accounts (login text PRIMARY KEY, meta jsonb, dfend_id text);
INSERT INTO accounts VALUES ('añón', '{"name": "Ñandú"}'), ('b-1', '{"name": "Bjørn"}'),
                            ('b-2', '{"name": "Ægir"}');
CALL dfend_backfill('accounts', user_id_column => 'login', id_column => 'dfend_id',
                    metadata_column => 'meta');
SELECT login, dfend_id LIKE 'idn_%' AS has_id FROM accounts ORDER BY login;
SELECT state, total, registered, failed FROM dfend_backfill_progress;
SELECT login, dfend_get_identity(login)->'metadata' AS metadata FROM accounts ORDER BY login;

-- dfend_enqueue_backfill: rows written before the attachment, through the
-- outbox.
CREATE TABLE members (id text PRIMARY KEY, meta jsonb, dfend_id text);
INSERT INTO members VALUES ('søren', '{"name": "Søren"}');
SELECT dfend_attach('members', 'id', 'dfend_id', metadata_column => 'meta');
SELECT dfend_enqueue_backfill('members');
SELECT dfend_process_queue();
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM members;
SELECT user_id, found, identity->'metadata' AS metadata
FROM dfend_get_identities(ARRAY['søren', 'josé', 'nobody']) ORDER BY ordinality;

-- Nothing failed or was left out (metadata that is not valid UTF-8 would be
-- dropped, invalid_fields 'drop'), and DFend holds each user id as its UTF-8
-- characters (the emulator's JSON, ASCII-escaped).
SELECT count(*) AS dead FROM dfend_dead_letters;
SELECT count(*) AS dropped FROM dfend_dropped_field;
SELECT count(*) AS outbox FROM dfend_outbox;
\! curl -sf "$DFEND_EMULATOR_URL/admin/identities" | /usr/bin/python3 -c 'import json, sys; print(json.dumps(sorted(i["userId"] for i in json.load(sys.stdin))))'

\c :regress_db
DROP DATABASE dfend_latin1;
