#!/bin/bash
# Per-call cost of dfend_register_identity against the emulator (no injected
# latency), beside the emulator's own ceiling measured in the same run by a
# keep-alive libcurl client outside PostgreSQL, and by a client that opens a
# new connection per call. Rounds are interleaved; medians are reported.
#   bench/per_call.sh [CALLS=2000] [RUNS=5]
# With PIN_CPU=N the emulator, the raw clients and the PostgreSQL backend all
# run on CPU N. On this 2-vCPU virtual machine a wake-up across CPUs costs
# tens of microseconds and comes and goes, which makes unpinned figures
# bimodal; pinned, every client pays the same scheduling cost.
source "$(dirname "${BASH_SOURCE[0]}")/../test/lib.sh"
cd "$DFEND_ROOT"
export CALLS=${1:-2000} RUNS=${2:-5}
ensure_packages
build_and_install
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
g++ -std=c++17 -O2 -o "$DFEND_RUN_DIR/raw_client" bench/raw_client.cpp -lcurl
PIN=()
[ -n "${PIN_CPU:-}" ] && PIN=(taskset -c "$PIN_CPU")
export PIN_CPU=${PIN_CPU:-}
EMULATOR_LAUNCHER=("${PIN[@]}")
start_emulator bench --key sk_bench
export URL="http://127.0.0.1:$EMULATOR_PORT" RAW="$DFEND_RUN_DIR/raw_client"
export ROUNDS="$DFEND_RUN_DIR/rounds.txt"
write_key_file "$DFEND_RUN_DIR/key" sk_bench

pg_virtualenv -t -v 15 -o shared_preload_libraries=dfend -o "dfend.api_url=$URL" \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/key" bash -c '
    set -e
    psql -XAtq -c "CREATE EXTENSION dfend"
    for run in $(seq 1 "$RUNS"); do
        pin=(); [ -n "$PIN_CPU" ] && pin=(taskset -c "$PIN_CPU")
        keep=$("${pin[@]}" "$RAW" "$URL" sk_bench "$CALLS" keepalive "raw-$run-")
        fresh=$("${pin[@]}" "$RAW" "$URL" sk_bench "$CALLS" fresh "fresh-$run-")
        ext=$(psql -XAtq -F " " -c "SET bench.n = $CALLS" -c "SET bench.prefix = \$\$ext-$run-\$\$" -f bench/per_call.sql)
        echo "$run $keep $fresh $ext" | tee -a "$ROUNDS" >&2
    done
'
python3 bench/summarize_per_call.py "$ROUNDS" "$CALLS"
