"""``qsx-batch explore``: the NSGA-II search on this machine, evaluating in this process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import add_run_options, add_workload

NAME = "explore"
HELP = "run an exploration on this machine"
DESCRIPTION = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload(p)
    add_run_options(p)


def run(args: argparse.Namespace) -> int:
    from ..executors.local import LocalExecutor
    from ..prepare import prepare_evaluator, workload_device
    from ..runlog import run_log
    from ..runs import closed_on_failure, create_run, run_search, run_workload
    from ..search import SearchOptions

    workload, writer = run_workload(args.workload, Path(args.resume) if args.resume else None, args.generations)
    with closed_on_failure(writer), run_log(workload, NAME):
        evaluator = prepare_evaluator(workload, workload_device(workload, args.device))
        writer = writer or create_run(workload, evaluator.problem, Path(args.output) if args.output else None)
        print(f"results -> {writer.path}", file=sys.stderr)
        options = SearchOptions(skip_baseline=args.skip_baseline, progress=args.progress, verbose=args.verbose)
        return run_search(workload, evaluator.problem, LocalExecutor(evaluator), writer, options, NAME)
