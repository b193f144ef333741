"""Workload files in the reference tool's layout (itiv-kit/dnn-model-exploration, workloads/resnet18.yaml) load as
written, only their paths changed, and run a tiny ResNet-18 exploration on an ImageFolder the test generates."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.errors import UserError
from qsx_batch.evaluation.assembly import build_problem, workload_device
from qsx_batch.workload import load_workload

CLASSES, PER_CLASS = 4, 6


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """An ImageFolder of JPEGs: 4 classes x 6 images of 64x48 pixels, each class its own colour pattern."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet") / "val_images"
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        (root / f"n0{c}").mkdir(parents=True)
        for i in range(PER_CLASS):
            base = np.zeros((48, 64, 3))
            base[..., c % 3] = np.linspace(0, 255, 64)[None, :]
            pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"n0{c}" / f"img{i}.JPEG", quality=90)
    return root


def reference_layout(problem: str, images: Path, **changes) -> dict:
    """The reference tool's resnet18.yaml, shrunk (population 4, 2 generations) and with its paths changed."""
    block = {"type": "imagenet", "kind": "imagefolder", "path": str(images), "batch_size": 8, "randomize": True}
    data = {"workload": {
        "problem": {"gpu_id": -1, "log_file": "resnet18_run.log", "clear_log_file": True,
                    "results_file": "results/quant/resnet18.pkl", "problem_function": problem},
        "model": {"type": "resnet18", "accuracy_function": "classification_accuracy", "weights": None,
                  "extra_args": {"weighting_function": "bits_weighted_per_layer"}},
        "calibration": {"samples": None, "file": "./results/resnet18_quant_calib.pkl",
                        "datasets": {"calibrate": {**block, "sample_limit": 8, "batch_size": 8}}},
        "exploration": {
            "nsga": {"pop_size": 4, "offsprings": 4, "generations": 2, "mutation_eta": 10, "mutation_prob": 1.0,
                     "crossover_eta": 5, "crossover_prob": 0.9},
            "minimum_accuracy": 0.65,
            "predefined_parameters": [0.005, 0.01] if problem == "sparsity_problem" else [],
            "datasets": {"exploration": {**block, "sample_limit": 8192},
                         "baseline": {**block, "sample_limit": None, "batch_size": 16}},
            "extra_args": {"num_bits_upper_limit": 16, "num_bits_lower_limit": 12,
                           "bit_weighting_function": "bits_weighted_per_layer", "discrete_threshold_steps": 100,
                           "discrete_threshold_method": "linear", "threshold_limit": 0.1, "block_size": [8, 4],
                           "collect_sparsity_details": False}},
        "retraining": {"epochs": 2, "datasets": {"validation": {**block, "sample_limit": 8192},
                                                 "train": {**block, "sample_limit": None}}},
        "reevaluation": {"bit_weighting_function": "bits_weighted_per_layer",
                         "datasets": {"reevaluate": {**block, "sample_limit": None}}},
    }}
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        target = data["workload"]
        for part in parents:
            target = target[part]
        target[key] = value
    return data


