"""What a new user meets first: mistakes answered before torch loads, the newest results file taken when none is
named, typed CSV and JSON exports with only the run's own columns, datasets named as the workload names them, and
user modules imported from the workload's folder."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_workload_dict, write_workload

from qsx_batch import results
from qsx_batch.cli import main

pytestmark = pytest.mark.quick  # part of the first check (README: Tests)

MISTAKES = [
    ("explore", "missing.yaml"), ("launch", "missing.yaml"), ("sensitivity", "missing.yaml"),
    ("validate", "missing.yaml"), ("calibrate", "missing.yaml"), ("train", "missing.yaml"),
    ("blocks", "missing.yaml"), ("energy", "missing.yaml"), ("explore", "bad.yaml"), ("explore", "--resume", "x.h5"),
    ("inspect", "x.h5"), ("plot", "x.h5"), ("evaluate", "x.h5", "--top", "1"), ("retrain", "x.h5", "--top", "1"),
    ("export", "x.h5", "--top", "1"), ("inspect",), ("explore", "--resume"), ("sensitivity", "--resume"),
    ("explore", "--no-such-option"), ("no-such-command",),
]


@pytest.mark.parametrize("args", MISTAKES, ids=" ".join)
def test_mistakes_are_answered_before_torch_is_imported(args, tmp_path):
    (tmp_path / "bad.yaml").write_text("workload:\n  name: [unclosed\n")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "qsx_batch.cli", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "torch" not in imported and "pytorch_quantization" not in imported
    message = [line for line in proc.stderr.splitlines() if not line.startswith("import time")]
    assert "Traceback" not in proc.stderr and "error:" in "\n".join(message)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A quantization and a sparsity run in one results folder, the sparsity run written last."""
    tmp = tmp_path_factory.mktemp("first-use")
    paths = {}
    for problem in ("quantization", "sparsity"):
        workload = write_workload(tmp, tiny_workload_dict(problem, tmp, generations=1), f"{problem}.yaml")
        paths[problem] = tmp / "results" / f"{problem}.h5"
        assert main(["explore", str(workload), "-o", str(paths[problem])]) == 0
        time.sleep(0.05)
    return tmp, paths


def test_a_command_without_a_results_path_takes_the_newest(two_runs, capsys, monkeypatch):
    tmp, paths = two_runs
    monkeypatch.chdir(tmp)
    assert main(["inspect"]) == 0
    captured = capsys.readouterr()
    assert f"results file: {Path('results') / 'sparsity.h5'} (the newest in results/)" in captured.err
    assert f"results    {Path('results') / 'sparsity.h5'}" in captured.out
    os.utime(paths["quantization"])  # now the newest
    assert main(["inspect", "--top", "1"]) == 0
    assert "quantization.h5" in capsys.readouterr().out
    assert main(["explore", str(tmp / "quantization.yaml"), "--resume", "last"]) == 0  # finished: nothing to do
    assert "quantization.h5 (the newest in" in capsys.readouterr().err


