#!/bin/bash
# dfend behind pgbouncer in transaction pooling mode, as an application role
# `app` uses it: the two functions, an async-attached and a sync-attached
# table, dfend.* settings by ALTER ROLE and SET LOCAL (and a plain SET that
# leaks to another client), and what a registration in flight costs the pool.
#
# pgbouncer has two database aliases for the one database `postgres`:
#   single  pool_size = 1 (default_pool_size): every app client shares one
#           server connection, which shows the leak and the wait;
#   pooled  pool_size = 4: a spare connection serves other clients while
#           one waits on DFend.
# The part inside the throwaway cluster runs as `$0 inside` (quoting is
# easier in a file than in bash -c).
source "$(dirname "$0")/../lib.sh"

if [ "${1:-}" != inside ]; then
    start_scenario
    pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend \
        -o "dfend.api_url=$DFEND_EMULATOR_URL" -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" \
        -o dfend.worker_databases=postgres -o dfend.retry_base_delay=10ms \
        bash "$0" inside | tee "$DFEND_RUN_DIR/inner.out"
    grep -q '^not ok' "$DFEND_RUN_DIR/inner.out" && SCENARIO_FAILED=1
    exit $SCENARIO_FAILED
fi

# --- inside pg_virtualenv: superuser psql reaches the cluster directly ---------
export PGDATABASE=postgres
emu() { "$DFEND_ROOT/test/emu" "$@"; }
sql "CREATE EXTENSION dfend" >/dev/null
sql "CREATE ROLE app LOGIN PASSWORD 'app-password'" >/dev/null
sql "CREATE TABLE users (id bigint PRIMARY KEY, email text, dfend_id text)" >/dev/null
sql "SELECT dfend_attach('users', 'id', 'dfend_id', email_column => 'email')" >/dev/null
sql "CREATE TABLE signups (id bigint PRIMARY KEY, email text, dfend_id text)" >/dev/null
sql "SELECT dfend_attach('signups', 'id', 'dfend_id', email_column => 'email', mode => 'sync')" >/dev/null
sql "GRANT INSERT ON users, signups TO app" >/dev/null
# A setting for every server connection pgbouncer opens as app.
sql "ALTER ROLE app SET dfend.request_timeout = '2s'" >/dev/null

# pgbouncer refuses to run as root: its files belong to postgres.
BDIR="$DFEND_RUN_DIR/pgbouncer"
mkdir -p "$BDIR"
BPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server="host=127.0.0.1 port=$PGPORT dbname=postgres"
cat >"$BDIR/pgbouncer.ini" <<EOF
[databases]
single = $server
pooled = $server pool_size=4

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
pool_mode = transaction
default_pool_size = 1
max_client_conn = 50
auth_type = trust
auth_file = $BDIR/userlist.txt
stats_users = monitor
logfile = $BDIR/pgbouncer.log
pidfile = $BDIR/pgbouncer.pid
EOF
# trust on loopback; the password is what pgbouncer logs in to the server with.
printf '"app" "app-password"\n"monitor" ""\n' >"$BDIR/userlist.txt"
chown -R postgres: "$BDIR"
chmod 600 "$BDIR/userlist.txt"
pgbouncer -q -u postgres "$BDIR/pgbouncer.ini" &
BOUNCER=$!
trap 'kill $BOUNCER 2>/dev/null || true; wait $BOUNCER 2>/dev/null || true' EXIT

# as_app DB SQL: one client of pgbouncer, logged in as app (value or error).
APP_PSQL=(psql -XAtq -h 127.0.0.1 -p "$BPORT" -U app -v ON_ERROR_STOP=1)
as_app() { "${APP_PSQL[@]}" -d "$1" -c "$2" 2>&1 || true; }
bouncer_up() { [ "$(as_app single "SELECT 1")" = 1 ]; }
if wait_until 30 bouncer_up; then pass "pgbouncer in transaction mode serves app"; else
    fail "pgbouncer serves app"; cat "$BDIR/pgbouncer.log"; exit 1; fi
expect "pgbouncer runs in transaction mode" \
    "$(psql -XAtq -h 127.0.0.1 -p "$BPORT" -U monitor -d pgbouncer -c "SHOW CONFIG" | awk -F'|' '$1 == "pool_mode" { print $2 }')" transaction

# --- the functions --------------------------------------------------------------
expect_match "without a grant, app may not register" \
    "$(as_app single "SELECT id FROM dfend_register_identity('42', 'ada@example.com')")" "permission denied for function dfend_register_identity"
sql "GRANT EXECUTE ON FUNCTION dfend_register_identity(text, text, text, boolean, jsonb) TO app" >/dev/null
sql "GRANT EXECUTE ON FUNCTION dfend_get_identity(text, text) TO app" >/dev/null
id=$(as_app single "SELECT id FROM dfend_register_identity('42', 'ada@example.com')")
expect_match "app registers a user through pgbouncer" "$id" '^idn_[0-9a-f]{24}$'
expect "app reads it back through pgbouncer" "$(as_app single "SELECT dfend_get_identity('42')->>'id'")" "$id"
expect "with its email" "$(as_app single "SELECT dfend_get_identity('42')->'identifiers'->'emails'->>0")" ada@example.com

# --- the triggers -----------------------------------------------------------------
# 20 inserts, each its own transaction and so possibly its own turn on the
# server connection; the worker stores the ids after commit.
for i in $(seq 1 20); do echo "INSERT INTO users VALUES ($i, 'u$i@example.com');"; done |
    psql -Xq -h 127.0.0.1 -p "$BPORT" -U app -d pooled -v ON_ERROR_STOP=1 >/dev/null 2>"$DFEND_RUN_DIR/inserts.err" ||
    cat "$DFEND_RUN_DIR/inserts.err"
