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
    time, with the ``row`` scale, so an append is one write per column; :meth:`trim` cuts them back to the
    committed rows."""

    def __init__(self, group: h5py.Group):
        self.count = group["count"]
        self.file = group.file
        self.columns = table_columns(group)
        self.growing = list(self.columns.values()) + ([group["row"]] if "row" in group else [])
        self.text_widths = {name: info.length - 1 for name, ds in self.columns.items()  # less the null
                            if (info := h5py.check_string_dtype(ds.dtype)) and info.length}  # format 1: none
        self.rows = table_count(group)
        self.capacity = min((ds.shape[0] for ds in self.columns.values()), default=0)
        self._spaces()

    def _spaces(self) -> None:
        """Per column its dtype, one row's shape, and the file and memory dataspaces of one row, made once per size:
        a row is then written with HDF5's own call per column (h5py's indexing costs ten times more per write)."""
        self.writes = {}
        for name, ds in self.columns.items():
            one = (1, *ds.shape[1:])
            self.writes[name] = (ds.id, ds.dtype, one, ds.id.get_space(), h5py.h5s.create_simple(one))

    def _resize(self, rows: int) -> None:
        for ds in self.growing:
            if ds.shape[0] != rows:
                ds.resize(rows, axis=0)
        self.capacity = rows
        self._spaces()

    def _write(self, name: str, index: int, value: Any) -> None:
        dataset, dtype, one, file_space, memory_space = self.writes[name]
        file_space.select_hyperslab((index,) + (0,) * (len(one) - 1), one)
        dataset.write(memory_space, file_space, np.ascontiguousarray(value, dtype=dtype).reshape(one))

    def append(self, row: dict[str, Any]) -> int:
        """Write one row into every column and flush, then bump ``count`` (the commit point) and flush: a
        committed row's data is on disk before ``count`` says it exists. Columns the table lacks (a file of an
        older format) are left out; a vector shorter than its column is padded with NaN."""
        index = self.rows
        if index >= self.capacity:
            self._resize(index + GROW_ROWS)
        for name, value in row.items():
            if name not in self.columns:
                continue
            value = value.value if isinstance(value, Enum) else value
            one = self.writes[name][2]
            if len(one) == 2 and np.ndim(value) == 1 and len(value) < one[1]:
                value = np.concatenate([value, np.full(one[1] - len(value), np.nan)])
            self._write(name, index, _fit_text(value, self.text_widths[name]) if name in self.text_widths else value)
        self.file.flush()
        self.count[...] = index + 1
        self.file.flush()
        self.rows = index + 1
        return index

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
    file holds, so a resumed run reads its state through the handle it writes with."""

    def __init__(self, path: Path, file: h5py.File, lock_fd: int):
        self.path = path
        self.file = file
        self._lock_fd = lock_fd
        self._tables: dict[str, _Table] = {}
        self.header = read_header(file)

    def _table(self, name: str) -> _Table:
        if name not in self._tables:
            self._tables[name] = _Table(self.file[name])
        return self._tables[name]

    # -- reading ----------------------------------------------------------------------------------------------
    def read(self, table: str) -> Table:
        """Every committed row of a table, by column."""
        return read_table(self.file, table)

    def minimum_accuracy(self) -> float | None:
        """The run's accuracy constraint, once known (None: unconstrained or not set yet)."""
        value = minimum_accuracy(self.file)
        return None if np.isnan(value) else value

    def workload(self) -> Workload:
        """The workload stored in the file."""
        return stored_workload(self.header, self.path)

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
        self.file["run/minimum_accuracy"][...] = value
        self.file.flush()

    def append_generation(self, population: list[int], evaluated: int, eval_seconds: float, samples: int,
                          hypervolume: float) -> int:
        width = self.header.pop_size
        pop = np.full(width, -1, dtype=np.int64)
        pop[: len(population)] = population[:width]
        return self._table("generations").append({
            "population": pop, "evaluated": evaluated, "eval_seconds": eval_seconds, "samples": samples,
            "hypervolume": hypervolume, "finished_at": time.time(),
        })

    def append_sensitivity(self, gene: int, value: float, parameter: float, result: IndividualResult) -> int:
        """Append and flush one point of the sensitivity sweep (``gene`` -1: the all-neutral reference)."""
        return self.append_row(SENSITIVITY, {
            "swept_gene": gene, "swept_value": value, "swept_parameter": parameter,
            **{k: getattr(result, k) for k in REEVALUATION_RESULT_FIELDS}, "finished_at": time.time()})

    def append_row(self, table: str, row: dict[str, Any]) -> int:
        """Append and flush one row of a follow-up table (format.FOLLOW_UP_COLUMNS), created on first use
        (needs a writer opened with swmr=False)."""
        if table not in self.file:
            _create_table(self.file.create_group(table), FOLLOW_UP_COLUMNS[table], _axes(self.header),
                          self.header.cost_unit)
        return self._table(table).append(row)

    def close(self) -> None:
        """Trim the tables to their rows, close the file and release the lock."""
        try:
            if self.file.id.valid:
                try:
                    for table in self._tables.values():
                        table.trim()
                except (OSError, RuntimeError):  # a full disk: rows beyond count are ignored, and trimmed on reopen
                    pass
                try:
                    self.file.close()
                except (OSError, RuntimeError):  # its last flush failed: every committed row was flushed before
                    self.file.id.close()
        finally:
            if self._lock_fd >= 0:
                _unlock(self.path, self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> ResultsWriter:
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


