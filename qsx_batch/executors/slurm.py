"""Evaluate on SLURM array tasks submitted through submitit; results stream back as shard files.

:class:`SlurmExecutor` holds what both ways of using array tasks share (submission, SLURM states, the results
channel, failed records, cancelling); :mod:`.pool` keeps persistent tasks for the whole run (the default of
``launch``), and :class:`StageArrays` here submits new array jobs for every stage (``--workers per-generation``).

One call of :meth:`StageArrays.run` (one stage: the baseline, the sensitivity sweep, a generation or a
re-evaluation) splits the requests into chunks of ``individuals_per_task``, submits them as one array job (several
when the cluster's ``MaxArraySize`` is smaller than the number of chunks), and yields every result as soon as its
task publishes it (:mod:`.worker` writes, :mod:`.job_files` is the channel). Individuals of tasks that raised, were
cancelled, timed out too often or lost their node are resubmitted up to ``max_retries`` times; what still has no
result becomes a ``failed`` result. Every call ends with one log line: its tasks by how they ended, the most queued
and running at once, its wall time.

The executor reads two private parts of submitit (1.5.x, pinned in pyproject.toml and checked by
tests/test_submitit_contract.py): the result pickle of a finished task (``job.paths.result_pickle``, a pair
(status, value)) and the watcher's cached SLURM states (``watcher.is_done/get_state/get_info(mode="cache")``).
"""

from __future__ import annotations

import pickle
import shutil
import signal
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import submitit
from submitit.core.utils import FailedJobError
from submitit.helpers import clean_env

from ..errors import UserError
from ..evaluation.record import IndividualResult
from ..interrupts import raise_if_requested
from ..problems import Problem
from ..workload import LaunchSpec, Workload
from .base import EvalRequest, Stage
from .job_files import JobFiles, read_results, result_key
from .slurm_cluster import cancel, container_python, max_array_size, queued_job_ids, release_requeued, sbatch_options
from .worker import EvaluateChunk

QUEUED_STATES = ("PENDING", "REQUEUED", "UNKNOWN")  # UNKNOWN: submitted, not listed by accounting yet
RUNNING_STATES = ("RUNNING", "COMPLETING")


def log_line(message: str) -> None:
    """The launcher's log: ``2026-12-02 19:04:05 message`` on stderr (a launch runs for days)."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", file=sys.stderr, flush=True)


@dataclass
class TaskJob:
    job: submitit.SlurmJob
    keys: list[str]
    attempt: int
    end: str = ""  # how it ended: "finished" (all its results in), "retried" or "failed" (some resubmitted/failed)

    @property
    def ended(self) -> bool:
        return bool(self.end)

    @property
    def ids(self) -> tuple[str, int]:
        job, _, task = self.job.job_id.partition("_")
        return job, int(task) if task else -1

    def finished(self) -> bool:
        """Result pickle written, or SLURM accounting says the task ended (as of the last forced update)."""
        return self.job.paths.result_pickle.exists() or self.job.watcher.is_done(self.job.job_id, mode="cache")

    def outcome(self) -> tuple[bool, str]:
        """(succeeded, why results are missing) of a finished task."""
        path = self.job.paths.result_pickle
        if path.exists():
            with open(path, "rb") as f:
                status, value = pickle.load(f)
            if status == "success":
                return True, f"array task {self.job.job_id} succeeded but some of its results never appeared"
            lines = [line for line in str(value).splitlines() if line.strip()]
            return False, f"array task {self.job.job_id} raised {lines[-1] if lines else value}"
        state = self.state()
        return False, f"array task {self.job.job_id} ended {state} before reporting all its individuals"

    def state(self) -> str:
        """SLURM's state as of the last forced update (UNKNOWN until accounting lists the task)."""
        return self.job.watcher.get_state(self.job.job_id, mode="cache")


@dataclass
class ArrayJob:
    job_id: str
    folder: Path
    tasks: list[TaskJob]