missing() { sql "SELECT count(*) FROM users WHERE dfend_id IS NULL"; }
stored() { [ "$(sql "SELECT count(*) FROM users WHERE dfend_id IS NOT NULL")" = 20 ]; }
if wait_until 30 stored; then pass "async: 20 rows inserted through pgbouncer get their ids"; else
    fail "async: ids stored (missing $(missing))"; fi
expect "async: the outbox is empty" "$(sql "SELECT pending FROM dfend_queue_status")" 0
as_app pooled "INSERT INTO signups VALUES (1, 'sync@example.com')" >/dev/null
expect_match "sync: a row inserted through pgbouncer has its id after the insert" \
    "$(sql "SELECT dfend_id FROM signups WHERE id = 1")" '^idn_[0-9a-f]{24}$'

# --- dfend.* settings through a shared server connection ----------------------------
# default_pool_size = 1: every app client of `single` gets the same server
# connection (the same backend PID).
pid1=$(as_app single "SELECT pg_backend_pid()")
pid2=$(as_app single "SELECT pg_backend_pid()")
expect "two clients of a pool of 1 share one server connection" "$pid2" "$pid1"
expect "ALTER ROLE app SET applies on pgbouncer's server connection" \
    "$(as_app single "SHOW dfend.request_timeout")" 2s
expect "SET LOCAL applies inside its transaction" \
    "$(as_app single "BEGIN; SET LOCAL dfend.request_timeout = '5s'; SHOW dfend.request_timeout; COMMIT")" 5s
expect "SET LOCAL does not reach the next client" "$(as_app single "SHOW dfend.request_timeout")" 2s
as_app single "SET dfend.request_timeout = '7s'" >/dev/null
expect "a plain SET leaks to another client's transaction on the same server connection" \
    "$(as_app single "BEGIN; SHOW dfend.request_timeout; COMMIT")" 7s
expect "(still the same server connection)" "$(as_app single "SELECT pg_backend_pid()")" "$pid1"
as_app single "RESET dfend.request_timeout" >/dev/null
expect "RESET brings back the role's setting" "$(as_app single "SHOW dfend.request_timeout")" 2s

# --- a registration in flight holds its server connection -------------------------
# The next request to the emulator hangs for 60 s; the caller's SET LOCAL
# lets it wait that long (the role's 2 s would retry). Then a second client
# runs SELECT 1 through the same pool, and the first is cancelled from its
# own psql (SIGINT: a cancel request through pgbouncer).
hanging() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND wait_event_type = 'Extension'")" = 1 ]; }
alive() { kill -0 "$1" 2>/dev/null; }
gone() { ! kill -0 "$1" 2>/dev/null; }
cl_waiting() { psql -XAtq -h 127.0.0.1 -p "$BPORT" -U monitor -d pgbouncer -c "SHOW POOLS" | awk -F'|' -v db="$1" '$1 == db && $2 == "app" { print $4 }'; }
one_waiting() { [ "$(cl_waiting "$1")" = 1 ]; }
for db in pooled single; do
    emu config '{"hang_next": 1, "hang_ms": 60000}'
    # psql itself in the background (not a function's subshell), so that
    # SIGINT reaches it; one -c per statement, so that psql prints the error
    # of a cancelled one.
    "${APP_PSQL[@]}" -d $db -c "BEGIN" -c "SET LOCAL dfend.request_timeout = '120s'" \
        -c "SELECT id FROM dfend_register_identity('hang-$db')" -c "COMMIT" >"$DFEND_RUN_DIR/first-$db.out" 2>&1 &
    first=$!
    if wait_until 10 hanging; then pass "$db: the first client's registration is waiting on DFend"; else fail "$db: registration waiting"; fi
    start=$(date +%s%N)
    "${APP_PSQL[@]}" -d $db -c "SELECT 1" >"$DFEND_RUN_DIR/second-$db.out" 2>&1 &
    second=$!
    if [ $db = pooled ]; then
        # pool_size = 4: a spare server connection answers at once.
        if wait_until 10 gone $second && alive $first && hanging; then
            pass "pooled: SELECT 1 from another client finished in $(( ($(date +%s%N) - start) / 1000000 )) ms while the registration still waits"
        else fail "pooled: SELECT 1 while the registration waits"; fi
        wait $second || true
        expect "pooled: and returned 1" "$(cat "$DFEND_RUN_DIR/second-$db.out")" 1
    else
        # pool_size = 1: the only server connection is held by the call.
        if wait_until 10 one_waiting $db && alive $second && hanging; then
            pass "single: SELECT 1 from another client waits for the pool's one connection"
        else fail "single: SELECT 1 waits (cl_waiting $(cl_waiting $db))"; fi
    fi
    start=$(date +%s%N)
    kill -INT $first
    if wait_until 10 gone $first; then
        pass "$db: a cancel through pgbouncer stops the registration in $(( ($(date +%s%N) - start) / 1000000 )) ms"
    else fail "$db: cancel"; fi
    wait $first || true
    expect_match "$db: with PostgreSQL's own message" "$(cat "$DFEND_RUN_DIR/first-$db.out")" "canceling statement due to user request"
    if [ $db = single ]; then
        if wait_until 10 gone $second; then pass "single: then the waiting SELECT 1 runs"; else fail "single: waiting SELECT 1 runs"; fi
        wait $second || true
        expect "single: and returns 1" "$(cat "$DFEND_RUN_DIR/second-$db.out")" 1
    fi
done
