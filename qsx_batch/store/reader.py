"""Reading results files (format 2, and format 1 of earlier versions): open them, also while a run writes them
or after it was killed, and read the run header and tables. :mod:`qsx_batch.results` builds on this."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ..errors import UserError
from ..evaluation.record import IndividualResult, Status, genome_key
from ..workload import Workload, parse_workload
from .format import COST_UNIT, FORMAT, FORMAT_VERSION, OBJECTIVES, REEVALUATION_RESULT_FIELDS, TABLE_COLUMNS, RunHeader

if TYPE_CHECKING:
    import pandas


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


def check_format(f: h5py.File, path: Path) -> None:
    """Raise a UserError unless the open file ``path`` is a qsx-batch results file this version can read."""
    if f.attrs.get("format") != FORMAT:
        raise UserError(f"{path} is an HDF5 file but not a qsx-batch results file.")
    if int(f.attrs.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer qsx-batch (format {f.attrs['format_version']}).")


def open_results(path: Path) -> h5py.File:
    """:func:`open_for_reading`, checked to be a qsx-batch results file."""
    f = open_for_reading(path)
    try:
        check_format(f, path)
    except UserError:
        f.close()
        raise
    return f


def stored_value(ds: h5py.Dataset) -> Any:
    """The one value of a scalar dataset (format 2) or of a dataset of one element (format 1)."""
    if ds.file.mode == "r":
        ds.refresh()
    return np.asarray(ds[()]).item()


def table_count(group: h5py.Group) -> int:
    """Committed rows of a table (its ``count``; rows beyond it are spare or from a killed writer)."""
    return int(stored_value(group["count"]))


def is_scale(ds: h5py.Dataset) -> bool:
    """Whether ``ds`` is an HDF5 dimension scale (``row``, ``gene``, ... of format 2), not data."""
    return h5py.h5ds.is_scale(ds.id)


def table_columns(group: h5py.Group) -> dict[str, h5py.Dataset]:
    """The columns of a table: its datasets with one entry per row (not ``count``, not dimension scales)."""
    return {name: ds for name, ds in group.items() if ds.maxshape[:1] == (None,) and not is_scale(ds)}


def read_strings(ds: h5py.Dataset) -> list[str]:
    """A dataset of text (fixed or variable length) as str."""
    return [str(v) for v in ds.asstr()[()]]


@dataclass(frozen=True, eq=False)
class Table(Mapping[str, np.ndarray]):
    """One table of a results file: its committed rows by column (numpy arrays; text as arrays of str), with each
    column's description, units and the labels along its second axis (gene, layer or objective names)."""

    name: str
    rows: int
    columns: dict[str, np.ndarray]
    descriptions: dict[str, str]
    units: dict[str, str]
    labels: dict[str, list[str]]

    def __getitem__(self, column: str) -> np.ndarray:
        return self.columns[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def to_pandas(self) -> pandas.DataFrame:
        """The table as a DataFrame indexed by row; a column with a second axis becomes one column per label,
        ``params[conv1.weight]``, ``blocks_created[fc1]``. Needs pandas (``pip install 'qsx-batch[pandas]'``)."""
        try:
            import pandas as pd
        except ImportError:
            raise UserError("to_pandas() needs pandas, an optional extra of qsx-batch: pip install "
                            "'qsx-batch[pandas]' (or pip install pandas).") from None
        data: dict[str, np.ndarray] = {}
        for name, values in self.columns.items():
            if values.ndim == 1:
                data[name] = values
            else:
                labels = self.labels.get(name) or range(values.shape[1])
                data.update({f"{name}[{label}]": values[:, i] for i, label in enumerate(labels)})
        return pd.DataFrame(data, index=pd.RangeIndex(self.rows, name="row"))


def read_table(f: h5py.File, name: str, columns: list[str] | None = None,
               datasets: dict[str, h5py.Dataset] | None = None) -> Table:
    """Every column of a table (only ``columns`` when given), cut to its committed row count (text decoded), in
    the layout's order, with the meaning of each column; ``datasets``: the table's columns when the caller has
    looked them up already (the writer does, once: looking them up costs more than reading a few)."""
    group = f[name]
    count = table_count(group)
    layout = TABLE_COLUMNS.get(name, {})
    order = {key: i for i, key in enumerate(layout)}
    wanted = {key: ds for key, ds in (datasets or table_columns(group)).items() if columns is None or key in columns}
    columns = {}
    for key, ds in sorted(wanted.items(), key=lambda item: order.get(item[0], len(order))):
        if f.mode == "r":
            ds.refresh()
        columns[key] = ds.asstr()[:count] if h5py.check_string_dtype(ds.dtype) else ds[:count]
    known = {key: column for key, column in layout.items() if key in columns}
    axes = {"gene": read_strings(f["genes/names"]), "layer": read_strings(f["layers/names"]),
            "objective": list(OBJECTIVES)}
    cost_unit = str(f.attrs["cost_unit"])
    return Table(
        name=name, rows=count, columns=columns,
        descriptions={key: column.description for key, column in known.items()},
        units={key: cost_unit if column.units == COST_UNIT else column.units
               for key, column in known.items() if column.units},
        labels={key: axes[column.axis] for key, column in known.items() if column.axis in axes})


def table_names(f: h5py.File) -> list[str]:
    """The tables of a results file: its groups with a ``count``."""
    return [name for name, obj in f.items() if isinstance(obj, h5py.Group) and "count" in obj]


def read_header(f: h5py.File) -> RunHeader:
    """The run header of an open results file."""
    a = f.attrs
    return RunHeader(
        workload_name=str(a["workload_name"]), workload_sha256=str(a["workload_sha256"]),
        workload_yaml=str(a.get("workload_yaml", "")), workload_path=str(a.get("workload_path", "")),
        problem=str(a["problem"]), seed=int(a["seed"]), cost_name=str(a["cost_name"]),
        cost_unit=str(a["cost_unit"]), maximize_cost=bool(a["maximize_cost"]), integer=bool(a["integer"]),
        gene_names=read_strings(f["genes/names"]), lower=f["genes/lower"][()], upper=f["genes/upper"][()],
        layer_names=read_strings(f["layers/names"]), layer_kinds=read_strings(f["layers/kinds"]),
        layer_params=[int(v) for v in f["layers/params"][()]], layer_macs=[int(v) for v in f["layers/macs"][()]],
        layer_input_shapes=read_strings(f["layers/input_shapes"]),
        pop_size=int(f["generations/population"].shape[1]), versions=json.loads(a["versions"]),
        worst_cost=float(a["worst_cost"]), max_blocks_per_sample=float(a["max_blocks_per_sample"]),
        metric_names=json.loads(a.get("metric_names", '["classification_accuracy"]')),
        initial_population=str(a.get("initial_population", "")))


def minimum_accuracy(f: h5py.File) -> float:
    """The run's accuracy constraint (NaN: unconstrained, or not known yet)."""
    return float(stored_value(f["run/minimum_accuracy"]))


def stored_workload(header: RunHeader, path: Path) -> Workload:
    """The workload stored in results file ``path``; relative inputs resolve against the workload file's original
    folder."""
    if not header.workload_yaml:
        raise UserError(f"{path} holds no workload text; is it a qsx-batch results file?")
    return parse_workload(header.workload_yaml, Path(header.workload_path or path))


def stored_result(table: Mapping[str, np.ndarray], row: int) -> IndividualResult:
    """The result stored in one row of a results table (individuals, baseline or sensitivity)."""
    return IndividualResult(**{key: table[key][row] for key in REEVALUATION_RESULT_FIELDS if key in table})


def ok_results(table: Mapping[str, np.ndarray]) -> dict[tuple, IndividualResult]:
    """The rows of a results table evaluated ok on the exploration data, by genome key (the first row of a genome
    wins; rows without a genome, the fp32 baseline, are left out)."""
    out: dict[tuple, IndividualResult] = {}
    for row in range(len(table["status"])):
        if table["status"][row] != Status.OK or ("dataset" in table and table["dataset"][row] != "exploration"):
            continue
        if not np.isnan(table["genome"][row]).any():
            out.setdefault(genome_key(table["genome"][row]), stored_result(table, row))
    return out
