#!/usr/bin/env bash
# Runs the image with a real Apptainer, after containers/build-check.sh (which must keep its image:
# QSX_BUILD_CHECK_KEEP=1), on a machine with no container registry:
#   1. Apptainer from Debian unstable in a root of its own (containers/apptainer-root.sh; kept between runs);
#   2. qsx.sif from the build check's image: buildah push ... oci-archive, apptainer build (root inside the root);
#   3. containers/qsx.def built by Apptainer itself, offline, as uid 1000: Bootstrap oci-archive of the build
#      check's local Debian base, pip from its wheel directory bound at /mnt;
#   4. as uid 1000 in a fresh folder, with each SIF: `apptainer run SIF explore` leaves its results file there,
#      `inspect` reads it, a workload under a --bind folder runs, an unbound one gets the dispatcher's message,
#      --nv without a GPU runs on the CPU without a traceback, nothing is written outside the folder and $HOME;
#   5. tests/test_apptainer_launch.py: `qsx-batch launch --container qsx.sif` on the sandbox SLURM cluster, every
#      array task through the real `apptainer exec` (containers/apptainer-node.sh), rows equal to explore's.
# Needs root. At the end it removes the SIFs, the archives and the build check's image localhost/qsx:check
# (unless QSX_APPTAINER_CHECK_KEEP=1); the Apptainer root stays.
# Usage: containers/apptainer-check.sh            (from anywhere; prints the time of each step)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
HERE=$REPO/containers
STATE=${QSX_APPTAINER_DIR:-/var/tmp/qsx-apptainer}
BUILD_STATE=${QSX_BUILD_CHECK_DIR:-/var/tmp/qsx-build-check}
IMAGE=localhost/qsx:check
BASE=localhost/qsx-base:bookworm
OUT=$STATE/build                  # the archives and the SIFs (about 10 GB while it runs)
WORK=$STATE/work                  # the unprivileged user's fresh folders
DATA=$STATE/data                  # bound into the root at /scratch/data: a folder Apptainer does not bind by default
SCRATCH=/scratch/data
# lz4 squashes the 6.5 GB image several times faster than the default gzip on 2 cores (minutes of CI): this check
# is of running the SIFs, not of their size; users' `apptainer build` keeps its default
SQUASH=(--mksquashfs-args "-comp lz4")
export QSX_APPTAINER_DIR=$STATE

bh() {
    buildah --root "$BUILD_STATE/storage" --runroot "$BUILD_STATE/run" --storage-driver vfs "$@"
}

step() {
    printf '\n== %s (%ds since start)\n' "$*" "$SECONDS"
}

in_root() {  # [apptainer-root.sh run options] -- COMMAND...: inside the Apptainer root
    bash "$HERE/apptainer-root.sh" run "$@"
}

fail() {
    printf 'apptainer-check: FAILED: %s\n' "$*" >&2
    exit 1
}

