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
