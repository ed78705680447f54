-- dfend 0.3.0 -> 0.4.0: full speed under DFend's backpressure (see CHANGELOG.md).
-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION dfend UPDATE TO '0.4.0'" to load this file. \quit

-- SECTION bulk (statement-level insert trigger; issue 8)

-- dfend_insert becomes a statement trigger reading a transition table
-- (one call per statement, which writes the entries of all its rows), except
-- on a partitioned table (see dfend_attach).
CREATE OR REPLACE FUNCTION dfend_attach(
    table_name regclass,
    user_id_column name,
    id_column name,
    email_column name DEFAULT NULL,
    phone_column name DEFAULT NULL,
    metadata_column name DEFAULT NULL,
    merge boolean DEFAULT false,
    mode text DEFAULT 'async',
    on_error text DEFAULT 'queue',
    notify text DEFAULT NULL,
    invalid_fields text DEFAULT 'drop')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    relation_kind "char";
    contact_columns name[];
    update_list text;
    update_condition text;
    trigger_args text;
    worker text;
BEGIN
    IF mode IS NULL OR mode NOT IN ('sync', 'async') THEN
        RAISE EXCEPTION 'invalid mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''sync'' or ''async''.';
    END IF;
    IF on_error IS NULL OR on_error NOT IN ('queue', 'error') THEN
        RAISE EXCEPTION 'invalid on_error "%"', on_error
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''queue'' or ''error''.';
    END IF;
    IF notify IS NOT NULL AND octet_length(notify) NOT BETWEEN 1 AND 63 THEN
        RAISE EXCEPTION 'invalid notify channel "%"', notify
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A channel name is 1 to 63 bytes long.';
    END IF;
    IF invalid_fields IS NULL OR invalid_fields NOT IN ('drop', 'reject') THEN
        RAISE EXCEPTION 'invalid invalid_fields "%"', invalid_fields
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''drop'' or ''reject''.';
    END IF;
    SELECT c.relkind INTO relation_kind FROM pg_class c WHERE c.oid = table_name;
    IF relation_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', table_name USING ERRCODE = 'wrong_object_type';
    END IF;
    -- A partitioned table is attached as a whole: rows are queued under it.
    IF (SELECT c.relispartition FROM pg_class c WHERE c.oid = table_name) THEN
        RAISE EXCEPTION '% is a partition', table_name
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Attach the partitioned table it belongs to.';
    END IF;
    IF EXISTS (SELECT FROM @extschema@.dfend_attachment a WHERE a.table_name = dfend_attach.table_name) THEN
        RAISE EXCEPTION 'table % is already attached to DFend', table_name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Call dfend_detach first to change how it is attached.';
    END IF;

    PERFORM @extschema@.dfend_internal_check_columns(table_name, user_id_column, id_column,
                                                      email_column, phone_column, metadata_column);
    IF NOT EXISTS (
        SELECT FROM pg_index i JOIN pg_attribute a
          ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = table_name AND i.indisunique AND i.indnkeyatts = 1
          AND i.indpred IS NULL AND a.attname = user_id_column) THEN
        RAISE WARNING 'column "%" of table % has no unique index', user_id_column, table_name
            USING DETAIL = 'The DFend id is stored on every row with the same user id, and finding rows by user id scans the table.',
                  HINT = 'Attach by the table''s primary key or another unique column.';
    END IF;

    INSERT INTO @extschema@.dfend_attachment
        (table_name, user_id_column, id_column, email_column, phone_column, metadata_column,
         merge, mode, on_error, notify_channel, invalid_fields)
    VALUES (table_name, user_id_column, id_column, email_column, phone_column, metadata_column,
            merge, mode, on_error, notify, invalid_fields);

    trigger_args := format('%L, %L, %L, %L, %L, %L, %L, %L', mode, user_id_column, id_column,
                           coalesce(email_column, ''), coalesce(phone_column, ''),
                           coalesce(metadata_column, ''), merge, on_error);
    -- AFTER in both modes: a sync table's rows are registered by COMMIT.
    -- One call per statement, which queues the rows of its transition table
    -- together. A partitioned table keeps a row trigger, which its partitions
    -- clone: a partition cannot have a transition table, and rows inserted
    -- into a partition directly fire no statement trigger of its parent.
    IF relation_kind = 'p' THEN
        EXECUTE format('CREATE TRIGGER dfend_insert AFTER INSERT ON %s FOR EACH ROW EXECUTE FUNCTION @extschema@.dfend_trigger(%s)',
                       table_name, trigger_args);
    ELSE
        EXECUTE format('CREATE TRIGGER dfend_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS dfend_inserted FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.dfend_trigger(%s)',
                       table_name, trigger_args);
    END IF;
    -- A changed user id, email, phone or metadata re-registers the user (with
    -- merge); an update of the id column alone never calls DFend.
    contact_columns := array_remove(ARRAY[user_id_column, email_column, phone_column, metadata_column], NULL);
    IF cardinality(contact_columns) > 0 THEN
        SELECT string_agg(quote_ident(c), ', '),
               -- As text: json has no equality operator, and a type's own
               -- operator may live outside pg_catalog.
               string_agg(format('OLD.%1$I::pg_catalog.text IS DISTINCT FROM NEW.%1$I::pg_catalog.text', c), ' OR ')
        INTO update_list, update_condition
        FROM unnest(contact_columns) AS c;
        EXECUTE format('CREATE TRIGGER dfend_update AFTER UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) EXECUTE FUNCTION @extschema@.dfend_trigger(%s)',
                       update_list, table_name, update_condition, trigger_args);
    END IF;

    IF mode = 'async' OR on_error = 'queue' THEN
        -- Also sync: rows COMMIT could not register in time are the worker's.
        SELECT worker_state INTO worker FROM @extschema@.dfend_worker_status();
        IF worker LIKE 'not running%' THEN
            RAISE NOTICE 'no dfend worker drains the outbox of database "%"', current_database()
                USING DETAIL = format('The worker is %s.', worker),
                      HINT = format('Add dfend to shared_preload_libraries and %L to dfend.worker_databases, or call dfend_process_queue() regularly, for example from pg_cron.',
                                    current_database());
        END IF;
    END IF;
