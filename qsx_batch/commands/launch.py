"""``qsx-batch launch``: the ``explore`` search with every generation evaluated as SLURM array jobs.

The launcher builds the problem here on CPU (calibrating once and writing the data cache of image-folder blocks,
before any task starts), opens the results file as its only writer and runs the search with a
:class:`~qsx_batch.executors.slurm.SlurmExecutor`; its SLURM files live in ``<run>.jobs/`` beside the results file
(:mod:`qsx_batch.executors.jobs`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_run_options, add_slurm_options, add_workload, given_slurm_settings

NAME = "launch"
HELP = "run an exploration with every generation as SLURM array jobs"
DESCRIPTION = ("The explore search on a SLURM cluster: each generation is one array job (submitit); results stream "
               "into the results file as tasks report them. Options default to the workload's 'launch:' section "
               "(same names with underscores); on --resume, to the run's own settings.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload(p)
    add_run_options(p)
    add_slurm_options(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..executors.cluster import checked_settings, for_array_tasks, require_slurm_clients
    from ..executors.jobs import RunJobs
    from ..executors.slurm import SlurmExecutor
    from ..prepare import build_problem, cache_datasets, search_datasets
    from ..runlog import run_log
    from ..runs import closed_on_failure, create_run, ensure_writable, run_search, run_workload
    from ..search import SearchOptions

    require_slurm_clients()
    resume = Path(args.resume) if args.resume else None
    output = Path(args.output) if args.output else None
    workload, writer = run_workload(args.workload, resume, args.generations)
    with closed_on_failure(writer), run_log(workload, NAME):
        with closed_on_failure(writer):
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
        options = SearchOptions(skip_baseline=args.skip_baseline, progress=args.progress, verbose=args.verbose,
                                log=executor.log)  # timestamped, as the executor's own lines
        return run_search(workload, problem, executor, writer, options, NAME)
