"""The embedded default, run exactly as a user runs it: from an empty folder, no arguments."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from qsx_batch import results


def test_default_explore_finds_cheap_accurate_settings(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "qsx_batch.cli", "explore"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    files = sorted((tmp_path / "results").glob("lenet5_mnist_quantization-*.h5"))
    assert len(files) == 1 and f"qsx-batch inspect {files[0].relative_to(tmp_path)}" in proc.stdout
    run = results.open(files[0])
    base = dict(zip(zip(run.baseline["label"], run.baseline["dataset"]), run.baseline["accuracy"]))
    assert base[("fp32", "baseline")] >= 0.95
    eight_bit_cost = 80.0
    front = run.pareto()
    ind = run.individuals
    cheap = [r for r in front if ind["cost"][r] <= 0.6 * eight_bit_cost
             and ind["accuracy"][r] >= base[("fp32", "exploration")] - 0.02]
    assert cheap, "no front point within 2 points of baseline at <= 60% of the 8-bit cost"
    assert np.all(ind["status"] == "ok")
    assert run.header.initial_population == "sensitivity" and run.table("sensitivity").rows > 0  # auto's start

    shown = subprocess.run([sys.executable, "-m", "qsx_batch.cli", "inspect", str(files[0])], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "Pareto front" in shown.stdout
