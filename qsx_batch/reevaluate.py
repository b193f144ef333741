"""``qsx-batch evaluate``: score chosen individuals again on a larger dataset and store the results beside them.

Results go to the table ``reevaluations`` of the same results file, one row per (individual, dataset); its
``individual`` column is the row number in ``individuals``. Scoring uses the same Evaluator as the search.
"""

from __future__ import annotations

import argparse
import sys

from .errors import UserError
from .interrupts import Interrupted

TABLE = "reevaluations"
RESULT_FIELDS = ("genome", "params", "accuracy", "correct", "samples", "cost", "blocks_total", "blocks_already",
                 "blocks_created", "eval_seconds", "status", "error", "host", "device", "slurm_job_id",
                 "slurm_array_task_id", "node", "gpu")


def table_columns() -> dict:
    """Columns of the ``reevaluations`` table: the link, the dataset key, and the result fields."""
    from .store import COLUMNS, STR

    return {"individual": ("i8", None), "dataset": (STR, None), **{k: COLUMNS[k] for k in RESULT_FIELDS},
            "finished_at": ("f8", None)}


def dataset_block(workload, name: str) -> tuple[str, "DatasetSpec"]:  # noqa: F821
    """The workload's dataset block for ``name``: a short name (``reevaluate``, ``exploration``, ``baseline``) or a
    dotted key such as ``retraining.datasets.validation``."""
    spec = workload.spec
    short = {"reevaluate": "reevaluation.datasets.reevaluate", "exploration": "exploration.datasets.exploration",
             "baseline": "exploration.datasets.baseline"}
    key = short.get(name, name)
    block = spec
    for part in key.split("."):
        block = getattr(block, part, None)
        if block is None:
            break
    if block is None or not hasattr(block, "batch_size"):
        raise UserError(f"Workload {workload.path} has no dataset block '{key}' (--dataset {name}). Use one of "
                        f"{', '.join(short)}, or a dotted key of a dataset block such as "
                        "retraining.datasets.validation.")
    return key, block


def prepare_for_reevaluation(workload, device: str | None, datasets: tuple[str, ...]) -> "Evaluator":  # noqa: F821
    """The search's Evaluator with the named dataset blocks loaded once (dotted keys, as :func:`dataset_block`
    returns them). Used on this machine and, as the worker's ``prepare`` hook, in every SLURM array task."""
    from .evaluate import load_block, prepare_evaluator, workload_device

    evaluator = prepare_evaluator(workload, workload_device(workload, device), datasets=())
    for name in datasets:
        key, block = dataset_block(workload, name)
        evaluator.samples[key] = load_block(workload, block, key).to(evaluator.device)
    return evaluator


def stored_results(run, key: str) -> dict[int, tuple[float, int, float]]:
    """Individual -> (accuracy, samples, cost) of the individuals already re-evaluated ok on dataset ``key``."""
    table = run.follow_ups.get(TABLE)
    if not table:
        return {}
    return {int(table["individual"][i]): (table["accuracy"][i], table["samples"][i], table["cost"][i])
            for i in range(len(table["individual"])) if table["dataset"][i] == key and table["status"][i] == "ok"}


def _table_line(run, row: int, reevaluated: str, samples: int, cost: float) -> str:
    return f"{row:>5} {run.individuals['accuracy'][row]:>9.4f} {reevaluated} {samples:>8} {cost:>20.6g}"


def _local_executor(job, key: str, args: argparse.Namespace):
    from .executors import LocalExecutor

    evaluator = prepare_for_reevaluation(job.workload, args.device, (key,))
    job.check_problem(evaluator.problem)
    return LocalExecutor(evaluator)


def _slurm_executor(job, key: str, args: argparse.Namespace):
    """Array tasks with the launcher's settings (command line, then the run's launch settings, then the workload's
    ``launch:`` section); each task loads the model and the dataset block once."""
    import uuid

    import torch

    from .evaluate import build_problem
    from .executors.slurm import SlurmExecutor, preflight, require_slurm_clients
    from .launch import jobs_folder, launch_settings, pin_outputs, read_run_state

    if args.keep_jobs:
        raise UserError("--keep-jobs is for 'launch' only: a stopped 'evaluate' cancels its array tasks, and running "
                        "the same command again evaluates only the individuals not stored yet.")
    require_slurm_clients()
    workload = pin_outputs(job.workload)
    settings = launch_settings(workload, read_run_state(job.run.path).get("settings", {}), args)
    preflight(settings, "qsx-preflight")
    problem = build_problem(workload, torch.device("cpu"))  # calibrates here, so tasks never race on the file
    job.check_problem(problem)
    token = f"evaluate-{uuid.uuid4().hex[:8]}"
    executor = SlurmExecutor(workload, problem, settings, jobs_folder(job.run.path) / token, token,
                             device=args.device, prepare=prepare_for_reevaluation, verbose=args.verbose,
                             phase="evaluate")
    print(f"SLURM job name {executor.job_name}; sbatch scripts and logs in {executor.jobs_dir}", flush=True)
    return executor


def cmd_evaluate(args: argparse.Namespace) -> int:
    import shutil
    import time

    import numpy as np

    from .followup import load_followup
    from .launch import slurm_options_given
    from .search import EvalRequest
    from .store import open_for_append

    job = load_followup(args)
    run = job.run
    key, _ = dataset_block(job.workload, args.dataset)
    stored = {} if args.again else stored_results(run, key)
    todo = [row for row in job.rows if int(row) not in stored]
    on_slurm = args.slurm or slurm_options_given(args)
    executor = (_slurm_executor if on_slurm else _local_executor)(job, key, args) if todo else None
    print(f"{'#':>5} {'accuracy':>9} {'re-evaluated':>13} {'samples':>8} {run.attrs['cost_name']:>20}  dataset {key}")
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
            for request, result, _ in executor.run(requests, generation=-1):
                row = int(request.label)
                writer.append_row(TABLE, table_columns(), {
                    "individual": row, "dataset": key, **{k: getattr(result, k) for k in RESULT_FIELDS},
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
        shutil.rmtree(executor.shards_root, ignore_errors=True)  # every result is in the results file now
    print(f"stored in {run.path} (table '{TABLE}'); see: qsx-batch inspect {run.path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    from .followup import add_followup_parser
    from .launch import add_slurm_options

    p = add_followup_parser(sub, "evaluate", "re-evaluate chosen individuals on the re-evaluation (or another) dataset",
                            "Score chosen individuals of a results file on a workload dataset block and append the "
                            "results to the file (table 'reevaluations'). Individuals already re-evaluated on that "
                            "dataset are shown, not evaluated again (unless --again). Runs on this machine, or as "
                            "SLURM array jobs with --slurm or any SLURM option (the settings of 'launch').")
    p.add_argument("--dataset", default="reevaluate", metavar="NAME",
                   help="reevaluate (default: reevaluation.datasets.reevaluate), exploration, baseline, or a dotted "
                        "key of a dataset block")
    p.add_argument("--again", action="store_true", help="evaluate individuals already re-evaluated on the dataset")
    p.add_argument("--slurm", action="store_true",
                   help="evaluate as SLURM array jobs with the run's launch settings (implied by any SLURM option)")
    p.add_argument("--verbose", "-v", action="store_true", help="log every array-job submission")
    add_slurm_options(p)
    p.set_defaults(func=cmd_evaluate)
