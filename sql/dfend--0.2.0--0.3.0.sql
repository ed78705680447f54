-- dfend 0.2.0 -> 0.3.0: features for application developers (see CHANGELOG.md).
-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION dfend UPDATE TO '0.3.0'" to load this file. \quit

-- SECTION reads (dfend_get_identities, overloads)

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

-- END SECTION commit
