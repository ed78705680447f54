#!/bin/bash
# Issue 8's conditions: how dfend keeps up under DFend's backpressure, each
# figure printed next to its target and the ideal, against the emulator at
# 20 ms latency with 32 requests in flight (ideal 32 / 20 ms = 1,600/s):
#   clean      1. no faults: CALL dfend_backfill, ROWS rows, rows/s.
#   faults     2. 5% 5xx + 2% dropped connections: rows/s, % of clean.
#   faults429  3. the same + 1% random 429 (Retry-After: 1): % of clean.
#   limit      4. an account limit of RATE/s (burst BURST; its 429s carry
#              Retry-After: 1): the backfill (ROWS rows) and the outbox
#              worker draining WORKER_ROWS queued rows, as % of the limit,
#              and the share of requests answered 429.
#   shared     5. two databases' workers sharing that account, SHARED_ROWS
#              rows split between them: ids/s together, and each database's
#              share of the requests the account accepted in every 5 s window
#              from 2 s on while both have work left (until the first one's
#              last id); also of the ids stored, which come in whole batches.
#   outage     6. the API down for DOWN_SECONDS (stopped: connections
#              refused), then back on the same port, OUTAGE_ROWS rows queued
#              meanwhile: entries dead, seconds from recovery to the first
#              id stored and to the end of the drain. OUTAGE_ROUNDS rounds
#              (default 1, as it takes DOWN_SECONDS each).
# (The bulk insert of issue 8's table is measured by bench/trigger.sh.)
# Each condition runs ROUNDS rounds (medians in the table at the end); faults
# and faults429 also run clean when it is not asked for, as their reference.
# Every round checks that each row got the emulator's id for its user id and
# that the emulator created one identity per row (a WARNING line if not).
#   bench/backpressure.sh [ROUNDS=3] [CONDITION...]     (default: all six)
# Environment: ROWS=20000 WORKER_ROWS=4000 SHARED_ROWS=6000 OUTAGE_ROWS=4000
#   DOWN_SECONDS=480 OUTAGE_ROUNDS=1 RATE=400 BURST=40 DRAIN_TIMEOUT=1800
# A quick run: ROWS=2000 WORKER_ROWS=1000 SHARED_ROWS=1500 DOWN_SECONDS=30 \
#   bench/backpressure.sh 1
# Holds the host lock (/tmp/dfend-host.lock) for the whole run.
source "$(dirname "${BASH_SOURCE[0]}")/../test/lib.sh"
cd "$DFEND_ROOT"
export ROUNDS=${1:-3}
shift || true
all="clean faults faults429 limit shared outage"
conditions=${*:-$all}
for c in $conditions; do
    [[ " $all " == *" $c "* ]] || { echo "unknown condition $c (one of: $all)" >&2; exit 2; }
done
# faults and faults429 are measured as a share of the clean rate.
if [[ " $conditions " =~ " faults"(429)?" " ]] && [[ " $conditions " != *" clean "* ]]; then
    conditions="clean $conditions"
fi
export CONDITIONS=$conditions
export ROWS=${ROWS:-20000} WORKER_ROWS=${WORKER_ROWS:-4000} SHARED_ROWS=${SHARED_ROWS:-6000}
export OUTAGE_ROWS=${OUTAGE_ROWS:-4000} DOWN_SECONDS=${DOWN_SECONDS:-480} OUTAGE_ROUNDS=${OUTAGE_ROUNDS:-1}
export RATE=${RATE:-400} BURST=${BURST:-40} DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-1800}
export LATENCY_MS=20 CONCURRENCY=32
ensure_packages
exec 9>/tmp/dfend-host.lock
flock 9
build_and_install
make_run_dir
trap 'rm -rf "$DFEND_RUN_DIR"' EXIT
write_key_file "$DFEND_RUN_DIR/key" sk_bench
export DFEND_RUN_DIR OUT="$DFEND_RUN_DIR"
: >"$OUT/results.txt"
log "conditions: $CONDITIONS; $ROUNDS round(s) each (outage: $OUTAGE_ROUNDS)"

# The emulators are started inside, which sets dfend.api_url (the outage
# restarts the emulator on the same port).
pg_virtualenv -t -v 15 -o shared_preload_libraries=dfend \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/key" \
    bash bench/backpressure_run.sh
python3 bench/backpressure.py summary "$OUT/results.txt" "$CONCURRENCY" "$LATENCY_MS" "$RATE"
