#!/bin/bash
# dfend_attach(notify => channel): one NOTIFY per stored id, from COMMIT in
# sync mode and from the worker in async mode, with the payload the README
# documents; the README's Python LISTEN example (test/examples) gets an id.
source "$(dirname "$0")/../lib.sh"
start_scenario

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend -o "dfend.api_url=$DFEND_EMULATOR_URL" \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" -o dfend.worker_databases=postgres \
    -o dfend.retry_base_delay=10ms bash -c '
    source "$DFEND_ROOT/test/lib.sh"
    export PGDATABASE=postgres
    sql "CREATE EXTENSION dfend" >/dev/null
    sql "CREATE TABLE members (id text PRIMARY KEY, email text, dfend_id text)" >/dev/null
    sql "CREATE TABLE users (id bigint PRIMARY KEY, email text, dfend_id text)" >/dev/null
    sql "SELECT dfend_attach(\$\$members\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$, mode => \$\$sync\$\$, notify => \$\$dfend_ids\$\$)" >/dev/null
    sql "SELECT dfend_attach(\$\$users\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$, notify => \$\$dfend_ids\$\$)" >/dev/null
    expect "a channel name is checked" "$(sql "SELECT dfend_attach(\$\$users\$\$, \$\$id\$\$, \$\$dfend_id\$\$, notify => \$\$\$\$)" | head -1)" \
        "ERROR:  invalid notify channel \"\""

    # Sync: the committing session gets one notification per row (psql
    # prints them after its next command).
    out=$(psql -XAtq -v ON_ERROR_STOP=1 <<SQL 2>&1
LISTEN dfend_ids;
INSERT INTO members VALUES (\$\$m-1\$\$, \$\$m1@example.com\$\$), (\$\$m-"2"\$\$, \$\$m2@example.com\$\$);
SELECT 1;
SQL
)
    count=$(grep -c "^Asynchronous notification \"dfend_ids\" with payload" <<<"$out")
    expect "sync: one notification per stored row" "$count" 2
    id1=$(sql "SELECT dfend_id FROM members WHERE id = \$\$m-1\$\$")
    expect "sync: the payload names the table, the user id and the DFend id" \
        "$(grep -cF "payload \"{\"table\": \"public.members\", \"user_id\": \"m-1\", \"dfend_id\": \"$id1\"}\"" <<<"$out")" 1
    expect "sync: the payload is JSON, quotes escaped" \
        "$(grep -cF "\"user_id\": \"m-\\\"2\\\"\"" <<<"$out")" 1
    # Rolled back: nothing stored, nothing told.
    out=$(psql -XAtq -v ON_ERROR_STOP=1 <<SQL 2>&1
LISTEN dfend_ids;
BEGIN;
INSERT INTO members VALUES (\$\$m-3\$\$, \$\$m3@example.com\$\$);
ROLLBACK;
SELECT 1;
SQL
)
    expect "sync: a rolled-back row sends no notification" "$(grep -c "^Asynchronous notification" <<<"$out")" 0

    # Async: the worker notifies when it stores the id; the README example
    # waits for it.
    dsn="dbname=postgres" # the rest from PGHOST, PGPORT, PGUSER, PGPASSWORD
    /usr/bin/python3 "$DFEND_ROOT/test/examples/wait_for_id.py" "$dsn" users 42 20 >"$OUT/listener.out" 2>&1 &
    listener=$!
    sql "INSERT INTO users VALUES (42, \$\$u42@example.com\$\$)" >/dev/null
    wait $listener || true
    got=$(tail -1 "$OUT/listener.out")
    expect "async: the README example gets the id the worker stored" "$got" \
        "$(sql "SELECT dfend_id FROM users WHERE id = 42")"
    expect_match "async: and it is a DFend id" "$got" "^idn_"
    # A session that listens while the worker stores ids sees each one.
    cat >"$OUT/drained.sh" <<SH
source "$DFEND_ROOT/test/lib.sh"
drained() { [ "\$(psql -XAtq -c "SELECT count(*) FROM users WHERE dfend_id IS NULL")" = 0 ]; }
wait_until 20 drained
SH
    out=$(psql -XAtq -v ON_ERROR_STOP=1 <<SQL 2>&1
LISTEN dfend_ids;
INSERT INTO users SELECT i, \$\$u\$\$ || i || \$\$@example.com\$\$ FROM generate_series(100, 109) i;
\! bash $OUT/drained.sh
SELECT 1;
SQL
)
    expect "async: one notification per id the worker stored" \
        "$(grep -c "^Asynchronous notification \"dfend_ids\" with payload .*\"public.users\"" <<<"$out")" 10
    exit $SCENARIO_FAILED
'
