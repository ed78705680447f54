-- statement_timeout ends a request in flight with PostgreSQL's own 57014
-- and leaves the backend healthy. (pg_cancel_backend: test/scenarios.)
\! test/emu reset
\! test/emu config '{"rate_hang": 1, "hang_ms": 20000}'
SET statement_timeout = '300ms';
SELECT dfend_register_identity('c-1');
SELECT dfend_get_identity('c-1');
RESET statement_timeout;
\! test/emu config '{"rate_hang": 0}'
SELECT created FROM dfend_register_identity('c-2');

-- Retries never sleep past the statement's deadline: the call fails with
-- DFend's error instead of a timeout.
\! test/emu config '{"rate_429": 1, "retry_after": 2}'
SET statement_timeout = '1s';
SELECT try_verbose($$SELECT dfend_register_identity('c-3')$$);
RESET statement_timeout;
\! test/emu config '{"rate_429": 0}'
SELECT created FROM dfend_register_identity('c-3');
