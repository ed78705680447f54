-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION dfend" to load this file. \quit

CREATE FUNCTION dfend_register_identity(
    user_id text,
    email text DEFAULT NULL,
    phone text DEFAULT NULL,
    merge boolean DEFAULT false,
    metadata jsonb DEFAULT NULL,
    OUT id text,
    OUT created boolean,
    OUT merged boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'dfend_register_identity'
-- Volatile and parallel unsafe: each call changes state at DFend.
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dfend_register_identity(text, text, text, boolean, jsonb) IS
'Registers a user with DFend (POST /identity) and returns the DFend id to store on the user''s row';

CREATE FUNCTION dfend_get_identity(user_id text DEFAULT NULL, id text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'dfend_get_identity'
-- Volatile: the identity changes at DFend. Restricted: runs in the leader,
-- which holds the connection and the settings.
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION dfend_get_identity(text, text) IS
'Fetches a DFend Identity by user_id or by DFend id (GET /identity); NULL when DFend has none';

-- Calls cost money and reach the network with the server's key: grant them
-- explicitly, e.g. GRANT EXECUTE ON FUNCTION dfend_register_identity(text, text, text, boolean, jsonb) TO app;
REVOKE EXECUTE ON FUNCTION dfend_register_identity(text, text, text, boolean, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_get_identity(text, text) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Attaching tables: the trigger option and the outbox (see README).
-- ---------------------------------------------------------------------------

-- Which tables are attached, and how their columns map to DFend's fields.
CREATE TABLE dfend_attachment (
    table_name regclass PRIMARY KEY,
    user_id_column name NOT NULL,
    id_column name NOT NULL,
    email_column name,
    phone_column name,
    metadata_column name,
    merge boolean NOT NULL DEFAULT false,
    mode text NOT NULL CHECK (mode IN ('sync', 'async')),
    on_error text NOT NULL DEFAULT 'queue' CHECK (on_error IN ('queue', 'error')),
    attached_at timestamptz NOT NULL DEFAULT now(),
    -- NOTIFY channel told of every stored id, or NULL.
    notify_channel text CHECK (octet_length(notify_channel) BETWEEN 1 AND 63),
    -- An email, phone or metadata that fails validation: left out of the
    -- registration ('drop', recorded in dfend_dropped_field) or the reason
    -- the row is not registered at all ('reject').
    invalid_fields text NOT NULL DEFAULT 'drop' CHECK (invalid_fields IN ('drop', 'reject'))
);
SELECT pg_catalog.pg_extension_config_dump('dfend_attachment', '');
COMMENT ON TABLE dfend_attachment IS
'Tables attached with dfend_attach and how their columns map to DFend fields';

-- Rows waiting to be registered (state pending) and rows that failed for good
-- (state dead). A pending entry is removed in the same transaction that
-- stores the row's DFend id, so a crash loses nothing.
CREATE TABLE dfend_outbox (
    entry_id bigserial PRIMARY KEY,
    table_name regclass NOT NULL,
    user_id text NOT NULL,
    reason text NOT NULL CHECK (reason IN ('insert', 'update', 'backfill')),
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    -- Since when the worker has not seen the entry's row (see
    -- dfend.missing_row_timeout), or NULL.
    missing_since timestamptz
);
CREATE INDEX dfend_outbox_due ON dfend_outbox (next_attempt_at) WHERE state = 'pending';
-- Finds a row's dead letter; partial, so queueing a row maintains no extra
-- index. A hash index: a user id of any length fits (a btree entry holds at
-- most about 2.7 kB, and a longer id failed the settling of a whole batch).
CREATE INDEX dfend_outbox_dead_row ON dfend_outbox USING hash (user_id) WHERE state = 'dead';
SELECT pg_catalog.pg_extension_config_dump('dfend_outbox', '');
SELECT pg_catalog.pg_extension_config_dump('dfend_outbox_entry_id_seq', '');
COMMENT ON TABLE dfend_outbox IS
'Rows waiting for their DFend id (pending) and rows that failed permanently (dead)';

CREATE VIEW dfend_dead_letters AS
    SELECT entry_id, table_name, user_id, reason, attempts, last_error, enqueued_at
    FROM dfend_outbox WHERE state = 'dead';
COMMENT ON VIEW dfend_dead_letters IS
'Rows that could not be registered, with DFend''s error; requeue them with dfend_retry_dead()';

REVOKE ALL ON dfend_attachment, dfend_outbox, dfend_dead_letters FROM PUBLIC;
REVOKE ALL ON SEQUENCE dfend_outbox_entry_id_seq FROM PUBLIC;

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

-- BEGIN trigger and worker (owner: src/pg/attach.cpp, src/pg/worker.cpp)

-- The generic trigger behind dfend_attach; its arguments carry the mapping.
-- SECURITY DEFINER so that writing the outbox needs no grant to the table's
-- users. EXECUTE stays granted to PUBLIC: a table owner who creates a
-- partition of an attached table clones the trigger, which needs it. The
-- trigger itself refuses to run unless its arguments and timing are those
-- dfend_attach gave the attached table (src/pg/trigger.cpp).
CREATE FUNCTION dfend_trigger() RETURNS trigger
AS 'MODULE_PATHNAME', 'dfend_trigger'
LANGUAGE C SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION dfend_trigger() TO PUBLIC;
COMMENT ON FUNCTION dfend_trigger() IS
'Trigger created by dfend_attach: registers new users (sync) or queues them in dfend_outbox (async)';

CREATE FUNCTION dfend_internal_note_enqueued() RETURNS void
AS 'MODULE_PATHNAME', 'dfend_internal_note_enqueued'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE EXECUTE ON FUNCTION dfend_internal_note_enqueued() FROM PUBLIC;
COMMENT ON FUNCTION dfend_internal_note_enqueued() IS
'Internal: wakes the outbox worker when the current transaction commits';

CREATE FUNCTION dfend_worker_status(
    OUT worker_pid integer, OUT worker_state text, OUT worker_started_at timestamptz,
    OUT last_batch_at timestamptz, OUT registered bigint, OUT failed bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'dfend_worker_status'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
REVOKE EXECUTE ON FUNCTION dfend_worker_status() FROM PUBLIC;
COMMENT ON FUNCTION dfend_worker_status() IS
'The outbox worker serving the current database, from shared memory';

-- The type a domain (over a domain ...) is based on; other types themselves.
CREATE FUNCTION dfend_internal_base_type(type_oid oid) RETURNS oid
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE chain(oid, base) AS (
        SELECT t.oid, t.typbasetype FROM pg_type AS t WHERE t.oid OPERATOR(pg_catalog.=) type_oid
        UNION ALL
        SELECT t.oid, t.typbasetype FROM chain AS c JOIN pg_type AS t
          ON t.oid OPERATOR(pg_catalog.=) c.base)
    SELECT c.oid FROM chain AS c WHERE c.base OPERATOR(pg_catalog.=) 0
$$;
COMMENT ON FUNCTION dfend_internal_base_type(oid) IS
'Internal: the base type of a domain';

-- The column checks that dfend_attach and dfend_backfill share: every named
-- column exists and has a type that can be used.
CREATE FUNCTION dfend_internal_check_columns(
    table_name regclass, user_id_column name, id_column name,
    email_column name, phone_column name, metadata_column name)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    column_name name;
    column_type oid;
BEGIN
    FOREACH column_name IN ARRAY ARRAY[user_id_column, id_column, email_column, phone_column, metadata_column] LOOP
        CONTINUE WHEN column_name IS NULL;
        IF NOT EXISTS (SELECT FROM pg_attribute
                       WHERE attrelid = table_name AND attname = column_name
                         AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'column "%" of table % does not exist', column_name, table_name
                USING ERRCODE = 'undefined_column';
        END IF;
    END LOOP;
    IF user_id_column IS NULL OR id_column IS NULL THEN
        RAISE EXCEPTION 'user_id_column and id_column must be given'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF user_id_column = id_column THEN
        RAISE EXCEPTION 'user_id_column and id_column must be different columns'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT atttypid INTO column_type FROM pg_attribute
    WHERE attrelid = table_name AND attname = id_column;
    -- Ids are written through the type's own input function (length limits
    -- and domain constraints apply), so only types that hold text exactly.
    IF @extschema@.dfend_internal_base_type(column_type)
       NOT IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype) THEN
        RAISE EXCEPTION 'column "%" must have a text type to hold DFend ids', id_column
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = format('Its type is %s; text, varchar or char (or a domain over one of them) is needed.',
                                  format_type(column_type, NULL));
    END IF;
    SELECT atttypid INTO column_type FROM pg_attribute
    WHERE attrelid = table_name AND attname = user_id_column;
    -- money prints by the session's lc_monetary: no stable key.
    IF NOT ((SELECT typcategory FROM pg_type WHERE oid = column_type) IN ('S', 'N')
            OR column_type = 'uuid'::regtype)
       OR @extschema@.dfend_internal_base_type(column_type) = 'money'::regtype THEN
        RAISE EXCEPTION 'column "%" cannot serve as a user id', user_id_column
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = format('Its type is %s; a text, numeric (not money) or uuid type is needed.',
                                  format_type(column_type, NULL));
    END IF;
    FOREACH column_name IN ARRAY ARRAY[email_column, phone_column] LOOP
        CONTINUE WHEN column_name IS NULL;
        SELECT atttypid INTO column_type FROM pg_attribute
        WHERE attrelid = table_name AND attname = column_name;
        IF (SELECT typcategory FROM pg_type WHERE oid = column_type) <> 'S' THEN
            RAISE EXCEPTION 'column "%" must have a text type', column_name
                USING ERRCODE = 'datatype_mismatch',
                      DETAIL = format('Its type is %s.', format_type(column_type, NULL));
        END IF;
    END LOOP;
    IF metadata_column IS NOT NULL THEN
        SELECT atttypid INTO column_type FROM pg_attribute
        WHERE attrelid = table_name AND attname = metadata_column;
        IF column_type NOT IN ('json'::regtype, 'jsonb'::regtype) THEN
            RAISE EXCEPTION 'column "%" must be of type json or jsonb', metadata_column
                USING ERRCODE = 'datatype_mismatch';
        END IF;
    END IF;
END $$;
-- Left executable by PUBLIC: it reads only catalogs every role can read, and
-- the roles granted dfend_backfill need it.
COMMENT ON FUNCTION dfend_internal_check_columns(regclass, name, name, name, name, name) IS
'Internal: the column checks shared by dfend_attach and dfend_backfill';

CREATE FUNCTION dfend_attach(
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
COMMENT ON FUNCTION dfend_attach(regclass, name, name, name, name, name, boolean, text, text, text, text) IS
'Attaches a users table: new and changed rows get their DFend id stored automatically';

CREATE FUNCTION dfend_detach(table_name regclass) RETURNS void
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
COMMENT ON FUNCTION dfend_detach(regclass) IS
'Detaches a table: removes its triggers, its mapping and its pending outbox entries';

CREATE FUNCTION dfend_process_queue(max_rows integer DEFAULT 1000) RETURNS bigint
AS 'MODULE_PATHNAME', 'dfend_process_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION dfend_process_queue(integer) IS
'Drains up to max_rows due outbox entries in this session (without the background worker)';

CREATE FUNCTION dfend_retry_dead(table_name regclass DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    requeued bigint;
BEGIN
    UPDATE @extschema@.dfend_outbox o
    SET state = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL
    WHERE o.state = 'dead'
      AND (dfend_retry_dead.table_name IS NULL OR o.table_name = dfend_retry_dead.table_name);
    GET DIAGNOSTICS requeued = ROW_COUNT;
    IF requeued > 0 THEN
        PERFORM @extschema@.dfend_internal_note_enqueued();
    END IF;
    RETURN requeued;
END $$;
COMMENT ON FUNCTION dfend_retry_dead(regclass) IS
'Requeues dead outbox entries (of one table, or all) for another attempt';

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

CREATE VIEW dfend_queue_status AS
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
COMMENT ON VIEW dfend_queue_status IS
'Outbox depth, age of the oldest pending entry, dead entries, the worker''s state, its circuit breaker and the learnt request rate';

CREATE VIEW dfend_attachments AS
SELECT table_name, user_id_column, id_column, email_column, phone_column, metadata_column,
       merge, mode, on_error, attached_at, notify_channel, invalid_fields
FROM @extschema@.dfend_attachment;
COMMENT ON VIEW dfend_attachments IS 'Tables attached to DFend and their column mapping';

-- A dropped table takes its mapping and outbox entries with it.
CREATE FUNCTION dfend_internal_on_drop() RETURNS event_trigger
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
REVOKE EXECUTE ON FUNCTION dfend_internal_on_drop() FROM PUBLIC;
CREATE EVENT TRIGGER dfend_on_drop ON sql_drop EXECUTE FUNCTION dfend_internal_on_drop();

REVOKE EXECUTE ON FUNCTION dfend_attach(regclass, name, name, name, name, name, boolean, text, text, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_detach(regclass) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_process_queue(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_retry_dead(regclass) FROM PUBLIC;
REVOKE ALL ON dfend_queue_status, dfend_attachments FROM PUBLIC;

-- END trigger and worker

-- BEGIN backfill (owner: src/pg/backfill.cpp)

-- One row per run of dfend_backfill, updated and committed after each batch
-- so that other sessions can follow it. Only the last 100 runs are kept.
CREATE TABLE dfend_backfill_run (
    run_id bigserial PRIMARY KEY,
    table_name regclass NOT NULL,
    pid integer NOT NULL,
    backend_start timestamptz,
    state text NOT NULL DEFAULT 'running'
        CHECK (state IN ('running', 'finished', 'interrupted')),
    dry_run boolean NOT NULL DEFAULT false,
    pass integer NOT NULL DEFAULT 1,
    total bigint NOT NULL DEFAULT 0,
    done bigint NOT NULL DEFAULT 0,
    registered bigint NOT NULL DEFAULT 0,
    created bigint NOT NULL DEFAULT 0,
    existing bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    transient bigint NOT NULL DEFAULT 0,
    rate float8,
    last_key text,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
COMMENT ON TABLE dfend_backfill_run IS
'Internal: one row per dfend_backfill run (the last 100); query dfend_backfill_progress instead';

-- A run still marked running whose backend no longer runs the CALL that
-- started it (cancelled, failed, terminated, crashed) shows as interrupted.
-- For another role's backend, without pg_read_all_stats, PostgreSQL hides
-- the details: such a run shows as running while its backend exists.
CREATE VIEW dfend_backfill_progress AS
SELECT r.run_id, r.table_name, s.state, r.pid, r.dry_run, r.pass,
       r.total, r.done,
       CASE WHEN r.total > 0 THEN round(100.0 * least(r.done, r.total) / r.total, 1)
            ELSE 100.0 END AS percent,
       r.registered, r.created, r.existing, r.failed, r.transient,
       round(r.rate::numeric, 1) AS rows_per_second,
       CASE WHEN s.state = 'running' AND r.rate > 0
            THEN pg_catalog.make_interval(secs => round(greatest(r.total - r.done, 0) / r.rate))
       END AS eta,
       coalesce(r.finished_at, r.updated_at) - r.started_at AS elapsed,
       r.started_at, r.updated_at, r.finished_at
FROM @extschema@.dfend_backfill_run AS r
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN r.state <> 'running' THEN r.state
        WHEN EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a
                     WHERE a.pid = r.pid
                       AND (a.backend_start IS NULL
                            OR (a.backend_start = r.backend_start AND a.state = 'active'
                                AND a.query_start <= r.started_at)))
        THEN 'running'
        ELSE 'interrupted' END AS state) AS s;
COMMENT ON VIEW dfend_backfill_progress IS
'Progress of dfend_backfill runs, updated after each batch: done of total, rate, ETA, failures';

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

-- A procedure, so that it can COMMIT after each batch. It cannot carry a
-- SET search_path clause (PostgreSQL forbids transaction control then), so
-- every name in it is schema-qualified.
CREATE PROCEDURE dfend_backfill(
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
COMMENT ON PROCEDURE dfend_backfill(regclass, integer, integer, float8, boolean, boolean, name, name, name, name, name, text) IS
'Registers every row of a table that has no DFend id yet, in committed batches; resumable, throttled, with progress in dfend_backfill_progress';

CREATE FUNCTION dfend_internal_count_missing(table_name regclass, user_id_column name,
                                             id_column name) RETURNS bigint
AS 'MODULE_PATHNAME', 'dfend_internal_count_missing'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION dfend_internal_count_missing(regclass, name, name) FROM PUBLIC;
COMMENT ON FUNCTION dfend_internal_count_missing(regclass, name, name) IS
'Internal: rows of a table a backfill has to register, counted as the table''s owner';

CREATE FUNCTION dfend_enqueue_backfill(table_name regclass) RETURNS bigint
AS 'MODULE_PATHNAME', 'dfend_enqueue_backfill'
-- Volatile and parallel unsafe: it writes the outbox.
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION dfend_enqueue_backfill(regclass) IS
'Queues every row of an attached table that has no DFend id (and no outbox entry) for the outbox worker; returns how many';

REVOKE EXECUTE ON PROCEDURE dfend_backfill(regclass, integer, integer, float8, boolean, boolean, name, name, name, name, name, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_backfill_batch(regclass, name, name, name, name, name, boolean, text, boolean, integer, integer, float8, boolean, integer, text, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_enqueue_backfill(regclass) FROM PUBLIC;
REVOKE ALL ON dfend_backfill_run, dfend_backfill_progress FROM PUBLIC;
REVOKE ALL ON SEQUENCE dfend_backfill_run_run_id_seq FROM PUBLIC;

-- END backfill

-- BEGIN 0.3.0 application-developer features (issue 11)

-- SECTION reads (dfend_get_identities, overloads)

-- dfend_get_identity for user ids that are numbers or uuids, without a
-- cast. The value is sent as its type's text form (42, 9f1c...), which is
-- what dfend_attach and dfend_backfill send for such a column. A literal
-- ('abc') and user_id => 'x' still resolve to the text function: PostgreSQL
-- prefers the string type for an untyped literal.
CREATE FUNCTION dfend_get_identity(user_id bigint) RETURNS jsonb
AS 'MODULE_PATHNAME', 'dfend_get_identity_typed'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE FUNCTION dfend_get_identity(user_id integer) RETURNS jsonb
AS 'MODULE_PATHNAME', 'dfend_get_identity_typed'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE FUNCTION dfend_get_identity(user_id uuid) RETURNS jsonb
AS 'MODULE_PATHNAME', 'dfend_get_identity_typed'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION dfend_get_identity(bigint) IS
'Fetches the DFend Identity of a user id given as bigint (GET /identity); NULL when DFend has none';
COMMENT ON FUNCTION dfend_get_identity(integer) IS
'Fetches the DFend Identity of a user id given as integer (GET /identity); NULL when DFend has none';
COMMENT ON FUNCTION dfend_get_identity(uuid) IS
'Fetches the DFend Identity of a user id given as uuid (GET /identity); NULL when DFend has none';

-- Many lookups at once through the concurrent engine (src/pg/reads.cpp):
-- one row per element, in the array's order, duplicates sent once, NULL
-- elements not sent. A failure of one lookup is reported on its row (error,
-- sqlstate); a failure no lookup could escape (the key, TLS, the settings,
-- a cancel) raises. STRICT: a NULL array gives no rows. The user_id column
-- has the array's element type, so the rows join back to a users table
-- without a cast.
CREATE FUNCTION dfend_get_identities(user_ids text[])
RETURNS TABLE (user_id text, ordinality bigint, found boolean, id text, identity jsonb,
               error text, sqlstate text)
AS 'MODULE_PATHNAME', 'dfend_get_identities'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED ROWS 100;
CREATE FUNCTION dfend_get_identities(user_ids bigint[])
RETURNS TABLE (user_id bigint, ordinality bigint, found boolean, id text, identity jsonb,
               error text, sqlstate text)
AS 'MODULE_PATHNAME', 'dfend_get_identities'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED ROWS 100;
CREATE FUNCTION dfend_get_identities(user_ids integer[])
RETURNS TABLE (user_id integer, ordinality bigint, found boolean, id text, identity jsonb,
               error text, sqlstate text)
AS 'MODULE_PATHNAME', 'dfend_get_identities'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED ROWS 100;
CREATE FUNCTION dfend_get_identities(user_ids uuid[])
RETURNS TABLE (user_id uuid, ordinality bigint, found boolean, id text, identity jsonb,
               error text, sqlstate text)
AS 'MODULE_PATHNAME', 'dfend_get_identities'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED ROWS 100;
COMMENT ON FUNCTION dfend_get_identities(text[]) IS
'Fetches the DFend Identities of many user ids at once: one row per element, in order; found is false for 404, error and sqlstate tell a failed lookup';
COMMENT ON FUNCTION dfend_get_identities(bigint[]) IS
'Fetches the DFend Identities of many bigint user ids at once: one row per element, in order';
COMMENT ON FUNCTION dfend_get_identities(integer[]) IS
'Fetches the DFend Identities of many integer user ids at once: one row per element, in order';
COMMENT ON FUNCTION dfend_get_identities(uuid[]) IS
'Fetches the DFend Identities of many uuid user ids at once: one row per element, in order';

-- The same by DFend ids. A name of its own: an overload on text[] could not
-- tell user ids from DFend ids.
CREATE FUNCTION dfend_get_identities_by_id(ids text[])
RETURNS TABLE (id text, ordinality bigint, found boolean, identity jsonb,
               error text, sqlstate text)
AS 'MODULE_PATHNAME', 'dfend_get_identities_by_id'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED ROWS 100;
COMMENT ON FUNCTION dfend_get_identities_by_id(text[]) IS
'Fetches the DFend Identities of many DFend ids at once: one row per element, in order';

-- Each lookup spends quota with the server's key, as dfend_get_identity does.
REVOKE EXECUTE ON FUNCTION dfend_get_identity(bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_get_identity(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_get_identity(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_get_identities(text[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_get_identities(bigint[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_get_identities(integer[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_get_identities(uuid[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_get_identities_by_id(text[]) FROM PUBLIC;

-- Reading an Identity: pure functions of the jsonb, no request, so they stay
-- executable by PUBLIC. A field that is missing or has another JSON type
-- gives NULL rather than an error: the reply's shape is DFend's.
CREATE FUNCTION dfend_identity_time(identity jsonb) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- "time" is Unix epoch milliseconds.
    SELECT CASE WHEN jsonb_typeof(identity OPERATOR(pg_catalog.->) 'time') OPERATOR(pg_catalog.=) 'number'
                THEN to_timestamp((identity OPERATOR(pg_catalog.->>) 'time')::float8 OPERATOR(pg_catalog./) 1000) END
$$;
COMMENT ON FUNCTION dfend_identity_time(jsonb) IS
'The Identity''s time (Unix epoch milliseconds) as timestamptz; NULL when absent';

CREATE FUNCTION dfend_identity_emails(identity jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(identity OPERATOR(pg_catalog.#>) '{identifiers,emails}') OPERATOR(pg_catalog.=) 'array'
                THEN ARRAY(SELECT jsonb_array_elements_text(identity OPERATOR(pg_catalog.#>) '{identifiers,emails}')) END
$$;
COMMENT ON FUNCTION dfend_identity_emails(jsonb) IS
'The Identity''s identifiers.emails as text[]; NULL when absent';

CREATE FUNCTION dfend_identity_phones(identity jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(identity OPERATOR(pg_catalog.#>) '{identifiers,phones}') OPERATOR(pg_catalog.=) 'array'
                THEN ARRAY(SELECT jsonb_array_elements_text(identity OPERATOR(pg_catalog.#>) '{identifiers,phones}')) END
$$;
COMMENT ON FUNCTION dfend_identity_phones(jsonb) IS
'The Identity''s identifiers.phones (E.164) as text[]; NULL when absent';

-- END SECTION reads

-- SECTION status (dfend_status functions, grants)

-- What an application may ask about its own users: is the DFend id stored,
-- pending, dead (and why), or was the row never queued. SECURITY INVOKER C
-- functions (src/pg/status.cpp): the caller must have SELECT on the table
-- (or on its user id and id columns) and no row-level security may apply to
-- it; the outbox is then read with the extension owner's rights and the
-- table as its owner. Revoked from PUBLIC like every dfend function: grant
-- them to the application's role (README, "Status").
CREATE FUNCTION dfend_user_status(
    table_name regclass, user_id text,
    OUT state text, OUT id text, OUT attempts integer, OUT next_attempt_at timestamptz,
    OUT last_error text, OUT enqueued_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'dfend_user_status'
-- Stable: one snapshot. Parallel unsafe: it reads the table in a subtransaction.
LANGUAGE C STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION dfend_user_status(regclass, text) IS
'Whether a user''s DFend id is stored, pending, dead (with the error) or not queued';

-- The same for bigint, integer and uuid user ids, without a cast.
CREATE FUNCTION dfend_user_status(
    table_name regclass, user_id bigint,
    OUT state text, OUT id text, OUT attempts integer, OUT next_attempt_at timestamptz,
    OUT last_error text, OUT enqueued_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'dfend_user_status'
LANGUAGE C STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION dfend_user_status(regclass, bigint) IS
'Whether a user''s DFend id is stored, pending, dead (with the error) or not queued';

CREATE FUNCTION dfend_user_status(
    table_name regclass, user_id integer,
    OUT state text, OUT id text, OUT attempts integer, OUT next_attempt_at timestamptz,
    OUT last_error text, OUT enqueued_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'dfend_user_status'
LANGUAGE C STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION dfend_user_status(regclass, integer) IS
'Whether a user''s DFend id is stored, pending, dead (with the error) or not queued';

CREATE FUNCTION dfend_user_status(
    table_name regclass, user_id uuid,
    OUT state text, OUT id text, OUT attempts integer, OUT next_attempt_at timestamptz,
    OUT last_error text, OUT enqueued_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'dfend_user_status'
LANGUAGE C STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION dfend_user_status(regclass, uuid) IS
'Whether a user''s DFend id is stored, pending, dead (with the error) or not queued';

CREATE FUNCTION dfend_table_status(
    table_name regclass,
    OUT rows bigint, OUT stored bigint, OUT without_id bigint, OUT pending bigint,
    OUT dead bigint, OUT not_queued bigint, OUT oldest_pending_age interval)
RETURNS record
AS 'MODULE_PATHNAME', 'dfend_table_status'
LANGUAGE C STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION dfend_table_status(regclass) IS
'Rows of an attached table by the state of their DFend id: stored, pending, dead, not queued';

REVOKE EXECUTE ON FUNCTION dfend_user_status(regclass, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_user_status(regclass, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_user_status(regclass, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_user_status(regclass, uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_table_status(regclass) FROM PUBLIC;

-- Monitoring: pg_monitor reads the queue's depth, the worker's state and
-- the backfills' progress (counts, states, table names, PIDs; no user data).
-- dfend_dead_letters is not granted: it holds user ids and error texts that
-- may quote an email or phone (README, "Status").
GRANT SELECT ON dfend_queue_status, dfend_backfill_progress TO pg_monitor;
GRANT EXECUTE ON FUNCTION dfend_worker_status() TO pg_monitor;

-- END SECTION status

-- SECTION commit (commit-time registration, notify)

-- Fields left out of a user's latest registration because they failed
-- validation (invalid_fields 'drop'): one row per user and field, replaced
-- whenever the user is registered again, removed with the table.
CREATE TABLE dfend_dropped_field (
    table_name regclass NOT NULL,
    user_id text NOT NULL,
    field text NOT NULL CHECK (field IN ('email', 'phone', 'metadata')),
    reason text NOT NULL,
    dropped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, user_id, field)
);
SELECT pg_catalog.pg_extension_config_dump('dfend_dropped_field', '');
COMMENT ON TABLE dfend_dropped_field IS
'Fields left out of users'' latest registrations because they failed validation, and why';
REVOKE ALL ON dfend_dropped_field FROM PUBLIC;

-- END SECTION commit

-- SECTION stats (dfend_stats, failed-request log; issue 9)

-- Request statistics, cluster-wide, from shared memory (src/pg/stats.cpp):
-- one row per database and source that sent a request since the last
-- reset. Needs shared_preload_libraries; without it the functions return
-- no rows, with a NOTICE.
CREATE FUNCTION dfend_internal_stats(
    OUT datid oid, OUT source text, OUT requests bigint,
    OUT status_2xx bigint, OUT status_rejected bigint, OUT status_401_403 bigint,
    OUT status_404 bigint, OUT status_429 bigint, OUT status_5xx bigint,
    OUT status_other bigint, OUT transport_errors bigint, OUT timeouts bigint,
    OUT cancelled bigint, OUT retries bigint,
    OUT p50_ms double precision, OUT p95_ms double precision, OUT p99_ms double precision,
    OUT bytes_sent bigint, OUT bytes_received bigint,
    OUT last_error text, OUT last_error_at timestamptz, OUT stats_reset timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'dfend_internal_stats'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
REVOKE EXECUTE ON FUNCTION dfend_internal_stats() FROM PUBLIC;

CREATE VIEW dfend_stats AS
SELECT s.datid, d.datname, s.source, s.requests,
       s.status_2xx, s.status_rejected, s.status_401_403, s.status_404, s.status_429,
       s.status_5xx, s.status_other, s.transport_errors, s.timeouts, s.cancelled,
       s.retries, s.p50_ms, s.p95_ms, s.p99_ms, s.bytes_sent, s.bytes_received,
       s.last_error, s.last_error_at, s.stats_reset
FROM @extschema@.dfend_internal_stats() AS s
LEFT JOIN pg_catalog.pg_database AS d ON d.oid OPERATOR(pg_catalog.=) s.datid;
COMMENT ON VIEW dfend_stats IS
'Requests to DFend per database and source (sql, trigger, worker, backfill): outcomes, retries, latency, bytes, last error';

CREATE FUNCTION dfend_stats_reset() RETURNS void
AS 'MODULE_PATHNAME', 'dfend_stats_reset'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
REVOKE EXECUTE ON FUNCTION dfend_stats_reset() FROM PUBLIC;
COMMENT ON FUNCTION dfend_stats_reset() IS
'Zeroes dfend_stats and empties dfend_failed_requests, for the whole cluster';

CREATE FUNCTION dfend_internal_failed_requests(
    OUT failed_at timestamptz, OUT datid oid, OUT source text, OUT status integer,
    OUT sqlstate text, OUT message text, OUT detail text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'dfend_internal_failed_requests'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
REVOKE EXECUTE ON FUNCTION dfend_internal_failed_requests() FROM PUBLIC;

CREATE VIEW dfend_failed_requests AS
SELECT f.failed_at, f.datid, d.datname, f.source, f.status, f.sqlstate, f.message, f.detail
FROM @extschema@.dfend_internal_failed_requests() AS f
LEFT JOIN pg_catalog.pg_database AS d ON d.oid OPERATOR(pg_catalog.=) f.datid
ORDER BY f.failed_at DESC;
COMMENT ON VIEW dfend_failed_requests IS
'The most recent failed calls to DFend (dfend.failed_request_log_size), newest first';

-- Monitoring: pg_monitor reads the counts and the last error of each row
-- (dfend's and DFend's words about a request, never the key or a body).
-- dfend_failed_requests is not granted: DFend's words may quote a user's
-- email or phone; grant it to a role by hand (README, "Monitoring").
GRANT SELECT ON dfend_stats TO pg_monitor;
GRANT EXECUTE ON FUNCTION dfend_internal_stats() TO pg_monitor;

-- END SECTION stats

-- SECTION launcher (workers that follow databases; issue 9)

-- END SECTION launcher

-- SECTION operations (caches, DROP EXTENSION, dumps, versions; issue 9)
-- Backfill history is part of a dump, like the attachments and the outbox.
SELECT pg_catalog.pg_extension_config_dump('dfend_backfill_run', '');
SELECT pg_catalog.pg_extension_config_dump('dfend_backfill_run_run_id_seq', '');

-- END SECTION operations

-- SECTION bulk (statement-level insert trigger; issue 8)

-- END SECTION bulk

-- SECTION rate (shared request rate, breaker visibility; issue 8)

-- dfend_internal_rate, dfend_rate and dfend_internal_breaker are defined
-- before dfend_queue_status, which uses them.

-- END SECTION rate
