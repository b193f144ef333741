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
from enum import Enum
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import UserError
from ..result import IndividualResult
from ..workload import Workload
from .format import (BASELINE_COLUMNS, COLUMNS, FOLLOW_UP_COLUMNS, FORMAT, FORMAT_VERSION, GENERATION_COLUMNS,
                     GROW_ROWS, STR, RunHeader)
from .reader import check_format, read_table, stored_workload, table_count


def _create_table(group: h5py.Group, columns: dict, widths: dict[str, int]) -> None:
    for name, (dtype, width) in columns.items():
        shape = () if width is None else (widths[width] if isinstance(width, str) else width,)
        group.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                             chunks=(64, *shape), fillvalue=None if dtype is STR else 0)
    group.create_dataset("count", shape=(1,), dtype="i8", data=[0])


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
            self.columns[name][index] = value.value if isinstance(value, Enum) else value
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
    """The single writer of a results file (holds an exclusive lock file beside it); it also answers what the
    file holds, so a resumed run reads its state through the handle it writes with."""

    def __init__(self, path: Path, file: h5py.File, lock_fd: int):
        self.path = path
        self.file = file
        self._lock_fd = lock_fd
        self._tables: dict[str, _Table] = {}

    def _table(self, name: str) -> _Table:
        if name not in self._tables:
            self._tables[name] = _Table(self.file[name])
        return self._tables[name]

    # -- reading ----------------------------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        """The run's header attributes (workload, problem, cost, seed, versions)."""
        return dict(self.file.attrs)

    def read(self, table: str) -> dict[str, np.ndarray]:
        """Every committed row of a table, by column."""
        return read_table(self.file, table)

    def minimum_accuracy(self) -> float | None:
        """The run's accuracy constraint, once known (None: unconstrained or not set yet)."""
        value = float(self.file["run/minimum_accuracy"][0])
        return None if np.isnan(value) else value

    def workload(self) -> Workload:
        """The workload stored in the file."""
        return stored_workload(self.file, self.path)

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

    def append_row(self, table: str, row: dict[str, Any]) -> int:
        """Append and flush one row of a follow-up table (format.FOLLOW_UP_COLUMNS), created on first use
        (needs a writer opened with swmr=False)."""
        if table not in self.file:
            widths = {"genes": len(self.file["genes/names"]), "layers": len(self.file["layers/names"])}
            _create_table(self.file.create_group(table), FOLLOW_UP_COLUMNS[table], widths)
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
            _unlock(self.path, self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unlock(path: Path, fd: int) -> None:
    path.with_name(path.name + ".lock").unlink(missing_ok=True)
    os.close(fd)


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
        _unlock(path, lock_fd)
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
    count = table_count(src) if "count" in src else None
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
    if not Path(path).is_file():
        raise UserError(f"Results file {path} does not exist.")
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
        _unlock(path, lock_fd)
        raise UserError(f"Cannot open results file {path} for writing ({exc}); is it a qsx-batch results file?") from None
    try:
        check_format(f, path)
    except UserError:
        f.close()
        _unlock(path, lock_fd)
        raise
    for table in ("individuals", "baseline", "generations"):
        _Table(f[table]).trim()
    if swmr:
        f.swmr_mode = True
    return ResultsWriter(path, f, lock_fd)


