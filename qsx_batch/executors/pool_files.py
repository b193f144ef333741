"""The work queue of persistent array tasks: a folder on the shared file system, no server and no open port.

Layout, under ``<run>.jobs/pool-<token>/``::

    queue/<seq>~<stage>~<key>~a<attempt>.todo              one individual waiting for an evaluator
    queue/<seq>~<stage>~<key>~a<attempt>~<worker>.claimed  the same, claimed by evaluator <worker>
    lease                                                  a counter the launcher rewrites while it lives
    stop                                                   present: every task ends (the launcher closed)
    tasks.json                                             the array jobs submitted for the pool
    notes/<task>.retiring                                  a task near its time limit claims no more work

A claim is :func:`os.rename` of a ``.todo`` file to its ``.claimed`` name in the same folder: atomic on local and
shared file systems (NFS, Lustre, GPFS), so of two evaluators renaming the same file one succeeds and the other
gets ``FileNotFoundError`` (``O_EXCL`` is not reliable on older NFS). ``<worker>`` is ``<task>.e<slot>``: the
task's SLURM id as submitit names it (``<array job>_<task>``, or the job id of an array of one, which submitit
submits as a plain job; a requeued task keeps it, and resumes its own claims) and the evaluator's slot in a task of
several GPUs. Results go through the stage's results channel (:mod:`.job_files`); the evaluator
deletes its claim after publishing, and the launcher puts back the claims of a task that ended.

The lease is read by content, never by time stamp: a task measures on its own clock how long the counter stays
the same, so clocks of login and compute nodes need not agree.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .base import EvalRequest
from .job_files import write_atomically

TODO, CLAIMED = ".todo", ".claimed"


@dataclass(frozen=True)
class Item:
    """One queued individual: its file name parsed, and (once read) what to do."""

    name: str
    seq: int
    stage: str
    key: str
    attempt: int
    worker: str = ""

    @classmethod
    def parse(cls, name: str) -> Item | None:
        stem, dot, suffix = name.rpartition(".")
        if name.startswith(".") or f".{suffix}" not in (TODO, CLAIMED):
            return None
        parts = stem.split("~")
        if len(parts) != (4 if f".{suffix}" == TODO else 5) or not parts[0].isdigit() or not parts[3][1:].isdigit():
            return None
        return cls(name, int(parts[0]), parts[1], parts[2], int(parts[3][1:]), parts[4] if len(parts) == 5 else "")

    @property
    def stem(self) -> str:
        return stem(self.seq, self.stage, self.key, self.attempt)

    @property
    def task(self) -> str:
        """The SLURM task (:func:`task_id`) of the evaluator holding the claim."""
        return self.worker.partition(".")[0]


def stem(seq: int, stage: str, key: str, attempt: int) -> str:
    """A queue file's name without its claim and suffix (zero-padded: names sort in posting order)."""
    return f"{seq:08d}~{stage}~{key}~a{attempt}"


def task_id(job: str, array_task: int) -> str:
    """A task's id as submitit names it, from the SLURM job id and array task id (-1: not an array)."""
    return f"{job}_{array_task}" if array_task >= 0 else job


@dataclass(frozen=True)
class Work:
    """What a queue file holds: the request and the results folder of its stage."""

    request: EvalRequest
    shards: Path


