"""The array-task side of the SLURM executor: evaluate one chunk of individuals, publish each result at once
(:mod:`.pool_task`: a persistent task, which takes individuals from a queue until told to stop).

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


def test_faults(attempt: int, position: int) -> dict[str, str]:
    """The words of ``QSX_BATCH_TEST_FAULT`` (a test hook, set in the launcher's environment) that apply now: at
    a task's first result (``position`` 0), in submission attempt 1 and not after a requeue."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec or attempt != 1 or position != 0 or os.environ.get("SLURM_RESTART_COUNT", "0") != "0":
        return {}
    return {name: value for name, _, value in (word.partition("=") for word in spec.split(","))}


def first_task() -> bool:
    return os.environ.get("SLURM_ARRAY_TASK_ID", "0") == "0"


def inject_test_fault(attempt: int, position: int) -> None:
    """Test hook, active only when ``QSX_BATCH_TEST_FAULT`` is set: comma-separated words, applied right after a
    task's first result (:func:`test_faults`). ``raise`` makes array task 0 raise; ``sleep=S`` waits S seconds
    (time for a test to scancel or signal a running task); ``modules=PATH`` writes the names of the modules the
    task has imported to ``PATH.<array task id>`` (JSON). Persistent tasks know two more (:mod:`.pool_task`).
    """
    faults = test_faults(attempt, position)
    if "sleep" in faults:
        time.sleep(float(faults["sleep"]))
    if "modules" in faults:
        Path(f"{faults['modules']}.{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}").write_text(json.dumps(sorted(sys.modules)))
    if "raise" in faults and first_task():
        raise RuntimeError(f"injected fault ({FAULT_ENV}=raise)")


class ArrayTask(Checkpointable):
    """What every array task holds: the workload, and the device and torch threads to evaluate with.

    Checkpointable: on preemption or time-out submitit pickles the object again and requeues the task, which
    then skips what is already published.
    """

    def __init__(self, workload: Workload, device: str | None = None, threads: int | None = None):
        self.workload = workload
        self.device = device
        self.threads = threads

    def prepare(self, datasets: tuple[str, ...]) -> Evaluator:
        """The task's Evaluator with the named dataset blocks loaded (a subclass may score differently)."""
        add_workload_folder(self.workload.path.parent)  # unpickled, not loaded: its modules are imported from there
        return prepare_evaluator(self.workload, workload_device(self.workload, self.device), datasets)


class EvaluateChunk(ArrayTask):
    """One array task of a stage: set torch's threads (``threads``, else the task's allocation), prepare the
    Evaluator once, then evaluate and publish the chunk one result at a time."""

    def __init__(self, workload: Workload, items: list[tuple[str, EvalRequest]], folder: Path, attempt: int,
                 device: str | None = None, threads: int | None = None):
        super().__init__(workload, device, threads)
        self.items = items
        self.folder = Path(folder)
        self.attempt = attempt

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