END $$;

-- Tables attached before 0.4.0 get the statement trigger too, enabled as
-- their row trigger was. A partitioned table keeps its row trigger, and so
-- does a table that has become a partition since it was attached (no
-- transition table is allowed there; its inserts are refused either way).
DO $$
DECLARE
    t regclass;
    definition text;
    enabled "char";
BEGIN
    FOR t, definition, enabled IN
        SELECT tg.tgrelid::regclass, pg_catalog.pg_get_triggerdef(tg.oid), tg.tgenabled
        FROM pg_catalog.pg_trigger tg
        JOIN @extschema@.dfend_attachment a ON a.table_name OPERATOR(pg_catalog.=) tg.tgrelid
        JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) tg.tgrelid
        WHERE c.relkind OPERATOR(pg_catalog.=) 'r' AND NOT c.relispartition
          AND NOT tg.tgisinternal AND tg.tgname OPERATOR(pg_catalog.=) 'dfend_insert'
          AND (tg.tgtype OPERATOR(pg_catalog.&) 1::pg_catalog.int2) OPERATOR(pg_catalog.=) 1::pg_catalog.int2
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER dfend_insert ON %s', t);
        EXECUTE pg_catalog.replace(definition, ' FOR EACH ROW ',
                                   ' REFERENCING NEW TABLE AS dfend_inserted FOR EACH STATEMENT ');
        IF enabled OPERATOR(pg_catalog.<>) 'O' THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s %s TRIGGER dfend_insert', t,
                CASE enabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA'
                             ELSE 'ENABLE ALWAYS' END);
        END IF;
    END LOOP;
END $$;

-- END SECTION bulk

-- SECTION backfill (no batch barrier: defer_retries; issue 8)

-- A new last parameter: the old declaration is renamed, the new one created,
-- and roles that could run the old one get EXECUTE on the new one (DBAs
-- given it for backfills as the README shows), then the old one goes.
ALTER FUNCTION dfend_backfill_batch(regclass, name, name, name, name, name, boolean, text, boolean, integer, integer, float8, boolean, integer, text)
    RENAME TO dfend_backfill_batch_0_3_0;
