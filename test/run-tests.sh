#!/bin/bash
# Runs every test of dfend on a Debian 12 machine, as root:
#   C++ unit tests, a short fuzz run, the emulator's self-test, META.json's
#   validation, the pg_regress suite in a throwaway cluster (through the
#   standalone `make installcheck` too), and the scenario scripts in
#   test/scenarios.
# Installs missing packages first. Ends with "N passed, N failed".
#
#   --pg-only   no unit tests, fuzzing or META.json: the emulator's self-test,
#               pg_regress and the scenarios on DFEND_PG_VERSION (default 15),
#               what test/run-matrix.sh runs in its chroots.
# It installs dfend into the host's PostgreSQL: on a shared machine, run it
# under `flock /tmp/dfend-host.lock`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DFEND_ROOT"
PG_ONLY=false
case "${1:-}" in
    --pg-only) PG_ONLY=true ;;
    "") ;;
    *) echo "usage: $0 [--pg-only]" >&2; exit 2 ;;
esac

PASSED=0
FAILED=0
FAILURES=()
# Each part's result and how long it took since the previous one (so slow
# parts show in the log: the host suite should stay well under 15 minutes).
PART_STARTED=$SECONDS
count() { # count PASSED FAILED LABEL
    PASSED=$((PASSED + $1)); FAILED=$((FAILED + $2))
    [ "$2" -eq 0 ] || FAILURES+=("$3")
    log "$3: $1 passed, $2 failed ($((SECONDS - PART_STARTED)) s)"
    PART_STARTED=$SECONDS
}

if $PG_ONLY; then
    ensure_packages "$DFEND_PG_PACKAGES"
    build_and_install
else
    ensure_packages
    build_and_install
    make -s unit fuzz >/dev/null
fi
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
log "testing on $("$PG_CONFIG" --version)"
if [ "${DFEND_BUILD_WARNINGS:-0}" = 0 ]; then
    count 1 0 "warning-free build"
else
    count 0 1 "warning-free build ($DFEND_BUILD_WARNINGS warnings)"
fi

if ! $PG_ONLY; then
# --- C++ unit tests ---------------------------------------------------------
log "unit tests"
set +e
./test/unit/unit_tests --gtest_brief=1 >"$DFEND_RUN_DIR/unit.log" 2>&1
set -e
unit_pass=$(grep -oP '\[  PASSED  \] \K[0-9]+' "$DFEND_RUN_DIR/unit.log" || echo 0)
unit_fail=$(grep -oP '\[  FAILED  \] \K[0-9]+(?= tests?, listed below)' "$DFEND_RUN_DIR/unit.log" || echo 0)
if [ "$unit_pass" = 0 ] && [ "$unit_fail" = 0 ]; then unit_fail=1; fi
[ "$unit_fail" = 0 ] || cat "$DFEND_RUN_DIR/unit.log"
count "$unit_pass" "$unit_fail" "unit tests"

# --- fuzzing the response decoder ---------------------------------------------
log "fuzzing the response decoder for ${DFEND_FUZZ_SECONDS:-20} s"
mkdir -p "$DFEND_RUN_DIR/fuzz"
if ./test/fuzz/fuzz_decoder -max_total_time="${DFEND_FUZZ_SECONDS:-20}" \
        -artifact_prefix="$DFEND_RUN_DIR/fuzz/" "$DFEND_RUN_DIR/fuzz" test/fuzz/corpus \
        >"$DFEND_RUN_DIR/fuzz.log" 2>&1; then
    count 1 0 "fuzz"
else
    tail -40 "$DFEND_RUN_DIR/fuzz.log"; count 0 1 "fuzz"
fi

fi # PG_ONLY

# --- emulator self-test (also in chroots: each has its own cpp-httplib) ---------------------------------------------------------
log "emulator self-test"
set +e
bash test/emulator/selftest.sh >"$DFEND_RUN_DIR/selftest.log" 2>&1
set -e
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$DFEND_RUN_DIR/selftest.log" | tail -1)
if [ -n "$line" ]; then
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
else
    p=0; f=1
fi
[ "$f" = 0 ] || tail -40 "$DFEND_RUN_DIR/selftest.log"
count "$p" "$f" "emulator self-test"

if ! $PG_ONLY; then
# --- META.json -------------------------------------------------------------------
log "META.json"
set +e
python3 test/meta-test.py >"$DFEND_RUN_DIR/meta.log" 2>&1
set -e
p=$(grep -c '^ok - ' "$DFEND_RUN_DIR/meta.log" || true)
f=$(grep -c '^not ok - ' "$DFEND_RUN_DIR/meta.log" || true)
if [ "$p" = 0 ] && [ "$f" = 0 ]; then f=1; fi
[ "$f" = 0 ] || cat "$DFEND_RUN_DIR/meta.log"
count "$p" "$f" "META.json"
fi # PG_ONLY

