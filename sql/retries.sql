-- Transient failures are retried with backoff; permanent ones are not.
-- (dfend.retry_base_delay is 10ms in the test cluster.)
\! test/emu reset

-- Every attempt fails: 1 + dfend.max_retries requests, then ID503. DETAIL
-- ends with the wait of the step after the last: 10 ms doubled 3 times.
SET dfend.max_retries = 3;
\! test/emu config '{"rate_5xx": 1}'
SELECT try_verbose($$SELECT dfend_register_identity('r-1')$$);
\! test/emu stat posts
\! test/emu config '{"rate_5xx": 0}'

-- Two failures, then success: the call succeeds on the third request.
\! test/emu reset
\! test/emu config '{"fail_next_5xx": 2}'
SELECT created FROM dfend_register_identity('r-2');
\! test/emu stat posts

-- 429 with Retry-After: waited for, then success.
\! test/emu reset
\! test/emu config '{"fail_next_429": 1, "retry_after": 1}'
SELECT created FROM dfend_register_identity('r-3');
\! test/emu stat posts

-- A Retry-After longer than dfend.retry_max_delay fails at once, and DETAIL
-- ends with DFend's wait.
\! test/emu reset
\! test/emu config '{"fail_next_429": 1, "retry_after": 30}'
SELECT try_verbose($$SELECT dfend_register_identity('r-4')$$);
\! test/emu stat posts

-- The response was lost after DFend stored the identity: the retry gets
-- the same identity back, and DFend holds one identity, not two.
\! test/emu reset
\! test/emu config '{"drop_next": 1, "drop_after_commit": true}'
SELECT created FROM dfend_register_identity('r-5');
\! test/emu stat posts
\! test/emu stat identities

-- 400 and 401 are never retried.
\! test/emu reset
\! test/emu config '{"fail_user_ids": ["r-6"]}'
SELECT try($$SELECT dfend_register_identity('r-6')$$);
\! test/emu stat posts
\getenv wrong_key_file DFEND_WRONG_KEY_FILE
SET dfend.api_key_file = :'wrong_key_file';
SELECT try($$SELECT dfend_register_identity('r-7')$$);
\! test/emu stat posts
RESET dfend.api_key_file;

-- dfend.max_retries = 0 makes one attempt.
\! test/emu reset
\! test/emu config '{"fail_next_5xx": 1}'
SET dfend.max_retries = 0;
SELECT try($$SELECT dfend_register_identity('r-8')$$);
\! test/emu stat posts
RESET dfend.max_retries;
