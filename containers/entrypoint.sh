#!/bin/sh
# The image's dispatcher (Docker ENTRYPOINT, Apptainer %runscript): `run IMAGE COMMAND ARGS...` -> `qsx-batch COMMAND ARGS...`.
# Before handing over it checks what only the container can see: input paths that exist on the host but are not
# bound into the container, a GPU that was asked for but is not usable, a SLURM client missing for `launch`.
set -eu

COMMANDS="explore launch sensitivity calibrate inspect plot evaluate retrain export validate train blocks energy"
RESULTS_COMMANDS="inspect plot evaluate retrain export"               # their .h5 argument is an input
GPU_COMMANDS="explore sensitivity calibrate train evaluate retrain blocks energy"  # these compute in this container

say() {
    printf 'qsx-entrypoint: %s\n' "$*" >&2
}

in_apptainer() {
    [ -n "${APPTAINER_CONTAINER:-}${SINGULARITY_CONTAINER:-}" ]
}

is_one_of() {  # WORD LIST: WORD is one of the space-separated words of LIST
    case "$1" in "" | *[[:space:]]*) return 1 ;; esac
    case " $2 " in *" $1 "*) return 0 ;; esac
    return 1
}

usage() {
    cat <<EOF
usage: apptainer run [--nv] [--bind HOST:CONTAINER] qsx.sif COMMAND [ARGS...]
       docker run [--gpus all] [-v HOST:CONTAINER] IMAGE COMMAND [ARGS...]

COMMAND is a qsx-batch command:
  $COMMANDS
  --version, --help (this text), COMMAND --help (one command's options)
'explore' without a workload runs the embedded LeNet-5/MNIST default; results go to ./results.
Paths are paths inside the container: Apptainer binds \$HOME, the current folder and /tmp,
Docker nothing; bind other host folders (--bind / -v) and name them by their container path.
EOF
}

require_qsx_batch() {
    command -v qsx-batch >/dev/null 2>&1 && return 0
    say "this image has no qsx-batch on PATH ($PATH): it was not built from containers/Dockerfile or" \
        "containers/qsx.def, or its install step failed. Rebuild it (docs/containers.md)."
    exit 127
}

require_path() {  # PATH: an input file that must exist inside the container
    [ -e "$1" ] && return 0
    if in_apptainer; then
        bind="apptainer run --bind /host/folder:/data qsx.sif ... /data/FILE"
    else
        bind="docker run -v /host/folder:/data IMAGE ... /data/FILE"
    fi
    say "$1 does not exist inside the container (working folder $(pwd)). A host folder is visible here" \
        "only when it is bound: $bind"
    exit 2
}

check_inputs() {  # COMMAND ARGS...: workloads, --resume files and the results file of the analysis commands
    checked=$1
    shift
    previous=""
    for arg in "$@"; do
        if [ "$previous" = "--resume" ]; then
            require_path "$arg"
        fi
        case "$arg" in
            --resume=*) require_path "${arg#--resume=}" ;;
            -*) ;;
            *.yaml | *.yml) require_path "$arg" ;;
            *.h5 | *.hdf5)
                case "$previous" in
                    -o | --output | --out) ;;
                    *) if is_one_of "$checked" "$RESULTS_COMMANDS"; then require_path "$arg"; fi ;;
                esac ;;
        esac
        previous=$arg
    done
}

check_gpu() {
    # --nv (Apptainer) and --gpus (Docker) both bring the host's nvidia-smi into the container.
    if command -v nvidia-smi >/dev/null 2>&1; then
        count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
        if [ "$count" -eq 0 ]; then
            say "a GPU was requested (--nv / --gpus) but nvidia-smi lists none on this node; running on the" \
                "CPU where the workload's exploration.device is 'auto' (a workload with 'cuda' stops)."
        elif ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
            driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
            cuda=$(python -c 'import torch; print(torch.version.cuda)' 2>/dev/null || echo '?')
            say "nvidia-smi lists $count GPU(s), but PyTorch (CUDA $cuda build) cannot use them: it needs a" \
                "newer NVIDIA driver than this node's ${driver:-(unknown)} (CUDA 13.0: driver >= 580). Running on the CPU" \
                "where the workload's exploration.device is 'auto' (a workload with 'cuda' stops)."
        fi
    elif ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
        say "this node has NVIDIA GPUs but the container has no GPU driver: add --nv (apptainer run --nv) or" \
            "--gpus all (docker run). Running on the CPU where the workload's exploration.device is 'auto'."
    fi
}

has_option() {  # NAME ARGS...: NAME or NAME=VALUE among ARGS
    name=$1
    shift
    for arg in "$@"; do
        case "$arg" in "$name" | "$name"=*) return 0 ;; esac
    done
    return 1
}

check_slurm_client() {
    command -v sbatch >/dev/null 2>&1 && return 0
    say "launch submits SLURM jobs but sbatch is not visible inside the container: run" \
        "'qsx-batch launch ... --container qsx.sif' on the login node, or bind the host's SLURM client" \
        "(docs/containers.md, 'Launching from inside the image')."
}

case "${1:-}" in
    "" | -h | --help | help)
        usage
        require_qsx_batch
        echo
        exec qsx-batch --help ;;
    -V | --version)
        require_qsx_batch
        exec qsx-batch --version ;;
esac

word=$1
shift
if ! is_one_of "$word" "$COMMANDS"; then
    say "unknown command '$word'."
    usage >&2
    exit 2
fi
require_qsx_batch
check_inputs "$word" "$@"
if is_one_of "$word" "$GPU_COMMANDS"; then
    check_gpu
fi
if [ "$word" = launch ]; then
    check_slurm_client
    if in_apptainer && [ -n "${APPTAINER_CONTAINER:-}" ] && ! has_option --container "$@"; then
        set -- "$@" --container "$APPTAINER_CONTAINER"  # the workers run in this same image
    fi
fi
exec qsx-batch "$word" "$@"
