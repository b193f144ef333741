"""Shared fixtures: tiny real workloads on the embedded LeNet-5 / MNIST data, written to tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import submitit  # noqa: F401  (imported first on purpose, see below)
import yaml

from qsx_batch.workload import default_workload_path

WEIGHTS = default_workload_path().parent.parent / "weights" / "lenet5_mnist.pt"
WORKLOADS = default_workload_path().parent

# Importing submitit runs logging.config.dictConfig, which closes every logging handler made before it. One is
# absl's handler that pytorch-quantization installs on import; absl closes its stream unless that stream is the
# current sys.stderr. Under pytest the stream is a capture file, so a test session that imported
# pytorch-quantization before submitit lost pytest's own capture file ("I/O operation on closed file"). Importing
# submitit here, before any test imports pytorch-quantization, keeps every order of tests working.


def tiny_workload_dict(problem: str = "quantization", tmp_path: Path | None = None, **nsga) -> dict:
    """The embedded workload of ``problem`` shrunk to seconds: small population, few generations, 200 samples, and
    a random start (no sweep before generation 0; the default start is tested in test_sensitivity.py)."""
    data = yaml.safe_load((WORKLOADS / f"lenet5_mnist_{problem}.yaml").read_text())
    w = data["workload"]
    w["exploration"]["initial_population"] = "random"
    w["model"]["weights"] = str(WEIGHTS)
    if tmp_path is not None:
        w["results"] = str(tmp_path / "results")
    w["exploration"]["nsga"].update({"pop_size": 6, "offsprings": 6, "generations": 2, **nsga})
    w["exploration"]["datasets"]["exploration"]["sample_limit"] = 200
    w["exploration"]["datasets"]["baseline"]["sample_limit"] = 300
    return data


def write_workload(tmp_path: Path, data: dict, name: str = "workload.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def quant_workload(tmp_path) -> Path:
    """A tiny quantization workload file (pop 6, 2 generations, 200 samples)."""
    return write_workload(tmp_path, tiny_workload_dict("quantization", tmp_path), "quantization.yaml")


@pytest.fixture
def sparsity_workload(tmp_path) -> Path:
    """A tiny sparsity workload file (pop 6, 2 generations, 200 samples)."""
    return write_workload(tmp_path, tiny_workload_dict("sparsity", tmp_path), "sparsity.yaml")


def _cluster_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


def missing(message: str) -> None:
    """A component a test needs is not installed: skip, but FAIL when CI=true (tests/run.sh installs it)."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def slurm() -> None:
    """The local SLURM cluster (slurm/dev/start-cluster.sh): skips without one, FAILS when CI=true."""
    if not _cluster_up():
        missing("no SLURM cluster: start one with 'sudo slurm/dev/start-cluster.sh'")
