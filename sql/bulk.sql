-- dfend_insert as a statement trigger: one call per INSERT or COPY, which
-- queues every row of its transition table (the rows the statement
-- inserted) with one entry each, or, for more than 64 rows into an async
-- table, 1,000 user ids to a row of dfend_outbox_bulk. A partitioned table
-- keeps a row trigger.
-- (No worker serves this database: the queue is drained explicitly.)
\! test/emu reset
SET client_min_messages = warning;

CREATE TABLE bulk_users (id bigint UNIQUE, email text, dfend_id text);
SELECT dfend_attach('bulk_users', 'id', 'dfend_id', email_column => 'email');
-- Its entries (other tests may leave entries of their own).
CREATE TEMP VIEW bulk_entries AS
SELECT * FROM dfend_outbox WHERE table_name = 'bulk_users'::regclass OFFSET 0;
-- tgtype 4: AFTER INSERT, FOR EACH STATEMENT; dfend_update stays a row trigger.
SELECT tgname, tgtype, tgnewtable, tgoldtable FROM pg_trigger
WHERE tgrelid = 'bulk_users'::regclass ORDER BY tgname;

-- A multi-row INSERT: one entry per row, in the rows' order. A row without
-- a user id or with its DFend id already set needs none. Each entry holds
-- what the row trigger wrote: due at the transaction's start.
BEGIN;
INSERT INTO bulk_users (id, email, dfend_id) VALUES
    (1, 'one@example.com', NULL), (2, 'two@example.com', NULL),
    (NULL, 'nobody@example.com', NULL), (3, 'three@example.com', 'idn_restored'),
    (4, 'four@example.com', NULL);
SELECT user_id, reason, state, attempts, next_attempt_at = now() AS due_now,
       enqueued_at = now() AS enqueued_now, last_error, missing_since
FROM bulk_entries ORDER BY entry_id;
COMMIT;
DELETE FROM bulk_users WHERE id IS NULL;
SELECT dfend_process_queue();
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM bulk_users ORDER BY id;

-- A statement that inserts no row queues nothing and sends nothing.
INSERT INTO bulk_users SELECT g, 'x@example.com' FROM generate_series(1, 0) g;
INSERT INTO bulk_users VALUES (1, 'again@example.com') ON CONFLICT DO NOTHING;
SELECT count(*) AS entries FROM bulk_entries;

-- Bulk: a 100-row and a 10-row INSERT ... SELECT. The 100 rows' user ids
-- go in one row of dfend_outbox_bulk, in the rows' order, queued at the
-- transaction's start; the 10 rows keep an entry each. Each row is queued
-- exactly once.
CREATE TEMP TABLE queue_before AS SELECT pending, due FROM dfend_queue_status;
CREATE TEMP VIEW bulk_rows AS
SELECT * FROM dfend_outbox_bulk WHERE table_name = 'bulk_users'::regclass OFFSET 0;
BEGIN;
INSERT INTO bulk_users (id, email)
SELECT g, 'bulk' || g || '@example.com' FROM generate_series(101, 200) g;
INSERT INTO bulk_users (id, email)
SELECT g, 'bulk' || g || '@example.com' FROM generate_series(201, 210) g;
SELECT cardinality(user_ids) AS user_count, user_ids[1] AS first, user_ids[100] AS last,
       user_ids = ARRAY(SELECT g::text FROM generate_series(101, 200) g) AS in_row_order,
       reason, enqueued_at = now() AS enqueued_now
FROM bulk_rows;
SELECT count(*) AS entries, min(user_id::int) AS first, max(user_id::int) AS last,
       bool_and(reason = 'insert' AND state = 'pending') AS all_pending_inserts
FROM bulk_entries;
SELECT count(*) AS queued, count(DISTINCT user_id) AS users,
       min(user_id::int) AS first, max(user_id::int) AS last
FROM (SELECT user_id FROM bulk_entries
      UNION ALL SELECT unnest(user_ids) FROM bulk_rows) q;
COMMIT;
-- Everything that reports pending entries counts the bulk row's users.
SELECT q.pending - b.pending AS pending_added, q.due - b.due AS due_added,
       q.oldest_pending_age IS NOT NULL AS has_oldest
FROM dfend_queue_status q, queue_before b;
SELECT rows, stored, without_id, pending, dead, not_queued,
       oldest_pending_age IS NOT NULL AS has_oldest
