# Shared by test/run-tests.sh, test/demo.sh and bench/*.sh. Source it.
# Installs what is missing, builds, and starts emulators that stop on exit.
set -euo pipefail

DFEND_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DFEND_ROOT
# The PostgreSQL major version under test: the host's 15 unless
# test/run-matrix.sh runs us inside another version's chroot.
DFEND_PG_VERSION=${DFEND_PG_VERSION:-15}
export DFEND_PG_VERSION
export PG_CONFIG=/usr/lib/postgresql/$DFEND_PG_VERSION/bin/pg_config
# What the pg_regress suite and the scenarios need on PostgreSQL VERSION ...
dfend_pg_packages() {
    echo "postgresql-$1 postgresql-server-dev-$1 postgresql-common libcurl4-openssl-dev
      nlohmann-json3-dev g++ make pkgconf libcpp-httplib-dev openssl ca-certificates curl python3 python3-psycopg2 procps pgbouncer"
}
DFEND_PG_PACKAGES=$(dfend_pg_packages "$DFEND_PG_VERSION")
# ... and the unit tests and the fuzzer (run on the host only).
DFEND_PACKAGES="$DFEND_PG_PACKAGES libgtest-dev clang-14 libfuzzer-14-dev"

log() { printf '==> %s\n' "$*" >&2; }

ensure_packages() {
    local missing=()
    for p in ${1:-$DFEND_PACKAGES}; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        [ "$(id -u)" = 0 ] || { echo "run as root to install packages" >&2; exit 1; }
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

build_and_install() {
    log "building the extension and the emulator"
    # The compiler's messages stay visible; DFEND_BUILD_WARNINGS counts them.
    local messages
    messages=$(mktemp)
    make -C "$DFEND_ROOT" -s -j2 >/dev/null 2>"$messages" || { cat "$messages" >&2; rm -f "$messages"; return 1; }
    cat "$messages" >&2
    DFEND_BUILD_WARNINGS=$(grep -c ': warning:' "$messages" || true)
    rm -f "$messages"
    make -C "$DFEND_ROOT" -s install >/dev/null
    make -C "$DFEND_ROOT" -s emulator >/dev/null
}

# A scratch folder that the postgres user can read (key files, certificates).
DFEND_RUN_DIR=""
make_run_dir() {
    DFEND_RUN_DIR=$(mktemp -d /tmp/dfend-run.XXXXXX)
    chmod 755 "$DFEND_RUN_DIR"
}

# write_key_file PATH KEY: readable by the server's OS user only.
write_key_file() {
    printf '%s\n' "$2" > "$1"
    chown postgres: "$1" 2>/dev/null || true
    chmod 600 "$1"
}

EMULATOR_PIDS=()
EMULATOR_LAUNCHER=()
stop_emulators() {
    local pid
    for pid in "${EMULATOR_PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${EMULATOR_PIDS[@]:-}"; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    done
    EMULATOR_PIDS=()
}

# start_emulator NAME [emulator flags...]: sets EMULATOR_PORT.
start_emulator() {
    local name=$1; shift
    local port_file="$DFEND_RUN_DIR/$name.port"
    rm -f "$port_file"
    # EMULATOR_LAUNCHER: an optional command prefix, e.g. (taskset -c 0).
    "${EMULATOR_LAUNCHER[@]}" "$DFEND_ROOT/test/emulator/dfend-emulator" --port 0 --port-file "$port_file" --quiet "$@" \
        >"$DFEND_RUN_DIR/$name.log" 2>&1 &
    EMULATOR_PIDS+=($!)
    local i
    for i in $(seq 1 500); do   # readiness: the port file appears once it listens
        [ -s "$port_file" ] && break
        kill -0 "${EMULATOR_PIDS[-1]}" 2>/dev/null || { cat "$DFEND_RUN_DIR/$name.log" >&2; return 1; }
        sleep 0.01
    done
    [ -s "$port_file" ] || { echo "emulator $name did not start" >&2; return 1; }
    EMULATOR_PORT=$(cat "$port_file")
}

# The usual start of a scenario: a scratch folder and an emulator (flags as
# for start_emulator) that go away on exit, DFEND_EMULATOR_URL, a key file
# at $DFEND_RUN_DIR/api.key, and OUT for the scenario's own files.
start_scenario() {
    make_run_dir
    trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
    start_emulator main --key sk_test_emulator "$@"
    export DFEND_EMULATOR_URL="http://127.0.0.1:$EMULATOR_PORT"
    write_key_file "$DFEND_RUN_DIR/api.key" sk_test_emulator
    export OUT="$DFEND_RUN_DIR"
}

# TAP-style results for scenario scripts, counted by test/run-tests.sh.
SCENARIO_FAILED=0
pass() { echo "ok - $*"; }
fail() { echo "not ok - $*"; SCENARIO_FAILED=1; }
# expect DESCRIPTION ACTUAL EXPECTED
expect() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1 (got '$2', expected '$3')"; fi; }
# expect_match DESCRIPTION ACTUAL REGEX
expect_match() { if [[ "$2" =~ $3 ]]; then pass "$1"; else fail "$1 (got '$2')"; fi; }

# Runs one SQL command, printing only the value (or the error text).
sql() { psql -XAtq -v ON_ERROR_STOP=1 -c "$1" 2>&1; }

# wait_until TIMEOUT_SECONDS COMMAND...: polls a condition, bounded.
wait_until() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.02
    done
}
