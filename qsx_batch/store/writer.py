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
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import UserError
from ..evaluation.record import IndividualResult
from ..workload import Workload
from .format import (
    AXES,
    CORE_TABLES,
    COST_UNIT,
    COUNT,
    FOLLOW_UP_COLUMNS,
    FORMAT,
    FORMAT_VERSION,
    GENE_COLUMNS,
    GROW_ROWS,
    LAYER_COLUMNS,
    LIBVER,
    MINIMUM_ACCURACY,
    OBJECTIVES,
    REEVALUATION_RESULT_FIELDS,
    SENSITIVITY,
    TABLE_COLUMNS,
    Column,
    RunHeader,
)
from .reader import (
    Table,
    check_format,
    is_scale,
    minimum_accuracy,
    read_header,
    read_table,
    stored_workload,
    table_columns,
    table_count,
)

NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable."  # netCDF-4's name of a plain dimension
SCALE_ATTRIBUTES = {"CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST", "DIMENSION_LABELS"}  # H5DS bookkeeping
COMMIT_SECONDS = 1.0  # the longest a held row waits for its commit: what a SIGKILL can lose
TEXT_COMPRESSION = {"compression": "gzip", "compression_opts": 1}  # fixed-width text is mostly padding


def _fit_text(text: Any, width: int) -> bytes:
    """``text`` as UTF-8 of at most ``width`` bytes, cut at a character boundary."""
    return str(text).encode()[:width].decode("utf-8", "ignore").encode()


def _describe(ds: h5py.Dataset, column: Column, cost_unit: str) -> None:
    ds.attrs["description"] = column.description
    units = cost_unit if column.units == COST_UNIT else column.units
    if units:
        ds.attrs["units"] = units
    if column.dtype == "str":
        ds.attrs["_Encoding"] = "utf-8"  # netCDF/xarray convention: decode this fixed-width text as UTF-8


def _scale(group: h5py.Group, name: str, size: int | list[str], rows: bool = False) -> h5py.Dataset:
    """A dimension scale: the names along an axis (xarray shows them as coordinates), or for a size a plain
    dimension without values; ``rows``: the growing row axis of a table."""
    if isinstance(size, int):
        column = Column("f4", AXES[name])
        ds = group.create_dataset(name, shape=(size,), dtype=column.dtype, maxshape=(None,) if rows else (size,),
                                  chunks=(GROW_ROWS,) if rows else None)
        ds.make_scale(f"{NOT_A_VARIABLE}{size:>10}")
    else:
        column = Column("str", AXES[name])
        ds = group.create_dataset(name, data=[v.encode() for v in size], dtype=column.h5_dtype(size))
        ds.make_scale(name)
    _describe(ds, column, "")
    return ds


def _drop_back_references(group: h5py.Group) -> None:
    """Delete the REFERENCE_LIST that HDF5 writes into a dimension scale when a dataset attaches to it: PyTables
    (3.11 and before) cannot load a node that carries one (KeyError 'Reference'). The links readers follow (each
    dataset's DIMENSION_LIST) stay; only H5DS's own bookkeeping (H5DSis_attached, H5DSdetach_scale) misses them."""
    for ds in group.values():
        if isinstance(ds, h5py.Dataset) and "REFERENCE_LIST" in ds.attrs:
            del ds.attrs["REFERENCE_LIST"]


def _create_table(group: h5py.Group, columns: dict[str, Column], axes: dict[str, int | list[str]],
                  cost_unit: str) -> None:
    """An empty table: described columns on the dimension scales ``row`` and ``axes``, and ``count``."""
    row = _scale(group, "row", 0, rows=True)
    scales: dict[str, h5py.Dataset] = {}
    for name, column in columns.items():
        if column.axis is not None and column.axis not in scales:
            scales[column.axis] = _scale(group, column.axis, axes[column.axis])
        width = () if column.axis is None else scales[column.axis].shape
        ds = group.create_dataset(name, shape=(0, *width), maxshape=(None, *width), chunks=(GROW_ROWS, *width),
                                  dtype=column.h5_dtype(), **(TEXT_COMPRESSION if column.dtype == "str" else {}))
        _describe(ds, column, cost_unit)
        ds.dims[0].attach_scale(row)
        if column.axis is not None:
            ds.dims[1].attach_scale(scales[column.axis])
    _describe(group.create_dataset("count", data=0, dtype="i8"), COUNT, cost_unit)
    _drop_back_references(group)


