#!/bin/bash
# A short demo on a fresh Debian 12 machine, as root: installs what is
# missing, builds dfend and the DFend emulator, starts both in a throwaway
# cluster, and shows users being registered and looked up.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DFEND_ROOT"
ensure_packages
build_and_install
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
start_emulator demo --key sk_demo_secret_key
export DFEND_EMULATOR_URL="http://127.0.0.1:$EMULATOR_PORT"
write_key_file "$DFEND_RUN_DIR/dfend.key" sk_demo_secret_key
log "DFend emulator on $DFEND_EMULATOR_URL; starting a throwaway PostgreSQL 15 cluster"
pg_virtualenv -t -v 15 \
    -o shared_preload_libraries=dfend \
    -o "dfend.api_url=$DFEND_EMULATOR_URL" \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/dfend.key" \
    psql -X -q -v ON_ERROR_STOP=1 -f test/demo.sql
log "emulator counters: $(test/emu stats)"
