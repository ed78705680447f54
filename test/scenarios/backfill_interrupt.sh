#!/bin/bash
# CALL dfend_backfill on 10,000 rows against an emulator with 20 ms latency:
#   - pg_cancel_backend midway stops at once with 57014; the committed batches
#     keep their ids; a second run completes with no duplicate at DFend and no
#     request repeated beyond the batch that was in flight;
#   - pg_terminate_backend midway: the same;
#   - concurrent INSERTs and UPDATEs on the table are not blocked while a
#     backfill runs and end up with ids: rows above the run's position in the
#     same run, rows below it in the next run, or through the trigger and the
#     outbox when the table is attached; a second CALL on the same table is
#     refused while the first runs;
#   - dfend_enqueue_backfill hands rows to the outbox, which drains them;
#   - max_rate caps the request rate; progress NOTICEs appear every 5 s.
# Run by test/run-tests.sh. The script re-runs itself inside pg_virtualenv.
source "$(dirname "$0")/../lib.sh"
ROWS=10000
BATCH=1000

if [ "${1:-}" != inner ]; then
    make_run_dir
    trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
    start_emulator main --key sk_test_emulator --latency-ms 20
    export DFEND_EMULATOR_URL="http://127.0.0.1:$EMULATOR_PORT"
    write_key_file "$DFEND_RUN_DIR/api.key" sk_test_emulator
    export OUT="$DFEND_RUN_DIR"
    pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend \
        -o "dfend.api_url=$DFEND_EMULATOR_URL" -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" \
        bash "$0" inner | tee "$DFEND_RUN_DIR/inner.out"
    grep -q '^not ok' "$DFEND_RUN_DIR/inner.out" && SCENARIO_FAILED=1
    grep -q '^ok' "$DFEND_RUN_DIR/inner.out" || SCENARIO_FAILED=1
    exit $SCENARIO_FAILED
fi

