#!/bin/bash
# Runs a few tests while developing, the way test/run-tests.sh runs them:
#   test/run-some.sh regress register attach   pg_regress files (sql/NAME.sql)
#   test/run-some.sh scenario worker           test/scenarios/worker.sh
# Builds and installs into the host's PostgreSQL under the host lock, so
# several worktrees can use it side by side. Not part of the suite.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DFEND_ROOT"
kind=${1:-}; shift || true
[ -n "$kind" ] && [ $# -gt 0 ] || { echo "usage: $0 regress|scenario NAME..." >&2; exit 2; }
exec 9>/tmp/dfend-host.lock
flock 9
build_and_install
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
case "$kind" in
regress)
    start_emulator main --key sk_test_emulator --hang-ms 20000
    export DFEND_EMULATOR_URL="http://127.0.0.1:$EMULATOR_PORT"
    write_key_file "$DFEND_RUN_DIR/api.key" sk_test_emulator
    write_key_file "$DFEND_RUN_DIR/wrong.key" sk_wrong_key
    export DFEND_WRONG_KEY_FILE="$DFEND_RUN_DIR/wrong.key"
    rm -rf results regression.diffs regression.out
    set +e
    pg_virtualenv -t -v "$DFEND_PG_VERSION" \
        -o shared_preload_libraries=dfend \
        -o "dfend.api_url=$DFEND_EMULATOR_URL" \
        -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" \
        -o "dfend.retry_base_delay=10ms" -o dfend.worker_databases=postgres \
        make -s installcheck REGRESS="setup $*"
    status=$?
    set -e
    [ -f regression.diffs ] && head -150 regression.diffs
    exit $status
    ;;
scenario)
    for name in "$@"; do
        bash "test/scenarios/$name.sh"
    done
    ;;
*) echo "usage: $0 regress|scenario NAME..." >&2; exit 2 ;;
esac
