# Debian chroots for the version matrix and the .deb test. Source it (after
# lib.sh). Each chroot lives in /var/cache/dfend-chroots/SUITE: built by
# debootstrap when missing, reused when present. A run holds the chroot's
# lock while it uses it, so two runs never mount or unmount under each other.

DFEND_CHROOTS=${DFEND_CHROOTS:-/var/cache/dfend-chroots}
DFEND_MIRROR=${DFEND_MIRROR:-http://deb.debian.org/debian}

# The Debian suite whose own archive has PostgreSQL VERSION.
chroot_suite_for() {
    case "$1" in
        15) echo bookworm ;;
        17) echo trixie ;;
        18) echo sid ;;
        *) echo "no Debian suite packages PostgreSQL $1" >&2; return 1 ;;
    esac
}

# chroot_lock SUITE: holds the suite's lock until this shell exits.
chroot_lock() {
    mkdir -p "$DFEND_CHROOTS"
    exec {CHROOT_LOCK_FD}>"$DFEND_CHROOTS/$1.lock"
    flock "$CHROOT_LOCK_FD"
}

# chroot_ensure SUITE PACKAGES...: builds the chroot if missing and installs
# whatever of PACKAGES it lacks. Call with the suite's lock held.
chroot_ensure() {
    local suite=$1; shift
    local dir="$DFEND_CHROOTS/$suite"
    if [ ! -e "$dir/.dfend-ready" ]; then
        command -v debootstrap >/dev/null || {
            log "installing debootstrap"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
        }
        log "creating the $suite chroot in $dir"
        rm -rf "$dir"
        debootstrap --variant=minbase "$suite" "$dir" "$DFEND_MIRROR" >"$DFEND_CHROOTS/$suite.debootstrap.log" 2>&1 \
            || { tail -20 "$DFEND_CHROOTS/$suite.debootstrap.log" >&2; return 1; }
        # sid's Release file is served expired on this network.
        echo 'Acquire::Check-Valid-Until "false";' >"$dir/etc/apt/apt.conf.d/99dfend"
        # No recommends: keeps the chroots small and the installs fast.
        echo 'APT::Install-Recommends "false";' >>"$dir/etc/apt/apt.conf.d/99dfend" || return 1
        touch "$dir/.dfend-ready"
    fi
    local missing=() p
    for p in "$@"; do
        chroot "$dir" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing into $suite: ${missing[*]}"
        chroot_mount "$suite" || return 1
        chroot_run "$suite" apt-get update -qq || return 1
        chroot_run "$suite" apt-get install -y -qq "${missing[@]}" >/dev/null || return 1
    fi
}

CHROOT_MOUNTED=()
# chroot_mount SUITE: what pg_virtualenv and apt need (proc, dev, shm, pts).
# Call it in the shell whose EXIT trap runs chroot_umount_all, not in a
# subshell or pipeline: CHROOT_MOUNTED must reach the trap.
chroot_mount() {
    local dir="$DFEND_CHROOTS/$1" m
    for m in "${CHROOT_MOUNTED[@]:-}"; do [ "$m" = "$dir" ] && return 0; done
    CHROOT_MOUNTED+=("$dir")
    mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc" || return 1
    mountpoint -q "$dir/dev" || mount --bind /dev "$dir/dev" || return 1
    # A private /dev/shm: the chroot's servers never see the host's segments.
    mountpoint -q "$dir/dev/shm" || mount -t tmpfs -o mode=1777 shm "$dir/dev/shm" || return 1
    mountpoint -q "$dir/dev/pts" || mount --bind /dev/pts "$dir/dev/pts" || return 1
    cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
}

# Ends the processes still running inside DIR (a server a failed test left
# behind), then unmounts. Safe to call twice; called from traps.
chroot_umount_all() {
    local dir p m
    for dir in "${CHROOT_MOUNTED[@]:-}"; do
        [ -n "$dir" ] || continue
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/root" 2>/dev/null)" = "$dir" ] && kill -9 "${p#/proc/}" 2>/dev/null
        done
        for m in dev/pts dev/shm dev proc; do
            if mountpoint -q "$dir/$m"; then
                umount "$dir/$m" 2>/dev/null || umount -l "$dir/$m" || echo "could not unmount $dir/$m" >&2
            fi
        done
    done
    CHROOT_MOUNTED=()
}

# chroot_run SUITE COMMAND...: runs COMMAND inside, with a clean environment
# plus the DFEND_* / CI variables.
chroot_run() {
    local dir="$DFEND_CHROOTS/$1"; shift
    local env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
               DEBIAN_FRONTEND=noninteractive)
    local v
    for v in $(compgen -v | grep -E '^(DFEND_(PG_VERSION|FUZZ_SECONDS)|CI|PGPORT)$' || true); do env+=("$v=${!v}"); done
    chroot "$dir" /usr/bin/env -i "${env[@]}" "$@"
}

# chroot_copy_tree SUITE DEST: the work tree as it is (tracked and new files,
# not ignored ones) into DEST inside the chroot.
chroot_copy_tree() {
    local dir="$DFEND_CHROOTS/$1" dest=$2
    rm -rf "${dir:?}/$dest"
    mkdir -p "$dir/$dest"
    (cd "$DFEND_ROOT" && git ls-files -co --exclude-standard -z | xargs -0 -r ls -d 2>/dev/null | tr '\n' '\0' \
        | tar --null -T - -cf -) | tar -C "$dir/$dest" -xf -
}

# A free TCP port for a chroot's clusters. The chroot shares the host's
# network but not its cluster list, so pg_virtualenv inside would start at
# 5432 like every host run and lose races for it: pg_virtualenv takes PGPORT
# instead. Random in 20000-29999, below the kernel's ephemeral range.
chroot_free_port() {
    python3 - <<'PY'
import random, socket
for _ in range(200):
    port = random.randint(20000, 29999)
    try:
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, port))
        print(port)
        break
    except OSError:
        continue
PY
}
