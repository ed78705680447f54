#!/bin/bash
# The inside of bench/backfill.sh, run in its throwaway cluster. Appends one
# line per measurement to $OUT/results.txt:
#   backfill NAME ROWS LATENCY_MS SECONDS VMHWM_KB PEAK_RSSANON_KB BASE_RSSANON_KB PEAK_RSSSHMEM_KB
#   loop NAME ROWS LATENCY_MS SECONDS
set -euo pipefail
source "$DFEND_ROOT/test/lib.sh"
results="$OUT/results.txt"
: >"$results"
psql -XAtq -c "CREATE EXTENSION dfend"

make_table() { # make_table NAME ROWS
    psql -XAtq -c "DROP TABLE IF EXISTS $1" \
        -c "CREATE TABLE $1 (id bigint PRIMARY KEY, email text, dfend_id text)" \
        -c "INSERT INTO $1 SELECT g, 'u' || g || '@example.com' FROM generate_series(1, $2) g" \
        -c "VACUUM ANALYZE $1"
}

# kb FIELD PID: a field of /proc/PID/status in kB, or nothing once it is gone.
kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status" 2>/dev/null || true; }

# backfill NAME ROWS URL LATENCY_MS: one CALL in a session of its own.
backfill() {
    local name=$1 rows=$2 url=$3 latency=$4 table="bench_$1"
    make_table "$table" "$rows"
    log "backfill $name: $rows rows, latency $latency ms"
    # The session prints its backend's memory at the start (after loading
    # the library) and after the CALL; a sampler follows RssAnon meanwhile.
    cat >"$OUT/$name.sql" <<EOF
SET dfend.api_url = '$url';
SELECT pg_backend_pid() AS pid \gset
\setenv BACKEND_PID :pid
\! echo \$BACKEND_PID > "$OUT/$name.pid"
SELECT count(*) FROM dfend_backfill_progress;
\! awk '\$1 == "RssAnon:" { print \$2 }' /proc/\$BACKEND_PID/status > "$OUT/$name.base"
\timing on
CALL dfend_backfill('$table', concurrency => $CONCURRENCY, user_id_column => 'id',
                    id_column => 'dfend_id', email_column => 'email');
\timing off
\! awk '\$1 == "VmHWM:" { print \$2 }' /proc/\$BACKEND_PID/status > "$OUT/$name.hwm"
EOF
    rm -f "$OUT/$name.pid"
    psql -X -f "$OUT/$name.sql" >"$OUT/$name.out" 2>&1 &
    local client=$! pid="" peak=0 peak_shared=0 value
    wait_until 30 test -s "$OUT/$name.pid"
    pid=$(cat "$OUT/$name.pid")
    while kill -0 "$client" 2>/dev/null; do
        value=$(kb RssAnon "$pid")
        [ -n "$value" ] && [ "$value" -gt "$peak" ] && peak=$value
        value=$(kb RssShmem "$pid")
        [ -n "$value" ] && [ "$value" -gt "$peak_shared" ] && peak_shared=$value
        sleep 0.02
    done
    wait "$client"
    grep -E 'NOTICE|Time:' "$OUT/$name.out" | sed 's/^/    /' >&2
    local ms
    ms=$(grep -oP '^Time: \K[0-9.]+' "$OUT/$name.out" | tail -1)
    [ "$(psql -XAtq -c "SELECT count(*) FROM $table WHERE dfend_id IS NULL")" = 0 ] ||
        { echo "backfill $name left rows without an id" >&2; exit 1; }
    echo "backfill $name $rows $latency $(awk -v ms="$ms" 'BEGIN { print ms / 1000 }') $(cat "$OUT/$name.hwm") $peak $(cat "$OUT/$name.base") $peak_shared" >>"$results"
    psql -XAtq -c "DROP TABLE $table"
}

# loop NAME ROWS URL LATENCY_MS: the row-at-a-time PL/pgSQL loop.
loop() {
    local name=$1 rows=$2 url=$3 latency=$4 table="bench_$1"
    make_table "$table" "$rows"
    log "loop $name: $rows rows, latency $latency ms"
    local seconds
    seconds=$(psql -XAtq -c "SET dfend.api_url = '$url'" -c "
        DO \$\$
        DECLARE
            r record;
            started timestamptz := clock_timestamp();
        BEGIN
            FOR r IN SELECT id, email FROM $table ORDER BY id LOOP
                UPDATE $table SET dfend_id = (dfend_register_identity(r.id::text, r.email)).id
                WHERE id = r.id;
            END LOOP;
            PERFORM set_config('bench.seconds', extract(epoch FROM clock_timestamp() - started)::text, false);
        END \$\$" -c "SELECT current_setting('bench.seconds')")
    echo "loop $name $rows $latency $seconds" >>"$results"
    psql -XAtq -c "DROP TABLE $table"
}

reset() { DFEND_EMULATOR_URL=$1 "$DFEND_ROOT/test/emu" reset; }
# Interleaved rounds, so that both sides see the same machine.
for round in $(seq 1 "$ROUNDS"); do
    reset "$SLOW_URL"
    backfill "slow$round" "$ROWS" "$SLOW_URL" "$LATENCY_MS"
    reset "$SLOW_URL"
    loop "loop$round" "$LOOP_ROWS" "$SLOW_URL" "$LATENCY_MS"
done
reset "$FAST_URL"
backfill fast "$ROWS" "$FAST_URL" 0
reset "$FAST_URL"
backfill big "$BIG_ROWS" "$FAST_URL" 0