# --- inside the throwaway cluster ------------------------------------------------
emu() { "$DFEND_ROOT/test/emu" "$@"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
sql "CREATE EXTENSION dfend" >/dev/null

make_table() { # make_table NAME: $ROWS users without an id
    sql "CREATE TABLE $1 (id bigint PRIMARY KEY, email text, dfend_id text);
         INSERT INTO $1 SELECT g, 'u' || g || '@example.com' FROM generate_series(1, $ROWS) g" >/dev/null
}
backfill_sql() { echo "CALL dfend_backfill('$1', batch_size => $BATCH, concurrency => 32, user_id_column => 'id', id_column => 'dfend_id', email_column => 'email')"; }
running_with_progress() {
    [ "$(sql "SELECT count(*) FROM dfend_backfill_progress WHERE table_name = '$1'::regclass AND state = 'running' AND done > 0")" = 1 ]
}
last_run() { sql "SELECT $2 FROM dfend_backfill_progress WHERE table_name = '$1'::regclass ORDER BY run_id DESC LIMIT 1"; }
stored() { sql "SELECT count(dfend_id) FROM $1"; }

for how in cancel terminate; do
    table="users_$how"
    make_table "$table"
    emu reset
    psql -XAtq -c "$(backfill_sql "$table")" >"$OUT/$how.out" 2>&1 &
    client=$!
    if wait_until 30 running_with_progress "$table"; then
        pass "$how: another session sees the run's progress (running, done > 0)"
    else
        fail "$how: no progress seen"
    fi
    expect "$how: the view shows the total" "$(last_run "$table" total)" "$ROWS"
    start=$(now_ms)
    sql "SELECT pg_${how}_backend(pid) FROM dfend_backfill_progress WHERE table_name = '$table'::regclass AND state = 'running'" >/dev/null
    wait $client || true
    ms=$(( $(now_ms) - start ))
    echo "# $how: the CALL ended $ms ms after pg_${how}_backend"
    if [ $ms -lt 2000 ]; then pass "$how: in-flight requests aborted at once ($ms ms)"; else fail "$how: took $ms ms"; fi
    if [ $how = cancel ]; then
        expect_match "cancel: PostgreSQL's own 57014 message" "$(cat "$OUT/$how.out")" "canceling statement due to user request"
    else
        expect_match "terminate: PostgreSQL's own message" "$(cat "$OUT/$how.out")" "terminating connection due to administrator command"
    fi
    kept=$(stored "$table")
    done_rows=$(last_run "$table" done)
    if [ "$kept" -gt 0 ] && [ "$kept" -lt $ROWS ]; then pass "$how: stopped midway ($kept of $ROWS ids stored)"; else fail "$how: $kept ids stored"; fi
    expect "$how: every committed batch kept its ids (stored = done of the run)" "$kept" "$done_rows"
    expect "$how: the run shows as interrupted" "$(last_run "$table" state)" "interrupted"
    idle() { [ "$(emu stat in_flight)" = 0 ]; }
    wait_until 10 idle || true
    posts_before=$(emu stat posts)

    psql -XAtq -c "$(backfill_sql "$table")" >"$OUT/$how-2.out" 2>&1
    expect_match "$how: the second run completes" "$(cat "$OUT/$how-2.out")" "finished: $((ROWS - kept)) registered"
    expect "$how: every row has an id" "$(stored "$table")" "$ROWS"
    expect "$how: every id is distinct" "$(sql "SELECT count(DISTINCT dfend_id) FROM $table")" "$ROWS"
    expect "$how: DFend holds one identity per row" "$(emu stat identities)" "$ROWS"
    expect "$how: DFend created each identity once" "$(emu stat created)" "$ROWS"
    posts=$(emu stat posts)
    echo "# $how: $posts requests in all ($posts_before before the second run, $kept rows stored before the interruption)"
    if [ "$posts" -le $((ROWS + BATCH)) ]; then
        pass "$how: no work repeated beyond the in-flight batch ($posts requests <= $ROWS + $BATCH)"
    else
        fail "$how: $posts requests for $ROWS rows"
    fi
    # The second run selects only rows without an id (its NOTICE above says
    # how many it registered). Its request count may exceed that by a few:
    # a request of the terminated backend can reach the emulator after it
    # looked idle, and under CI load a timed-out request is retried (CI saw
    # 2 more once).
    second=$(( posts - posts_before ))
    if [ "$second" -ge $(( ROWS - kept )) ] && [ "$second" -le $(( ROWS - kept + 10 )) ]; then
        pass "$how: rows stored before the interruption were not sent again ($second requests for $(( ROWS - kept )) rows)"
    else
        fail "$how: the second run sent $second requests for $(( ROWS - kept )) rows without an id"
    fi
    sql "DROP TABLE $table" >/dev/null
done

# --- concurrent writers ------------------------------------------------------------
table=users_busy
make_table "$table"
emu reset
psql -X -c "$(backfill_sql "$table")" >"$OUT/busy.out" 2>&1 &
client=$!
if wait_until 30 running_with_progress "$table"; then pass "busy: the backfill is running"; else fail "busy: backfill not running"; fi
# lock_timeout bounds each write: a blocked write fails instead of waiting.
write() { # write SQL: prints the elapsed ms, or the error
    local start result
    start=$(now_ms)
    result=$(psql -XAtq -v ON_ERROR_STOP=1 -c "SET lock_timeout = '3s'" -c "$1" 2>&1) || { echo "$result"; return; }
    echo $(( $(now_ms) - start ))
}
for statement in \
    "INSERT INTO $table (id, email) VALUES ($((ROWS + 1)), 'new.high@example.com')" \
    "INSERT INTO $table (id, email) VALUES (0, 'new.low@example.com')" \
    "UPDATE $table SET email = 'changed@example.com' WHERE id = $((ROWS - 1))" \
    "UPDATE $table SET email = 'changed.again@example.com' WHERE id = 2"; do
    ms=$(write "$statement")
    if [[ "$ms" =~ ^[0-9]+$ ]] && [ "$ms" -lt 1000 ]; then
        pass "busy: not blocked: ${statement:0:60}... ($ms ms)"
    else
        fail "busy: '$statement' -> $ms"
    fi
done
expect "busy: the backfill was still running during those writes" \
    "$(sql "SELECT state FROM dfend_backfill_progress WHERE table_name = '$table'::regclass ORDER BY run_id DESC LIMIT 1")" "running"
expect_match "busy: a second backfill of the same table is refused while the first runs" \
    "$(sql "$(backfill_sql "$table")")" "a backfill of table public.users_busy is already running"
wait $client || true
expect_match "busy: the backfill finished" "$(cat "$OUT/busy.out")" "finished: $((ROWS + 1)) registered"
expect_match "busy: a progress NOTICE came after 5 s (done/total, rate, ETA, failures)" \
    "$(cat "$OUT/busy.out")" "NOTICE:  backfill of public.users_busy: [0-9]+ of $ROWS rows \([0-9.]+ %\), [0-9]+ rows/s, [0-9:]+ left, 0 failed"
# The row inserted above the run's position was picked up by the same run;
# the one inserted below it (key 0) was not, and the next run stores it.
expect "busy: the new row with a higher key got its id in the same run" \
    "$(sql "SELECT dfend_id IS NOT NULL FROM $table WHERE id = $((ROWS + 1))")" "t"
expect "busy: the new row below the run's position is still without an id" \
    "$(sql "SELECT dfend_id IS NULL FROM $table WHERE id = 0")" "t"
expect_match "busy: a second run stores it" "$(psql -X -c "$(backfill_sql "$table")" 2>&1)" "finished: 1 registered"
expect "busy: every row has an id" "$(sql "SELECT count(*) FROM $table WHERE dfend_id IS NULL")" "0"
expect "busy: DFend holds one identity per row" "$(emu stat identities)" "$((ROWS + 2))"
expect_match "busy: the row updated before the backfill reached it was registered with its new email" \
    "$(sql "SELECT dfend_get_identity('$((ROWS - 1))')->'identifiers'->>'emails'")" "changed@example.com"
sql "DROP TABLE $table" >/dev/null

# --- an attached table: rows inserted during the backfill get their ids
# through the trigger and the outbox (drained by the worker, or here by
# dfend_process_queue, whichever comes first).
table=users_attached
ROWS=3000 make_table "$table"
sql "SELECT dfend_attach('$table', 'id', 'dfend_id', email_column => 'email')" >/dev/null
emu reset
psql -X -c "CALL dfend_backfill('$table')" >"$OUT/attached.out" 2>&1 &
client=$!
if wait_until 30 running_with_progress "$table"; then pass "attached: the backfill runs with the attachment's mapping"; else fail "attached: backfill not running"; fi
ms=$(write "INSERT INTO $table (id, email) VALUES (0, 'during@example.com')")
if [[ "$ms" =~ ^[0-9]+$ ]] && [ "$ms" -lt 1000 ]; then pass "attached: an INSERT during the backfill is not blocked ($ms ms)"; else fail "attached: INSERT -> $ms"; fi
wait $client || true
expect_match "attached: the backfill finished" "$(cat "$OUT/attached.out")" "finished: 3000 registered"
stored0() { sql "SELECT dfend_process_queue()" >/dev/null; [ "$(sql "SELECT dfend_id IS NOT NULL FROM $table WHERE id = 0")" = t ]; }
if wait_until 30 stored0; then pass "attached: the row inserted during the backfill got its id through the trigger"; else fail "attached: row 0 has no id"; fi
expect "attached: every row has an id" "$(sql "SELECT count(*) FROM $table WHERE dfend_id IS NULL")" "0"
expect "attached: DFend created one identity per row" "$(emu stat created)" "3001"
# dfend_enqueue_backfill hands rows without an id to the worker instead.
sql "UPDATE $table SET dfend_id = NULL WHERE id BETWEEN 1 AND 50" >/dev/null
# Both calls in one transaction, so the worker (which may drain the first
# call's entries between two separate calls) cannot make the second see rows
# whose entries are gone and whose ids it has not read yet.
queued=$(psql -XAtq -v ON_ERROR_STOP=1 -c "BEGIN" -c "SELECT dfend_enqueue_backfill('$table')" \
    -c "SELECT dfend_enqueue_backfill('$table')" -c "COMMIT" | paste -sd ' ')
expect "enqueue: 50 rows queued, and once only" "$queued" "50 0"
drained() { sql "SELECT dfend_process_queue()" >/dev/null; [ "$(sql "SELECT count(*) FROM $table WHERE dfend_id IS NULL")" = 0 ]; }
if wait_until 30 drained; then pass "enqueue: the outbox drained and every row has its id again"; else fail "enqueue: rows still without an id"; fi
expect "enqueue: no duplicate identities" "$(emu stat identities)" "3001"
sql "SELECT dfend_detach('$table')" >/dev/null

# --- max_rate ----------------------------------------------------------------------
sql "CREATE TABLE rated (id integer PRIMARY KEY, dfend_id text);
     INSERT INTO rated SELECT generate_series(1, 300)" >/dev/null
emu reset
start=$(now_ms)
sql "CALL dfend_backfill('rated', max_rate => 150, user_id_column => 'id', id_column => 'dfend_id')" >/dev/null
ms=$(( $(now_ms) - start ))
rate=$(( 300 * 1000 / ms ))
echo "# max_rate 150: 300 rows in $ms ms ($rate rows/s)"
if [ $rate -le 165 ] && [ $rate -ge 100 ]; then pass "max_rate => 150 holds the rate near 150/s ($rate rows/s)"; else fail "max_rate => 150 gave $rate rows/s"; fi
expect "max_rate: every row has an id" "$(stored rated)" "300"
