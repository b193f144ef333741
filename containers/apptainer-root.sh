#!/usr/bin/env bash
# A real Apptainer on a Debian 12 machine, which has no apptainer package: Debian unstable's apptainer (it needs
# glibc >= 2.38) in a separate Debian unstable root, entered the way Apptainer accepts (a plain chroot is refused as
# a "weak chrooted environment"). Used by containers/apptainer-check.sh and, as a compute node's `apptainer`, by
# containers/apptainer-node.sh. Needs root (debootstrap, mount namespaces).
#
#   apptainer-root.sh setup
#       makes the root in $QSX_APPTAINER_DIR/root once (debootstrap --variant=minbase sid: about 500 MB, a few
#       minutes) and keeps it for the next runs; prints `apptainer --version`
#   apptainer-root.sh run [--as-root] [--keep-env] [--bind SRC[:DST[:ro]]]... [--cwd DIR] -- COMMAND [ARGS...]
#       runs COMMAND inside the root, as the unprivileged user qsx (uid 1000, the HPC case) unless --as-root.
#       Only the bound host folders are visible (at DST, default SRC); /tmp is $QSX_APPTAINER_DIR/tmp (on disk,
#       so that builds have room and a check can see what was written there). The environment is a clean one
#       (HOME, USER, PATH, LANG) unless --keep-env, which keeps the caller's (a SLURM task's SLURM_* variables)
#       but still sets HOME, USER, PATH and drops PYTHONPATH/PYTHONHOME.
set -euo pipefail

STATE=${QSX_APPTAINER_DIR:-/var/tmp/qsx-apptainer}
ROOT=$STATE/root
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=apptainer,squashfs-tools,squashfuse,fuse2fs,fuse3,fakeroot,uidmap
USER_NAME=qsx
USER_ID=1000
SELF=$(readlink -f "$0")

die() {
    printf 'apptainer-root: %s\n' "$*" >&2
    exit 2
}

setup() {
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, mount namespaces)"
    if [ ! -e "$ROOT/.qsx-ready" ]; then
        command -v debootstrap >/dev/null || {
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
        }
        printf 'apptainer-root: debootstrap --variant=minbase --include=%s sid %s %s\n' "$PACKAGES" "$ROOT" "$MIRROR"
        rm -rf "$ROOT"
        mkdir -p "$STATE"
        if ! debootstrap --variant=minbase --include="$PACKAGES" sid "$ROOT" "$MIRROR" >"$STATE/debootstrap.log" 2>&1; then
            tail -n 20 "$STATE/debootstrap.log" >&2
            die "debootstrap failed (log: $STATE/debootstrap.log)"
        fi
        cp /etc/hosts /etc/resolv.conf "$ROOT/etc/"
        # one devpts per machine here: "multiple devpts instances unsupported" otherwise
        sed -i 's/^mount devpts = yes/mount devpts = no/' "$ROOT/etc/apptainer/apptainer.conf"
        grep -q '^mount devpts = no' "$ROOT/etc/apptainer/apptainer.conf" || die "apptainer.conf has no 'mount devpts'"
        chroot "$ROOT" useradd --create-home --uid "$USER_ID" --user-group --shell /bin/bash "$USER_NAME"
        rm -rf "$ROOT/var/cache/apt/archives/"*.deb "$ROOT/var/lib/apt/lists/"*
        touch "$ROOT/.qsx-ready"
    fi
    run -- apptainer --version
}

# -- inside a private mount namespace (unshare --mount --fork), as root ------------------------------------------
inside() {
    local as_root=0 keep_env=0 cwd=/ binds=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --as-root) as_root=1 ;;
            --keep-env) keep_env=1 ;;
            --bind) binds+=("$2"); shift ;;
            --cwd) cwd=$2; shift ;;
            --) shift; break ;;
            *) die "unknown option $1" ;;
        esac
        shift
    done
    local cmd=("$@")
    [ ${#cmd[@]} -gt 0 ] || die "run: no command"
    mount --make-rprivate /
    mount --bind "$ROOT" "$ROOT"
    mount -t tmpfs -o mode=755,size=64k tmpfs "$ROOT/dev"
    local name major minor
    while read -r name major minor; do
        mknod -m 666 "$ROOT/dev/$name" c "$major" "$minor"
    done <<'NODES'
null 1 3
zero 1 5
random 1 8
urandom 1 9
tty 5 0
fuse 10 229
NODES
    mkdir "$ROOT/dev/shm" "$ROOT/dev/pts"
    ln -s /proc/self/fd "$ROOT/dev/fd"
    ln -s /proc/self/fd/0 "$ROOT/dev/stdin"
    ln -s /proc/self/fd/1 "$ROOT/dev/stdout"
    ln -s /proc/self/fd/2 "$ROOT/dev/stderr"
    mount -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm"
    mount --rbind /sys "$ROOT/sys"
    mkdir -p "$STATE/tmp"
    chmod 1777 "$STATE/tmp"
    mount --bind "$STATE/tmp" "$ROOT/tmp"
    local bind src dst opt
    for bind in "${binds[@]}"; do
        IFS=: read -r src dst opt <<<"$bind"
        dst=${dst:-$src}
        [ -e "$src" ] || die "--bind $bind: $src does not exist"
        if [ -d "$src" ]; then mkdir -p "$ROOT$dst"; else mkdir -p "$(dirname "$ROOT$dst")"; touch "$ROOT$dst"; fi
        mount --bind "$src" "$ROOT$dst"
        if [ "$opt" = ro ]; then mount -o remount,bind,ro "$ROOT$dst"; fi
    done
    cd "$ROOT"
    mkdir -p oldroot
    pivot_root . oldroot
    mount -t proc proc /proc
    umount -l /oldroot
    cd "$cwd"
    local path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    local home=/root user=root
    [ "$as_root" = 1 ] || { home=/home/$USER_NAME; user=$USER_NAME; }
    local env=(env -u PYTHONPATH -u PYTHONHOME HOME="$home" USER="$user" LOGNAME="$user" PATH="$path")
    [ "$keep_env" = 1 ] || env=(env -i HOME="$home" USER="$user" LOGNAME="$user" PATH="$path" LANG=C.UTF-8 TERM="${TERM:-dumb}")
    if [ "$as_root" = 1 ]; then
        exec "${env[@]}" "${cmd[@]}"
    fi
    exec setpriv --reuid="$USER_ID" --regid="$USER_ID" --init-groups "${env[@]}" "${cmd[@]}"
}

run() {
    [ "$(id -u)" = 0 ] || die "needs root (mount namespaces)"
    [ -e "$ROOT/.qsx-ready" ] || die "no root in $ROOT yet: run '$SELF setup'"
    exec unshare --mount --fork -- "$BASH" "$SELF" _inside "$@"
}

case "${1:-}" in
    setup) setup ;;
    run) shift; run "$@" ;;
    _inside) shift; inside "$@" ;;
    *) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