FROM dfend_table_status('bulk_users');
SELECT u.id, s.state, s.attempts, s.next_attempt_at = s.enqueued_at AS due_since_queued,
       s.last_error
FROM (VALUES (101), (200), (205)) AS u(id), dfend_user_status('bulk_users', u.id) AS s;
-- The queue expands the bulk row into entries and drains them: every row
-- gets its id, with one request each, and nothing is left.
\set before `test/emu stat posts`
SELECT dfend_process_queue();
\set after `test/emu stat posts`
SELECT :after - :before AS posts_sent;
SELECT count(*) AS rows, count(*) FILTER (WHERE dfend_id LIKE 'idn_%') AS with_id
FROM bulk_users WHERE id BETWEEN 101 AND 210;
SELECT (SELECT count(*) FROM bulk_rows) AS bulk_rows_left,
       (SELECT count(*) FROM bulk_entries) AS entries_left,
       (SELECT q.pending - b.pending FROM dfend_queue_status q, queue_before b) AS pending_added;

-- 2,500 rows: three bulk rows of 1,000, 1,000 and 500 ids. Expanding one
-- makes an ordinary pending entry per id, in the ids' order, due since the
-- statement's transaction began (dfend_process_queue(1) expands the oldest
-- row, then sends its first entry).
INSERT INTO bulk_users (id, email)
SELECT g, 'bulk' || g || '@example.com' FROM generate_series(1001, 3500) g;
SELECT bulk_id - min(bulk_id) OVER () AS n, cardinality(user_ids) AS user_count,
       user_ids[1] AS first FROM bulk_rows ORDER BY bulk_id;
SELECT dfend_process_queue(1);
SELECT count(*) AS entries, min(user_id::int) AS first, max(user_id::int) AS last,
       count(DISTINCT user_id) AS users,
       bool_and(reason = 'insert' AND state = 'pending' AND attempts = 0
                AND next_attempt_at = enqueued_at) AS all_pending_inserts,
       count(DISTINCT enqueued_at) AS enqueued_times
FROM bulk_entries;
SELECT bool_and(ordered) AS in_row_order FROM (
    SELECT entry_id > lag(entry_id) OVER (ORDER BY user_id::bigint) AS ordered
    FROM bulk_entries) s WHERE ordered IS NOT NULL;
SELECT count(*) AS bulk_rows_left, sum(cardinality(user_ids)) AS ids FROM bulk_rows;
-- The status functions count either form once.
SELECT pending FROM dfend_table_status('bulk_users');
DELETE FROM dfend_outbox WHERE table_name = 'bulk_users'::regclass;
DELETE FROM dfend_outbox_bulk WHERE table_name = 'bulk_users'::regclass;
DELETE FROM bulk_users WHERE id > 1000;

-- A rolled-back bulk insert, or one in a rolled-back savepoint, leaves
-- nothing behind.
BEGIN;
INSERT INTO bulk_users (id, email) SELECT g, 'r@example.com' FROM generate_series(5001, 5100) g;
ROLLBACK;
BEGIN;
INSERT INTO bulk_users (id, email) VALUES (5200, 'kept@example.com');
SAVEPOINT s;
INSERT INTO bulk_users (id, email) SELECT g, 'r@example.com' FROM generate_series(5001, 5100) g;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT (SELECT count(*) FROM bulk_rows) AS bulk_rows,
       (SELECT string_agg(user_id, ',') FROM bulk_entries) AS entries;
DELETE FROM dfend_outbox WHERE table_name = 'bulk_users'::regclass;
DELETE FROM bulk_users WHERE id > 1000;

-- Keys in a bulk row are pending: dfend_enqueue_backfill queues only the
-- rows that have neither an entry nor a bulk row (here the 5 rows inserted
-- before the table was attached).
CREATE TABLE later_users (id int PRIMARY KEY, email text, dfend_id text);
INSERT INTO later_users SELECT g, 'l' || g || '@example.com' FROM generate_series(1, 5) g;
SELECT dfend_attach('later_users', 'id', 'dfend_id', email_column => 'email');
INSERT INTO later_users SELECT g, 'l' || g || '@example.com' FROM generate_series(6, 105) g;
SELECT dfend_enqueue_backfill('later_users');
SELECT not_queued, pending FROM dfend_table_status('later_users');
-- dfend_detach removes the table's bulk rows and entries, and says how
-- many users it discarded; DROP TABLE does the same.
SET client_min_messages = notice;
SELECT dfend_detach('later_users');
SET client_min_messages = warning;
SELECT (SELECT count(*) FROM dfend_outbox_bulk WHERE table_name = 'later_users'::regclass) AS bulk_rows,
       (SELECT count(*) FROM dfend_outbox WHERE table_name = 'later_users'::regclass) AS entries;
