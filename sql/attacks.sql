-- Attacks by roles dfend does not trust (see SECURITY.md): a table owner,
-- a role with INSERT on an attached table, a role granted EXECUTE. Each one
-- must fail or do nothing, and never give a role superuser rights.
-- (test/scenarios/attacks.sh covers the worker and the database owner.)
\! test/emu reset
SET client_min_messages = warning;

CREATE ROLE dfend_alice;
GRANT CREATE ON SCHEMA public TO dfend_alice;
-- What the owner's code saw: every escalation attempt records who ran it.
CREATE TABLE seen (who name, superuser boolean);
GRANT INSERT, SELECT ON seen TO PUBLIC;
CREATE FUNCTION escalate() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.seen
    SELECT current_user, r.rolsuper FROM pg_roles r WHERE r.rolname = current_user;
    IF (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
        EXECUTE 'ALTER ROLE dfend_alice SUPERUSER';
    END IF;
    RETURN true;
END $$;
ALTER FUNCTION escalate() OWNER TO dfend_alice;
CREATE VIEW escalated AS
SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = 'dfend_alice') AS alice_is_superuser,
       (SELECT count(*) FROM seen WHERE superuser) AS ran_as_superuser;

-- 2. COMMIT writes a sync table's ids through the id column's own type, as
-- the table's owner, and refuses a column that can no longer hold them.
SET ROLE dfend_alice;
CREATE TABLE sync_users (id int PRIMARY KEY, email text, dfend_id text);
RESET ROLE;
SELECT dfend_attach('public.sync_users', 'id', 'dfend_id', 'email', mode => 'sync',
                    on_error => 'error');
SET ROLE dfend_alice;
ALTER TABLE sync_users ALTER COLUMN dfend_id TYPE bigint USING NULL;
\! test/emu reset
INSERT INTO sync_users (id, email) VALUES (1, 'a1@example.com');
ALTER TABLE sync_users ALTER COLUMN dfend_id TYPE jsonb USING NULL;
INSERT INTO sync_users (id, email) VALUES (2, 'a2@example.com');
ALTER TABLE sync_users ALTER COLUMN dfend_id TYPE name USING NULL;
INSERT INTO sync_users (id, email) VALUES (3, 'a3@example.com');
-- Refused before anything was sent.
\! test/emu stat posts
ALTER TABLE sync_users ALTER COLUMN dfend_id TYPE varchar(5) USING NULL;
INSERT INTO sync_users (id, email) VALUES (4, 'a4@example.com');
-- A domain's CHECK runs as the table's owner.
CREATE DOMAIN trap_id AS text CHECK (public.escalate() AND length(VALUE) < 100);
ALTER TABLE sync_users ALTER COLUMN dfend_id TYPE trap_id USING NULL;
INSERT INTO sync_users (id, email) VALUES (5, 'a5@example.com');
SELECT id, dfend_id LIKE 'idn_%' AS has_id FROM sync_users;
RESET ROLE;
SELECT who, superuser FROM seen;
-- With on_error => 'queue' the row is kept and queued, with a WARNING.
SELECT dfend_detach('public.sync_users');
SELECT dfend_attach('public.sync_users', 'id', 'dfend_id', 'email', mode => 'sync');
SET client_min_messages = warning;
SET ROLE dfend_alice;
ALTER TABLE sync_users ALTER COLUMN dfend_id TYPE varchar(5) USING NULL;
INSERT INTO sync_users (id, email) VALUES (6, 'a6@example.com');
RESET ROLE;
SELECT id, dfend_id IS NOT NULL AS has_id FROM sync_users ORDER BY id;
SELECT user_id, state FROM dfend_outbox WHERE table_name = 'sync_users'::regclass;
SELECT dfend_detach('public.sync_users');
-- dfend_attach accepts only columns that hold ids exactly.
CREATE TABLE name_ids (id int PRIMARY KEY, dfend_id name);
SELECT try($$SELECT dfend_attach('public.name_ids', 'id', 'dfend_id')$$);
SELECT * FROM escalated;

-- 3. A backfill runs the owner's triggers, domains and casts as the owner.
SET ROLE dfend_alice;
CREATE DOMAIN trap_key AS int CHECK (public.escalate());
CREATE TABLE legacy_users (id trap_key PRIMARY KEY, email text, dfend_id text);
INSERT INTO legacy_users (id, email) SELECT g, 'legacy' || g || '@example.com'
FROM generate_series(1, 3) g;
CREATE FUNCTION legacy_trap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.escalate();
    RETURN NEW;
