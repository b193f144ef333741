"""Benchmark the data pipeline on a generated ImageFolder of realistic JPEGs (bench/imagefolder.py).

Usage: ``python bench/data_pipeline.py --data FOLDER [--quick] [--json data.json]``

1. ``prepare``: seconds for an array task to hold its exploration block (4,096 images, 224x224 crop) in memory:
   decoding the JPEGs in one process (what every task did before the data cache), decoding with one DataLoader
   worker per CPU, writing the data cache (once per run, on the launcher's side), and reading the cache (what
   every array task, ``--resume``, ``evaluate`` and ``retrain`` do now).
2. ``memory``: peak resident memory (RSS) of a baseline evaluation (ResNet-18 fp32 at a 64x64 crop, batches of
   250) over 5,000 and 20,000 images with an 8 MB memory budget: streamed from the data cache and streamed while
   decoding; held in memory (2 GB budget) for contrast; and the RSS of writing the cache.

Every measurement runs in a fresh process with one torch thread; FOLDER keeps the generated images (made on
the first run, about 3 minutes on 2 cores) and the run's data cache. Method and results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from imagefolder import generate, linked_folder  # noqa: E402  (the sibling script)

IMAGES, CLASSES = 4096, 8
FULL = {"prepare_rounds": 3, "sizes": (5000, 20000)}
QUICK = {"prepare_rounds": 1, "sizes": (1000, 4000)}


# -- the child process: one measurement ------------------------------------------------------------------------
def child(task: dict) -> dict:
    """Run one measurement in this fresh process and return its figures."""
    import torch
    import torchvision  # noqa: F401  (imported before timing: an array task has imported it for its model)

    from qsx_batch.data import MemoryBudget, Samples
    from qsx_batch.evaluation.assembly import build_problem, load_block
    from qsx_batch.evaluation.evaluator import Evaluator
    from qsx_batch.workload import load_workload

    torch.set_num_threads(1)
    workload = load_workload(task["workload"])
    name = task["block"]
    spec, key = workload.dataset(name), workload.dataset_key(name)
    budget = None if task.get("budget") is None else MemoryBudget(task["budget"])
    problem = build_problem(workload, torch.device("cpu")) if task["evaluate"] else None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    source = load_block(workload, spec, key, budget=budget, cached=task["cached"])
    loaded = time.perf_counter() - start
    figures = {"load_seconds": loaded, "samples": len(source), "held_in_memory": isinstance(source, Samples),
               "source": type(source).__name__}
    if problem is not None:
        result = Evaluator(problem, {name: source}, torch.device("cpu")).evaluate(None, name)
        figures.update(evaluate_seconds=result.eval_seconds, accuracy=result.accuracy, status=str(result.status))
    figures["rss_before_data_mb"] = before
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["largest_worker_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return figures


def measure(task: dict, cpus: int | None = None) -> dict:
    """:func:`child` in a fresh process (``cpus``: its SLURM_CPUS_PER_TASK); adds the process's wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(BENCH.parent)}
    env.pop("SLURM_CPUS_PER_TASK", None)
    if cpus:
        env["SLURM_CPUS_PER_TASK"] = str(cpus)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(task)], env=env, capture_output=True,
                          text=True)
    if done.returncode:
        raise RuntimeError(f"measurement {task} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.splitlines()[-1]), "process_seconds": time.perf_counter() - start}


# -- the workloads ---------------------------------------------------------------------------------------------
def block(path: Path, image_size: int, batch_size: int, limit: int | None = None) -> dict:
    return {"type": "imagenet", "kind": "imagefolder", "path": str(path), "image_size": image_size,
            "batch_size": batch_size, "sample_limit": limit}


def workload_file(path: Path, results: Path, exploration: dict, baseline: dict | None = None,
                  budget: str | None = None) -> str:
    """A sparsity workload of ResNet-18 (random weights, 8 classes) over generated images."""
    exploration_section = {"device": "cpu", "data_memory_budget": budget,
                           "datasets": {"exploration": exploration, **({"baseline": baseline} if baseline else {})}}
    path.write_text(yaml.safe_dump({"workload": {
        "name": path.stem, "results": str(results), "problem": {"problem_function": "sparsity_problem"},
        "model": {"type": "resnet18", "extra_args": {"num_classes": CLASSES}}, "exploration": exploration_section}}))
    return str(path)


def cpus() -> int:
    sys.path.insert(0, str(BENCH.parent))
    from qsx_batch.data.sources import allocation_cpus

    return allocation_cpus()


def prepare_figures(data: Path, rounds: int) -> dict:
    """Seconds to hold the 4,096-image exploration block in memory, by each way of getting it."""
    results = data / "results-prepare"
    shutil.rmtree(results / "data-cache", ignore_errors=True)
    wl = workload_file(data / "prepare.yaml", results, block(data / "images", 224, 128))
    task = {"workload": wl, "block": "exploration", "evaluate": False, "budget": 2 ** 40}
    runs = {
        "decode, 1 process (before)": measure({**task, "cached": False}, cpus=1),
        f"decode, {cpus()} workers": measure({**task, "cached": False}),
        "write the data cache (once)": measure({**task, "cached": True, "budget": 0}),
    }
    reads = [measure({**task, "cached": True}) for _ in range(rounds)]
    runs["read the data cache (array task)"] = min(reads, key=lambda r: r["load_seconds"])
    cache_bytes = sum(p.stat().st_size for p in (results / "data-cache").iterdir())
    return {"images": IMAGES, "image_size": 224, "cache_bytes": cache_bytes, "runs": runs, "read_rounds": rounds,
            "speedup_over_one_process": runs["decode, 1 process (before)"]["load_seconds"]
            / runs["read the data cache (array task)"]["load_seconds"],
            "speedup_over_workers": runs[f"decode, {cpus()} workers"]["load_seconds"]
            / runs["read the data cache (array task)"]["load_seconds"]}


def memory_figures(data: Path, sizes: tuple[int, ...]) -> dict:
    """Peak RSS of a baseline evaluation over each number of images with an 8 MB budget."""
    rows = {}
    for size in sizes:
        folder = linked_folder(data / "images", data / f"baseline-{size}", IMAGES, CLASSES, size)
        results = data / "results-memory"
        wl = workload_file(data / f"memory-{size}.yaml", results, block(data / "images", 64, 250, limit=250),
                           block(folder, 64, 250), budget="8M")
        task = {"workload": wl, "block": "baseline", "evaluate": True}
        for entry in results.glob("data-cache/*"):
            entry.unlink()
        runs = {"write the data cache": measure({**task, "evaluate": False, "cached": True, "budget": 0}),
                "streamed from the cache": measure({**task, "cached": True}),
                "streamed, decoding": measure({**task, "cached": False}),
                "held in memory (2 GB budget)": measure({**task, "cached": True, "budget": 2 ** 31})}
        rows[size] = {"held_uint8_mb": size * 3 * 64 * 64 / 2 ** 20, "runs": runs}
    return rows


def print_report(report: dict) -> None:
    prep = report["prepare"]
    print(f"prepare an array task's exploration block ({prep['images']} JPEGs of 500x375, {prep['image_size']}x"
          f"{prep['image_size']} crop, held in memory; cache file {prep['cache_bytes'] / 2 ** 20:.0f} MB):")
    for name, run in prep["runs"].items():
        print(f"  {name:<36} {run['load_seconds']:>7.2f} s  (process {run['process_seconds']:.1f} s, "
              f"peak RSS {run['peak_rss_mb']:.0f} MB)")
    print(f"  cache vs one process: {prep['speedup_over_one_process']:.1f}x faster; vs workers: "
          f"{prep['speedup_over_workers']:.1f}x")
    print("baseline evaluation (ResNet-18 fp32, 64x64 crop, batch 250, budget 8 MB): peak RSS of the process "
          "before loading data / at the end / largest worker")
    for size, row in report["memory"].items():
        print(f"  {size} images (held in memory: {row['held_uint8_mb']:.0f} MB uint8, "
              f"{4 * row['held_uint8_mb']:.0f} MB as float32)")
        for name, run in row["runs"].items():
            took = run.get("evaluate_seconds", run["load_seconds"])
            print(f"    {name:<30} {run['rss_before_data_mb']:>6.0f} / {run['peak_rss_mb']:>6.0f} / "
                  f"{run['largest_worker_rss_mb']:>5.0f} MB  ({run['source']}, {took:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/qsx-bench-data"),
                        help="folder for the generated images and the data cache (kept between runs)")
    parser.add_argument("--quick", action="store_true", help="one round; 1,000 and 4,000 images for the memory figures")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    plan = QUICK if args.quick else FULL
    generate(args.data / "images", IMAGES, CLASSES)
    report = {"command": " ".join(["python bench/data_pipeline.py", *(sys.argv[1:] if argv is None else argv)]),
              "cpus": cpus(), "load_average_1min": os.getloadavg()[0],
              "prepare": prepare_figures(args.data, plan["prepare_rounds"]),
              "memory": memory_figures(args.data, plan["sizes"])}
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
