"""The array-task side of persistent tasks: prepare the Evaluator once, then take individuals from the run's
queue (:mod:`.pool_files`) for every stage of the run, until the launcher says stop, its lease runs out, or the
task nears its time limit.

A task of several GPUs runs one evaluator per GPU: slot 0 in the task's own process, the others in spawned
processes that each see one of the task's GPUs. Like :mod:`.worker`, this imports no store, search or pymoo.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cloudpickle

from ..evaluation.evaluator import Evaluator
from ..threads import allocation_cpus, use_threads
from ..workload import Workload
from .job_files import write_result
from .pool_files import Item, LeaseWatch, PoolFiles, Work, task_id
from .worker import ArrayTask, first_task, inject_test_fault, test_faults

SIGNAL_JITTER_S = 60.0  # SLURM may send the --signal up to this much before the time it was asked for
STARTED_ENV = "QSX_TASK_STARTED"  # set by the sbatch script: when SLURM started the job (Python starts later)


@dataclass(frozen=True)
class TaskLimits:
    """When a task stops by itself: ``time_s`` its SLURM time limit, ``signal_s`` how long before it SLURM
    signals (submitit then requeues), ``lease_s`` how long it waits for a silent launcher."""

    time_s: float
    signal_s: float
    lease_s: float

    def retire_at(self, started: float, longest_s: float) -> float:
        """The time after which a task claims no more work: before SLURM's signal, which may come up to 60 s
        early (SLURM's own resolution), with room for three of its longest evaluations (at least 10 s), so that it
        ends cleanly and its replacement starts meanwhile; never before half the time limit."""
        latest = self.time_s - self.signal_s - SIGNAL_JITTER_S - max(10.0, 3 * longest_s)
        return started + max(self.time_s / 2, latest)


def task_name() -> str:
    """This task's id as submitit and squeue name it (kept across requeues)."""
    env = os.environ
    return task_id(env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID", "local"),
                   int(env.get("SLURM_ARRAY_TASK_ID", "-1")))


class ServeQueue(ArrayTask):
    """One persistent array task: ``evaluators`` evaluators (one per GPU of the task) serving the pool's queue.

    ``round`` is 1 for the pool's first array job and counts up for replacements (the test hook acts in round 1).
    Returns how many individuals the task's evaluators published.
    """

    def __init__(self, workload: Workload, pool: Path, datasets: tuple[str, ...], limits: TaskLimits,
                 evaluators: int = 1, round_: int = 1, device: str | None = None, threads: int | None = None):
        super().__init__(workload, device, threads)
        self.pool = Path(pool)
        self.datasets = datasets
        self.limits = limits
        self.evaluators = evaluators
        self.round = round_

    def __call__(self) -> int:
        started = float(os.environ.get(STARTED_ENV) or time.time())
        threads = self.threads or max(1, allocation_cpus() // self.evaluators)
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        context = multiprocessing.get_context("spawn")
        children = []
        for slot in range(1, self.evaluators):
            if visible:
                os.environ["CUDA_VISIBLE_DEVICES"] = visible[slot % len(visible)]
            child = context.Process(target=_serve_slot, args=(cloudpickle.dumps(self), slot, started, threads),
                                    name=f"qsx-evaluator-{slot}", daemon=True)
            child.start()
            children.append(child)
        if visible:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible[0]
        published = self.serve(0, started, threads, children)
        for child in children:
            child.join()
        _check(children)
        return published

    def serve(self, slot: int, started: float, threads: int, children: list = ()) -> int:
        """One evaluator's loop; returns how many results it published."""
        print(f"torch threads {use_threads(threads)}", flush=True)
        evaluator = self.prepare(self.datasets)
        files = PoolFiles(self.pool)
        task = task_name()
        worker = f"{task}.e{slot}"
        lease = LeaseWatch(files, self.limits.lease_s)
        offset = zlib.crc32(worker.encode())
        resumed = files.claims_of(worker)  # a requeued task finishes its own claims first
        longest, published, paused_until = 0.0, 0, 0.0
        idle_since = time.monotonic()
        print(f"evaluator {worker} ready after {time.time() - started:.1f} s", flush=True)
        while True:
            why = self._stop_reason(files, lease, started, longest)
            if why:
                break
            _check(children)
            claimed = resumed.pop(0) if resumed else (
                files.claim(worker, offset) if time.monotonic() >= paused_until else None)
            if claimed is None:
                time.sleep(_idle_interval(time.monotonic() - idle_since))
                continue
            if slot == 0:
                self._hold(published)
            begun = time.monotonic()
            published += self._evaluate(evaluator, files, *claimed, worker)
            longest = max(longest, time.monotonic() - begun)
            if published == 1 and slot == 0 and not paused_until:
                paused_until = time.monotonic() + self._pause()
                inject_test_fault(self.round, 0)
            idle_since = time.monotonic()
        if why == "time limit" and slot == 0:
            files.retire(task)
        print(f"evaluator {worker} stops ({why}) after {published} individuals", flush=True)
        return published

    def _hold(self, published: int) -> None:
        """Test hook ``hold=S``: array task 0 of round 1 holds its first claim S seconds before evaluating it."""
        seconds = test_faults(self.round, published).get("hold") if first_task() else None
        if seconds:
            time.sleep(float(seconds))

    def _pause(self) -> float:
        """Test hook ``pause=S``: after its first result array task 0 of round 1 claims nothing for S seconds
        (it still heeds stop, lease and time limit)."""
        return float(test_faults(self.round, 0).get("pause", 0)) if first_task() else 0.0

    def _stop_reason(self, files: PoolFiles, lease: LeaseWatch, started: float, longest: float) -> str:
        if files.stopped():
            return "the launcher closed the run"
        if lease.expired():
            return f"no word from the launcher for {self.limits.lease_s:.0f} s"
        if time.time() > self.limits.retire_at(started, longest):
            return "time limit"
        return ""

    def _evaluate(self, evaluator: Evaluator, files: PoolFiles, item: Item, work: Work, worker: str) -> int:
        """Evaluate one claimed individual and publish it, unless the launcher took the claim back meanwhile."""
        result = evaluator.evaluate(work.request.genome, work.request.dataset, work.request.race)
        if not files.holds(item):
            print(f"dropped {item.key}: the launcher put its claim back", flush=True)
            return 0
        write_result(work.shards, item.key, result, item.attempt)
        files.release(item)
        print(f"evaluated {item.key} attempt {item.attempt} by {worker}: {result.status} accuracy "
              f"{result.accuracy:.4f} cost {result.cost:.6g} in {result.eval_seconds:.2f} s", flush=True)
        return 1


def _serve_slot(task: bytes, slot: int, started: float, threads: int) -> None:
    """A spawned evaluator's entry point (the task object travels as cloudpickle, like submitit's)."""
    cloudpickle.loads(task).serve(slot, started, threads)


def _check(children: list) -> None:
    """Fail the task when one of its evaluators died (the launcher then puts back every claim of the task)."""
    for child in children:
        if child.exitcode not in (None, 0):
            raise RuntimeError(f"evaluator {child.name} ended with exit code {child.exitcode}")


def _idle_interval(idle_s: float) -> float:
    """Poll the queue often right after work (a generation follows the last within a second), rarely when idle
    for long (light on a shared file system)."""
    return 0.05 if idle_s < 5 else 0.25 if idle_s < 60 else 1.0
