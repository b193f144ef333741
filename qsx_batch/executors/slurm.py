"""Evaluate each generation as SLURM array jobs submitted through submitit; results stream back as shard files.

One call of :meth:`SlurmExecutor.run` (one generation) splits the requests into chunks of
``individuals_per_task``, submits them as one array job (several when the cluster's ``MaxArraySize`` is smaller
than the number of chunks), and yields every result as soon as its worker publishes it (see
:mod:`qsx_batch.worker`). Individuals of tasks that raised, were cancelled, timed out too often or lost their
node are resubmitted up to ``max_retries`` times; what still has no result becomes a ``failed`` result.
"""

from __future__ import annotations

import getpass
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

import numpy as np
import submitit
from submitit.core.utils import FailedJobError
from submitit.helpers import clean_env

from ..errors import UserError
from ..interrupts import raise_if_requested
from ..problems import Problem
from ..result import STATUS_FAILED, IndividualResult
from ..search import EvalRequest
from ..worker import EvaluateChunk, Prepare, read_results, result_key
from ..workload import LaunchSpec, Workload

# sbatch options the executor sets itself (array, logs, signal, name, time limit through --time).
RESERVED_OPTIONS = {"array", "output", "error", "job-name", "signal", "open-mode", "time", "wrap", "test-only"}
DEFAULT_MAX_ARRAY_SIZE = 1001


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def require_slurm_clients() -> None:
    """Raise a UserError unless SLURM's client commands are on PATH (this is a SLURM login node)."""
    clients = ("sbatch", "srun", "squeue", "scancel", "sacct", "scontrol")
    missing = [name for name in clients if shutil.which(name) is None]
    if missing:
        raise UserError(
            f"{', '.join(missing)} not found on PATH: this machine is not a SLURM login node. Work on this machine "
            "instead ('qsx-batch explore WORKLOAD' for a search, 'qsx-batch evaluate' without SLURM options), or "
            "run the command where SLURM's commands are."
        )


def sbatch_options(settings: LaunchSpec) -> dict[str, Any]:
    """The sbatch options of one array task (``--key=value``; ``True`` is a bare flag) from the launch settings."""
    options: dict[str, Any] = {}
    for key in ("partition", "account", "qos", "mem"):
        if getattr(settings, key) is not None:
            options[key] = getattr(settings, key)
    if settings.gpus_per_task:
        options["gres"] = f"gpu:{settings.gpus_per_task}"
    for key, value in settings.slurm_opt.items():
        flag = key.lstrip("-").replace("_", "-")
        if flag in RESERVED_OPTIONS:
            raise UserError(f"launch.slurm_opt '{key}' is set by qsx-batch itself; use the matching launch option "
                            f"(--time for the time limit) instead. Reserved: {', '.join(sorted(RESERVED_OPTIONS))}.")
        options[flag] = value
    return options


def container_python(image: str, binds: list[str]) -> str:
    """The shell command that runs a task's Python inside an Apptainer image (submitit's ``python`` setting)."""
    words = ["apptainer", "exec", "--nv"]
    for bind in binds:
        words += ["--bind", bind]
    return " ".join(shlex.quote(w) for w in [*words, image, "python3"])


def _as_flags(options: dict[str, Any]) -> list[str]:
    return [f"--{key}" if value is True else f"--{key}={value}" for key, value in options.items() if value is not False]


def preflight(settings: LaunchSpec, job_name: str) -> None:
    """Let SLURM check the task settings (``sbatch --test-only``: nothing is submitted) and that sacct works."""
    command = ["sbatch", "--test-only", f"--job-name={job_name}", f"--time={settings.time}",
               *_as_flags(sbatch_options(settings)), "--wrap", "true"]
    with clean_env():
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(
            f"SLURM refuses the array-task settings; nothing was submitted. '{shlex.join(command)}' said:\n"
            f"{(done.stderr or done.stdout).strip()}\n"
            "Check --partition (sinfo lists them), --account and --qos (sacctmgr show assoc user=$USER), "
            "--gpus-per-task (0 for partitions without GPUs), --mem and --slurm-opt."
        )
    done = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes", "-o", "JobID"], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"'sacct' fails ({(done.stderr or done.stdout).strip()}): qsx-batch launch needs SLURM "
                        "accounting to notice cancelled and failed tasks. Ask your admins, or use 'qsx-batch explore'.")


