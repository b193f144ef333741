"""A run's jobs folder ``<run>.jobs/`` beside ``<run>.h5``, and the results channel between tasks and launcher.

Layout (the folder must be on a file system the compute nodes share)::

    <run>.jobs/run.json                         run token and the launch settings of the run
    <run>.jobs/<stage>-a<attempt>-<id>/         one submitit folder per array job (sbatch script, logs, pickles)
    <run>.jobs/shards-<token>/<stage>/<key>.pkl the results channel, one file per result
    <run>.jobs/evaluate-<id>/...                the same for one 'qsx-batch evaluate' on SLURM
    <run>.jobs/pool-<token>/                    the queue of persistent tasks (:mod:`.pool_files`)

``<stage>`` is the :class:`~qsx_batch.executors.base.Stage` name: ``baseline``, ``sensitivity``, ``g0007`` (the
generation) or ``evaluate``.

The channel: each result is a small pickle written to a temporary name in the same folder and moved into place
with :func:`os.replace`. A rename is atomic on local and shared file systems (NFS, Lustre, GPFS), so the
launcher, which polls the folder, sees a result whole or not at all; no two processes ever write the same file,
nothing is appended across hosts, and a task killed at any moment leaves only a stray temporary file. ``key``
is a digest of the request (genome, dataset, label), so a requeued or resubmitted task skips what is already
there and a resumed launcher finds results that arrived after it died.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation.record import IndividualResult
from .base import EvalRequest

RUN_STATE = "run.json"
SUFFIX = ".pkl"


@dataclass(frozen=True)
class JobFiles:
    """Where one executor's files live: its submission folders under ``root`` and its results channel."""

    root: Path
    token: str

    @property
    def job_name(self) -> str:
        """The SLURM job name of every array job of this executor."""
        return f"qsx-{self.token}"

    @property
    def shards_root(self) -> Path:
        return self.root / f"shards-{self.token}"

    def shards(self, stage: str) -> Path:
        """The results folder of one stage."""
        return self.shards_root / stage

    def submission(self, stage: str, attempt: int) -> Path:
        """A new submitit folder for one array job of ``stage``."""
        return self.root / f"{stage}-a{attempt}-{uuid.uuid4().hex[:8]}"


class RunJobs:
    """The jobs folder of one results file: ``run.json`` and the files of its executors."""

    def __init__(self, results: Path):
        self.results = Path(results)
        self.folder = self.results.with_name(self.results.stem + ".jobs")

    def state(self) -> dict:
        """``run.json`` (empty when the run was not launched on SLURM before)."""
        path = self.folder / RUN_STATE
        return json.loads(path.read_text()) if path.is_file() else {}

    def settings(self) -> dict:
        """The launch settings the run was last started with (empty when none)."""
        return self.state().get("settings", {})

    def start(self, workload_name: str, settings: dict, new: bool) -> JobFiles:
        """Create (new run: from scratch) or update ``run.json``; the files of the run's search executor, named
        by the run token (kept across resumes, so a resumed launcher finds its predecessor's jobs)."""
        state = {} if new else self.state()
        if new and self.folder.exists():
            shutil.rmtree(self.folder)  # left over from a deleted results file of the same name
        token = state.get("token") or f"{re.sub(r'[^A-Za-z0-9_.]', '_', workload_name)[:24]}-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / RUN_STATE).write_text(json.dumps({"token": token, "settings": settings}, indent=1))
        return JobFiles(self.folder, token)

    def evaluation(self) -> JobFiles:
        """Fresh files for one ``qsx-batch evaluate`` on SLURM."""
        token = f"evaluate-{uuid.uuid4().hex[:8]}"
        return JobFiles(self.folder / token, token)


# -- the results channel ---------------------------------------------------------------------------------------
def result_key(request: EvalRequest) -> str:
    """A file-name-safe digest that identifies a request (genome, dataset, label) exactly."""
    digest = hashlib.sha1(f"{request.dataset}|{request.label}|".encode())
    digest.update(b"fp32" if request.genome is None else np.asarray(request.genome, dtype=np.float64).tobytes())
    return digest.hexdigest()


def write_atomically(path: Path, data: bytes, sync: bool = False) -> None:
    """Write ``path`` under a hidden temporary name in its folder, then rename it: readers on any node see the
    old file or the whole new one. ``sync`` flushes it to disk first (a result must survive a node crash)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_result(folder: Path, key: str, result: IndividualResult, attempt: int) -> None:
    """Publish one result atomically, flushed to disk."""
    write_atomically(folder / f"{key}{SUFFIX}", pickle.dumps((result, attempt)), sync=True)


def published_keys(folder: Path) -> set[str]:
    """Keys of the results published in ``folder``."""
    return {name[: -len(SUFFIX)] for name in os.listdir(folder) if name.endswith(SUFFIX) and not name.startswith(".")}


def read_results(folder: Path, wanted: set[str]) -> Iterator[tuple[str, IndividualResult, int]]:
    """(key, result, attempt) for every published result whose key is in ``wanted``."""
    for key in sorted(published_keys(folder) & wanted):
        with open(folder / f"{key}{SUFFIX}", "rb") as f:
            result, attempt = pickle.load(f)
        yield key, result, attempt