END $$;
CREATE TRIGGER trap BEFORE UPDATE ON legacy_users FOR EACH ROW EXECUTE FUNCTION legacy_trap();
RESET ROLE;
TRUNCATE seen;
\! test/emu reset
CALL dfend_backfill('public.legacy_users', user_id_column => 'id', id_column => 'dfend_id',
                    email_column => 'email', batch_size => 1);
SELECT count(*) AS with_id FROM legacy_users WHERE dfend_id IS NOT NULL;
SELECT DISTINCT who, superuser FROM seen;
SELECT * FROM escalated;

-- 4. dfend_enqueue_backfill and the queue on a table its owner turned into
-- a view (PostgreSQL 15 still converts an empty table with an ON SELECT
-- rule; later versions refuse, and the table stays a table).
CREATE TABLE shop_users (id int, email text, dfend_id text);
ALTER TABLE shop_users OWNER TO dfend_alice;
SELECT dfend_attach('public.shop_users', 'id', 'dfend_id', 'email');
INSERT INTO shop_users (id, email) VALUES (1, 'shop1@example.com');
DELETE FROM shop_users;
SET ROLE dfend_alice;
DROP TRIGGER dfend_insert ON shop_users;
DROP TRIGGER dfend_update ON shop_users;
SELECT try($$CREATE RULE "_RETURN" AS ON SELECT TO shop_users DO INSTEAD
             SELECT 1::int AS id, public.escalate()::text AS email, NULL::text AS dfend_id$$)
       IS NOT NULL AS rule_attempted;
RESET ROLE;
TRUNCATE seen;
SELECT CASE WHEN relkind = 'v'
            THEN try($$SELECT dfend_enqueue_backfill('public.shop_users')$$)
            ELSE '42809: public.shop_users is not a table' END AS enqueue
FROM pg_class WHERE oid = 'public.shop_users'::regclass;
SELECT dfend_process_queue();
SELECT count(*) AS seen_rows FROM seen WHERE superuser;
SELECT * FROM escalated;
SELECT dfend_detach('public.shop_users');

-- 5. One owner's table cannot poison the queue for the others: a trigger
-- raising 57014 or 40P01 itself, or a huge value, stays on its own entries.
SET ROLE dfend_alice;
CREATE TABLE poison_users (id int PRIMARY KEY, email text, dfend_id text);
CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'poisoned' USING ERRCODE = TG_ARGV[0];
END $$;
CREATE TRIGGER poison BEFORE UPDATE ON poison_users FOR EACH ROW
    EXECUTE FUNCTION poison('57014');
CREATE TABLE deadlock_users (id int PRIMARY KEY, email text, dfend_id text);
CREATE TRIGGER poison BEFORE UPDATE ON deadlock_users FOR EACH ROW
    EXECUTE FUNCTION poison('40P01');
CREATE TABLE big_users (id int PRIMARY KEY, email text, dfend_id text);
RESET ROLE;
CREATE TABLE good_users (id int PRIMARY KEY, email text, dfend_id text);
SELECT dfend_attach('public.' || t, 'id', 'dfend_id', 'email')
FROM unnest(ARRAY['poison_users', 'deadlock_users', 'big_users', 'good_users']) t;
GRANT INSERT ON big_users TO PUBLIC;
SET ROLE dfend_alice;
INSERT INTO poison_users VALUES (1, 'p1@example.com');
INSERT INTO deadlock_users VALUES (1, 'd1@example.com');
-- 1 MB of email, stored compressed: never read whole.
INSERT INTO big_users VALUES (1, repeat('x', 1000000) || '@example.com'), (2, 'b2@example.com');
RESET ROLE;
INSERT INTO good_users VALUES (1, 'g1@example.com'), (2, 'g2@example.com');
SELECT dfend_process_queue();
SELECT 'good' AS t, id, dfend_id IS NOT NULL AS has_id FROM good_users
UNION ALL SELECT 'big', id, dfend_id IS NOT NULL FROM big_users
UNION ALL SELECT 'poison', id, dfend_id IS NOT NULL FROM poison_users
UNION ALL SELECT 'deadlock', id, dfend_id IS NOT NULL FROM deadlock_users ORDER BY 1, 2;
SELECT table_name, user_id, state, attempts, last_error FROM dfend_outbox
WHERE table_name::text IN ('poison_users', 'deadlock_users', 'big_users', 'good_users')
ORDER BY entry_id;
-- The backfill reads with the same limit: a dead letter, not a big read.
DELETE FROM dfend_outbox WHERE table_name = 'big_users'::regclass;
CALL dfend_backfill('public.big_users');
SELECT user_id, last_error FROM dfend_dead_letters WHERE table_name = 'big_users'::regclass;
SELECT dfend_detach('public.' || t)
FROM unnest(ARRAY['poison_users', 'deadlock_users', 'big_users', 'good_users']) t;
SELECT * FROM escalated;

