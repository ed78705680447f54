#!/bin/bash
# Builds the Debian package (debian/, pg_buildext) the way a packager does,
# `dpkg-buildpackage -us -uc -b` out of a copy of the work tree, then
# installs the .deb into a fresh cluster where CREATE EXTENSION dfend and one
# registration against the emulator must work.
#
# Both steps run in a Debian 12 (bookworm) chroot, the host's release, so the
# build checks debian/control's Build-Depends on a minimal system and the
# install never touches the host's PostgreSQL (shared with other runs).
# The emulator runs on the host: the chroot shares its loopback.
# As root. The .deb is copied to dist/. Ends with "N passed, N failed".
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$DFEND_ROOT/test/chroot.sh"
cd "$DFEND_ROOT"
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, chroot, mount)" >&2; exit 1; }

PASSED=0
FAILED=0
pass() { echo "ok - $*"; PASSED=$((PASSED + 1)); }
fail() { echo "not ok - $*"; FAILED=$((FAILED + 1)); SCENARIO_FAILED=1; }

SUITE=bookworm
PACKAGE=postgresql-15-dfend
BUILD_DEPENDS="build-essential debhelper dpkg-dev postgresql-server-dev-all libcurl4-openssl-dev
  nlohmann-json3-dev"
RUNTIME="postgresql-15 postgresql-common"

make_run_dir
trap 'stop_emulators; chroot_umount_all; rm -rf "$DFEND_RUN_DIR"' EXIT
trap 'exit 130' INT TERM
ensure_packages "g++ make pkgconf libcpp-httplib-dev"
[ -x test/emulator/dfend-emulator ] || make -s emulator >/dev/null

chroot_lock "$SUITE"
chroot_ensure "$SUITE" $BUILD_DEPENDS $RUNTIME
chroot_mount "$SUITE"
# A fresh install each time: nothing left from an earlier run.
chroot_run "$SUITE" apt-get purge -y -qq "$PACKAGE" >/dev/null 2>&1 || true
chroot_run "$SUITE" bash -c 'rm -rf /build && mkdir -p /build'
chroot_copy_tree "$SUITE" /build/dfend

log "dpkg-buildpackage -us -uc -b in the $SUITE chroot"
set +e
chroot_run "$SUITE" bash -c 'cd /build/dfend && dpkg-checkbuilddeps && dpkg-buildpackage -us -uc -b' \
    >"$DFEND_RUN_DIR/build.log" 2>&1
built=$?
set -e
deb=$(cd "$DFEND_CHROOTS/$SUITE/build" && ls ${PACKAGE}_*.deb 2>/dev/null | head -1)
if [ $built = 0 ] && [ -n "$deb" ]; then
    pass "dpkg-buildpackage built $deb"
    mkdir -p dist && cp "$DFEND_CHROOTS/$SUITE/build/$deb" dist/
else
    tail -40 "$DFEND_RUN_DIR/build.log"
    fail "dpkg-buildpackage built $PACKAGE"
fi
grep -iE '(^|[^-])warning:' "$DFEND_RUN_DIR/build.log" | grep -v '^dpkg-' || true
expect "the build is warning-free" \
    "$(grep -ciE ': warning:' "$DFEND_RUN_DIR/build.log" || true)" "0"

if [ -n "$deb" ]; then
    contents=$(dpkg-deb -c "$DFEND_CHROOTS/$SUITE/build/$deb")
    expect_match "it holds the module" "$contents" "usr/lib/postgresql/15/lib/dfend\.so"
    expect_match "it holds the control file" "$contents" "usr/share/postgresql/15/extension/dfend\.control"
    expect_match "it holds the install script" "$contents" "usr/share/postgresql/15/extension/dfend--[0-9.]+\.sql"
    expect_match "it depends on PostgreSQL 15 and libcurl" \
        "$(dpkg-deb -f "$DFEND_CHROOTS/$SUITE/build/$deb" Depends)" "postgresql-15.*libcurl4|libcurl4.*postgresql-15"

    log "installing $deb into the $SUITE chroot"
    if chroot_run "$SUITE" apt-get install -y -qq "/build/$deb" >"$DFEND_RUN_DIR/install.log" 2>&1; then
        pass "apt-get installs $deb"
    else
        tail -20 "$DFEND_RUN_DIR/install.log"; fail "apt-get installs $deb"
    fi

    start_emulator deb --key sk_test_emulator
    url="http://127.0.0.1:$EMULATOR_PORT"
    log "a fresh cluster with the packaged dfend, against the emulator at $url"
    set +e
    out=$(PGPORT=$(chroot_free_port) chroot_run "$SUITE" pg_virtualenv -t -v 15 -o shared_preload_libraries=dfend \
        -o "dfend.api_url=$url" -o "dfend.api_key=sk_test_emulator" \
        psql -XAtq -v ON_ERROR_STOP=1 -o /tmp/deb-test.out \
            -c "CREATE EXTENSION dfend" \
            -c "SELECT extversion FROM pg_extension WHERE extname = 'dfend'" \
            -c "SELECT created FROM dfend_register_identity('deb-1', 'deb@example.com')" \
            -c "SELECT dfend_get_identity('deb-1')->'identifiers'->>'userIds'" 2>&1)
    set -e
    lines=()
    # psql's answers only (pg_virtualenv talks on stdout too).
    [ -f "$DFEND_CHROOTS/$SUITE/tmp/deb-test.out" ] && mapfile -t lines <"$DFEND_CHROOTS/$SUITE/tmp/deb-test.out"
    rm -f "$DFEND_CHROOTS/$SUITE/tmp/deb-test.out"
    expect_match "CREATE EXTENSION dfend works (extversion)" "${lines[0]:-}" '^[0-9]+\.[0-9]+\.[0-9]+$'
    expect "one registration against the emulator creates an identity" "${lines[1]:-}" "t"
    expect "and DFend returns it" "${lines[2]:-}" '["deb-1"]'
    expect "the emulator received it" "$(DFEND_EMULATOR_URL=$url test/emu stat created)" "1"
    [ "$SCENARIO_FAILED" = 0 ] || echo "$out"

    chroot_run "$SUITE" apt-get purge -y -qq "$PACKAGE" >/dev/null 2>&1 || true
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
