"""``qsx-batch sensitivity``: per gene, the accuracy with that gene swept over its range and every other gene
neutral, stored as the ``sensitivity`` table of a new results file or of an existing run's."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_device, add_slurm_options, add_workload, placement, results_path

NAME = "sensitivity"
HELP = "sweep each gene alone (every other gene neutral) and store the accuracy per gene and value"
DESCRIPTION = ("Per quantizer (or per layer threshold), the network is evaluated with that one gene swept over its "
               "range (exploration.sensitivity.points values) while every other gene stays at the upper bit width "
               "or a zero threshold. exploration.sensitivity.sweep: adaptive (the default) evaluates only the points a "
               "starting individual could use, raced; full evaluates every point (a complete heat map). The sweep "
               "goes into the results file's 'sensitivity' table (a new file, or "
               "--resume RUN.h5 adds it to an existing run, reusing the genomes that run evaluated); "
               "'inspect --sensitivity' shows it, 'plot' draws it as a heat map, and "
               "'exploration.initial_population: sensitivity' starts the search from it. Locally, or as SLURM "
               "array jobs with --slurm (and the launch options).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload(p)
    p.add_argument("--output", "-o", metavar="FILE", help="results file to create (default: RESULTS/<name>-<time>.h5)")
    p.add_argument("--resume", nargs="?", const="last", metavar="RESULTS.h5",
                   help="add the sweep to this run's results file (or complete a stopped sweep); alone or 'last': "
                        "the newest in the workload's results folder")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--verbose", "-v", action="store_true", help="log every array-job submission")
    p.add_argument("--slurm", action="store_true",
                   help="evaluate as SLURM array jobs (implied by any SLURM option; defaults as for launch)")
    add_device(p)
    add_slurm_options(p)


def run(args: argparse.Namespace) -> int:
    from .. import results
    from ..results.report import sensitivity_text
    from ..search.start import closed_on_failure, run_workload

    resume = results_path(args.resume, args.workload) if args.resume else None
    workload, writer = run_workload(args.workload, resume, None)
    where = placement(args, slurm=args.slurm)
    from ..search.log import run_log  # torch: once the workload (and a resumed results file) opened
    from ..search.placement import assemble_run
    from ..search.run import run_to_end
    from ..search.sensitivity import measure_sensitivity

    with closed_on_failure(writer), run_log(workload, NAME):
        run = assemble_run(workload, where, writer, Path(args.output) if args.output else None)
        path = run.writer.path
        hint = f"qsx-batch {NAME} --resume {path}" + (" --slurm" if where.on_slurm else "")
        status = run_to_end(lambda: measure_sensitivity(run.problem, run.executor, run.writer, workload.spec,
                                                        args.progress, run.log), run.executor, run.writer, hint)
    if status == 0:
        print(sensitivity_text(results.open(path)))
        print(f"\nstored in {path} (table 'sensitivity'); heat map: qsx-batch plot {path}")
    return status
