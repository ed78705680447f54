#!/bin/bash
# Runs the pg_regress suite and the scenarios (test/run-tests.sh --pg-only)
# on other PostgreSQL major versions, each with Debian's own packages in a
# chroot: 17 from Debian 13 (trixie), 18 from Debian unstable (sid).
#   bash test/run-matrix.sh            17 and 18
#   bash test/run-matrix.sh 18         one version
# As root. Chroots are cached in /var/cache/dfend-chroots (built by
# debootstrap when missing, about 4 min each); /proc and /dev are mounted
# for the run and unmounted on exit, whatever happens. The host's own
# PostgreSQL is not touched. Ends with "N passed, N failed".
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$DFEND_ROOT/test/chroot.sh"
cd "$DFEND_ROOT"
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, chroot, mount)" >&2; exit 1; }

VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(17 18)
for v in "${VERSIONS[@]}"; do chroot_suite_for "$v" >/dev/null || exit 2; done

LOGS=$(mktemp -d /tmp/dfend-matrix.XXXXXX)
trap 'chroot_umount_all; rm -rf "$LOGS"' EXIT
trap 'exit 130' INT TERM

PASSED=0
FAILED=0
SUMMARY=()
for v in "${VERSIONS[@]}"; do
    suite=$(chroot_suite_for "$v")
    started=$SECONDS
    log "PostgreSQL $v in the $suite chroot"
    chroot_lock "$suite"
    # No subshell or pipe around the mounting: the EXIT trap must see it.
    set +e
    if chroot_ensure "$suite" $(dfend_pg_packages "$v") && chroot_mount "$suite" &&
            chroot_copy_tree "$suite" /build/dfend; then
        DFEND_PG_VERSION=$v PGPORT=$(chroot_free_port) \
            chroot_run "$suite" bash /build/dfend/test/run-tests.sh --pg-only 2>&1 | tee "$LOGS/$v.log"
    else
        echo "could not prepare the $suite chroot" | tee "$LOGS/$v.log"
    fi
    set -e
    chroot_umount_all
    exec {CHROOT_LOCK_FD}>&-   # the next run may take this chroot now
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGS/$v.log" | tail -1 || true)
    if [ -n "$line" ]; then
        p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
    else
        p=0; f=1   # no summary: the chroot or the build failed
    fi
    PASSED=$((PASSED + p)); FAILED=$((FAILED + f))
    SUMMARY+=("PostgreSQL $v ($suite): $p passed, $f failed in $((SECONDS - started)) s")
done

for s in "${SUMMARY[@]}"; do log "$s"; done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
