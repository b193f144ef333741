"""Chosen individuals of a results file scored again on a workload dataset block; table ``reevaluations``.

One row per (individual, dataset); its ``individual`` column is the row number in ``individuals``. Scoring uses
the same Evaluator as the search, in this process or as SLURM array tasks. Individuals already re-evaluated ok on
the dataset are reported as stored and not evaluated again, so after any stop the same call continues.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..executors.base import EVALUATE_STAGE, EvalRequest
from ..search.placement import Placement, assemble_run
from ..search.run import run_to_end
from ..store import ResultsWriter, open_for_append
from ..store.format import REEVALUATION_RESULT_FIELDS, REEVALUATIONS
from .followup import FollowUp


@dataclass(frozen=True)
class Reevaluated:
    """One chosen individual's score on the dataset: ``stored`` when it came from an earlier re-evaluation."""

    row: int
    accuracy: float
    samples: int
    cost: float
    stored: bool
    error: str = ""


def reevaluate(job: FollowUp, dataset: str, where: Placement, again: bool = False,
               show: Callable[[Reevaluated], None] = lambda _: None) -> int:
    """Score the chosen individuals on ``dataset`` (a name or dotted key of a dataset block) and store each
    result as it arrives; ``show`` sees every individual, stored ones first. Returns the exit status (130 when
    stopped: every finished result is stored)."""
    if where.on_slurm and where.slurm.get("keep_jobs"):
        raise UserError("--keep-jobs is for 'launch' only: a stopped 'evaluate' cancels its array tasks, and running "
                        "the same command again evaluates only the individuals not stored yet.")
    job.workload.dataset(dataset)  # a UserError names the choices when there is no such block
    key = job.workload.dataset_key(dataset)
    stored = {} if again else job.run.reevaluated(key)
    for row in job.rows:
        if int(row) in stored:
            show(Reevaluated(int(row), *stored[int(row)], stored=True))
    todo = [int(row) for row in job.rows if int(row) not in stored]
    if not todo:
        return 0
    run = assemble_run(job.workload, where, reevaluate=job.run.path, datasets=(key,), check=job.check_problem)
    requests = [EvalRequest(np.asarray(job.genome(row), dtype=float), key, str(row)) for row in todo]
    writer = open_for_append(job.run.path, swmr=False)

    def work() -> None:
        for reevaluated in _store(writer, run.executor.run(requests, EVALUATE_STAGE), key):
            show(reevaluated)

    status = run_to_end(work, run.executor, writer, "the same command (it evaluates only the individuals not "
                                                    "stored yet)")
    if status == 0 and where.on_slurm:
        shutil.rmtree(run.executor.files.shards_root, ignore_errors=True)  # every result is in the results file
    return status


def _store(writer: ResultsWriter, results: Iterator, key: str) -> Iterator[Reevaluated]:
    for request, result, _ in results:
        row = int(request.label)
        writer.append_row(REEVALUATIONS, {
            "individual": row, "dataset": key, **{k: getattr(result, k) for k in REEVALUATION_RESULT_FIELDS},
            "finished_at": time.time()})
        yield Reevaluated(row, result.accuracy, result.samples, result.cost, stored=False,
                          error="" if result.ok else f"{result.status}: {result.error}")
