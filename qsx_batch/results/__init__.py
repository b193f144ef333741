"""Results files in Python (notebooks, scripts): ``from qsx_batch import results; run = results.open("run.h5")``.

:func:`open` reads a whole results file (also one a run is still writing) into a :class:`Run`: the run header,
the workload, every table as numpy arrays (:class:`Table`, with ``to_pandas()`` when pandas is installed), the
Pareto front and the hypervolume per generation. ``inspect``, ``plot``, ``evaluate`` and ``retrain`` read through
this module too. Layout and units: docs/results-format.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError
from ..evaluation.record import Status
from ..store import (
    RunHeader,
    Table,
    minimum_accuracy,
    open_results,
    read_header,
    read_table,
    stored_workload,
    table_names,
)
from ..store.format import REEVALUATIONS, SENSITIVITY
from .pareto import cumulative_hypervolume, pareto_mask, usable
from .sensitivity import Sensitivity

if TYPE_CHECKING:
    import pandas

    from ..workload import Workload

__all__ = ["Run", "RunHeader", "Table", "newest", "open"]


@dataclass(eq=False)
class Run:
    """Everything a results file holds, read in one go: header, tables, and the analysis built on them."""

    path: Path
    header: RunHeader
    format_version: int
    created: float  # unix time the file was created
    minimum_accuracy: float  # the accuracy constraint (NaN: none)
    individuals: Table
    baseline: Table
    generations: Table
    follow_ups: dict[str, Table] = field(default_factory=dict)  # reevaluations, retraining, sensitivity

    @property
    def count(self) -> int:
        """Individuals stored."""
        return self.individuals.rows

    @property
    def gene_names(self) -> list[str]:
        return self.header.gene_names

    @property
    def layer_names(self) -> list[str]:
        return self.header.layer_names

    @property
    def bits(self) -> bool:
        """Whether the parameters are bit widths (quantization problems) rather than thresholds."""
        return not self.header.maximize_cost

    @property
    def workload(self) -> Workload:
        """The workload the run was made with (the text stored in the file; relative inputs resolve against the
        workload file's original folder)."""
        return stored_workload(self.header, self.path)

    @property
    def cost_label(self) -> str:
        """The cost axis name with its unit, e.g. ``bits_weighted_linear [bits]``."""
        return f"{self.header.cost_name} [{self.header.cost_unit}]"

    def table(self, name: str) -> Table:
        """A table by name: ``individuals``, ``baseline``, ``generations``, ``reevaluations``, ``retraining``,
        ``sensitivity``."""
        tables = {"individuals": self.individuals, "baseline": self.baseline, "generations": self.generations,
                  **self.follow_ups}
        if name not in tables:
            raise UserError(f"{self.path} has no table '{name}'; it has {', '.join(tables)}.")
        return tables[name]

    def to_pandas(self, table: str = "individuals") -> pandas.DataFrame:
        """A table as a pandas DataFrame (see :meth:`Table.to_pandas`; needs pandas)."""
        return self.table(table).to_pandas()

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

    def pareto(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Row indices of the Pareto front of the usable individuals (evaluated ok, meeting the accuracy
        constraint) among ``rows`` (default all), sorted by cost."""
        ind = self.individuals
        mask = usable(ind["constraint"], ind["status"])
        if rows is not None:
            mask &= np.isin(np.arange(self.count), rows)
        front = np.flatnonzero(pareto_mask(ind["objectives"], self.header.maximize_cost, mask))
        return front[np.argsort(ind["cost"][front], kind="stable")]

    @property
    def front_step(self) -> str:
        """Which side a step line through the cost-sorted front holds its value (pgfplots/matplotlib naming)."""
        return "right" if self.header.maximize_cost else "left"

    def hypervolume(self) -> np.ndarray:
        """Per stored generation: the normalized hypervolume of the population after it (reference point (1, 1))."""
        return self.generations["hypervolume"]

    def cumulative_hypervolume(self) -> np.ndarray:
        """Per stored generation: the normalized hypervolume of every individual evaluated up to it."""
        ind = self.individuals
        return cumulative_hypervolume(ind["objectives"], ind["constraint"], ind["status"], ind["generation"],
                                      self.header, self.generations.rows)

    def sensitivity(self) -> Sensitivity | None:
        """The sensitivity sweep stored by ``qsx-batch sensitivity`` or ``initial_population: sensitivity`` (None
        when the file holds none)."""
        table = self.follow_ups.get(SENSITIVITY)
        return Sensitivity.from_table(table, self.gene_names) if table is not None and table.rows else None

    def reevaluated(self, dataset: str) -> dict[int, tuple[float, int, float]]:
        """Individual -> (accuracy, samples, cost) of the individuals re-evaluated ok on ``dataset`` (dotted key)."""
        table = self.follow_ups.get(REEVALUATIONS)
        if table is None:
            return {}
        return {int(table["individual"][i]): (table["accuracy"][i], table["samples"][i], table["cost"][i])
                for i in range(table.rows) if table["dataset"][i] == dataset and table["status"][i] == Status.OK}


    def reevaluated_accuracy(self) -> tuple[np.ndarray, str]:
        """Per individual, the accuracy of its re-evaluation (NaN where there is none), and the dataset it was
        re-evaluated on: ``reevaluation.datasets.reevaluate`` when the run has re-evaluations there, else the
        dataset of the last one ('' when the run has none)."""
        table = self.follow_ups.get(REEVALUATIONS)
        out = np.full(self.count, np.nan)
        if table is None or not table.rows:
            return out, ""
        preferred = "reevaluation.datasets.reevaluate"
        dataset = preferred if preferred in set(table["dataset"]) else str(table["dataset"][-1])
        for row, (accuracy, _, _) in self.reevaluated(dataset).items():
            out[row] = accuracy
        return out, dataset


def open(path: str | Path) -> Run:
    """Read a results file (format 1 or 2; also one a run is still writing, or left by a killed run)."""
    with open_results(Path(path)) as f:
        tables = {name: read_table(f, name) for name in table_names(f)}
        return Run(
            path=Path(path), header=read_header(f), format_version=int(f.attrs["format_version"]),
            created=float(f.attrs["created"]), minimum_accuracy=minimum_accuracy(f),
            individuals=tables.pop("individuals"), baseline=tables.pop("baseline"),
            generations=tables.pop("generations"), follow_ups=tables)


def newest(folder: Path) -> Path:
    """The most recently written results file (``*.h5``) in ``folder``: what a command given no path opens."""
    found = sorted(folder.glob("*.h5"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not found:
        raise UserError(f"No results file given, and {folder}/ holds none (*.h5) to default to. Give the path of one; "
                        "'qsx-batch explore' writes them into the workload's 'results' folder (default results/ of "
                        "the working folder).")
    return found[-1]