-- 9. json metadata, and partitions a table owner adds to an attached table.
CREATE TABLE json_users (id int PRIMARY KEY, email text, meta json, dfend_id text);
SELECT dfend_attach('public.json_users', 'id', 'dfend_id', 'email', metadata_column => 'meta');
INSERT INTO json_users VALUES (1, 'j1@example.com', '{"plan": "free"}');
UPDATE json_users SET meta = '{"plan": "pro"}' WHERE id = 1;
SELECT user_id, reason FROM dfend_outbox WHERE table_name = 'json_users'::regclass ORDER BY entry_id;
SELECT dfend_process_queue();
SELECT dfend_get_identity('1')->'metadata' AS metadata;
SELECT dfend_detach('public.json_users');
SET ROLE dfend_alice;
CREATE TABLE part_users (id int, email text, dfend_id text) PARTITION BY RANGE (id);
CREATE TABLE part_users_1 PARTITION OF part_users FOR VALUES FROM (0) TO (100);
RESET ROLE;
SELECT dfend_attach('public.part_users', 'id', 'dfend_id', 'email');
SET ROLE dfend_alice;
CREATE TABLE part_users_2 PARTITION OF part_users FOR VALUES FROM (100) TO (200);
INSERT INTO part_users VALUES (150, 'p150@example.com');
RESET ROLE;
SELECT table_name, user_id FROM dfend_outbox WHERE user_id = '150';
SELECT dfend_process_queue();
SELECT id, dfend_id IS NOT NULL AS has_id FROM part_users;

-- A role with EXECUTE on dfend_trigger() (PUBLIC has it, for partitions)
-- cannot make it do more than the attachment says.
SET ROLE dfend_alice;
CREATE TABLE forged (id int PRIMARY KEY, email text, dfend_id text);
CREATE TRIGGER forged BEFORE INSERT ON forged FOR EACH ROW EXECUTE FUNCTION
    dfend_trigger('sync', 'id', 'dfend_id', 'email', '', '', 'f', 'error');
CREATE TRIGGER forged BEFORE INSERT ON part_users FOR EACH ROW EXECUTE FUNCTION
    dfend_trigger('sync', 'id', 'dfend_id', 'email', '', '', 'f', 'error');
\! test/emu reset
SELECT try_verbose($$INSERT INTO forged VALUES (1, 'f1@example.com')$$);
SELECT try_verbose($$INSERT INTO part_users VALUES (2, 'f2@example.com')$$);
\! test/emu stat posts
RESET ROLE;
SELECT dfend_detach('public.part_users');
SELECT * FROM escalated;