def max_array_size() -> int:
    """The cluster's MaxArraySize (``scontrol show config``): at most this many tasks per array job."""
    done = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True)
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", done.stdout, re.M)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def queued_job_ids(job_name: str) -> set[str]:
    """Ids of this user's jobs called ``job_name`` that are still queued or running."""
    done = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "--name", job_name, "-o", "%A"],
                          capture_output=True, text=True)
    return set(done.stdout.split())


@dataclass
class _Task:
    job: submitit.SlurmJob
    keys: list[str]
    attempt: int
    ended: bool = False

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
        state = self.job.watcher.get_state(self.job.job_id, mode="cache")
        return False, f"array task {self.job.job_id} ended {state} before reporting all its individuals"


@dataclass
class _Array:
    job_id: str
    folder: Path
    tasks: list[_Task]


class SlurmExecutor:
    """Runs evaluation requests as SLURM array tasks and yields their results as they are published."""

    def __init__(self, workload: Workload, problem: Problem, settings: LaunchSpec, jobs_dir: Path, token: str,
                 device: str | None = None, prepare: Prepare | None = None, verbose: bool = False,
                 log: Callable[[str], None] = _stderr, poll_s: float = 0.5, state_poll_s: float = 10.0,
                 settle_s: float = 60.0, phase: str | None = None):
        self.workload = workload
        self.problem = problem
        self.settings = settings
        self.jobs_dir = Path(jobs_dir).resolve()  # tasks may start in another folder (containers)
        self.shards_root = self.jobs_dir / f"shards-{token}"
        self.job_name = f"qsx-{token}"
        self.device = device
        self.prepare = prepare
        self.verbose = verbose
        self.log = log
        self.poll_s = poll_s
        self.state_poll_s = state_poll_s
        self.settle_s = settle_s
        self.phase = phase
        self.max_array_size = max_array_size()
        self.python = container_python(settings.container, settings.bind) if settings.container else None
        self.parameters = {
            "job_name": self.job_name, "time": settings.time, "array_parallelism": settings.array_parallelism,
            "signal_delay_s": min(90, settings.time * 15), "additional_parameters": sbatch_options(settings),
        }
        self._active: list[_Array] = []
        self._adopted = False

    # -- the Executor protocol -------------------------------------------------------------------------------
    def run(self, requests: list[EvalRequest], generation: int) -> Iterator[tuple[EvalRequest, IndividualResult, int]]:
        """Yield (request, result, attempt) for every request, in the order results are published.

        A task that ends with individuals unreported has them resubmitted at once (attempt + 1) while the
        other tasks go on; after ``max_retries`` resubmissions they are yielded as failed results.
        """
        if not self._adopted:
            self._adopt_previous_jobs()
        if not requests:
            return
        shards = self._shard_folder(generation)
        pending = {result_key(request): request for request in requests}
        yield from self._collect(shards, pending)  # published after the previous launcher of this run died
        live = self._submit(list(pending), pending, shards, generation, attempt=1) if pending else []
        start = last_check = time.monotonic()
        while live:
            time.sleep(self.poll_s)
            raise_if_requested()
            yield from self._collect(shards, pending)
            if time.monotonic() - last_check >= self._state_interval(start):
                submitit.SlurmJob.watcher.update()
                self._release_requeued()
                last_check = time.monotonic()
            ended = [task for task in live if task.finished()]
            if ended:
                yield from self._settle(ended, shards, pending)
                live = [task for task in live if task not in ended]
                live += yield from self._retry_or_fail(ended, pending, shards, generation)
                self._retire()

    def close(self) -> None:
        """Cancel this run's queued and running tasks (unless keep_jobs); a second Ctrl-C/SIGTERM cannot stop it."""
        ids = [array.job_id for array in self._active]
        if ids and self.settings.keep_jobs:
            self.log(f"left SLURM jobs {' '.join(ids)} queued/running (--keep-jobs); '--resume' collects their "
                     f"results, 'scancel --name {self.job_name}' stops them")
        elif ids:
            handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                subprocess.run(["scancel", *ids], capture_output=True)
                for array in self._active:
                    _remove_pickles(array.folder)
            finally:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
            self.log(f"cancelled SLURM jobs {' '.join(ids)}")
        self._active = []

    # -- submission --------------------------------------------------------------------------------------------
    def _submit(self, keys: list[str], pending: dict[str, EvalRequest], shards: Path, generation: int,
                attempt: int) -> list[_Task]:
        """Submit the requests as chunks of individuals_per_task, at most MaxArraySize tasks per array job."""
        per = self.settings.individuals_per_task
        chunks = [keys[i: i + per] for i in range(0, len(keys), per)]
        tasks = []
        for start in range(0, len(chunks), self.max_array_size):
            group = chunks[start: start + self.max_array_size]
            folder = self.jobs_dir / f"{self._stage(generation)}-a{attempt}-{uuid.uuid4().hex[:8]}"
            executor = submitit.SlurmExecutor(folder, max_num_timeout=self.settings.max_retries, python=self.python)
            executor.update_parameters(**self.parameters)
            work = [EvaluateChunk(self.workload, [(key, pending[key]) for key in chunk], shards, attempt, self.device,
                                  self.prepare) for chunk in group]
            try:
                with clean_env():
                    jobs = executor.submit_array(work)
            except FailedJobError as exc:
                raise UserError(f"sbatch refused the array job of {self._stage(generation)}: {str(exc).strip()}\n"
                                "Every result so far is stored; fix the setting and run again (launch: with "
                                "--resume; evaluate skips individuals already re-evaluated).") from None
            array = _Array(jobs[0].job_id.partition("_")[0], folder,
                           [_Task(job, chunk, attempt) for job, chunk in zip(jobs, group)])
            self._active.append(array)
            tasks += array.tasks
            if self.verbose:
                self.log(f"{self._stage(generation)} attempt {attempt}: SLURM job {array.job_id}, {len(group)} "
                         f"tasks of up to {per} individuals -> {folder}")
        return tasks

    # -- following --------------------------------------------------------------------------------------------
    def _collect(self, shards: Path, pending: dict[str, EvalRequest]) -> Iterator[tuple]:
        for key, result, attempt in read_results(shards, set(pending)):
            yield pending.pop(key), result, attempt

    def _settle(self, ended: list[_Task], shards: Path, pending: dict[str, EvalRequest]) -> Iterator[tuple]:
        """Results of tasks that succeeded must exist: wait up to settle_s for a shared file system to list them."""
        succeeded = [task for task in ended if task.outcome()[0]]
        deadline = time.monotonic() + self.settle_s
        while any(key in pending for task in succeeded for key in task.keys) and time.monotonic() < deadline:
            time.sleep(self.poll_s)
            yield from self._collect(shards, pending)

    def _retry_or_fail(self, ended: list[_Task], pending: dict[str, EvalRequest], shards: Path,
                       generation: int) -> Generator[tuple, None, list[_Task]]:
        """Resubmit what ended tasks left unreported (returns the new tasks), or yield it as failed results."""
        retry: dict[int, list[str]] = {}
        for task in ended:
            task.ended = True
            missing = [key for key in task.keys if key in pending]
            if not missing:
                continue
            text = task.outcome()[1]
            if task.attempt <= self.settings.max_retries:
                self.log(f"{self._stage(generation)}: {text}; resubmitting {len(missing)} individuals "
                         f"(attempt {task.attempt + 1} of {self.settings.max_retries + 1})")
                retry.setdefault(task.attempt + 1, []).extend(missing)
                continue
            self.log(f"{self._stage(generation)}: {text}; {len(missing)} individuals recorded as failed")
            for key in missing:
                yield pending[key], self._failed(pending.pop(key), text, task), task.attempt
        return [task for attempt, keys in retry.items()
                for task in self._submit(keys, pending, shards, generation, attempt)]

    def _retire(self) -> None:
        """Forget arrays whose tasks all ended and delete their pickles."""
        for array in [a for a in self._active if all(task.ended for task in a.tasks)]:
            _remove_pickles(array.folder)
            self._active.remove(array)

    def _release_requeued(self) -> None:
        """Start requeued tasks now: SLURM holds a requeued job (BeginTime) for about two minutes."""
        if "begin" in self.parameters["additional_parameters"]:
            return
        done = subprocess.run(["squeue", "-h", "-r", "-t", "PD", "-j", ",".join(a.job_id for a in self._active),
                               "-o", "%i %r"], capture_output=True, text=True)
        for line in done.stdout.splitlines():
            job_id, _, reason = line.partition(" ")
            if reason.strip() == "BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
                if self.verbose:
                    self.log(f"released requeued task {job_id}")

    def _adopt_previous_jobs(self) -> None:
        """Wait for tasks a killed launcher of this run left behind: their results are reused, not recomputed."""
        self._adopted = True
        ids = queued_job_ids(self.job_name)
        if ids:
            self.log(f"waiting for SLURM jobs {' '.join(sorted(ids))} of the previous launcher of this run "
                     f"(their results are reused; 'scancel --name {self.job_name}' to stop them)")
        start = time.monotonic()
        while ids:
            time.sleep(self._state_interval(start))
            ids = queued_job_ids(self.job_name)
        for folder in self.jobs_dir.glob("*/"):
            _remove_pickles(folder)

    def _stage(self, generation: int) -> str:
        """What log lines and submission folders call the requests of one run() call: the phase (one word) given,
        else the generation."""
        return self.phase or _name(generation)

    def _state_interval(self, start: float) -> float:
        """Seconds between SLURM state queries: 2 s at first, growing to state_poll_s (light on slurmdbd)."""
        return min(self.state_poll_s, 2.0 + (time.monotonic() - start) / 10)

    # -- files ------------------------------------------------------------------------------------------------
    def _shard_folder(self, generation: int) -> Path:
        """This generation's result folder; folders of earlier generations (all merged) are removed.

        Later ones are kept: a resumed run evaluates the baseline (if asked) before the generation its killed
        launcher was in, whose tasks may have published results there.
        """
        folder = self.shards_root / _name(generation)
        earlier = {_name(g) for g in range(-1, generation)}
        if self.shards_root.is_dir():
            for old in self.shards_root.iterdir():
                if old.name in earlier:
                    shutil.rmtree(old, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _failed(self, request: EvalRequest, error: str, task: _Task) -> IndividualResult:
        """The record of an individual that still had no result after the last attempt: worst fitness."""
        lower, _ = self.problem.bounds
        zeros = np.zeros(len(self.problem.layers), dtype=np.int64)
        job_id, task_id = task.ids
        genome = np.full(len(lower), np.nan) if request.genome is None else np.asarray(request.genome, dtype=float)
        node = task.job.watcher.get_info(task.job.job_id, mode="cache").get("NodeList", "")
        return IndividualResult(
            genome=genome, params=np.full(len(lower), np.nan), accuracy=0.0, correct=0, samples=0,
            cost=self.problem.worst_cost(), blocks_total=zeros, blocks_already=zeros, blocks_created=zeros,
            eval_seconds=0.0, host=node, device="", status=STATUS_FAILED, error=error, slurm_job_id=job_id,
            slurm_array_task_id=task_id, node=node,
        )


def _name(generation: int) -> str:
    return "baseline" if generation < 0 else f"g{generation:04d}"


def _remove_pickles(folder: Path) -> None:
    """Delete a finished submission's pickles (the sbatch script and logs stay for inspection)."""
    for path in folder.glob("*.pkl"):
        path.unlink(missing_ok=True)
