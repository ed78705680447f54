#!/bin/bash
# Throughput and memory of CALL dfend_backfill against the emulator, beside a
# PL/pgSQL loop calling dfend_register_identity one row at a time, in the
# same run:
#   - ROWS rows (default 100,000) with 20 ms injected latency, concurrency 32;
#   - the loop on a sample of LOOP_ROWS rows (default 1,000) at the same latency;
#   - BIG_ROWS rows (default 1,000,000) with no injected latency (20 ms would
#     take 11 minutes; memory, not speed, is the point of that run), and ROWS
#     rows with no latency for a like-for-like memory comparison.
# Peak memory of the backend running the CALL: VmHWM (peak resident set,
# which counts the shared buffers it touched) and peak RssAnon (its private
# memory, sampled every 20 ms). Prints a table.
# The backfill and the loop at 20 ms run in ROUNDS interleaved rounds; the
# table shows medians.
#   bench/backfill.sh [ROWS=100000] [LOOP_ROWS=1000] [BIG_ROWS=1000000] [ROUNDS=3]
source "$(dirname "${BASH_SOURCE[0]}")/../test/lib.sh"
cd "$DFEND_ROOT"
export ROWS=${1:-100000} LOOP_ROWS=${2:-1000} BIG_ROWS=${3:-1000000} ROUNDS=${4:-3}
export LATENCY_MS=20 CONCURRENCY=32
ensure_packages
build_and_install
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
start_emulator slow --key sk_bench --latency-ms "$LATENCY_MS"
export SLOW_URL="http://127.0.0.1:$EMULATOR_PORT"
start_emulator fast --key sk_bench
export FAST_URL="http://127.0.0.1:$EMULATOR_PORT"
write_key_file "$DFEND_RUN_DIR/key" sk_bench
export OUT="$DFEND_RUN_DIR"

pg_virtualenv -t -v 15 -o shared_preload_libraries=dfend -o "dfend.api_url=$SLOW_URL" \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/key" bash bench/backfill_run.sh
python3 bench/backfill_summarize.py "$OUT/results.txt"
