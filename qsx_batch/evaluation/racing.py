"""Racing evaluation: stop scoring an individual once it provably cannot reach the front.

An individual is evaluated on growing prefixes of the fixed evaluation subset (``exploration.racing.stages``,
fractions rounded up to whole batches so that the batches are exactly those of a full evaluation). After each
stage but the last, a one-sided Wilson score interval at ``confidence`` bounds its accuracy from above. It is
stopped ("raced out") when that upper bound is below the accuracy constraint, or when an individual evaluated
before the current generation with lower or equal cost has an accuracy above the bound (dominated with the
stated confidence). Fully evaluated individuals are bit-identical to a run without racing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


def wilson_interval(correct: int, n: int, confidence: float) -> tuple[float, float]:
    """One-sided Wilson score bounds (each at ``confidence``) of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(confidence)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def stage_sizes(stages: list[float], total: int, batch_size: int) -> list[int]:
    """Sample counts after each stage, rounded up to whole batches, strictly increasing, ending at ``total``."""
    sizes = []
    for fraction in stages:
        n = min(total, math.ceil(fraction * total / batch_size) * batch_size)
        if not sizes or n > sizes[-1]:
            sizes.append(n)
    if sizes[-1] != total:
        sizes.append(total)
    return sizes


@dataclass(frozen=True)
class RaceContext:
    """What a racing evaluation compares against: the constraint and the front known so far."""

    stages: tuple[float, ...]
    confidence: float
    minimum_accuracy: float | None
    front: np.ndarray  # rows (cost, accuracy) of evaluated, feasible individuals
    maximize_cost: bool

    def stop_reason(self, correct: int, n: int, cost: float) -> tuple[str, float, float]:
        """'' to continue, else why to stop; plus the accuracy interval."""
        low, high = wilson_interval(correct, n, self.confidence)
        if self.minimum_accuracy is not None and high < self.minimum_accuracy:
            return "below the accuracy constraint", low, high
        if len(self.front):
            costs, accs = self.front[:, 0], self.front[:, 1]
            cheaper = costs >= cost if self.maximize_cost else costs <= cost
            if np.any(cheaper & (accs > high)):
                return "dominated", low, high
        return "", low, high
