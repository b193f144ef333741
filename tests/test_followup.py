"""Follow-up commands on tiny real runs: evaluate, retrain, blocks, energy (table, CSV import, energy-aware search)."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import WEIGHTS, tiny_workload_dict, write_workload

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.models import build_model, load_weights
from qsx_batch.store import read_table

# LeNet-5 on 1x28x28: (weights, input elements, output elements) per target layer, from the layer shapes.
LENET = {"conv1": (6 * 1 * 5 * 5, 1 * 28 * 28, 6 * 28 * 28), "conv2": (16 * 6 * 5 * 5, 6 * 14 * 14, 16 * 10 * 10),
         "fc1": (400 * 120, 400, 120), "fc2": (120 * 84, 120, 84), "fc3": (84 * 10, 84, 10)}


def hand_energy_uj(params: np.ndarray) -> float:
    """DRAM energy of LeNet-5 when every layer fits the default 64 KiB buffer: each element moves once,
    outputs at 8 bits, 640 pJ per 32-bit access."""
    total_bits = sum(w * params[2 * i + 1] + x * params[2 * i] + y * 8 for i, (w, x, y) in enumerate(LENET.values()))
    return total_bits / 32 * 640 / 1e6


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def quant(tmp_path_factory):
    """A tiny quantization workload (small retraining splits) and its finished run."""
    tmp = tmp_path_factory.mktemp("followup")
    data = tiny_workload_dict("quantization", tmp)
    retraining = data["workload"]["retraining"]["datasets"]
    retraining["train"]["sample_limit"] = 256
    retraining["validation"]["sample_limit"] = 200
    data["workload"]["retraining"]["learning_rate"] = 0.002
    workload = write_workload(tmp, data)
    out = tmp / "run.h5"
    assert main(["explore", str(workload), "--output", str(out)]) == 0
    return workload, out, data


def test_evaluate_reproduces_stored_accuracy_and_links_individuals(quant, tmp_path, capsys):
    workload, run_file, _ = quant
    copy = shutil.copy(run_file, tmp_path / "run.h5")
    assert main(["evaluate", str(copy), "--top", "3", "--dataset", "exploration"]) == 0
    assert main(["evaluate", str(copy), "--pareto"]) == 0
    printed = capsys.readouterr().out
    run = results.open(copy)
    ind = run.individuals
    table = run.follow_ups["reevaluations"]
    usable = [r for r in range(run.count) if ind["status"][r] == "ok" and ind["constraint"][r] <= 0]
    top = sorted(usable, key=lambda r: (-ind["accuracy"][r], ind["cost"][r]))[:3]
    same_data = table["dataset"] == "exploration.datasets.exploration"
    assert list(table["individual"][same_data]) == top
    for row, accuracy in zip(table["individual"][same_data], table["accuracy"][same_data]):
        assert accuracy == ind["accuracy"][row]  # the same genome on the same samples scores the same
        assert np.array_equal(table["genome"][table["individual"] == row][0], ind["genome"][row])
    full = table["dataset"] == "reevaluation.datasets.reevaluate"
    assert list(table["individual"][full]) == list(run.pareto())
    assert np.all(table["samples"][full] == 1000)
    assert np.allclose(table["correct"][full] / 1000, table["accuracy"][full])
    assert "re-evaluated" in printed
    assert main(["inspect", str(copy), "--pareto"]) == 0  # the re-evaluated accuracy beside the search's
    shown = capsys.readouterr().out
    assert "re-evaluated: on reevaluation.datasets.reevaluate" in shown
    for row, accuracy in zip(table["individual"][full], table["accuracy"][full]):
        assert any(line.split()[:5] == [str(row), str(ind["generation"][row]), f"{ind['accuracy'][row]:.4f}",
                                        f"{-ind['constraint'][row]:+.4f}", f"{accuracy:.4f}"]  # after the margin
                   for line in shown.splitlines())
    # the follow-up table does not stop a run from being resumed or read
    assert main(["explore", "--resume", str(copy)]) == 0
    assert results.open(copy).count == run.count


def test_retrain_fresh_copies_keep_or_improve_accuracy(quant, tmp_path, capsys):
    _, run_file, _ = quant
    ind = results.open(run_file).individuals
    ok = np.flatnonzero(ind["status"] == "ok")
    worst, best = ok[np.argmin(ind["accuracy"][ok])], ok[np.argmax(ind["accuracy"][ok])]
    copy = shutil.copy(run_file, tmp_path / "run.h5")
    assert main(["retrain", str(copy), "--index", str(worst), str(best), "--epochs", "1"]) == 0
    table = results.open(copy).follow_ups["retraining"]
    assert list(table["individual"]) == [worst, worst, best, best] and list(table["epoch"]) == [0, 1, 0, 1]
    before, after = table["accuracy"][0], table["accuracy"][1]
    assert after > before, (before, after)  # the worst individual gains from fine-tuning
    assert table["accuracy"][3] >= table["accuracy"][2] - 0.02, table["accuracy"]  # the best one keeps its accuracy
    # each individual starts from the base weights: its epoch-0 accuracy is what a fresh evaluation gives
    assert main(["evaluate", str(copy), "--index", str(worst), str(best),
                 "--dataset", "retraining.datasets.validation"]) == 0
    capsys.readouterr()
    fresh = results.open(copy).follow_ups["reevaluations"]
    assert list(fresh["accuracy"]) == [table["accuracy"][0], table["accuracy"][2]]
    saved = Path(str(table["weights"][1]))
    assert saved == (tmp_path / "run-retrained" / f"individual-{worst}.pt").resolve()
    model, original = build_model("lenet5"), build_model("lenet5")
    load_weights(model, saved, "lenet5")  # loadable as model.weights of a new workload
    load_weights(original, WEIGHTS, "lenet5")
    assert not torch.equal(model.fc1.weight, original.fc1.weight)


def test_retrain_reports_the_workloads_own_metric(quant, tmp_path, capsys):
    """With model.accuracy_function top5_accuracy, retraining's validation accuracy is top-5, as evaluate's."""
    import copy as deep

    _, run_file, data = quant
    top5 = deep.deepcopy(data)
    top5["workload"]["model"]["accuracy_function"] = "top5_accuracy"
    other = write_workload(tmp_path, top5)
    run = shutil.copy(run_file, tmp_path / "run.h5")
    worst = int(np.argmin(results.open(run).individuals["accuracy"]))
    assert main(["retrain", str(run), "--workload", str(other), "--index", str(worst), "--epochs", "1"]) == 0
    assert main(["evaluate", str(run), "--workload", str(other), "--index", str(worst),
                 "--dataset", "retraining.datasets.validation"]) == 0
    assert main(["evaluate", str(run), "--index", str(worst), "--dataset", "retraining.datasets.validation",
                 "--again"]) == 0
    capsys.readouterr()
    follow = results.open(run).follow_ups
    top5_score, top1_score = follow["reevaluations"]["accuracy"]
    assert follow["retraining"]["accuracy"][0] == top5_score != top1_score


def _zero_tiles(x: np.ndarray, block: int) -> tuple[int, int]:
    """Tiles of a batch of layer inputs and how many are all zero, counted with plain loops."""
    if x.ndim == 4:
        n, c, h, w = x.shape
        tiles = [x[:, :, i:i + block, j:j + block] for i in range(0, h, block) for j in range(0, w, block)]
        return n * c * len(tiles), sum(int((np.abs(t).max(axis=(2, 3)) == 0).sum()) for t in tiles)
    flat = x.reshape(len(x), -1)
    run = block * block
    tiles = [flat[:, i:i + run] for i in range(0, flat.shape[1], run)]
    return len(flat) * len(tiles), sum(int((np.abs(t).max(axis=1) == 0).sum()) for t in tiles)


def test_blocks_match_hand_counted_tiles(tmp_path, capsys):
    workload = write_workload(tmp_path, tiny_workload_dict("sparsity", tmp_path))
    table = tmp_path / "blocks.csv"
    assert main(["blocks", str(workload), "--csv", str(table)]) == 0
    with open(table, newline="") as fh:
        rows = {r["layer"]: r for r in csv.DictReader(fh)}
    assert {k: int(r["blocks_per_sample"]) for k, r in rows.items()} == {
        "conv1": 7 * 7, "conv2": 6 * 4 * 4, "fc1": 25, "fc2": 8, "fc3": 6}  # 4x4 tiles, 16-feature runs
    from qsx_batch.evaluation.assembly import load_block
    from qsx_batch.workload import load_workload

    wl = load_workload(workload)
    samples = load_block(wl, wl.spec.exploration.datasets.exploration, "exploration")
    model = build_model("lenet5")
    load_weights(model, WEIGHTS, "lenet5")
    seen = {}
    for name in rows:
        model.get_submodule(name).register_forward_pre_hook(lambda m, a, name=name: seen.setdefault(name, a[0]))
    with torch.no_grad():
        model.eval()(samples.inputs)
    for name, r in rows.items():
        total, zero = _zero_tiles(seen[name].numpy(), 4)
        assert (int(r["blocks_total"]), int(r["zero_blocks"])) == (total, zero), name
    assert main(["blocks", str(workload), "--block-size", "0"]) == 2
    assert "--block-size 0" in capsys.readouterr().err


def _energy_rows(argv) -> dict[str, dict]:
    assert main(argv) == 0
    with open(argv[argv.index("--output") + 1], newline="") as fh:
        return {r["layer"]: r for r in csv.DictReader(fh)}


def test_energy_table_matches_hand_computed_layers(tmp_path):
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["exploration"]["extra_args"]["energy"] = {"buffer_bytes": 4096}
    workload = write_workload(tmp_path, data)
    rows = _energy_rows(["energy", str(workload), "--output", str(tmp_path / "e8.csv")])
    # conv1 at 8 bits: (150*8 + 784*8 + 4704*8) bits / 32 bits per access * 640 pJ = 902080 pJ
    assert float(rows["conv1"]["energy_uj"]) == pytest.approx(0.90208)
    # fc1 does not fit 4096 bytes: ceil(48000*8 / 16384) = 24 weight passes, input read 24 times:
    # (48000*8 + 400*24*8 + 120*8) / 32 * 640 pJ = 9235200 pJ
    assert float(rows["fc1"]["input_reads"]) == 400 * 24 and float(rows["fc1"]["energy_uj"]) == pytest.approx(9.2352)
    rows4 = _energy_rows(["energy", str(workload), "--bits", "4", "--output", str(tmp_path / "e4.csv")])
    # at 4 bits: ceil(192000 / 16384) = 12 passes; (48000*4 + 4800*4 + 120*8) / 32 * 640 = 4243200 pJ
    assert float(rows4["fc1"]["energy_uj"]) == pytest.approx(4.2432)


def test_energy_csv_rows_match_by_layer_name(quant, tmp_path, capsys):
    _, _, data = quant
    template = tmp_path / "template.csv"
    rows = _energy_rows(["energy", str(write_workload(tmp_path, data)), "--output", str(template)])
    rows["conv1"]["input_reads"] = str(2 * float(rows["conv1"]["input_reads"]))  # conv1 input read twice
    table = tmp_path / "timeloop.csv"
    with open(table, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["layer", "weight_reads", "input_reads", "output_writes"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(reversed(list(rows.values())))  # another order than the model's
    energy = {**data["workload"], "problem": {**data["workload"]["problem"],
                                              "problem_function": "energy_aware_quant_problem"}}
    energy["exploration"] = {**energy["exploration"], "extra_args": {"energy": {"table": "timeloop.csv"}}}
    imported = _energy_rows(["energy", str(write_workload(tmp_path, {"workload": energy}, "e.yaml")),
                             "--output", str(tmp_path / "imported.csv")])
    extra_uj = 784 * 8 / 32 * 640 / 1e6
    assert float(imported["conv1"]["energy_uj"]) == pytest.approx(float(rows["conv1"]["energy_uj"]) + extra_uj)
    for name in ("conv2", "fc1", "fc2", "fc3"):
        assert float(imported[name]["energy_uj"]) == pytest.approx(float(rows[name]["energy_uj"]))

    table.write_text(table.read_text().replace("conv2,", "features.3,"))
    never = tmp_path / "never.h5"
    for argv in (["energy", str(tmp_path / "e.yaml")], ["explore", str(tmp_path / "e.yaml"), "-o", str(never)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no row for ['conv2']" in err and "unknown layers ['features.3']" in err and "Traceback" not in err
    assert not never.exists()


def test_energy_aware_search_stores_energy_per_individual(quant, tmp_path, capsys):
    _, quant_file, _ = quant
    data = tiny_workload_dict("quantization", tmp_path, pop_size=4, offsprings=4, generations=2)
    data["workload"]["problem"]["problem_function"] = "energy_aware_quant_problem"
    out = tmp_path / "energy.h5"
    assert main(["explore", str(write_workload(tmp_path, data)), "--output", str(out)]) == 0
    run = results.open(out)
    assert run.header.cost_name == "dram_energy" and run.header.cost_unit == "uJ per inference"
    ind = run.individuals
    for params, cost in zip(ind["params"], ind["cost"]):
        assert cost == pytest.approx(hand_energy_uj(params))
    assert run.baseline["cost"][list(run.baseline["label"]).index("all_8_bit")] == pytest.approx(
        hand_energy_uj(np.full(10, 8.0)))
    # inspect --energy estimates the same energy for a plain quantization run
    export = tmp_path / "energy.csv"
    capsys.readouterr()
    assert main(["inspect", str(quant_file), "--energy", "--csv", str(export)]) == 0
    assert "energy_uJ" in capsys.readouterr().out
    quant_ind = results.open(quant_file).individuals
    with open(export, newline="") as fh:
        for record in csv.DictReader(fh):
            expected = hand_energy_uj(quant_ind["params"][int(record["index"])])
            assert float(record["energy_uj"]) == pytest.approx(expected)


def test_follow_up_bad_input_leaves_the_file_untouched(quant, tmp_path, capsys):
    workload, run_file, data = quant
    copy = shutil.copy(run_file, tmp_path / "run.h5")
    no_retraining = {"workload": {k: v for k, v in data["workload"].items() if k != "retraining"}}
    sparsity = write_workload(tmp_path, tiny_workload_dict("sparsity", tmp_path), "s.yaml")
    cases = [
        (["retrain", str(copy), "--top", "1", "--workload", str(write_workload(tmp_path, no_retraining, "n.yaml"))],
         "no 'retraining' section"),
        (["evaluate", str(copy), "--top", "1", "--workload", str(sparsity)], "was written with"),
        (["evaluate", str(copy), "--top", "1", "--dataset", "nosuch"], "no dataset block 'nosuch'"),
        (["retrain", str(copy), "--index", "0", "--epochs", "0"], "--epochs 0"),
        (["evaluate", str(copy), "--top", "0"], "--top 0"),
    ]
    before = _sha(copy)
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert _sha(copy) == before
    with h5py.File(copy, "r") as f:
        assert "reevaluations" not in f and "retraining" not in f
        assert read_table(f, "individuals")["accuracy"].shape[0] == results.open(run_file).count
