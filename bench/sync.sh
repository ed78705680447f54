#!/bin/bash
# Sync mode (registration at COMMIT), measured against issue 11's targets:
#  1. a single-row signup while DFend hangs: the latency dfend adds to the
#     INSERT (its COMMIT) against the same INSERT into a table without dfend;
#     target: at most dfend.sync_timeout (500 ms) + 50 ms;
#  2. a 100-row COPY into a sync table at 50 ms API latency, every row
#     registered before COMMIT returns; target: at most 0.5 s.
# Each figure is the median of ROUNDS runs, the two tables interleaved.
#   bench/sync.sh [ROUNDS=5]
source "$(dirname "${BASH_SOURCE[0]}")/../test/lib.sh"
cd "$DFEND_ROOT"
export ROUNDS=${1:-5}
ensure_packages
exec 9>/tmp/dfend-host.lock
flock 9
build_and_install
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
start_emulator bench --key sk_bench --hang-ms 60000
export DFEND_EMULATOR_URL="http://127.0.0.1:$EMULATOR_PORT"
write_key_file "$DFEND_RUN_DIR/key" sk_bench
export OUT="$DFEND_RUN_DIR"

pg_virtualenv -t -v 15 -o shared_preload_libraries=dfend -o "dfend.api_url=$DFEND_EMULATOR_URL" \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/key" bash -c '
    set -e
    source "$DFEND_ROOT/test/lib.sh"
    export PGDATABASE=postgres
    emu() { "$DFEND_ROOT/test/emu" "$@"; }
    psql -Xq <<SQL
CREATE EXTENSION dfend;
CREATE TABLE plain_users (id text PRIMARY KEY, email text, dfend_id text);
CREATE TABLE sync_users (id text PRIMARY KEY, email text, dfend_id text);
SELECT dfend_attach(\$\$sync_users\$\$, \$\$id\$\$, \$\$dfend_id\$\$, email_column => \$\$email\$\$, mode => \$\$sync\$\$);
SQL
    # Milliseconds one psql command takes (connection included: the same
    # for both tables, so the difference is what dfend adds).
    ms() { local start=$(date +%s%N); psql -XAtq -c "$1" >/dev/null 2>&1; echo $(( ($(date +%s%N) - start) / 1000000 )); }
    median() { sort -n | awk "{ a[NR] = \$1 } END { print a[int((NR + 1) / 2)] }"; }
    seq_csv() { for i in $(seq 1 100); do echo "$1-$i,$1-$i@example.com"; done; }

    echo "== 1. one signup while DFend hangs (dfend.sync_timeout = $(psql -XAtq -c "SHOW dfend.sync_timeout")), $ROUNDS rounds"
    emu config "{\"rate_hang\": 1}"
    : > "$OUT/plain1"; : > "$OUT/sync1"
    for round in $(seq 1 "$ROUNDS"); do
        ms "INSERT INTO plain_users VALUES (\$\$h-$round\$\$, \$\$h$round@example.com\$\$)" >> "$OUT/plain1"
        ms "INSERT INTO sync_users VALUES (\$\$h-$round\$\$, \$\$h$round@example.com\$\$)" >> "$OUT/sync1"
    done
    plain=$(median < "$OUT/plain1"); sync=$(median < "$OUT/sync1")
    echo "   without dfend: $plain ms; sync table: $sync ms; added: $((sync - plain)) ms (target <= 550 ms)"
    echo "   rows stored: $(psql -XAtq -c "SELECT count(*) FROM sync_users WHERE id LIKE \$\$h-%\$\$"), left to the worker: $(psql -XAtq -c "SELECT count(*) FROM dfend_outbox")"
    emu reset
    psql -XAtq -c "DELETE FROM dfend_outbox" >/dev/null

    echo "== 2. COPY of 100 rows at 50 ms API latency, $ROUNDS rounds"
    emu config "{\"latency_ms\": 50}"
    : > "$OUT/plain2"; : > "$OUT/sync2"
    for round in $(seq 1 "$ROUNDS"); do
        seq_csv "c$round" > "$OUT/rows.csv"
        start=$(date +%s%N); psql -XAtq -c "\\copy plain_users (id, email) FROM $OUT/rows.csv WITH (FORMAT csv)" >/dev/null
        echo $(( ($(date +%s%N) - start) / 1000000 )) >> "$OUT/plain2"
        start=$(date +%s%N); psql -XAtq -c "\\copy sync_users (id, email) FROM $OUT/rows.csv WITH (FORMAT csv)" >/dev/null
        echo $(( ($(date +%s%N) - start) / 1000000 )) >> "$OUT/sync2"
    done
    plain=$(median < "$OUT/plain2"); sync=$(median < "$OUT/sync2")
    echo "   without dfend: $plain ms; sync table: $sync ms (target <= 500 ms)"
    echo "   rows with their id when COPY returned: $(psql -XAtq -c "SELECT count(*) FILTER (WHERE dfend_id IS NOT NULL) || \$\$ of \$\$ || count(*) FROM sync_users WHERE id LIKE \$\$c%\$\$")"
'
