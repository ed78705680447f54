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
    attached_at timestamptz NOT NULL DEFAULT now()
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
    enqueued_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dfend_outbox_due ON dfend_outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX dfend_outbox_row ON dfend_outbox (table_name, user_id);
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

-- BEGIN trigger and worker (owner: src/pg/attach.cpp, src/pg/worker.cpp)

-- The generic trigger behind dfend_attach; its arguments carry the mapping.
-- SECURITY DEFINER so that writing the outbox needs no grant to the table's
-- users; EXECUTE is revoked, so only dfend_attach creates such triggers.
CREATE FUNCTION dfend_trigger() RETURNS trigger
AS 'MODULE_PATHNAME', 'dfend_trigger'
LANGUAGE C SECURITY DEFINER;
REVOKE EXECUTE ON FUNCTION dfend_trigger() FROM PUBLIC;
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

CREATE FUNCTION dfend_attach(
    table_name regclass,
    user_id_column name,
    id_column name,
    email_column name DEFAULT NULL,
    phone_column name DEFAULT NULL,
    metadata_column name DEFAULT NULL,
    merge boolean DEFAULT false,
    mode text DEFAULT 'async',
    on_error text DEFAULT 'queue')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    relation_kind "char";
    column_name name;
    column_type oid;
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
    SELECT c.relkind INTO relation_kind FROM pg_class c WHERE c.oid = table_name;
    IF relation_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', table_name USING ERRCODE = 'wrong_object_type';
    END IF;
    IF EXISTS (SELECT FROM @extschema@.dfend_attachment a WHERE a.table_name = dfend_attach.table_name) THEN
        RAISE EXCEPTION 'table % is already attached to DFend', table_name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Call dfend_detach first to change how it is attached.';
    END IF;

    -- Every named column must exist, with a type that can be used.
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
    IF (SELECT typcategory FROM pg_type WHERE oid = column_type) <> 'S' THEN
        RAISE EXCEPTION 'column "%" must have a text type to hold DFend ids', id_column
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = format('Its type is %s.', format_type(column_type, NULL));
    END IF;
    SELECT atttypid INTO column_type FROM pg_attribute
    WHERE attrelid = table_name AND attname = user_id_column;
    IF NOT ((SELECT typcategory FROM pg_type WHERE oid = column_type) IN ('S', 'N')
            OR column_type = 'uuid'::regtype) THEN
        RAISE EXCEPTION 'column "%" cannot serve as a user id', user_id_column
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = format('Its type is %s; a text, numeric or uuid type is needed.',
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
         merge, mode, on_error)
    VALUES (table_name, user_id_column, id_column, email_column, phone_column, metadata_column,
            merge, mode, on_error);

    trigger_args := format('%L, %L, %L, %L, %L, %L, %L, %L', mode, user_id_column, id_column,
                           coalesce(email_column, ''), coalesce(phone_column, ''),
                           coalesce(metadata_column, ''), merge, on_error);
    EXECUTE format('CREATE TRIGGER dfend_insert %s INSERT ON %s FOR EACH ROW EXECUTE FUNCTION @extschema@.dfend_trigger(%s)',
                   CASE mode WHEN 'sync' THEN 'BEFORE' ELSE 'AFTER' END, table_name, trigger_args);
    -- A changed email, phone or metadata re-registers the user with merge; an
    -- update of the id column alone never calls DFend.
    contact_columns := array_remove(ARRAY[email_column, phone_column, metadata_column], NULL);
    IF cardinality(contact_columns) > 0 THEN
        SELECT string_agg(quote_ident(c), ', '),
               string_agg(format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', c), ' OR ')
        INTO update_list, update_condition
        FROM unnest(contact_columns) AS c;
        EXECUTE format('CREATE TRIGGER dfend_update %s UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) EXECUTE FUNCTION @extschema@.dfend_trigger(%s)',
                       CASE mode WHEN 'sync' THEN 'BEFORE' ELSE 'AFTER' END,
                       update_list, table_name, update_condition, trigger_args);
    END IF;

    IF mode = 'async' OR on_error = 'queue' THEN
        SELECT worker_state INTO worker FROM @extschema@.dfend_worker_status();
        IF worker LIKE 'not running%' THEN
            RAISE NOTICE 'no dfend worker drains the outbox of database "%"', current_database()
                USING DETAIL = format('The worker is %s.', worker),
                      HINT = format('Add dfend to shared_preload_libraries and %L to dfend.worker_databases, or call dfend_process_queue() regularly, for example from pg_cron.',
                                    current_database());
        END IF;
    END IF;
END $$;
COMMENT ON FUNCTION dfend_attach(regclass, name, name, name, name, name, boolean, text, text) IS
'Attaches a users table: new and changed rows get their DFend id stored automatically';

CREATE FUNCTION dfend_detach(table_name regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    discarded bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM @extschema@.dfend_attachment a WHERE a.table_name = dfend_detach.table_name) THEN
        RAISE EXCEPTION 'table % is not attached to DFend', table_name
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS dfend_insert ON %s', table_name);
    EXECUTE format('DROP TRIGGER IF EXISTS dfend_update ON %s', table_name);
    DELETE FROM @extschema@.dfend_attachment a WHERE a.table_name = dfend_detach.table_name;
    DELETE FROM @extschema@.dfend_outbox o
    WHERE o.table_name = dfend_detach.table_name AND o.state = 'pending';
    GET DIAGNOSTICS discarded = ROW_COUNT;
    IF discarded > 0 THEN
        RAISE NOTICE 'discarded % pending outbox entries of table %', discarded, table_name;
    END IF;
END $$;
COMMENT ON FUNCTION dfend_detach(regclass) IS
'Detaches a table: removes its triggers, its mapping and its pending outbox entries';

CREATE FUNCTION dfend_process_queue(max_rows integer DEFAULT 1000) RETURNS bigint
AS 'MODULE_PATHNAME', 'dfend_process_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
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

CREATE VIEW dfend_queue_status AS
SELECT (SELECT count(*) FROM @extschema@.dfend_outbox WHERE state = 'pending') AS pending,
       (SELECT count(*) FROM @extschema@.dfend_outbox WHERE state = 'pending' AND next_attempt_at <= now()) AS due,
       (SELECT now() - min(enqueued_at) FROM @extschema@.dfend_outbox WHERE state = 'pending') AS oldest_pending_age,
       (SELECT count(*) FROM @extschema@.dfend_outbox WHERE state = 'dead') AS dead,
       w.worker_pid, w.worker_state, w.worker_started_at, w.last_batch_at,
       w.registered AS worker_registered, w.failed AS worker_failed
FROM @extschema@.dfend_worker_status() AS w;
COMMENT ON VIEW dfend_queue_status IS
'Outbox depth, age of the oldest pending entry, dead entries and the worker''s state';

CREATE VIEW dfend_attachments AS
SELECT table_name, user_id_column, id_column, email_column, phone_column, metadata_column,
       merge, mode, on_error, attached_at
FROM @extschema@.dfend_attachment;
COMMENT ON VIEW dfend_attachments IS 'Tables attached to DFend and their column mapping';

-- A dropped table takes its mapping and outbox entries with it.
CREATE FUNCTION dfend_internal_on_drop() RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM @extschema@.dfend_attachment a
    USING pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = a.table_name::oid;
    DELETE FROM @extschema@.dfend_outbox o
    USING pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = o.table_name::oid;
END $$;
REVOKE EXECUTE ON FUNCTION dfend_internal_on_drop() FROM PUBLIC;
CREATE EVENT TRIGGER dfend_on_drop ON sql_drop EXECUTE FUNCTION dfend_internal_on_drop();

REVOKE EXECUTE ON FUNCTION dfend_attach(regclass, name, name, name, name, name, boolean, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_detach(regclass) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_process_queue(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dfend_retry_dead(regclass) FROM PUBLIC;
REVOKE ALL ON dfend_queue_status, dfend_attachments FROM PUBLIC;

-- END trigger and worker

-- BEGIN backfill (owner: src/pg/backfill.cpp)
-- END backfill
