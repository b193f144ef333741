#!/usr/bin/env bash
# The other HDF5 readers tests/test_results_readers.py reads a results file with: Debian's h5dump (package
# hdf5-tools, installed with apt-get when missing; needs root) and an older h5py (3.11.0, built on HDF5 1.14) in
# its own virtual environment, made once under QSX_OLD_H5PY_VENV (default ~/.cache/qsx-batch/h5py-3.11.0, the
# test's default too). PyTables, xarray + h5netcdf and pandas come with the project's 'test' extra.
set -euo pipefail
if ! command -v h5dump >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-readers.sh: h5dump is missing; install hdf5-tools as root" >&2
    else
        apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@" </dev/null >/dev/null; }
        apt_get install -y --no-install-recommends hdf5-tools || { apt_get update && apt_get install -y --no-install-recommends hdf5-tools; }
    fi
fi
venv="${QSX_OLD_H5PY_VENV:-$HOME/.cache/qsx-batch/h5py-3.11.0}"
if ! "$venv/bin/python" -c "import h5py" >/dev/null 2>&1; then
    python -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --progress-bar off --only-binary=:all: "h5py==3.11.0" "numpy==2.2.6"
fi
