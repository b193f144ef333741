"""``qsx-batch launch``: the ``explore`` search with every generation evaluated as SLURM array jobs.

The launcher builds the problem here on CPU (calibrating once and writing the data cache of image-folder blocks,
before any task starts), opens the results file as its only writer and runs the search with a
:class:`~qsx_batch.executors.slurm.SlurmExecutor`; its SLURM files live in ``<run>.jobs/`` beside the results file
(:mod:`qsx_batch.executors.jobs`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_run_options, add_slurm_options, add_workload

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
    from ..runlog import run_log
    from ..runs import closed_on_failure, run_search, run_workload
    from ..search import SearchOptions
    from .arrays import start_array_run

    resume = Path(args.resume) if args.resume else None
    workload, writer = run_workload(args.workload, resume, args.generations)
    with closed_on_failure(writer), run_log(workload, NAME):
        problem, writer, executor = start_array_run(workload, writer, resume,
                                                    Path(args.output) if args.output else None, args)
        options = SearchOptions(skip_baseline=args.skip_baseline, progress=args.progress, verbose=args.verbose,
                                log=executor.log)  # timestamped, as the executor's own lines
        return run_search(executor.workload, problem, executor, writer, options, NAME)
