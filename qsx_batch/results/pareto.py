"""Pareto fronts and hypervolume of stored individuals (accuracy maximized; cost minimized or maximized).

Hypervolume is computed on normalized objectives, both in [0, 1] and minimized: ``1 - accuracy``, and the cost
divided by the cost of the all-upper-limit setting (quantization) or ``1 - zero blocks per sample / tiles per
sample`` (sparsity). The reference point is (1, 1), so a run's hypervolume lies in [0, 1]. Only feasible
individuals with status ok count.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from ..evaluation.record import Status

REFERENCE_POINT = np.array([1.0, 1.0])


class CostScale(Protocol):
    """What normalizes a run's cost (the run header has these fields)."""

    maximize_cost: bool
    worst_cost: float
    max_blocks_per_sample: float


def normalized_objectives(objectives: np.ndarray, run: CostScale) -> np.ndarray:
    """(accuracy, cost) rows -> minimized, normalized (error, cost share) rows."""
    objectives = np.asarray(objectives, dtype=float).reshape(-1, 2)
    error = 1.0 - objectives[:, 0]
    if run.maximize_cost:
        cost = 1.0 - objectives[:, 1] / (float(run.max_blocks_per_sample) or 1.0)
    else:
        cost = objectives[:, 1] / (float(run.worst_cost) or 1.0)
    return np.column_stack([error, cost])


def usable(constraint: np.ndarray, status: np.ndarray) -> np.ndarray:
    """Mask of individuals that count for fronts: evaluated ok and meeting the accuracy constraint."""
    constraint = np.asarray(constraint, dtype=float)
    return (np.asarray(status) == Status.OK) & ~(constraint > 0)


def pareto_mask(objectives: np.ndarray, maximize_cost: bool, mask: np.ndarray | None = None) -> np.ndarray:
    """Non-dominated individuals among ``mask``: accuracy maximized, cost minimized (or maximized)."""
    objectives = np.asarray(objectives, dtype=float).reshape(-1, 2)
    mask = np.ones(len(objectives), bool) if mask is None else np.asarray(mask, bool)
    out = np.zeros(len(objectives), bool)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return out
    F = np.column_stack([-objectives[idx, 0], -objectives[idx, 1] if maximize_cost else objectives[idx, 1]])
    front = NonDominatedSorting().do(F, only_non_dominated_front=True)
    out[idx[front]] = True
    return out


def hypervolume(objectives: np.ndarray, constraint: np.ndarray, status: np.ndarray, run: CostScale) -> float:
    """Normalized hypervolume (reference point (1, 1)) of the usable individuals."""
    mask = usable(constraint, status)
    if not mask.any():
        return 0.0
    points = normalized_objectives(np.asarray(objectives)[mask], run)
    points = points[(points < REFERENCE_POINT).all(axis=1)]
    return float(HV(ref_point=REFERENCE_POINT)(points)) if len(points) else 0.0


def ranking(objectives: np.ndarray, maximize_cost: bool, by: str) -> np.ndarray:
    """Row order from best to worst: by ``accuracy`` (ties: better cost first) or by ``cost`` (ties: accuracy)."""
    objectives = np.asarray(objectives, dtype=float).reshape(-1, 2)
    accuracy_key = -objectives[:, 0]
    cost_key = -objectives[:, 1] if maximize_cost else objectives[:, 1]
    keys = (cost_key, accuracy_key) if by == "accuracy" else (accuracy_key, cost_key)
    return np.lexsort(keys)


def cumulative_hypervolume(objectives: np.ndarray, constraint: np.ndarray, status: np.ndarray,
                           generation: np.ndarray, run: CostScale, generations: int) -> np.ndarray:
    """Per generation g: the normalized hypervolume of every individual evaluated in generations 0..g."""
    generation = np.asarray(generation)
    objectives, constraint, status = np.asarray(objectives), np.asarray(constraint), np.asarray(status)
    out = np.zeros(generations)
    for g in range(generations):
        rows = generation <= g
        out[g] = hypervolume(objectives[rows], constraint[rows], status[rows], run)
    return out
