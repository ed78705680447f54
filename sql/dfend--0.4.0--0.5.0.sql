-- dfend 0.4.0 -> 0.5.0: full speed under DFend's backpressure, continued (see CHANGELOG.md).
-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION dfend UPDATE TO '0.5.0'" to load this file. \quit

-- SECTION bulk (one outbox row per bulk statement chunk; issue 8)

-- Rows queued by one INSERT or COPY of more than 64 rows into an async
-- table: up to 1,000 user ids per row instead of an outbox entry each
-- (src/pg/trigger.cpp). The worker and dfend_process_queue() turn each into
-- ordinary pending entries of dfend_outbox (and delete it) in one
-- transaction before they claim entries, so a crash loses or repeats
-- nothing. Everything that reports pending entries counts these too.
CREATE TABLE dfend_outbox_bulk (
    bulk_id bigserial PRIMARY KEY,
    table_name regclass NOT NULL,
    user_ids text[] NOT NULL,
    reason text NOT NULL DEFAULT 'insert' CHECK (reason IN ('insert', 'update', 'backfill')),
    enqueued_at timestamptz NOT NULL DEFAULT now()
);
-- Kept out of line but not compressed: compressing the ids cost the
-- inserting statement more than writing them (a few hundred kB per 100,000
-- ids, deleted again within seconds).
ALTER TABLE dfend_outbox_bulk ALTER COLUMN user_ids SET STORAGE EXTERNAL;
SELECT pg_catalog.pg_extension_config_dump('dfend_outbox_bulk', '');
SELECT pg_catalog.pg_extension_config_dump('dfend_outbox_bulk_bulk_id_seq', '');
COMMENT ON TABLE dfend_outbox_bulk IS
'Internal: pending outbox entries of bulk inserts, many user ids per row, not yet expanded into dfend_outbox';
REVOKE ALL ON dfend_outbox_bulk FROM PUBLIC;
REVOKE ALL ON SEQUENCE dfend_outbox_bulk_bulk_id_seq FROM PUBLIC;

-- Bulk rows are pending entries: detaching or dropping a table removes them,
-- and the queue status counts them.
CREATE OR REPLACE FUNCTION dfend_detach(table_name regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    discarded bigint;
    entries bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM @extschema@.dfend_attachment a WHERE a.table_name = dfend_detach.table_name) THEN
        RAISE EXCEPTION 'table % is not attached to DFend', table_name
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS dfend_insert ON %s', table_name);
    EXECUTE format('DROP TRIGGER IF EXISTS dfend_update ON %s', table_name);
    DELETE FROM @extschema@.dfend_attachment a WHERE a.table_name = dfend_detach.table_name;
    -- Bulk rows first: one that a worker is expanding meanwhile is gone once
    -- this DELETE may take it, and the next statement sees its entries.
    WITH gone AS (
        DELETE FROM @extschema@.dfend_outbox_bulk b WHERE b.table_name = dfend_detach.table_name
        RETURNING cardinality(b.user_ids) AS user_count)
    SELECT coalesce(sum(user_count), 0) INTO discarded FROM gone;
    DELETE FROM @extschema@.dfend_outbox o
    WHERE o.table_name = dfend_detach.table_name AND o.state = 'pending';
    GET DIAGNOSTICS entries = ROW_COUNT;
    discarded := discarded + entries;
    IF discarded > 0 THEN
        RAISE NOTICE 'discarded % pending outbox entries of table %', discarded, table_name;
    END IF;
END $$;

CREATE OR REPLACE VIEW dfend_queue_status AS
SELECT (SELECT count(*) FROM @extschema@.dfend_outbox WHERE state = 'pending') +
       (SELECT coalesce(sum(cardinality(user_ids)), 0) FROM @extschema@.dfend_outbox_bulk) AS pending,
       (SELECT count(*) FROM @extschema@.dfend_outbox WHERE state = 'pending' AND next_attempt_at <= now()) +
       (SELECT coalesce(sum(cardinality(user_ids)), 0) FROM @extschema@.dfend_outbox_bulk WHERE enqueued_at <= now()) AS due,
       now() - LEAST((SELECT min(enqueued_at) FROM @extschema@.dfend_outbox WHERE state = 'pending'),
                     (SELECT min(enqueued_at) FROM @extschema@.dfend_outbox_bulk)) AS oldest_pending_age,
       (SELECT count(*) FROM @extschema@.dfend_outbox WHERE state = 'dead') AS dead,
       w.worker_pid, w.worker_state, w.worker_started_at, w.last_batch_at,
       w.registered AS worker_registered, w.failed AS worker_failed,
       @extschema@.dfend_internal_breaker() AS breaker,
       (SELECT r.rate FROM @extschema@.dfend_internal_rate() AS r WHERE r.current) AS request_rate,
       (SELECT r.rate_limited_share FROM @extschema@.dfend_internal_rate() AS r WHERE r.current) AS rate_limited_share
FROM @extschema@.dfend_worker_status() AS w;

CREATE OR REPLACE FUNCTION dfend_internal_on_drop() RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- objsubid 0: the table itself, not one of its columns.
    DELETE FROM @extschema@.dfend_attachment a
    USING pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.objid = a.table_name::oid;
    DELETE FROM @extschema@.dfend_outbox_bulk b
    USING pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.objid = b.table_name::oid;
    DELETE FROM @extschema@.dfend_outbox o
    USING pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.objid = o.table_name::oid;
    DELETE FROM @extschema@.dfend_dropped_field f
    USING pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.objid = f.table_name::oid;
END $$;

-- END SECTION bulk

-- SECTION backfill (carried retries between batches; issue 8)
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
        -- The pass's earliest row that failed for a transient reason so far:
        -- a row carried between batches may fail after later rows did.
        v_first_transient := coalesce(b.first_transient_key, v_first_transient);
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

-- SECTION redteam (a red-team review of 0.5.0)

-- Dead letters are found by a hash of the user id: a btree entry holds at
-- most about 2.7 kB, and a longer user id (DFend refuses it, so it goes
-- dead) failed the statement that settles a whole batch, again each round:
-- one row stalled every table's queue.
DROP INDEX dfend_outbox_dead_row;
CREATE INDEX dfend_outbox_dead_row ON dfend_outbox USING hash (user_id) WHERE state = 'dead';

-- END SECTION redteam
