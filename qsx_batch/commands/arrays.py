"""What ``launch`` and ``sensitivity --slurm`` share: a run whose evaluations are SLURM array jobs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..problems import Problem
from ..store import ResultsWriter
from ..workload import Workload
from .options import given_slurm_settings


def start_array_run(workload: Workload, writer: ResultsWriter | None, resume: Path | None, output: Path | None,
                    args: argparse.Namespace) -> tuple[Problem, ResultsWriter, "SlurmExecutor"]:
    """The problem (built here on CPU, calibrated once, the data cache written before any task starts), the results
    file (``writer``, or a new one) and a SLURM executor with the settings of the command line, the run (on
    resume) and the workload's ``launch:`` section; its files live in ``<run>.jobs/`` beside the results file."""
    import torch

    from ..executors.cluster import checked_settings, for_array_tasks, require_slurm_clients
    from ..executors.jobs import RunJobs
    from ..executors.slurm import SlurmExecutor
    from ..prepare import build_problem, cache_datasets, search_datasets
    from ..runs import closed_on_failure, create_run, ensure_writable

    with closed_on_failure(writer):
        require_slurm_clients()
        workload = for_array_tasks(workload)
        stored = RunJobs(resume).settings() if resume else {}
        settings = checked_settings(workload, stored, given_slurm_settings(args))
        if resume is None:
            ensure_writable(output.parent if output else workload.results_dir())
        problem = build_problem(workload, torch.device("cpu"))  # calibrates here: tasks never race on the file
        cache_datasets(workload, search_datasets(workload))  # decodes image folders here once: tasks only read
        writer = writer or create_run(workload, problem, output)
    with closed_on_failure(writer):
        files = RunJobs(writer.path).start(workload.name, settings.model_dump(), new=resume is None)
        executor = SlurmExecutor(workload, problem, settings, files, device=args.device, threads=args.threads,
                                 verbose=args.verbose)
    print(f"results -> {writer.path}\nSLURM job name {executor.job_name}; sbatch scripts and logs in {files.root}",
          flush=True)
    return problem, writer, executor