-- A role granted the backfill functions may use them only on tables it may
-- read and update itself: they read and write as the table's owner, so the
-- caller's rights are checked first.
CREATE ROLE dfend_dba;
GRANT EXECUTE ON FUNCTION dfend_backfill_batch(regclass, name, name, name, name, name, boolean, text, boolean, integer, integer, float8, boolean, integer, text, boolean) TO dfend_dba;
GRANT EXECUTE ON FUNCTION dfend_internal_count_missing(regclass, name, name) TO dfend_dba;
GRANT EXECUTE ON FUNCTION dfend_enqueue_backfill(regclass) TO dfend_dba;
CREATE TABLE private_users (id int PRIMARY KEY, email text, dfend_id text);
INSERT INTO private_users VALUES (1, 'private@example.com');
SET ROLE dfend_dba;
SELECT try_verbose($$SELECT * FROM dfend_backfill_batch('public.private_users', 'id', 'dfend_id', 'email', NULL, NULL, false, NULL, false, 10, 1, NULL, false, 0, 'drop', false)$$);
SELECT try_verbose($$SELECT dfend_internal_count_missing('public.private_users', 'id', 'dfend_id')$$);
RESET ROLE;
GRANT SELECT ON private_users TO dfend_dba;
GRANT SELECT ON dfend_outbox TO dfend_dba;
SET ROLE dfend_dba;
SELECT dfend_internal_count_missing('public.private_users', 'id', 'dfend_id') AS readable_count;
SELECT try_verbose($$SELECT * FROM dfend_backfill_batch('public.private_users', 'id', 'dfend_id', 'email', NULL, NULL, false, NULL, false, 10, 1, NULL, false, 0, 'drop', false)$$);
-- Reading is enough for a dry run, which stores nothing.
SELECT rows, registered FROM dfend_backfill_batch('public.private_users', 'id', 'dfend_id', 'email', NULL, NULL, false, NULL, false, 10, 1, NULL, true, 0, 'drop', false);
RESET ROLE;
SELECT count(dfend_id) AS stored FROM private_users;
SELECT * FROM escalated;

-- 10. The bulk outbox (a red-team review of 0.5.0). Only dfend writes
-- dfend_outbox_bulk: its rows name the table whose trigger wrote them, and
-- hold exactly the keys that statement inserted.
CREATE ROLE dfend_writer;
SET ROLE dfend_alice;
SELECT try($$INSERT INTO dfend_outbox_bulk (table_name, user_ids) VALUES ('seen', '{1}')$$) AS bulk_insert,
       try($$UPDATE dfend_outbox_bulk SET table_name = 'seen'$$) AS bulk_update,
       try($$DELETE FROM dfend_outbox_bulk$$) AS bulk_delete,
       try($$TRUNCATE dfend_outbox_bulk$$) AS bulk_truncate,
       try($$SELECT 1 FROM dfend_outbox_bulk FOR UPDATE$$) AS bulk_lock,
       try($$SELECT nextval('dfend_outbox_bulk_bulk_id_seq')$$) AS bulk_sequence;
CREATE TABLE many_users (id trap_key PRIMARY KEY, email text, dfend_id text);
CREATE TABLE other_users (id int PRIMARY KEY, email text, dfend_id text);
-- No index on the user id: a btree entry could not hold a long one.
CREATE TABLE long_users (id text, email text, dfend_id text);
RESET ROLE;
CREATE TABLE victim_users (id int PRIMARY KEY, email text, dfend_id text);
SELECT dfend_attach('public.' || t, 'id', 'dfend_id', 'email')
FROM unnest(ARRAY['many_users', 'other_users', 'long_users', 'victim_users']) t;
GRANT INSERT ON many_users, long_users TO dfend_writer;
TRUNCATE seen;
CREATE TEMP VIEW bulk_keys AS
SELECT b.table_name, count(*) AS keys, min(u.k::int) AS first, max(u.k::int) AS last
FROM dfend_outbox_bulk b, unnest(b.user_ids) u(k) GROUP BY 1 ORDER BY 1::text;
-- A role with INSERT: a statement of 100 rows is one bulk row of the
-- table's own keys (the key's domain CHECK ran as the inserting role).
SET ROLE dfend_writer;
INSERT INTO many_users (id, email) SELECT g, 'm' || g || '@example.com' FROM generate_series(1, 100) g;
SELECT try($$SELECT count(*) FROM dfend_outbox_bulk$$) AS writer_reads_bulk;
RESET ROLE;
SELECT * FROM bulk_keys;
-- The owner forges dfend_insert on their other table with arguments its
-- attachment does not have (merge on), and inserts through a view and a
-- rule: the keys are queued under the table that holds the rows, once.
SET ROLE dfend_alice;
DROP TRIGGER dfend_insert ON other_users;
CREATE TRIGGER dfend_insert AFTER INSERT ON other_users REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION dfend_trigger('async', 'id', 'dfend_id', 'email', '', '', 't', 'queue');
SELECT try($$INSERT INTO other_users SELECT g, 'o@example.com' FROM generate_series(1, 100) g$$);
DROP TRIGGER dfend_insert ON other_users;
CREATE VIEW many_view AS SELECT * FROM many_users;
INSERT INTO many_view (id, email) SELECT g, 'v' || g || '@example.com' FROM generate_series(101, 200) g;
CREATE RULE copy_in AS ON INSERT TO other_users DO ALSO
    INSERT INTO many_users (id, email) VALUES (NEW.id + 1000, NEW.email);
