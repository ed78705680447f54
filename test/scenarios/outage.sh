#!/bin/bash
# DFend down for a while, then back: the worker's circuit breaker pauses the
# queue instead of spending attempts, so no entry is dead-lettered by the
# outage, its state shows in dfend_worker_status, the LOG says when sending
# paused and resumed, and the drain resumes within seconds of recovery. A
# row whose own data fails local validation is still a dead letter, not
# held like the others: it needs no network.
# Time is compressed: dfend.max_attempts = 2 and dfend.dead_letter_after =
# 1s would dead-letter every entry within about two seconds of failures if
# the breaker did not hold them.
source "$(dirname "$0")/../lib.sh"
start_scenario
mkdir -p "$DFEND_RUN_DIR/log"; chown postgres: "$DFEND_RUN_DIR/log"
export LOG_DIR="$DFEND_RUN_DIR/log"

cat > "$DFEND_RUN_DIR/inner.sh" <<'INNER'
source "$DFEND_ROOT/test/lib.sh"
export PGDATABASE=postgres
emu() { "$DFEND_ROOT/test/emu" "$@"; }
in_log() { cat "$LOG_DIR"/* | grep -c -- "$1" || true; }
configure() { sql "ALTER SYSTEM $1" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null; }
paused='LOG:  dfend pauses sending the outbox of database "postgres": DFend is unreachable'
resumed='LOG:  dfend resumes sending the outbox of database "postgres": DFend answers again'
state() { sql "SELECT worker_state FROM dfend_worker_status()"; }
pending() { sql "SELECT count(*) FROM dfend_outbox WHERE state = 'pending'"; }
dead() { sql "SELECT count(*) FROM dfend_outbox WHERE state = 'dead'"; }
missing() { sql "SELECT count(*) FROM users WHERE dfend_id IS NULL AND id > 0"; }

sql "CREATE EXTENSION dfend" >/dev/null
sql "CREATE TABLE users (id bigint PRIMARY KEY, email text, dfend_id text)" >/dev/null
sql "SELECT dfend_attach('users', 'id', 'dfend_id', email_column => 'email', invalid_fields => 'reject')" >/dev/null
worker_up() { [ -n "$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'dfend worker' AND datname = current_database()")" ]; }
if wait_until 30 worker_up; then pass "the worker runs"; else fail "the worker runs"; fi

# A 5xx storm: every request fails.
emu reset
emu config '{"rate_5xx": 1}'
sql "INSERT INTO users SELECT i, 'u' || i || '@example.com' FROM generate_series(1, 200) i" >/dev/null
open_shown() { [[ "$(state)" == "waiting: DFend unreachable, breaker open"* ]]; }
if wait_until 20 open_shown; then pass "the breaker opens, shown in worker_state ($(state))"; else fail "the breaker opens (worker_state '$(state)')"; fi
expect_match "worker_state says when the next probe goes" "$(state)" '^waiting: DFend unreachable, breaker open \([0-9]+x\), probe in [0-9]+ s$'
logged_pause() { [ "$(in_log "$paused")" = 1 ]; }
if wait_until 10 logged_pause; then pass "the pause is logged"; else fail "the pause is logged"; fi
expect "with what failed" "$(in_log 'DETAIL:  The last error was: DFend is unavailable')" 1

# A row with an invalid email, queued during the outage: it waits its turn
# (the queue is paused), and is dead once claimed, however DFend fares.
sql "INSERT INTO users VALUES (-1, 'not-an-email')" >/dev/null

# Well past what 2 attempts and a 1 s horizon allow.
requests_before=$(emu stat requests)
started=$SECONDS
probes_went() { [ $(( $(emu stat requests) - requests_before )) -ge 3 ] && [ $((SECONDS - started)) -ge 8 ]; }
wait_until 30 probes_went || true
requests=$(( $(emu stat requests) - requests_before ))
[ "$requests" -ge 3 ] && [ "$requests" -le 40 ] && pass "while open, only probes go ($requests requests in $((SECONDS - started)) s)" \
    || fail "while open, only probes go ($requests requests in $((SECONDS - started)) s)"
expect "the outage dead-letters nothing" "$(dead)" 0
expect "and spends no attempt" "$(sql "SELECT max(attempts) FROM dfend_outbox WHERE state = 'pending'")" 0
expect "every row still pending" "$(pending)" 201

# DFend is back: the drain resumes within 5 s and completes.
emu config '{"rate_5xx": 0}'
back=$SECONDS
some_stored() { [ "$(missing)" -lt 200 ]; }
if wait_until 6 some_stored; then pass "the drain resumes within $((SECONDS - back)) s of recovery"; else fail "the drain resumes within 5 s of recovery"; fi
drained() { [ "$(missing)" = 0 ] && [ "$(pending)" = 0 ]; }
if wait_until 30 drained; then pass "every row gets its id"; else fail "every row gets its id (missing $(missing))"; fi
expect_match "the invalid email is the one dead letter" "$(sql "SELECT user_id || ' ' || last_error FROM dfend_dead_letters")" '^-1 .*email'
expect "no duplicate identities" "$(emu stat identities)" 200
logged_resume() { [ "$(in_log "$resumed")" = 1 ]; }
if wait_until 10 logged_resume; then pass "the resume is logged"; else fail "the resume is logged"; fi
expect "the pause is logged once" "$(in_log "$paused")" 1
idle() { [ "$(state)" = idle ]; }
if wait_until 10 idle; then pass "worker_state is idle again"; else fail "worker_state is idle again ($(state))"; fi

# Nothing listens (connection refused): the same, and the LOG pause line
# waits for the minute since the last one.
configure "SET dfend.api_url = 'http://127.0.0.1:1'"
for i in $(seq 201 250); do echo "INSERT INTO users VALUES ($i, 'u$i@example.com');"; done | psql -Xq >/dev/null
if wait_until 20 open_shown; then pass "a refused connection opens the breaker"; else fail "a refused connection opens the breaker ($(state))"; fi
expect_match "opened twice now" "$(state)" '\(2x\)'
expect "a second pause within the minute is not logged" "$(in_log "$paused")" 1
expect "nothing dead" "$(dead)" 1
configure "RESET dfend.api_url"
if wait_until 30 drained; then pass "after the refusal every row gets its id"; else fail "after the refusal every row gets its id (missing $(missing))"; fi
expect "still no attempt spent" "$(sql "SELECT coalesce(max(attempts), 0) FROM dfend_outbox WHERE state = 'pending'")" 0
INNER

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend \
    -o "dfend.api_url=$DFEND_EMULATOR_URL" -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" \
    -o dfend.retry_base_delay=10ms -o dfend.max_retries=1 -o dfend.max_attempts=2 \
    -o dfend.dead_letter_after=1s -o dfend.worker_poll_interval=60s \
    -o logging_collector=on -o "log_directory=$LOG_DIR" \
    bash "$DFEND_RUN_DIR/inner.sh" | tee "$DFEND_RUN_DIR/inner.out"
grep -q '^not ok' "$DFEND_RUN_DIR/inner.out" && SCENARIO_FAILED=1
exit $SCENARIO_FAILED
