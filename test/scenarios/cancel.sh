#!/bin/bash
# pg_cancel_backend and pg_terminate_backend stop a request in flight at once
# (the emulator would hang for 30 s), and the server stays healthy.
source "$(dirname "$0")/../lib.sh"
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
start_emulator main --key sk_test_emulator --rate-hang 1 --hang-ms 30000
export DFEND_URL="http://127.0.0.1:$EMULATOR_PORT" DFEND_EMULATOR_URL="http://127.0.0.1:$EMULATOR_PORT"
write_key_file "$DFEND_RUN_DIR/api.key" sk_test_emulator
export OUT="$DFEND_RUN_DIR"

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend -o "dfend.api_url=$DFEND_URL" \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" bash -c '
    source "$DFEND_ROOT/test/lib.sh"
    sql "CREATE EXTENSION dfend" >/dev/null
    waiting() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = \$\$client backend\$\$ AND wait_event_type = \$\$Extension\$\$")" = 1 ]; }
    for how in cancel terminate; do
        psql -XAtq -c "SELECT dfend_register_identity(\$\$x-$how\$\$)" >"$OUT/$how.out" 2>&1 &
        client=$!
        if wait_until 10 waiting; then pass "$how: the request is in flight (wait event Extension)"; else fail "$how: request in flight"; fi
        start=$(date +%s%N)
        sql "SELECT pg_${how}_backend(pid) FROM pg_stat_activity WHERE backend_type = \$\$client backend\$\$ AND wait_event_type = \$\$Extension\$\$" >/dev/null
        wait $client || true
        ms=$(( ($(date +%s%N) - start) / 1000000 ))
        echo "# $how took $ms ms"
        if [ $ms -lt 5000 ]; then pass "$how: ended long before the 30 s hang ($ms ms)"; else fail "$how: took $ms ms"; fi
    done
    expect_match "cancel: PostgreSQL'\''s own message" "$(cat "$OUT/cancel.out")" "canceling statement due to user request"
    expect_match "terminate: PostgreSQL'\''s own message" "$(cat "$OUT/terminate.out")" "terminating connection due to administrator command"
    "$DFEND_ROOT/test/emu" config "{\"rate_hang\": 0}"
    expect "the server is healthy afterwards" "$(sql "SELECT created FROM dfend_register_identity(\$\$x-after\$\$)")" "t"
' | tee "$DFEND_RUN_DIR/inner.out"
grep -q '^not ok' "$DFEND_RUN_DIR/inner.out" && SCENARIO_FAILED=1
exit $SCENARIO_FAILED
