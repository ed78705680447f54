-- How DFend's answers map to SQLSTATEs. Retries are off here (see retries.sql).
\! test/emu reset
SET dfend.max_retries = 0;

-- 401: the key is wrong. 28000 with a hint; the key is never in the message.
\getenv wrong_key_file DFEND_WRONG_KEY_FILE
SET dfend.api_key_file = :'wrong_key_file';
SELECT try_verbose($$SELECT dfend_register_identity('e-1')$$);
SELECT try_verbose($$SELECT dfend_get_identity('e-1')$$);
RESET dfend.api_key_file;

-- 400: DFend rejects the request. 22023 with DFend's words in DETAIL.
\! test/emu config '{"fail_user_ids": ["e-rejected"]}'
SELECT try_verbose($$SELECT dfend_register_identity('e-rejected')$$);

-- 503 and 429: 58000.
\! test/emu config '{"fail_user_ids": [], "rate_5xx": 1}'
SELECT try_verbose($$SELECT dfend_register_identity('e-2')$$);
\! test/emu config '{"rate_5xx": 0, "rate_429": 1, "retry_after": 0}'
SELECT try_verbose($$SELECT dfend_register_identity('e-3')$$);

-- A dropped connection: 08006.
\! test/emu config '{"rate_429": 0, "rate_drop": 1}'
SELECT try($$SELECT dfend_register_identity('e-4')$$);
\! test/emu config '{"rate_drop": 0}'

-- Nothing listens: 08001.
SET dfend.api_url = 'http://127.0.0.1:1';
SELECT try($$SELECT dfend_register_identity('e-5')$$);
RESET dfend.api_url;

-- A request that outlives dfend.request_timeout: 08006.
\! test/emu config '{"latency_ms": 2000}'
SET dfend.request_timeout = '200ms';
SELECT try($$SELECT dfend_register_identity('e-6')$$);
RESET dfend.request_timeout;
\! test/emu config '{"latency_ms": 0}'

-- The backend is still healthy, and none of the failures created anything.
SELECT created FROM dfend_register_identity('e-7');
\! test/emu stat identities

-- Settings refuse unsafe or wrong values.
SELECT try($$SET dfend.api_url = 'http://api.example.com'$$);
SELECT try($$SET dfend.api_url = 'ftp://127.0.0.1/'$$);
SELECT try($$SET dfend.api_url = 'https://user:pw@api.example.com'$$);
SELECT try($$SET dfend.api_url = 'not a url'$$);
SELECT try($$SET dfend.unknown_setting = 1$$);
SELECT try($$SET dfend.max_retries = -1$$);
