"""Search efficiency: NSGA-II with and without racing on the embedded default workloads, seeds 0-4.

Usage: python bench/search_efficiency.py [--seeds 0 1 2 3 4] [--generations G] [--json out.json]

For each problem (quantization, sparsity) and seed it runs the same number of generations twice (racing off and
on) and reports: final hypervolume, hypervolume per evaluation-second and per sample evaluated, the samples spent,
and how many points of the full run's final Pareto front the racing run misses. It also runs the joint problem
once and counts its front points with lower effective BitOps than any quantization-only front point of at least
the same accuracy (quantization-only individuals scored with zero thresholds under the joint cost).
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

from qsx_batch.cli import main as qsx
from qsx_batch.prepare import prepare_evaluator
from qsx_batch import results
from qsx_batch.result import genome_key
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--generations", type=int, help="override the workloads' generations")
    parser.add_argument("--json", type=Path, help="write the tables as JSON")
    parser.add_argument("--keep", type=Path, help="keep the runs' results files in this folder (and reuse them)")
    args = parser.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="qsx-search-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows = racing_table(tmp, args.seeds, args.generations)
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
    joint = joint_table(tmp, args.generations)
    print(f"joint problem: {len(joint['joint_better'])} of {joint['joint_front']} front points have lower effective "
          f"BitOps than every quantization-only front point of at least the same accuracy ({joint['joint_results']})")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "summary": summary, "joint": joint}, indent=1))


if __name__ == "__main__":
    main()
