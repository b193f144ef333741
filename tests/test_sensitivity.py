"""qsx-batch sensitivity and exploration.initial_population: real sweeps of the embedded LeNet-5, stored in real
results files, evaluated locally and as SLURM array jobs, and the search started from them."""

from __future__ import annotations

import csv
import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import tiny_workload_dict, write_workload

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.evaluation.assembly import prepare_evaluator
from qsx_batch.evaluation.record import genome_key
from qsx_batch.workload import load_workload

QUANT_GENES = 10  # LeNet-5: five layers, an input and a weight quantizer each
BITS = np.arange(2, 9)


def keys(table) -> list[tuple]:
    return [genome_key(g) for g in table["genome"]]


def full_sweep(data: dict, **settings) -> dict:
    data["workload"]["exploration"]["sensitivity"] = {"sweep": "full", **settings}
    return data


@pytest.fixture
def swept(tmp_path):
    """A full sweep of the tiny quantization workload in a new results file."""
    workload = write_workload(tmp_path, full_sweep(tiny_workload_dict("quantization", tmp_path)))
    out = tmp_path / "sweep.h5"
    assert main(["sensitivity", str(workload), "-o", str(out)]) == 0
    return workload, out


def test_sweep_varies_one_gene_from_the_neutral_genome(swept):
    workload, out = swept
    run = results.open(out)
    table = run.table("sensitivity")
    assert table.rows == 1 + QUANT_GENES * (len(BITS) - 1)
    assert set(table["status"]) == {"ok"} and len(set(keys(table))) == table.rows  # every genome once
    neutral = np.full(QUANT_GENES, 8.0)
    for gene, value, parameter, genome in zip(table["swept_gene"], table["swept_value"], table["swept_parameter"], table["genome"]):
        if gene < 0:
            assert np.array_equal(genome, neutral) and np.isnan(value)
            continue
        changed = np.flatnonzero(genome != neutral)
        assert list(changed) == [gene] and genome[gene] == value == parameter and value in BITS[:-1]
    # the stored accuracy is what the evaluator gives for that genome on the same samples
    evaluator = prepare_evaluator(load_workload(workload), torch.device("cpu"))
    row = int(np.flatnonzero((table["swept_gene"] == 0) & (table["swept_value"] == 2))[0])
    assert evaluator.evaluate(table["genome"][row]).accuracy == table["accuracy"][row]

    sweep = run.sensitivity()
    params, accuracy = sweep.curve(run.gene_names.index("fc3.input"))
    assert list(params) == list(BITS) and accuracy[-1] == sweep.reference_accuracy
    assert accuracy[0] < sweep.reference_accuracy - 0.2  # 2-bit logits' input hurts: a real effect


def test_inspect_plot_and_resume_of_a_sweep(swept, capsys, tmp_path):
    workload, out = swept
    capsys.readouterr()
    assert main(["inspect", str(out), "--sensitivity"]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.strip().startswith("bits"))
    assert header.split()[1:] == [str(b) for b in BITS]
    assert sum(line.strip().startswith(("conv", "fc")) for line in text.splitlines()) >= QUANT_GENES
    assert main(["plot", str(out), "--out", str(tmp_path / "plots"), "--formats", "png"]) == 0
    assert (tmp_path / "plots" / "sweep-sensitivity.png").stat().st_size > 10_000

    before = results.open(out).table("sensitivity")
    assert main(["sensitivity", "--resume", str(out)]) == 0  # complete: nothing is evaluated again
    after = results.open(out).table("sensitivity")
    assert after.rows == before.rows and np.array_equal(after["finished_at"], before["finished_at"])


