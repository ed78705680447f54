#!/bin/bash
# Without shared_preload_libraries a key in postgresql.conf is a placeholder
# any role can SHOW until the library loads, so dfend refuses to use it; the
# key file route works either way.
source "$(dirname "$0")/../lib.sh"
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
start_emulator main --key sk_test_emulator
export DFEND_URL="http://127.0.0.1:$EMULATOR_PORT"
write_key_file "$DFEND_RUN_DIR/api.key" sk_test_emulator
export KEY_FILE="$DFEND_RUN_DIR/api.key"

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o "dfend.api_url=$DFEND_URL" -o "dfend.api_key=sk_test_emulator" bash -c '
    source "$DFEND_ROOT/test/lib.sh"
    sql "CREATE EXTENSION dfend" >/dev/null
    sql "CREATE ROLE plain_user" >/dev/null
    expect "before loading, any role can SHOW a postgresql.conf placeholder (the leak)" \
        "$(psql -XAtq -c "SET ROLE plain_user" -c "SHOW dfend.api_key" 2>&1)" "sk_test_emulator"
    expect_match "so without preloading a postgresql.conf key is refused" \
        "$(sql "SELECT dfend_register_identity(\$\$p-1\$\$)")" "not in shared_preload_libraries"
    expect_match "with a HINT" \
        "$(sql "SELECT dfend_register_identity(\$\$p-1\$\$)")" "HINT:  Add dfend to shared_preload_libraries"
    # The hook-less path: before the library loads, dfend.api_key is a plain
    # placeholder that a session may SET (no dfend hook sees that statement);
    # the value is dropped when the library loads, never used.
    expect_match "without preloading, a SET before loading is not used" \
        "$(psql -XAtq -c "SET dfend.api_key = \$\$sk_test_emulator\$\$" -c "SELECT created FROM dfend_register_identity(\$\$p-2\$\$)" 2>&1)" \
        "not in shared_preload_libraries"
    expect_match "once loaded, a SET is refused" \
        "$(psql -XAtq -c "LOAD \$\$dfend\$\$" -c "SET dfend.api_key = \$\$sk_test_emulator\$\$" 2>&1)" \
        "cannot be set in a session"
' | tee "$DFEND_RUN_DIR/a.out"
grep -q '^not ok' "$DFEND_RUN_DIR/a.out" && SCENARIO_FAILED=1

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o "dfend.api_url=$DFEND_URL" -o "dfend.api_key_file=$KEY_FILE" bash -c '
    source "$DFEND_ROOT/test/lib.sh"
    sql "CREATE EXTENSION dfend" >/dev/null
    expect "without preloading the key file route works" \
        "$(sql "SELECT created FROM dfend_register_identity(\$\$p-3\$\$)")" "t"
    # No launcher, no worker: the status says why, and dfend_process_queue()
    # drains the outbox instead.
    expect "without preloading no dfend background worker runs" \
        "$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE \$\$dfend%\$\$")" 0
    expect "dfend_queue_status says why" \
        "$(sql "SELECT worker_state FROM dfend_queue_status")" "not running: dfend is not in shared_preload_libraries"
    sql "CREATE TABLE users (id int PRIMARY KEY, dfend_id text)" >/dev/null
    sql "SELECT dfend_attach(\$\$users\$\$, \$\$id\$\$, \$\$dfend_id\$\$)" >/dev/null
    sql "INSERT INTO users VALUES (1)" >/dev/null
    expect "the entry waits for dfend_process_queue()" "$(sql "SELECT pending FROM dfend_queue_status")" 1
    expect "dfend_process_queue() sends it" "$(sql "SELECT dfend_process_queue()")" 1
    expect "and the row has its id" "$(sql "SELECT count(*) FROM users WHERE dfend_id IS NOT NULL")" 1
    chmod 644 "$KEY_FILE"
    expect_match "a key file other users can read is refused" \
        "$(sql "SELECT dfend_register_identity(\$\$p-4\$\$)")" "can be read or written by other users"
    chmod 600 "$KEY_FILE"
    printf "sk_rotated\n" > "$KEY_FILE"
    expect_match "a changed key file is read again" \
        "$(sql "SELECT dfend_register_identity(\$\$p-5\$\$)")" "DFend rejected the API key"
' | tee "$DFEND_RUN_DIR/b.out"
grep -q '^not ok' "$DFEND_RUN_DIR/b.out" && SCENARIO_FAILED=1
exit $SCENARIO_FAILED
