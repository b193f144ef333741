"""The array-task side of the SLURM executor: evaluate one chunk of individuals, publish each result at once.

A task imports only what evaluating needs (this module, :mod:`.job_files`, :mod:`qsx_batch.evaluation` and
below): not the results store, the search, pymoo, or any command.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from submitit.helpers import Checkpointable

from ..evaluation.assembly import prepare_evaluator, workload_device
from ..evaluation.evaluator import Evaluator
from ..plugins import add_workload_folder
from ..threads import use_threads
from ..workload import Workload
from .base import EvalRequest
from .job_files import published_keys, write_result

FAULT_ENV = "QSX_BATCH_TEST_FAULT"


def inject_test_fault(attempt: int, position: int) -> None:
    """Test hook, active only when ``QSX_BATCH_TEST_FAULT`` is set in the launcher's environment.

    Comma-separated words, applied right after a task's first result, in submission attempt 1 and not after a
    requeue: ``raise`` makes array task 0 raise; ``sleep=S`` waits S seconds (time for a test to scancel or
    signal a running task); ``modules=PATH`` writes the names of the modules the task has imported to
    ``PATH.<array task id>`` (JSON).
    """
    spec = os.environ.get(FAULT_ENV, "")
    if not spec or attempt != 1 or position != 0 or os.environ.get("SLURM_RESTART_COUNT", "0") != "0":
        return
    for word in spec.split(","):
        name, _, value = word.partition("=")
        if name == "sleep":
            time.sleep(float(value))
        elif name == "modules":
            Path(f"{value}.{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}").write_text(json.dumps(sorted(sys.modules)))
        elif name == "raise" and os.environ.get("SLURM_ARRAY_TASK_ID", "0") == "0":
            raise RuntimeError(f"injected fault ({FAULT_ENV}=raise)")


class EvaluateChunk(Checkpointable):
    """One array task: set torch's threads (``threads``, else the task's allocation), prepare the Evaluator once,
    then evaluate and publish the chunk one result at a time.

    Checkpointable: on preemption or time-out submitit pickles this object again and requeues the task; the
    restarted task skips every request whose result is already published.
    """

    def __init__(self, workload: Workload, items: list[tuple[str, EvalRequest]], folder: Path, attempt: int,
                 device: str | None = None, threads: int | None = None):
        self.workload = workload
        self.items = items
        self.folder = Path(folder)
        self.attempt = attempt
        self.device = device
        self.threads = threads

    def prepare(self, datasets: tuple[str, ...]) -> Evaluator:
        """The task's Evaluator with the named dataset blocks loaded (a subclass may score differently)."""
        add_workload_folder(self.workload.path.parent)  # unpickled, not loaded: its modules are imported from there
        return prepare_evaluator(self.workload, workload_device(self.workload, self.device), datasets)

    def __call__(self) -> int:
        """Evaluate the unpublished requests of the chunk; returns how many were evaluated."""
        done = published_keys(self.folder)
        todo = [(key, request) for key, request in self.items if key not in done]
        if not todo:
            return 0
        print(f"torch threads {use_threads(self.threads)}", flush=True)
        evaluator = self.prepare(tuple(sorted({request.dataset for _, request in todo})))
        for position, (key, request) in enumerate(todo):
            result = evaluator.evaluate(request.genome, request.dataset, request.race)
            write_result(self.folder, key, result, self.attempt)
            print(f"evaluated {key} attempt {self.attempt}: {result.status} accuracy {result.accuracy:.4f} "
                  f"cost {result.cost:.6g} in {result.eval_seconds:.2f} s", flush=True)
            inject_test_fault(self.attempt, position)
        return len(todo)
