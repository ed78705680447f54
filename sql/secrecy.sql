-- The API key: no non-superuser can read it, by any documented route.
\! test/emu reset
CREATE ROLE dfend_app;
CREATE ROLE dfend_settings_reader;
GRANT pg_read_all_settings TO dfend_settings_reader;

-- Even a superuser sees only a mask, whichever way the key was set.
SET dfend.api_key = 'sk_test_emulator';
SHOW dfend.api_key;
SELECT current_setting('dfend.api_key') AS via_function;
SELECT setting, source FROM pg_settings WHERE name = 'dfend.api_key';
SELECT created FROM dfend_register_identity('s-1');

-- A member of pg_read_all_settings sees the mask too.
SET ROLE dfend_settings_reader;
SHOW dfend.api_key;
SELECT setting FROM pg_settings WHERE name = 'dfend.api_key';
RESET ROLE;

-- An ordinary role cannot read, change or redirect the key.
SET ROLE dfend_app;
-- (PostgreSQL 16 reworded the message; the SQLSTATE is unchanged.)
SELECT regexp_replace(try($$SHOW dfend.api_key$$), 'permission denied to', 'must be superuser or have privileges of pg_read_all_settings to') AS try;
SELECT regexp_replace(try($$SELECT current_setting('dfend.api_key')$$), 'permission denied to', 'must be superuser or have privileges of pg_read_all_settings to') AS try;
SELECT regexp_replace(try($$SHOW dfend.api_key_file$$), 'permission denied to', 'must be superuser or have privileges of pg_read_all_settings to') AS try;
SELECT count(*) AS visible_in_pg_settings FROM pg_settings WHERE name IN ('dfend.api_key', 'dfend.api_key_file');
SELECT try($$SELECT * FROM pg_file_settings$$);
SELECT try($$SELECT pg_read_file('postgresql.conf')$$);
SELECT try($$SET dfend.api_key = 'sk_other'$$);
SELECT try($$SET dfend.api_key_file = '/etc/hostname'$$);
-- Pointing the server's key at another host would leak it.
SELECT try($$SET dfend.api_url = 'http://127.0.0.2:9'$$);
SELECT try($$SET dfend.ca_file = '/tmp/ca.pem'$$);
-- EXECUTE is revoked from PUBLIC.
SELECT try($$SELECT dfend_register_identity('s-2')$$);
SELECT try($$SELECT dfend_get_identity('s-1')$$);
RESET ROLE;

GRANT EXECUTE ON FUNCTION dfend_register_identity(text, text, text, boolean, jsonb) TO dfend_app;
SET ROLE dfend_app;
SELECT created FROM dfend_register_identity('s-2');
RESET ROLE;

-- Catalogs every role can read never receive the key.
SELECT try_verbose($$ALTER ROLE dfend_app SET dfend.api_key = 'sk_catalog_leak'$$);
SELECT try(format('ALTER DATABASE %I SET dfend.api_key = %L', current_database(), 'sk_catalog_leak'));
SELECT try($$ALTER ROLE ALL SET dfend.api_key = 'sk_catalog_leak'$$);
SELECT try($$CREATE FUNCTION leak() RETURNS int LANGUAGE sql SET dfend.api_key = 'sk_catalog_leak' AS 'SELECT 1'$$);
SELECT count(*) AS leaked_settings FROM pg_db_role_setting WHERE array_to_string(setconfig, ' ') LIKE '%sk_%';
SELECT count(*) AS leaked_functions FROM pg_proc WHERE array_to_string(proconfig, ' ') LIKE '%sk_%';

-- Error messages never quote a key.
SELECT try($$SET dfend.api_key = 'sk with spaces'$$);
SELECT try($$SET dfend.api_key = E'sk_test\r\nX-Injected: 1'$$);
-- Even when DFend echoes the key back, it is redacted.
\! test/emu config '{"error_echo_key": true, "fail_user_ids": ["s-echo"]}'
SELECT try_verbose($$SELECT dfend_register_identity('s-echo')$$) AS echoed;
SELECT strpos(try_verbose($$SELECT dfend_register_identity('s-echo')$$), 'sk_test_emulator') AS key_position;
\! test/emu config '{"error_echo_key": false, "fail_user_ids": []}'

-- The real key follows the setting through SET LOCAL and rollback.
BEGIN;
SET LOCAL dfend.api_key = 'sk_wrong';
SHOW dfend.api_key;
SELECT try($$SELECT dfend_register_identity('s-3')$$);
ROLLBACK;
SELECT created FROM dfend_register_identity('s-3');
-- RESET goes back to the key file from postgresql.conf.
RESET dfend.api_key;
SHOW dfend.api_key;
SELECT created FROM dfend_register_identity('s-4');

DROP OWNED BY dfend_app;
DROP ROLE dfend_app;
DROP ROLE dfend_settings_reader;
