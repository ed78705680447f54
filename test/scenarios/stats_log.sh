#!/bin/bash
# The LOG lines of systemic failures: a rejected key logs when it starts and,
# at most a minute later, when it stops; a refused connection logs too; the
# key is in none of them. Driven through dfend_process_queue, the worker's
# own path (process_outbox), so it does not depend on a worker being started.
source "$(dirname "$0")/../lib.sh"
start_scenario
write_key_file "$DFEND_RUN_DIR/wrong.key" sk_wrong_key_7e3a91
mkdir -p "$DFEND_RUN_DIR/log"; chown postgres: "$DFEND_RUN_DIR/log"
export LOG_DIR="$DFEND_RUN_DIR/log"

cat > "$DFEND_RUN_DIR/inner.sh" <<'INNER'
source "$DFEND_ROOT/test/lib.sh"
export PGDATABASE=postgres
in_log() { cat "$LOG_DIR"/* | grep -c -- "$1" || true; }
drain() { psql -XAtq -v ON_ERROR_STOP=1 -c "SET dfend.max_retries = 0" "$@" \
    -c "UPDATE dfend_outbox SET next_attempt_at = now()" -c "SELECT dfend_process_queue()" >/dev/null 2>&1; }
started='LOG:  DFend rejected the API key for requests from database "postgres"'
stopped='LOG:  DFend accepts the API key for requests from database "postgres" again'

sql "CREATE EXTENSION dfend" >/dev/null
sql "CREATE TABLE users (id bigint PRIMARY KEY, email text, dfend_id text)" >/dev/null
sql "SELECT dfend_attach('users', 'id', 'dfend_id', email_column => 'email')" >/dev/null
sql "INSERT INTO users VALUES (1, 'one@example.com')" >/dev/null

# The key is rejected: the next round of the queue logs it once.
drain -c "SET dfend.api_key_file = '$DFEND_RUN_DIR/wrong.key'"
drain -c "SET dfend.api_key_file = '$DFEND_RUN_DIR/wrong.key'"
logged_start() { [ "$(in_log "$started")" = 1 ]; }
if wait_until 10 logged_start; then pass "a rejected key is logged when it starts"; else fail "a rejected key is logged when it starts ($(in_log "$started") lines)"; fi
expect "the line quotes DFend's words" "$(in_log 'DETAIL:  The error was: DFend rejected the API key: DFend answered HTTP 401')" 1
expect "and is logged once while it lasts" "$(in_log "$started")" 1

# Fixed: the row gets its id, but within a minute of the first line the
# second one waits.
drain
expect "the row got its id with the right key" "$(sql "SELECT dfend_id LIKE 'idn_%' FROM users")" t
drain
expect "no second line within the minute" "$(in_log "$stopped")" 0
# A later round, past the minute, says it stopped.
logged_stop() { drain; [ "$(in_log "$stopped")" = 1 ]; }
if wait_until 90 logged_stop; then pass "the end of the failure is logged, a minute later at most"; else fail "the end of the failure is logged"; fi

# Nothing listens: its own kind, logged at once.
sql "INSERT INTO users VALUES (2, 'two@example.com')" >/dev/null
drain -c "SET dfend.api_url = 'http://127.0.0.1:1'"
drain -c "SET dfend.api_url = 'http://127.0.0.1:1'"
expect "a refused connection is logged" \
    "$(in_log 'LOG:  could not connect to DFend for requests from database "postgres"')" 1
INNER

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend \
    -o "dfend.api_url=$DFEND_EMULATOR_URL" -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" \
    -o dfend.retry_base_delay=10ms -o logging_collector=on -o "log_directory=$LOG_DIR" \
    bash "$DFEND_RUN_DIR/inner.sh" | tee "$DFEND_RUN_DIR/inner.out"
grep -q '^not ok' "$DFEND_RUN_DIR/inner.out" && SCENARIO_FAILED=1
in_log() { cat "$LOG_DIR"/* | grep -c -- "$1" || true; }
expect "the right key is not in the server log" "$(in_log sk_test_emulator)" 0
expect "the wrong key is not in the server log" "$(in_log sk_wrong_key_7e3a91)" 0
exit $SCENARIO_FAILED
