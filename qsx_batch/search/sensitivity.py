"""Per-gene sensitivity: the network evaluated with one gene swept over its range while every other gene stays at
its neutral value (the upper bit width, a zero threshold), as AIMET's phase 1 and ModelOpt's per-layer scores.

:func:`measure_sensitivity` evaluates the sweep through any executor and stores it in the results file's
``sensitivity`` table (points stored before, or evaluated ok by the search or the baseline, are not evaluated
again); :class:`Sensitivity` reads it back as a grid and derives starting individuals for NSGA-II
(``exploration.initial_population: sensitivity``).

``exploration.sensitivity.sweep: full`` evaluates every point at once. ``adaptive`` (the default) spends
evaluations only where a starting individual could use them: the reference, then each gene from its most
aggressive value toward neutral until a value loses nothing (the values beyond it are never a budget's cheapest
choice, so the starting individuals are those of the full sweep). Every point but the reference is raced
(stopped once its accuracy is provably below the reference minus the largest budget), so a point no budget could
take costs a fraction of an evaluation.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..evaluation.metrics import counts_samples
from ..evaluation.racing import RaceContext
from ..evaluation.record import IndividualResult, Status, genome_key
from ..executors.base import SENSITIVITY_STAGE, EvalRequest, Executor
from ..results.sensitivity import Sensitivity
from ..store import ResultsWriter, ok_results
from ..store.format import SENSITIVITY
from ..workload import WorkloadSpec

if TYPE_CHECKING:
    from ..problems import Problem

SWEEP_CONFIDENCE = 0.95  # of the racing checks of one adaptive sweep point, together


@dataclass(frozen=True)
class SweepPoint:
    """One evaluation of the sweep: ``gene`` set to ``value`` (gene -1: the all-neutral reference genome)."""

    gene: int
    value: float
    genome: np.ndarray


def reference_point(problem: Problem) -> SweepPoint:
    return SweepPoint(-1, float("nan"), problem.neutral_genome())


def inward_points(problem: Problem, points: int) -> list[list[SweepPoint]]:
    """Per gene, its sweep values other than the neutral one, most aggressive (farthest from neutral) first."""
    neutral = problem.neutral_genome()
    out = []
    for gene in range(len(neutral)):
        values = [v for v in problem.sweep_values(gene, points) if v != neutral[gene]]
        values.sort(key=lambda v: -abs(v - neutral[gene]))
        out.append([SweepPoint(gene, float(v), _with(neutral, gene, v)) for v in values])
    return out


def _with(genome: np.ndarray, gene: int, value: float) -> np.ndarray:
    out = genome.copy()
    out[gene] = value
    return out


def known_results(writer: ResultsWriter) -> dict[tuple, IndividualResult]:
    """Genomes evaluated ok on the exploration data so far, by genome key: baseline rows, individuals and the sweep."""
    known: dict[tuple, IndividualResult] = {}
    for name in ("baseline", "individuals", SENSITIVITY):
        known = {**ok_results(writer.read(name)), **known}  # earlier tables win, as the first row of a genome
    return known


class _Sweep:
    """Stores sweep points in the results file: copied where the run has the genome, else evaluated."""

    def __init__(self, problem: Problem, executor: Executor, writer: ResultsWriter, progress: bool,
                 log: Callable[[str], None]):
        self.problem, self.executor, self.writer, self.progress, self.log = problem, executor, writer, progress, log
        self.stored = {genome_key(g) for g in writer.read(SENSITIVITY)["genome"]}
        self.known = known_results(writer)
        self.evaluated = self.copied = 0

    def measure(self, points: list[SweepPoint], race: RaceContext | None = None) -> Sensitivity:
        """Store the points not in the table yet; returns the whole table as a sweep."""
        todo: dict[tuple, SweepPoint] = {}
        for point in points:
            key = genome_key(point.genome)
            if key in self.stored or key in todo:
                continue
            if key in self.known:
                self._append(point, self.known[key])
                self.copied += 1
            else:
                todo[key] = point
        bar = tqdm(total=len(todo), desc="sensitivity", unit="ind", leave=False, disable=not self.progress or not todo)
        requests = [EvalRequest(point.genome, race=race) for point in todo.values()]
        for request, result, _ in self.executor.run(requests, SENSITIVITY_STAGE):
            self._append(todo[genome_key(request.genome)], result)
            self.evaluated += 1
            bar.update(1)
        bar.close()
        return self.read()

    def read(self) -> Sensitivity:
        return Sensitivity.from_table(self.writer.read(SENSITIVITY), self.problem.gene_names)

    def _append(self, point: SweepPoint, result: IndividualResult) -> None:
        parameter = float("nan") if point.gene < 0 else float(self.problem.decode(point.genome)[point.gene])
        self.writer.append_sensitivity(point.gene, point.value, parameter, result)
        self.stored.add(genome_key(point.genome))


def measure_sensitivity(problem: Problem, executor: Executor, writer: ResultsWriter, workload: WorkloadSpec,
                        progress: bool = False, log: Callable[[str], None] | None = None) -> Sensitivity:
    """Store the points of the workload's sweep (``exploration.sensitivity``) that the ``sensitivity`` table lacks,
    each as it arrives. Returns the whole sweep."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    spec = workload.exploration.sensitivity
    sweep = _Sweep(problem, executor, writer, progress, log)
    genes = inward_points(problem, spec.points)
    if spec.sweep == "full":
        result = sweep.measure([reference_point(problem), *(p for points in genes for p in points)])
    else:
        result = _adaptive(sweep, genes, spec.loss_budgets, problem, counts_samples(workload))
    if sweep.evaluated or sweep.copied:
        raced = int(np.sum(writer.read(SENSITIVITY)["status"] == Status.RACED_OUT))
        log(f"sensitivity: {sweep.evaluated} evaluations ({spec.sweep} sweep of {sum(map(len, genes)) + 1} points"
            + (f", {raced} raced out" if raced else "") + ")"
            + (f", {sweep.copied} taken from the run" if sweep.copied else ""))
    return result


def _adaptive(sweep: _Sweep, genes: list[list[SweepPoint]], budgets: list[float], problem: Problem,
              race: bool) -> Sensitivity:
    """The reference, then each gene from its most aggressive value toward neutral, one value per gene and round,
    until a value loses nothing: every less aggressive value costs more and cannot lose less (losses count from
    zero), so no budget's cheapest setting takes it and the starting individuals equal those of a full sweep.
    Points are raced against the reference minus the largest budget (no budget takes them)."""
    result = sweep.measure([reference_point(problem)])
    if not np.isfinite(result.reference_accuracy):  # nothing to measure losses against
        return result
    floor = result.reference_accuracy - max(budgets)

    def context(current: Sensitivity) -> RaceContext | None:
        done = current.ok & (current.genes >= 0)
        history = np.column_stack([current.cost[done], current.accuracy[done]])
        return RaceContext(None, SWEEP_CONFIDENCE, floor, np.zeros((0, 2)), problem.maximize_cost,
                           history) if race else None

    step = {gene: 0 for gene, points in enumerate(genes) if points}
    while step:
        result = sweep.measure([genes[gene][i] for gene, i in step.items()], context(result))
        step = {gene: i + 1 for gene, i in step.items()
                if i + 1 < len(genes[gene]) and not result.loss_at(gene, genes[gene][i].value) <= 0}
    return result