def test_sweep_of_a_finished_run_reuses_its_evaluations(tmp_path):
    data = tiny_workload_dict("quantization", tmp_path)
    aggressive = [2] + [8] * (QUANT_GENES - 1)  # the adaptive sweep's first point of gene 0
    data["workload"]["exploration"]["initial_population"] = [aggressive]
    out = tmp_path / "run.h5"
    assert main(["explore", str(write_workload(tmp_path, data)), "-o", str(out)]) == 0
    assert main(["sensitivity", "--resume", str(out)]) == 0
    run = results.open(out)
    sweep = run.table("sensitivity")
    reference = int(np.flatnonzero(sweep["swept_gene"] == -1)[0])
    base = run.baseline
    all8 = int(np.flatnonzero((base["label"] == "all_8_bit") & (base["dataset"] == "exploration"))[0])
    # the neutral genome is evaluated again for its per-label hits, with the baseline's result
    assert sweep["accuracy"][reference] == base["accuracy"][all8]
    assert sweep["correct"][reference] == base["correct"][all8]
    # the run's individual is copied, not evaluated again; it has no hits to compare, so its discordance is unknown
    copied = keys(sweep).index(genome_key(np.array(aggressive, dtype=float)))
    assert sweep["eval_seconds"][copied] == run.individuals["eval_seconds"][0]  # listed first, evaluated first
    assert sweep["discordant"][copied] == -1 and sweep["labels"][copied] == 0
    evaluated = np.flatnonzero((sweep["swept_gene"] >= 0) & (sweep["status"] == "ok"))
    evaluated = evaluated[evaluated != copied]
    assert len(evaluated) and np.all(sweep["labels"][evaluated] == sweep["samples"][evaluated])
    assert np.all((sweep["discordant"][evaluated] >= 0) & (sweep["discordant"][evaluated] <= sweep["labels"][evaluated]))
    assert run.generations.rows == 2  # the run itself is unchanged


def test_sparsity_sweep_over_thresholds(tmp_path):
    data = full_sweep(tiny_workload_dict("sparsity", tmp_path), points=4)
    workload = write_workload(tmp_path, data)
    out = tmp_path / "sparse.h5"
    assert main(["sensitivity", str(workload), "-o", str(out)]) == 0
    run = results.open(out)
    table, sweep = run.table("sensitivity"), run.sensitivity()
    genes = len(run.gene_names)
    assert table.rows == 1 + genes * 3  # 4 points per gene, one of them the neutral zero threshold
    assert np.all(table["genome"][table["swept_gene"] == -1] == 0)
    assert np.all(sweep.neutral_parameters == 0)
    swept_rows = table["swept_gene"] >= 0
    assert np.all(table["swept_parameter"][swept_rows] > 0) and np.all(table["cost"][swept_rows] >= 0)
    assert table["cost"][table["swept_gene"] == -1][0] == 0  # nothing is zeroed at the neutral genome
    params, accuracy = sweep.curve(0)
    assert len(params) == 4 and params[0] == 0


def test_explore_starts_from_the_sensitivity_sweep(tmp_path):
    data = tiny_workload_dict("quantization", tmp_path, generations=3)
    data["workload"]["exploration"]["initial_population"] = "sensitivity"
    data["workload"]["exploration"]["sensitivity"] = {"loss_budgets": [0.01, 0.05, 0.2]}
    data["workload"]["exploration"]["predefined_parameters"] = [8]  # the sweep's reference genome, met in gen 0
    workload = write_workload(tmp_path, data)
    out = tmp_path / "run.h5"
    assert main(["explore", str(workload), "-o", str(out), "--skip-baseline"]) == 0
    run = results.open(out)
    sweep_table, ind = run.table("sensitivity"), run.individuals
    assert QUANT_GENES < sweep_table.rows < 1 + QUANT_GENES * (len(BITS) - 1)  # adaptive: not every point
    derived = run.sensitivity().starting_genomes(_problem(workload), [0.01, 0.05, 0.2])
    assert 1 <= len(derived) <= 3 * 3  # per price and budget
    gen0 = {genome_key(g) for g in ind["genome"][ind["generation"] == 0]}
    assert {genome_key(g) for g in derived} <= gen0  # generation 0 holds the derived individuals
    assert np.sum(ind["generation"] == 0) == 6 + len(derived) + 1  # besides the random ones
    # no genome is evaluated twice: what the search met from the sweep is copied (same timing and samples)
    swept_rows = {k: i for i, k in enumerate(keys(sweep_table))}
    met = [(i, swept_rows[k]) for i, k in enumerate(keys(ind)) if k in swept_rows]
    assert len(met) >= 1
    for i, j in met:
        assert ind["eval_seconds"][i] == sweep_table["eval_seconds"][j]
        assert ind["accuracy"][i] == sweep_table["accuracy"][j]
    # the sweep counts in the budget: seconds and samples of the sweep's genomes the search did not take over
    unmet = [j for k, j in swept_rows.items() if k not in set(keys(ind)) or sweep_table["status"][j] != "ok"]
    gens = run.generations
    assert gens["samples"][-1] == np.sum(ind["samples"]) + np.sum(sweep_table["samples"][unmet])
    assert np.isclose(gens["eval_seconds"][-1], np.sum(ind["eval_seconds"]) + np.sum(sweep_table["eval_seconds"][unmet]))