def write(tmp_path: Path, data: dict, name: str = "resnet18.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("problem", ["sparsity_problem", "quantization_problem"])
def test_reference_layout_validates_and_explores(problem, image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the reference tool's outputs are relative to the working folder
    path = write(tmp_path, reference_layout(problem, image_folder))
    assert main(["validate", str(path)]) == 0
    assert main(["explore", str(path)]) == 0
    err = capsys.readouterr().err
    assert "results/quant/resnet18.h5" in err  # the .pkl results_file became HDF5, and it was said
    run = results.open(tmp_path / "results/quant/resnet18.h5")
    assert run.count >= 4 and set(run.individuals["status"]) == {"ok"}
    assert run.minimum_accuracy == pytest.approx(0.65)
    assert set(run.individuals["device"]) == {"cpu"}  # gpu_id -1
    log = (tmp_path / "results/resnet18_run.log").read_text().splitlines()  # log_file: in the results folder
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d qsx-batch explore started", log[0])
    assert any(line.endswith("accuracy constraint: >= 0.6500") for line in log) and "done: " in log[-2]
    workload = load_workload(path)
    assert workload.spec.exploration.extra_args.block_shape == (4, 8)  # [width 8, height 4]
    assert "weighting_function" not in workload.spec.model.extra_args  # not a constructor argument
    if problem == "sparsity_problem":
        # predefined individuals come first, one threshold in every layer: the lowest step (100 steps from 0 to
        # 0.1, one every 0.1/99) at or above 0.005 and 0.01, besides the 4 random individuals
        first = run.individuals["genome"][:2]
        assert np.all(first[0] == 5) and np.all(first[1] == 10)
        assert run.individuals["params"][0] == pytest.approx(np.full(len(first[0]), 0.5 / 99))
        assert int(np.sum(run.individuals["generation"] == 0)) == 6
        assert run.header.max_blocks_per_sample > 0
    else:
        assert (tmp_path / "results/resnet18_quant_calib.pkl").is_file()
        assert run.header.cost_name == "bits_weighted_per_layer"


def test_allowable_accuracy_drop_is_a_fraction_of_the_baseline(quant_workload, tmp_path):
    data = yaml.safe_load(quant_workload.read_text())
    data["workload"]["exploration"]["allowable_accuracy_drop"] = 0.5
    path = write(tmp_path, data, "drop.yaml")
    assert main(["explore", str(path), "--output", str(tmp_path / "drop.h5")]) == 0
    run = results.open(tmp_path / "drop.h5")
    fp32 = [a for lab, ds, a in zip(run.baseline["label"], run.baseline["dataset"], run.baseline["accuracy"])
            if lab == "fp32" and ds == "exploration"][0]
    assert run.minimum_accuracy == pytest.approx(fp32 * 0.5)

    data["workload"]["exploration"].pop("allowable_accuracy_drop")
    data["workload"]["exploration"]["allowable_absolute_accuracy_drop"] = 0.5
    path = write(tmp_path, data, "points.yaml")
    assert main(["explore", str(path), "--output", str(tmp_path / "points.h5"), "--skip-baseline"]) == 0
    assert results.open(tmp_path / "points.h5").minimum_accuracy == pytest.approx(fp32 - 0.5)


def test_one_bound_per_metric(quant_workload, tmp_path, capsys):
    data = yaml.safe_load(quant_workload.read_text())
    exploration = data["workload"]["exploration"]
    exploration.pop("allowable_accuracy_drop")
    exploration["minimum_accuracy"] = [0.5, 0.9]
    data["workload"]["model"]["accuracy_function"] = "multihead_metric:top1_and_top5"
    assert main(["explore", str(write(tmp_path, data)), "--output", str(tmp_path / "two.h5"), "--skip-baseline"]) == 0
    run = results.open(tmp_path / "two.h5")
    ind = run.individuals
    top1 = ind["accuracy"]
    assert np.all(ind["status"] == "ok")
    # the constraint is the larger violation of the two bounds; top-5 >= top-1, so the 0.9 bound on top-5 and the
    # 0.5 bound on top-1 decide together
    assert np.all(ind["constraint"] >= 0.5 - top1 - 1e-12)
    metrics = ind["metrics"]
    assert run.header.metric_names == ["multihead_metric:top1_and_top5[0]", "multihead_metric:top1_and_top5[1]"]
    assert np.array_equal(metrics[:, 0], top1) and np.all(metrics[:, 1] >= metrics[:, 0])
    assert np.allclose(ind["constraint"], np.maximum(0.5 - metrics[:, 0], 0.9 - metrics[:, 1]))

    exploration["minimum_accuracy"] = [0.5, 0.9, 0.1]
    assert main(["explore", str(write(tmp_path, data)), "--output", str(tmp_path / "three.h5"),
                 "--skip-baseline"]) == 2
    assert "3 bounds" in capsys.readouterr().err
    assert main(["validate", str(write(tmp_path, data))]) == 2
    assert "3 bounds" in capsys.readouterr().err


@pytest.mark.parametrize("changes, message", [
    ({"model.accuracy_function": "detection_accuracy"}, "reference tool"),
    ({"model.accuracy_function": "no_such_metric"}, "module.path:callable"),
    ({"reevaluation.bit_weighting_function": "bits_weighted_linear"}, "re-evaluations"),
    ({"model.extra_args": {"weighting_function": "bits_weighted_linear"}}, "different cost functions"),
    ({"exploration.extra_args.block_size": [8, 8, 8]}, "[width, height]"),
    ({"exploration.energy_evaluation": {"input_shape": [1, 3, 224]}}, "four positive sizes"),
])
def test_reference_keys_with_a_meaning_qsx_batch_cannot_keep_are_refused(changes, message, image_folder, tmp_path,
                                                                          capsys):
    path = write(tmp_path, reference_layout("quantization_problem", image_folder, **changes))
    assert main(["validate", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_gpu_id_names_a_visible_gpu(image_folder, tmp_path, capsys):
    path = write(tmp_path, reference_layout("quantization_problem", image_folder, **{"problem.gpu_id": 3}))
    assert main(["explore", str(path), "--output", str(tmp_path / "gpu.h5")]) == 2
    assert "gpu_id is 3" in capsys.readouterr().err
    assert not (tmp_path / "gpu.h5").exists()


def test_racing_needs_a_sample_counting_metric(quant_workload, tmp_path, capsys):
    data = yaml.safe_load(quant_workload.read_text())
    data["workload"]["model"]["accuracy_function"] = "multihead_metric:top1_and_top5"
    data["workload"]["exploration"]["racing"] = {"enabled": True}
    assert main(["validate", str(write(tmp_path, data))]) == 2
    assert "counts correct samples" in capsys.readouterr().err


def test_top5_accuracy_is_at_least_top1(quant_workload):
    workload = load_workload(quant_workload)
    from qsx_batch.evaluation.metrics import accuracy_function

    outputs, labels = torch.randn(64, 10), torch.randint(0, 10, (64,))
    top1 = accuracy_function("classification_accuracy").pairs(outputs, labels)
    top5 = accuracy_function("top5_accuracy").pairs(outputs, labels)
    assert top1.shape == top5.shape == (1, 2) and top5[0, 0] >= top1[0, 0] and top5[0, 1] == 64
    assert workload_device(workload, "cpu") == torch.device("cpu")


def test_validate_loads_the_weights(quant_workload, tmp_path, capsys):
    from qsx_batch.models import build_model, save_weights

    save_weights(build_model("resnet8"), tmp_path / "other.pt")
    data = yaml.safe_load(quant_workload.read_text())
    data["workload"]["model"]["weights"] = str(tmp_path / "other.pt")
    assert main(["validate", str(write(tmp_path, data))]) == 2
    assert "does not fit model.type 'lenet5'" in capsys.readouterr().err


def timeloop_table(path: Path, layers: int) -> list[dict]:
    """A DRAM table as the reference tool's energy_analysis.py writes it (made-up numbers, bitwidth 16)."""
    rows = [{"layer_idx": i, "layer_type": "Conv2d", "w_reads": 100 * (i + 1), "w_updates": 0, "w_fills": 10,
             "w_energy": 2.0, "i_reads": 300, "i_updates": 0, "i_fills": 5, "i_energy": 1.5, "o_reads": 0,
             "o_updates": 50 * (i + 1), "o_fills": 0, "o_energy": 3.0, "total_dram_energy": 0, "bitwidth": 16}
            for i in range(layers)]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_dram_analysis_file_gives_the_reference_energy(quant_workload, tmp_path):
    """The reference formula: weights at w/16, inputs and the previous layer's outputs at a/16, last outputs x1."""
    data = yaml.safe_load(quant_workload.read_text())
    data["workload"]["problem"].update(problem_function="energy_aware_quant_problem", layer_types=["Conv2d"])
    data["workload"]["exploration"]["energy_evaluation"] = {"dram_analysis_file": "dram.csv",
                                                            "input_shape": [1, 1, 28, 28]}
    rows = timeloop_table(tmp_path / "dram.csv", 2)
    problem = build_problem(load_workload(write(tmp_path, data)), torch.device("cpu"), calibrate=False)
    a, w = np.array([4.0, 6.0]), np.array([8.0, 3.0])

    def energy(t: str, row: dict) -> float:
        return (row[f"{t}_reads"] + row[f"{t}_updates"] + row[f"{t}_fills"]) * row[f"{t}_energy"]

    expected = sum(energy("w", r) * w[i] / 16 + energy("i", r) * a[i] / 16 for i, r in enumerate(rows))
    expected += energy("o", rows[0]) * a[1] / 16 + energy("o", rows[1])
    assert problem.energy.energy_uj(a, w) == pytest.approx(expected / 1e6)

    data["workload"]["problem"]["layer_types"] = ["Conv2d", "Linear"]
    with pytest.raises(UserError, match="layer_types: \\[Conv2d\\]"):
        build_problem(load_workload(write(tmp_path, data)), torch.device("cpu"), calibrate=False)
    data["workload"]["problem"]["layer_types"] = ["Conv2d"]
    data["workload"]["exploration"]["energy_evaluation"]["input_shape"] = [1, 3, 28, 28]
    with pytest.raises(UserError, match="input_shape"):
        build_problem(load_workload(write(tmp_path, data)), torch.device("cpu"), calibrate=False)


def test_docs_list_every_reference_key():
    docs = (Path(__file__).parents[1] / "docs" / "workloads.md").read_text()
    keys = ["gpu_id", "log_file", "clear_log_file", "results_file", "accuracy_function", "weighting_function",
            "calibration.samples", "minimum_accuracy", "predefined_parameters", "dram_analysis_file", "input_shape",
            "allowable_accuracy_drop", "block_size", "collect_sparsity_details", "kind", "total_samples",
            "data_root", "label_root", "reevaluation.bit_weighting_function"]
    assert [k for k in keys if k not in docs] == []


def test_log_file_is_appended_unless_cleared(quant_workload, tmp_path):
    data = yaml.safe_load(quant_workload.read_text())
    data["workload"]["problem"]["log_file"] = str(tmp_path / "logs" / "run.log")  # an absolute path wins
    path = write(tmp_path, data, "logged.yaml")
    for name in ("a", "b"):
        assert main(["explore", str(path), "--output", str(tmp_path / f"{name}.h5"), "--generations", "1"]) == 0
    log = (tmp_path / "logs" / "run.log").read_text()
    assert log.count("qsx-batch explore started") == 2 and f"done: {tmp_path / 'b.h5'}" in log
    data["workload"]["problem"]["clear_log_file"] = True
    assert main(["explore", str(write(tmp_path, data, "logged.yaml")), "--output", str(tmp_path / "c.h5"),
                 "--generations", "1"]) == 0
    log = (tmp_path / "logs" / "run.log").read_text()
    assert log.count("qsx-batch explore started") == 1 and "b.h5" not in log


def test_log_lines_get_one_timestamp_each(tmp_path):
    """The SLURM executor stamps its own lines; the log file adds a stamp only to lines without one."""
    import io

    from qsx_batch.search.log import _Tee

    log, console = io.StringIO(), io.StringIO()
    tee = _Tee(console, log)
    tee.write("2026-12-02 19:04:05 g0000: 4 individuals in 2 tasks\nplain line\n\x1b[2Kgen 0: 50%\rgen 0: 100%\n")
    lines = log.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
    assert lines[0] == "2026-12-02 19:04:05 g0000: 4 individuals in 2 tasks"
    assert re.fullmatch(stamp + "plain line", lines[1]) and re.fullmatch(stamp + "gen 0: 100%", lines[2])
    assert console.getvalue().startswith("2026-12-02 19:04:05 g0000")  # the console gets the text unchanged
