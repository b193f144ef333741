#!/usr/bin/env bash
# The project's test command (README.md): in a virtual environment (the active one, else ./.venv, created on
# first use), install the project with its test extras and the other HDF5 readers the results-file tests use,
# lint (ruff, configured in pyproject.toml), start the local single-node SLURM cluster the launch tests submit to,
# and run the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install --quiet --progress-bar off -e '.[test]'
python -m ruff check .          # lint and import order
bash tests/install-readers.sh   # h5dump and an older h5py for tests/test_results_readers.py
bash slurm/dev/start-cluster.sh
export CI="${CI:-true}"   # tests that need SLURM or a reader fail instead of skipping
python -m pytest -q "$@"
