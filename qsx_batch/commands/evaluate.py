"""``qsx-batch evaluate``: score chosen individuals again on a larger dataset and store the results beside them.

Results go to the table ``reevaluations`` of the same results file, one row per (individual, dataset); its
``individual`` column is the row number in ``individuals``. Scoring uses the same Evaluator as the search, in
this process or as SLURM array tasks.
"""

from __future__ import annotations

import argparse
import sys

from .options import add_followup, add_slurm_options, given_slurm_settings

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


def _local_executor(job, key: str, args: argparse.Namespace):
    from ..executors.local import LocalExecutor
    from ..prepare import prepare_evaluator, workload_device

    evaluator = prepare_evaluator(job.workload, workload_device(job.workload, args.device), (key,))
    job.check_problem(evaluator.problem)
    return LocalExecutor(evaluator)


def _slurm_executor(job, key: str, args: argparse.Namespace):
    """Array tasks with the launcher's settings (command line, then the run's launch settings, then the workload's
    ``launch:`` section); each task loads the model and the dataset block (from the data cache written here) once."""
    import torch

    from ..errors import UserError
    from ..executors.cluster import checked_settings, for_array_tasks, require_slurm_clients
    from ..executors.jobs import RunJobs
    from ..executors.slurm import SlurmExecutor
    from ..prepare import build_problem, cache_datasets

    if args.keep_jobs:
        raise UserError("--keep-jobs is for 'launch' only: a stopped 'evaluate' cancels its array tasks, and running "
                        "the same command again evaluates only the individuals not stored yet.")
    require_slurm_clients()
    workload = for_array_tasks(job.workload)
    jobs = RunJobs(job.run.path)
    settings = checked_settings(workload, jobs.settings(), given_slurm_settings(args))
    problem = build_problem(workload, torch.device("cpu"))  # calibrates here: tasks never race on the file
    job.check_problem(problem)
    cache_datasets(workload, (key,))  # decodes an image folder here once: tasks only read
    executor = SlurmExecutor(workload, problem, settings, jobs.evaluation(), device=args.device, threads=args.threads,
                             verbose=args.verbose, phase=NAME)
    print(f"SLURM job name {executor.job_name}; sbatch scripts and logs in {executor.files.root}", flush=True)
    return executor


def _table_line(run, row: int, reevaluated: str, samples: int, cost: float) -> str:
    return f"{row:>5} {run.individuals['accuracy'][row]:>9.4f} {reevaluated} {samples:>8} {cost:>20.6g}"


def run(args: argparse.Namespace) -> int:
    import shutil
    import time

    import numpy as np

    from ..executors.base import BASELINE_STAGE, EvalRequest
    from ..interrupts import Interrupted
    from ..store import open_for_append
    from ..store.format import REEVALUATION_RESULT_FIELDS, REEVALUATIONS
    from .followup import load_followup

    job = load_followup(args)
    run = job.run
    job.workload.dataset(args.dataset)  # a UserError names the choices when there is no such block
    key = job.workload.dataset_key(args.dataset)
    stored = {} if args.again else run.reevaluated(key)
    todo = [row for row in job.rows if int(row) not in stored]
    on_slurm = args.slurm or bool(given_slurm_settings(args))
    executor = (_slurm_executor if on_slurm else _local_executor)(job, key, args) if todo else None
    print(f"{'#':>5} {'accuracy':>9} {'re-evaluated':>13} {'samples':>8} {run.header.cost_name:>20}  dataset {key}")
    for row in job.rows:
        if int(row) in stored:
            accuracy, samples, cost = stored[int(row)]
            print(_table_line(run, row, f"{accuracy:>13.4f}", samples, cost) + "  (stored before)")
    if executor is None:
        print(f"all chosen individuals were re-evaluated on {key} before (--again evaluates them once more)")
        return 0
    requests = [EvalRequest(np.asarray(job.genome(row), dtype=float), key, str(row)) for row in todo]
    with open_for_append(run.path, swmr=False) as writer:
        try:
            for request, result, _ in executor.run(requests, generation=BASELINE_STAGE):
                row = int(request.label)
                writer.append_row(REEVALUATIONS, {
                    "individual": row, "dataset": key, **{k: getattr(result, k) for k in REEVALUATION_RESULT_FIELDS},
                    "finished_at": time.time()})
                shown = f"{result.accuracy:>13.4f}" if result.ok else f"  [{result.status}: {result.error}]"
                print(_table_line(run, row, shown, result.samples, result.cost), flush=True)
        except (KeyboardInterrupt, Interrupted):
            print(f"\ninterrupted; every finished re-evaluation is stored in {run.path}. The same command "
                  "continues with the individuals not stored yet.", file=sys.stderr)
            return 130
        finally:
            executor.close()
    if on_slurm:
        shutil.rmtree(executor.files.shards_root, ignore_errors=True)  # every result is in the results file now
    print(f"stored in {run.path} (table '{REEVALUATIONS}'); see: qsx-batch inspect {run.path}")
    return 0
