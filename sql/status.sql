-- dfend_user_status and dfend_table_status: what an application role can
-- learn about its users' DFend ids, and who may ask; the monitoring grants.
\! test/emu reset
SET client_min_messages = warning;

CREATE TABLE app_users (id bigint PRIMARY KEY, email text, dfend_id text);
-- Never queued: inserted before the table was attached ...
INSERT INTO app_users (id, email) VALUES (1, 'before@example.com');
SELECT dfend_attach('app_users', 'id', 'dfend_id', email_column => 'email', invalid_fields => 'reject');
-- ... or while its trigger was disabled.
ALTER TABLE app_users DISABLE TRIGGER dfend_insert;
INSERT INTO app_users (id, email) VALUES (6, 'bulk@example.com');
ALTER TABLE app_users ENABLE TRIGGER dfend_insert;

-- Stored.
INSERT INTO app_users (id, email) VALUES (2, 'stored@example.com');
-- Dead: refused by local validation.
INSERT INTO app_users (id, email) VALUES (3, 'not-an-email');
SELECT dfend_process_queue();
-- Pending: DFend answers 503, the entry waits for its next attempt. The
-- email change of the stored row 2 is queued as well.
\! test/emu config '{"rate_5xx": 1}'
SET dfend.max_retries = 0;
INSERT INTO app_users (id, email) VALUES (4, 'later@example.com');
UPDATE app_users SET email = 'stored.new@example.com' WHERE id = 2;
SELECT dfend_process_queue();
RESET dfend.max_retries;
\! test/emu config '{"rate_5xx": 0}'

-- The outbox sees two pending entries and one dead, nothing of rows 1 and 6.
SELECT pending, dead FROM dfend_queue_status;

-- Per user: every state, with the entry's attempts and error.
SELECT u.id, s.state, s.id LIKE 'idn_%' AS has_id, s.attempts,
       s.next_attempt_at > now() AS waits, s.last_error, s.enqueued_at IS NOT NULL AS queued
FROM generate_series(1, 7) AS u(id), dfend_user_status('app_users', u.id::text) AS s
ORDER BY u.id;
-- The stored id is the row's.
SELECT (dfend_user_status('app_users', '2')).id = dfend_id AS same_id FROM app_users WHERE id = 2;
-- Overloads: integer, bigint, text that reads as the key's type.
SELECT (dfend_user_status('app_users', 3)).state AS integer_key,
       (dfend_user_status('app_users', 3::bigint)).state AS bigint_key,
       (dfend_user_status('app_users', '003')).state AS text_key;
SELECT try($$SELECT dfend_user_status('app_users', 'abc')$$);

-- Per table: every row once. rows = stored + without_id, and without_id =
-- pending + dead + not_queued; the pending update of row 2 is no row
-- without an id.
SELECT rows, stored, without_id, pending, dead, not_queued,
       oldest_pending_age >= interval '0' AS has_age
FROM dfend_table_status('app_users');
-- dfend_enqueue_backfill queues what the status called not queued.
SELECT dfend_enqueue_backfill('app_users');
SELECT rows, stored, without_id, pending, dead, not_queued FROM dfend_table_status('app_users');
SELECT state FROM dfend_user_status('app_users', 6);
UPDATE dfend_outbox SET next_attempt_at = now();
SELECT dfend_process_queue();
SELECT rows, stored, without_id, pending, dead, not_queued, oldest_pending_age
FROM dfend_table_status('app_users');

-- Tables it does not answer for.
CREATE TABLE unattached (id bigint PRIMARY KEY, dfend_id text);
SELECT try($$SELECT dfend_table_status('unattached')$$);
SELECT try($$SELECT dfend_user_status('unattached', 1)$$);
SELECT try($$SELECT dfend_table_status('dfend_outbox')$$);

-- An application role with the documented grants (README, "Status").
CREATE ROLE dfend_app;
GRANT SELECT, INSERT ON app_users TO dfend_app;
GRANT EXECUTE ON FUNCTION dfend_user_status(regclass, text), dfend_user_status(regclass, bigint),
    dfend_user_status(regclass, integer), dfend_user_status(regclass, uuid),
    dfend_table_status(regclass) TO dfend_app;
SET ROLE dfend_app;
INSERT INTO app_users (id, email) VALUES (8, 'app@example.com');
SELECT state, last_error FROM dfend_user_status('app_users', 8);
SELECT state, last_error FROM dfend_user_status('app_users', 3);
SELECT rows, pending, dead, not_queued FROM dfend_table_status('app_users');
-- The outbox itself stays closed to it.
SELECT try($$SELECT count(*) FROM dfend_outbox$$);
SELECT try($$SELECT count(*) FROM dfend_dead_letters$$);
RESET ROLE;

-- A role granted EXECUTE but not SELECT learns nothing: the same refusal
-- for an attached and an unattached table, for an existing and a missing
-- user id, for a well-formed and a malformed one.
CREATE ROLE dfend_stranger;
GRANT EXECUTE ON FUNCTION dfend_user_status(regclass, text), dfend_user_status(regclass, integer),
    dfend_table_status(regclass) TO dfend_stranger;
