"""Pareto fronts, hypervolume, ``inspect`` choices and exports, on hand-made points and a tiny real run."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from conftest import tiny_workload_dict, write_workload

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.results.pareto import hypervolume, pareto_mask, ranking, usable
from qsx_batch.store import open_for_append

pytestmark = pytest.mark.quick  # part of the first check (README: Tests)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    """A finished tiny quantization run (pop 6, 3 generations)."""
    tmp = tmp_path_factory.mktemp("analysis")
    workload = write_workload(tmp, tiny_workload_dict("quantization", tmp, generations=3))
    out = tmp / "run.h5"
    assert main(["explore", str(workload), "--output", str(out)]) == 0
    return out


def brute_force_front(objectives: np.ndarray, maximize_cost: bool) -> set[int]:
    """Indices no other point dominates (accuracy up; cost down, or up when maximized)."""
    sign = np.array([1.0, 1.0 if maximize_cost else -1.0])
    better = objectives * sign  # both "larger is better"
    front = set()
    for i, p in enumerate(better):
        if not any(np.all(q >= p) and np.any(q > p) for j, q in enumerate(better) if j != i):
            front.add(i)
    return front


@pytest.mark.parametrize("maximize_cost", [False, True])
def test_pareto_mask_matches_brute_force_non_dominance(maximize_cost):
    rng = np.random.default_rng(3)
    # coarse grid values give ties and exact duplicates, the cases a sloppy front gets wrong
    objectives = np.column_stack([rng.integers(0, 8, 60) / 8, rng.integers(0, 8, 60) * 10.0])
    mask = pareto_mask(objectives, maximize_cost)
    assert set(np.flatnonzero(mask)) == brute_force_front(objectives, maximize_cost)


def test_run_front_is_the_non_dominated_set_of_usable_individuals(run_file):
    run = results.open(run_file)
    ind = run.individuals
    rows = np.flatnonzero(usable(ind["constraint"], ind["status"]))
    expected = {rows[i] for i in brute_force_front(ind["objectives"][rows], False)}
    assert set(run.pareto().tolist()) == expected and expected
    assert list(ind["cost"][run.pareto()]) == sorted(ind["cost"][run.pareto()])


def test_hypervolume_of_a_hand_computed_case():
    quantization = SimpleNamespace(maximize_cost=False, worst_cost=100.0, max_blocks_per_sample=0.0)
    objectives = np.array([[0.9, 50.0], [0.8, 20.0], [0.95, 10.0], [0.99, 5.0], [0.5, 150.0]])
    constraint = np.array([0.0, 0.0, 0.1, 0.0, 0.0])  # row 2 misses the accuracy constraint
    status = np.array(["ok", "ok", "ok", "failed", "ok"], dtype=object)  # row 3 failed; row 4 is beyond (1, 1)
    # normalized (1 - accuracy, cost / 100): (0.1, 0.5) and (0.2, 0.2); union of boxes up to (1, 1):
    # 0.9 * 0.5 + 0.8 * 0.8 - 0.8 * 0.5 = 0.69
    assert hypervolume(objectives, constraint, status, quantization) == pytest.approx(0.69)
    sparsity = SimpleNamespace(maximize_cost=True, worst_cost=0.0, max_blocks_per_sample=100.0)
    # (accuracy 0.9, 60 of 100 blocks) -> (0.1, 0.4): box 0.9 x 0.6
    assert hypervolume(np.array([[0.9, 60.0]]), np.zeros(1), np.array(["ok"]), sparsity) == pytest.approx(0.54)


def test_ranking_breaks_ties_by_the_other_objective():
    objectives = np.array([[0.9, 30.0], [0.95, 40.0], [0.9, 20.0], [0.5, 20.0]])
    assert list(ranking(objectives, False, "accuracy")) == [1, 2, 0, 3]
    assert list(ranking(objectives, False, "cost")) == [2, 3, 0, 1]
    assert list(ranking(objectives, True, "cost")) == [1, 0, 2, 3]


def test_cumulative_hypervolume_grows_and_ends_at_the_whole_run(run_file):
    run = results.open(run_file)
    cumulative = run.cumulative_hypervolume()
    ind = run.individuals
    assert len(cumulative) == 3 and np.all(np.diff(cumulative) >= 0)
    assert cumulative[-1] == pytest.approx(hypervolume(ind["objectives"], ind["constraint"], ind["status"], run.header))
    assert np.all(cumulative >= run.generations["hypervolume"] - 1e-12)  # the archive covers every population


def test_inspect_top_by_cost_exports_parse_back(run_file, tmp_path, capsys):
    csv_path, json_path, tikz_path = tmp_path / "top.csv", tmp_path / "top.json", tmp_path / "top.tex"
    assert main(["inspect", str(run_file), "--top", "3", "--by", "cost", "--hypervolume", "--csv", str(csv_path),
                 "--json", str(json_path), "--tikz", str(tikz_path)]) == 0
    text = capsys.readouterr().out
    run = results.open(run_file)
    ind = run.individuals
    ok = [r for r in range(run.count) if ind["status"][r] == "ok" and ind["constraint"][r] <= 0]
    expected = sorted(ok, key=lambda r: (ind["cost"][r], -ind["accuracy"][r]))[:3]
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["index"]) for r in rows] == expected
    assert [float(r["accuracy"]) for r in rows] == pytest.approx(ind["accuracy"][expected])
    assert [float(r["conv1.weight"]) for r in rows] == list(ind["params"][expected, 1])
    records = json.loads(json_path.read_text())
    assert [r["index"] for r in records] == expected and records[0]["cost"] == ind["cost"][expected[0]]
    plots = re.findall(r"coordinates \{([^}]*)\}", tikz_path.read_text())
    points = [[tuple(map(float, p.split(","))) for p in re.findall(r"\(([^)]*)\)", block)] for block in plots]
    assert points[0] == [(ind["cost"][r], pytest.approx(ind["accuracy"][r], abs=1e-6)) for r in expected]
    front = run.pareto(np.array(expected))
    assert points[1] == [(ind["cost"][r], pytest.approx(ind["accuracy"][r], abs=1e-6)) for r in front]
    assert "hypervolume per generation" in text and text.count("\n") > 20


def test_inspect_generation_and_failed_choices(run_file, tmp_path):
    gen_csv, failed_csv = tmp_path / "gen.csv", tmp_path / "failed.csv"
    assert main(["inspect", str(run_file), "--generation", "1", "--csv", str(gen_csv)]) == 0
    assert main(["inspect", str(run_file), "--failed", "--csv", str(failed_csv)]) == 0
    ind = results.open(run_file).individuals
    with open(gen_csv, newline="") as fh:
        assert [int(r["index"]) for r in csv.DictReader(fh)] == list(np.flatnonzero(ind["generation"] == 1))
    assert failed_csv.read_text() == ""  # nothing failed in this run


def test_inspect_reads_a_file_a_writer_holds(run_file, capsys):
    writer = open_for_append(run_file)  # a run in SWMR mode, holding the lock
    try:
        assert main(["inspect", str(run_file), "--pareto"]) == 0
        assert "selected" in capsys.readouterr().out
        assert main(["evaluate", str(run_file), "--top", "1"]) == 2
        assert "being written by another qsx-batch process" in capsys.readouterr().err
    finally:
        writer.close()


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_results_files_give_clear_errors_and_stay_untouched(run_file, tmp_path, capsys):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(run_file.read_bytes()[: run_file.stat().st_size // 2])
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    cases = [
        (["inspect", str(foreign)], "not a qsx-batch results file"),
        (["inspect", str(truncated)], "is truncated"),
        (["plot", str(truncated)], "is truncated"),
        (["inspect", str(text)], "not a readable HDF5 file"),
        (["inspect", str(tmp_path / "missing.h5")], "does not exist"),
        (["inspect", str(run_file), "--index", "999"], "Individual index 999 does not exist"),
        (["inspect", str(run_file), "--generation", "7"], "Generation 7 is not in"),
        (["evaluate", str(run_file), "--index", "0", "999"], "Individual index 999 does not exist"),
        (["evaluate", str(run_file)], "Choose individuals"),
        (["evaluate", str(foreign), "--top", "1"], "not a qsx-batch results file"),
    ]
    before = {p: _sha(p) for p in (foreign, truncated, text, run_file)}
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert before == {p: _sha(p) for p in before}
