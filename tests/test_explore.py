"""Real explorations on the embedded LeNet-5/MNIST data: results file, reproducibility, resume, Ctrl-C, SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import tiny_workload_dict, write_workload

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.evaluation.record import genome_key


def _explore(workload: Path, out: Path, *extra: str) -> int:
    return main(["explore", str(workload), "--output", str(out), *extra])


def _genomes(path: Path) -> list[tuple]:
    return [genome_key(g) for g in results.open(path).individuals["genome"]]


def test_quantization_run_writes_a_complete_results_file(quant_workload, tmp_path):
    out = tmp_path / "q.h5"
    assert _explore(quant_workload, out) == 0
    with h5py.File(out, "r") as f:  # plain h5py, no SWMR flags needed after a clean close
        assert f.attrs["format"] == "qsx-batch-results"
        assert f.attrs["problem"] == "quantization_problem"
        assert "workload:" in f.attrs["workload_yaml"]
        n = int(f["individuals/count"][()])
        assert n == f["individuals/genome"].shape[0] >= 6
        assert f["individuals/genome"].shape[1] == 10  # input + weight quantizer of 5 layers
        assert list(f["genes/names"].asstr()[:2]) == ["conv1.input", "conv1.weight"]
        assert f["generations/population"].shape == (2, 6)
        labels = list(f["baseline/label"].asstr()[:])
        assert labels.count("fp32") == 2 and labels.count("all_8_bit") == 2
        for table in ("individuals", "baseline", "generations"):  # columns grow by chunks, trimmed at close
            rows = int(f[f"{table}/count"][()])
            assert {ds.shape[0] for ds in f[table].values() if ds.maxshape[:1] == (None,)} == {rows}
            assert f[f"{table}/row"].shape == (rows,)  # the row dimension scale grows and shrinks with them
    run = results.open(out)
    ind = run.individuals
    assert len(set(_genomes(out))) == run.count  # no genome evaluated twice
    assert np.all((ind["params"] >= 2) & (ind["params"] <= 8))
    assert np.allclose(ind["cost"], ind["params"].sum(axis=1))  # bits_weighted_linear
    assert np.all(ind["status"] == "ok")
    assert np.all((ind["accuracy"] > 0) & (ind["accuracy"] <= 1))
    assert set(ind["samples"]) == {200}
    fp32 = run.baseline["accuracy"][list(run.baseline["label"]).index("fp32")]
    assert run.minimum_accuracy == pytest.approx(fp32 * (1 - 0.02))  # allowable_accuracy_drop is a fraction
    assert np.allclose(ind["constraint"], run.minimum_accuracy - ind["accuracy"])
    assert len(run.pareto()) >= 1


def test_sparsity_run_records_block_counts(sparsity_workload, tmp_path):
    out = tmp_path / "s.h5"
    assert _explore(sparsity_workload, out) == 0
    run = results.open(out)
    ind = run.individuals
    assert ind["blocks_created"].shape == (run.count, 5)
    assert np.all(ind["blocks_total"] == ind["blocks_total"][0])
    assert np.all(ind["blocks_created"] + ind["blocks_already"] <= ind["blocks_total"])
    assert np.allclose(ind["cost"], ind["blocks_created"].sum(axis=1) / 200)
    assert ind["blocks_created"].sum() > 0
    zero = np.all(ind["params"] == 0, axis=1)
    assert np.all(ind["blocks_created"][zero] == 0)


def test_same_seed_same_run_and_other_seed_differs(tmp_path):
    runs = []
    for seed, name in ((3, "a"), (3, "b"), (4, "c")):
        data = tiny_workload_dict("quantization", tmp_path)
        data["workload"]["seed"] = seed
        out = tmp_path / f"{name}.h5"
        assert _explore(write_workload(tmp_path, data, f"{name}.yaml"), out, "--skip-baseline") == 0
        runs.append(results.open(out).individuals)
    assert np.array_equal(runs[0]["genome"], runs[1]["genome"])
    assert np.array_equal(runs[0]["objectives"], runs[1]["objectives"])
    assert not np.array_equal(runs[0]["genome"], runs[2]["genome"])


def test_resume_of_a_finished_run_evaluates_nothing_again(quant_workload, tmp_path):
    out = tmp_path / "r.h5"
    assert _explore(quant_workload, out) == 0
    before = results.open(out)
    assert main(["explore", "--resume", str(out)]) == 0  # workload taken from the file
    after = results.open(out)
    assert after.count == before.count
    assert len(after.baseline["label"]) == len(before.baseline["label"])
    assert len(after.generations["evaluated"]) == 2


def test_resume_with_a_different_workload_is_refused(quant_workload, sparsity_workload, tmp_path, capsys):
    out = tmp_path / "r.h5"
    assert _explore(quant_workload, out, "--skip-baseline") == 0
    assert main(["explore", str(sparsity_workload), "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "different workload" in err and "problem.problem_function" in err  # it says which keys differ


def _rows(path: Path) -> list[tuple]:
    ind = results.open(path).individuals
    return [(genome_key(g), int(gen), float(a), float(c)) for g, gen, a, c in
            zip(ind["genome"], ind["generation"], ind["accuracy"], ind["cost"])]


def test_finished_run_extended_equals_a_longer_fresh_run(quant_workload, tmp_path, capsys):
    short, fresh = tmp_path / "short.h5", tmp_path / "fresh.h5"
    assert _explore(quant_workload, short, "--skip-baseline") == 0  # 2 generations
    stored = len(_rows(short))
    assert main(["explore", "--resume", str(short), "--generations", "4", "--verbose"]) == 0
    evaluated = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gen ")]
    assert _explore(quant_workload, fresh, "--skip-baseline", "--generations", "4") == 0
    assert _rows(short) == _rows(fresh)  # row for row, the same individuals and scores
    assert len(evaluated) == len(_rows(fresh)) - stored  # only the new genomes were evaluated
    assert results.open(short).generations.rows == 4

    data = quant_workload.read_text().replace("generations: 2", "generations: 5")  # the file's generations
    assert data != quant_workload.read_text()
    longer = tmp_path / "longer.yaml"
    longer.write_text(data)
    assert main(["explore", str(longer), "--resume", str(short)]) == 0  # only the generations differ: extended
    assert results.open(short).generations.rows == 5
    other = tmp_path / "other.yaml"
    other.write_text(data.replace("pop_size: 6", "pop_size: 8"))
    assert main(["explore", str(other), "--resume", str(short)]) == 2
    assert "exploration.nsga.pop_size" in capsys.readouterr().err
    assert main(["explore", "--resume", str(short), "--generations", "3"]) == 2  # a run cannot be shortened
    err = capsys.readouterr().err
    assert f"--generations 3: {short} already holds 5 generations" in err and "Traceback" not in err
    assert main(["explore", str(quant_workload), "--resume", str(short)]) == 2  # the file's 2 generations
    assert "exploration.nsga.generations: 2 in" in capsys.readouterr().err
    assert results.open(short).generations.rows == 5


def _wait_for_rows(path: Path, rows: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        if path.exists():
            try:
                with h5py.File(path, "r", libver="latest", swmr=True) as f:
                    if int(f["individuals/count"][()]) >= rows:
                        return
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"{path} never reached {rows} rows")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_the_same_result(tmp_path, sig):
    data = tiny_workload_dict("quantization", tmp_path, generations=30)  # long enough to be caught mid-run
    workload = write_workload(tmp_path, data)
    reference = tmp_path / "reference.h5"
    assert _explore(workload, reference) == 0

    out = tmp_path / "killed.h5"
    # restore SIGINT in the child: a shell that started the test run in the background may have ignored it
    proc = subprocess.Popen([sys.executable, "-m", "qsx_batch.cli", "explore", str(workload), "-o", str(out)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_rows(out, 9, proc)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and f"qsx-batch explore --resume {out}" in err
        with h5py.File(out, "r") as f:  # closed cleanly: plain readers work
            assert int(f["individuals/count"][()]) >= 9
    stored = results.open(out).count  # a killed writer's file is still readable (SWMR)
    assert stored >= 9

    assert main(["explore", str(workload), "--resume", str(out)]) == 0
    resumed, full = results.open(out), results.open(reference)
    assert len(set(_genomes(out))) == resumed.count  # nothing evaluated twice
    assert _genomes(out) == _genomes(reference)
    assert np.array_equal(resumed.individuals["objectives"], full.individuals["objectives"])
    assert np.array_equal(resumed.generations["population"], full.generations["population"])


def test_resume_fills_in_missing_baseline_rows(quant_workload, tmp_path):
    out = tmp_path / "b.h5"
    assert _explore(quant_workload, out, "--skip-baseline") == 0
    stored = results.open(out).baseline
    assert list(zip(stored["label"], stored["dataset"])) == [("fp32", "exploration")]  # needed for the constraint
    assert main(["explore", "--resume", str(out)]) == 0
    labels = set(zip(results.open(out).baseline["label"], results.open(out).baseline["dataset"]))
    assert labels == {("fp32", "exploration"), ("fp32", "baseline"), ("all_8_bit", "exploration"),
                      ("all_8_bit", "baseline")}