# -- the unprivileged user's checks, run inside the root as uid 1000 (this script, re-entered) -------------------
user_checks() {  # SIF FULL: FULL=1 adds the --bind, --nv checks
    local sif=$1 full=$2 h5
    cd "$(mktemp -d "$PWD/run.XXXX")"
    printf '+ cd %s (uid %s, HOME=%s)\n' "$PWD" "$(id -u)" "$HOME"
    echo "+ apptainer run $sif --version"
    apptainer -s run "$sif" --version
    # a tiny exploration of the embedded default: 4 individuals, 2 generations, 200 samples
    apptainer -s exec "$sif" python - 2 tiny.yaml <"$HERE/tiny-workload.py"
    echo "+ apptainer run $sif explore tiny.yaml"
    apptainer -s run "$sif" explore tiny.yaml 2>explore.err || { cat explore.err >&2; fail "explore"; }
    h5=$(ls results/*.h5)
    [ "$(echo "$h5" | wc -l)" = 1 ] || fail "explore left $h5 in results/"
    echo "+ apptainer run $sif inspect $h5"
    apptainer -s run "$sif" inspect "$h5" | tee inspect.txt
    grep -q "individuals" inspect.txt || fail "inspect printed no individuals"
    echo "+ apptainer run $sif explore $SCRATCH/workload.yaml (not bound)"
    if apptainer -s run "$sif" explore "$SCRATCH/workload.yaml" 2>unbound.err; then
        fail "a workload that is not bound into the container ran"
    fi
    cat unbound.err
    grep -q "$SCRATCH/workload.yaml does not exist inside the container" unbound.err || fail "no bind message"
    if [ "$full" = 1 ]; then
        echo "+ apptainer run --bind $SCRATCH:/data $sif explore /data/workload.yaml"
        apptainer -s run --bind "$SCRATCH:/data" "$sif" explore /data/workload.yaml 2>bound.err ||
            { cat bound.err >&2; fail "explore of a bound workload"; }
        ls results/bound-*.h5
        echo "+ apptainer run --nv $sif explore tiny.yaml --output results/nv.h5 (no GPU here)"
        apptainer run --nv "$sif" explore tiny.yaml --output results/nv.h5 2>nv.err ||
            { cat nv.err >&2; fail "explore with --nv"; }
        grep -v "^[0-9-]* [0-9:]* " nv.err || true  # Apptainer's and the dispatcher's lines, not the search's
        if grep -q Traceback nv.err; then fail "--nv: a traceback"; fi
        ls results/nv.h5
    fi
    ls -la . results
}

if [ "${1:-}" = _user ]; then
    shift
    user_checks "$@"
    exit 0
fi

# -- as root on the host ---------------------------------------------------------------------------------------
cleanup() {
    if [ "${QSX_APPTAINER_CHECK_KEEP:-0}" != 1 ]; then
        rm -rf "$OUT" "$WORK" "$DATA" "$STATE/tmp" "$STATE/marker"
        bh rmi "$IMAGE" >/dev/null 2>&1 || true
    fi
}

setup_root() {
    step "Apptainer root $STATE/root (Debian unstable; kept between runs)"
    bash "$HERE/apptainer-root.sh" setup
}

sif_from_image() {
    bh inspect --type image "$IMAGE" >/dev/null 2>&1 ||
        fail "no image $IMAGE: run QSX_BUILD_CHECK_KEEP=1 containers/build-check.sh first"
    step "buildah push $IMAGE oci-archive:$OUT/qsx.tar (layers uncompressed)"
    bh push -q --disable-compression "$IMAGE" "oci-archive:$OUT/qsx.tar"
    step "apptainer build qsx.sif oci-archive://qsx.tar (root, inside the root)"
    in_root --as-root --bind "$OUT" --cwd "$OUT" -- apptainer build --disable-cache "${SQUASH[@]}" qsx.sif oci-archive://qsx.tar
    rm -f "$OUT/qsx.tar"
    if [ "${QSX_APPTAINER_CHECK_KEEP:-0}" != 1 ]; then
        bh rmi "$IMAGE" >/dev/null  # 6.5 GB of vfs storage, no longer needed
    fi
}

sif_from_def() {
    step "buildah push $BASE oci-archive:$OUT/base.tar"
    bh push -q "$BASE" "oci-archive:$OUT/base.tar"
    chmod 644 "$OUT/base.tar"
    step "apptainer build qsx-def.sif containers/qsx.def, offline, as uid 1000 (Bootstrap oci-archive, pip from /mnt)"
    local source
    source=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
    # the repository read-only (the build's source), the wheels read-only at /mnt, the output folder writable
    in_root --bind "$REPO:$REPO:ro" --bind "$BUILD_STATE/wheelhouse:$BUILD_STATE/wheelhouse:ro" --bind "$OUT" \
        --cwd "$REPO" -- apptainer build --disable-cache "${SQUASH[@]}" \
        --build-arg BOOTSTRAP=oci-archive --build-arg "BASE_IMAGE=$OUT/base.tar" \
        --build-arg "PIP_ARGS=--progress-bar off --no-index --find-links /mnt" \
        --build-arg "SOURCE_URL=$source" \
        --bind "$BUILD_STATE/wheelhouse:/mnt" \
        "$OUT/qsx-def.sif" containers/qsx.def
    rm -f "$OUT/base.tar"
    step "apptainer inspect / test qsx-def.sif (uid 1000)"
    in_root --bind "$OUT:$OUT:ro" -- apptainer -s inspect "$OUT/qsx-def.sif" | grep -E "base.name|source|qsx.torch "
    in_root --bind "$OUT:$OUT:ro" -- apptainer -s test "$OUT/qsx-def.sif"
}

prepare_user() {
    rm -rf "$WORK" "$DATA" "$STATE/tmp"
    mkdir -p "$WORK" "$DATA"
    chown 1000:1000 "$WORK"
    # a workload whose inputs lie in a folder of their own, bound at /data: weights next to the workload file
    cp "$REPO/qsx_batch/weights/lenet5_mnist.pt" "$DATA/"
    python3 - "$REPO/qsx_batch/workloads/lenet5_mnist_quantization.yaml" "$DATA/workload.yaml" <<'PY'
import sys
import yaml
data = yaml.safe_load(open(sys.argv[1]))
w = data["workload"]
w["name"] = "bound"
w["model"]["weights"] = "lenet5_mnist.pt"
w["exploration"]["nsga"].update(pop_size=4, offsprings=4, generations=1)
w["exploration"]["datasets"]["exploration"]["sample_limit"] = 200
w["exploration"]["datasets"]["baseline"]["sample_limit"] = 200
open(sys.argv[2], "w").write(yaml.safe_dump(data, sort_keys=False))
PY
    chmod -R a+rX "$DATA"
}

run_as_user() {  # SIF FULL
    local sif=$1 marker=$STATE/marker
    step "as uid 1000 in a fresh folder: apptainer run $(basename "$sif") explore, inspect, binds$([ "$2" = 1 ] && echo ", --nv")"
    local before binds=(--bind "$HERE:$HERE:ro" --bind "$WORK" --bind "$DATA:$SCRATCH:ro" --bind "$OUT:$OUT:ro")
    before=$(stat -c '%s %Y' "$sif")
    in_root "${binds[@]}" -- true  # the bind mount points exist in the root before the marker
    touch "$marker"
    sleep 1
    in_root "${binds[@]}" --cwd "$WORK" -- bash "$HERE/apptainer-check.sh" _user "$sif" "$2"
    # nothing written inside the image, nor anywhere but the fresh folder and $HOME (the root's /tmp included)
    [ "$(stat -c '%s %Y' "$sif")" = "$before" ] || fail "$sif changed"
    local written
    written=$(find "$STATE/root" "$STATE/tmp" "$DATA" -xdev -newer "$marker" \
        -not -path "$STATE/root/home/qsx" -not -path "$STATE/root/home/qsx/*" -not -path "$STATE/root/oldroot" |
        grep -v -x -e "$STATE/root/dev" -e "$STATE/root/tmp" -e "$STATE/tmp" || true)
    [ -z "$written" ] || fail "written outside the working folder and \$HOME: $written"
    echo "nothing written outside $WORK and \$HOME"
}

launch_test() {
    step "tests/test_apptainer_launch.py: qsx-batch launch --container qsx.sif on the SLURM cluster (real apptainer exec)"
    bash "$REPO/slurm/dev/start-cluster.sh" >/dev/null
    (
        cd "$REPO"
        # shellcheck disable=SC1091
        [ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate
        CI=true QSX_SIF=$OUT/qsx.sif QSX_APPTAINER=$HERE/apptainer-node.sh \
            python -m pytest -q -p no:cacheprovider -m apptainer tests/test_apptainer_launch.py
    )
}

# QSX_APPTAINER_CHECK_STEPS: a subset of the steps, for working on this script (the SIFs of an earlier run with
# QSX_APPTAINER_CHECK_KEEP=1 stay in $OUT), e.g. "user launch"
STEPS=${QSX_APPTAINER_CHECK_STEPS:-root sif def user launch def-user}
has_step() {
    case " $STEPS " in *" $1 "*) return 0 ;; esac
    return 1
}

mkdir -p "$STATE"
df -h "$STATE" | tail -n 1
trap cleanup EXIT
if has_step sif; then
    rm -rf "$OUT"
fi
install -d -o 1000 -g 1000 "$OUT"  # the unprivileged build writes its SIF here
if has_step root; then setup_root; fi
if has_step sif; then sif_from_image; fi
if has_step user; then prepare_user; run_as_user "$OUT/qsx.sif" 1; fi
if has_step launch; then launch_test; fi
if has_step def; then sif_from_def; fi
if has_step def-user; then prepare_user; run_as_user "$OUT/qsx-def.sif" 0; fi
step "apptainer check passed ($(bash "$HERE/apptainer-root.sh" run -- apptainer --version))"
