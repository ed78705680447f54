-- dfend_stats, dfend_failed_requests and dfend_stats_reset: exact counts per
-- source for requests whose outcome the emulator decides (one-shot faults),
-- the failed-request log without the key, and what pg_monitor may read.
\! test/emu reset
SET client_min_messages = warning;
SELECT dfend_stats_reset();
SELECT count(*) AS rows_after_reset FROM dfend_stats WHERE datname = current_database();
SET dfend.max_retries = 2; -- dfend.retry_base_delay is 10ms in the test cluster

-- This database's rows, without what varies from run to run.
CREATE VIEW my_stats AS
SELECT source, requests, status_2xx AS "2xx", status_rejected AS rejected,
       status_401_403 AS "401/403", status_404 AS "404", status_429 AS "429",
       status_5xx AS "5xx", status_other AS other, transport_errors AS transport,
       timeouts, cancelled, retries
FROM dfend_stats WHERE datname = current_database() ORDER BY source;

-- sql: a 2xx, a 404 lookup, a 400, a 503 retried into a 2xx, a 503 that
-- outlasts the retries, a rejected key, and data refused before sending.
SELECT id LIKE 'idn_%' AS registered FROM dfend_register_identity('st-1', 'st1@example.com');
SELECT dfend_get_identity('st-unknown') IS NULL AS not_found;
\! test/emu config '{"fail_user_ids": ["st-rejected"], "error_echo_key": true}'
SELECT try($$SELECT dfend_register_identity('st-rejected')$$);
\! test/emu config '{"fail_user_ids": [], "error_echo_key": false, "fail_next_5xx": 2}'
SELECT id LIKE 'idn_%' AS registered_after_retries FROM dfend_register_identity('st-2');
\! test/emu config '{"fail_next_5xx": 3}'
SELECT try($$SELECT dfend_register_identity('st-3')$$);
\getenv wrong_key_file DFEND_WRONG_KEY_FILE
SET dfend.api_key_file = :'wrong_key_file';
SELECT try($$SELECT dfend_register_identity('st-4')$$);
RESET dfend.api_key_file;
SELECT try($$SELECT dfend_register_identity('st-5', email => 'not an email')$$);
-- dfend_get_identities: one request per distinct value.
SELECT count(*) AS looked_up FROM dfend_get_identities(ARRAY['st-1', 'st-2', 'st-1']);

-- trigger: a sync table's row, registered by its COMMIT.
CREATE TABLE st_signups (id text PRIMARY KEY, email text, dfend_id text);
SELECT dfend_attach('st_signups', 'id', 'dfend_id', email_column => 'email', mode => 'sync');
INSERT INTO st_signups VALUES ('st-sync', 'sync@example.com');
SELECT dfend_id LIKE 'idn_%' AS stored_by_commit FROM st_signups;

-- worker: dfend_process_queue drains an async table's entries; one 503 is
-- retried.
CREATE TABLE st_users (id bigint PRIMARY KEY, email text, dfend_id text);
SELECT dfend_attach('st_users', 'id', 'dfend_id', email_column => 'email');
INSERT INTO st_users VALUES (1, 'one@example.com'), (2, 'two@example.com');
\! test/emu config '{"fail_next_5xx": 1}'
SELECT dfend_process_queue();
SELECT count(dfend_id) AS stored_by_worker FROM st_users;

-- backfill: rows that were there before a table was attached.
CREATE TABLE st_old (id bigint PRIMARY KEY, email text, dfend_id text);
INSERT INTO st_old SELECT n, 'old' || n || '@example.com' FROM generate_series(1, 3) AS n;
CALL dfend_backfill('st_old', user_id_column => 'id', id_column => 'dfend_id');

-- Every request once: sql 1 + 1 + 1 + 3 + 3 + 1 + 2, trigger 1, worker 3,
-- backfill 3.
SELECT * FROM my_stats;
-- The outcome columns add up to requests, latency percentiles are ordered
-- bucket bounds, and the bodies were counted.
SELECT source,
       requests = status_2xx + status_rejected + status_401_403 + status_404 + status_429
                  + status_5xx + status_other + transport_errors + timeouts + cancelled AS adds_up,
       p50_ms > 0 AND p50_ms <= p95_ms AND p95_ms <= p99_ms AS percentiles_ordered,
       bytes_sent > 0 AND bytes_received > 0 AS bytes_counted,
       stats_reset <= now() AS reset_time
