"""Where a run's evaluations happen, and the one function that assembles a run for it.

``explore``, ``launch``, ``sensitivity`` and ``evaluate`` all go down the same floors once: the workload, its
problem (built and calibrated once), the data, the results file and the executor. In this process the
evaluator holds model and data on the device; for SLURM array tasks the problem is built here on CPU, the data
cache is written before any task starts, and the executor's files live in ``<run>.jobs/`` beside the results file
(:mod:`qsx_batch.executors.job_files`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..evaluation.assembly import build_problem, cache_datasets, prepare_evaluator, search_datasets, workload_device
from ..executors.base import Executor
from ..executors.job_files import JobFiles, RunJobs
from ..executors.local import LocalExecutor
from ..executors.pool import PersistentTasks
from ..executors.slurm import SlurmExecutor, StageArrays
from ..executors.slurm_cluster import checked_settings, for_array_tasks, require_slurm_clients
from ..models.layers import uncovered_layers
from ..problems import Problem
from ..store import ResultsWriter
from ..workload import LaunchSpec, Workload
from .run import create_run, ensure_writable
from .start import closed_on_failure


@dataclass(frozen=True)
class Placement:
    """This process on ``device``, or SLURM array tasks (``slurm``: the launch settings given on the command line,
    by LaunchSpec field; defaults come from the run and the workload's ``launch:`` section)."""

    device: str | None = None
    threads: int | None = None
    slurm: dict[str, Any] | None = None
    verbose: bool = False

    @property
    def on_slurm(self) -> bool:
        return self.slurm is not None


@dataclass
class AssembledRun:
    """What a run works with; ``workload`` is the one the executor's tasks get (output paths absolute on SLURM)."""

    workload: Workload
    problem: Problem
    executor: Executor
    writer: ResultsWriter | None
    log: Callable[[str], None] | None = field(default=None)


def assemble_run(workload: Workload, where: Placement, writer: ResultsWriter | None = None,
                 output: Path | None = None, reevaluate: Path | None = None,
                 datasets: tuple[str, ...] | None = None,
                 check: Callable[[Problem], None] | None = None) -> AssembledRun:
    """The problem, data, results file and executor of one run, in one pass.

    ``writer``: the resumed run's open results file; else a new one is created (at ``output``, or the workload's
    default), unless ``reevaluate`` names the results file whose individuals are scored again (it stays closed
    here: the re-evaluation opens it once everything is built). ``datasets``: the dataset blocks to load
    (default: the search's). ``check`` sees the problem before anything is written (a UserError stops there).
    """
    datasets = search_datasets(workload) if datasets is None else datasets
    with closed_on_failure(writer):
        if not where.on_slurm:
            evaluator = prepare_evaluator(workload, workload_device(workload, where.device), datasets)
            if check:
                check(evaluator.problem)
            if writer is None and reevaluate is None:
                writer = create_run(workload, evaluator.problem, output)
            _announce(writer, evaluator.problem)
            return AssembledRun(workload, evaluator.problem, LocalExecutor(evaluator), writer)
        require_slurm_clients()
        workload = for_array_tasks(workload)
        existing = reevaluate or (writer.path if writer is not None else None)
        settings = checked_settings(workload, RunJobs(existing).settings() if existing else {}, where.slurm)
        if existing is None:
            ensure_writable(output.parent if output else workload.results_dir())
        problem = build_problem(workload, torch.device("cpu"))  # calibrates here: tasks never race on the file
        if check:
            check(problem)
        cache_datasets(workload, datasets)  # decodes image folders here once: tasks only read
        if writer is None and reevaluate is None:
            writer = create_run(workload, problem, output)
    with closed_on_failure(writer):
        jobs = RunJobs(reevaluate or writer.path)
        files = (jobs.evaluation() if reevaluate else
                 jobs.start(workload.name, settings.model_dump(), new=existing is None))
        executor = slurm_executor(workload, problem, settings, files, where, datasets,
                                  expected=0 if reevaluate else _population(workload))
    _announce(writer, problem)
    print(f"SLURM job name {executor.job_name}; sbatch scripts and logs in {files.root}", flush=True)
    return AssembledRun(workload, problem, executor, writer, executor.log)


def slurm_executor(workload: Workload, problem: Problem, settings: LaunchSpec, files: JobFiles, where: Placement,
                   datasets: tuple[str, ...], expected: int) -> SlurmExecutor:
    """The executor of ``settings.workers``: persistent tasks for the whole run, or array jobs per stage."""
    common = {"device": where.device, "threads": where.threads, "verbose": where.verbose}
    if settings.workers == "per-generation":
        return StageArrays(workload, problem, settings, files, **common)
    return PersistentTasks(workload, problem, settings, files, datasets=datasets, expected=expected, **common)


def _population(workload: Workload) -> int:
    nsga = workload.spec.exploration.nsga
    return max(nsga.pop_size, nsga.offsprings or 0)


def _announce(writer: ResultsWriter | None, problem: Problem) -> None:
    """Say where the results go, and which weights the search leaves in fp32 (``validate`` shows the coverage)."""
    if writer is not None:
        print(f"results -> {writer.path}", file=sys.stderr)
    left = uncovered_layers(problem.model, [layer.name for layer in problem.layers])
    if left:
        names = ", ".join(f"{u.name} ({u.kind})" for u in left[:8]) + (f" and {len(left) - 8} more" if len(left) > 8
                                                                         else "")
        print(f"note: {len(left)} module(s) with weights are not searched and stay fp32: {names}; see "
              "problem.layer_types and skip_layers, and 'qsx-batch validate' for the coverage", file=sys.stderr)
