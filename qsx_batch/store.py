"""The run's HDF5 results file: one writer appends each individual as soon as it exists.

The writer keeps the file in HDF5 SWMR mode, so readers (``qsx-batch inspect``) open it while a run is going.
Every table has a ``count`` dataset written last for each row. Columns grow one chunk at a time, so rows beyond
``count`` are spare or a partial row of a process killed mid-append: readers ignore them, a clean close and the
next writer trim them. A file left
behind by a killed writer still carries HDF5's "open for write" flag; :func:`open_for_append` copies it into a
clean file (readers open it with ``swmr=True`` meanwhile). Layout: docs/results-format.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import UserError
from .result import IndividualResult

FORMAT = "qsx-batch-results"
FORMAT_VERSION = 1
STR = h5py.string_dtype()
GROW_ROWS = 64  # rows added to every column of a table at once (the chunk length)

# column name -> (dtype, width); width "genes"/"layers" is filled in per run, 2 is the objective pair.
COLUMNS: dict[str, tuple[Any, Any]] = {
    "genome": ("f8", "genes"),
    "params": ("f8", "genes"),
    "accuracy": ("f8", None),
    "correct": ("i8", None),
    "samples": ("i8", None),
    "cost": ("f8", None),
    "objectives": ("f8", 2),
    "fitness": ("f8", 2),
    "constraint": ("f8", None),
    "blocks_total": ("i8", "layers"),
    "blocks_already": ("i8", "layers"),
    "blocks_created": ("i8", "layers"),
    "generation": ("i4", None),
    "eval_seconds": ("f8", None),
    "finished_at": ("f8", None),
    "status": (STR, None),
    "error": (STR, None),
    "host": (STR, None),
    "device": (STR, None),
    "slurm_job_id": (STR, None),
    "slurm_array_task_id": ("i8", None),
    "node": (STR, None),
    "gpu": (STR, None),
    "attempt": ("i4", None),
    "ci_low": ("f8", None),
    "ci_high": ("f8", None),
}
BASELINE_COLUMNS = {**COLUMNS, "label": (STR, None), "dataset": (STR, None)}
GENERATION_COLUMNS = {
    "population": ("i8", "pop"),
    "evaluated": ("i8", None),
    "eval_seconds": ("f8", None),
    "samples": ("i8", None),
    "hypervolume": ("f8", None),
    "finished_at": ("f8", None),
}


@dataclass(frozen=True)
class RunHeader:
    """What is fixed for a run: written once when the file is created."""

    workload_name: str
    workload_sha256: str
    workload_yaml: str
    workload_path: str
    problem: str
    seed: int
    cost_name: str
    cost_unit: str
    maximize_cost: bool
    integer: bool
    gene_names: list[str]
    lower: np.ndarray
    upper: np.ndarray
    layer_names: list[str]
    layer_kinds: list[str]
    layer_params: list[int]
    layer_macs: list[int]
    layer_input_shapes: list[str]
    pop_size: int
    versions: dict[str, str]
    worst_cost: float
    max_blocks_per_sample: float


def _create_table(group: h5py.Group, columns: dict, widths: dict[str, int]) -> None:
    for name, (dtype, width) in columns.items():
        shape = () if width is None else (widths[width] if isinstance(width, str) else width,)
        group.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                             chunks=(64, *shape), fillvalue=None if dtype is STR else 0)
    group.create_dataset("count", shape=(1,), dtype="i8", data=[0])


def _table_count(group: h5py.Group) -> int:
    return int(group["count"][0])


class _Table:
    """Appends rows to one table: column datasets looked up once and grown ``GROW_ROWS`` rows (one chunk) at a
    time, so an append is one write per column; :meth:`trim` cuts the columns back to the committed rows."""

    def __init__(self, group: h5py.Group):
        self.count = group["count"]
        self.columns = {name: ds for name, ds in group.items() if name != "count"}
        self.rows = int(self.count[0])
        self.capacity = min((ds.shape[0] for ds in self.columns.values()), default=0)

    def append(self, row: dict[str, Any]) -> int:
        """Write one row into every column and flush, then bump ``count`` (the commit point) and flush: a
        committed row's data (variable-length strings included) is on disk before ``count`` says it exists."""
        index = self.rows
        if index >= self.capacity:
            self.capacity = index + GROW_ROWS
            for ds in self.columns.values():
                ds.resize(self.capacity, axis=0)
        for name, value in row.items():
            self.columns[name][index] = value
        self.count.file.flush()
        self.count[0] = index + 1
        self.count.file.flush()
        self.rows = index + 1
        return index

    def trim(self) -> None:
        """Cut every column to the committed rows (rows beyond ``count`` are spare or from a killed writer)."""
        for ds in self.columns.values():
            if ds.shape[0] != self.rows:
                ds.resize(self.rows, axis=0)
        self.capacity = self.rows


