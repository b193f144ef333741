"""Reading results files: open them (also while a run writes them, or after it was killed), read tables, and
load a whole run (:class:`RunData`) for reports, plots and follow-up commands."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..analysis import cumulative_hypervolume, pareto_mask, usable
from ..errors import UserError
from ..result import Status
from ..workload import Workload, load_workload, parse_workload
from .format import CORE_TABLES, FORMAT, FORMAT_VERSION, REEVALUATIONS


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


def table_count(group: h5py.Group) -> int:
    """Committed rows of a table (its ``count``; rows beyond it are spare or from a killed writer)."""
    return int(group["count"][0])


def read_table(f: h5py.File, name: str) -> dict[str, np.ndarray]:
    """Every column of a table, cut to its committed row count; strings decoded."""
    group = f[name]
    if f.mode == "r":
        group["count"].refresh()
    count = table_count(group)
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


def stored_workload(f: h5py.File, path: Path) -> Workload:
    """The workload stored in an open results file ``path``; relative inputs resolve against the workload file's
    original folder."""
    text = f.attrs.get("workload_yaml")
    if not text:
        raise UserError(f"{path} holds no workload text; is it a qsx-batch results file?")
    return parse_workload(text, Path(str(f.attrs.get("workload_path", path))))


def run_workload(path: Path, override: str | None = None) -> Workload:
    """The workload a run was made with: the file ``override`` if given, else the text stored in ``path``."""
    if override:
        return load_workload(override)
    with open_results(path) as f:
        return stored_workload(f, path)


@dataclass
class RunData:
    """Everything a report needs from a results file, read in one go."""

    path: Path
    attrs: dict
    gene_names: list[str]
    layer_names: list[str]
    individuals: dict[str, np.ndarray]
    baseline: dict[str, np.ndarray]
    generations: dict[str, np.ndarray]
    minimum_accuracy: float
    follow_ups: dict[str, dict[str, np.ndarray]]

    @property
    def count(self) -> int:
        return len(self.individuals["accuracy"])

    @property
    def bits(self) -> bool:
        """Whether the parameters are bit widths (quantization problems) rather than thresholds."""
        return not bool(self.attrs["maximize_cost"])

    def param_columns(self) -> dict[str, np.ndarray]:
        """Columns of ``params`` by kind, one per layer: ``input_bits`` and ``weight_bits`` (quantizing runs),
        ``threshold`` (sparsity and joint runs); found by gene name."""
        def pick(*suffixes: str) -> np.ndarray:
            return np.array([i for i, name in enumerate(self.gene_names) if name.endswith(suffixes)], dtype=int)

        if not self.bits:
            return {"threshold": pick(".input")}
        columns = {"input_bits": pick(".input", ".input.bits"), "weight_bits": pick(".weight", ".weight.bits")}
        thresholds = pick(".threshold")
        return {**columns, "threshold": thresholds} if len(thresholds) else columns

    @property
    def cost_label(self) -> str:
        """The cost axis name with its unit, e.g. ``bits_weighted_linear [bits]``."""
        return f"{self.attrs['cost_name']} [{self.attrs['cost_unit']}]"

    def pareto(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Row indices of the Pareto front of the usable individuals among ``rows`` (default all), by cost."""
        ind = self.individuals
        mask = usable(ind["constraint"], ind["status"])
        if rows is not None:
            mask &= np.isin(np.arange(self.count), rows)
        front = np.flatnonzero(pareto_mask(ind["objectives"], bool(self.attrs["maximize_cost"]), mask))
        return front[np.argsort(ind["cost"][front], kind="stable")]

    @property
    def front_step(self) -> str:
        """Which side a step line through the cost-sorted front holds its value (pgfplots/matplotlib naming)."""
        return "right" if bool(self.attrs["maximize_cost"]) else "left"

    def cumulative_hypervolume(self) -> np.ndarray:
        """Per stored generation: hypervolume of every individual evaluated up to it."""
        ind = self.individuals
        return cumulative_hypervolume(ind["objectives"], ind["constraint"], ind["status"], ind["generation"],
                                      self.attrs, len(self.generations["evaluated"]))

    def reevaluated(self, dataset: str) -> dict[int, tuple[float, int, float]]:
        """Individual -> (accuracy, samples, cost) of the individuals re-evaluated ok on ``dataset`` (dotted key)."""
        table = self.follow_ups.get(REEVALUATIONS)
        if not table:
            return {}
        return {int(table["individual"][i]): (table["accuracy"][i], table["samples"][i], table["cost"][i])
                for i in range(len(table["individual"]))
                if table["dataset"][i] == dataset and table["status"][i] == Status.OK}


def load_run(path: Path) -> RunData:
    """Read a results file (also one still being written); follow-up tables come along."""
    with open_results(path) as f:
        follow_ups = {name: read_table(f, name) for name in f
                      if name not in CORE_TABLES and isinstance(f[name], h5py.Group) and "count" in f[name]}
        return RunData(
            path=Path(path), attrs=dict(f.attrs), gene_names=read_strings(f, "genes/names"),
            layer_names=read_strings(f, "layers/names"), individuals=read_table(f, "individuals"),
            baseline=read_table(f, "baseline"), generations=read_table(f, "generations"),
            minimum_accuracy=float(f["run/minimum_accuracy"][0]), follow_ups=follow_ups,
        )
