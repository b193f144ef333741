"""``qsx-batch explore``: the NSGA-II search on this machine, evaluating in this process."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_run_options, add_workload, placement, results_path

NAME = "explore"
HELP = "run an exploration on this machine"
DESCRIPTION = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload(p)
    add_run_options(p)


def run(args: argparse.Namespace) -> int:
    from ..search.start import closed_on_failure, run_workload

    resume = results_path(args.resume, args.workload) if args.resume else None
    workload, writer = run_workload(args.workload, resume, args.generations)
    from ..search.log import run_log  # torch: once the workload (and a resumed results file) opened
    from ..search.nsga import SearchOptions
    from ..search.placement import assemble_run
    from ..search.run import run_search

    with closed_on_failure(writer), run_log(workload, NAME):
        run = assemble_run(workload, placement(args, slurm=False), writer, Path(args.output) if args.output else None)
        options = SearchOptions(skip_baseline=args.skip_baseline, progress=args.progress, verbose=args.verbose)
        return run_search(run.workload, run.problem, run.executor, run.writer, options, NAME)