def test_exports_keep_integers_and_only_the_columns_of_the_run(two_runs, tmp_path):
    _, paths = two_runs
    quant, sparse = results.open(paths["quantization"]), results.open(paths["sparsity"])
    for name, run in (("quant", quant), ("sparse", sparse)):
        assert main(["inspect", str(run.path), "--csv", str(tmp_path / f"{name}.csv"),
                     "--json", str(tmp_path / f"{name}.json")]) == 0
    with open(tmp_path / "quant.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0])
    assert header == ["index", "generation", "status", "accuracy", "cost", "accuracy_margin", "eval_seconds",
                      *quant.gene_names]
    for row, stored_cost, params in zip(rows, quant.individuals["cost"], quant.individuals["params"]):
        assert all(row[name].isdigit() for name in quant.gene_names)  # "4", never "4.0"
        assert [int(row[name]) for name in quant.gene_names] == params.astype(int).tolist()
        assert row["cost"] == str(int(stored_cost))
        assert len(row["accuracy_margin"].lstrip("-").replace(".", "").lstrip("0")) <= 12  # no binary noise
    margins = [float(r["accuracy_margin"]) for r in rows]
    assert margins == pytest.approx((quant.individuals["accuracy"] - quant.minimum_accuracy).tolist(), abs=1e-11)
    records = json.loads((tmp_path / "quant.json").read_text())
    assert all(isinstance(records[0][name], int) for name in quant.gene_names)
    assert isinstance(records[0]["cost"], int) and isinstance(records[0]["accuracy"], float)

    sparse_records = json.loads((tmp_path / "sparse.json").read_text())
    keys = list(sparse_records[0])
    assert any(key.startswith("blocks_created:") for key in keys) and "accuracy_margin" in keys
    assert all(isinstance(sparse_records[0][name], float) for name in sparse.gene_names)  # thresholds
    assert not any(key.endswith((".weight", ".bits")) for key in keys)


def test_baselines_and_tables_name_the_data_and_the_margin(two_runs, capsys):
    _, paths = two_runs
    assert main(["inspect", str(paths["quantization"])]) == 0
    out = capsys.readouterr().out
    assert "exploration: mnist_embedded validation" in out and "baseline: mnist_embedded test" in out
    run = results.open(paths["quantization"])
    assert f"margin: accuracy minus the bound {run.minimum_accuracy:.6g} (meets it when >= 0)" in out
    assert "numerics   CPU, fp32 (torch " in out and "CUDA " in out and "cudnn" in run.header.versions


@pytest.mark.parametrize("choice", ["tf32", "strict"])
def test_gpu_math_sets_both_tf32_switches(choice, tmp_path):
    import torch

    from qsx_batch.evaluation.assembly import use_gpu_math
    from qsx_batch.workload import load_workload

    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["exploration"]["gpu_math"] = choice
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        use_gpu_math(load_workload(write_workload(tmp_path, data)))
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (choice == "tf32",) * 2
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


NETWORK = '''
from qsx_batch.models.lenet5 import LeNet5


def build():
    return LeNet5()
'''


def test_a_model_module_beside_the_workload_is_imported_from_there(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_lenet.py").write_text(NETWORK)
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["model"]["type"] = "my_lenet:build"
    workload = write_workload(folder, data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "qsx_batch.cli", "validate", str(workload)], cwd=elsewhere,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "type: my_lenet:build" in proc.stdout
    (folder / "my_lenet.py").unlink()
    proc = subprocess.run([sys.executable, "-m", "qsx_batch.cli", "validate", str(workload)], cwd=elsewhere,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and f"searched {folder}" in proc.stderr and "Traceback" not in proc.stderr


OTHERS = '''
from torch import nn

from qsx_batch.models.lenet5 import LeNet5


class WithOthers(LeNet5):
    """LeNet-5 behind a ConvTranspose2d, a layer type the quantization problem does not act on."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(1, 1, 3, padding=1)

    def forward(self, x):
        return super().forward(self.up(x))
'''


def test_validate_and_explore_name_the_weights_left_in_fp32(tmp_path, capsys):
    (tmp_path / "others.py").write_text(OTHERS)
    data = tiny_workload_dict("quantization", tmp_path, generations=1)
    data["workload"]["model"].update(type="others:WithOthers", weights=None)
    workload = write_workload(tmp_path, data)
    assert main(["validate", str(workload)]) == 0
    err = capsys.readouterr().err
    assert "# coverage: Conv2d 2 layers (4 genes), Linear 3 layers (6 genes); 61,470 of the model's 61,479 " \
           "weights (>99.9%)" in err
    assert "# not searched (fp32): up (ConvTranspose2d, 9 weights)" in err
    assert main(["explore", str(workload), "-o", str(tmp_path / "run.h5")]) == 0
    assert "note: 1 module(s) with weights are not searched and stay fp32: up (ConvTranspose2d)" in \
        capsys.readouterr().err