SELECT dfend_attach('later_users', 'id', 'dfend_id', email_column => 'email');
INSERT INTO later_users SELECT g, 'l' || g || '@example.com' FROM generate_series(106, 205) g;
SELECT count(*) AS bulk_rows FROM dfend_outbox_bulk WHERE table_name = 'later_users'::regclass;
CREATE TEMP TABLE later_oid AS SELECT 'later_users'::regclass::oid AS oid;
DROP TABLE later_users;
SELECT count(*) AS bulk_rows_left FROM dfend_outbox_bulk, later_oid
WHERE table_name::oid = later_oid.oid;

-- COPY: one call for the whole COPY, an entry per row.
COPY bulk_users (id, email) FROM STDIN;
11	c11@example.com
12	c12@example.com
13	\N
\.
SELECT user_id FROM bulk_entries ORDER BY entry_id;

-- INSERT ... ON CONFLICT DO UPDATE: inserted rows are queued by dfend_insert,
-- updated rows whose mapped columns change by dfend_update.
INSERT INTO bulk_users (id, email) VALUES (12, 'changed12@example.com'), (14, 'c14@example.com'),
    (1, 'one@example.com')
ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email;
SELECT user_id, reason FROM bulk_entries ORDER BY entry_id;

-- MERGE: the rows it inserts, once each (and the rows it changes, by
-- dfend_update).
MERGE INTO bulk_users u
USING (VALUES (14, 'm14@example.com'), (15, 'c15@example.com')) AS s(id, email) ON u.id = s.id
WHEN MATCHED THEN UPDATE SET email = s.email
WHEN NOT MATCHED THEN INSERT (id, email) VALUES (s.id, s.email);
SELECT user_id, reason FROM bulk_entries WHERE user_id IN ('14', '15') ORDER BY entry_id;

-- Several INSERTs into the table in one query: each row once.
WITH a AS (INSERT INTO bulk_users (id, email) VALUES (21, 'c21@example.com')),
     b AS (INSERT INTO bulk_users (id, email) VALUES (22, 'c22@example.com'), (23, 'c23@example.com'))
SELECT 1 AS inserted;
SELECT user_id, count(*) FROM bulk_entries WHERE user_id::int > 20 GROUP BY 1 ORDER BY 1;

-- A rolled-back savepoint takes its statement's entries with it.
BEGIN;
INSERT INTO bulk_users (id, email) VALUES (31, 'c31@example.com');
SAVEPOINT s;
INSERT INTO bulk_users (id, email) SELECT g, 'r@example.com' FROM generate_series(32, 40) g;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT user_id FROM bulk_entries WHERE user_id::int > 30 ORDER BY 1;

-- The owner's BEFORE trigger changes the row: the stored row is queued.
CREATE FUNCTION bulk_shift() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.id := NEW.id + 1000; RETURN NEW; END $$;
CREATE TRIGGER shift BEFORE INSERT ON bulk_users FOR EACH ROW EXECUTE FUNCTION bulk_shift();
INSERT INTO bulk_users (id, email) VALUES (51, 'c51@example.com'), (52, 'c52@example.com');
DROP TRIGGER shift ON bulk_users;
SELECT user_id FROM bulk_entries WHERE user_id::int > 1000 ORDER BY 1;
SELECT dfend_process_queue();
SELECT count(*) FILTER (WHERE dfend_id IS NULL) AS without_id,
       count(*) FILTER (WHERE email IS NULL) AS without_email FROM bulk_users;

-- A user id too long to register: the statement fails, nothing is queued.
CREATE TABLE text_users (id text PRIMARY KEY, dfend_id text);
SELECT dfend_attach('text_users', 'id', 'dfend_id');
SELECT try($$INSERT INTO text_users (id) VALUES ('ok'), (repeat('x', 70000))$$);
SELECT count(*) AS entries FROM dfend_outbox WHERE table_name = 'text_users'::regclass;
-- A float user id is queued in its shortest exact form, whatever the
-- session's extra_float_digits, as the row trigger does.
CREATE TABLE float_users (id float8 PRIMARY KEY, dfend_id text);
SELECT dfend_attach('float_users', 'id', 'dfend_id');
SET extra_float_digits = 3;
INSERT INTO float_users (id) VALUES (0.1), (1e300), (-2.5);
RESET extra_float_digits;
SELECT user_id FROM dfend_outbox WHERE table_name = 'float_users'::regclass ORDER BY entry_id;
SELECT dfend_detach('float_users');
SELECT dfend_detach('text_users');