def _create_facts(group: h5py.Group, axis: str, columns: dict[str, Column], values: dict[str, Any]) -> None:
    """Datasets of one value per gene or per layer, described, on the plain dimension ``axis``."""
    scale = _scale(group, axis, len(values["names"]))
    for name, column in columns.items():
        data = values[name]
        if column.dtype == "str":
            data = [v.encode() for v in data]
        ds = group.create_dataset(name, data=data, dtype=column.h5_dtype(values[name]))
        _describe(ds, column, "")
        ds.dims[0].attach_scale(scale)
    _drop_back_references(group)


def _axes(header: RunHeader) -> dict[str, int | list[str]]:
    return {"gene": header.gene_names, "layer": header.layer_names, "objective": list(OBJECTIVES),
            "member": header.pop_size, "metric": header.metric_names}


class _Table:
    """Appends rows to one table: column datasets looked up once and grown ``GROW_ROWS`` rows (one chunk) at a
    time, with the ``row`` scale. Rows are added in memory and committed in batches, one write per column for
    the whole batch; :meth:`trim` cuts the columns back to the committed rows."""

    def __init__(self, group: h5py.Group):
        self.name = group.name.lstrip("/")
        self.count = group["count"]
        self.file = group.file
        self.columns = table_columns(group)
        self.growing = list(self.columns.values()) + ([group["row"]] if "row" in group else [])
        self.text_widths = {name: info.length - 1 for name, ds in self.columns.items()  # less the null
                            if (info := h5py.check_string_dtype(ds.dtype)) and info.length}  # format 1: none
        self.rows = table_count(group)
        self.capacity = min((ds.shape[0] for ds in self.columns.values()), default=0)
        self.pending: list[dict[str, Any]] = []
        # per column its low-level handle, dtype and one row's shape, looked up once (h5py's properties each
        # cost an HDF5 call, and a commit would otherwise spend more on them than on writing)
        self.layout = {name: (ds.id, ds.dtype, ds.shape[1:]) for name, ds in self.columns.items()}

    def add(self, row: dict[str, Any]) -> int:
        """Hold one row for the next :meth:`commit`; returns the row index it will have."""
        self.pending.append(row)
        return self.rows + len(self.pending) - 1

    def _resize(self, rows: int) -> None:
        for ds in self.growing:
            if ds.shape[0] != rows:
                ds.resize(rows, axis=0)
        self.capacity = rows

    def _column(self, name: str, values: list[Any]) -> np.ndarray:
        """One column of the pending rows as one array: enums by value, text cut to its width, a vector shorter
        than its column padded with NaN."""
        _, dtype, shape = self.layout[name]
        values = [v.value if isinstance(v, Enum) else v for v in values]
        if name in self.text_widths:
            values = [_fit_text(v, self.text_widths[name]) for v in values]
        elif len(shape) == 1:
            width = shape[0]
            values = [v if np.ndim(v) != 1 or len(v) >= width else np.concatenate([v, np.full(width - len(v), np.nan)])
                      for v in values]
        return np.ascontiguousarray(np.asarray(values, dtype=dtype).reshape(len(values), *shape))

    def write_pending(self) -> None:
        """Write the pending rows into every column, one HDF5 call per column (h5py's indexing costs ten times
        more); columns the table lacks (a file of an older format) are left out. Not committed yet: see
        :meth:`ResultsWriter.commit`."""
        start, n = self.rows, len(self.pending)
        if start + n > self.capacity:
            self._resize(-(-(start + n) // GROW_ROWS) * GROW_ROWS)
        for name in self.pending[0]:
            if name not in self.columns:
                continue
            data = self._column(name, [row[name] for row in self.pending])
            dataset = self.layout[name][0]
            space = dataset.get_space()
            space.select_hyperslab((start,) + (0,) * (data.ndim - 1), data.shape)
            dataset.write(h5py.h5s.create_simple(data.shape), space, data)

    def write_count(self) -> None:
        """Bump ``count`` over the written rows (the commit point, once flushed); they are no longer pending."""
        rows = self.rows + len(self.pending)
        self.count.id.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(rows, dtype=self.count.dtype))
        self.rows = rows
        self.pending = []

    def trim(self) -> None:
        """Cut every column to the committed rows (rows beyond ``count`` are spare or from a killed writer)."""
        self._resize(self.rows)


def _result_row(result: IndividualResult, generation: int, fitness: tuple, constraint: float, attempt: int) -> dict:
    return {
        "genome": result.genome, "params": result.params, "accuracy": result.accuracy, "metrics": result.metrics,
        "correct": result.correct,
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
    file holds, so a resumed run reads its state through the handle it writes with.

    Individuals and sweep points are committed in batches: a background thread commits a held row at most
    ``COMMIT_SECONDS`` after it was added, and every read, every other append and :meth:`close` commit first.
    A SIGKILL so loses at most the rows of the last ``COMMIT_SECONDS``; a stop that closes the writer loses
    none. One commit costs about as much as one row did before (a write per column, two flushes)."""

    def __init__(self, path: Path, file: h5py.File, lock_fd: int):
        self.path = path
        self.file = file
        self._lock_fd = lock_fd
        self._tables: dict[str, _Table] = {}
        self.header = read_header(file)
        self._lock = threading.RLock()  # the file is used by the caller and by the commit thread
        self._due = threading.Condition(self._lock)
        self._held_since: float | None = None  # monotonic time of the oldest row not committed
        self._failure: BaseException | None = None  # a commit that failed in the thread, raised to the caller
        self._failed = False  # a commit failed (a full disk): HDF5 takes no more writes
        self._thread: threading.Thread | None = None
        self._closing = False

    def _table(self, name: str) -> _Table:
        if name not in self._tables:
            self._tables[name] = _Table(self.file[name])
        return self._tables[name]

    # -- committing -------------------------------------------------------------------------------------------
    def commit(self) -> None:
        """Write every held row to disk now: the rows of every table, one flush, then each table's ``count``
        with a flush after each, the generations last. A committed row's data so is on disk before ``count``
        says it exists, and a generation's individuals before the generation; a commit cut short leaves its
        rows held, and the next one writes them again in full."""
        with self._lock:
            self._raise_failure()
            if self._failed:
                raise RuntimeError(f"{self.path}: an earlier write failed; the file takes no more rows")
            tables = sorted((t for t in self._tables.values() if t.pending), key=lambda t: t.name == "generations")
            try:
                for table in tables:
                    table.write_pending()
                if tables:
                    self.file.flush()
                for table in tables:
                    table.write_count()
                    self.file.flush()
            except Exception:  # a failed write (a stop request is no Exception: close commits again in full)
                self._failed = True
                raise
            self._held_since = None

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _hold(self, name: str, row: dict[str, Any]) -> int:
        """Add a row to be committed within ``COMMIT_SECONDS`` (at once when a chunk's worth is held)."""
        with self._lock:
            self._raise_failure()
            table = self._table(name)
            index = table.add(row)
            if len(table.pending) >= GROW_ROWS:
                self.commit()
            elif self._held_since is None:
                self._held_since = time.monotonic()
                if self._thread is None:
                    self._thread = threading.Thread(target=self._commit_when_due, name="qsx-results-commit",
                                                    daemon=True)
                    self._thread.start()
                self._due.notify()
            return index

    def _commit_when_due(self) -> None:
        """The commit thread: commits held rows once the oldest is ``COMMIT_SECONDS`` old."""
        with self._due:
            while not self._closing:
                if self._held_since is None or self._failed:  # nothing held, or nothing more to write
                    self._due.wait()
                    continue
                delay = self._held_since + COMMIT_SECONDS - time.monotonic()
                if delay > 0:
                    self._due.wait(delay)
                    continue
                try:
                    self.commit()
                except Exception as exc:  # a full disk: the caller sees it at its next call, rows stay held
                    self._failure = exc

    # -- reading ----------------------------------------------------------------------------------------------
    def read(self, table: str, columns: list[str] | None = None) -> Table:
        """Every committed row of a table, by column (only ``columns`` when given); held rows are committed
        first."""
        with self._lock:
            self.commit()
            known = self._tables.get(table)
            return read_table(self.file, table, columns, None if known is None else known.columns)

    def minimum_accuracy(self) -> float | None:
        """The run's accuracy constraint, once known (None: unconstrained or not set yet)."""
        with self._lock:
            value = minimum_accuracy(self.file)
        return None if np.isnan(value) else value

    def workload(self) -> Workload:
        """The workload stored in the file."""
        return stored_workload(self.header, self.path)

    # -- writing -------------------------------------------------------------------------------------------
    def append_individual(self, result: IndividualResult, generation: int, fitness: tuple, constraint: float,
                          attempt: int = 1) -> int:
        """Hold one individual for the next commit; returns its row index."""
        return self._hold("individuals", _result_row(result, generation, fitness, constraint, attempt))

    def append_baseline(self, label: str, dataset: str, result: IndividualResult) -> int:
        row = _result_row(result, -1, (np.nan, np.nan), np.nan, 1)
        row.update(label=label, dataset=dataset)
        return self._append_now("baseline", row)

    def set_minimum_accuracy(self, value: float) -> None:
        with self._lock:
            self.commit()
            self.file["run/minimum_accuracy"][...] = value
            self.file.flush()

    def append_generation(self, population: list[int], evaluated: int, eval_seconds: float, samples: int,
                          hypervolume: float) -> int:
        """Commit the held individuals, then the generation that refers to them."""
        width = self.header.pop_size
        pop = np.full(width, -1, dtype=np.int64)
        pop[: len(population)] = population[:width]
        return self._append_now("generations", {
            "population": pop, "evaluated": evaluated, "eval_seconds": eval_seconds, "samples": samples,
            "hypervolume": hypervolume, "finished_at": time.time(),
        })

    def append_sensitivity(self, gene: int, value: float, parameter: float, result: IndividualResult,
                           discordant: int = -1, labels: int = 0) -> int:
        """Hold one point of the sensitivity sweep (``gene`` -1: the all-neutral reference), with the labels it
        and the reference disagree on out of ``labels`` compared (-1, 0: unknown)."""
        return self._hold(SENSITIVITY, {
            "swept_gene": gene, "swept_value": value, "swept_parameter": parameter, "discordant": discordant,
            "labels": labels,
            **{k: getattr(result, k) for k in REEVALUATION_RESULT_FIELDS}, "finished_at": time.time()})

    def append_row(self, table: str, row: dict[str, Any]) -> int:
        """Append and commit one row of a follow-up table (format.FOLLOW_UP_COLUMNS), created on first use
        (needs a writer opened with swmr=False)."""
        with self._lock:
            if table not in self.file:
                _create_table(self.file.create_group(table), FOLLOW_UP_COLUMNS[table], _axes(self.header),
                              self.header.cost_unit)
            return self._append_now(table, row)

    def _append_now(self, name: str, row: dict[str, Any]) -> int:
        """Commit the held rows and this one."""
        with self._lock:
            index = self._table(name).add(row)
            self.commit()
            return index

    def close(self) -> None:
        """Commit the held rows, trim the tables to their rows, close the file and release the lock; after a failed
        write the file is left as it is (:func:`_abandon`)."""
        with self._lock:
            self._closing = True
            self._due.notify()
        if self._thread is not None:
            self._thread.join()
        try:
            if self.file.id.valid and not self._failed:
                try:
                    self.commit()
                    for table in self._tables.values():
                        table.trim()
                except (OSError, RuntimeError):  # a full disk: rows beyond count are ignored, and trimmed on reopen
                    self._failed = True
            if self.file.id.valid:
                if self._failed:
                    _abandon(self.file)
                else:
                    self.file.close()
        finally:
            if self._lock_fd >= 0:
                _unlock(self.path, self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _abandon(file: h5py.File) -> None:
    """Leave a file whose write failed open for good, as a killed writer would: every committed row was flushed
    before, and reopening recovers it. Closing it instead crashes HDF5 2.0 (h5py 3.16): a dataset closed after the
    failed flush fails to write its header and a later close of it or of the file is a segmentation fault. So
    every open object of the file is pinned: h5py closes no locked identifier."""
    for obj in h5py.h5f.get_obj_ids(file.id, h5py.h5f.OBJ_ALL):
        obj.locked = True


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
        f = h5py.File(building, "w", libver=LIBVER)
    except OSError as exc:
        _unlock(path, lock_fd)
        raise UserError(f"Cannot create results file {path}: {exc}.") from None
    f.attrs.update({  # str, int and float only: every HDF5 reader (netCDF too) reads these types
        "format": FORMAT, "format_version": FORMAT_VERSION, "created": time.time(),
        "workload_name": header.workload_name, "workload_sha256": header.workload_sha256,
        "workload_yaml": header.workload_yaml, "workload_path": header.workload_path, "problem": header.problem,
        "seed": header.seed, "cost_name": header.cost_name, "cost_unit": header.cost_unit,
        "maximize_cost": int(header.maximize_cost), "integer": int(header.integer),
        "versions": json.dumps(header.versions), "worst_cost": header.worst_cost,
        "max_blocks_per_sample": header.max_blocks_per_sample, "metric_names": json.dumps(header.metric_names),
        "initial_population": header.initial_population,
    })
    _create_facts(f.create_group("genes"), "gene", GENE_COLUMNS,
                  {"names": header.gene_names, "lower": header.lower, "upper": header.upper})
    _create_facts(f.create_group("layers"), "layer", LAYER_COLUMNS,
                  {"names": header.layer_names, "kinds": header.layer_kinds, "params": header.layer_params,
                   "macs": header.layer_macs, "input_shapes": header.layer_input_shapes})
    _describe(f.create_group("run").create_dataset("minimum_accuracy", data=np.nan, dtype="f8"), MINIMUM_ACCURACY, "")
    for name in (*CORE_TABLES, SENSITIVITY):  # the sweep may be written in SWMR mode, where no group is created
        _create_table(f.create_group(name), TABLE_COLUMNS[name], _axes(header), header.cost_unit)
    f.swmr_mode = True
    os.replace(building, path)
    return ResultsWriter(path, f, lock_fd)


def _copy_committed(src: h5py.Group, dst: h5py.Group) -> None:
    """Copy a group; of a table (a group with ``count``) only the committed rows, which a killed writer left
    intact (rows beyond ``count`` may reference data that never reached the disk). Dimension scales are made
    anew in ``dst`` (references point into one file only)."""
    dst.attrs.update({k: v for k, v in src.attrs.items() if k not in SCALE_ATTRIBUTES})
    rows = table_count(src) if "count" in src else None
    for key, obj in src.items():
        if isinstance(obj, h5py.Group):
            _copy_committed(obj, dst.create_group(key))
            continue
        grows = rows is not None and obj.maxshape[:1] == (None,)  # a column or the row scale
        layout = {"maxshape": obj.maxshape, "chunks": obj.chunks, "compression": obj.compression,
                  "compression_opts": obj.compression_opts} if obj.chunks else {}
        copy = dst.create_dataset(key, data=obj[:rows] if grows else obj[()], dtype=h5py.Datatype(obj.id.get_type()),
                                  **layout)
        copy.attrs.update({k: v for k, v in obj.attrs.items() if k not in SCALE_ATTRIBUTES})
    for key, obj in src.items():
        if isinstance(obj, h5py.Dataset) and is_scale(obj):
            dst[key].make_scale(h5py.h5ds.get_scale_name(obj.id).decode())
    for key, obj in src.items():
        if isinstance(obj, h5py.Dataset):
            for axis, scales in enumerate(obj.dims):
                for scale in scales.values():
                    dst[key].dims[axis].attach_scale(dst[scale.name.rsplit("/", 1)[-1]])
    _drop_back_references(dst)


def _copy_clean(path: Path) -> None:
    """Rewrite a file left open-for-write by a killed writer into a clean one (atomic replace)."""
    tmp = path.with_name(path.name + ".recover")
    with h5py.File(path, "r", libver="latest", swmr=True) as src, h5py.File(tmp, "w", libver=LIBVER) as dst:
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
            f = h5py.File(path, "a", libver=LIBVER)
        except OSError as exc:
            if "already open for write" not in str(exc):
                raise
            _copy_clean(path)
            f = h5py.File(path, "a", libver=LIBVER)
    except OSError as exc:
        _unlock(path, lock_fd)
        raise UserError(f"Cannot open results file {path} for writing ({exc}); is it a qsx-batch results file?") from None
    try:
        check_format(f, path)
    except UserError:
        f.close()
        _unlock(path, lock_fd)
        raise
    for table in CORE_TABLES:
        _Table(f[table]).trim()
    if SENSITIVITY not in f:  # a file from before the sweep existed: the table is made while groups can be
        header = read_header(f)
        _create_table(f.create_group(SENSITIVITY), TABLE_COLUMNS[SENSITIVITY], _axes(header), header.cost_unit)
    if swmr:
        f.swmr_mode = True
    return ResultsWriter(path, f, lock_fd)


