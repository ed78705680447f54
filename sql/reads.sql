-- Reads that scale: many lookups in one call (dfend_get_identities), user
-- ids of type bigint, integer and uuid without casts, and the helpers that
-- read an Identity's time, emails and phones.
\! test/emu reset
SET dfend.max_retries = 0;
SET timezone = 'UTC';

-- Users to look up, registered at the emulator first.
CREATE TEMP TABLE known (user_id text, id text);
INSERT INTO known
SELECT u, (dfend_register_identity(u, email => e, phone => p)).id
FROM (VALUES ('rd-a', 'a@example.com', '+14155550101'),
             ('rd-b', NULL, NULL),
             ('rd-c', 'c@example.com', NULL),
             ('42', NULL, NULL),
             ('7000000000', NULL, NULL),
             ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL, NULL)) AS v(u, e, p);
SELECT count(DISTINCT id) AS registered FROM known;
\! test/emu stat gets

-- One row per element, in the array's order (no ORDER BY here: the rows
-- come out as the array lists them), NULL and unknown users included; the
-- duplicate 'rd-c' and the NULL cost no request: 4 GETs for 6 elements.
SELECT r.ordinality, r.user_id, r.found,
       r.id = (SELECT k.id FROM known AS k WHERE k.user_id = r.user_id) AS right_id,
       r.identity -> 'identifiers' -> 'userIds' AS user_ids, r.error, r.sqlstate
FROM dfend_get_identities(ARRAY['rd-c', NULL, 'rd-a', 'nobody', 'rd-c', 'rd-b']) AS r;
\! test/emu stat gets

-- The identity is the one dfend_get_identity returns.
SELECT r.identity = dfend_get_identity('rd-a') AS same_as_single
FROM dfend_get_identities(ARRAY['rd-a']) AS r;

-- Empty and NULL arrays give no rows and send nothing.
SELECT count(*) AS rows FROM dfend_get_identities('{}'::text[]);
SELECT count(*) AS rows FROM dfend_get_identities(NULL::text[]);
\! test/emu stat gets

-- 10000 elements (the limit) of one user: one request, 10000 rows.
SELECT count(*) AS rows, count(*) FILTER (WHERE found) AS found,
       min(ordinality) AS first, max(ordinality) AS last
FROM dfend_get_identities(array_fill('rd-b'::text, ARRAY[10000]));
\! test/emu stat gets
-- One more is refused before anything is sent; so is a 2-D array.
SELECT try_verbose($$SELECT count(*) FROM dfend_get_identities(array_fill('rd-b'::text, ARRAY[10001]))$$);
SELECT try_verbose($$SELECT count(*) FROM dfend_get_identities(ARRAY[['rd-a', 'rd-b'], ['rd-c', 'rd-a']])$$);
\! test/emu stat gets

-- By DFend id: its own function, the same rules.
SELECT r.ordinality, r.id = (SELECT k.id FROM known AS k WHERE k.user_id = 'rd-b') AS is_rd_b,
       r.found, r.identity -> 'identifiers' -> 'userIds' AS user_ids, r.error
FROM dfend_get_identities_by_id(ARRAY[(SELECT id FROM known WHERE user_id = 'rd-b'),
                                      'idn_000000000000000000000000', NULL,
                                      (SELECT id FROM known WHERE user_id = 'rd-a')]) AS r;

-- A lookup that fails is reported on its row; the others keep their answers.
-- Local validation first: nothing is sent for '' or a 300-byte id.
SELECT r.ordinality, r.found, r.identity IS NOT NULL AS has_identity, r.error, r.sqlstate
FROM dfend_get_identities(ARRAY['rd-a', '', repeat('x', 300), 'rd-b']) AS r;
-- DFend failing one request (503, no retries left): one row has the error,
-- with the SQLSTATE dfend_get_identity raises for the same failure.
\! test/emu config '{"fail_next_5xx": 1}'
SELECT count(*) FILTER (WHERE found) AS found, count(*) FILTER (WHERE error IS NOT NULL) AS failed,
       min(error) AS error, min(sqlstate) AS sqlstate