-- A partitioned table: a row trigger, cloned on its partitions; rows
-- inserted through it or into a partition are queued under it.
CREATE TABLE bulk_parted (id int PRIMARY KEY, email text, dfend_id text) PARTITION BY RANGE (id);
CREATE TABLE bulk_parted_low PARTITION OF bulk_parted FOR VALUES FROM (0) TO (100);
SELECT dfend_attach('bulk_parted', 'id', 'dfend_id', email_column => 'email');
CREATE TABLE bulk_parted_high PARTITION OF bulk_parted FOR VALUES FROM (100) TO (200);
SELECT tgrelid::regclass, tgtype FROM pg_trigger
WHERE tgname = 'dfend_insert' AND tgrelid::regclass::text LIKE 'bulk_parted%' ORDER BY 1;
INSERT INTO bulk_parted SELECT g, 'p' || g || '@example.com' FROM generate_series(98, 101) g;
INSERT INTO bulk_parted_high VALUES (150, 'p150@example.com');
SELECT table_name, string_agg(user_id, ',' ORDER BY entry_id) AS users
FROM dfend_outbox WHERE table_name = 'bulk_parted'::regclass GROUP BY 1;
SELECT dfend_process_queue();
SELECT count(dfend_id) AS with_id FROM bulk_parted;

-- A sync table: COMMIT registers every row of a multi-row INSERT, an
-- INSERT ... SELECT (of 98 rows: a sync table writes no bulk rows, since
-- COMMIT finds its entries by their ids) and a COPY, and leaves no entry
-- behind.
CREATE TABLE bulk_signups (id text PRIMARY KEY, email text, dfend_id text);
SELECT dfend_attach('bulk_signups', 'id', 'dfend_id', email_column => 'email', mode => 'sync');
\set before `test/emu stat posts`
-- A budget no loaded test machine runs out of: this counts rows, not time.
SET dfend.sync_timeout = '20s';
INSERT INTO bulk_signups (id, email) VALUES ('s-1', 's1@example.com'), ('s-2', 's2@example.com');
BEGIN;
INSERT INTO bulk_signups (id, email) SELECT 's-' || g, 's' || g || '@example.com' FROM generate_series(3, 100) g;
INSERT INTO bulk_signups (id, email) SELECT 's-' || g, 's' || g || '@example.com' FROM generate_series(101, 100) g;
COPY bulk_signups (id, email) FROM STDIN;
s-101	s101@example.com
s-102	s102@example.com
\.
SELECT count(*) AS entries_before_commit FROM dfend_outbox
WHERE table_name = 'bulk_signups'::regclass;
SELECT count(*) AS bulk_rows FROM dfend_outbox_bulk WHERE table_name = 'bulk_signups'::regclass;
COMMIT;
\set after `test/emu stat posts`
SELECT :after - :before AS posts_sent;
SELECT count(*) AS signups, count(*) FILTER (WHERE dfend_id LIKE 'idn_%') AS with_id
FROM bulk_signups;
SELECT count(*) AS entries_left FROM dfend_outbox
WHERE table_name = 'bulk_signups'::regclass;

-- Attacks: an owner of an attached table who replaces dfend_insert (or adds
-- a trigger of the same function) gets a refusal, never more entries than
-- rows inserted, and never runs code with dfend's rights.
CREATE ROLE dfend_bulk_owner;
GRANT CREATE ON SCHEMA public TO dfend_bulk_owner;
SET ROLE dfend_bulk_owner;
CREATE TABLE owned_users (id int PRIMARY KEY, email text, dfend_id text);
RESET ROLE;
SELECT dfend_attach('public.owned_users', 'id', 'dfend_id', 'email');
SET ROLE dfend_bulk_owner;
-- The attachment's arguments, for the forged triggers.
\set args '''async'', ''id'', ''dfend_id'', ''email'', '''', '''', ''f'', ''queue'''
DROP TRIGGER dfend_insert ON owned_users;
-- A statement trigger without the transition table.
CREATE TRIGGER dfend_insert AFTER INSERT ON owned_users FOR EACH STATEMENT
    EXECUTE FUNCTION dfend_trigger(:args);
