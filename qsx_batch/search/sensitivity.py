"""Per-gene sensitivity: the network evaluated with one gene swept over its range while every other gene stays at
its neutral value (the upper bit width, a zero threshold), as AIMET's phase 1 and ModelOpt's per-layer scores.

:func:`measure_sensitivity` evaluates the sweep through any executor and stores it in the results file's
``sensitivity`` table (points stored before, or evaluated ok by the search or the baseline, are not evaluated
again); :class:`Sensitivity` reads it back as a grid and derives starting individuals for NSGA-II
(``exploration.initial_population: sensitivity``).

``exploration.sensitivity.sweep: full`` evaluates every point at once. ``adaptive`` (the default) spends
evaluations only where a starting individual could use them: the reference, then each gene from its most
aggressive value toward neutral until a value loses no label (without labels to compare: loses nothing); the
values beyond it are never a budget's cheapest choice when priced by loss or lost labels, so those starting
individuals are the full sweep's (the changed-labels price chooses among the values swept). Every point but the
reference is raced (stopped once its accuracy is provably below the reference minus the largest budget), so a
point no budget could take costs a fraction of an evaluation.
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
    """Stores sweep points in the results file: copied where the run has the genome (full evaluations only),
    else evaluated on the sweep's share of the samples. With ``paired`` (a built-in metric) every evaluated point
    keeps how many labels it and the reference disagree on, from which the knapsack prices it
    (:meth:`Sensitivity.prices`); the reference is then evaluated in this process for its per-label hits (once,
    also when stored or known already)."""

    def __init__(self, problem: Problem, executor: Executor, writer: ResultsWriter, progress: bool, paired: bool,
                 fraction: float):
        self.problem, self.executor, self.writer, self.progress = problem, executor, writer, progress
        self.stored = {genome_key(g) for g in writer.read(SENSITIVITY)["genome"]}
        self.known = known_results(writer) if fraction == 1 else {}
        self.evaluated = self.copied = 0
        self.paired, self.fraction = paired, fraction  # fraction: for the adaptive sweep's raced contexts
        # scores the sweep's share of the samples without checks, with per-label hits where the metric has them
        self.plain = RaceContext((1.0,), 0.5, None, np.zeros((0, 2)), problem.maximize_cost, fraction=fraction) \
            if paired or fraction < 1 else None
        self.reference_hits: np.ndarray | None = None

    def measure(self, points: list[SweepPoint], race: RaceContext | None = None) -> Sensitivity:
        """Store the points not in the table yet; returns the whole table as a sweep."""
        todo: dict[tuple, SweepPoint] = {}
        for point in points:
            key = genome_key(point.genome)
            if key in self.stored or key in todo:
                continue
            if key in self.known and not (self.paired and point.gene < 0):
                self._append(point, self.known[key])
                self.copied += 1
            else:
                todo[key] = point
        if self.paired and self.reference_hits is None and todo:
            reference = reference_point(self.problem)
            todo.pop(genome_key(reference.genome), None)
            self._evaluate([reference], self.plain)
        self._evaluate(list(todo.values()), race or self.plain)
        return self.read()

    def _evaluate(self, points: list[SweepPoint], race: RaceContext | None) -> None:
        todo = {genome_key(point.genome): point for point in points}
        bar = tqdm(total=len(todo), desc="sensitivity", unit="ind", leave=False, disable=not self.progress or not todo)
        requests = [EvalRequest(point.genome, race=self.plain if point.gene < 0 else race) for point in points]
        for request, result, _ in self.executor.run(requests, SENSITIVITY_STAGE):
            point = todo[genome_key(request.genome)]
            if point.gene < 0:
                self.reference_hits = result.hits if result.status == Status.OK else None
            if genome_key(request.genome) not in self.stored:
                self._append(point, result)
            self.evaluated += 1
            bar.update(1)
        bar.close()

    def read(self) -> Sensitivity:
        return Sensitivity.from_table(self.writer.read(SENSITIVITY), self.problem.gene_names)

    def _append(self, point: SweepPoint, result: IndividualResult) -> None:
        parameter = float("nan") if point.gene < 0 else float(self.problem.decode(point.genome)[point.gene])
        discordant, labels = -1, 0
        if point.gene >= 0 and result.hits is not None and self.reference_hits is not None:
            labels = min(len(result.hits), len(self.reference_hits))  # a raced-out point: its prefix
            discordant = int(np.sum(result.hits[:labels] != self.reference_hits[:labels]))
        self.writer.append_sensitivity(point.gene, point.value, parameter, result, discordant, labels)
        self.stored.add(genome_key(point.genome))


def measure_sensitivity(problem: Problem, executor: Executor, writer: ResultsWriter, workload: WorkloadSpec,
                        progress: bool = False, log: Callable[[str], None] | None = None) -> Sensitivity:
    """Store the points of the workload's sweep (``exploration.sensitivity``) that the ``sensitivity`` table lacks,
    each as it arrives. Returns the whole sweep."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    spec = workload.exploration.sensitivity
    sweep = _Sweep(problem, executor, writer, progress, counts_samples(workload), spec.sample_fraction)
    genes = inward_points(problem, spec.points)
    if spec.sweep == "full":
        sweep.measure([reference_point(problem)])
        result = sweep.measure([p for points in genes for p in points])
    else:
        result = _adaptive(sweep, genes, spec.loss_budgets, problem)
    if sweep.evaluated or sweep.copied:
        raced = int(np.sum(writer.read(SENSITIVITY)["status"] == Status.RACED_OUT))
        log(f"sensitivity: {sweep.evaluated} evaluations ({spec.sweep} sweep of {sum(map(len, genes)) + 1} points"
            + (f", {raced} raced out" if raced else "") + ")"
            + (f", {sweep.copied} taken from the run" if sweep.copied else ""))
    return result


def _adaptive(sweep: _Sweep, genes: list[list[SweepPoint]], budgets: list[float], problem: Problem) -> Sensitivity:
    """The reference, then each gene from its most aggressive value toward neutral, one value per gene and round,
    until a value loses no label that the reference gets right (its loss and lost-labels prices are zero): every
    less aggressive value costs more and cannot be priced lower by these (prices count from zero), so no budget's
    cheapest setting takes it, and their starting individuals equal those of a full sweep. The changed-labels
    price, stricter, chooses among the values swept: stopping only where no label changes swept 200 of ResNet-20's
    265 points instead of 170, for the same best starting individual (docs/performance.md).
    Points are raced (built-in metrics) against the reference minus the largest budget (no budget takes them)."""
    result = sweep.measure([reference_point(problem)])
    if not np.isfinite(result.reference_accuracy):  # nothing to measure losses against
        return result
    floor = result.reference_accuracy - max(budgets)

    def context(current: Sensitivity) -> RaceContext | None:
        done = current.ok & (current.genes >= 0)
        history = np.column_stack([current.cost[done], current.accuracy[done]])
        return RaceContext(None, SWEEP_CONFIDENCE, floor, np.zeros((0, 2)), problem.maximize_cost,
                           history, fraction=sweep.fraction) if sweep.paired else None

    step = {gene: 0 for gene, points in enumerate(genes) if points}
    while step:
        result = sweep.measure([genes[gene][i] for gene, i in step.items()], context(result))
        step = {gene: i + 1 for gene, i in step.items()
                if i + 1 < len(genes[gene])
                and not result.loss_at(gene, genes[gene][i].value, "lost_labels") <= 0}
    return result