-- One batch of dfend_backfill: selects the next rows after after_key,
-- registers them, stores the ids, records the fields left out
-- (invalid_fields 'drop') and dead-letters permanent failures, in the
-- caller's transaction. defer_retries: rows whose retry must wait (a
-- Retry-After) are reported as transient failures for the next pass
-- instead of holding up the batch.
CREATE FUNCTION dfend_backfill_batch(
    table_name regclass,
    user_id_column name,
    id_column name,
    email_column name,
    phone_column name,
    metadata_column name,
    merge boolean,
    after_key text,
    inclusive boolean,
    batch_size integer,
    concurrency integer,
    max_rate float8,
    dry_run boolean,
    report_limit integer,
    invalid_fields text,
    defer_retries boolean,
    OUT last_key text,
    OUT rows integer,
    OUT registered integer,
    OUT created integer,
    OUT existing integer,
    OUT failed_permanent integer,
    OUT failed_transient integer,
    OUT first_transient_key text,
    OUT invalid text[],
    OUT dropped integer)
RETURNS record
AS 'MODULE_PATHNAME', 'dfend_backfill_batch'
-- Volatile and parallel unsafe: it writes the table and calls DFend.
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION dfend_backfill_batch(regclass, name, name, name, name, name, boolean, text, boolean, integer, integer, float8, boolean, integer, text, boolean) IS
'Internal: one batch of dfend_backfill';
REVOKE EXECUTE ON FUNCTION dfend_backfill_batch(regclass, name, name, name, name, name, boolean, text, boolean, integer, integer, float8, boolean, integer, text, boolean) FROM PUBLIC;
DO $$
DECLARE
    v_grant record;
BEGIN
    FOR v_grant IN
        SELECT a.grantee, a.is_grantable
        FROM pg_catalog.pg_proc AS p, pg_catalog.aclexplode(p.proacl) AS a
        WHERE p.oid OPERATOR(pg_catalog.=) 'dfend_backfill_batch_0_3_0'::regproc
          AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
          AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
          AND a.grantee OPERATOR(pg_catalog.<>) 0
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION dfend_backfill_batch(regclass, name, name, name, name, name, boolean, text, boolean, integer, integer, float8, boolean, integer, text, boolean) TO %s%s',
                                  v_grant.grantee::regrole::text,
                                  CASE WHEN v_grant.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END $$;
DROP FUNCTION dfend_backfill_batch_0_3_0(regclass, name, name, name, name, name, boolean, text, boolean, integer, integer, float8, boolean, integer, text);