@dataclass(kw_only=True)
class MostAtOnce:
    """The most tasks queued and running at once in one stage."""

    queued: int = 0
    running: int = 0

    def sample(self, live: list[TaskJob]) -> None:
        """Count the live tasks' states as of the last update (no SLURM query of its own)."""
        states = [task.state() for task in live]
        self.queued = max(self.queued, sum(state in QUEUED_STATES for state in states))
        self.running = max(self.running, sum(state in RUNNING_STATES for state in states))


@dataclass
class _Tally(MostAtOnce):
    """The tasks of one :meth:`StageArrays.run` call and how they ended."""

    tasks: list[TaskJob]

    def line(self, stage: str, individuals: int, seconds: float) -> str:
        ends = [task.end for task in self.tasks]
        return (f"{stage}: {individuals} individuals in {len(self.tasks)} tasks: at most {self.queued} queued and "
                f"{self.running} running at once; {ends.count('finished')} finished, {ends.count('retried')} "
                f"retried, {ends.count('failed')} failed; {seconds:.1f} s")


class SlurmExecutor:
    """The shared part of the SLURM executors: settings, submission, SLURM states, files and failed records."""

    def __init__(self, workload: Workload, problem: Problem, settings: LaunchSpec, files: JobFiles,
                 device: str | None = None, threads: int | None = None, verbose: bool = False,
                 log: Callable[[str], None] = log_line,
                 poll_s: float = 0.5, state_poll_s: float = 10.0, settle_s: float = 60.0):
        self.workload = workload
        self.problem = problem
        self.settings = settings
        self.files = JobFiles(Path(files.root).resolve(), files.token)  # tasks may start elsewhere (containers)
        self.job_name = self.files.job_name
        self.device = device
        self.threads = threads
        self.verbose = verbose
        self.log = log
        self.poll_s = poll_s
        self.state_poll_s = state_poll_s
        self.settle_s = settle_s
        self.max_array_size = max_array_size()
        self.python = container_python(settings.container, settings.bind) if settings.container else None
        self.parameters = {
            "job_name": self.job_name, "time": settings.time, "array_parallelism": settings.array_parallelism,
            "signal_delay_s": min(90, settings.time * 15), "additional_parameters": sbatch_options(settings),
        }
        self._active: list[ArrayJob] = []

    def close(self) -> None:
        """Cancel this run's queued and running tasks (unless keep_jobs); a second Ctrl-C/SIGTERM cannot stop it."""
        ids = [array.job_id for array in self._active]
        if ids and self.settings.keep_jobs:
            self.log(f"left SLURM jobs {' '.join(ids)} queued/running (--keep-jobs); '--resume' collects their "
                     f"results, 'scancel --name {self.job_name}' stops them")
        elif ids:
            handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                cancel(ids)
                for array in self._active:
                    remove_pickles(array.folder)
            finally:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
            self.log(f"cancelled SLURM jobs {' '.join(ids)}")
        self._active = []

    def _submit_array(self, work: list, keys: list[list[str]], stage: str, attempt: int) -> ArrayJob:
        """Submit the callables ``work`` as one array job (``keys``: what each task evaluates, if known)."""
        folder = self.files.submission(stage, attempt)
        executor = submitit.SlurmExecutor(folder, max_num_timeout=self.settings.max_retries, python=self.python)
        executor.update_parameters(**self.parameters)
        try:
            with clean_env():
                jobs = executor.submit_array(work)
        except FailedJobError as exc:
            raise UserError(f"sbatch refused the array job of {stage}: {str(exc).strip()}\n"
                            "Every result so far is stored; fix the setting and run again (launch: with "
                            "--resume; evaluate skips individuals already re-evaluated).") from None
        array = ArrayJob(jobs[0].job_id.partition("_")[0], folder,
                       [TaskJob(job, chunk, attempt) for job, chunk in zip(jobs, keys)])
        self._active.append(array)
        return array

    @staticmethod
    def _pending(requests: list[EvalRequest]) -> dict[str, EvalRequest]:
        """The stage's requests by result key."""
        return {result_key(request): request for request in requests}

    def _collect(self, shards: Path, pending: dict[str, EvalRequest]) -> Iterator[tuple]:
        for key, result, attempt in read_results(shards, set(pending)):
            yield pending.pop(key), result, attempt

    def _release_requeued(self) -> None:
        """Start requeued tasks now instead of SLURM's two-minute hold (unless the user set a begin time)."""
        if "begin" in self.parameters["additional_parameters"] or not self._active:
            return
        for job_id in release_requeued([a.job_id for a in self._active]):
            if self.verbose:
                self.log(f"released requeued task {job_id}")

    def _wait_for(self, ids: set[str]) -> None:
        """Wait for jobs of this run's killed launcher: their results are reused, not recomputed."""
        if ids:
            self.log(f"waiting for SLURM jobs {' '.join(sorted(ids))} of the previous launcher of this run "
                     f"(their results are reused; 'scancel --name {self.job_name}' to stop them)")
        start = time.monotonic()
        while ids:
            time.sleep(self._state_interval(start))
            ids &= queued_job_ids(self.job_name)

    def _state_interval(self, start: float) -> float:
        """Seconds between SLURM state queries: 2 s at first, growing to state_poll_s (light on slurmdbd)."""
        return min(self.state_poll_s, 2.0 + (time.monotonic() - start) / 10)

    def _shard_folder(self, stage: Stage) -> Path:
        """This stage's result folder; folders of earlier stages (all merged) are removed.

        Later ones are kept: a resumed run evaluates the baseline (if asked) before the generation its killed
        launcher was in, whose tasks may have published results there.
        """
        folder = self.files.shards(stage.name)
        earlier = {done.name for done in stage.earlier()}
        if self.files.shards_root.is_dir():
            for old in self.files.shards_root.iterdir():
                if old.name in earlier:
                    shutil.rmtree(old, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _failed(self, request: EvalRequest, error: str, task: TaskJob) -> IndividualResult:
        """The record of an individual that still had no result after the last attempt: worst fitness."""
        job_id, task_id = task.ids
        node = task.job.watcher.get_info(task.job.job_id, mode="cache").get("NodeList", "")
        return IndividualResult.failed(request.genome, len(self.problem.bounds[0]), len(self.problem.layers),
                                       self.problem.worst_cost(), error, host=node, slurm_job_id=job_id,
                                       slurm_array_task_id=task_id, node=node)


class StageArrays(SlurmExecutor):
    """Runs each stage's requests as new SLURM array tasks and yields their results as they are published."""

    def __init__(self, *args, task: type[EvaluateChunk] = EvaluateChunk, **kwargs):
        super().__init__(*args, **kwargs)
        self.task = task
        self._adopted = False

    def run(self, requests: list[EvalRequest], stage: Stage) -> Iterator[tuple[EvalRequest, IndividualResult, int]]:
        """Yield (request, result, attempt) for every request, in the order results are published.

        A task that ends with individuals unreported has them resubmitted at once (attempt + 1) while the
        other tasks go on; after ``max_retries`` resubmissions they are yielded as failed results.
        """
        if not self._adopted:
            self._adopted = True
            self._wait_for(queued_job_ids(self.job_name))
            for folder in self.files.root.glob("*/"):
                remove_pickles(folder)
        if not requests:
            return
        start = time.monotonic()
        shards, pending = self._shard_folder(stage), self._pending(requests)
        yield from self._collect(shards, pending)  # published after the previous launcher of this run died
        live = self._submit(list(pending), pending, shards, stage, attempt=1) if pending else []
        tally = _Tally(list(live))
        submitted = last_check = time.monotonic()
        while live:
            time.sleep(self.poll_s)
            raise_if_requested()
            yield from self._collect(shards, pending)
            if time.monotonic() - last_check >= self._state_interval(submitted):
                submitit.SlurmJob.watcher.update()
                self._release_requeued()
                tally.sample(live)
                last_check = time.monotonic()
            ended = [task for task in live if task.finished()]
            if ended:
                yield from self._settle(ended, shards, pending)
                live = [task for task in live if task not in ended]
                resubmitted = yield from self._retry_or_fail(ended, pending, shards, stage)
                live += resubmitted
                tally.tasks += resubmitted
                self._retire()
        self.log(tally.line(stage.name, len(requests), time.monotonic() - start))

    def _submit(self, keys: list[str], pending: dict[str, EvalRequest], shards: Path, stage: Stage,
                attempt: int) -> list[TaskJob]:
        """Submit the requests as chunks of individuals_per_task, at most MaxArraySize tasks per array job."""
        per = self.settings.individuals_per_task
        chunks = [keys[i: i + per] for i in range(0, len(keys), per)]
        tasks = []
        for start in range(0, len(chunks), self.max_array_size):
            group = chunks[start: start + self.max_array_size]
            work = [self.task(self.workload, [(key, pending[key]) for key in chunk], shards, attempt, self.device,
                              self.threads) for chunk in group]
            array = self._submit_array(work, group, stage.name, attempt)
            tasks += array.tasks
            if self.verbose:
                self.log(f"{stage.name} attempt {attempt}: SLURM job {array.job_id}, {len(group)} "
                         f"tasks of up to {per} individuals -> {array.folder}")
        return tasks

    def _settle(self, ended: list[TaskJob], shards: Path, pending: dict[str, EvalRequest]) -> Iterator[tuple]:
        """Collect what ended tasks published since the last poll (a task that raised after its first result
        published that one before it ended), then wait up to settle_s for a shared file system to list the results
        of tasks that succeeded."""
        yield from self._collect(shards, pending)
        succeeded = [task for task in ended if task.outcome()[0]]
        deadline = time.monotonic() + self.settle_s
        while any(key in pending for task in succeeded for key in task.keys) and time.monotonic() < deadline:
            time.sleep(self.poll_s)
            yield from self._collect(shards, pending)

    def _retry_or_fail(self, ended: list[TaskJob], pending: dict[str, EvalRequest], shards: Path,
                       stage: Stage) -> Generator[tuple, None, list[TaskJob]]:
        """Resubmit what ended tasks left unreported (returns the new tasks), or yield it as failed results."""
        retry: dict[int, list[str]] = {}
        for task in ended:
            missing = [key for key in task.keys if key in pending]
            task.end = "finished" if not missing else "retried" if task.attempt <= self.settings.max_retries else "failed"
            if not missing:
                continue
            text = task.outcome()[1]
            if task.end == "retried":
                self.log(f"{stage.name}: {text}; resubmitting {len(missing)} individuals "
                         f"(attempt {task.attempt + 1} of {self.settings.max_retries + 1})")
                retry.setdefault(task.attempt + 1, []).extend(missing)
                continue
            self.log(f"{stage.name}: {text}; {len(missing)} individuals recorded as failed")
            for key in missing:
                yield pending[key], self._failed(pending.pop(key), text, task), task.attempt
        return [task for attempt, keys in retry.items()
                for task in self._submit(keys, pending, shards, stage, attempt)]

    def _retire(self) -> None:
        """Forget arrays whose tasks all ended and delete their pickles."""
        for array in [a for a in self._active if all(task.ended for task in a.tasks)]:
            remove_pickles(array.folder)
            self._active.remove(array)


def remove_pickles(folder: Path) -> None:
    """Delete a finished submission's pickles (the sbatch script and logs stay for inspection)."""
    for path in folder.glob("*.pkl"):
        path.unlink(missing_ok=True)