def _explore(tmp_path, problem: str, start: str | None, name: str):
    data = tiny_workload_dict(problem, tmp_path, generations=1)
    if start is None:
        del data["workload"]["exploration"]["initial_population"]  # the default: auto
    else:
        data["workload"]["exploration"]["initial_population"] = start
    out = tmp_path / f"{name}.h5"
    assert main(["explore", str(write_workload(tmp_path, data, f"{name}.yaml")), "-o", str(out),
                 "--skip-baseline"]) == 0
    return out


def _as_an_older_empty_file(path):
    """The run's file as a version from before initial_population: auto wrote it, with nothing stored yet."""
    with h5py.File(path, "a") as f:
        del f.attrs["initial_population"]
        for name in ("sensitivity", "individuals", "generations"):
            f[name]["count"][()] = 0
    assert results.open(path).header.initial_population == ""


def test_auto_starts_quantization_from_the_sweep_and_sparsity_at_random_and_a_run_keeps_its_start(tmp_path):
    starts = {}
    for problem in ("quantization", "sparsity"):
        run = results.open(_explore(tmp_path, problem, None, problem))
        starts[problem] = (run.header.initial_population, run.table("sensitivity").rows > 0)
    assert starts == {"quantization": ("sensitivity", True), "sparsity": ("random", False)}

    # files from before auto: a workload without the key started at random, one naming sensitivity from the sweep;
    # resumed, each starts as it did
    named = _explore(tmp_path, "quantization", "sensitivity", "named")
    for path, swept in ((tmp_path / "quantization.h5", False), (named, True)):
        _as_an_older_empty_file(path)
        assert main(["explore", "--resume", str(path), "--skip-baseline"]) == 0
        run = results.open(path)
        assert (run.table("sensitivity").rows > 0) == swept and run.generations.rows == 1
        assert (np.sum(run.individuals["generation"] == 0) > 6) == swept  # more than pymoo's random ones


def test_a_sweep_on_a_share_of_the_samples_is_scored_again_by_the_search(tmp_path):
    data = tiny_workload_dict("quantization", tmp_path, generations=2)
    data["workload"]["exploration"]["initial_population"] = "sensitivity"
    data["workload"]["exploration"]["sensitivity"] = {"sample_fraction": 0.5}
    data["workload"]["exploration"]["predefined_parameters"] = [8]  # the sweep's reference genome, met in gen 0
    out = tmp_path / "run.h5"
    assert main(["explore", str(write_workload(tmp_path, data)), "-o", str(out), "--skip-baseline"]) == 0
    run = results.open(out)
    sweep, ind = run.table("sensitivity"), run.individuals
    ok, raced = sweep["status"] == "ok", sweep["status"] == "raced_out"
    assert np.all(sweep["samples"][ok] == 125)  # half of the 200 samples, rounded up to one batch of 125
    assert np.all(sweep["samples"][raced] < 125)
    swept = (sweep["swept_gene"] >= 0) & ok
    assert swept.any() and np.all(sweep["labels"][swept] == 125)  # compared with the reference on the same share
    reference = keys(sweep)[int(np.flatnonzero(sweep["swept_gene"] == -1)[0])]
    assert ind["samples"][keys(ind).index(reference)] == 200  # met by the search: scored again, on every sample
    assert np.all(ind["samples"][ind["status"] == "ok"] == 200)
    gens = run.generations  # every sweep point counts in the budget
    assert gens["samples"][-1] == np.sum(ind["samples"]) + np.sum(sweep["samples"])


def _problem(workload):
    return prepare_evaluator(load_workload(workload), torch.device("cpu")).problem


