"""Workload files: strict schema, reference-tool layout, and clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import WEIGHTS, tiny_workload_dict, write_workload

from qsx_batch.errors import UserError
from qsx_batch.workload import differing_keys, dump_workload, load_workload, parse_workload

pytestmark = pytest.mark.quick  # part of the first check (README: Tests)

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


def _relative_inputs(folder, energy_key: str) -> dict:
    """A tiny quantization workload whose CSV initial_population and energy table are written relative."""
    data = tiny_workload_dict("quantization", folder.parent)
    exploration = data["workload"]["exploration"]
    exploration["initial_population"] = "start/front.csv"
    if energy_key == "table":
        exploration["extra_args"]["energy"] = {"table": "tables/energy.csv"}
    else:
        exploration["energy_evaluation"] = {"dram_analysis_file": "tables/energy.csv"}
    return data


@pytest.mark.parametrize("energy_key", ["table", "dram_analysis_file"])
def test_relative_inputs_are_kept_as_written(tmp_path, energy_key):
    """The spec keeps relative inputs as written (a copy elsewhere is the same workload); they resolve against
    the workload file's folder only when used."""
    specs = []
    for name in ("here", "there"):
        folder = tmp_path / name
        folder.mkdir()
        specs.append(load_workload(write_workload(folder, _relative_inputs(folder, energy_key))))
    here, there = specs
    exploration = here.spec.exploration
    table = (exploration.extra_args.energy.table if energy_key == "table"
             else exploration.energy_evaluation.dram_analysis_file)
    assert (exploration.initial_population, table) == ("start/front.csv", "tables/energy.csv")
    dumped = yaml.safe_load(dump_workload(here))["workload"]["exploration"]
    assert dumped["initial_population"] == "start/front.csv" and "tables/energy.csv" in yaml.safe_dump(dumped)
    assert differing_keys(here.spec, there.spec) == []
    assert here.input_path(table) == tmp_path / "here" / "tables" / "energy.csv"
    assert there.input_path(exploration.initial_population) == tmp_path / "there" / "start" / "front.csv"
    assert here.input_path(str(tmp_path / "abs.csv")) == tmp_path / "abs.csv"  # absolute paths stay


def test_resume_with_a_copy_of_the_workload_in_another_folder(tmp_path):
    """A run whose CSV initial_population is relative resumes from a copy of the workload and its CSV elsewhere
    (the original folder gone); the CSV is read from the workload's folder, not the working folder."""
    import shutil

    import torch

    from qsx_batch import results
    from qsx_batch.evaluation.assembly import build_problem

    first, second, elsewhere = tmp_path / "first", tmp_path / "second", tmp_path / "cwd"
    for folder in (first, second / "start", elsewhere):
        folder.mkdir(parents=True)
    data = tiny_workload_dict("quantization", tmp_path, pop_size=4, offsprings=4, generations=1)
    data["workload"]["exploration"]["initial_population"] = "start/front.csv"
    data["workload"]["exploration"]["datasets"]["exploration"]["sample_limit"] = 64
    workload = write_workload(first, data)
    genes = build_problem(load_workload(workload), torch.device("cpu"), calibrate=False).gene_names
    starting = [[8] * len(genes), [4] * len(genes)]
    (first / "start").mkdir()
    (first / "start" / "front.csv").write_text(
        ",".join(genes) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in starting))
    out = tmp_path / "run.h5"
    proc = _cli("explore", workload, "-o", out, "--skip-baseline", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    run = results.open(out)
    assert run.generations.rows == 1
    assert [list(g) for g in run.individuals["genome"][:2]] == starting  # read from the workload's folder

    shutil.copy(workload, second / "workload.yaml")
    shutil.copy(first / "start" / "front.csv", second / "start" / "front.csv")
    shutil.rmtree(first)
    proc = _cli("explore", "--resume", out, second / "workload.yaml", "--generations", 2, "--skip-baseline",
                cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert results.open(out).generations.rows == 2
