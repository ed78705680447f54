#!/bin/bash
# The key never reaches the server log or pg_stat_activity: set in
# postgresql.conf, changed and reloaded, rejected by DFend, or typed into a
# statement (which dfend refuses) with every statement logged
# (log_statement = all, log_min_duration_statement = 0, debug5, parameters),
# over the simple and the extended protocol.
source "$(dirname "$0")/../lib.sh"
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
FIRST_KEY=sk_first_key_4f1d9a   # rejected by the emulator
SECOND_KEY=sk_second_key_8c2e7b # accepted after the reload
ATTACK_KEY=sk_typed_key_51c0de  # typed into statements, every one refused
start_emulator main --key "$SECOND_KEY"
export DFEND_URL="http://127.0.0.1:$EMULATOR_PORT" FIRST_KEY SECOND_KEY ATTACK_KEY DFEND_RUN_DIR
mkdir -p "$DFEND_RUN_DIR/log"; chown postgres: "$DFEND_RUN_DIR/log"
export LOG_DIR="$DFEND_RUN_DIR/log"

cat > "$DFEND_RUN_DIR/inner.sh" <<'INNER'
source "$DFEND_ROOT/test/lib.sh"
sql "CREATE EXTENSION dfend" >/dev/null
expect_match "a rejected key gives ID401" \
    "$(psql -XAtq -c '\set VERBOSITY verbose' -c 'SELECT dfend_register_identity($$k-1$$)' 2>&1)" \
    "ID401: DFend rejected the API key"
conf=$(sql "SHOW config_file")
echo "dfend.api_key = '$SECOND_KEY'" >> "$conf"
sql "SELECT pg_reload_conf()" >/dev/null
register() { sql 'SELECT created FROM dfend_register_identity($$k-2$$)' | grep -qx "[tf]"; }
if wait_until 10 register; then pass "the reloaded key is used"; else fail "the reloaded key is used"; fi
sql 'SELECT dfend_get_identity($$k-2$$) IS NOT NULL' >/dev/null

# The key from postgresql.conf is masked, for superusers too.
sql "CREATE ROLE watcher" >/dev/null
sql "GRANT pg_read_all_stats, pg_read_all_settings TO watcher" >/dev/null
as_watcher() { psql -XAtq -c "SET ROLE watcher" -c "$1" 2>&1; }
expect "SHOW dfend.api_key shows a mask" "$(sql "SHOW dfend.api_key")" "********"
expect "pg_settings shows a mask, set in the configuration file, reloadable" \
    "$(sql "SELECT setting || ' ' || source || ' ' || context FROM pg_settings WHERE name = 'dfend.api_key'")" \
    "******** configuration file sighup"
expect "pg_read_all_settings sees the mask" "$(as_watcher "SHOW dfend.api_key")" "********"