def _result_row(result: IndividualResult, generation: int, fitness: tuple, constraint: float, attempt: int) -> dict:
    return {
        "genome": result.genome, "params": result.params, "accuracy": result.accuracy, "correct": result.correct,
        "samples": result.samples, "cost": result.cost, "objectives": (result.accuracy, result.cost),
        "fitness": fitness, "constraint": constraint, "blocks_total": result.blocks_total,
        "blocks_already": result.blocks_already, "blocks_created": result.blocks_created,
        "generation": generation, "eval_seconds": result.eval_seconds, "finished_at": time.time(),
        "status": result.status, "error": result.error, "host": result.host, "device": result.device,
        "slurm_job_id": result.slurm_job_id, "slurm_array_task_id": result.slurm_array_task_id,
        "node": result.node, "gpu": result.gpu, "attempt": attempt, "ci_low": result.ci_low,
        "ci_high": result.ci_high,
    }


class ResultsWriter:
    """The single writer of a results file (holds an exclusive lock file beside it)."""

    def __init__(self, path: Path, file: h5py.File, lock_fd: int):
        self.path = path
        self.file = file
        self._lock_fd = lock_fd
        self._tables: dict[str, _Table] = {}

    def _table(self, name: str) -> _Table:
        if name not in self._tables:
            self._tables[name] = _Table(self.file[name])
        return self._tables[name]

    # -- writing -------------------------------------------------------------------------------------------
    def append_individual(self, result: IndividualResult, generation: int, fitness: tuple, constraint: float,
                          attempt: int = 1) -> int:
        """Append and flush one individual; returns its row index."""
        return self._table("individuals").append(_result_row(result, generation, fitness, constraint, attempt))

    def append_baseline(self, label: str, dataset: str, result: IndividualResult) -> int:
        row = _result_row(result, -1, (np.nan, np.nan), np.nan, 1)
        row.update(label=label, dataset=dataset)
        return self._table("baseline").append(row)

    def set_minimum_accuracy(self, value: float) -> None:
        self.file["run/minimum_accuracy"][0] = value
        self.file.flush()

    def append_generation(self, population: list[int], evaluated: int, eval_seconds: float, samples: int,
                          hypervolume: float) -> int:
        width = self.file["generations/population"].shape[1]
        pop = np.full(width, -1, dtype=np.int64)
        pop[: len(population)] = population[:width]
        return self._table("generations").append({
            "population": pop, "evaluated": evaluated, "eval_seconds": eval_seconds, "samples": samples,
            "hypervolume": hypervolume, "finished_at": time.time(),
        })

    def append_row(self, table: str, columns: dict[str, tuple[Any, Any]], row: dict[str, Any]) -> int:
        """Append and flush one row of a follow-up table, created with ``columns`` on first use (needs swmr=False)."""
        if table not in self.file:
            widths = {"genes": len(self.file["genes/names"]), "layers": len(self.file["layers/names"])}
            _create_table(self.file.create_group(table), columns, widths)
        return self._table(table).append(row)

    def close(self) -> None:
        """Trim the tables to their rows, close the file and release the lock."""
        if self.file.id.valid:
            try:
                for table in self._tables.values():
                    table.trim()
            except OSError:  # e.g. a full disk: rows beyond count are ignored by readers and trimmed on reopen
                pass
            self.file.close()
        if self._lock_fd >= 0:
            lock_path = self.path.with_name(self.path.name + ".lock")
            lock_path.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"Results file {path} is being written by another qsx-batch process (lock {lock_path}).") from None
    return fd