# pg_regress's lines "ok 1 - name" (16+) or "test name ... ok" (15): count_regress LOG LABEL
count_regress() {
    grep -E '^(ok|not ok|test | +[a-z_]+ +\.\.\.)' "$1" || true
    local p f
    p=$(grep -cE '^(ok [0-9]+|test .*\.\.\. ok| +[a-z_0-9]+ +\.\.\. ok)' "$1" || true)
    f=$(grep -cE '^(not ok [0-9]+|test .*\.\.\. FAILED| +[a-z_0-9]+ +\.\.\. FAILED)' "$1" || true)
    if [ "$p" = 0 ] && [ "$f" = 0 ]; then tail -40 "$1"; f=1; fi
    [ "$f" = 0 ] || { [ -f regression.diffs ] && head -200 regression.diffs; }
    count "$p" "$f" "$2"
}

# --- make installcheck against a plain running server ----------------------------
# What a packager runs: no preloading, no settings; it starts its own emulator.
log "standalone make installcheck"
rm -rf results regression.diffs regression.out
set +e
env -u DFEND_EMULATOR_URL pg_virtualenv -t -v "$DFEND_PG_VERSION" \
    make -s installcheck >"$DFEND_RUN_DIR/standalone.log" 2>&1
set -e
count_regress "$DFEND_RUN_DIR/standalone.log" "standalone installcheck"

# --- pg_regress in a throwaway cluster -------------------------------------------
log "pg_regress suite"
bash test/emulator/make-test-certs.sh "$DFEND_RUN_DIR/certs" >/dev/null
chmod 755 "$DFEND_RUN_DIR/certs"; chmod 644 "$DFEND_RUN_DIR/certs"/*.pem
start_emulator main --key sk_test_emulator --hang-ms 20000
export DFEND_EMULATOR_URL="http://127.0.0.1:$EMULATOR_PORT"
start_emulator tls --key sk_test_emulator --tls-cert "$DFEND_RUN_DIR/certs/server.pem" --tls-key "$DFEND_RUN_DIR/certs/server.key"
export DFEND_TLS_URL="https://localhost:$EMULATOR_PORT"
export DFEND_TLS_IP_URL="https://127.0.0.1:$EMULATOR_PORT"
start_emulator untrusted --key sk_test_emulator --tls-cert "$DFEND_RUN_DIR/certs/untrusted.pem" --tls-key "$DFEND_RUN_DIR/certs/untrusted.key"
export DFEND_UNTRUSTED_URL="https://localhost:$EMULATOR_PORT"
start_emulator wronghost --key sk_test_emulator --tls-cert "$DFEND_RUN_DIR/certs/wronghost.pem" --tls-key "$DFEND_RUN_DIR/certs/wronghost.key"
export DFEND_WRONGHOST_URL="https://localhost:$EMULATOR_PORT"
export DFEND_CA_FILE="$DFEND_RUN_DIR/certs/ca.pem"
write_key_file "$DFEND_RUN_DIR/api.key" sk_test_emulator
# A key DFend rejects, for tests of a wrong key (sql/*.sql: no SQL text may
# carry a key, so they switch dfend.api_key_file to this path).
write_key_file "$DFEND_RUN_DIR/wrong.key" sk_wrong_key
export DFEND_WRONG_KEY_FILE="$DFEND_RUN_DIR/wrong.key"
rm -rf results regression.diffs regression.out
set +e
pg_virtualenv -t -v "$DFEND_PG_VERSION" \
    -o shared_preload_libraries=dfend \
    -o "dfend.api_url=$DFEND_EMULATOR_URL" \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" \
    -o "dfend.retry_base_delay=10ms" -o dfend.worker_databases=postgres \
    make -s installcheck >"$DFEND_RUN_DIR/regress.log" 2>&1
set -e
count_regress "$DFEND_RUN_DIR/regress.log" "pg_regress"
stop_emulators

# --- scenarios: restarts, logs, cancels, preloading ------------------------------
for scenario in test/scenarios/*.sh; do
    [ -e "$scenario" ] || continue
    log "scenario $(basename "$scenario")"
    set +e
    bash "$scenario" >"$DFEND_RUN_DIR/scenario.log" 2>&1
    set -e
    p=$(grep -c '^ok - ' "$DFEND_RUN_DIR/scenario.log" || true)
    f=$(grep -c '^not ok - ' "$DFEND_RUN_DIR/scenario.log" || true)
    grep -E '^(ok|not ok) - ' "$DFEND_RUN_DIR/scenario.log" || true
    if [ "$p" = 0 ] && [ "$f" = 0 ]; then f=1; fi
    [ "$f" = 0 ] || tail -30 "$DFEND_RUN_DIR/scenario.log"
    count "$p" "$f" "scenario $(basename "$scenario")"
done

if [ ${#FAILURES[@]} -gt 0 ]; then log "failed: ${FAILURES[*]}"; fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