FROM dfend_stats WHERE datname = current_database() ORDER BY source;
-- The last error of each source, with DFend's words; sql's is the key's.
SELECT source, last_error, last_error_at > now() - interval '1 minute' AS recent
FROM dfend_stats WHERE datname = current_database() ORDER BY source;

-- The failed-request log: the three calls that failed after a request,
-- newest first (the local refusal sent nothing). The key DFend echoed in
-- its 400 was redacted before it got here.
SELECT datname = current_database() AS this_database, source, status, sqlstate, message, detail
FROM dfend_failed_requests;
SELECT count(*) AS rows_with_a_key
FROM dfend_failed_requests
WHERE message || coalesce(detail, '') LIKE '%sk_test_emulator%'
   OR message || coalesce(detail, '') LIKE '%sk_wrong_key%';
SELECT count(*) AS stats_with_a_key FROM dfend_stats
WHERE last_error LIKE '%sk_test_emulator%' OR last_error LIKE '%sk_wrong_key%';

-- pg_monitor reads dfend_stats, not the failed-request log, and cannot reset.
CREATE ROLE st_monitor LOGIN IN ROLE pg_monitor;
SET ROLE st_monitor;
SELECT count(*) AS monitor_sees FROM dfend_stats WHERE datname = current_database();
SELECT try($$SELECT count(*) FROM dfend_failed_requests$$);
SELECT try($$SELECT dfend_stats_reset()$$);
RESET ROLE;
-- The README's grants for a role that may read the log too.
GRANT SELECT ON dfend_failed_requests TO st_monitor;
GRANT EXECUTE ON FUNCTION dfend_internal_failed_requests() TO st_monitor;
SET ROLE st_monitor;
SELECT count(*) AS monitor_reads_the_log FROM dfend_failed_requests;
RESET ROLE;

-- Reset: nothing counted, nothing logged, a new reset time.
SELECT stats_reset AS reset_before FROM dfend_stats LIMIT 1 \gset
SELECT dfend_stats_reset();
SELECT * FROM my_stats;
SELECT count(*) AS failed_after_reset FROM dfend_failed_requests;
SELECT id LIKE 'idn_%' AS registered FROM dfend_register_identity('st-1');
SELECT source, requests, status_2xx, last_error IS NULL AS no_error,
       stats_reset > :'reset_before' AS reset_later
FROM dfend_stats WHERE datname = current_database();

-- The request rate dfend has learnt for the account, shared by the whole
-- server (dfend_rate), and the breaker: a 429 is heard by the shared rate.
SELECT count(*) FILTER (WHERE current) AS current_accounts,
       bool_and(api_url = current_setting('dfend.api_url')) FILTER (WHERE current) AS url
FROM dfend_rate;
SELECT rate_limited AS limited_before, requests AS requests_before FROM dfend_rate WHERE current \gset
\! test/emu config '{"rate_429": 1}'
SET dfend.max_retries = 0;
SELECT user_id, found, sqlstate FROM dfend_get_identities(ARRAY['st-limited']::text[]);
\! test/emu config '{"rate_429": 0}'
-- (requests counts paced requests only: a lookup is not paced, see README)
SELECT rate_limited = :limited_before + 1 AS heard_the_429, requests = :requests_before AS not_paced,
       rate > 0 AS has_rate, rate_limited_share BETWEEN 0 AND 1 AS has_share
FROM dfend_rate WHERE current;
SELECT breaker, request_rate > 0 AS has_rate, rate_limited_share >= 0 AS has_share FROM dfend_queue_status;
-- pg_monitor reads them too.
SET ROLE st_monitor;
SELECT count(*) FILTER (WHERE current) AS monitor_sees_rates FROM dfend_rate;
SELECT breaker FROM dfend_queue_status;
RESET ROLE;

RESET dfend.max_retries;
DROP VIEW my_stats;
SELECT dfend_detach('st_signups'), dfend_detach('st_users');
DROP TABLE st_signups, st_users, st_old;
REVOKE ALL ON dfend_failed_requests FROM st_monitor;
REVOKE ALL ON FUNCTION dfend_internal_failed_requests() FROM st_monitor;
DROP ROLE st_monitor;
