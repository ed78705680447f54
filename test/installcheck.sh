#!/bin/bash
# `make installcheck` without test/run-tests.sh: runs pg_regress (the command
# line after this script's name) against the running server that PGHOST,
# PGPORT and PGUSER (a superuser) name, with an emulator this script starts
# and stops. The server must be on this machine: dfend sends plain http only
# to loopback hosts.
#
# Settings travel in PGOPTIONS, which pg_regress keeps: nothing changes in the
# server's configuration. The key goes through dfend.api_key_file, as in
# production; the server writes that file itself (COPY TO PROGRAM, with
# umask 077), so it belongs to the server's operating system user and no
# one else can read it, whoever runs this.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -x "$DFEND_ROOT/test/emulator/dfend-emulator" ] || make -C "$DFEND_ROOT" -s emulator >/dev/null
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
start_emulator installcheck --key sk_test_emulator --hang-ms 20000
export DFEND_EMULATOR_URL="http://127.0.0.1:$EMULATOR_PORT"
# Writable, not listable, by the server's user.
chmod 733 "$DFEND_RUN_DIR"
psql -XAtq -v ON_ERROR_STOP=1 -d postgres \
    -c "COPY (SELECT 'sk_test_emulator') TO PROGRAM 'umask 077 && cat > $DFEND_RUN_DIR/api.key'" \
    -c "COPY (SELECT 'sk_wrong_key') TO PROGRAM 'umask 077 && cat > $DFEND_RUN_DIR/wrong.key'" >/dev/null
# A key DFend rejects, for the wrong-key tests (no SQL text may carry a key).
export DFEND_WRONG_KEY_FILE="$DFEND_RUN_DIR/wrong.key"
# session_preload_libraries: dfend's settings exist from the first statement.
export PGOPTIONS="${PGOPTIONS:-} -c session_preload_libraries=dfend -c dfend.api_url=$DFEND_EMULATOR_URL -c dfend.api_key_file=$DFEND_RUN_DIR/api.key -c dfend.retry_base_delay=10ms"
"$@"
