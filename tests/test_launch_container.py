"""``launch --container``: every array task runs its Python through ``apptainer exec`` (a recording stand-in).

Needs the local SLURM cluster (slurm/dev/start-cluster.sh): skips without one, FAILS when CI=true.
tests/test_apptainer_launch.py runs the same launch through the real Apptainer (containers/apptainer-check.sh).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
from test_launch import individuals, launch_command, write_workload

STAND_IN = """#!/bin/sh
# Records its arguments, then runs the command after the image path on the host (no container engine here).
echo "$*" >> "{log}"
[ "$1" = exec ] || exit 64
shift
while [ $# -gt 0 ]; do
  case "$1" in
    --nv) shift ;;
    --bind) shift 2 ;;
    *) break ;;
  esac
done
shift  # the image
exec "$@"
"""


def test_workers_run_inside_the_image(slurm, tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "apptainer.log"
    bin_dir.mkdir()
    stand_in = bin_dir / "apptainer"
    stand_in.write_text(STAND_IN.format(log=log))
    stand_in.chmod(0o755)
    image = tmp_path / "qsx.sif"
    image.write_bytes(b"stand-in image")
    workload = write_workload(tmp_path, constraint={"minimum_accuracy": 0.5})
    out = tmp_path / "run.h5"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(launch_command(str(workload), "--output", str(out), "--skip-baseline", "--partition", "gpu",
                                         "--gpus-per-task", "1", "--individuals-per-task", "2", "--container",
                                         str(image), "--bind", f"{tmp_path}:{tmp_path}"),
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 2  # 4 individuals, 2 per task: one array job of two persistent tasks
    for call in calls:
        words = call.split()
        assert words[:5] == ["exec", "--nv", "--bind", f"{tmp_path}:{tmp_path}", str(image)]
        assert words[5].startswith("python") and words[6:9] == ["-u", "-m", "submitit.core._submit"]
        assert Path(words[9]).is_relative_to(out.with_suffix(".jobs"))
    ind = individuals(out)
    assert len(ind["accuracy"]) == 4 and np.all(ind["status"] == "ok")
    assert len(set(ind["slurm_job_id"])) == 1 and set(ind["slurm_array_task_id"]) <= {0, 1}