def create_results(path: Path, header: RunHeader) -> ResultsWriter:
    """Create a new results file with empty tables and start SWMR writing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"Cannot create results folder {path.parent}: {exc}.") from None
    if path.exists():
        raise UserError(f"Results file {path} already exists; resume it with --resume {path} or choose --output.")
    lock_fd = _lock(path)
    building = path.with_name(path.name + ".new")  # readers never see a file before SWMR mode is on
    try:
        f = h5py.File(building, "w", libver="latest")
    except OSError as exc:
        os.close(lock_fd)
        raise UserError(f"Cannot create results file {path}: {exc}.") from None
    attrs = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created": time.time(),
        "workload_name": header.workload_name, "workload_sha256": header.workload_sha256,
        "workload_yaml": header.workload_yaml, "workload_path": header.workload_path, "problem": header.problem, "seed": header.seed,
        "cost_name": header.cost_name, "cost_unit": header.cost_unit, "maximize_cost": header.maximize_cost,
        "integer": header.integer, "versions": json.dumps(header.versions), "worst_cost": header.worst_cost,
        "max_blocks_per_sample": header.max_blocks_per_sample,
    }
    f.attrs.update(attrs)
    genes = f.create_group("genes")
    genes.create_dataset("names", data=header.gene_names, dtype=STR)
    genes.create_dataset("lower", data=header.lower)
    genes.create_dataset("upper", data=header.upper)
    layers = f.create_group("layers")
    layers.create_dataset("names", data=header.layer_names, dtype=STR)
    layers.create_dataset("kinds", data=header.layer_kinds, dtype=STR)
    layers.create_dataset("params", data=np.asarray(header.layer_params, dtype=np.int64))
    layers.create_dataset("macs", data=np.asarray(header.layer_macs, dtype=np.int64))
    layers.create_dataset("input_shapes", data=header.layer_input_shapes, dtype=STR)
    run = f.create_group("run")
    run.create_dataset("minimum_accuracy", shape=(1,), dtype="f8", data=[np.nan])
    widths = {"genes": len(header.gene_names), "layers": len(header.layer_names), "pop": header.pop_size}
    _create_table(f.create_group("individuals"), COLUMNS, widths)
    _create_table(f.create_group("baseline"), BASELINE_COLUMNS, widths)
    _create_table(f.create_group("generations"), GENERATION_COLUMNS, widths)
    f.swmr_mode = True
    os.replace(building, path)
    return ResultsWriter(path, f, lock_fd)


def _copy_committed(src: h5py.Group, dst: h5py.Group) -> None:
    """Copy a group; of a table (a group with ``count``) only the committed rows, which a killed writer left
    intact (rows beyond ``count`` may reference data that never reached the disk)."""
    dst.attrs.update(dict(src.attrs))
    count = _table_count(src) if "count" in src else None
    for key, obj in src.items():
        if isinstance(obj, h5py.Group):
            _copy_committed(obj, dst.create_group(key))
        elif count is None or key == "count":
            src.copy(obj, dst, name=key)
        else:
            dst.create_dataset(key, data=obj[:count], maxshape=(None, *obj.shape[1:]), chunks=obj.chunks,
                               dtype=obj.dtype)


def _copy_clean(path: Path) -> None:
    """Rewrite a file left open-for-write by a killed writer into a clean one (atomic replace)."""
    tmp = path.with_name(path.name + ".recover")
    with h5py.File(path, "r", libver="latest", swmr=True) as src, h5py.File(tmp, "w", libver="latest") as dst:
        _copy_committed(src, dst)
    os.replace(tmp, path)


def open_for_append(path: Path, swmr: bool = True) -> ResultsWriter:
    """Open an existing results file to continue a run (recovering it after a killed writer).

    ``swmr=False`` keeps the file in plain append mode, in which new tables can be created (follow-up commands).
    """
    check_results_file(path)
    lock_fd = _lock(path)
    try:
        try:
            f = h5py.File(path, "a", libver="latest")
        except OSError as exc:
            if "already open for write" not in str(exc):
                raise
            _copy_clean(path)
            f = h5py.File(path, "a", libver="latest")
    except OSError as exc:
        os.close(lock_fd)
        raise UserError(f"Cannot open results file {path} for writing: {exc}.") from None
    for table in ("individuals", "baseline", "generations"):
        _Table(f[table]).trim()
    if swmr:
        f.swmr_mode = True
    return ResultsWriter(path, f, lock_fd)


def open_for_reading(path: Path) -> h5py.File:
    """Open a results file read-only, also while a writer has it open (SWMR) or after it was killed."""
    if not Path(path).is_file():
        raise UserError(f"Results file {path} does not exist.")
    try:
        f = h5py.File(path, "r", libver="latest", swmr=True)
    except OSError:
        try:
            return h5py.File(path, "r")
        except OSError as exc:
            raise UserError(f"{path} is not a readable HDF5 file ({exc}).") from None
    size, stored = os.path.getsize(path), f.id.get_filesize()
    if size < stored and not _writer_alive(Path(path)):  # SWMR readers would wait forever for the missing bytes
        f.close()
        raise UserError(f"{path} is truncated ({size} of {stored} bytes; an interrupted copy?). Copy it again.")
    return f


def _writer_alive(path: Path) -> bool:
    """Whether a writer holds the lock file beside ``path`` (probed with a shared lock, released at once)."""
    try:
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def check_results_file(path: Path) -> None:
    """Raise a UserError unless ``path`` is a qsx-batch results file."""
    with open_for_reading(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise UserError(f"{path} is an HDF5 file but not a qsx-batch results file.")
        if int(f.attrs.get("format_version", 0)) > FORMAT_VERSION:
            raise UserError(f"{path} was written by a newer qsx-batch (format {f.attrs['format_version']}).")


def read_table(f: h5py.File, name: str) -> dict[str, np.ndarray]:
    """Every column of a table, cut to its committed row count; strings decoded."""
    group = f[name]
    if f.mode == "r":
        group["count"].refresh()
    count = _table_count(group)
    out = {}
    for key, ds in group.items():
        if key == "count":
            continue
        if f.mode == "r":
            ds.refresh()
        data = ds[:count]
        if h5py.check_string_dtype(ds.dtype):
            data = np.array([v.decode() if isinstance(v, bytes) else v for v in data], dtype=object)
        out[key] = data
    return out


def read_strings(f: h5py.File, name: str) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in f[name][()]]
