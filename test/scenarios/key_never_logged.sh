#!/bin/bash
# The key never reaches the server log, even at log_min_messages = debug5,
# when set in postgresql.conf, changed and reloaded, or rejected by DFend.
source "$(dirname "$0")/../lib.sh"
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
FIRST_KEY=sk_first_key_4f1d9a   # rejected by the emulator
SECOND_KEY=sk_second_key_8c2e7b # accepted after the reload
start_emulator main --key "$SECOND_KEY"
export DFEND_URL="http://127.0.0.1:$EMULATOR_PORT" FIRST_KEY SECOND_KEY
mkdir -p "$DFEND_RUN_DIR/log"; chown postgres: "$DFEND_RUN_DIR/log"
export LOG_DIR="$DFEND_RUN_DIR/log"

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend -o "dfend.api_url=$DFEND_URL" \
    -o "dfend.api_key=$FIRST_KEY" -o log_min_messages=debug5 -o client_min_messages=notice \
    -o logging_collector=on -o "log_directory=$LOG_DIR" -o dfend.max_retries=1 \
    bash -c '
    source "$DFEND_ROOT/test/lib.sh"
    sql "CREATE EXTENSION dfend" >/dev/null
    expect_match "a rejected key gives 28000" \
        "$(sql "SELECT dfend_register_identity(\$\$k-1\$\$)")" "DFend rejected the API key"
    conf=$(sql "SHOW config_file")
    echo "dfend.api_key = '\''$SECOND_KEY'\''" >> "$conf"
    sql "SELECT pg_reload_conf()" >/dev/null
    register() { sql "SELECT created FROM dfend_register_identity(\$\$k-2\$\$)" | grep -qx "[tf]"; }
    if wait_until 10 register; then pass "the reloaded key is used"; else fail "the reloaded key is used"; fi
    sql "SELECT dfend_get_identity(\$\$k-2\$\$) IS NOT NULL" >/dev/null
    # Refused and failing statements that carry a key: their STATEMENT lines
    # must not reach the log either.
    sql "SET dfend.api_key = \$\$bad key $FIRST_KEY\$\$" >/dev/null || true
    sql "CREATE ROLE watcher" >/dev/null
    sql "GRANT pg_read_all_stats TO watcher" >/dev/null
    expect_match "ALTER ROLE SET is refused" "$(sql "ALTER ROLE watcher SET dfend.api_key = \$\$$FIRST_KEY\$\$")" "cannot be stored as a role"
    expect_match "ALTER DATABASE SET is refused" "$(sql "ALTER DATABASE postgres SET dfend.api_key = \$\$$FIRST_KEY\$\$")" "cannot be stored as a role"
    expect_match "CREATE FUNCTION SET is refused" "$(sql "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET dfend.api_key = \$\$$FIRST_KEY\$\$ AS \$\$SELECT 1\$\$")" "cannot be stored as a role"
    expect_match "a non-superuser SET is refused" "$(psql -XAtq -c "SET ROLE watcher" -c "SET dfend.api_key = \$\$$FIRST_KEY\$\$" 2>&1)" "permission denied"
    # A superuser session that SET the key and is now idle: pg_stat_activity
    # shows its last statement, redacted. (The sleep only keeps that session
    # open; the check waits on pg_stat_activity.)
    (echo "SET application_name = key_setter; SET dfend.api_key = \$\$$SECOND_KEY\$\$;"; sleep 10) | psql -Xq >/dev/null &
    setter=$!
    idle_after_set() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = \$\$key_setter\$\$ AND state = \$\$idle\$\$ AND query LIKE \$\$%dfend.api_key%\$\$")" = 1 ]; }
    if wait_until 10 idle_after_set; then pass "the SET session is idle with its statement shown"; else fail "SET session idle"; fi
    expect "pg_read_all_stats sees the statement redacted" "$(psql -XAtq -c "SET ROLE watcher" -c "SELECT query FROM pg_stat_activity WHERE application_name = \$\$key_setter\$\$")" "SET dfend.api_key TO <redacted>"
    expect "pg_stat_activity never shows the key" "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query LIKE \$\$%sk_%\$\$ AND pid <> pg_backend_pid()")" 0
    kill $setter 2>/dev/null || true
    sql "ALTER SYSTEM SET dfend.api_key = \$\$$SECOND_KEY\$\$" >/dev/null
    sql "SELECT pg_reload_conf()" >/dev/null
    sql "SELECT 1" >/dev/null
    ' | tee "$DFEND_RUN_DIR/inner.out"
grep -q '^not ok' "$DFEND_RUN_DIR/inner.out" && SCENARIO_FAILED=1
lines=$(cat "$LOG_DIR"/* | wc -l)
if [ "$lines" -gt 100 ]; then pass "the server log was written at debug5 ($lines lines)"; else fail "the server log was written at debug5 ($lines lines)"; fi
expect "the first key is not in the server log" "$(grep -c "$FIRST_KEY" "$LOG_DIR"/* | awk -F: '{s+=$NF} END {print s}')" 0
expect "the second key is not in the server log" "$(grep -c "$SECOND_KEY" "$LOG_DIR"/* | awk -F: '{s+=$NF} END {print s}')" 0
exit $SCENARIO_FAILED
