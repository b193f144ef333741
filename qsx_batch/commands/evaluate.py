"""``qsx-batch evaluate``: score chosen individuals again on a larger dataset and store the results beside them.

The loop and its table live in :mod:`qsx_batch.tools.reevaluation`; this command prints the table.
"""

from __future__ import annotations

import argparse

from .options import add_followup, add_slurm_options, placement, results_path

NAME = "evaluate"
HELP = "re-evaluate chosen individuals on the re-evaluation (or another) dataset"
DESCRIPTION = ("Score chosen individuals of a results file on a workload dataset block and append the results to "
               "the file (table 'reevaluations'). Individuals already re-evaluated on that dataset are shown, not "
               "evaluated again (unless --again). Runs on this machine, or as SLURM array jobs with --slurm or any "
               "SLURM option (the settings of 'launch').")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_followup(p)
    p.add_argument("--dataset", default="reevaluate", metavar="NAME",
                   help="reevaluate (default: reevaluation.datasets.reevaluate), exploration, baseline, or a dotted "
                        "key of a dataset block")
    p.add_argument("--again", action="store_true", help="evaluate individuals already re-evaluated on the dataset")
    p.add_argument("--slurm", action="store_true",
                   help="evaluate as SLURM array jobs with the run's launch settings (implied by any SLURM option)")
    p.add_argument("--verbose", "-v", action="store_true", help="log every array-job submission")
    add_slurm_options(p)


def run(args: argparse.Namespace) -> int:
    from ..tools.followup import load_followup

    job = load_followup(results_path(args.results, args.workload), args)
    from ..tools.reevaluation import reevaluate  # torch: once the results file and the choice are known good

    run = job.run
    shown: list = []

    def show(done) -> None:
        if not shown:
            print(f"{'#':>5} {'accuracy':>9} {'re-evaluated':>13} {'samples':>8} {run.header.cost_name:>20}  dataset "
                  f"{job.workload.dataset_label(job.workload.dataset_key(args.dataset))}")
        shown.append(done)
        score = f"  [{done.error}]" if done.error else f"{done.accuracy:>13.4f}"
        print(f"{done.row:>5} {run.individuals['accuracy'][done.row]:>9.4f} {score} {done.samples:>8} "
              f"{done.cost:>20.6g}" + ("  (stored before)" if done.stored else ""), flush=True)

    status = reevaluate(job, args.dataset, placement(args, slurm=args.slurm), args.again, show)
    if status == 0 and all(done.stored for done in shown):
        print(f"all chosen individuals were re-evaluated on {job.workload.dataset_key(args.dataset)} before "
              "(--again evaluates them once more)")
    elif status == 0:
        print(f"stored in {run.path} (table 'reevaluations'); see: qsx-batch inspect {run.path}")
    return status
