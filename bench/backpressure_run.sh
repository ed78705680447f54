#!/bin/bash
# The inside of bench/backpressure.sh, run in its throwaway cluster: starts
# the emulator, points dfend at it, and runs the rounds of each condition in
# $CONDITIONS, interleaved (round 1 of each, then round 2...). Appends one
# line of key=value pairs per round to $OUT/results.txt.
set -euo pipefail
source "$DFEND_ROOT/test/lib.sh"
DFEND_RUN_DIR=$OUT   # lib.sh empties it; the emulators' port files and logs
trap 'stop_emulators' EXIT
results="$OUT/results.txt"
helper="$DFEND_ROOT/bench/backpressure.py"

EMULATOR_FLAGS=(--key sk_bench --latency-ms "$LATENCY_MS")
start_emulator api "${EMULATOR_FLAGS[@]}"
PORT=$EMULATOR_PORT
export DFEND_EMULATOR_URL="http://127.0.0.1:$PORT"
emu() { "$DFEND_ROOT/test/emu" "$@"; }
# q DB SQL: one statement, its value only.
q() { psql -XAtq -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
now() { date +%s.%N; }
# poll TIMEOUT COMMAND...: like wait_until, but polls every 0.25 s (the
# timings come from timestamps the rows carry, not from the polling).
poll() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.25
    done
}

LIMIT_CONFIG="{\"account_rate\": $RATE, \"account_burst\": $BURST}"
declare -A BACKFILL_CONFIG=(
    [clean]=''
    [faults]='{"rate_5xx": 0.05, "rate_drop": 0.02}'
    [faults429]='{"rate_5xx": 0.05, "rate_drop": 0.02, "rate_429": 0.01}'
    [limit]=$LIMIT_CONFIG
)

psql -XAtq -v ON_ERROR_STOP=1 -d postgres >/dev/null <<SQL
ALTER SYSTEM SET dfend.api_url = '$DFEND_EMULATOR_URL';
ALTER SYSTEM SET dfend.worker_databases = 'w1,w2';
ALTER SYSTEM SET dfend.worker_concurrency = $CONCURRENCY;
SELECT pg_reload_conf();
SQL
reloaded() { [ "$(q postgres 'SHOW dfend.worker_concurrency')" = "$CONCURRENCY" ]; }
wait_until 30 reloaded
for db in bf w1 w2; do
    q postgres "CREATE DATABASE $db" >/dev/null
    q "$db" "CREATE EXTENSION dfend" >/dev/null
done
# The workers' table: stored_at is when the worker stored the row's id.
for db in w1 w2; do
    PGOPTIONS='-c client_min_messages=warning' psql -XAtq -v ON_ERROR_STOP=1 -d "$db" >/dev/null <<'SQL'
CREATE TABLE users (id bigint PRIMARY KEY, email text, dfend_id text, stored_at timestamptz);
SELECT dfend_attach('users', 'id', 'dfend_id', email_column => 'email');
CREATE FUNCTION note_stored() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.stored_at := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER note_stored BEFORE UPDATE OF dfend_id ON users
    FOR EACH ROW EXECUTE FUNCTION note_stored();
SQL
done
workers_up() {
    [ "$(q postgres "SELECT count(*) FROM pg_stat_activity
                     WHERE backend_type = 'dfend worker' AND datname IN ('w1', 'w2')")" = 2 ]
}
wait_until 60 workers_up || { echo "the workers of w1 and w2 did not start" >&2; exit 1; }

# record PREFIX DB...: checks the rows of DB's table against the emulator
# and appends PREFIX and the round's counters to the results.
record() {
    local prefix=$1 db files=() line; shift
    curl -sf "$DFEND_EMULATOR_URL/admin/stats" >"$OUT/stats.json"
    curl -sf "$DFEND_EMULATOR_URL/admin/identities" >"$OUT/identities.json"
    for db in "$@"; do
        local table=users
        [ "$db" = bf ] && table=bench
        psql -XAtq -F ' ' -d "$db" -c "SELECT id, dfend_id FROM $table" >"$OUT/rows.$db"
        files+=("$OUT/rows.$db")
    done
    line="$prefix $(python3 "$helper" check "$OUT/stats.json" "$OUT/identities.json" "${files[@]}")"
    echo "$line" >>"$results"
    # One line to follow the run: the round's rate, 429 share and retries.
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
         END { printf "    %s round %s: %d rows in %.1f s, %.0f/s; %.1f%% of %d requests answered 429, %.2f retries per row\n",
                      f["cond"], f["round"], f["rows"], f["seconds"], f["rows"] / f["seconds"],
                      100 * f["s429"] / (f["requests"] ? f["requests"] : 1), f["requests"],
                      (f["posts"] - f["rows"]) / f["rows"] }' <<<"$line" >&2
}