CREATE OR REPLACE PROCEDURE dfend_backfill(
    table_name regclass,
    batch_size integer DEFAULT 1000,
    concurrency integer DEFAULT 32,
    max_rate float8 DEFAULT NULL,
    merge boolean DEFAULT NULL,
    dry_run boolean DEFAULT false,
    user_id_column name DEFAULT NULL,
    id_column name DEFAULT NULL,
    email_column name DEFAULT NULL,
    phone_column name DEFAULT NULL,
    metadata_column name DEFAULT NULL,
    invalid_fields text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    v_table regclass := table_name;
    v_batch_size integer := batch_size;
    v_concurrency integer := concurrency;
    v_max_rate float8 := max_rate;
    v_merge boolean := merge;
    v_dry_run boolean := coalesce(dry_run, false);
    v_user_id name := user_id_column;
    v_id name := id_column;
    v_email name := email_column;
    v_phone name := phone_column;
    v_metadata name := metadata_column;
    v_invalid_fields text := invalid_fields;
    v_attached record;
    v_relkind "char";
    v_key_attnum smallint;
    v_backend_start timestamptz;
    v_running record;
    v_run bigint;
    v_total bigint;
    b record;
    v_after text;
    v_inclusive boolean := false;
    v_pass integer := 1;
    v_first_transient text;
    v_rows bigint := 0;
    v_registered bigint := 0;
    v_created bigint := 0;
    v_existing bigint := 0;
    v_failed bigint := 0;
    v_transient bigint := 0;
    v_dropped bigint := 0;
    v_shown integer := 0;
    v_example text;
    v_started timestamptz := pg_catalog.clock_timestamp();
    v_last_notice timestamptz := pg_catalog.clock_timestamp();
    v_seconds float8;
    v_rate float8;
    v_done bigint;
    v_detail text;
BEGIN
    -- Transaction-local, so it is set again after every COMMIT: every
    -- name below then means the catalog's, whatever the caller's path.
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    -- Arguments.
    IF v_table IS NULL THEN
        RAISE EXCEPTION 'table_name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF v_batch_size IS NULL OR v_batch_size NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 100000'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_concurrency IS NULL OR v_concurrency NOT BETWEEN 1 AND 1024 THEN
        RAISE EXCEPTION 'concurrency must be between 1 and 1024'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_max_rate IS NOT NULL AND NOT (v_max_rate > 0 AND v_max_rate < 'Infinity') THEN
        RAISE EXCEPTION 'max_rate must be a positive number of requests per second'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave it NULL for no cap.';
    END IF;
    IF v_invalid_fields IS NOT NULL AND v_invalid_fields NOT IN ('drop', 'reject') THEN
        RAISE EXCEPTION 'invalid invalid_fields "%"', v_invalid_fields
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''drop'' or ''reject''.';
    END IF;
    SELECT c.relkind INTO v_relkind FROM pg_catalog.pg_class AS c WHERE c.oid = v_table;
    IF v_relkind IS NULL OR v_relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', v_table USING ERRCODE = 'wrong_object_type';
    END IF;

    -- The column mapping: arguments first, then the table's attachment.
    SELECT a.* INTO v_attached FROM @extschema@.dfend_attachment AS a WHERE a.table_name = v_table;
    IF FOUND THEN
        v_user_id := coalesce(v_user_id, v_attached.user_id_column);
        v_id := coalesce(v_id, v_attached.id_column);
        v_email := coalesce(v_email, v_attached.email_column);
        v_phone := coalesce(v_phone, v_attached.phone_column);
        v_metadata := coalesce(v_metadata, v_attached.metadata_column);
        v_merge := coalesce(v_merge, v_attached.merge);
        v_invalid_fields := coalesce(v_invalid_fields, v_attached.invalid_fields);
    ELSIF v_user_id IS NULL OR v_id IS NULL THEN
        RAISE EXCEPTION 'table % is not attached to DFend and no columns were given', v_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the columns with user_id_column and id_column (and email_column, phone_column, metadata_column), or attach the table with dfend_attach.';
    END IF;
    v_merge := coalesce(v_merge, false);
    v_invalid_fields := coalesce(v_invalid_fields, 'drop');
    PERFORM @extschema@.dfend_internal_check_columns(v_table, v_user_id, v_id, v_email,
                                                      v_phone, v_metadata);
    SELECT a.attnum INTO v_key_attnum FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = v_table AND a.attname = v_user_id;
    -- Checked now rather than after the first batch has been sent.
    IF NOT v_dry_run AND NOT pg_catalog.has_column_privilege(v_table, v_id::text, 'UPDATE') THEN
        RAISE EXCEPTION 'permission denied for table %', v_table
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('Storing DFend ids needs UPDATE on column %I.', v_id);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_index AS i
                   JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
                   JOIN pg_catalog.pg_am AS m ON m.oid = c.relam
                   WHERE i.indrelid = v_table AND i.indkey[0] = v_key_attnum
                     AND m.amname = 'btree' AND i.indpred IS NULL) THEN
        RAISE WARNING 'column "%" of table % has no index', v_user_id, v_table
            USING DETAIL = 'Each batch will read the whole table to find the next rows.',
                  HINT = pg_catalog.format('CREATE INDEX ON %s (%I);', v_table, v_user_id);
    END IF;

    -- One run per table at a time. The lock lasts until the run row is
    -- committed. A lock on dfend's own table, not an advisory lock: only
    -- roles with rights on that table can take it, so no other role can make
    -- a backfill wait.
    LOCK TABLE @extschema@.dfend_backfill_run IN SHARE ROW EXCLUSIVE MODE;
    SELECT p.run_id, p.pid INTO v_running FROM @extschema@.dfend_backfill_progress AS p
    WHERE p.table_name = v_table AND p.state = 'running';
    IF FOUND THEN
        RAISE EXCEPTION 'a backfill of table % is already running', v_table
            USING ERRCODE = 'object_in_use',
                  DETAIL = pg_catalog.format('Run %s runs in the backend with PID %s.', v_running.run_id, v_running.pid),
                  HINT = 'Wait for it to finish, or stop it with pg_cancel_backend.';
    END IF;
    UPDATE @extschema@.dfend_backfill_run AS r SET state = 'interrupted'
    FROM @extschema@.dfend_backfill_progress AS p
    WHERE p.run_id = r.run_id AND r.state = 'running' AND p.state = 'interrupted';
    DELETE FROM @extschema@.dfend_backfill_run AS r
    WHERE r.run_id <= (SELECT o.run_id FROM @extschema@.dfend_backfill_run AS o
                       ORDER BY o.run_id DESC OFFSET 99 LIMIT 1)
       OR NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = r.table_name);
    SELECT a.backend_start INTO v_backend_start FROM pg_catalog.pg_stat_activity AS a
    WHERE a.pid = pg_catalog.pg_backend_pid();
    -- Counted as the table's owner, like every read of the table.
    v_total := @extschema@.dfend_internal_count_missing(v_table, v_user_id, v_id);
    INSERT INTO @extschema@.dfend_backfill_run (table_name, pid, backend_start, dry_run, total, started_at, updated_at)
    VALUES (v_table, pg_catalog.pg_backend_pid(), v_backend_start, v_dry_run, v_total, v_started, v_started)
    RETURNING run_id INTO v_run;
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    LOOP
        SELECT * INTO b FROM @extschema@.dfend_backfill_batch(
            v_table, v_user_id, v_id, v_email, v_phone, v_metadata, v_merge, v_after,
            v_inclusive, v_batch_size, v_concurrency, v_max_rate, v_dry_run, 10 - v_shown,
            v_invalid_fields, v_pass < 3);
        v_rows := v_rows + b.rows;
        v_registered := v_registered + b.registered;
        v_created := v_created + b.created;
        v_existing := v_existing + b.existing;
        v_failed := v_failed + b.failed_permanent;
        v_transient := v_transient + b.failed_transient;
        v_dropped := v_dropped + b.dropped;
        v_first_transient := coalesce(v_first_transient, b.first_transient_key);
        IF v_dry_run THEN
            FOREACH v_example IN ARRAY b.invalid LOOP
                RAISE NOTICE 'invalid row %', v_example;
            END LOOP;
            v_shown := v_shown + pg_catalog.cardinality(b.invalid);
        END IF;
        v_seconds := extract(epoch FROM pg_catalog.clock_timestamp() - v_started);
        v_rate := CASE WHEN v_seconds > 0 THEN v_rows / v_seconds END;
        v_done := v_registered + v_failed + v_transient;
        UPDATE @extschema@.dfend_backfill_run AS r
        SET pass = v_pass, done = v_done, registered = v_registered, created = v_created,
            existing = v_existing, failed = v_failed, transient = v_transient, rate = v_rate,
            last_key = b.last_key, updated_at = pg_catalog.clock_timestamp()
        WHERE r.run_id = v_run;
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

        IF b.rows < v_batch_size THEN
            -- The end of the table. Rows that failed for a transient reason
            -- get up to two more passes, from the first of them on.
            EXIT WHEN v_dry_run OR v_transient = 0 OR v_pass >= 3;
            v_pass := v_pass + 1;
            v_after := v_first_transient;
            v_inclusive := true;
            v_transient := 0;
            v_first_transient := NULL;
            PERFORM pg_catalog.pg_sleep(v_pass - 1);
        ELSE
            v_after := b.last_key;
            v_inclusive := false;
            IF pg_catalog.clock_timestamp() - v_last_notice >= interval '5 seconds' THEN
                RAISE NOTICE 'backfill of %: % of % rows (% %%), % rows/s, % left, % failed',
                    v_table, v_done, v_total,
                    CASE WHEN v_total > 0 THEN round(100.0 * least(v_done, v_total) / v_total, 1) ELSE 100 END,
                    round(coalesce(v_rate, 0)::numeric),
                    CASE WHEN v_rate > 0 THEN pg_catalog.make_interval(secs => round(greatest(v_total - v_done, 0) / v_rate))::text ELSE 'unknown' END,
                    v_failed;
                v_last_notice := pg_catalog.clock_timestamp();
            END IF;
        END IF;
    END LOOP;

    UPDATE @extschema@.dfend_backfill_run AS r
    SET state = 'finished', finished_at = pg_catalog.clock_timestamp()
    WHERE r.run_id = v_run;
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    v_seconds := extract(epoch FROM pg_catalog.clock_timestamp() - v_started);
    v_detail := pg_catalog.format('Took %s s, %s rows/s.', round(v_seconds::numeric, 1),
                                  round(CASE WHEN v_seconds > 0 THEN v_rows / v_seconds ELSE 0 END::numeric));
    IF v_dry_run THEN
        IF v_failed + v_dropped > v_shown THEN
            v_detail := v_detail || pg_catalog.format(' Only the first %s invalid rows are listed.', v_shown);
        END IF;
        RAISE NOTICE 'dry run of %: % valid%, % invalid', v_table, v_registered,
            CASE WHEN v_dropped > 0 THEN pg_catalog.format(' (%s of them without a field that fails validation)', v_dropped) ELSE '' END,
            v_failed
            USING DETAIL = 'Nothing was sent to DFend; the valid rows would be. ' || v_detail;
    ELSE
        IF v_failed > 0 THEN
            v_detail := v_detail || ' Rows that failed for good are in dfend_dead_letters.';
        END IF;
        IF v_dropped > 0 THEN
            v_detail := v_detail || ' The fields left out are in dfend_dropped_field.';
        END IF;
        IF v_transient > 0 THEN
            v_detail := v_detail || ' Rows left without an id failed for a transient reason; run dfend_backfill again for them.';
        END IF;
        RAISE NOTICE 'backfill of % finished: % registered (% created, % already existing%), % failed%',
            v_table, v_registered, v_created, v_existing,
            CASE WHEN v_dropped > 0 THEN pg_catalog.format(', %s without a field that failed validation', v_dropped) ELSE '' END,
            v_failed,
            CASE WHEN v_transient > 0 THEN pg_catalog.format(', %s left without an id', v_transient) ELSE '' END
            USING DETAIL = v_detail;
    END IF;
