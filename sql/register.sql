-- Registering and fetching identities against the emulator.
\! test/emu reset

SELECT id LIKE 'idn_%' AS has_id, created, merged
FROM dfend_register_identity('user-1', 'ada@example.com', '+14155550123');

-- The same user again: the same id, nothing created; merge adds identifiers.
CREATE TEMP TABLE calls AS SELECT 1 AS n, * FROM dfend_register_identity('user-2');
INSERT INTO calls SELECT 2, * FROM dfend_register_identity('user-2');
INSERT INTO calls SELECT 3, * FROM dfend_register_identity('user-2', email => 'b@example.com', merge => true);
SELECT n, id = (SELECT id FROM calls WHERE n = 1) AS same_id, created, merged
FROM calls ORDER BY n;

-- The composite can be taken apart in a select list.
SELECT (dfend_register_identity('user-3')).id LIKE 'idn_%' AS has_id;

-- GET carries userId or id; fields DFend sends are all kept.
SELECT identity->'identifiers'->'emails' AS emails,
       identity->>'id' = (SELECT id FROM calls WHERE n = 1) AS same_id,
       identity ? 'account' AND identity ? 'devices' AND identity ? 'optedIn' AS all_fields
FROM dfend_get_identity('user-2') AS identity;
SELECT dfend_get_identity(id => (SELECT id FROM calls WHERE n = 1))->'identifiers'->'userIds' AS user_ids;

-- A 404 is NULL, not an error.
SELECT dfend_get_identity('nobody') IS NULL AS missing_user;
SELECT dfend_get_identity(id => 'idn_000000000000000000000000') IS NULL AS missing_id;

-- Metadata: merge => true shallow-merges; merge => false changes nothing.
SELECT created FROM dfend_register_identity('user-4', metadata => '{"plan": "free", "tags": ["a"]}');
SELECT merged FROM dfend_register_identity('user-4', metadata => '{"plan": "pro"}', merge => true);
SELECT merged FROM dfend_register_identity('user-4', email => 'x@example.com');
SELECT identity->'metadata' AS metadata, identity->'identifiers'->'emails' AS emails
FROM dfend_get_identity('user-4') AS identity;

-- NULL optional arguments are left out of the request; a NULL merge is false.
SELECT created, merged FROM dfend_register_identity('user-5', NULL, NULL, NULL, NULL);
SELECT dfend_get_identity('user-5')->'identifiers' AS identifiers;

-- Text outside ASCII round-trips.
SELECT created FROM dfend_register_identity('usuário-6', 'zoe@example.com');
SELECT dfend_get_identity('usuário-6')->'identifiers'->'userIds' AS user_ids;

-- Many calls in one statement, then the emulator's own count: no duplicates.
SELECT count(DISTINCT (dfend_register_identity('bulk-' || g)).id) AS distinct_ids
FROM generate_series(1, 50) AS g;
\! test/emu stat identities
\! test/emu stat created
