"""Persistent array tasks: one array job serves every stage of a run, so a search waits in the queue once.

The pilot-job pattern on SLURM and submitit alone. The first :meth:`PersistentTasks.run` submits ``tasks`` array
tasks (:class:`~.pool_task.ServeQueue`); each prepares its Evaluator once and then claims individuals from the
run's queue on the shared file system (:mod:`.pool_files`) until the launcher stops the pool. Every stage posts
its individuals there and collects results from the usual results channel (:mod:`.job_files`).

Faults: a task that ended (raised, cancelled, out of memory, node failure, time limit) has its claims put back as
their next attempt (up to ``max_retries``; then a ``failed`` record) and is replaced by a new task; a task near its
time limit says so in a note and claims nothing more, and its replacement is submitted at once. The launcher
renews a lease from a thread of its own; a task that sees the lease unchanged for ``lease`` seconds ends, so a
killed launcher leaves no GPU job behind, and ``launch --resume`` within the lease takes its live tasks over.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import submitit

from ..errors import UserError
from ..evaluation.record import IndividualResult
from ..interrupts import raise_if_requested
from .base import EvalRequest, Stage
from .pool_files import PoolFiles, Work, task_id
from .pool_task import STARTED_ENV, ServeQueue, TaskLimits
from .slurm import ArrayJob, MostAtOnce, SlurmExecutor, TaskJob, remove_pickles
from .slurm_cluster import queued_job_ids

STOP_GRACE_S = 10.0  # how long close() waits for tasks to see the stop file before cancelling them


@dataclass
class _PoolTally(MostAtOnce):
    """What one stage saw of the pool: tasks alive (running) and queued at once, replacements, put-back claims."""

    tasks: int
    replaced: int = 0
    retried: int = 0
    failed: int = 0

    def line(self, stage: str, individuals: int, seconds: float) -> str:
        return (f"{stage}: {individuals} individuals on {self.tasks} persistent tasks: at most {self.running} alive "
                f"and {self.queued} queued, {self.replaced} replaced; {self.retried} retried, {self.failed} failed; "
                f"{seconds:.1f} s")


class _LeaseKeeper(threading.Thread):
    """Rewrites the pool's lease every ``lease/6`` seconds while the launcher lives (a thread: a long merge or
    a slow HDF5 write in the main thread does not let the tasks go)."""

    def __init__(self, files: PoolFiles, lease_s: float):
        super().__init__(name="qsx-lease", daemon=True)
        self.files = files
        self.every = max(0.5, lease_s / 6)
        self.halt = threading.Event()

    def run(self) -> None:
        counter = 0
        while not self.halt.is_set():
            counter += 1
            try:
                self.files.renew(counter)
            except OSError:  # a full or unreachable file system: try again next time
                pass
            self.halt.wait(self.every)


class PersistentTasks(SlurmExecutor):
    """Keeps ``tasks`` array tasks for the whole run and feeds every stage through their queue.

    ``datasets``: the blocks each task loads (every dataset the run evaluates on); ``expected``: the search's
    population, which sets the default task count (``ceil(expected / individuals_per_task)``).
    """

    def __init__(self, *args, datasets: tuple[str, ...], expected: int = 0, task: type[ServeQueue] = ServeQueue,
                 poll_s: float = 0.05, **kwargs):
        super().__init__(*args, poll_s=poll_s, **kwargs)
        self.datasets = datasets
        self.expected = expected
        self.task = task
        self.pool = PoolFiles(self.files.root / f"pool-{self.files.token}")
        self.parameters["setup"] = [f"export {STARTED_ENV}=$(date +%s)"]  # the task's clock starts with its job
        self.limits = TaskLimits(self.settings.time * 60.0, float(self.parameters["signal_delay_s"]),
                                 float(self.settings.lease))
        self.evaluators = max(1, self.settings.gpus_per_task)
        self.target = 0
        self.tasks: list[TaskJob] = []
        self.published: Counter[str] = Counter()  # results per task name
        self.fruitless = 0  # tasks that ended without publishing anything
        self._seq = 0
        self._round = 0
        self._lease: _LeaseKeeper | None = None
        self._began = 0.0

    # -- the Executor protocol -------------------------------------------------------------------------------
    def run(self, requests: list[EvalRequest], stage: Stage) -> Iterator[tuple[EvalRequest, IndividualResult, int]]:
        """Post the stage's individuals to the queue and yield (request, result, attempt) as results arrive."""
        if self._lease is None:
            self._start(len(requests))
        if not requests:
            return
        start = time.monotonic()
        shards, pending = self._shard_folder(stage), self._pending(requests)
        yield from self._collect(shards, pending)  # published after the previous launcher of this run died
        self._post(stage, pending, shards)
        tally = _PoolTally(self.target)
        self._top_up(tally)
        last_check = time.monotonic()
        while pending:
            time.sleep(self.poll_s)
            raise_if_requested()
            yield from self._collect(shards, pending)
            if pending and time.monotonic() - last_check >= self._state_interval(self._began):
                submitit.SlurmJob.watcher.update()
                self._release_requeued()
                yield from self._follow(stage, shards, pending, tally)
                last_check = time.monotonic()
        tally.sample(self._live())
        self.log(tally.line(stage.name, len(requests), time.monotonic() - start))

    def close(self) -> None:
        """Tell the tasks to stop (unless keep_jobs), cancel what has not ended after a grace, stop the lease."""
        if self._lease is None:
            return
        if not self.tasks:
            self._lease.halt.set()
            return
        live = self._live()
        if live and self.settings.keep_jobs:
            self._lease.halt.set()
            self.log(f"left {len(live)} persistent tasks of SLURM job name {self.job_name} alive (--keep-jobs): "
                     f"'launch --resume' within {self.settings.lease} s takes them over, after that they end by "
                     "themselves")
            self._active = []
            return
        self.pool.stop()
        deadline = time.monotonic() + STOP_GRACE_S
        while live and time.monotonic() < deadline:
            time.sleep(0.2)
            live = [task for task in live if not task.job.paths.result_pickle.exists()]
        self._lease.halt.set()
        names = {task.job.job_id for task in live}
        for array in self._active:
            remove_pickles(array.folder)
        self._active = [array for array in self._active if any(task.job.job_id in names for task in array.tasks)]
        if not self._active:
            self.log(f"stopped the {len(self.tasks)} persistent tasks of this launcher")
        super().close()

    # -- the pool --------------------------------------------------------------------------------------------
    def _start(self, first_stage: int) -> None:
        """Create the queue, renew the lease, take over the live tasks of a killed launcher of this run (and wait
        for its per-stage array tasks), and size the pool."""
        self._began = time.monotonic()
        self.pool.create()
        self._lease = _LeaseKeeper(self.pool, self.settings.lease)
        self._lease.start()
        self._seq = max((item.seq for item in self.pool.items()), default=0)
        alive = queued_job_ids(self.job_name)
        mine = set()
        for array in self.pool.arrays():
            self._round = max(self._round, array["round"])
            names = array["tasks"]
            mine |= set(names)
            adopted = [TaskJob(submitit.SlurmJob(array["folder"], name), [], array["round"]) for name in names
                       if name in alive]
            if adopted:
                self._active.append(ArrayJob(array["job_id"], Path(array["folder"]), adopted))
                self.tasks += adopted
        if self.tasks:
            self.log(f"took over {len(self.tasks)} live persistent tasks of the previous launcher of this run")
        self._wait_for(alive - mine)  # per-generation tasks of an earlier launch of this run
        held = {task.job.job_id for task in self.tasks}
        for item in self.pool.items():  # claims of tasks that are gone
            if item.worker and item.task not in held:
                self.pool.put_back(item)
        per = self.settings.individuals_per_task
        self.target = self.settings.tasks or min(self.settings.array_parallelism,
                                                 math.ceil(max(self.expected, first_stage, 1) / per))

    def _post(self, stage: Stage, pending: dict[str, EvalRequest], shards) -> None:
        """Queue the stage's individuals not queued yet; waiting individuals of other stages are dropped."""
        queued = set()
        for item in self.pool.items():
            if item.stage == stage.name:
                queued.add(item.key)
            elif not item.worker:
                self.pool.release(item)
        for key, request in pending.items():
            if key not in queued:
                self._seq += 1
                self.pool.post(self._seq, stage.name, key, 1, Work(request, shards))

    def _live(self) -> list[TaskJob]:
        return [task for task in self.tasks if not task.ended]

    def _top_up(self, tally: _PoolTally) -> None:
        """Submit tasks until ``target`` live tasks are not retiring (one array job; a replacement is submitted
        while the task it replaces still finishes its work)."""
        replacing = bool(self.tasks)
        retiring = self.pool.retiring()
        staying = [task for task in self._live() if task.job.job_id not in retiring]
        needed = self.target - len(staying)
        if needed <= 0:
            return
        self._round += 1
        work = [self.task(self.workload, self.pool.folder, self.datasets, self.limits, self.evaluators, self._round,
                          self.device, self.threads) for _ in range(needed)]
        for start in range(0, needed, self.max_array_size):
            group = work[start: start + self.max_array_size]
            array = self._submit_array(group, [[] for _ in group], "tasks", self._round)
            self.pool.add_array(array.job_id, array.folder, [task.job.job_id for task in array.tasks], self._round)
            self.tasks += array.tasks
            if self.verbose or replacing:
                self.log(f"{'replacement ' if replacing else ''}persistent tasks: SLURM job {array.job_id}, "
                         f"{len(group)} tasks of {self.evaluators} evaluator(s) -> {array.folder}")
        if replacing:
            tally.replaced += needed

    def _follow(self, stage: Stage, shards, pending: dict[str, EvalRequest], tally: _PoolTally) -> Iterator[tuple]:
        """Put back the claims of tasks that ended, replace them and the retiring ones."""
        tally.sample(self._live())
        ended = [task for task in self._live() if task.finished()]
        if ended:
            yield from self._collect(shards, pending)  # what they published just before they ended
        for task in ended:
            succeeded, text = task.outcome()
            task.end = "finished" if succeeded else "failed"
            if not self.published[task.job.job_id]:
                self.fruitless += 1
            if not succeeded:
                self.log(f"{stage.name}: {text}")
            for item in self.pool.items():
                if item.task != task.job.job_id:
                    continue
                if item.key not in pending or item.stage != stage.name:
                    self.pool.release(item)
                elif item.attempt <= self.settings.max_retries:
                    self.log(f"{stage.name}: individual {item.key[:12]} of {task.job.job_id} queued again (attempt "
                             f"{item.attempt + 1} of {self.settings.max_retries + 1})")
                    self.pool.put_back(item)
                    tally.retried += 1
                else:
                    self.log(f"{stage.name}: individual {item.key[:12]} of {task.job.job_id} recorded as failed")
                    self.pool.release(item)
                    tally.failed += 1
                    yield pending[item.key], self._failed(pending.pop(item.key), text, task), item.attempt
        if self.fruitless > self.target * (self.settings.max_retries + 1):
            raise UserError(
                f"{self.fruitless} persistent array tasks of this run ended without a single result (the last: "
                f"{ended[-1].outcome()[1] if ended else 'see the logs'}); their logs are in {self.files.root}. "
                "Every result so far is stored: fix the cause and run 'qsx-batch launch --resume'.")
        if pending:
            self._top_up(tally)

    def _collect(self, shards, pending: dict[str, EvalRequest]) -> Iterator[tuple]:
        for request, result, attempt in super()._collect(shards, pending):
            self.published[task_id(result.slurm_job_id, result.slurm_array_task_id)] += 1
            yield request, result, attempt
