"""Search efficiency: racing, the joint problem, and the sensitivity head start, seeds 0-4.

Usage: python bench/search_efficiency.py [--seeds 0 1 2 3 4] [--generations G] [--only racing|joint|head-start]
       [--workloads lenet5 resnet8 resnet20] [--sample-fraction F] [--json out.json] [--keep DIR]

Racing: for each problem (quantization, sparsity) and seed the same number of generations twice (racing off and
on): final hypervolume, hypervolume per evaluation-second and per sample evaluated, the samples spent, and how many
points of the full run's final Pareto front the racing run misses. Joint: the joint problem once, counting its
front points with lower effective BitOps than any quantization-only front point of at least the same accuracy
(quantization-only individuals scored with zero thresholds under the joint cost).

Head start (issues 13, 20): for the embedded LeNet-5 quantization workload and the CIFAR-sized ResNet-8 and
ResNet-20 (trained here first on MNIST padded to 3x32x32, bench/mnist32.py), each seed runs the search twice, with
``initial_population: random`` and ``sensitivity``. Reported: the evaluation-seconds (the sensitivity sweep
included) the sensitivity start needs to reach the hypervolume the random start has at its last generation, as a
fraction of the random start's evaluation-seconds (median over seeds; target at most 0.5), and whether the final
hypervolume is not lower.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from qsx_batch import results
from qsx_batch.cli import main as qsx
from qsx_batch.evaluation.assembly import prepare_evaluator
from qsx_batch.evaluation.record import genome_key
from qsx_batch.workload import default_workload_path, load_workload

WORKLOADS = default_workload_path().parent


def _workload(tmp: Path, problem: str, seed: int, racing: bool, generations: int | None) -> Path:
    data = yaml.safe_load((WORKLOADS / f"lenet5_mnist_{problem}.yaml").read_text())
    w = data["workload"]
    w["seed"], w["results"] = seed, str(tmp)
    w["model"]["weights"] = str(WORKLOADS.parent / "weights" / "lenet5_mnist.pt")
    w["exploration"]["racing"] = {"enabled": racing}
    if generations:
        w["exploration"]["nsga"]["generations"] = generations
    path = tmp / f"{problem}-{seed}-{racing}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(tmp: Path, problem: str, seed: int, racing: bool, generations: int | None):
    out = tmp / f"{problem}-{seed}-{racing}.h5"
    if out.exists():  # --keep: a finished run of an earlier invocation is reused
        return results.open(out)
    if qsx(["explore", str(_workload(tmp, problem, seed, racing, generations)), "-o", str(out), "--skip-baseline"]):
        sys.exit(f"run {out} failed")
    return results.open(out)


def _front_keys(run) -> set:
    return {genome_key(run.individuals["genome"][r]) for r in run.pareto()}


def racing_table(tmp: Path, seeds: list[int], generations: int | None) -> list[dict]:
    rows = []
    for problem in ("quantization", "sparsity"):
        for seed in seeds:
            runs = {racing: _run(tmp, problem, seed, racing, generations) for racing in (False, True)}
            for racing, run in runs.items():
                g = run.generations
                rows.append({
                    "problem": problem, "seed": seed, "racing": racing,
                    "hypervolume": float(g["hypervolume"][-1]), "eval_seconds": float(g["eval_seconds"][-1]),
                    "samples": int(g["samples"][-1]),
                    "hv_per_second": float(g["hypervolume"][-1] / g["eval_seconds"][-1]),
                    "hv_per_msample": float(g["hypervolume"][-1] / g["samples"][-1] * 1e6),
                    "raced_out": int(np.sum(run.individuals["status"] == "raced_out")),
                    "front_points_missed": len(_front_keys(runs[False]) - _front_keys(run)) if racing else 0,
                })
    return rows


def joint_table(tmp: Path, generations: int | None) -> dict:
    joint = _run(tmp, "joint", 0, False, generations)
    quant = _run(tmp, "quantization", 0, False, generations)
    evaluator = prepare_evaluator(load_workload(tmp / "joint-0-False.yaml"), torch.device("cpu"), ("exploration",))
    n_layers = len(evaluator.problem.layers)
    quant_points = []
    for r in quant.pareto():
        result = evaluator.evaluate(np.concatenate([quant.individuals["genome"][r], np.zeros(n_layers)]))
        quant_points.append((result.accuracy, result.cost))
    better = []
    for r in joint.pareto():
        acc, cost = joint.individuals["objectives"][r]
        rivals = [c for a, c in quant_points if a >= acc]
        if not rivals or cost < min(rivals):
            better.append({"accuracy": float(acc), "effective_bitops": float(cost),
                           "best_quant_only_at_same_accuracy": float(min(rivals)) if rivals else None})
    return {"joint_front": int(len(joint.pareto())), "quant_front": len(quant_points), "joint_better": better,
            "joint_results": str(tmp / "joint-0-False.h5")}


BENCH = Path(__file__).resolve().parent
RESNET_POP, RESNET_GENERATIONS = 24, 20


def _resnet_workload(tmp: Path, model: str) -> dict:
    """A CIFAR ResNet (``resnet8``, ``resnet20``) on 3x32x32 digits; its weights are trained once (``qsx-batch
    train``) and kept in ``tmp``."""
    block = {"type": "mnist32:make", "batch_size": 128}
    weights = tmp / f"{model}_digits32.pt"
    data = {"workload": {
        "name": f"{model}_digits32_quantization", "seed": 0, "results": str(tmp),
        "problem": {"problem_function": "quantization_problem", "layer_types": ["Conv2d", "Linear"]},
        "model": {"type": model, "weights": str(weights)},
        "calibration": {"method": "max", "datasets": {"calibrate": {**block, "split": "calibrate", "sample_limit": 256}}},
        "exploration": {
            "nsga": {"pop_size": RESNET_POP, "offsprings": RESNET_POP, "generations": RESNET_GENERATIONS},
            "allowable_accuracy_drop": 0.02,
            "datasets": {"exploration": {**block, "split": "validation", "sample_limit": 384}},
            "extra_args": {"num_bits_lower_limit": 2, "num_bits_upper_limit": 8,
                           "bit_weighting_function": "bits_weighted_linear"}},
        "training": {"epochs": 6, "learning_rate": 0.002, "datasets": {
            "train": {**block, "split": "train", "batch_size": 64}, "validation": {**block, "split": "validation"}}},
    }}
    if not weights.exists():
        path = tmp / f"{model}-train.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        if qsx(["train", str(path)]):
            sys.exit(f"training the {model} failed")
    return data


def _head_start_run(tmp: Path, name: str, base: dict, seed: int, start: str, generations: int | None,
                    sample_fraction: float = 1.0):
    tag = start if sample_fraction == 1 else f"{start}-f{sample_fraction:g}"
    out = tmp / f"{name}-{seed}-{tag}.h5"
    if out.exists():
        return results.open(out)
    data = json.loads(json.dumps(base))
    w = data["workload"]
    w["seed"], w["results"] = seed, str(tmp)
    w["exploration"]["initial_population"] = start
    if sample_fraction != 1:
        w["exploration"]["sensitivity"] = {**w["exploration"].get("sensitivity", {}), "sample_fraction": sample_fraction}
    if generations:
        w["exploration"]["nsga"]["generations"] = generations
    path = tmp / f"{name}-{seed}-{tag}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    if qsx(["explore", str(path), "-o", str(out), "--skip-baseline"]):
        sys.exit(f"run {out} failed")
    return results.open(out)


def spent_to_reach(run, target: float, column: str = "eval_seconds") -> float:
    """Evaluation-seconds (or ``samples``; sweep included) when the population's hypervolume first reaches
    ``target`` (inf: never)."""
    g = run.generations
    reached = np.flatnonzero(g["hypervolume"] >= target - 1e-12)
    return float(g[column][reached[0]]) if len(reached) else float("inf")


HEAD_START_WORKLOADS = ("lenet5", "resnet8", "resnet20")


def _head_start_workload(tmp: Path, name: str) -> dict:
    if name != "lenet5":
        return _resnet_workload(tmp, name)
    lenet = yaml.safe_load((WORKLOADS / "lenet5_mnist_quantization.yaml").read_text())
    lenet["workload"]["model"]["weights"] = str(WORKLOADS.parent / "weights" / "lenet5_mnist.pt")
    return lenet


def head_start_table(tmp: Path, seeds: list[int], generations: int | None, names: list[str],
                     sample_fraction: float = 1.0) -> list[dict]:
    sys.path.insert(0, str(BENCH))  # mnist32:make, the ResNets' dataset
    rows = []
    for name in names:
        base = _head_start_workload(tmp, name)
        for seed in seeds:
            random_run = _head_start_run(tmp, name, base, seed, "random", generations)
            sens_run = _head_start_run(tmp, name, base, seed, "sensitivity", generations, sample_fraction)
            target = float(random_run.generations["hypervolume"][-1])
            budget = float(random_run.generations["eval_seconds"][-1])
            sweep = sens_run.table("sensitivity")
            reach = spent_to_reach(sens_run, target)
            samples = float(random_run.generations["samples"][-1])
            rows.append({
                "workload": name, "seed": seed, "random_hv": target, "random_eval_seconds": budget,
                "sensitivity_hv": float(sens_run.generations["hypervolume"][-1]),
                "sensitivity_eval_seconds": float(sens_run.generations["eval_seconds"][-1]),
                "sweep_evaluations": int(sweep.rows), "sweep_seconds": float(np.sum(sweep["eval_seconds"])),
                "seconds_to_random_final_hv": reach, "fraction_of_random_seconds": reach / budget,
                "fraction_of_random_samples": spent_to_reach(sens_run, target, "samples") / samples,
                "sweep_samples": int(np.sum(sweep["samples"])), "random_samples": int(samples),
                "generation_reached": int(np.argmax(sens_run.generations["hypervolume"] >= target - 1e-12))
                if np.isfinite(reach) else None,
            })
    return rows


def head_start_summary(rows: list[dict]) -> dict:
    summary = {}
    print(f"{'workload':<9}{'seed':>5}{'random HV':>10}{'sens HV':>9}{'random s':>9}{'sweep s':>8}{'reach s':>8}"
          f"{'fraction':>9}{'samples':>8}{'at gen':>7}")
    for r in rows:
        print(f"{r['workload']:<9}{r['seed']:>5}{r['random_hv']:>10.4f}{r['sensitivity_hv']:>9.4f}"
              f"{r['random_eval_seconds']:>9.1f}{r['sweep_seconds']:>8.1f}{r['seconds_to_random_final_hv']:>8.1f}"
              f"{r['fraction_of_random_seconds']:>9.3f}{r['fraction_of_random_samples']:>8.3f}"
              f"{str(r['generation_reached']):>7}")
    for name in dict.fromkeys(r["workload"] for r in rows):
        mine = [r for r in rows if r["workload"] == name]
        fraction = statistics.median(r["fraction_of_random_seconds"] for r in mine)
        by_samples = statistics.median(r["fraction_of_random_samples"] for r in mine)
        not_lower = sum(r["sensitivity_hv"] >= r["random_hv"] for r in mine)
        summary[name] = {"median_fraction": fraction, "median_samples_fraction": by_samples,
                         "final_hv_not_lower": not_lower, "seeds": len(mine),
                         "met": fraction <= 0.5 and not_lower == len(mine)}
        print(f"{name}: the sensitivity start reaches the random start's final hypervolume with {fraction:.3f}x its "
              f"evaluation-seconds ({by_samples:.3f}x its samples; medians, target <= 0.5); final hypervolume not "
              f"lower in {not_lower} of "
              f"{len(mine)} seeds -> {'met' if summary[name]['met'] else 'NOT met'}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--generations", type=int, help="override the workloads' generations")
    parser.add_argument("--json", type=Path, help="write the tables as JSON")
    parser.add_argument("--keep", type=Path, help="keep the runs' results files in this folder (and reuse them)")
    parser.add_argument("--only", choices=["racing", "joint", "head-start"], help="run one part (default: all)")
    parser.add_argument("--workloads", nargs="+", choices=HEAD_START_WORKLOADS, default=list(HEAD_START_WORKLOADS),
                        help="the head start's workloads (default: all three)")
    parser.add_argument("--sample-fraction", type=float, default=1.0,
                        help="the sensitivity start's exploration.sensitivity.sample_fraction (default 1)")
    args = parser.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="qsx-search-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    report = {}
    if args.only in (None, "racing"):
        report.update(racing_report(tmp, args.seeds, args.generations))
    if args.only in (None, "joint"):
        joint = joint_table(tmp, args.generations)
        print(f"joint problem: {len(joint['joint_better'])} of {joint['joint_front']} front points have lower "
              f"effective BitOps than every quantization-only front point of at least the same accuracy "
              f"({joint['joint_results']})")
        report["joint"] = joint
    if args.only in (None, "head-start"):
        rows = head_start_table(tmp, args.seeds, args.generations, args.workloads, args.sample_fraction)
        report["head_start"] = {"runs": rows, "summary": head_start_summary(rows)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def racing_report(tmp: Path, seeds: list[int], generations: int | None) -> dict:
    rows = racing_table(tmp, seeds, generations)
    print(f"{'problem':<13}{'seed':>5}{'racing':>8}{'HV':>8}{'eval s':>8}{'samples':>10}{'HV/s':>8}"
          f"{'HV/Msample':>11}{'raced':>7}{'missed':>7}")
    for r in rows:
        print(f"{r['problem']:<13}{r['seed']:>5}{str(r['racing']):>8}{r['hypervolume']:>8.4f}{r['eval_seconds']:>8.1f}"
              f"{r['samples']:>10}{r['hv_per_second']:>8.4f}{r['hv_per_msample']:>11.3f}{r['raced_out']:>7}"
              f"{r['front_points_missed']:>7}")
    summary = {}
    for problem in ("quantization", "sparsity"):
        full = [r for r in rows if r["problem"] == problem and not r["racing"]]
        raced = [r for r in rows if r["problem"] == problem and r["racing"]]
        summary[problem] = {
            "hv_ratio_median": statistics.median(b["hypervolume"] / a["hypervolume"] for a, b in zip(full, raced)),
            "sample_ratio_median": statistics.median(a["samples"] / b["samples"] for a, b in zip(full, raced)),
            "seconds_ratio_median": statistics.median(a["eval_seconds"] / b["eval_seconds"] for a, b in zip(full, raced)),
        }
        s = summary[problem]
        print(f"{problem}: racing reaches {s['hv_ratio_median']:.3f}x the hypervolume with "
              f"{s['sample_ratio_median']:.2f}x fewer samples and {s['seconds_ratio_median']:.2f}x less evaluation time")
    return {"runs": rows, "summary": summary}


if __name__ == "__main__":
    main()