END $$;

-- END SECTION backfill

-- SECTION rate (shared request rate, breaker visibility; issue 8)

-- The adaptive request rate of each DFend account in use, shared by every
-- worker, backfill and session of the server (src/pg/backpressure.cpp,
-- src/core/rate.hpp): requests per second it allows now, the smoothed share
-- of 429 answers, totals since the server started. `current` marks the
-- account this session's settings reach. No rows without
-- shared_preload_libraries.
CREATE FUNCTION dfend_internal_rate(
    OUT api_url text, OUT current boolean, OUT rate double precision,
    OUT rate_limited_share double precision, OUT requests bigint, OUT rate_limited bigint,
    OUT last_request_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'dfend_internal_rate'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
REVOKE EXECUTE ON FUNCTION dfend_internal_rate() FROM PUBLIC;

CREATE VIEW dfend_rate AS
SELECT r.api_url, r.current, r.rate, r.rate_limited_share, r.requests, r.rate_limited,
       r.last_request_at
FROM @extschema@.dfend_internal_rate() AS r;
COMMENT ON VIEW dfend_rate IS
'The request rate each DFend account allows as dfend has learnt it, shared by the whole server';

-- The circuit breaker of this database's worker: closed, open or half-open.
CREATE FUNCTION dfend_internal_breaker() RETURNS text
AS 'MODULE_PATHNAME', 'dfend_internal_breaker'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
REVOKE EXECUTE ON FUNCTION dfend_internal_breaker() FROM PUBLIC;

GRANT SELECT ON dfend_rate TO pg_monitor;
GRANT EXECUTE ON FUNCTION dfend_internal_rate(), dfend_internal_breaker() TO pg_monitor;

CREATE OR REPLACE VIEW dfend_queue_status AS
SELECT (SELECT count(*) FROM @extschema@.dfend_outbox WHERE state = 'pending') AS pending,
       (SELECT count(*) FROM @extschema@.dfend_outbox WHERE state = 'pending' AND next_attempt_at <= now()) AS due,
       (SELECT now() - min(enqueued_at) FROM @extschema@.dfend_outbox WHERE state = 'pending') AS oldest_pending_age,
       (SELECT count(*) FROM @extschema@.dfend_outbox WHERE state = 'dead') AS dead,
       w.worker_pid, w.worker_state, w.worker_started_at, w.last_batch_at,
       w.registered AS worker_registered, w.failed AS worker_failed,
       @extschema@.dfend_internal_breaker() AS breaker,
       (SELECT r.rate FROM @extschema@.dfend_internal_rate() AS r WHERE r.current) AS request_rate,
       (SELECT r.rate_limited_share FROM @extschema@.dfend_internal_rate() AS r WHERE r.current) AS rate_limited_share
FROM @extschema@.dfend_worker_status() AS w;
COMMENT ON VIEW dfend_queue_status IS
'Outbox depth, age of the oldest pending entry, dead entries, the worker''s state, its circuit breaker and the learnt request rate';

-- END SECTION rate
