#!/bin/bash
# The LOG lines of systemic failures: a rejected key logs when it starts and,
# at most dfend.log_interval later (5 s here; a minute by default), when it stops; a refused connection logs too; the
# key is in none of them. Driven through dfend_process_queue, the worker's
# own path (process_outbox), so it does not depend on a worker being started.
source "$(dirname "$0")/../lib.sh"
start_scenario
write_key_file "$DFEND_RUN_DIR/wrong.key" sk_wrong_key_7e3a91
mkdir -p "$DFEND_RUN_DIR/log"; chown postgres: "$DFEND_RUN_DIR/log"
export LOG_DIR="$DFEND_RUN_DIR/log" WRONG_KEY_FILE="$DFEND_RUN_DIR/wrong.key"

cat > "$DFEND_RUN_DIR/inner.sh" <<'INNER'
source "$DFEND_ROOT/test/lib.sh"
export PGDATABASE=postgres
in_log() { cat "$LOG_DIR"/* | grep -c -- "$1" || true; }
# Server-wide settings, so that a worker serving the database (if one runs)
# fails and succeeds alike.
configure() { sql "ALTER SYSTEM $1" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null; }
# One round of the queue, every entry due: its first step logs what the
# previous rounds saw.
drain() { sql "UPDATE dfend_outbox SET next_attempt_at = now()" >/dev/null
          sql "SELECT dfend_process_queue()" >/dev/null; }
started='LOG:  DFend rejected the API key for requests from database "postgres"'
stopped='LOG:  DFend accepts the API key for requests from database "postgres" again'
refused='LOG:  could not connect to DFend for requests from database "postgres"'
[ "$(in_log 'database system is ready')" = 1 ] && pass "the server log is readable" || fail "the server log is readable"

sql "CREATE EXTENSION dfend" >/dev/null
sql "CREATE TABLE users (id bigint PRIMARY KEY, email text, dfend_id text)" >/dev/null
sql "SELECT dfend_attach('users', 'id', 'dfend_id', email_column => 'email')" >/dev/null

# The key is rejected: a later round logs it, once.
configure "SET dfend.api_key_file = '$WRONG_KEY_FILE'"
sql "INSERT INTO users VALUES (1, 'one@example.com')" >/dev/null
logged_start() { drain; [ "$(in_log "$started")" = 1 ]; }
if wait_until 20 logged_start; then pass "a rejected key is logged when it starts"; else fail "a rejected key is logged when it starts ($(in_log "$started") lines)"; fi
expect "the line quotes DFend's words" "$(in_log 'DETAIL:  The error was: DFend rejected the API key: DFend answered HTTP 401')" 1
drain
expect "and is logged once while it lasts" "$(in_log "$started")" 1
expect "the row has no id yet" "$(sql "SELECT dfend_id IS NULL FROM users")" t

# Fixed: the row gets its id, but within dfend.log_interval of the first
# line the second one waits.
configure "RESET dfend.api_key_file"
stored() { drain; [ "$(sql "SELECT dfend_id LIKE 'idn_%' FROM users")" = t ]; }
if wait_until 20 stored; then pass "the row got its id with the right key"; else fail "the row got its id with the right key"; fi
drain
expect "no second line within the interval" "$(in_log "$stopped")" 0
# A later round, past the interval, says it stopped.
logged_stop() { drain; [ "$(in_log "$stopped")" = 1 ]; }
if wait_until 30 logged_stop; then pass "the end of the failure is logged, dfend.log_interval later at most"; else fail "the end of the failure is logged"; fi

# Nothing listens: its own kind, logged at once.
configure "SET dfend.api_url = 'http://127.0.0.1:1'"
sql "INSERT INTO users VALUES (2, 'two@example.com')" >/dev/null
logged_refused() { drain; [ "$(in_log "$refused")" = 1 ]; }
if wait_until 20 logged_refused; then pass "a refused connection is logged"; else fail "a refused connection is logged"; fi
configure "RESET dfend.api_url"
INNER

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend \
    -o "dfend.api_url=$DFEND_EMULATOR_URL" -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" \
    -o dfend.retry_base_delay=10ms -o dfend.max_retries=0 -o dfend.log_interval=5s -o logging_collector=on -o "log_directory=$LOG_DIR" \
    bash "$DFEND_RUN_DIR/inner.sh" | tee "$DFEND_RUN_DIR/inner.out"
grep -q '^not ok' "$DFEND_RUN_DIR/inner.out" && SCENARIO_FAILED=1
in_log() { cat "$LOG_DIR"/* | grep -c -- "$1" || true; }
expect "the right key is not in the server log" "$(in_log sk_test_emulator)" 0
expect "the wrong key is not in the server log" "$(in_log sk_wrong_key_7e3a91)" 0
exit $SCENARIO_FAILED
