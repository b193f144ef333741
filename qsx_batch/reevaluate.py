"""``qsx-batch evaluate``: score chosen individuals again on a larger dataset and store the results beside them.

Results go to the table ``reevaluations`` of the same results file, one row per (individual, dataset); its
``individual`` column is the row number in ``individuals``. Scoring uses the same Evaluator as the search.
"""

from __future__ import annotations

import argparse

from .errors import UserError
from .interrupts import raise_if_requested

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


def cmd_evaluate(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from .evaluate import load_block, prepare_evaluator, select_device
    from .executors import LocalExecutor
    from .followup import load_followup
    from .search import EvalRequest
    from .store import open_for_append

    job = load_followup(args)
    run, workload = job.run, job.workload
    key, block = dataset_block(workload, args.dataset)
    device = select_device(args.device or workload.spec.exploration.device)
    evaluator = prepare_evaluator(workload, device, datasets=())
    job.check_problem(evaluator.problem)
    evaluator.samples[key] = load_block(workload, block, key).to(device)
    requests = [EvalRequest(np.asarray(job.genome(row), dtype=float), key, str(row)) for row in job.rows]
    executor = LocalExecutor(evaluator)
    ind = run.individuals
    print(f"{'#':>5} {'accuracy':>9} {'re-evaluated':>13} {'samples':>8} {run.attrs['cost_name']:>20}  dataset {key}")
    with open_for_append(run.path, swmr=False) as writer:
        try:
            for request, result, _ in executor.run(requests, generation=-1):
                row = int(request.label)
                writer.append_row(TABLE, table_columns(), {
                    "individual": row, "dataset": key, **{k: getattr(result, k) for k in RESULT_FIELDS},
                    "finished_at": time.time()})
                raise_if_requested()
                shown = f"{result.accuracy:>13.4f}" if result.ok else f"  [{result.status}: {result.error}]"
                print(f"{row:>5} {ind['accuracy'][row]:>9.4f} {shown} {result.samples:>8} {result.cost:>20.6g}")
        finally:
            executor.close()
    print(f"stored in {run.path} (table '{TABLE}'); see: qsx-batch inspect {run.path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    from .followup import add_followup_parser

    p = add_followup_parser(sub, "evaluate", "re-evaluate chosen individuals on the re-evaluation (or another) dataset",
                            "Score chosen individuals of a results file on a workload dataset block and append the "
                            "results to the file (table 'reevaluations'). Runs on this machine.")
    p.add_argument("--dataset", default="reevaluate", metavar="NAME",
                   help="reevaluate (default: reevaluation.datasets.reevaluate), exploration, baseline, or a dotted "
                        "key of a dataset block")
    p.set_defaults(func=cmd_evaluate)
