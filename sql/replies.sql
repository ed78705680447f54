-- Replies built to slip the key or bad text past dfend (the emulator's
-- reply_fault modes). Nothing from a reply is stored or returned unless it is
-- valid text with the key (sk_test_emulator here) redacted in decoded form.
\! test/emu reset
SET dfend.max_retries = 0;
SELECT created FROM dfend_register_identity('r-1', metadata => '{"note": "café ✓"}');

-- A 200 GET whose fields hold the key JSON-escaped ("\u0073k_...", every
-- character escaped as a field name, one character escaped in the middle):
-- the result holds none of them, and the rest of the identity is intact.
\! test/emu config '{"reply_fault":"escaped_key"}'
WITH r AS (SELECT dfend_get_identity('r-1') AS j)
SELECT strpos(j::text, 'sk_test_emulator') AS key_at,
       strpos(j::text, 'sk_') AS key_prefix_at,
       j -> 'note' AS note,
       j -> 'spelled' AS spelled,
       j -> '[redacted]' AS key_as_field_name,
       j -> 'identifiers' -> 'userIds' AS user_ids,
       j -> 'metadata' AS metadata
FROM r;

-- An error reply with the key split by \u0001, NUL, newline, tab, ESC, DEL,
-- CR and U+0085: redacted after the control characters are replaced.
\! test/emu config '{"reply_fault":"split_key"}'
SELECT dfend_register_identity('r-2');
SELECT try_verbose($$SELECT dfend_get_identity('r-1')$$);

-- What a handler sees, checked without printing it: no key, no control
-- character, valid UTF-8.
CREATE TEMP TABLE seen (fault text, message text, detail text);
CREATE FUNCTION capture(fault text, statement text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m text;
    d text;
BEGIN
    EXECUTE statement;
    INSERT INTO seen VALUES (fault, 'no error', NULL);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL;
    INSERT INTO seen VALUES (fault, m, d);
END $$;
SELECT capture('split_key', $$SELECT dfend_register_identity('r-2')$$);

-- An error reply whose body is not UTF-8: DFend's words are left out.
\! test/emu config '{"reply_fault":"invalid_utf8_error"}'
SELECT dfend_register_identity('r-3');
SELECT capture('invalid_utf8_error', $$SELECT dfend_register_identity('r-3')$$);

-- A success reply that is not UTF-8: a bad response, whose message quotes
-- nothing of the body.
\! test/emu config '{"reply_fault":"invalid_utf8_success"}'
SELECT dfend_register_identity('r-4');
SELECT dfend_get_identity('r-1');
SELECT capture('invalid_utf8_success', $$SELECT dfend_register_identity('r-4')$$);
SELECT capture('invalid_utf8_success get', $$SELECT dfend_get_identity('r-1')$$);

-- Non-ASCII words from DFend reach the client as they are.
\! test/emu config '{"reply_fault":"unicode_error"}'
SELECT dfend_register_identity('r-5');
SELECT capture('unicode_error', $$SELECT dfend_register_identity('r-5')$$);

SELECT fault,
       strpos(message || coalesce(detail, ''), 'sk_test_emulator') AS key_at,
       strpos(message || coalesce(detail, ''), 'sk_') AS key_prefix_at,
       (message || coalesce(detail, '')) ~ '[\x01-\x1f\x7f]' AS has_control,
       convert_from(textsend(message || coalesce(detail, '')), 'UTF8') IS NOT NULL AS valid_utf8,
       message
FROM seen ORDER BY fault;
\! test/emu config '{"reply_fault":"none"}'

-- A LATIN1 database: characters it lacks become '?', never a conversion
-- error, in error words and in a lookup's JSON alike.
\set regress_db :DBNAME
CREATE DATABASE dfend_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c dfend_latin1
\encoding UTF8
SET client_min_messages = warning;
CREATE EXTENSION dfend;
RESET client_min_messages;
SET dfend.max_retries = 0;
SHOW server_encoding;
SELECT dfend_get_identity('r-1') -> 'metadata' AS metadata;
\! test/emu config '{"reply_fault":"unicode_error"}'
SELECT dfend_register_identity('r-5');
\! test/emu config '{"reply_fault":"split_key"}'
SELECT dfend_register_identity('r-2');
\! test/emu config '{"reply_fault":"escaped_key"}'
SELECT strpos(dfend_get_identity('r-1')::text, 'sk_') AS key_prefix_at;
\! test/emu config '{"reply_fault":"none"}'
\c :regress_db
DROP DATABASE dfend_latin1;
