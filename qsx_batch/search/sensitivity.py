"""Per-gene sensitivity: the network evaluated with one gene swept over its range while every other gene stays at
its neutral value (the upper bit width, a zero threshold), as AIMET's phase 1 and ModelOpt's per-layer scores.

:func:`measure_sensitivity` evaluates the sweep through any executor and stores it in the results file's
``sensitivity`` table (points stored before, or evaluated ok by the search or the baseline, are not evaluated
again); :class:`Sensitivity` reads it back as a grid and derives starting individuals for NSGA-II
(``exploration.initial_population: sensitivity``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..evaluation.record import IndividualResult, genome_key
from ..executors.base import SENSITIVITY_STAGE, EvalRequest, Executor
from ..results.sensitivity import Sensitivity
from ..store import ResultsWriter, ok_results
from ..store.format import SENSITIVITY
from ..workload import SensitivitySpec

if TYPE_CHECKING:
    from ..problems import Problem


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


def known_results(writer: ResultsWriter) -> dict[tuple, IndividualResult]:
    """Genomes evaluated ok on the exploration data so far, by genome key: baseline rows, individuals and the sweep."""
    known: dict[tuple, IndividualResult] = {}
    for name in ("baseline", "individuals", SENSITIVITY):
        known = {**ok_results(writer.read(name)), **known}  # earlier tables win, as the first row of a genome
    return known


def measure_sensitivity(problem: Problem, executor: Executor, writer: ResultsWriter, spec: SensitivitySpec,
                        progress: bool = False, log: Callable[[str], None] | None = None) -> Sensitivity:
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
