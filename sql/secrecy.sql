-- The API key: no non-superuser can read it, and no SQL statement carries it.
\! test/emu reset
CREATE ROLE dfend_app;
CREATE ROLE dfend_settings_reader;
GRANT pg_read_all_settings TO dfend_settings_reader;
-- test/run-tests.sh writes a key file holding a key DFend rejects.
\getenv wrong_key_file DFEND_WRONG_KEY_FILE

-- The key is set only in postgresql.conf or a key file: every statement
-- that would carry it is refused before PostgreSQL handles it, for
-- superusers too, with a HINT and without the statement in the log.
SET dfend.api_key = 'sk_test_emulator';
SELECT try_verbose($$SET dfend.api_key = 'sk_test_emulator'$$);
SELECT try_verbose($$ALTER SYSTEM SET dfend.api_key = 'sk_test_emulator'$$);
BEGIN;
SET LOCAL dfend.api_key = 'sk_test_emulator';
ROLLBACK;
SELECT try($$SET SESSION dfend.api_key TO 'sk_test_emulator'$$);
SELECT try($$SET dfend.api_key FROM CURRENT$$);
SELECT try($$SET dfend.api_key = ''$$);
SELECT try($$SET "dfend"."api_key" = 'sk_test_emulator'$$);
SELECT try($$SET "dfend.api_key" = 'sk_test_emulator'$$);
SELECT try($$SET DFEND.API_KEY = 'sk_test_emulator'$$);
SELECT try($q$DO $$ BEGIN EXECUTE 'SET dfend.api_key = ''sk_test_emulator'''; END $$$q$);
-- An error that could quote a piece of such a statement (here a syntax
-- error) is replaced by a fixed text, for the log and the client alike.
SELECT set_config('dfend.api_key', 'sk_test_emulator' false);
ALTER SYSTEM SET dfend.api_key = 'sk_test_emulator';
-- A function call is not a statement dfend sees, but the setting cannot be
-- changed in a session (PGC_SIGHUP), so PostgreSQL refuses it too.
SELECT try($$SELECT set_config('dfend.api_key', 'sk_test_emulator', false)$$);
SELECT try($$UPDATE pg_settings SET setting = 'sk_test_emulator' WHERE name = 'dfend.api_key'$$);
SELECT try($$RESET dfend.api_key$$);
SELECT try($$SET dfend.api_key TO DEFAULT$$);
-- Removing the key from postgresql.auto.conf is allowed.
ALTER SYSTEM RESET dfend.api_key;
-- The key file in force still works; its path is no secret.
SELECT created FROM dfend_register_identity('s-1');
SELECT setting, source FROM pg_settings WHERE name = 'dfend.api_key';
SELECT context FROM pg_settings WHERE name = 'dfend.api_key';

-- A member of pg_read_all_settings may read both settings: the key file's
-- path, and dfend.api_key masked (see test/scenarios/key_never_logged.sh).
SET ROLE dfend_settings_reader;
SHOW dfend.api_key;
SELECT count(*) AS readable FROM pg_settings WHERE name IN ('dfend.api_key', 'dfend.api_key_file');
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
SELECT try($$SELECT set_config('dfend.api_key', 'sk_other', false)$$);
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
SELECT try($$ALTER ROLE dfend_app SET dfend.api_key FROM CURRENT$$);
SELECT try($$CREATE FUNCTION leak() RETURNS int LANGUAGE sql SET dfend.api_key = 'sk_catalog_leak' AS 'SELECT 1'$$);
CREATE FUNCTION harmless() RETURNS int LANGUAGE sql AS 'SELECT 1';
SELECT try($$ALTER FUNCTION harmless() SET dfend.api_key = 'sk_catalog_leak'$$);
SELECT try($$ALTER FUNCTION harmless() SET dfend.api_key FROM CURRENT$$);
DROP FUNCTION harmless();
SELECT try($$ALTER ROLE dfend_app RESET dfend.api_key$$);
SELECT count(*) AS leaked_settings FROM pg_db_role_setting WHERE array_to_string(setconfig, ' ') LIKE '%sk_%';
SELECT count(*) AS leaked_functions FROM pg_proc WHERE array_to_string(proconfig, ' ') LIKE '%sk_%';

-- Even when DFend echoes the key back, it is redacted.
\! test/emu config '{"error_echo_key": true, "fail_user_ids": ["s-echo"]}'
SELECT try_verbose($$SELECT dfend_register_identity('s-echo')$$) AS echoed;
SELECT strpos(try_verbose($$SELECT dfend_register_identity('s-echo')$$), 'sk_test_emulator') AS key_position;
\! test/emu config '{"error_echo_key": false, "fail_user_ids": []}'

-- A superuser may point a session at another key file (a path, not a key);
-- it follows SET LOCAL and rollback.
BEGIN;
SET LOCAL dfend.api_key_file = :'wrong_key_file';
SELECT try($$SELECT dfend_register_identity('s-3')$$);
ROLLBACK;
SELECT created FROM dfend_register_identity('s-3');
SET dfend.api_key_file = :'wrong_key_file';
SELECT try($$SELECT dfend_register_identity('s-4')$$);
RESET dfend.api_key_file;
SELECT created FROM dfend_register_identity('s-4');

DROP OWNED BY dfend_app;
DROP ROLE dfend_app;
DROP ROLE dfend_settings_reader;
