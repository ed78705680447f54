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
-- END trigger and worker

-- BEGIN backfill (owner: src/pg/backfill.cpp)
-- END backfill
