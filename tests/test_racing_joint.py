"""Racing evaluation and the joint quantization + sparsity problem, on real tiny runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_workload_dict, write_workload

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.errors import UserError
from qsx_batch.evaluation.assembly import build_problem, prepare_evaluator
from qsx_batch.evaluation.racing import RaceContext, discordance, pack_hits, paired_worse, stage_sizes, wilson_bounds
from qsx_batch.workload import load_workload


def test_wilson_interval_hand_computed():
    low, high = wilson_bounds(np.array(50), np.array(100), 1.6449)  # centre 0.5, half width 0.08116
    assert low == pytest.approx(0.41884, abs=1e-4) and high == pytest.approx(0.58116, abs=1e-4)
    assert tuple(map(float, wilson_bounds(np.array(0), np.array(0), 1.2816))) == (0.0, 1.0)


def test_sign_test_on_discordant_labels_hand_computed():
    # 0 wins in 5 discordant labels: Wilson upper bound (z = 1.6449) 0.351 < 1/2; 2 of 5: 0.76
    assert paired_worse(np.array(0), np.array(5), 1.6449) and not paired_worse(np.array(2), np.array(5), 1.6449)
    assert not paired_worse(np.array(0), np.array(0), 1.6449)  # no disagreement: no evidence
    x, ref = np.array([1, 0, 0, 1, 1, 0], bool), np.array([1, 1, 1, 0, 1, 0], bool)
    wins, losses = discordance(x, ref, np.array([2, 6]))
    assert list(wins) == [0, 1] and list(losses) == [1, 2]


def test_auto_stages_follow_the_previous_generation():
    """stages: auto puts an early check where the last generation had hopeless individuals, and none where every
    individual was close to the front (each check would only widen the others' intervals)."""
    front = np.array([[10.0, 0.95]])
    hopeless = RaceContext(None, 0.95, 0.9, front, False, history=np.array([[5.0, 0.3]] * 20 + [[20.0, 0.95]] * 4))
    sizes, confidence = hopeless.plan(1000, 125)
    assert sizes[0] == 125 and sizes[-1] == 1000 and confidence == pytest.approx(1 - 0.05 / (len(sizes) - 1))
    close = RaceContext(None, 0.95, 0.9, front, False, history=np.array([[5.0, 0.94], [20.0, 0.949]] * 12))
    assert close.plan(1000, 125) == ([1000], 0.95)
    first = RaceContext(None, 0.95, 0.9, front, False)  # generation 0: the default checks, Bonferroni over three
    assert first.plan(1000, 125) == ([125, 250, 500, 1000], pytest.approx(1 - 0.05 / 3))
    assert RaceContext((0.5,), 0.9, None, front, False).plan(1000, 125) == ([500, 1000], 0.9)


def test_paired_comparison_stops_what_an_interval_cannot(quant_workload):
    """Two settings of one network disagree on few samples: compared label by label with a front point, a
    slightly worse and costlier setting stops early where its Wilson interval alone never excludes it."""
    evaluator = prepare_evaluator(load_workload(quant_workload), torch.device("cpu"))
    evaluator.samples["exploration"].batch_size = 25
    reference = evaluator.evaluate(np.full(10, 6.0), race=RaceContext((1.0,), 0.95, None, np.zeros((0, 2)), False))
    assert reference.hits.shape == (200,) and reference.hits.sum() == reference.correct
    worse = np.array([2, 2, 6, 6, 6, 6, 6, 2, 6, 6], dtype=float)  # 0.92 against 0.945 on the 200 samples
    front = np.array([[0.0, reference.accuracy]])
    every_batch = tuple(np.arange(1, 8) / 8)
    unpaired = evaluator.evaluate(worse, race=RaceContext(every_batch, 0.95, None, front, False))
    paired = evaluator.evaluate(worse, race=RaceContext(every_batch, 0.95, None, front, False,
                                                        front_hits=(pack_hits(reference.hits),)))
    assert unpaired.status == "ok" and unpaired.samples == 200
    assert paired.status == "raced_out" and paired.error == "dominated" and paired.samples < 100
    assert paired.hits.shape == (paired.samples,)


def test_stage_sizes_follow_whole_batches():
    assert stage_sizes([0.125, 0.25, 0.5, 1.0], 1000, 125) == [125, 250, 500, 1000]
    assert stage_sizes([0.125, 0.25, 0.5, 1.0], 1000, 500) == [500, 1000]
    assert stage_sizes([0.3], 200, 50) == [100, 200]


def test_race_stops_hopeless_individuals_and_keeps_good_ones(quant_workload):
    evaluator = prepare_evaluator(load_workload(quant_workload), torch.device("cpu"))
    evaluator.samples["exploration"].batch_size = 25
    race = RaceContext((0.125, 0.25, 0.5, 1.0), 0.95, 0.9, np.zeros((0, 2)), False)
    bad = evaluator.evaluate(np.full(10, 2.0), race=race)
    assert bad.status == "raced_out" and bad.samples == 25 and bad.ci_high < 0.9
    good = evaluator.evaluate(np.full(10, 8.0), race=race)
    plain = evaluator.evaluate(np.full(10, 8.0))
    assert good.status == "ok" and good.samples == 200
    assert (good.accuracy, good.correct, good.cost) == (plain.accuracy, plain.correct, plain.cost)
    front = np.array([[20.0, 0.9]])  # cheaper (20 <= 24 bits) and provably more accurate than this 2/4-bit setting
    dominated = evaluator.evaluate(np.full(10, 4.0) - 2 * (np.arange(10) < 8),
                                   race=RaceContext((0.125, 1.0), 0.95, None, front, False))
    assert dominated.status == "raced_out" and dominated.error == "dominated"


def test_racing_run_matches_full_run_on_fully_evaluated_individuals(tmp_path):
    runs = {}
    for racing in (False, True):
        data = tiny_workload_dict("quantization", tmp_path, generations=3)
        data["workload"]["exploration"]["datasets"]["exploration"]["batch_size"] = 25
        data["workload"]["exploration"]["racing"] = {"enabled": racing, "stages": [0.125, 0.5]}
        out = tmp_path / f"racing-{racing}.h5"
        assert main(["explore", str(write_workload(tmp_path, data, f"r{racing}.yaml")), "-o", str(out)]) == 0
        runs[racing] = results.open(out)
    full, raced = runs[False].individuals, runs[True].individuals
    assert np.array_equal(full["genome"][:6], raced["genome"][:6])  # same first generation
    evaluator = prepare_evaluator(load_workload(tmp_path / "rTrue.yaml"), torch.device("cpu"))
    complete = np.flatnonzero(raced["status"] == "ok")
    assert len(complete) >= 1
    for i in complete:  # every fully evaluated individual is bit-identical to a plain evaluation
        plain = evaluator.evaluate(raced["genome"][i])
        assert [plain.accuracy, plain.cost] == raced["objectives"][i].tolist()
    out = raced["status"] == "raced_out"
    assert np.all(raced["samples"][out] < 200) and np.all(raced["samples"][~out] == 200)
    # a raced-out individual never competes with an optimistic bound: infeasible, at its lower bound
    assert np.all(raced["constraint"][out] > 0) and np.array_equal(raced["fitness"][out][:, 0], -raced["ci_low"][out])
    assert out.any(), "the 2-bit-heavy first generation should race some individuals out"
    assert raced["samples"].sum() < full["samples"].sum()


@pytest.mark.parametrize("racing,needle", [
    ({"stages": [0.5, 0.25]}, "strictly increasing"),
    ({"stages": [0.5, 1.5]}, "(0, 1]"),
    ({"confidence": 1.0}, "less than 1"),
])
def test_bad_racing_settings(tmp_path, capsys, racing, needle):
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["exploration"]["racing"] = {"enabled": True, **racing}
    assert main(["validate", str(write_workload(tmp_path, data))]) == 2
    assert needle in capsys.readouterr().err


def _joint_workload(tmp_path, **extra):
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["problem"]["problem_function"] = "joint_problem"
    data["workload"]["exploration"]["extra_args"].update(
        {"discrete_threshold_steps": 16, "threshold_limit": 1.5, "block_size": 4, **extra})
    return write_workload(tmp_path, data, "joint.yaml")


def test_joint_problem_cost_counts_macs_on_nonzero_tiles(tmp_path):
    workload = load_workload(_joint_workload(tmp_path))
    evaluator = prepare_evaluator(workload, torch.device("cpu"))
    problem = evaluator.problem
    assert len(problem.gene_names) == 15 and problem.gene_names[0] == "conv1.input.bits"
    bits = np.full(10, 4.0)
    dense = evaluator.evaluate(np.concatenate([bits, np.zeros(5)]))
    plain_bitops = sum(layer.macs * 16 for layer in problem.layers)
    nonzero = 1 - dense.blocks_already / dense.blocks_total
    assert dense.cost == pytest.approx(sum(layer.macs * 16 * s for layer, s in zip(problem.layers, nonzero)))
    assert dense.cost <= plain_bitops
    sparse = evaluator.evaluate(np.concatenate([bits, np.full(5, 10.0)]))
    assert sparse.blocks_created.sum() > 0 and sparse.cost < dense.cost
    assert np.allclose(sparse.params[10:], 1.0) and np.all(sparse.params[:10] == 4)


def test_joint_problem_needs_discrete_thresholds(tmp_path):
    with pytest.raises(UserError, match="discrete thresholds"):
        build_problem(load_workload(_joint_workload(tmp_path, discrete_threshold_method="continuous")),
                      torch.device("cpu"))


def test_joint_exploration_runs_end_to_end(tmp_path):
    out = tmp_path / "joint.h5"
    assert main(["explore", str(_joint_workload(tmp_path)), "-o", str(out)]) == 0
    run = results.open(out)
    assert run.header.problem == "joint_problem" and run.header.cost_name == "effective_bitops"
    assert run.individuals["params"].shape[1] == 15 and len(run.pareto()) >= 1
