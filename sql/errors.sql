-- How DFend's answers map to SQLSTATEs. Retries are off here (see retries.sql).
-- dfend's own codes are in class ID (src/pg/sqlstates.hpp), none in class 08.
-- The DETAIL of one worth retrying ends with "Retry after N ms.": DFend's
-- Retry-After, or else dfend's next backoff step (dfend.retry_base_delay,
-- 10ms in the test cluster, doubled per retry made).
\! test/emu reset
SET dfend.max_retries = 0;

-- What application code reads: the SQLSTATE, and the wait that ends DETAIL
-- (for the errors whose DETAIL quotes libcurl, which may vary).
CREATE FUNCTION try_wait(statement text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || SQLERRM
        || coalesce(', retry after ' || substring(detail from 'Retry after (\d+) ms\.$') || ' ms',
                    ', no wait');
END $$;

-- 401: the key is wrong. ID401 with a hint and no wait; the key is never in
-- the message.
\getenv wrong_key_file DFEND_WRONG_KEY_FILE
SET dfend.api_key_file = :'wrong_key_file';
SELECT try_verbose($$SELECT dfend_register_identity('e-1')$$);
SELECT try_verbose($$SELECT dfend_get_identity('e-1')$$);
RESET dfend.api_key_file;

-- 400 and 422: DFend rejects the data. ID422 with DFend's status and words
-- in DETAIL, and no wait.
\! test/emu config '{"fail_user_ids": ["e-rejected"]}'
SELECT try_verbose($$SELECT dfend_register_identity('e-rejected')$$);
\! test/emu config '{"fail_status": 422}'
SELECT try_verbose($$SELECT dfend_register_identity('e-rejected')$$);
\! test/emu config '{"fail_user_ids": [], "fail_status": 400}'

-- dfend's own validation refuses data before sending it: the standard 22023.
SELECT try_verbose($$SELECT dfend_register_identity('e-local', email => 'not an email')$$);

-- 503: ID503 with dfend's wait.
\! test/emu config '{"rate_5xx": 1}'
SELECT try_verbose($$SELECT dfend_register_identity('e-2')$$);

-- 429: ID429, with dfend's wait when DFend sent no Retry-After, and with
-- DFend's when it did.
\! test/emu config '{"rate_5xx": 0, "rate_429": 1, "retry_after": 0}'
SELECT try_verbose($$SELECT dfend_register_identity('e-3')$$);
\! test/emu config '{"retry_after": 3}'
SELECT try_verbose($$SELECT dfend_register_identity('e-3')$$);

-- What an application does with it: catch the codes worth retrying and
-- read the wait.
DO $$
DECLARE
    detail text;
BEGIN
    PERFORM dfend_register_identity('e-3');
EXCEPTION WHEN SQLSTATE 'ID429' OR SQLSTATE 'ID503' THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RAISE NOTICE 'register e-3 again in % ms', substring(detail from 'Retry after (\d+) ms\.$');
END $$;
\! test/emu config '{"rate_429": 0, "retry_after": 1}'

-- A dropped connection: ID503.
\! test/emu config '{"rate_drop": 1}'
SELECT try_wait($$SELECT dfend_register_identity('e-4')$$);
\! test/emu config '{"rate_drop": 0}'

-- Nothing listens (a closed loopback port): ID503, not class 08.
SET dfend.api_url = 'http://127.0.0.1:1';
SELECT try_wait($$SELECT dfend_register_identity('e-5')$$);
RESET dfend.api_url;

-- A request that outlives dfend.request_timeout: ID503.
\! test/emu config '{"latency_ms": 2000}'
SET dfend.request_timeout = '200ms';
SELECT try_wait($$SELECT dfend_register_identity('e-6')$$);
RESET dfend.request_timeout;
\! test/emu config '{"latency_ms": 0}'

-- The backend is still healthy, and none of the failures created anything.
SELECT created FROM dfend_register_identity('e-7');
\! test/emu stat identities

-- A reply that is not the documented JSON: ID502, no wait.
\! test/emu config '{"reply_fault": "invalid_utf8_success"}'
SELECT try_verbose($$SELECT dfend_get_identity('e-7')$$);
\! test/emu config '{"reply_fault": "none"}'

-- Settings refuse unsafe or wrong values.
SELECT try($$SET dfend.api_url = 'http://api.example.com'$$);
SELECT try($$SET dfend.api_url = 'ftp://127.0.0.1/'$$);
SELECT try($$SET dfend.api_url = 'https://user:pw@api.example.com'$$);
SELECT try($$SET dfend.api_url = 'not a url'$$);
SELECT try($$SET dfend.unknown_setting = 1$$);
SELECT try($$SET dfend.max_retries = -1$$);
