"""The launcher's own overhead per generation on a SLURM cluster, for 10, 100 and 1000 individuals.

Each measurement runs one generation of N random genomes through the real SlurmExecutor (one array job of
``--tasks`` tasks, submitit, shard files) and merges every result into a real HDF5 results file, exactly as
``qsx-batch launch`` does; only the evaluation is trivial (no model, constant scores), so what is measured is
SLURM scheduling + task start + the launcher's own work.

    sudo slurm/dev/start-cluster.sh                       # or run on a login node
    python bench/launcher_overhead.py --json launcher_overhead.json

Columns: ``wall`` submission to last result merged; ``to_first`` until the first result was merged (SLURM
scheduling and Python start of the tasks); ``merge`` first to last result; ``eval`` summed evaluation time;
``overhead`` = wall - eval; ``launcher_cpu`` CPU seconds of the launcher process and its sbatch/sacct/squeue
children during the generation (its own work, which should grow linearly with N).
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
    """Scores every genome instantly (defined here, so submitit ships it to the tasks by value)."""

    def evaluate(self, genome, dataset="exploration", race=None):
        from qsx_batch.evaluation.record import IndividualResult

        zeros = np.zeros(1, dtype=np.int64)
        start = time.perf_counter()
        vector = np.asarray(genome, dtype=float)
        return IndividualResult(genome=vector, params=vector, accuracy=0.5, correct=0, samples=1,
                                cost=float(vector.sum()), blocks_total=zeros, blocks_already=zeros,
                                blocks_created=zeros, eval_seconds=time.perf_counter() - start,
                                host=os.uname().nodename, device="none")


def trivial_chunk():
    """An array task that scores with :class:`TrivialEvaluator` (a subclass defined here, shipped by value)."""
    from qsx_batch.executors.worker import EvaluateChunk

    class TrivialChunk(EvaluateChunk):
        def prepare(self, datasets):
            return TrivialEvaluator()

    return TrivialChunk


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(n: int, tasks: int, folder: Path, workload, problem) -> dict:
    """One generation of ``n`` genomes: timings of submission, first and last merged result."""
    from qsx_batch.executors.base import EvalRequest, Stage
    from qsx_batch.executors.job_files import JobFiles
    from qsx_batch.executors.slurm import SlurmExecutor
    from qsx_batch.search.nsga import run_header
    from qsx_batch.store import create_results
    from qsx_batch.workload import LaunchSpec

    lower, upper = problem.bounds
    rng = np.random.default_rng(n)
    genomes = {tuple(rng.integers(lower, upper + 1)) for _ in range(4 * n)}
    requests = [EvalRequest(np.asarray(g, dtype=float)) for g in sorted(genomes)[:n]]
    header = run_header(workload, problem, ["classification_accuracy"])
    settings = LaunchSpec(gpus_per_task=0, individuals_per_task=math.ceil(n / tasks), time=10, max_retries=0)
    executor = SlurmExecutor(workload, problem, settings, JobFiles(folder / f"n{n}.jobs", f"bench-{n}"),
                             log=lambda message: None, task=trivial_chunk())
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000], help="individuals per generation")
    parser.add_argument("--tasks", type=int, default=4, help="array tasks per generation (default 4)")
    parser.add_argument("--json", type=Path, default=Path("launcher_overhead.json"), help="where to write the numbers")
    args = parser.parse_args(argv)

    import torch

    from qsx_batch.evaluation.assembly import build_problem
    from qsx_batch.executors.slurm_cluster import for_array_tasks
    from qsx_batch.workload import load_workload

    with tempfile.TemporaryDirectory(prefix="qsx-bench-", dir=Path.cwd()) as tmp:  # the nodes must see it
        workload = for_array_tasks(load_workload(None))
        problem = build_problem(workload, torch.device("cpu"))
        rows = [measure(n, args.tasks, Path(tmp), workload, problem) for n in args.sizes]
    columns = ["individuals", "tasks", "wall_s", "to_first_s", "merge_s", "eval_s", "overhead_s", "launcher_cpu_s",
               "launcher_cpu_ms_per_individual"]
    print("  ".join(f"{c:>12}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>12.3f}" if isinstance(row[c], float) else f"{row[c]:>12}" for c in columns))
    args.json.write_text(json.dumps({"host": os.uname().nodename, "rows": rows}, indent=1))
    print(f"-> {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