reset_emulator() { # reset_emulator [CONFIG_JSON]
    emu reset
    [ -z "${1:-}" ] || emu config "$1"
}

# backfill_round COND ROUND: CALL dfend_backfill on ROWS fresh rows.
backfill_round() {
    local cond=$1 round=$2 start end error=0
    PGOPTIONS='-c client_min_messages=warning' psql -XAtq -v ON_ERROR_STOP=1 -d bf >/dev/null \
        -c "DROP TABLE IF EXISTS bench" \
        -c "CREATE TABLE bench (id bigint PRIMARY KEY, email text, dfend_id text)" \
        -c "INSERT INTO bench SELECT g, 'u' || g || '@example.com' FROM generate_series(1, $ROWS) g" \
        -c "VACUUM ANALYZE bench"
    reset_emulator "${BACKFILL_CONFIG[$cond]}"
    start=$(now)
    psql -Xq -v ON_ERROR_STOP=1 -d bf -c "CALL dfend_backfill('bench', concurrency => $CONCURRENCY,
        user_id_column => 'id', id_column => 'dfend_id', email_column => 'email')" \
        >"$OUT/call.out" 2>&1 || error=1
    end=$(now)
    if [ "$error" = 1 ]; then
        echo "WARNING: $cond round $round: the backfill failed:" >&2
        grep -E 'ERROR|DETAIL' "$OUT/call.out" | sed 's/^/    /' >&2 || true
    fi
    local name=$cond
    [ "$cond" = limit ] && name=limit_backfill
    record "cond=$name round=$round kind=backfill burst=$BURST error=$error \
seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" bf
}

# clear_queue DB: an empty table and outbox, the worker running.
clear_queue() {
    q "$1" "TRUNCATE users" >/dev/null
    q "$1" "DELETE FROM dfend_outbox" >/dev/null
    wait_until 60 workers_up || { echo "a worker is not running" >&2; exit 1; }
}
drained() { # drained DB...: no entry pending in any of them
    local db
    for db in "$@"; do
        [ "$(q "$db" "SELECT pending FROM dfend_queue_status")" = 0 ] || return 1
    done
}
insert_rows() { # insert_rows DB FIRST COUNT
    q "$1" "INSERT INTO users (id, email) SELECT g, 'u' || g || '@example.com'
            FROM generate_series($2, $2 + $3 - 1) g" >/dev/null
}
last_stored() { # last_stored DB...: epoch of the last id stored in any of them
    local db latest=0 t
    for db in "$@"; do
        t=$(q "$db" "SELECT coalesce(extract(epoch FROM max(stored_at)), 0) FROM users")
        latest=$(awk -v a="$latest" -v b="$t" 'BEGIN { print (b > a ? b : a) }')
    done
    echo "$latest"
}