# Key-carrying statements. Each runs in a session that then stays open and
# idle; once pg_stat_activity shows it idle after the statement, a
# pg_read_all_stats member must not find the key there.
watcher_sees() { # the number of other sessions whose query holds $1 (split: this text is logged too)
    as_watcher "SELECT count(*) FROM pg_stat_activity WHERE strpos(query, '${1:0:6}' || '${1:6}') > 0 AND pid <> pg_backend_pid()"
}
attacker_idle() {
    [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'attacker' AND state LIKE 'idle%' AND query <> ''")" = 1 ]
}
fifo="$DFEND_RUN_DIR/attacker.fifo"
# attack NAME EXPECTED_OUTPUT_REGEX SQL [PSQL...]: SQL goes to psql (or to
# the given client command, which reads the FIFO itself).
attack() {
    local name=$1 want=$2 statement=$3; shift 3
    rm -f "$fifo"; mkfifo "$fifo"
    if [ $# -eq 0 ]; then
        printf '%s\n' "$statement" > "$DFEND_RUN_DIR/attack.sql"
        PGAPPNAME=attacker psql -X -v ON_ERROR_STOP=0 -f "$DFEND_RUN_DIR/attack.sql" -c '\! cat '"$fifo" \
            >"$DFEND_RUN_DIR/attack.out" 2>&1 &
    else
        PGAPPNAME=attacker "$@" >"$DFEND_RUN_DIR/attack.out" 2>&1 &
    fi
    local client=$! seen="never idle"
    wait_until 20 attacker_idle && seen=$(watcher_sees "$ATTACK_KEY")
    timeout 10 bash -c ': > "$1"' _ "$fifo" || true   # releases the client's "cat"
    wait "$client" 2>/dev/null || true
    expect_match "$name: refused or failed" "$(cat "$DFEND_RUN_DIR/attack.out")" "$want"
    expect "$name: pg_read_all_stats does not see the key in pg_stat_activity once idle" "$seen" 0
}
refused="cannot be set in a session"
attack "SET" "$refused" "SET dfend.api_key = '$ATTACK_KEY';"
attack "SET with quoted identifiers" "$refused" "SET \"dfend\".\"api_key\" = '$ATTACK_KEY';"
attack "a multi-statement string" "$refused" "SELECT 1 \\; SET dfend.api_key = '$ATTACK_KEY' \\; SELECT 2;"
attack "SET LOCAL in a transaction block" "$refused" "BEGIN; SET LOCAL dfend.api_key = '$ATTACK_KEY';"
attack "EXECUTE in a DO block" "$refused" "DO \$\$ BEGIN EXECUTE 'SET dfend.api_key = ''$ATTACK_KEY'''; END \$\$;"
attack "a DO block that catches the refusal" "DO" \
    "DO \$\$ BEGIN EXECUTE 'SET dfend.api_key = ''$ATTACK_KEY'''; EXCEPTION WHEN OTHERS THEN NULL; END \$\$;"
attack "set_config()" "cannot be changed now" "SELECT set_config('dfend.api_key', '$ATTACK_KEY', false);"
attack "UPDATE pg_settings" "cannot be changed now" \
    "UPDATE pg_settings SET setting = '$ATTACK_KEY' WHERE name = 'dfend.api_key';"
attack "a syntax error quoting the statement" "message redacted by dfend" \
    "SELECT set_config('dfend.api_key', '$ATTACK_KEY' '$ATTACK_KEY');"
attack "a key compared, not set" "1 row" "SELECT current_setting('dfend.api_key') = '$ATTACK_KEY';"
attack "ALTER SYSTEM SET" "cannot be set with ALTER SYSTEM" "ALTER SYSTEM SET dfend.api_key = '$ATTACK_KEY';"
attack "ALTER ROLE SET" "cannot be stored as a role" "ALTER ROLE watcher SET dfend.api_key = '$ATTACK_KEY';"
attack "ALTER DATABASE SET" "cannot be stored as a role" "ALTER DATABASE postgres SET dfend.api_key = '$ATTACK_KEY';"
attack "CREATE FUNCTION SET" "cannot be stored as a role" \
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET dfend.api_key = '$ATTACK_KEY' AS 'SELECT 1';"
attack "a non-superuser SET" "$refused" "SET ROLE watcher; SET dfend.api_key = '$ATTACK_KEY';"
# The extended protocol (Parse, Bind, Execute; debug2 logs "parse <unnamed>:
# ..." and PostgreSQL reports the text again at Bind and Execute).
extended() { # extended NAME EXPECTED SCRIPT_LINE...
    local name=$1 want=$2; shift 2
    printf '%s\n' "$@" "\\shell cat $fifo" > "$DFEND_RUN_DIR/extended.sql"
    attack "$name (extended protocol)" "$want" "" \
        pgbench -n -t 1 -M extended -D "key=$ATTACK_KEY" -f "$DFEND_RUN_DIR/extended.sql"
}
extended "a key compared, not set" "processed: 1/1" "SELECT current_setting('dfend.api_key') = '$ATTACK_KEY';"
extended "a key compared, as a parameter" "processed: 1/1" "SELECT current_setting('dfend.api_key') = :key;"
# A refusal ends a pgbench client: no idle session to look at afterwards,
# but the log is checked below.
for statement in "SET dfend.api_key = '$ATTACK_KEY';" "SELECT set_config('dfend.api_key', :key, false);" \
        "ALTER SYSTEM SET dfend.api_key = '$ATTACK_KEY';"; do
    printf '%s\n' "$statement" > "$DFEND_RUN_DIR/extended.sql"
    expect_match "extended protocol: $statement fails" \
        "$(pgbench -n -t 1 -M extended -D "key=$ATTACK_KEY" -f "$DFEND_RUN_DIR/extended.sql" 2>&1)" \
        "cannot be (set|changed)"
done
# A connection option cannot set it either.
expect_match "a connection option is refused" \
    "$(PGOPTIONS="-c dfend.api_key=$ATTACK_KEY" psql -XAtq -c "SELECT 1" 2>&1)" "cannot be changed now"

expect "pg_stat_activity never shows a key" \
    "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query ~ 'sk_(first|second|typed)' AND pid <> pg_backend_pid()")" 0
expect "no catalog holds the key" \
    "$(sql "SELECT (SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ' ') LIKE '%sk_typed%') + (SELECT count(*) FROM pg_proc WHERE array_to_string(proconfig, ' ') LIKE '%sk_typed%')")" 0
data=$(sql "SHOW data_directory")
expect "postgresql.auto.conf does not hold the key" "$(grep -c "$ATTACK_KEY" "$data/postgresql.auto.conf" || true)" 0
expect "the server still uses the key from postgresql.conf" \
    "$(sql 'SELECT created FROM dfend_register_identity($$k-3$$)')" "t"
INNER

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend -o "dfend.api_url=$DFEND_URL" \
    -o "dfend.api_key=$FIRST_KEY" -o log_min_messages=debug5 -o client_min_messages=notice \
    -o log_statement=all -o log_min_duration_statement=0 -o log_min_error_statement=debug5 \
    -o log_parameter_max_length=-1 -o log_parameter_max_length_on_error=-1 \
    -o log_error_verbosity=verbose \
    -o logging_collector=on -o "log_directory=$LOG_DIR" -o dfend.max_retries=1 \
    bash "$DFEND_RUN_DIR/inner.sh" | tee "$DFEND_RUN_DIR/inner.out"
grep -q '^not ok' "$DFEND_RUN_DIR/inner.out" && SCENARIO_FAILED=1
in_log() { cat "$LOG_DIR"/* | grep -c -- "$1" || true; }
lines=$(cat "$LOG_DIR"/* | wc -l)
if [ "$lines" -gt 100 ]; then pass "the server log was written at debug5 ($lines lines)"; else fail "the server log was written at debug5 ($lines lines)"; fi
# The statements were logged, and redacted (simple and extended protocol).
expect_match "log_statement lines were redacted" "$(in_log 'statement: \[statement redacted by dfend')" '^[1-9]'
expect_match "debug2 parse lines were redacted" "$(in_log 'parse <unnamed>: \[statement redacted by dfend')" '^[1-9]'
expect_match "duration lines were redacted" "$(in_log 'duration: .* \[statement redacted by dfend')" '^[1-9]'
expect "the first key is not in the server log" "$(in_log "$FIRST_KEY")" 0
expect "the second key is not in the server log" "$(in_log "$SECOND_KEY")" 0
expect "no typed key is in the server log" "$(in_log "$ATTACK_KEY")" 0
exit $SCENARIO_FAILED
