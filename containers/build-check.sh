#!/usr/bin/env bash
# Builds containers/Dockerfile and runs the image, on a machine with no container daemon and no container registry:
#   1. a local base image: a Debian rootfs (debootstrap --variant=minbase) committed as localhost/qsx-base;
#   2. a wheel directory with every Python package of the image, from this machine's pip (its indexes and caches);
#   3. buildah bud --isolation chroot --storage-driver vfs, BASE_IMAGE=the local base, pip offline from the wheels;
#   4. buildah run: the dispatcher's --version, a one-generation tiny exploration, inspect, a missing-bind message.
# Needs root (apt-get, debootstrap, chroot). Steps 1-2 are kept in $QSX_BUILD_CHECK_DIR for the next run (warm);
# the built image (about 6 GB in vfs storage) is removed at the end unless QSX_BUILD_CHECK_KEEP=1.
# Usage: containers/build-check.sh            (from anywhere; prints the time of each step)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=${QSX_BUILD_CHECK_DIR:-/var/tmp/qsx-build-check}
SUITE=bookworm                                   # Python 3.11, the same as this machine's: the wheels fit
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=localhost/qsx-base:$SUITE
IMAGE=localhost/qsx:check
DOCKERFILE=$REPO/containers/Dockerfile

bh() {
    buildah --root "$STATE/storage" --runroot "$STATE/run" --storage-driver vfs "$@"
}

step() {
    printf '\n== %s (%ds since start)\n' "$*" "$SECONDS"
}

arg_default() {  # NAME: the default of `ARG NAME=...` in the Dockerfile, the single source of the pins
    sed -n "s/^ARG $1=//p" "$DOCKERFILE"
}

need_tools() {
    command -v buildah >/dev/null && command -v debootstrap >/dev/null && return 0
    step "installing buildah and debootstrap (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap >/dev/null
}

make_base() {
    bh inspect --type image "$BASE" >/dev/null 2>&1 && { step "base $BASE: kept from an earlier run"; return 0; }
    step "base $BASE: debootstrap --variant=minbase $SUITE"
    rm -rf "$STATE/rootfs"
    debootstrap --variant=minbase "$SUITE" "$STATE/rootfs" "$MIRROR" >"$STATE/debootstrap.log"
    local ctr
    ctr=$(bh from scratch)
    bh copy "$ctr" "$STATE/rootfs" / >/dev/null
    bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/sh "$ctr"
    bh commit --rm "$ctr" "$BASE" >/dev/null
    rm -rf "$STATE/rootfs"
}

make_wheels() {
    step "wheels: pip download of the pinned stack and pyproject.toml's dependencies into $STATE/wheelhouse"
    python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "the wheels must fit the base: Python 3.11")'
    {
        echo "torch==$(arg_default TORCH_VERSION)"
        echo "torchvision==$(arg_default TORCHVISION_VERSION)"
        echo "pytorch-quantization==$(arg_default PYTORCH_QUANTIZATION_VERSION)"
        python3 -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))' "$REPO/pyproject.toml"
    } >"$STATE/requirements.txt"
    pip download -q --prefer-binary -d "$STATE/wheelhouse" -r "$STATE/requirements.txt" 2>&1 |
        grep -v "is ignored: it is neither a file nor a directory" || true
}

build_image() {
    step "build: buildah bud -f containers/Dockerfile --build-arg BASE_IMAGE=$BASE (pip offline from the wheels)"
    bh bud --isolation chroot --layers=false -f "$DOCKERFILE" \
        --build-arg "BASE_IMAGE=$BASE" \
        --build-arg "PIP_ARGS=--progress-bar off --no-index --find-links /wheelhouse" \
        --build-arg "SOURCE_URL=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)" \
        -v "$STATE/wheelhouse:/wheelhouse:ro" \
        -t "$IMAGE" "$REPO"
}

in_image() {
    bh run --isolation chroot "$CONTAINER" -- "$@"
}

run_image() {
    step "run: the dispatcher inside the image"
    CONTAINER=$(bh from "$IMAGE")
    in_image /bin/sh /usr/local/bin/qsx-entrypoint --version
    in_image python -c 'import torch, torchvision, pytorch_quantization; print("torch", torch.__version__, "CUDA", torch.version.cuda, "torchvision", torchvision.__version__)'
    # A one-generation tiny exploration of the embedded default, through the dispatcher, as the image's user.
    in_image python - 1 /tmp/tiny.yaml <"$REPO/containers/tiny-workload.py"
    in_image /bin/sh /usr/local/bin/qsx-entrypoint explore /tmp/tiny.yaml --output /work/results/check.h5
    in_image /bin/sh /usr/local/bin/qsx-entrypoint inspect /work/results/check.h5
    if in_image /bin/sh /usr/local/bin/qsx-entrypoint explore /data/not-bound.yaml 2>"$STATE/missing.txt"; then
        echo "the dispatcher accepted a workload that does not exist" >&2
        return 1
    fi
    grep -q "does not exist inside the container" "$STATE/missing.txt"
    # shellcheck disable=SC2016  # a Go template, not shell
    bh inspect --type image --format '{{range $k, $v := .OCIv1.Config.Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}' "$IMAGE"
}

report_size() {
    step "image size (uncompressed): $(bh images --format '{{.Size}}' "$IMAGE")"
}

cleanup() {
    bh rm --all >/dev/null 2>&1 || true
    if [ "${QSX_BUILD_CHECK_KEEP:-0}" != 1 ]; then
        bh rmi "$IMAGE" >/dev/null 2>&1 || true
    fi
}

mkdir -p "$STATE"
df -h "$STATE" | tail -n 1
need_tools
cleanup
trap cleanup EXIT
make_base
make_wheels
build_image
report_size
run_image
step "build check passed"
