#!/usr/bin/env bash
# A compute node's `apptainer` on this Debian 12 machine: the real Apptainer of containers/apptainer-root.sh, run
# as the unprivileged user qsx (uid 1000) like on an HPC cluster. tests/test_apptainer_launch.py puts it on PATH as
# `apptainer` for the SLURM tasks of `qsx-batch launch --container`: every task's
#     apptainer exec --nv --bind SRC:DST IMAGE python -u -m submitit.core._submit FOLDER
# runs through it. The host folders the command names (the working folder, the image's folder, every --bind
# source) are bound into the Apptainer root at the same paths; the rest of the host is not visible, so a task's
# Python can only be the image's. The task's environment (SLURM_*) is kept. Needs root (a SLURM task of root).
# QSX_APPTAINER_LOG=FILE appends each call's arguments to FILE.
set -euo pipefail

HERE=$(dirname "$(readlink -f "$0")")
binds=(--bind "$PWD")
previous=""
for arg in "$@"; do
    case "$previous" in
        --bind | -B)
            IFS=, read -r -a specs <<<"$arg"
            for spec in "${specs[@]}"; do binds+=(--bind "${spec%%:*}"); done ;;
    esac
    case "$arg" in
        --bind=* | -B=*)
            IFS=, read -r -a specs <<<"${arg#*=}"
            for spec in "${specs[@]}"; do binds+=(--bind "${spec%%:*}"); done ;;
        *.sif) if [ -f "$arg" ]; then binds+=(--bind "$(dirname "$(readlink -f "$arg")")"); fi ;;
    esac
    previous=$arg
done
if [ -n "${QSX_APPTAINER_LOG:-}" ]; then
    echo "$*" >>"$QSX_APPTAINER_LOG"
fi
exec bash "$HERE/apptainer-root.sh" run --keep-env "${binds[@]}" --cwd "$PWD" -- apptainer "$@"