INSERT INTO other_users SELECT g, 'r@example.com' FROM generate_series(1, 70) g;
DROP RULE copy_in ON other_users;
RESET ROLE;
SELECT * FROM bulk_keys;
-- Every key is registered and stored on its own row; the domain CHECK ran
-- as the owner, never as a superuser.
SELECT dfend_process_queue();
SELECT count(*) AS rows, count(dfend_id) AS with_id FROM many_users;
SELECT (SELECT count(*) FROM dfend_outbox_bulk) AS bulk_rows_left,
       (SELECT count(*) FROM victim_users) AS victim_rows;
SELECT DISTINCT who, superuser FROM seen ORDER BY 1;
-- Dropped and created again under the same name before the queue ran: the
-- old table's bulk rows go with it, and the new table gets none of them.
SET ROLE dfend_alice;
INSERT INTO many_users (id, email) SELECT g, 'd@example.com' FROM generate_series(2001, 2100) g;
RESET ROLE;
SELECT * FROM bulk_keys;
SET ROLE dfend_alice;
DROP VIEW many_view;
DROP TABLE many_users;
CREATE TABLE many_users (id int PRIMARY KEY, email text, dfend_id text);
RESET ROLE;
SELECT dfend_attach('public.many_users', 'id', 'dfend_id', 'email');
SET ROLE dfend_alice;
INSERT INTO many_users (id, email) VALUES (1, 'new1@example.com');
RESET ROLE;
SELECT * FROM bulk_keys;
SELECT table_name, user_id FROM dfend_outbox WHERE state = 'pending' ORDER BY entry_id;
SELECT dfend_process_queue();
-- A user id too long for a btree entry, which DFend refuses (more than 256
-- bytes), among 100 rows: its dead letter is kept, and the queue goes on
-- (it used to fail the statement that settles the whole batch, every
-- round, so no table got an id). A user id over 64 kB fails the INSERT.
SET ROLE dfend_writer;
INSERT INTO long_users (id, email)
SELECT CASE WHEN g = 1 THEN (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 300) i)
            ELSE 'k' || g END, 'not an email'
FROM generate_series(1, 100) g;
SELECT try($$INSERT INTO long_users (id) SELECT repeat(md5(g::text), 2100) FROM generate_series(1, 100) g$$);
RESET ROLE;
INSERT INTO victim_users VALUES (1, 'victim1@example.com'), (2, 'victim2@example.com');
SELECT try($$SELECT dfend_process_queue()$$) AS first_round, try($$SELECT dfend_process_queue()$$) AS second_round;
SELECT id, dfend_id IS NOT NULL AS has_id FROM victim_users ORDER BY id;
SELECT length(user_id) > 2704 AS too_long_for_btree, count(*), min(state) AS state
FROM dfend_outbox WHERE table_name = 'long_users'::regclass GROUP BY 1 ORDER BY 1;
SELECT length(user_id) AS user_id_length, left(last_error, 40) AS error FROM dfend_dead_letters
WHERE table_name = 'long_users'::regclass AND length(user_id) > 2704 AND user_id LIKE 'c4ca4238%';
SELECT dfend_detach('public.' || t)
FROM unnest(ARRAY['many_users', 'other_users', 'long_users', 'victim_users']) t;
SELECT * FROM escalated;