SELECT try_verbose($$INSERT INTO owned_users VALUES (1, 'o1@example.com')$$);
DROP TRIGGER dfend_insert ON owned_users;
-- A statement trigger with a WHEN clause.
CREATE TRIGGER dfend_insert AFTER INSERT ON owned_users REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT WHEN (random() < 2) EXECUTE FUNCTION dfend_trigger(:args);
SELECT try_verbose($$INSERT INTO owned_users VALUES (1, 'o1@example.com')$$);
DROP TRIGGER dfend_insert ON owned_users;
-- A row trigger with a transition table: each row's call would see all rows.
CREATE TRIGGER dfend_insert AFTER INSERT ON owned_users REFERENCING NEW TABLE AS n
    FOR EACH ROW EXECUTE FUNCTION dfend_trigger(:args);
SELECT try_verbose($$INSERT INTO owned_users VALUES (1, 'o1@example.com'), (2, 'o2@example.com')$$);
DROP TRIGGER dfend_insert ON owned_users;
-- A statement trigger on UPDATE, under either name.
CREATE TRIGGER dfend_insert AFTER UPDATE ON owned_users REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION dfend_trigger(:args);
DROP TRIGGER dfend_update ON owned_users;
CREATE TRIGGER dfend_update AFTER UPDATE ON owned_users REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION dfend_trigger(:args);
INSERT INTO owned_users VALUES (1, 'o1@example.com');
SELECT try_verbose($$UPDATE owned_users SET email = 'x@example.com'$$);
DROP TRIGGER dfend_insert ON owned_users;
DROP TRIGGER dfend_update ON owned_users;
-- A statement trigger under another name, or on a table not attached.
CREATE TRIGGER zz_more AFTER INSERT ON owned_users REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION dfend_trigger(:args);
SELECT try_verbose($$INSERT INTO owned_users VALUES (3, 'o3@example.com')$$);
DROP TRIGGER zz_more ON owned_users;
CREATE TABLE unattached (id int PRIMARY KEY, email text, dfend_id text);
CREATE TRIGGER dfend_insert AFTER INSERT ON unattached REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION dfend_trigger(:args);
SELECT try_verbose($$INSERT INTO unattached VALUES (1, 'u1@example.com')$$);
-- An inheritance child of the attached table, with the parent's trigger.
CREATE TABLE owned_child () INHERITS (owned_users);
CREATE TRIGGER dfend_insert AFTER INSERT ON owned_child REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION dfend_trigger(:args);
SELECT try_verbose($$INSERT INTO owned_child VALUES (4, 'o4@example.com')$$);
-- Called directly, it is refused.
SELECT try($$SELECT dfend_trigger()$$);
-- The trigger the owner puts back as dfend_attach made it works again; the
-- owner's own triggers on the table run as the inserting role, not as dfend.
CREATE TRIGGER dfend_insert AFTER INSERT ON owned_users REFERENCING NEW TABLE AS dfend_inserted
    FOR EACH STATEMENT EXECUTE FUNCTION dfend_trigger(:args);
CREATE FUNCTION owned_who() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.email := current_user || '@example.com';
    RETURN NEW;
END $$;
CREATE TRIGGER who BEFORE INSERT ON owned_users FOR EACH ROW EXECUTE FUNCTION owned_who();
INSERT INTO owned_users (id) SELECT g FROM generate_series(10, 12) g;
RESET ROLE;
SELECT user_id, reason FROM dfend_outbox WHERE table_name = 'owned_users'::regclass ORDER BY entry_id;
SELECT DISTINCT email FROM owned_users WHERE id >= 10;
SELECT count(*) AS entries_elsewhere FROM dfend_outbox
WHERE table_name IN ('owned_child'::regclass, 'unattached'::regclass);
SELECT rolsuper FROM pg_roles WHERE rolname = 'dfend_bulk_owner';

SELECT dfend_detach('public.owned_users');
SELECT dfend_detach('bulk_parted');
SELECT dfend_detach('bulk_signups');
SELECT dfend_detach('bulk_users');
DROP VIEW bulk_entries, bulk_rows;
DROP TABLE owned_child, owned_users, unattached, bulk_users, bulk_parted, bulk_signups, text_users,
    float_users;
DROP FUNCTION bulk_shift();
DROP FUNCTION owned_who();
REVOKE CREATE ON SCHEMA public FROM dfend_bulk_owner;
DROP ROLE dfend_bulk_owner;
