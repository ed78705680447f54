-- Helpers for the other regression tests. test/run-tests.sh starts the
-- emulator and sets dfend.api_url and dfend.api_key_file in postgresql.conf.
SELECT extversion FROM pg_extension WHERE extname = 'dfend';

-- Runs a statement and reports its SQLSTATE and message instead of failing.
CREATE FUNCTION try(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- The same, with DETAIL and HINT, for checking what a user is told.
CREATE FUNCTION try_verbose(statement text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    detail text;
    hint text;
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ': ' || SQLERRM
        || coalesce(E'\nDETAIL: ' || nullif(detail, ''), '')
        || coalesce(E'\nHINT: ' || nullif(hint, ''), '');
END $$;

SHOW dfend.api_key;
SHOW dfend.max_retries;
SHOW dfend.request_timeout;
SHOW dfend.connect_timeout;