FROM dfend_get_identities(ARRAY['rd-a', 'rd-b', 'rd-c']);
\! test/emu config '{"fail_next_5xx": 1}'
SELECT try($$SELECT dfend_get_identity('rd-a')$$);

-- A failure no lookup can escape raises for the whole call: a rejected key.
\getenv wrong_key_file DFEND_WRONG_KEY_FILE
SET dfend.api_key_file = :'wrong_key_file';
SELECT try_verbose($$SELECT count(*) FROM dfend_get_identities(ARRAY['rd-a', 'rd-b'])$$);
RESET dfend.api_key_file;

-- statement_timeout stops every lookup in flight with PostgreSQL's own
-- 57014, and the next call works.
\! test/emu config '{"rate_hang": 1, "hang_ms": 20000}'
SET statement_timeout = '300ms';
SELECT count(*) FROM dfend_get_identities(ARRAY['rd-a', 'rd-b', 'rd-c']);
RESET statement_timeout;
\! test/emu config '{"rate_hang": 0}'
SELECT count(*) FILTER (WHERE found) AS found FROM dfend_get_identities(ARRAY['rd-a', 'rd-b', 'rd-c']);

-- Reply text goes through the same checks as dfend_get_identity's: the key
-- JSON-escaped in a 200 reply is redacted, and an error reply that spells it
-- with control characters in between leaves neither in the row's error.
\! test/emu config '{"reply_fault": "escaped_key"}'
SELECT strpos(r.identity::text, 'sk_') AS key_prefix_at, r.identity -> 'note' AS note,
       r.identity -> 'spelled' AS spelled
FROM dfend_get_identities(ARRAY['rd-a']) AS r;
\! test/emu config '{"reply_fault": "split_key"}'
SELECT strpos(r.error, 'sk_') AS key_prefix_at, r.error ~ '[[:cntrl:]]' AS has_control,
       r.error, r.sqlstate
FROM dfend_get_identities(ARRAY['rd-a']) AS r;
-- A 200 reply that is not UTF-8 is not what DFend documents: it raises, as
-- for dfend_get_identity.
\! test/emu config '{"reply_fault": "invalid_utf8_success"}'
SELECT try($$SELECT count(*) FROM dfend_get_identities(ARRAY['rd-a'])$$);
SELECT try($$SELECT dfend_get_identity('rd-a')$$);
\! test/emu config '{"reply_fault": "none"}'

-- User ids of type integer, bigint and uuid, without casts; the result's
-- user_id column has the array's type, so it joins back without a cast.
SELECT dfend_get_identity(42) -> 'identifiers' -> 'userIds' AS by_integer,
       dfend_get_identity(7000000000) -> 'identifiers' -> 'userIds' AS by_bigint,
       dfend_get_identity('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid) -> 'identifiers' -> 'userIds' AS by_uuid,
       dfend_get_identity(user_id => 42) -> 'identifiers' -> 'userIds' AS named;
SELECT dfend_get_identity(43) IS NULL AS unknown_integer;
SELECT try($$SELECT dfend_get_identity(NULL::bigint)$$);
SELECT r.ordinality, r.user_id, pg_typeof(r.user_id) AS type, r.found
FROM dfend_get_identities(ARRAY[42, 43, NULL]) AS r;
SELECT r.ordinality, r.user_id, pg_typeof(r.user_id) AS type, r.found
FROM dfend_get_identities(ARRAY[7000000000, 42]) AS r;
SELECT r.ordinality, r.user_id, pg_typeof(r.user_id) AS type, r.found
FROM dfend_get_identities(ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid,
                                '00000000-0000-0000-0000-000000000000'::uuid]) AS r;
-- An untyped array literal matches every overload: it needs a cast.
SELECT try($$SELECT count(*) FROM dfend_get_identities('{rd-a}')$$);
SELECT count(*) AS rows FROM dfend_get_identities('{rd-a}'::text[]);

