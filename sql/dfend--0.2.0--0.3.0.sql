-- dfend 0.2.0 -> 0.3.0: features for application developers (see CHANGELOG.md).
-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION dfend UPDATE TO '0.3.0'" to load this file. \quit

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

-- END SECTION status

-- SECTION commit (commit-time registration, notify)

-- END SECTION commit