# worker_round COND ROUND ROWS DB...: ROWS queued rows split between the
# databases' workers, under the account limit.
worker_round() {
    local cond=$1 round=$2 rows=$3 start error=0 db i=0 pids=() pid; shift 3
    local per=$((rows / $#))
    for db in "$@"; do clear_queue "$db"; done
    reset_emulator "$LIMIT_CONFIG"
    start=$(now)
    # Distinct user ids per database: they share one account.
    for db in "$@"; do
        insert_rows "$db" $((i * 1000000 + 1)) "$per" &
        pids+=($!)
        i=$((i + 1))
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    poll "$DRAIN_TIMEOUT" drained "$@" ||
        { error=1; echo "WARNING: $cond round $round: not drained after $DRAIN_TIMEOUT s" >&2; }
    local seconds extra=""
    seconds=$(awk -v a="$start" -v b="$(last_stored "$@")" 'BEGIN { print b - a }')
    if [ "$#" -gt 1 ]; then
        # Each database's share of the account: when the emulator accepted
        # (created) each of its identities, user ids i * 1000000 + 1... for
        # the i-th database; and, for comparison, when its worker stored the
        # ids, which happens in whole batches (dfend.worker_batch_size).
        local accepted=() stored=()
        curl -sf "$DFEND_EMULATOR_URL/admin/identities" >"$OUT/identities.json"
        i=0
        for db in "$@"; do
            python3 "$helper" accepted "$OUT/identities.json" "$i" >"$OUT/accepted.$db"
            q "$db" "SELECT extract(epoch FROM stored_at) FROM users WHERE stored_at IS NOT NULL" >"$OUT/stored.$db"
            accepted+=("$db=$OUT/accepted.$db")
            stored+=("$db=$OUT/stored.$db")
            i=$((i + 1))
        done
        extra=$(python3 "$helper" windows "$start" 5 0.5 2 "${accepted[@]}")
        extra+=" $(python3 "$helper" windows "$start" 5 0.5 2 --prefix=stored_ "${stored[@]}")"
    fi
    record "cond=$cond round=$round kind=worker burst=$BURST error=$error seconds=$seconds $extra" "$@"
}

# outage_round ROUND: stop the emulator, queue OUTAGE_ROWS rows, wait
# DOWN_SECONDS, start it again on the same port.
outage_round() {
    local round=$1 recovered error=0 dead_before state
    clear_queue w1
    reset_emulator
    local pid=${EMULATOR_PIDS[-1]}
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    unset 'EMULATOR_PIDS[-1]'
    insert_rows w1 1 "$OUTAGE_ROWS"
    log "outage round $round: the API is down for $DOWN_SECONDS s with $OUTAGE_ROWS rows queued"
    sleep "$DOWN_SECONDS"   # the outage itself
    dead_before=$(q w1 "SELECT dead FROM dfend_queue_status")
    state=$(q w1 "SELECT worker_state FROM dfend_queue_status")
    echo "    before recovery: $dead_before dead, $(q w1 "SELECT count(dfend_id) FROM users") stored, worker: $state" >&2
    local tries=0
    until start_emulator api "${EMULATOR_FLAGS[@]}" --port "$PORT"; do
        tries=$((tries + 1))
        [ $tries -lt 50 ] || { echo "cannot start the emulator on port $PORT again" >&2; exit 1; }
        sleep 0.1
    done
    recovered=$(now)
    poll "$DRAIN_TIMEOUT" drained w1 ||
        { error=1; echo "WARNING: outage round $round: not drained after $DRAIN_TIMEOUT s" >&2; }
    local first last
    first=$(q w1 "SELECT coalesce(extract(epoch FROM min(stored_at)), 0) FROM users")
    last=$(last_stored w1)
    record "cond=outage round=$round kind=worker error=$error down=$DOWN_SECONDS \
dead=$(q w1 "SELECT dead FROM dfend_queue_status") dead_before=$dead_before \
seconds=$(awk -v a="$recovered" -v b="$last" 'BEGIN { print b - a }') \
first_s=$(awk -v a="$recovered" -v b="$first" 'BEGIN { print b - a }') \
drain_s=$(awk -v a="$recovered" -v b="$last" 'BEGIN { print b - a }')" w1
}

# A first backfill pays for loading the library, connecting and the
# catalog caches: a small one, not recorded, so that the first round does not.
if [[ " $CONDITIONS " =~ " "(clean|faults|faults429|limit)" " ]]; then
    PGOPTIONS='-c client_min_messages=warning' psql -XAtq -v ON_ERROR_STOP=1 -d bf >/dev/null \
        -c "CREATE TABLE warm_up (id bigint PRIMARY KEY, email text, dfend_id text)" \
        -c "INSERT INTO warm_up SELECT g, 'w' || g || '@example.com' FROM generate_series(1, 500) g" \
        -c "CALL dfend_backfill('warm_up', user_id_column => 'id', id_column => 'dfend_id')" \
        -c "DROP TABLE warm_up"
fi

for round in $(seq 1 "$ROUNDS"); do
    for cond in $CONDITIONS; do
        case $cond in
        clean | faults | faults429) backfill_round "$cond" "$round" ;;
        limit)
            backfill_round limit "$round"
            worker_round limit_worker "$round" "$WORKER_ROWS" w1
            ;;
        shared) worker_round shared "$round" "$SHARED_ROWS" w1 w2 ;;
        outage) [ "$round" -gt "$OUTAGE_ROUNDS" ] || outage_round "$round" ;;
        esac
    done
done
# More outage rounds than ROUNDS, if asked for.
if [[ " $CONDITIONS " == *" outage "* ]]; then
    for round in $(seq $((ROUNDS + 1)) "$OUTAGE_ROUNDS"); do outage_round "$round"; done
fi
