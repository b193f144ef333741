"""``qsx-batch launch``: the ``explore`` search evaluated on SLURM array tasks (persistent, or per generation).

The launcher assembles the run (:func:`qsx_batch.search.placement.assemble_run`: the problem built here on CPU,
the data cache written before any task starts) and is the results file's only writer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_run_options, add_slurm_options, add_workload, placement, results_path

NAME = "launch"
HELP = "run an exploration on SLURM array tasks"
DESCRIPTION = ("The explore search on a SLURM cluster: one array job of persistent tasks serves the whole run "
               "(--workers per-generation: one array job per generation; submitit); results stream "
               "into the results file as tasks report them. Options default to the workload's 'launch:' section "
               "(same names with underscores); on --resume, to the run's own settings.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload(p)
    add_run_options(p)
    add_slurm_options(p)


def run(args: argparse.Namespace) -> int:
    from ..search.start import closed_on_failure, run_workload

    resume = results_path(args.resume, args.workload) if args.resume else None
    workload, writer = run_workload(args.workload, resume, args.generations)
    from ..search.log import run_log  # torch: once the workload (and a resumed results file) opened
    from ..search.nsga import SearchOptions
    from ..search.placement import assemble_run
    from ..search.run import run_search

    with closed_on_failure(writer), run_log(workload, NAME):
        run = assemble_run(workload, placement(args, slurm=True), writer, Path(args.output) if args.output else None)
        options = SearchOptions(skip_baseline=args.skip_baseline, progress=args.progress, verbose=args.verbose,
                                log=run.log)  # timestamped, as the executor's own lines
        return run_search(run.workload, run.problem, run.executor, run.writer, options, NAME)