class PoolFiles:
    """The pool folder, for the launcher (post, put back, lease, stop) and the evaluators (claim, release)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.queue = self.folder / "queue"
        self.notes = self.folder / "notes"
        self.lease = self.folder / "lease"
        self.stop_file = self.folder / "stop"
        self._waiting: list[Item] = []  # unclaimed when last listed: claims try these before listing again

    def create(self) -> None:
        """Make the folders; a stop left by the previous launcher of the run is lifted."""
        self.queue.mkdir(parents=True, exist_ok=True)
        self.notes.mkdir(exist_ok=True)
        self.stop_file.unlink(missing_ok=True)

    # -- the queue -------------------------------------------------------------------------------------------
    def items(self) -> list[Item]:
        """Every queued and claimed individual, in posting order."""
        try:
            names = os.listdir(self.queue)
        except FileNotFoundError:
            return []
        return sorted((item for item in map(Item.parse, names) if item), key=lambda item: item.seq)

    def post(self, seq: int, stage: str, key: str, attempt: int, work: Work) -> None:
        """Queue one individual (written under a temporary name, then renamed: evaluators see it whole)."""
        write_atomically(self.queue / f"{stem(seq, stage, key, attempt)}{TODO}", pickle.dumps(work))

    def claim(self, worker: str, offset: int = 0) -> tuple[Item, Work] | None:
        """Claim one waiting individual for ``worker``; ``None`` when nothing waits. The folder is listed again
        only once every name of the last listing was tried, so a sweep of thousands costs each evaluator a
        listing per round of the queue, not per claim; ``offset`` rotates a fresh listing so that evaluators do
        not all race for the same file."""
        for fresh in (False, True):
            if fresh:
                todo = [item for item in self.items() if not item.worker]
                start = offset % len(todo) if todo else 0
                self._waiting = todo[start:] + todo[:start]
            while self._waiting:
                item = self._waiting.pop(0)
                claimed = replace(item, name=f"{item.stem}~{worker}{CLAIMED}", worker=worker)
                try:
                    os.rename(self.queue / item.name, self.queue / claimed.name)
                except FileNotFoundError:  # another evaluator was first
                    continue
                with open(self.queue / claimed.name, "rb") as f:
                    return claimed, pickle.load(f)
        return None

    def claims_of(self, worker: str) -> list[tuple[Item, Work]]:
        """The claims ``worker`` holds (a requeued task resumes them)."""
        found = []
        for item in self.items():
            if item.worker == worker:
                with open(self.queue / item.name, "rb") as f:
                    found.append((item, pickle.load(f)))
        return found

    def holds(self, item: Item) -> bool:
        """Whether the claim is still there (the launcher puts back the claims of tasks it saw end)."""
        return (self.queue / item.name).exists()

    def release(self, item: Item) -> None:
        """Drop a claim whose result is published."""
        (self.queue / item.name).unlink(missing_ok=True)

    def put_back(self, item: Item) -> None:
        """Queue a claimed individual again as its next attempt."""
        again = replace(item, attempt=item.attempt + 1, worker="")
        try:
            os.rename(self.queue / item.name, self.queue / f"{again.stem}{TODO}")
        except FileNotFoundError:  # its evaluator published and released it meanwhile
            pass

    # -- lease, stop and notes ---------------------------------------------------------------------------------
    def renew(self, counter: int) -> None:
        write_atomically(self.lease, f"{counter} {time.time():.0f}\n".encode())

    def lease_value(self) -> str:
        try:
            return self.lease.read_text()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        self.stop_file.write_text("stop\n")

    def stopped(self) -> bool:
        return self.stop_file.exists()

    def retire(self, task: str) -> None:
        (self.notes / f"{task}.retiring").write_text(f"{time.time():.0f}\n")

    def retiring(self) -> set[str]:
        """Tasks that said they claim no more work."""
        try:
            return {name.rpartition(".")[0] for name in os.listdir(self.notes) if name.endswith(".retiring")}
        except FileNotFoundError:
            return set()

    # -- the pool's array jobs ----------------------------------------------------------------------------------
    def arrays(self) -> list[dict]:
        """The array jobs submitted for this pool (job id, submitit folder, task ids, round), oldest first."""
        path = self.folder / "tasks.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def add_array(self, job_id: str, folder: Path, tasks: list[str], round_: int) -> None:
        arrays = [*self.arrays(), {"job_id": job_id, "folder": str(folder), "tasks": tasks, "round": round_}]
        write_atomically(self.folder / "tasks.json", json.dumps(arrays, indent=1).encode())


class LeaseWatch:
    """An evaluator's view of the lease: expired once its content stayed the same for ``seconds`` of this
    process's own clock (read at most once a second)."""

    def __init__(self, files: PoolFiles, seconds: float):
        self.files = files
        self.seconds = seconds
        self.value = files.lease_value()
        self.changed = self.checked = time.monotonic()

    def expired(self) -> bool:
        now = time.monotonic()
        if now - self.checked >= 1.0:
            self.checked = now
            value = self.files.lease_value()
            if value != self.value:
                self.value, self.changed = value, now
        return now - self.changed > self.seconds
