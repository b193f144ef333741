"""The launcher's own overhead per generation on a SLURM cluster, in both modes of ``launch --workers``.

Every measurement runs random genomes through the real executor (submitit, array jobs, shard files, for
persistent tasks the queue) and merges every result into a real HDF5 results file, exactly as ``qsx-batch
launch`` does; only the evaluation is trivial (no model, constant scores), so what is measured is SLURM
scheduling, task start and the launcher's and tasks' own work.

    sudo slurm/dev/start-cluster.sh                       # or run on a login node
    python bench/launcher_overhead.py --json launcher_overhead.json

per-generation (one array job of ``--tasks`` tasks per generation; ``--sizes`` individuals): ``wall`` submission
to last result merged; ``to_first`` until the first result was merged (SLURM scheduling and Python start of the
tasks); ``merge`` first to last result; ``eval`` summed evaluation time; ``overhead`` = wall - eval;
``launcher_cpu`` CPU seconds of the launcher process and its sbatch/sacct/squeue children during the generation
(its own work, which should grow linearly with N).

persistent (``--tasks`` tasks for ``--generations`` generations of ``--persistent-size`` individuals): ``startup``
the first generation's wall time (submission, queueing, Python start); then per later generation ``beyond``, its
wall time beyond its longest evaluation (target: at most 0.5 s for 24 individuals on 4 tasks).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class TrivialEvaluator:
    """Scores every genome instantly (defined here, so submitit ships it to the tasks by value); ``layers``
    block counts of zero, as the results table of the problem expects."""

    def __init__(self, layers: int):
        self.layers = layers

    def evaluate(self, genome, dataset="exploration", race=None):
        from qsx_batch.evaluation.record import IndividualResult

        zeros = np.zeros(self.layers, dtype=np.int64)
        start = time.perf_counter()
        vector = np.asarray(genome, dtype=float)
        return IndividualResult(genome=vector, params=vector, accuracy=0.5, correct=0, samples=1,
                                cost=float(vector.sum()), blocks_total=zeros, blocks_already=zeros,
                                blocks_created=zeros, eval_seconds=time.perf_counter() - start,
                                host=os.uname().nodename, device="none")


def trivial_chunk(layers: int):
    """An array task that scores with :class:`TrivialEvaluator` (a subclass defined here, shipped by value)."""
    from qsx_batch.executors.worker import EvaluateChunk

    class TrivialChunk(EvaluateChunk):
        def prepare(self, datasets):
            return TrivialEvaluator(layers)

    return TrivialChunk


def trivial_queue(layers: int):
    """A persistent task that scores with :class:`TrivialEvaluator`."""
    from qsx_batch.executors.pool_task import ServeQueue

    class TrivialQueue(ServeQueue):
        def prepare(self, datasets):
            return TrivialEvaluator(layers)

    return TrivialQueue


def random_requests(problem, n: int, seed: int) -> list:
    from qsx_batch.executors.base import EvalRequest

    lower, upper = problem.bounds
    rng = np.random.default_rng(seed)
    genomes = {tuple(rng.integers(lower, upper + 1)) for _ in range(4 * n)}
    return [EvalRequest(np.asarray(g, dtype=float)) for g in sorted(genomes)[:n]]


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(n: int, tasks: int, folder: Path, workload, problem) -> dict:
    """One per-generation array job of ``n`` genomes: timings of submission, first and last merged result."""
    from qsx_batch.executors.base import Stage
    from qsx_batch.executors.job_files import JobFiles
    from qsx_batch.executors.slurm import StageArrays
    from qsx_batch.search.nsga import run_header
    from qsx_batch.store import create_results
    from qsx_batch.workload import LaunchSpec

    requests = random_requests(problem, n, n)
    header = run_header(workload, problem, ["classification_accuracy"])
    settings = LaunchSpec(gpus_per_task=0, individuals_per_task=math.ceil(n / tasks), time=10, max_retries=0,
                          workers="per-generation")
    executor = StageArrays(workload, problem, settings, JobFiles(folder / f"n{n}.jobs", f"bench-{n}"),
                           log=lambda message: None, task=trivial_chunk(len(problem.layers)))
    with create_results(folder / f"n{n}.h5", header) as writer:
        cpu0, start = cpu_seconds(), time.perf_counter()
        arrivals, eval_s = [], 0.0
        for _request, result, attempt in executor.run(requests, Stage.generation(0)):
            writer.append_individual(result, 0, (result.accuracy, result.cost), 0.0, attempt)
            arrivals.append(time.perf_counter() - start)
            eval_s += result.eval_seconds
        cpu = cpu_seconds() - cpu0
    executor.close()
    wall = arrivals[-1]
    return {"individuals": n, "tasks": math.ceil(n / settings.individuals_per_task), "wall_s": wall,
            "to_first_s": arrivals[0], "merge_s": wall - arrivals[0], "eval_s": eval_s, "overhead_s": wall - eval_s,
            "launcher_cpu_s": cpu, "launcher_cpu_ms_per_individual": 1000 * cpu / n}


def measure_persistent(n: int, tasks: int, generations: int, folder: Path, workload, problem) -> dict:
    """``generations`` generations of ``n`` new genomes through one pool of ``tasks`` persistent tasks."""
    from qsx_batch.executors.base import Stage
    from qsx_batch.executors.job_files import JobFiles
    from qsx_batch.executors.pool import PersistentTasks
    from qsx_batch.search.nsga import run_header
    from qsx_batch.store import create_results
    from qsx_batch.workload import LaunchSpec

    header = run_header(workload, problem, ["classification_accuracy"])
    settings = LaunchSpec(gpus_per_task=0, tasks=tasks, time=10, max_retries=0)
    executor = PersistentTasks(workload, problem, settings, JobFiles(folder / "pool.jobs", "bench-pool"),
                               datasets=("exploration",), log=lambda message: None, task=trivial_queue(len(problem.layers)))
    walls, beyond = [], []
    with create_results(folder / "pool.h5", header) as writer:
        try:
            for k in range(generations):
                start, longest = time.perf_counter(), 0.0
                for _request, result, attempt in executor.run(random_requests(problem, n, 1000 + k),
                                                              Stage.generation(k)):
                    writer.append_individual(result, k, (result.accuracy, result.cost), 0.0, attempt)
                    longest = max(longest, result.eval_seconds)
                walls.append(time.perf_counter() - start)
                beyond.append(walls[-1] - longest)
        finally:
            executor.close()
    later = beyond[1:]
    return {"individuals": n, "tasks": tasks, "generations": generations, "startup_s": walls[0],
            "beyond_median_s": float(np.median(later)), "beyond_max_s": max(later), "walls_s": walls,
            "target_met": max(later) <= 0.5}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", choices=["both", "persistent", "per-generation"], default="both")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000],
                        help="per-generation: individuals per generation")
    parser.add_argument("--persistent-size", type=int, default=24, help="persistent: individuals per generation")
    parser.add_argument("--generations", type=int, default=6, help="persistent: generations (the first is start-up)")
    parser.add_argument("--tasks", type=int, default=4, help="array tasks (default 4)")
    parser.add_argument("--json", type=Path, default=Path("launcher_overhead.json"), help="where to write the numbers")
    args = parser.parse_args(argv)

    import torch

    from qsx_batch.evaluation.assembly import build_problem
    from qsx_batch.executors.slurm_cluster import for_array_tasks
    from qsx_batch.workload import load_workload

    with tempfile.TemporaryDirectory(prefix="qsx-bench-", dir=Path.cwd()) as tmp:  # the nodes must see it
        workload = for_array_tasks(load_workload(None))
        problem = build_problem(workload, torch.device("cpu"))
        rows = ([measure(n, args.tasks, Path(tmp), workload, problem) for n in args.sizes]
                if args.workers != "persistent" else [])
        pool = (measure_persistent(args.persistent_size, args.tasks, args.generations, Path(tmp), workload, problem)
                if args.workers != "per-generation" else None)
    if rows:
        print("per-generation array jobs")
        show(rows, ["individuals", "tasks", "wall_s", "to_first_s", "merge_s", "eval_s", "overhead_s",
                    "launcher_cpu_s", "launcher_cpu_ms_per_individual"])
    if pool:
        print(f"persistent tasks: {pool['individuals']} individuals per generation on {pool['tasks']} tasks")
        show([pool], ["startup_s", "beyond_median_s", "beyond_max_s", "target_met"])
    args.json.write_text(json.dumps({"host": os.uname().nodename, "rows": rows, "persistent": pool}, indent=1))
    print(f"-> {args.json}", file=sys.stderr)
    return 0


def show(rows: list[dict], columns: list[str]) -> None:
    print("  ".join(f"{c:>12}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>12.3f}" if isinstance(row[c], float) else f"{row[c]!s:>12}" for c in columns))


if __name__ == "__main__":
    sys.exit(main())
