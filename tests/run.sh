#!/usr/bin/env bash
# The project's test command (README.md): install the project with its test extras, start the local
# single-node SLURM cluster the launch tests submit to, and run the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --progress-bar off -e '.[test]'
bash slurm/dev/start-cluster.sh
export CI="${CI:-true}"   # tests that need SLURM fail instead of skipping
python3 -m pytest -q "$@"