-- 11. A backfill carries unanswered rows from one batch to the next in the
-- backend's memory. The table owner's trigger, running while a batch
-- stores its ids, calls dfend_backfill_batch itself (the owner may be
-- granted it): that freed the rows the running batch carried, and crashed
-- the server. It is refused, and every row gets its own id. (Row 1's
-- request hangs for 5 s, so it is carried through the following batches.)
GRANT EXECUTE ON FUNCTION dfend_backfill_batch(regclass, name, name, name, name, name, boolean, text, boolean, integer, integer, float8, boolean, integer, text, boolean) TO dfend_alice;
SET ROLE dfend_alice;
CREATE TABLE carry_users (id int PRIMARY KEY, dfend_id text);
INSERT INTO carry_users SELECT g FROM generate_series(1, 4) g;
CREATE TABLE nested (message text);
CREATE FUNCTION nest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM * FROM public.dfend_backfill_batch(TG_RELID::regclass, 'id', 'dfend_id', NULL,
            NULL, NULL, false, NULL, false, 10, 1, NULL, true, 0, 'reject', false);
        INSERT INTO public.nested VALUES ('ran');
    EXCEPTION WHEN others THEN
        INSERT INTO public.nested VALUES (SQLSTATE || ': ' || SQLERRM);
    END;
    RETURN NEW;
END $$;
CREATE TRIGGER nest BEFORE UPDATE ON carry_users FOR EACH ROW EXECUTE FUNCTION nest();
RESET ROLE;
\! test/emu reset
\! test/emu config '{"hang_next": 1, "hang_ms": 5000}'
CREATE TEMP TABLE batches AS
SELECT 1 AS n, * FROM dfend_backfill_batch('public.carry_users', 'id', 'dfend_id', NULL, NULL, NULL, false, NULL, false, 1, 8, NULL, false, 0, 'reject', true);
INSERT INTO batches SELECT 2, * FROM dfend_backfill_batch('public.carry_users', 'id', 'dfend_id', NULL, NULL, NULL, false, '1', false, 1, 8, NULL, false, 0, 'reject', true);
INSERT INTO batches SELECT 3, * FROM dfend_backfill_batch('public.carry_users', 'id', 'dfend_id', NULL, NULL, NULL, false, '2', false, 1, 8, NULL, false, 0, 'reject', true);
-- The last batch of the pass (fewer rows than batch_size) waits for row 1.
INSERT INTO batches SELECT 4, * FROM dfend_backfill_batch('public.carry_users', 'id', 'dfend_id', NULL, NULL, NULL, false, '3', false, 2, 8, NULL, false, 0, 'reject', true);
SELECT n, last_key, rows FROM batches ORDER BY n;
SELECT sum(registered) AS registered, sum(failed_transient) AS transient FROM batches;
SELECT DISTINCT message FROM nested;
SELECT count(dfend_id) AS with_id,
       bool_and(g.found AND g.id = u.dfend_id) AS each_its_own_identity
FROM carry_users u
JOIN dfend_get_identities(ARRAY(SELECT id::text FROM carry_users)) g ON g.user_id = u.id::text;
-- Between two batches of a run, another role uses the engine (SET ROLE in
-- the same session): it gets only its own answers, the carried row is
-- dropped (the next batch reports it as transient), and no id lands on
-- another row.
CREATE ROLE dfend_reader;
GRANT EXECUTE ON FUNCTION dfend_get_identities(text[]) TO dfend_reader;
SET ROLE dfend_alice;
DROP TRIGGER nest ON carry_users;
RESET ROLE;
UPDATE carry_users SET dfend_id = NULL;
\! test/emu config '{"hang_next": 1, "hang_ms": 5000}'
TRUNCATE batches;
INSERT INTO batches SELECT 1, * FROM dfend_backfill_batch('public.carry_users', 'id', 'dfend_id', NULL, NULL, NULL, false, NULL, false, 1, 8, NULL, false, 0, 'reject', true);
SET ROLE dfend_reader;
SELECT user_id, ordinality, found FROM dfend_get_identities(ARRAY['2', 'nobody']);
RESET ROLE;
INSERT INTO batches SELECT 2, * FROM dfend_backfill_batch('public.carry_users', 'id', 'dfend_id', NULL, NULL, NULL, false, '1', false, 4, 8, NULL, false, 0, 'reject', true);
SELECT n, last_key, rows, registered, failed_transient, first_transient_key FROM batches ORDER BY n;
SELECT id, dfend_id IS NOT NULL AS has_id FROM carry_users ORDER BY id;
SELECT bool_and(g.id = u.dfend_id) AS each_its_own_identity
FROM carry_users u
JOIN dfend_get_identities(ARRAY(SELECT id::text FROM carry_users)) g ON g.user_id = u.id::text
WHERE u.dfend_id IS NOT NULL;
SELECT rolsuper FROM pg_roles WHERE rolname = 'dfend_alice';
SELECT * FROM escalated;
