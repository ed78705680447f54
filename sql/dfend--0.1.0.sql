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
