"""``launch --container`` through the REAL Apptainer: every array task runs ``apptainer exec ... qsx.sif python``.

Run by containers/apptainer-check.sh, which builds the SIF and brings Apptainer up (containers/apptainer-root.sh):
    QSX_SIF=qsx.sif QSX_APPTAINER=containers/apptainer-node.sh python -m pytest -m apptainer tests/test_apptainer_launch.py
The main test run leaves it out (marker ``apptainer``, deselected in pyproject.toml's addopts); selected, it fails
without those two variables or the local SLURM cluster. tests/test_launch_container.py checks the same submission
with a stand-in ``apptainer`` in the main run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_launch import individuals, launch_command, write_workload

from qsx_batch.cli import main
from qsx_batch.evaluation.record import genome_key

pytestmark = pytest.mark.apptainer


def required(name: str) -> Path:
    value = os.environ.get(name)
    if not value or not Path(value).exists():
        pytest.fail(f"{name} must name an existing file: this test is run by containers/apptainer-check.sh")
    return Path(value).resolve()


def scores(table) -> dict:
    return {genome_key(g): (gen, a, c) for g, gen, a, c in
            zip(table["genome"], table["generation"], table["accuracy"], table["cost"])}


def test_workers_run_in_the_real_apptainer_and_match_explore(slurm, tmp_path):
    sif, wrapper = required("QSX_SIF"), required("QSX_APPTAINER")
    bin_dir, log = tmp_path / "bin", tmp_path / "apptainer.log"
    bin_dir.mkdir()
    (bin_dir / "apptainer").symlink_to(wrapper)
    # The tasks run as uid 1000 (the wrapper, like an unprivileged user on a cluster): the run's folder and every
    # folder the launcher makes in it must be writable for them; the weights must lie where they can see them.
    tmp_path.chmod(0o777)
    workload = write_workload(tmp_path, generations=2)
    data = yaml.safe_load(workload.read_text())
    weights = tmp_path / "lenet5_mnist.pt"
    shutil.copy(data["workload"]["model"]["weights"], weights)
    data["workload"]["model"]["weights"] = str(weights)
    workload.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "launch.h5"
    listing = tmp_path / "modules"  # each task lists the modules it imported (worker test hook), as its own user
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "QSX_APPTAINER_LOG": str(log),
           "QSX_BATCH_TEST_FAULT": f"modules={listing}"}
    done = subprocess.run(launch_command(str(workload), "--output", str(out), "--individuals-per-task", "2",
                                         "--cpus-per-task", "1", "--gpus-per-task", "1", "--container", str(sif),
                                         "--bind", f"{tmp_path}:{tmp_path}"),
                          cwd=tmp_path, env=env, umask=0, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr

    calls = log.read_text().splitlines()
    assert len(calls) == 2  # the baseline and two generations: one array job of two persistent tasks
    for call in calls:
        words = call.split()
        assert words[:5] == ["exec", "--nv", "--bind", f"{tmp_path}:{tmp_path}", str(sif)]
        assert words[5].startswith("python") and words[6:9] == ["-u", "-m", "submitit.core._submit"]
    task_logs = "".join(p.read_text() for p in out.with_suffix(".jobs").glob("*/*_log.err"))
    assert "Traceback" not in task_logs
    # the tasks ran as the wrapper's unprivileged user, and what that user's `apptainer exec` runs is the image's
    # Python (the Apptainer root has no Python of its own; the host's is not visible in it)
    listings = sorted(tmp_path.glob("modules.*"))
    assert listings and {p.name for p in listings} <= {"modules.0", "modules.1"}  # tasks that had work
    assert {p.stat().st_uid for p in listings} == {1000}
    probe = subprocess.run([str(bin_dir / "apptainer"), "exec", "--nv", "--bind", f"{tmp_path}:{tmp_path}", str(sif),
                            "python", "-c", "import os, sys, qsx_batch; print(os.getuid(), os.environ['APPTAINER_CONTAINER'], "
                            "sys.executable, qsx_batch.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    uid, container, python, package = probe.stdout.split()
    assert (uid, container, python) == ("1000", str(sif), "/opt/qsx/venv/bin/python")
    assert package.startswith("/opt/qsx/venv/lib/")

    ind = individuals(out)
    assert set(ind["status"]) == {"ok"} and set(ind["attempt"]) == {1}
    assert set(ind["slurm_array_task_id"]) <= {0, 1} and len(set(ind["slurm_job_id"])) == 1
    # the same genomes with the same accuracies and costs as a host explore on one CPU thread, like each task
    ref = tmp_path / "explore.h5"
    assert main(["explore", str(workload), "--output", str(ref), "--device", "cpu", "--threads", "1"]) == 0
    assert scores(ind) == scores(individuals(ref))
    assert len(ind["genome"]) == len(individuals(ref)["genome"]) and np.all(ind["accuracy"] > 0)
