"""Workload files: strict schema, reference-tool layout, and clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from qsx_batch.errors import UserError
from qsx_batch.workload import load_workload, parse_workload

from conftest import WEIGHTS, tiny_workload_dict, write_workload

REFERENCE_STYLE = f"""
workload:
  problem:
    problem_function: quantization_problem
  model:
    type: lenet5
    accuracy_function: classification_accuracy
    weights: {WEIGHTS}
  calibration:
    samples: null
    file: './results/lenet5_quant_calib.pt'
    datasets:
      calibrate:
        type: mnist_embedded
        kind: null
        path: null
        sample_limit: 256
        batch_size: 128
        randomize: True
        split: calibrate
  exploration:
    nsga:
      pop_size: 20
      offsprings: 20
      generations: 10
      mutation_eta: 20
      mutation_prob: 0.9
      crossover_eta: 15
      crossover_prob: 0.9
    minimum_accuracy: 0.9
    datasets:
      exploration:
        type: mnist_embedded
        split: test
        sample_limit: 512
        batch_size: 256
        randomize: True
      baseline:
        type: mnist_embedded
        split: test
        sample_limit: null
        batch_size: 256
        randomize: False
    extra_args:
      num_bits_lower_limit: 2
      num_bits_upper_limit: 8
      bit_weighting_function: bits_weighted_per_layer
      discrete_threshold_steps: 10
      discrete_threshold_method: log
      threshold_limit: 2.0
      block_size: 8
"""


def test_embedded_default_loads():
    w = load_workload(None)
    assert w.spec.problem.problem_function == "quantization_problem"
    assert w.spec.model.type == "lenet5"
    assert w.input_path(w.spec.model.weights).is_file()


def test_reference_layout_loads(tmp_path):
    w = parse_workload(REFERENCE_STYLE, tmp_path / "ref.yaml")
    assert w.spec.exploration.extra_args.bit_weighting_function == "bits_weighted_per_layer"
    assert w.spec.calibration.datasets.calibrate.sample_limit == 256
    assert w.spec.seed == 0 and w.spec.results == "results"


def _error(text: str, tmp_path) -> str:
    with pytest.raises(UserError) as info:
        parse_workload(text, tmp_path / "w.yaml")
    return str(info.value)


def test_malformed_yaml_names_the_line(tmp_path):
    msg = _error("workload:\n  problem:\n    problem_function: [oops\n  model: {}\n", tmp_path)
    assert "w.yaml" in msg and "line" in msg


def test_unknown_key_suggests_the_right_one(tmp_path):
    msg = _error(REFERENCE_STYLE.replace("pop_size", "pop_sise"), tmp_path)
    assert "workload.exploration.nsga.pop_sise" in msg and "Did you mean 'pop_size'" in msg


def test_unknown_top_level_key(tmp_path):
    msg = _error(REFERENCE_STYLE.replace("  problem:", "  problme:", 1), tmp_path)
    assert "problme" in msg and "Did you mean 'problem'" in msg


@pytest.mark.parametrize("old,new,expected", [
    ("pop_size: 20", "pop_size: lots", "valid integer"),
    ("num_bits_lower_limit: 2", "num_bits_lower_limit: 9", "greater than num_bits_upper_limit"),
    ("num_bits_lower_limit: 2", "num_bits_lower_limit: 1", "at least 2"),
    ("minimum_accuracy: 0.9", "minimum_accuracy: 0.9\n    allowable_accuracy_drop: 0.01", "set one accuracy constraint"),
    ("discrete_threshold_method: log", "discrete_threshold_method: cubic", "linear"),
])
def test_bad_values(tmp_path, old, new, expected):
    assert expected in _error(REFERENCE_STYLE.replace(old, new), tmp_path)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "qsx_batch.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _assert_clean_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_validate_prints_resolved_workload(quant_workload):
    proc = _cli("validate", quant_workload)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)["workload"]
    assert resolved["exploration"]["nsga"]["pop_size"] == 6
    assert resolved["exploration"]["extra_args"]["block_size"] == 8  # default filled in


@pytest.mark.parametrize("path,value,needles", [
    (("model", "type"), "lenet7", ["Unknown model.type 'lenet7'", "resnet18", "module.path:callable"]),
    (("exploration", "datasets", "exploration", "type"), "mnist_embeded", ["Unknown dataset type", "mnist_embedded"]),
    (("exploration", "extra_args", "bit_weighting_function"), "bits", ["bit_weighting_function", "bitops"]),
    (("problem", "problem_function"), "speed_problem", ["problem_function", "sparsity_problem"]),
    (("model", "weights"), "/nonexistent/w.pt", ["/nonexistent/w.pt", "does not exist"]),
    (("exploration", "datasets", "exploration", "type"), "mnist", ["needs a 'path'"]),
])
def test_validate_rejects_bad_references(tmp_path, path, value, needles):
    data = tiny_workload_dict("quantization", tmp_path)
    node = data["workload"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    _assert_clean_error(_cli("validate", write_workload(tmp_path, data)), *needles)


def test_missing_data_path_is_clear(tmp_path):
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["exploration"]["datasets"]["exploration"].update(type="cifar10", path="no/such/dir")
    _assert_clean_error(_cli("validate", write_workload(tmp_path, data)), "no/such/dir", "does not exist")


def test_weights_for_another_architecture(tmp_path):
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["model"]["type"] = "resnet8"
    _assert_clean_error(_cli("explore", write_workload(tmp_path, data)), "does not fit model.type 'resnet8'", "missing")


def test_empty_dataset(tmp_path):
    (tmp_path / "emptydata.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def make(path=None, split=None):\n    return TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0))\n")
    data = tiny_workload_dict("sparsity", tmp_path)
    data["workload"]["exploration"]["datasets"]["exploration"]["type"] = "emptydata:make"
    proc = subprocess.run([sys.executable, "-m", "qsx_batch.cli", "explore", str(write_workload(tmp_path, data))],
                          capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ,
                                                                             "PYTHONPATH": str(tmp_path)})
    _assert_clean_error(proc, "is empty")


def test_missing_workload_file(tmp_path):
    _assert_clean_error(_cli("explore", tmp_path / "nope.yaml"), "nope.yaml", "does not exist")
