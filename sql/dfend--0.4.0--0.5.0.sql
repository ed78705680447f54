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

-- END SECTION backfill