-- The calls of 0.2.0 resolve as before, to the text function (EXPLAIN shows
-- the call after resolution; nothing is sent).
EXPLAIN (VERBOSE, COSTS OFF) SELECT dfend_get_identity('abc');
EXPLAIN (VERBOSE, COSTS OFF) SELECT dfend_get_identity(user_id => 'x');
EXPLAIN (VERBOSE, COSTS OFF) SELECT dfend_get_identity(id => 'y');
SELECT dfend_get_identity('rd-a') -> 'identifiers' -> 'userIds' AS positional,
       dfend_get_identity(user_id => 'rd-a') -> 'identifiers' -> 'userIds' AS named,
       dfend_get_identity(id => (SELECT id FROM known WHERE user_id = 'rd-a'))
           -> 'identifiers' -> 'userIds' AS by_id;
SELECT try($$SELECT dfend_get_identity()$$);

-- The Identity's time (epoch milliseconds) as timestamptz, emails and
-- phones as text arrays.
SELECT dfend_identity_time('{"time": 1700000000123}') AS fixed,
       dfend_identity_time('{"time": "soon"}') AS not_a_number,
       dfend_identity_time('{}') AS absent;
SELECT abs(extract(epoch FROM dfend_identity_time(i)) * 1000 - (i ->> 'time')::numeric) < 1 AS exact,
       dfend_identity_time(i) BETWEEN now() - interval '1 hour' AND clock_timestamp() AS recent
FROM dfend_get_identity('rd-a') AS i;
SELECT dfend_register_identity('rd-a', email => 'a2@example.com', merge => true) IS NOT NULL AS merged;
SELECT r.user_id, dfend_identity_emails(r.identity) AS emails,
       dfend_identity_phones(r.identity) AS phones
FROM dfend_get_identities(ARRAY['rd-a', 'rd-b', 'nobody']) AS r;
SELECT dfend_identity_emails('{"identifiers": {"emails": "not an array"}}') AS not_an_array;

-- Privileges: every function that sends a request is revoked from PUBLIC,
-- each overload on its own; the helpers, which send nothing, are not.
CREATE ROLE dfend_reads_app;
SELECT p.oid::regprocedure AS function,
       has_function_privilege('dfend_reads_app', p.oid, 'EXECUTE') AS app_may_execute
FROM pg_proc AS p
WHERE p.proname IN ('dfend_get_identity', 'dfend_get_identities', 'dfend_get_identities_by_id',
                    'dfend_identity_time', 'dfend_identity_emails', 'dfend_identity_phones')
ORDER BY p.oid::regprocedure::text;
SET ROLE dfend_reads_app;
SELECT try($$SELECT count(*) FROM dfend_get_identities(ARRAY['rd-a'])$$);
SELECT try($$SELECT dfend_get_identity(42)$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION dfend_get_identities(text[]) TO dfend_reads_app;
SET ROLE dfend_reads_app;
SELECT user_id, found FROM dfend_get_identities(ARRAY['rd-a']);
SELECT try($$SELECT count(*) FROM dfend_get_identities(ARRAY[42])$$);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION dfend_get_identities(text[]) FROM dfend_reads_app;
DROP ROLE dfend_reads_app;

-- The fast pattern for a view over many users: one call with the array,
-- joined back by user id, instead of one call per row.
CREATE TABLE reads_users (id bigint PRIMARY KEY, name text);
INSERT INTO reads_users SELECT g, 'user ' || g FROM generate_series(1, 30) AS g;
SELECT count(*) AS registered FROM reads_users AS u,
       LATERAL dfend_register_identity(u.id::text) AS r WHERE r.created;
CREATE VIEW reads_user_identities AS
SELECT u.id, u.name, i.id AS dfend_id, dfend_identity_time(i.identity) AS dfend_since, i.error
FROM reads_users AS u
JOIN dfend_get_identities((SELECT array_agg(id) FROM reads_users)) AS i ON i.user_id = u.id;
\! test/emu stat gets
SELECT count(*) AS rows, count(dfend_id) AS with_identity FROM reads_user_identities;
\! test/emu stat gets
DROP VIEW reads_user_identities;
DROP TABLE reads_users;
RESET timezone;
RESET dfend.max_retries;
