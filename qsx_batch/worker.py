"""The array-task side of ``qsx-batch launch``: evaluate one chunk of individuals, report each result at once.

Channel from workers to the launcher: one small pickle file per result, ``<shards>/<key>.pkl``, written to a
temporary name in the same folder and moved into place with :func:`os.replace`. A rename is atomic on local and
shared file systems (NFS, Lustre, GPFS), so the launcher, which polls the folder, sees a result whole or not at
all; no two processes ever write the same file, nothing is appended across hosts, and a task killed at any
moment leaves only a stray temporary file. ``key`` is a digest of the request (genome, dataset, label), so a
requeued or resubmitted task skips what is already there and a resumed launcher finds results that arrived
after it died.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from submitit.helpers import Checkpointable

from .result import IndividualResult
from .search import EvalRequest
from .workload import Workload

FAULT_ENV = "QSX_BATCH_TEST_FAULT"
SUFFIX = ".pkl"

Prepare = Callable[[Workload, "str | None", "tuple[str, ...]"], Any]


def result_key(request: EvalRequest) -> str:
    """A file-name-safe digest that identifies a request (genome, dataset, label) exactly."""
    digest = hashlib.sha1(f"{request.dataset}|{request.label}|".encode())
    digest.update(b"fp32" if request.genome is None else np.asarray(request.genome, dtype=np.float64).tobytes())
    return digest.hexdigest()


def write_result(folder: Path, key: str, result: IndividualResult, attempt: int) -> None:
    """Publish one result atomically (temporary file + rename in the same folder)."""
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump((result, attempt), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / f"{key}{SUFFIX}")


def stored_keys(folder: Path) -> set[str]:
    """Keys of the results published in ``folder``."""
    return {name[: -len(SUFFIX)] for name in os.listdir(folder) if name.endswith(SUFFIX) and not name.startswith(".")}


def read_results(folder: Path, wanted: set[str]) -> Iterator[tuple[str, IndividualResult, int]]:
    """(key, result, attempt) for every published result whose key is in ``wanted``."""
    for key in sorted(stored_keys(folder) & wanted):
        with open(folder / f"{key}{SUFFIX}", "rb") as f:
            result, attempt = pickle.load(f)
        yield key, result, attempt


def prepare_for_task(workload: Workload, device: str | None, datasets: tuple[str, ...]):
    """The Evaluator of ``explore``, loaded once per task (imported here so the worker module stays light)."""
    from .evaluate import prepare_evaluator, workload_device

    return prepare_evaluator(workload, workload_device(workload, device), datasets)


def inject_test_fault(attempt: int, position: int) -> None:
    """Test hook, active only when ``QSX_BATCH_TEST_FAULT`` is set in the launcher's environment.

    Comma-separated words, applied right after a task's first result, in submission attempt 1 and not after a
    requeue: ``raise`` makes array task 0 raise; ``sleep=S`` waits S seconds (time for a test to scancel or
    signal a running task).
    """
    spec = os.environ.get(FAULT_ENV, "")
    if not spec or attempt != 1 or position != 0 or os.environ.get("SLURM_RESTART_COUNT", "0") != "0":
        return
    for word in spec.split(","):
        name, _, value = word.partition("=")
        if name == "sleep":
            time.sleep(float(value))
        elif name == "raise" and os.environ.get("SLURM_ARRAY_TASK_ID", "0") == "0":
            raise RuntimeError(f"injected fault ({FAULT_ENV}=raise)")


class EvaluateChunk(Checkpointable):
    """One array task: prepare the Evaluator once, then evaluate and publish the chunk one result at a time.

    Checkpointable: on preemption or time-out submitit pickles this object again and requeues the task; the
    restarted task skips every request whose result is already published.
    """

    def __init__(self, workload: Workload, items: list[tuple[str, EvalRequest]], folder: Path, attempt: int,
                 device: str | None = None, prepare: Prepare | None = None):
        self.workload = workload
        self.items = items
        self.folder = Path(folder)
        self.attempt = attempt
        self.device = device
        self.prepare = prepare

    def __call__(self) -> int:
        """Evaluate the unpublished requests of the chunk; returns how many were evaluated."""
        done = stored_keys(self.folder)
        todo = [(key, request) for key, request in self.items if key not in done]
        if not todo:
            return 0
        datasets = tuple(sorted({request.dataset for _, request in todo}))
        evaluator = (self.prepare or prepare_for_task)(self.workload, self.device, datasets)
        for position, (key, request) in enumerate(todo):
            result = evaluator.evaluate(request.genome, request.dataset, request.race)
            write_result(self.folder, key, result, self.attempt)
            print(f"evaluated {key} attempt {self.attempt}: {result.status} accuracy {result.accuracy:.4f} "
                  f"cost {result.cost:.6g} in {result.eval_seconds:.2f} s", flush=True)
            inject_test_fault(self.attempt, position)
        return len(todo)