def test_initial_population_list_and_csv(tmp_path, capsys):
    data = tiny_workload_dict("quantization", tmp_path)
    first = [[4] * QUANT_GENES, [8, 6, 5, 4, 4, 3, 3, 4, 8, 8]]
    data["workload"]["exploration"]["initial_population"] = first
    workload = write_workload(tmp_path, data)
    out = tmp_path / "listed.h5"
    assert main(["explore", str(workload), "-o", str(out), "--skip-baseline"]) == 0
    ind = results.open(out).individuals
    assert [list(g) for g in ind["genome"][:2]] == first  # enqueued first, evaluated before the random ones

    csv_file = tmp_path / "front.csv"
    assert main(["inspect", str(out), "--pareto", "--csv", str(csv_file)]) == 0
    with open(csv_file) as f:
        front = [row for row in csv.DictReader(f)]
    data["workload"]["exploration"]["initial_population"] = "front.csv"  # relative to the workload file
    workload = write_workload(tmp_path, data, "from_csv.yaml")
    again = tmp_path / "from_csv.h5"
    assert main(["explore", str(workload), "-o", str(again), "--skip-baseline"]) == 0
    gene_names = results.open(again).gene_names
    expected = [[float(row[name]) for name in gene_names] for row in front]
    assert [list(g) for g in results.open(again).individuals["genome"][: len(front)]] == expected

    # the spec keeps the path as written, so a copy of workload and CSV in another folder resumes the run
    assert load_workload(workload).spec.exploration.initial_population == "front.csv"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(csv_file, elsewhere / "front.csv")
    copied = shutil.copy(workload, elsewhere / "from_csv.yaml")
    assert main(["explore", str(copied), "--resume", str(again), "--generations", "3"]) == 0
    assert results.open(again).generations.rows == 3
    (elsewhere / "front.csv").unlink()  # read from the copy's folder, not from where the run started
    assert main(["explore", str(copied), "--resume", str(again), "--generations", "4"]) == 2
    assert f"cannot read {elsewhere / 'front.csv'}" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [
    ([[4] * 3], "individual 0 has 3 parameters; give one per gene"),
    ([[9] * QUANT_GENES], "value 9 is not a bit width from num_bits_lower_limit 2 to num_bits_upper_limit 8"),
    ("missing.csv", "cannot read"),
    ("nocolumns.csv", "has no column for gene(s) conv1.input"),
    ("genetic", "'genetic' is none of auto, random, sensitivity"),
])
def test_bad_initial_population_is_one_clear_error(tmp_path, capsys, value, message):
    (tmp_path / "nocolumns.csv").write_text("index,accuracy\n0,0.9\n")
    data = tiny_workload_dict("quantization", tmp_path)
    data["workload"]["exploration"]["initial_population"] = value
    workload = write_workload(tmp_path, data)
    for command in (["validate", str(workload)], ["explore", str(workload), "-o", str(tmp_path / "x.h5")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.h5").exists()  # refused before a results file exists


def test_sensitivity_as_array_jobs_matches_local(slurm, swept, tmp_path):
    workload, local = swept
    remote = tmp_path / "remote.h5"
    assert main(["sensitivity", str(workload), "-o", str(remote), "--partition", "cpu", "--gpus-per-task", "0",
                 "--individuals-per-task", "16", "--threads", "1"]) == 0
    here, there = results.open(local).table("sensitivity"), results.open(remote).table("sensitivity")
    by_key = {k: i for i, k in enumerate(keys(here))}
    assert set(by_key) == set(keys(there))
    for j, k in enumerate(keys(there)):
        assert there["correct"][j] == here["correct"][by_key[k]]  # the same genomes on the same samples
    assert all(there["slurm_job_id"]) and len({job.split("_")[0] for job in there["slurm_job_id"]}) == 1


def test_launch_starts_from_a_sweep_evaluated_as_array_jobs(slurm, tmp_path):
    data = tiny_workload_dict("quantization", tmp_path, pop_size=4, offsprings=4, generations=1)
    data["workload"]["exploration"]["initial_population"] = "sensitivity"
    data["workload"]["exploration"]["sensitivity"] = {"points": 3, "loss_budgets": [0.0, 0.05]}
    workload = write_workload(tmp_path, data)
    out = tmp_path / "launched.h5"
    assert main(["launch", str(workload), "-o", str(out), "--skip-baseline", "--partition", "cpu",
                 "--gpus-per-task", "0", "--individuals-per-task", "8", "--threads", "1"]) == 0
    run = results.open(out)
    sweep = run.table("sensitivity")
    assert sweep.rows <= 1 + QUANT_GENES * 2  # 3 points per gene: 2, 5 and the neutral 8; adaptive: in rounds
    assert np.all(sweep["swept_value"][sweep["swept_gene"] >= 0] != 8)
    assert np.sum(sweep["swept_value"] == 2) == QUANT_GENES  # every gene's most aggressive value, first round
    assert set(sweep["status"]) <= {"ok", "raced_out"} and all(sweep["slurm_job_id"])
    derived = run.sensitivity().starting_genomes(_problem(workload), [0.0, 0.05])
    gen0 = {genome_key(g) for g in run.individuals["genome"][run.individuals["generation"] == 0]}
    assert len(derived) and {genome_key(g) for g in derived} <= gen0
    assert not list((tmp_path / "launched.jobs").glob("shards-*/sensitivity"))  # merged, then cleaned up


def test_adaptive_sweep_evaluates_only_what_a_budget_could_use(tmp_path):
    workload = write_workload(tmp_path, tiny_workload_dict("quantization", tmp_path))  # default: adaptive
    out = tmp_path / "adaptive.h5"
    assert main(["sensitivity", str(workload), "-o", str(out)]) == 0
    run = results.open(out)
    table, sweep = run.table("sensitivity"), run.sensitivity()
    floor = sweep.reference_accuracy - 0.05  # the largest default loss budget
    raced = table["status"] == "raced_out"
    assert set(table["status"]) <= {"ok", "raced_out"} and len(set(keys(table))) == table.rows
    assert np.all(table["samples"][raced] < 200) and np.all(table["accuracy"][raced] < floor)  # upper bound too
    assert set(table["error"][raced]) == {"below the accuracy constraint"} and raced.any()
    assert np.all(table["samples"][~raced] == 200)
    for gene in range(QUANT_GENES):
        values = list(table["swept_value"][table["swept_gene"] == gene])
        assert values == list(range(2, 2 + len(values)))  # from the most aggressive value toward neutral
        lost = [sweep.loss_at(gene, v, "lost_labels") for v in values]
        assert not any(share <= 0 for share in lost[:-1])  # it stops at the first value that loses no label
        assert lost[-1] <= 0 or values[-1] == 7
    assert table.rows < 1 + QUANT_GENES * (len(BITS) - 1)
    assert main(["sensitivity", "--resume", str(out)]) == 0  # complete: nothing is evaluated again
    assert results.open(out).table("sensitivity").rows == table.rows

    # the starting individuals cost what those of the full sweep cost: what it skipped is never a budget's cheapest
    # choice (settings of equal cost may differ)
    full = tmp_path / "full.h5"
    assert main(["sensitivity", str(write_workload(tmp_path, full_sweep(tiny_workload_dict("quantization", tmp_path)),
                                                   "full.yaml")), "-o", str(full)]) == 0
    budgets = [0.0, 0.002, 0.005, 0.01, 0.02, 0.05]
    problem = _problem(workload)

    def costs(genomes):
        return sorted({problem.cost(problem.decode(g), np.zeros(len(problem.layers)), 1) for g in genomes})

    exact = ("loss", "lost_labels")  # the changed-labels price chooses among the values swept
    assert costs(sweep.starting_genomes(problem, budgets, exact)) == costs(
        results.open(full).sensitivity().starting_genomes(problem, budgets, exact))
    assert np.sum(table["samples"]) < np.sum(results.open(full).table("sensitivity")["samples"]) * 0.8


class _Problem:
    """What the knapsack reads of a problem: the neutral genome and the cost's direction."""

    def __init__(self, neutral, maximize_cost):
        self.neutral, self.maximize_cost = np.asarray(neutral, dtype=float), maximize_cost

    def neutral_genome(self):
        return self.neutral.copy()


@pytest.mark.parametrize("maximize_cost", [False, True])
def test_starting_genomes_solve_the_knapsack_exactly(maximize_cost):
    """The derived genome of each budget has the best summed cost change of all value combinations whose summed
    single-gene losses fit (exhaustive search over 4 genes x (neutral + 3 values))."""
    from itertools import product

    from qsx_batch.results.sensitivity import Sensitivity

    rng = np.random.default_rng(3)
    genes, values, neutral = 4, [2.0, 4.0, 6.0], [8.0] * 4
    loss = rng.integers(0, 30, size=(genes, 3)) / 1000  # multiples of 0.001: exact on the knapsack's grid
    cost = 10.0 + rng.normal(0, 3, size=(genes, 3))
    rows = [(g, v, 0.9 - loss[g, i], cost[g, i]) for g in range(genes) for i, v in enumerate(values)]
    table = {"swept_gene": np.array([-1] + [r[0] for r in rows]), "swept_value": np.array([np.nan] + [r[1] for r in rows]),
             "swept_parameter": np.array([np.nan] + [r[1] for r in rows]),
             "accuracy": np.array([0.9] + [r[2] for r in rows]), "cost": np.array([12.0] + [r[3] for r in rows]),
             "status": np.array(["ok"] * (1 + len(rows))), "params": np.full((1 + len(rows), genes), 8.0)}
    sweep = Sensitivity.from_table(table, [f"g{i}" for i in range(genes)])
    sign = -1 if maximize_cost else 1
    budgets = [0.0, 0.01, 0.03, 0.05]
    derived = sweep.starting_genomes(_Problem(neutral, maximize_cost), budgets)
    assert 1 <= len(derived) <= len(budgets)

    def score(choice):  # (summed loss, summed signed cost change); index 0 is neutral
        return (sum(loss[g, c - 1] for g, c in enumerate(choice) if c),
                sum(sign * (cost[g, c - 1] - 12.0) for g, c in enumerate(choice) if c))

    best = {b: min(c for spent, c in map(score, product(range(4), repeat=genes)) if spent <= b + 1e-12)
            for b in budgets}
    found = set()
    for genome in derived:
        choice = [0 if v == 8 else values.index(v) + 1 for v in genome]
        spent, change = score(choice)
        matches = [b for b in budgets if spent <= b + 1e-12 and abs(change - best[b]) < 1e-9]
        assert matches, f"{genome} is no budget's optimum"
        found.update(matches)
    assert found == {b for b in budgets if best[b] < 0}  # every budget that can save anything has its optimum


def test_knapsack_families_price_lost_and_changed_labels():
    """Three values that each lose nothing on average: one changes no label, one flips 20 of 400 labels both
    ways, one wins 14 and loses 1. The measured loss takes all three at budget 0; the lost-labels price takes the
    first and (1 lost label) the third at budget 0.0025, the second (10 lost) only at 0.05; the changed-labels
    price counts every flipped label (35 of 400 for both). A file without the label columns prices all at the measured loss."""
    from qsx_batch.results.sensitivity import Sensitivity

    table = {"swept_gene": np.array([-1, 0, 1, 2]), "swept_value": np.array([np.nan, 2.0, 2.0, 2.0]),
             "swept_parameter": np.array([np.nan, 2.0, 2.0, 2.0]), "accuracy": np.array([0.9, 0.9, 0.9, 0.9325]),
             "cost": np.array([12.0, 9.0, 9.0, 9.0]), "status": np.array(["ok"] * 4),
             "params": np.full((4, 3), 8.0), "discordant": np.array([-1, 0, 20, 15]),
             "labels": np.array([0, 400, 400, 400])}
    sweep = Sensitivity.from_table(table, ["g0", "g1", "g2"])
    prices = sweep.prices()
    assert prices["loss"][1:] == pytest.approx([0, 0, -0.0325])
    assert prices["lost_labels"][1:] == pytest.approx([0, 10 / 400, 1 / 400])
    assert prices["changed_labels"][1:] == pytest.approx([0, 20 / 400, 15 / 400])
    problem = _Problem([8.0] * 3, False)

    def derived(price, budgets):
        return {tuple(g) for g in sweep.starting_genomes(problem, budgets, (price,))}

    assert derived("loss", [0.0]) == {(2.0, 2.0, 2.0)}
    assert derived("lost_labels", [0.0, 0.0025, 0.05]) == {(2.0, 8.0, 8.0), (2.0, 8.0, 2.0), (2.0, 2.0, 2.0)}
    assert derived("changed_labels", [0.0, 0.04, 0.05]) == {(2.0, 8.0, 8.0), (2.0, 8.0, 2.0)}  # 0.0375 of 0.05
    assert (2.0, 2.0, 2.0) in derived("changed_labels", [0.09])
    assert len(sweep.starting_genomes(problem, [0.0, 0.0025, 0.05])) == 3  # the families together, each genome once
    plain = dict(table, discordant=np.full(4, -1), labels=np.zeros(4, dtype=int))  # a file without the columns
    assert {tuple(g) for g in Sensitivity.from_table(plain, ["g0", "g1", "g2"]).starting_genomes(
        problem, [0.0])} == {(2.0, 2.0, 2.0)}
