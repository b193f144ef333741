"""Per-gene sensitivity: the network evaluated with one gene swept over its range while every other gene stays at
its neutral value (the upper bit width, a zero threshold), as AIMET's phase 1 and ModelOpt's per-layer scores.

:func:`measure_sensitivity` evaluates the sweep through any executor and stores it in the results file's
``sensitivity`` table (points stored before, or evaluated ok by the search or the baseline, are not evaluated
again); :class:`Sensitivity` reads it back as a grid and derives starting individuals for NSGA-II
(``exploration.initial_population: sensitivity``). Reading a sweep needs no torch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from .executors.base import SENSITIVITY_STAGE, EvalRequest, Executor
from .result import IndividualResult, Status, genome_key
from .store import ResultsWriter
from .store.format import REEVALUATION_RESULT_FIELDS, SENSITIVITY
from .workload import SensitivitySpec

if TYPE_CHECKING:  # this module reads sweeps without torch (results.Run.sensitivity on a laptop)
    from .problems import Problem


@dataclass(frozen=True)
class SweepPoint:
    """One evaluation of the sweep: ``gene`` set to ``value`` (gene -1: the all-neutral reference genome)."""

    gene: int
    value: float
    genome: np.ndarray


def sweep_points(problem: Problem, points: int) -> list[SweepPoint]:
    """The reference genome, then per gene every sweep value other than its neutral one."""
    neutral = problem.neutral_genome()
    sweep = [SweepPoint(-1, float("nan"), neutral)]
    for gene in range(len(neutral)):
        for value in problem.sweep_values(gene, points):
            if value != neutral[gene]:
                genome = neutral.copy()
                genome[gene] = value
                sweep.append(SweepPoint(gene, float(value), genome))
    return sweep


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


def known_results(writer: ResultsWriter) -> dict[tuple, IndividualResult]:
    """Genomes evaluated ok on the exploration data so far, by genome key: baseline rows, individuals and the sweep."""
    known: dict[tuple, IndividualResult] = {}
    for name in ("baseline", "individuals", SENSITIVITY):
        known = {**ok_results(writer.read(name)), **known}  # earlier tables win, as the first row of a genome
    return known


def measure_sensitivity(problem: Problem, executor: Executor, writer: ResultsWriter, spec: SensitivitySpec,
                        progress: bool = False, log: Callable[[str], None] | None = None) -> "Sensitivity":
    """Store every sweep point not in the ``sensitivity`` table yet: copied when the run evaluated that genome
    before, else evaluated through ``executor`` (each stored as it arrives). Returns the whole sweep."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    stored = {genome_key(g) for g in writer.read(SENSITIVITY)["genome"]}
    known = known_results(writer)
    todo: dict[tuple, SweepPoint] = {}
    copied = 0
    for point in sweep_points(problem, spec.points):
        key = genome_key(point.genome)
        if key in stored or key in todo:
            continue
        if key in known:
            _append(writer, problem, point, known[key])
            copied += 1
        else:
            todo[key] = point
    if todo or copied:
        log(f"sensitivity: {len(todo)} evaluations" + (f", {copied} taken from the run" if copied else ""))
    bar = tqdm(total=len(todo), desc="sensitivity", unit="ind", leave=False, disable=not progress or not todo)
    requests = [EvalRequest(point.genome) for point in todo.values()]
    for request, result, _ in executor.run(requests, SENSITIVITY_STAGE):
        _append(writer, problem, todo[genome_key(request.genome)], result)
        bar.update(1)
    bar.close()
    return Sensitivity.from_table(writer.read(SENSITIVITY), problem.gene_names)


def _append(writer: ResultsWriter, problem: Problem, point: SweepPoint, result: IndividualResult) -> None:
    parameter = float("nan") if point.gene < 0 else float(problem.decode(point.genome)[point.gene])
    writer.append_sensitivity(point.gene, point.value, parameter, result)


