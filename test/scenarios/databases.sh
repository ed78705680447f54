#!/bin/bash
# Workers follow databases, not names: the launcher starts a worker when
# CREATE EXTENSION commits (no restart), DROP DATABASE / ALTER DATABASE
# RENAME / CREATE DATABASE ... TEMPLATE of a served database work at once,
# DROP EXTENSION stops the worker, a database without dfend keeps no worker,
# no FATAL reaches the log, a shortage of worker slots is a WARNING, and a
# standby reports that no worker runs there.
source "$(dirname "$0")/../lib.sh"
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
start_emulator main --key sk_test_emulator
export DFEND_EMULATOR_URL="http://127.0.0.1:$EMULATOR_PORT"
write_key_file "$DFEND_RUN_DIR/api.key" sk_test_emulator
mkdir -p "$DFEND_RUN_DIR/log"; chown postgres: "$DFEND_RUN_DIR/log"
export LOG_DIR="$DFEND_RUN_DIR/log"

cat > "$DFEND_RUN_DIR/inner.sh" <<'INNER'
source "$DFEND_ROOT/test/lib.sh"
run_dir=$(dirname "$LOG_DIR")
export PGDATABASE=postgres
cluster=$(sql "SHOW cluster_name" | tr "/" " ")
in_db() { psql -XAtq -v ON_ERROR_STOP=1 -d "$1" -c "$2" 2>&1; }
workers_in() { sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'dfend worker' AND datname = '$1'"; }
has_worker() { [ "$(workers_in "$1")" = 1 ]; }
no_worker() { [ "$(workers_in "$1")" = 0 ]; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
fatal_lines() { cat "$LOG_DIR"/* | grep -c "FATAL" || true; }
# A database with dfend, an attached table, and a row whose id proves the
# worker serves it.
served_db() {
    createdb "$1"
    in_db "$1" "CREATE EXTENSION dfend" >/dev/null
    in_db "$1" "CREATE TABLE users (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
    in_db "$1" "SELECT dfend_attach('users', 'id', 'dfend_id', email_column => 'email')" >/dev/null
}
stored() { [ -n "$(in_db "$1" "SELECT dfend_id FROM users WHERE id = $2")" ]; }

launcher_up() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'dfend launcher' AND datname IS NULL")" = 1 ]; }
if wait_until 30 launcher_up; then pass "one dfend launcher runs, connected to no database"; else fail "the launcher runs"; fi
if wait_until 10 no_worker postgres; then pass "postgres (no dfend) keeps no worker"; else fail "postgres has a worker"; fi

# CREATE DATABASE + CREATE EXTENSION: a worker without a restart, and the
# commit wake-up reaches it (the fallback poll is 60 s).
served_db app1
if wait_until 10 has_worker app1; then pass "CREATE EXTENSION starts a worker within seconds"; else fail "a worker for app1"; fi
in_db app1 "INSERT INTO users VALUES (1, 'a1@example.com')" >/dev/null
if wait_until 10 stored app1 1; then pass "app1's insert gets its id"; else fail "app1's insert gets its id"; fi
expect "dfend_worker_status shows the worker" \
    "$(in_db app1 "SELECT worker_pid = (SELECT pid FROM pg_stat_activity WHERE backend_type = 'dfend worker' AND datname = 'app1') FROM dfend_worker_status()")" t

# A database without dfend: the launcher looks (it sees every new database)
# but leaves no worker there.
createdb plain
served_db app2
if wait_until 10 has_worker app2; then pass "a second database gets its own worker"; else fail "a worker for app2"; fi
if wait_until 10 no_worker plain; then pass "a database without dfend keeps no worker"; else fail "plain has a worker"; fi
start=$(date +%s%N)
if sql "DROP DATABASE plain" >/dev/null; then pass "DROP DATABASE of a database without dfend ($(ms_since $start) ms)"; else fail "DROP DATABASE plain"; fi

# Plain DROP DATABASE of a served database: the worker steps aside at once.
start=$(date +%s%N)
out=$(sql "DROP DATABASE app1")
ms=$(ms_since $start)
if [ -z "$out" ] && [ $ms -lt 2000 ]; then pass "DROP DATABASE with a running worker succeeds in $ms ms"; else fail "DROP DATABASE app1 ($ms ms): $out"; fi
expect "app1 is gone" "$(sql "SELECT count(*) FROM pg_database WHERE datname = 'app1'")" 0

# ALTER DATABASE ... RENAME: the worker steps aside and comes back under the
# new name.
start=$(date +%s%N)
out=$(sql "ALTER DATABASE app2 RENAME TO app2b")
ms=$(ms_since $start)
if [ -z "$out" ] && [ $ms -lt 2000 ]; then pass "ALTER DATABASE RENAME with a running worker succeeds in $ms ms"; else fail "RENAME ($ms ms): $out"; fi
if wait_until 10 has_worker app2b; then pass "the renamed database keeps a worker"; else fail "a worker for app2b"; fi
in_db app2b "INSERT INTO users VALUES (2, 'a2@example.com')" >/dev/null
if wait_until 10 stored app2b 2; then pass "the renamed database is served"; else fail "app2b's insert gets its id"; fi

# CREATE DATABASE ... TEMPLATE of a served database: the copy has dfend, so
# it gets a worker too; the template gets its worker back.
start=$(date +%s%N)
out=$(sql "CREATE DATABASE app3 TEMPLATE app2b")
ms=$(ms_since $start)
if [ -z "$out" ] && [ $ms -lt 2000 ]; then pass "CREATE DATABASE ... TEMPLATE a served database succeeds in $ms ms"; else fail "TEMPLATE ($ms ms): $out"; fi
if wait_until 10 has_worker app3; then pass "the copy gets a worker"; else fail "a worker for app3"; fi
if wait_until 10 has_worker app2b; then pass "the template gets its worker back"; else fail "a worker for app2b after the copy"; fi
in_db app3 "INSERT INTO users VALUES (3, 'a3@example.com')" >/dev/null
if wait_until 10 stored app3 3; then pass "the copy is served"; else fail "app3's insert gets its id"; fi

# DROP EXTENSION stops the worker; CREATE EXTENSION brings it back.
in_db app3 "DROP EXTENSION dfend CASCADE" >/dev/null
if wait_until 10 no_worker app3; then pass "DROP EXTENSION stops the worker"; else fail "app3's worker stops"; fi
in_db app3 "CREATE EXTENSION dfend" >/dev/null
if wait_until 10 has_worker app3; then pass "CREATE EXTENSION again starts it again"; else fail "app3's worker again"; fi

# dfend.worker_databases narrows the served databases, on reload.
sql "ALTER SYSTEM SET dfend.worker_databases = 'app2b'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until 10 no_worker app3; then pass "a database left out of dfend.worker_databases loses its worker on reload"; else fail "app3's worker leaves"; fi
expect "its status says why" "$(in_db app3 "SELECT worker_state FROM dfend_queue_status")" \
    "not running: database not in dfend.worker_databases"
expect "the named database keeps its worker" "$(workers_in app2b)" 1
sql "ALTER SYSTEM RESET dfend.worker_databases" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
if wait_until 10 has_worker app3; then pass "back in, back served"; else fail "app3's worker after RESET"; fi

# A worker killed by an error is restarted by the launcher.
pid=$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'dfend worker' AND datname = 'app3'")
sql "SELECT pg_terminate_backend($pid)" >/dev/null
restarted() { local p; p=$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'dfend worker' AND datname = 'app3'"); [ -n "$p" ] && [ "$p" != "$pid" ]; }
if wait_until 30 restarted; then pass "the launcher restarts a terminated worker"; else fail "app3's worker restarted"; fi

# Nothing above logged a FATAL but that termination (no loops for dropped or
# renamed databases, no worker terminated to step aside).
fatal=$(cat "$LOG_DIR"/* | grep "FATAL" || true)
if [ "$(echo "$fatal" | grep -c .)" = 1 ] && [[ "$fatal" == *'terminating background worker "dfend worker" due to administrator command'* ]]; then
    pass "no FATAL in the server log but pg_terminate_backend's"
else
    fail "FATAL in the server log: $fatal"
fi

# Too few worker slots: a WARNING (rate-limited), and the status says why.
# The logical replication launcher and dfend's launcher take two of three.
sql "ALTER SYSTEM SET max_worker_processes = 3" >/dev/null
pg_ctlcluster $cluster restart
short_warning() { cat "$LOG_DIR"/* | grep -q 'WARNING:  dfend could not start a worker for database'; }
if wait_until 30 short_warning; then pass "a WARNING when worker slots run out"; else fail "no WARNING for max_worker_processes"; fi
expect_match "it names max_worker_processes" "$(cat "$LOG_DIR"/* | grep -A2 'dfend could not start a worker' | head -3)" "max_worker_processes is 3"
status_short() {
    in_db app2b "SELECT worker_state FROM dfend_queue_status" | grep -q 'no free background worker slot' ||
        in_db app3 "SELECT worker_state FROM dfend_queue_status" | grep -q 'no free background worker slot'
}
if wait_until 10 status_short; then pass "the unserved database's status says why"; else fail "status without a slot"; fi
expect "one worker runs in the one slot left" \
    "$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'dfend worker'")" 1
expect "the WARNING is not repeated every scan" "$(cat "$LOG_DIR"/* | grep -c 'dfend could not start a worker')" 1
sql "ALTER SYSTEM RESET max_worker_processes" >/dev/null
pg_ctlcluster $cluster restart
both() { has_worker app2b && has_worker app3; }
if wait_until 30 both; then pass "with slots again, every database is served"; else fail "both served after the restart"; fi

# A standby: no launcher, no worker, and the status says so.
port=$(sql "SHOW port")
standby_port=$(python3 -c "import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])")
standby_dir="$run_dir/standby"
mkdir -p "$standby_dir" "$run_dir/standby-log" && chown postgres: "$standby_dir" "$run_dir/standby-log" && chmod 700 "$standby_dir"
runuser -u postgres -- pg_basebackup -h "$PGHOST" -p "$port" -U postgres -D "$standby_dir" -R -X stream 2>&1 | grep -v "^$" || true
runuser -u postgres -- /usr/lib/postgresql/$DFEND_PG_VERSION/bin/pg_ctl -D "$standby_dir" -l "$run_dir/standby-log/server.log" -w \
    -o "-c config_file=$standby_dir/postgresql.auto.conf -c hba_file=$(sql "SHOW hba_file") -c port=$standby_port -c unix_socket_directories=$(sql "SHOW unix_socket_directories") -c shared_preload_libraries=dfend -c hot_standby=on -c logging_collector=off -c max_worker_processes=8" \
    start >/dev/null || cat "$run_dir/standby-log/server.log"
in_standby() { PGPORT=$standby_port psql -XAtq -d "$1" -c "$2" 2>&1; }
replayed() { [ "$(in_standby app2b "SELECT pg_is_in_recovery()")" = t ]; }
if wait_until 30 replayed; then pass "the standby accepts read-only connections"; else fail "the standby runs: $(tail -5 "$run_dir/standby-log/server.log")"; fi
expect "on the standby dfend_queue_status says why no worker runs" \
    "$(in_standby app2b "SELECT worker_state FROM dfend_queue_status")" "not running: server is a standby"
expect "no dfend launcher or worker on the standby" \
    "$(in_standby postgres "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'dfend%'")" 0
runuser -u postgres -- /usr/lib/postgresql/$DFEND_PG_VERSION/bin/pg_ctl -D "$standby_dir" -m fast -w stop >/dev/null
INNER

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend -o "dfend.api_url=$DFEND_EMULATOR_URL" \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" -o dfend.retry_base_delay=10ms \
    -o dfend.worker_poll_interval=60s -o logging_collector=on -o "log_directory=$LOG_DIR" \
    -o wal_level=replica -o max_wal_senders=4 \
    bash "$DFEND_RUN_DIR/inner.sh" | tee "$DFEND_RUN_DIR/inner.out"
grep -q '^not ok' "$DFEND_RUN_DIR/inner.out" && SCENARIO_FAILED=1
exit ${SCENARIO_FAILED:-0}
