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

-- SECTION rate (shared request rate, breaker visibility; issue 8)

-- END SECTION rate