SET ROLE dfend_stranger;
SELECT try_verbose($$SELECT dfend_user_status('app_users', 2)$$);
SELECT try_verbose($$SELECT dfend_user_status('app_users', 99)$$);
SELECT try_verbose($$SELECT dfend_user_status('app_users', 'abc')$$);
SELECT try_verbose($$SELECT dfend_table_status('app_users')$$);
SELECT try_verbose($$SELECT dfend_table_status('unattached')$$);
RESET ROLE;

-- Column grants: SELECT on the user id and id columns is enough; on other
-- columns it is not.
GRANT SELECT (id, dfend_id) ON app_users TO dfend_stranger;
SET ROLE dfend_stranger;
SELECT state FROM dfend_user_status('app_users', 2);
SELECT not_queued FROM dfend_table_status('app_users');
RESET ROLE;
REVOKE SELECT (dfend_id) ON app_users FROM dfend_stranger;
SET ROLE dfend_stranger;
SELECT try($$SELECT dfend_user_status('app_users', 2)$$);
RESET ROLE;

-- Row-level security: the status reads every row, so a role that policies
-- restrict is refused; the table's owner (a superuser here) is not.
ALTER TABLE app_users ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_even ON app_users FOR SELECT USING (id % 2 = 0);
SET ROLE dfend_app;
SELECT count(*) AS visible FROM app_users;
SELECT try_verbose($$SELECT dfend_user_status('app_users', 3)$$);
RESET ROLE;
SELECT state FROM dfend_user_status('app_users', 3);
DROP POLICY only_even ON app_users;
ALTER TABLE app_users DISABLE ROW LEVEL SECURITY;

-- A table owned by another role is read as its owner, with the caller's
-- rights checked: its owner may ask, a role it grants nothing may not.
CREATE ROLE dfend_owner;
CREATE TABLE owned_users (id text PRIMARY KEY, dfend_id varchar(40));
ALTER TABLE owned_users OWNER TO dfend_owner;
SELECT dfend_attach('owned_users', 'id', 'dfend_id');
INSERT INTO owned_users (id) VALUES ('o-1');
GRANT EXECUTE ON FUNCTION dfend_user_status(regclass, text), dfend_table_status(regclass)
    TO dfend_owner;
SET ROLE dfend_owner;
SELECT state, attempts FROM dfend_user_status('owned_users', 'o-1');
SELECT rows, pending FROM dfend_table_status('owned_users');
RESET ROLE;
SET ROLE dfend_app;
SELECT try($$SELECT dfend_table_status('owned_users')$$);
RESET ROLE;
SELECT dfend_process_queue();
SELECT state, id LIKE 'idn_%' AS has_id FROM dfend_user_status('owned_users', 'o-1');
-- Whatever of the owner's runs while the rows are read (here a policy the
-- owner is forced to obey) runs as the owner, not as the superuser asking.
CREATE TABLE who_read (role name, superuser boolean);
GRANT INSERT ON who_read TO dfend_owner;
CREATE FUNCTION note_reader() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.who_read SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    RETURN true;
END $$;
CREATE POLICY note_reader ON owned_users USING (note_reader());
ALTER TABLE owned_users ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
SELECT state FROM dfend_user_status('owned_users', 'o-1');
SELECT stored FROM dfend_table_status('owned_users');
SELECT DISTINCT role, superuser FROM who_read;
-- The owner itself now obeys a policy: refused like any restricted role.
SET ROLE dfend_owner;
SELECT try($$SELECT dfend_table_status('owned_users')$$);
RESET ROLE;

-- A monitoring role: a member of pg_monitor reads the queue, the worker and
-- the backfills by default; dead letters only with the documented grant.
CREATE ROLE dfend_monitor IN ROLE pg_monitor;
SET ROLE dfend_monitor;
SELECT pending, dead FROM dfend_queue_status;
SELECT worker_state IS NOT NULL AS has_state FROM dfend_worker_status();
SELECT count(*) >= 0 AS reads_progress FROM dfend_backfill_progress;
SELECT try($$SELECT count(*) FROM dfend_dead_letters$$);
SELECT try($$SELECT count(*) FROM dfend_outbox$$);
SELECT try($$SELECT dfend_table_status('app_users')$$);
RESET ROLE;
GRANT SELECT ON dfend_dead_letters TO dfend_monitor;
SET ROLE dfend_monitor;
SELECT user_id, last_error FROM dfend_dead_letters ORDER BY entry_id;
RESET ROLE;
-- A role outside pg_monitor gets none of it.
SET ROLE dfend_stranger;
SELECT try($$SELECT count(*) FROM dfend_queue_status$$);
SELECT try($$SELECT dfend_worker_status()$$);
RESET ROLE;

-- Clean up.
SELECT dfend_detach('app_users');
SELECT dfend_detach('owned_users');
DROP TABLE app_users, unattached, owned_users, who_read;
DROP FUNCTION note_reader();
REVOKE ALL ON dfend_dead_letters FROM dfend_monitor;
REVOKE ALL ON FUNCTION dfend_user_status(regclass, text), dfend_user_status(regclass, bigint),
    dfend_user_status(regclass, integer), dfend_user_status(regclass, uuid),
    dfend_table_status(regclass) FROM dfend_app, dfend_stranger, dfend_owner;
DROP ROLE dfend_app, dfend_stranger, dfend_owner, dfend_monitor;