@dataclass(frozen=True)
class Sensitivity:
    """A stored sweep: per row the swept gene (-1: reference), its genome value and parameter, the accuracy."""

    gene_names: list[str]
    genes: np.ndarray
    values: np.ndarray
    parameters: np.ndarray
    accuracy: np.ndarray
    ok: np.ndarray
    reference_accuracy: float  # NaN until the reference genome is stored
    neutral_parameters: np.ndarray  # per gene, the parameter of the reference genome (NaN until stored)

    @classmethod
    def from_table(cls, table: Mapping[str, np.ndarray], gene_names: list[str]) -> "Sensitivity":
        """The sweep held by a ``sensitivity`` table."""
        genes = np.asarray(table["swept_gene"], dtype=int)
        ok = np.asarray(table["status"]) == Status.OK
        reference = np.flatnonzero((genes < 0) & ok)
        return cls(gene_names=list(gene_names), genes=genes, values=np.asarray(table["swept_value"], dtype=float),
                   parameters=np.asarray(table["swept_parameter"], dtype=float),
                   accuracy=np.asarray(table["accuracy"], dtype=float), ok=ok,
                   reference_accuracy=float(table["accuracy"][reference[0]]) if len(reference) else float("nan"),
                   neutral_parameters=np.asarray(table["params"][reference[0]], dtype=float) if len(reference)
                   else np.full(len(gene_names), np.nan))

    @property
    def rows(self) -> int:
        return len(self.genes)

    def loss(self) -> np.ndarray:
        """Per row: accuracy points lost against the reference genome (NaN where the evaluation failed)."""
        return np.where(self.ok, self.reference_accuracy - self.accuracy, np.nan)

    def curve(self, gene: int) -> tuple[np.ndarray, np.ndarray]:
        """One gene's (parameters, accuracies), sorted by parameter, with the reference point at the gene's
        neutral parameter (failed evaluations as NaN accuracy)."""
        rows = np.flatnonzero(self.genes == gene)
        params = [*self.parameters[rows], self.neutral_parameters[gene]]
        accuracy = [*np.where(self.ok[rows], self.accuracy[rows], np.nan), self.reference_accuracy]
        order = np.argsort(params, kind="stable")
        return np.asarray(params)[order], np.asarray(accuracy)[order]

    def starting_genomes(self, problem: Problem, budgets: list[float]) -> np.ndarray:
        """Per loss budget one genome: each gene at its value farthest from neutral whose single-gene loss stays
        within the budget (neutral when none does); distinct, without the all-neutral genome."""
        neutral = problem.neutral_genome()
        loss = self.loss()
        genomes: dict[tuple, np.ndarray] = {}
        for budget in sorted(budgets):
            genome = neutral.copy()
            for gene in range(len(neutral)):
                fits = np.flatnonzero((self.genes == gene) & (loss <= budget + 1e-12))
                if len(fits):
                    genome[gene] = self.values[fits[np.argmax(np.abs(self.values[fits] - neutral[gene]))]]
            if not np.array_equal(genome, neutral):
                genomes.setdefault(genome_key(genome), genome)
        return np.array(list(genomes.values())).reshape(-1, len(neutral))

    def groups(self) -> list[tuple[np.ndarray, list[int]]]:
        """The genes grouped by the parameters they were swept over (bit widths, thresholds): (parameters, genes)."""
        groups: dict[tuple, list[int]] = {}
        for gene in range(len(self.gene_names)):
            params, _ = self.curve(gene)
            groups.setdefault(tuple(np.round(params, 12)), []).append(gene)
        return [(np.array(params), genes) for params, genes in groups.items()]

    @staticmethod
    def axis_label(params: np.ndarray, bits: bool) -> str:
        """What a group's parameters are: ``bits`` (whole values of a quantizing run) or ``threshold``."""
        return "bits" if bits and all(p == int(p) for p in params) else "threshold"

    def grid(self, params: np.ndarray, genes: list[int]) -> np.ndarray:
        """Accuracy per gene (rows) and parameter (columns); NaN where failed or not evaluated."""
        out = np.full((len(genes), len(params)), np.nan)
        for i, gene in enumerate(genes):
            for p, accuracy in zip(*self.curve(gene)):
                out[i, np.flatnonzero(np.isclose(params, p, rtol=0, atol=1e-12))] = accuracy
        return out
