"""Racing evaluation: stop scoring an individual once it provably cannot reach the front.

An individual is evaluated on growing prefixes of the fixed evaluation subset, each a whole number of batches so
that the batches are exactly those of a full evaluation. After each prefix but the last, a one-sided Wilson score
interval bounds its accuracy from above. It is stopped ("raced out") when that upper bound is below the accuracy
constraint, or when an individual evaluated before the current generation with lower or equal cost has an
accuracy above the bound (dominated with the stated confidence). Fully evaluated individuals are bit-identical to
a run without racing.

Where the checks go: fixed fractions (``exploration.racing.stages``, each check at ``confidence``), or planned
for each generation (``stages: auto``): the prefixes, at most :data:`MAX_CHECKS` of them, that would have spent the
fewest samples on the previous generation's individuals, with ``confidence`` shared by all the checks of one
individual (Bonferroni). A population near fp32 accuracy (sparsity) thus gets one late check or none, a
population with many hopeless individuals (low bit widths) early ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from statistics import NormalDist

import numpy as np

MAX_CHECKS = 3  # per individual with stages: auto (more checks: each needs a wider interval)
MAX_CANDIDATES = 16  # prefix sizes a plan chooses from (whole batches, spread geometrically on large sets)
FIRST_PLAN = (0.125, 0.25, 0.5)  # the checks of stages: auto before any individual was evaluated


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence)


def wilson_bounds(correct: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Wilson score bounds (each at the confidence of ``z``) of binomial proportions (arrays)."""
    n = np.maximum(np.asarray(n, dtype=float), 1e-300)
    p = np.asarray(correct, dtype=float) / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return np.maximum(0.0, centre - half), np.minimum(1.0, centre + half)


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


def candidate_sizes(total: int, batch_size: int) -> np.ndarray:
    """Prefix sizes a check may use: whole batches short of ``total``, at most :data:`MAX_CANDIDATES`."""
    sizes = np.arange(batch_size, total, batch_size)
    if len(sizes) > MAX_CANDIDATES:
        picks = np.unique(np.rint(np.geomspace(1, len(sizes), MAX_CANDIDATES)).astype(int)) - 1
        sizes = sizes[picks]
    return sizes


def pack_hits(hits: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-label hits (bool) as bits, for a race context (a front point's hits travel to every task)."""
    return np.packbits(np.asarray(hits, dtype=bool)), len(hits)


def discordance(x: np.ndarray, reference: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Within the first ``n`` labels (per entry of ``n``): labels ``x`` gets right and ``reference`` wrong, and
    the other way round. ``x`` (..., labels) and ``reference`` (labels,) are bool."""
    wins = np.concatenate([np.zeros(x.shape[:-1] + (1,)), np.cumsum(x & ~reference, axis=-1)], axis=-1)
    losses = np.concatenate([np.zeros(x.shape[:-1] + (1,)), np.cumsum(~x & reference, axis=-1)], axis=-1)
    return np.take(wins, n, axis=-1), np.take(losses, n, axis=-1)


def paired_worse(wins: np.ndarray, losses: np.ndarray, z: float) -> np.ndarray:
    """Sign test (McNemar) on discordant labels: the share ``x`` wins is below one half at the confidence of
    ``z``, so ``x`` is less accurate than the reference. Far more sensitive than two separate intervals, because
    two settings of one network disagree on few samples."""
    discordant = wins + losses
    _, high = wilson_bounds(wins, np.maximum(discordant, 1), z)
    return (discordant > 0) & (high < 0.5)


@dataclass(frozen=True)
class RaceContext:
    """What a racing evaluation compares against: the constraint, the front known so far (with each point's
    per-label hits where the search kept them: paired comparisons), and (for planned checks) the individuals
    of the previous generation."""

    stages: tuple[float, ...] | None  # None: planned per generation from ``history`` (stages: auto)
    confidence: float
    minimum_accuracy: float | None
    front: np.ndarray  # rows (cost, accuracy) of evaluated, feasible individuals
    maximize_cost: bool
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # rows (cost, accuracy)
    front_hits: tuple = ()  # per front row: pack_hits(...) or None
    history_hits: tuple = ()  # per history row: pack_hits(...) (a raced-out one's prefix) or None
    fraction: float = 1.0  # the share of the samples to end at, in whole batches (the sweep's sample_fraction)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)  # plans, unpacked hits

    def _unpacked(self, name: str) -> list[np.ndarray | None]:
        if name not in self._cache:
            self._cache[name] = [None if p is None else np.unpackbits(p[0], count=p[1]).astype(bool)
                                 for p in getattr(self, name)]
        return self._cache[name]

    def verdicts(self, correct: np.ndarray, n: np.ndarray, labels: np.ndarray, cost: float,
                 hits: np.ndarray | None, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per prefix of ``n`` samples (``correct`` of them right; ``labels`` labels, the first of ``hits``):
        0 to continue, 1 below the constraint, 2 dominated; plus the (unpaired) accuracy interval.

        The error of one check (1 - ``confidence``) is split between the unpaired Wilson bound and the paired
        tests against the cheaper front points with hits (Bonferroni)."""
        correct, n, labels = (np.atleast_1d(np.asarray(a)) for a in (correct, n, labels))
        front_hits = self._unpacked("front_hits")
        cheaper = np.zeros(0, dtype=bool)
        if len(self.front):
            cheaper = self.front[:, 0] >= cost if self.maximize_cost else self.front[:, 0] <= cost
        paired = [k for k in np.flatnonzero(cheaper) if hits is not None and k < len(front_hits)
                  and front_hits[k] is not None and len(front_hits[k]) >= labels.max()]
        alpha = 1 - confidence
        low, high = wilson_bounds(correct, n, _z(1 - alpha / 2) if paired else _z(confidence))
        dominated = np.zeros(len(n), dtype=bool)
        if len(self.front):
            dominated = np.any(cheaper & (self.front[:, 1] > high[:, None]), axis=1)
        z_paired = _z(1 - alpha / (2 * max(1, len(paired))))
        for k in paired:
            dominated |= paired_worse(*discordance(hits, front_hits[k][: len(hits)], labels), z_paired)
        out = np.where(dominated, 2, 0)
        if self.minimum_accuracy is not None:
            out = np.where(high < self.minimum_accuracy, 1, out)
        return out, low, high

    def plan(self, total: int, batch_size: int) -> tuple[list[int], float]:
        """The prefix sizes to score (ending at ``total``, or at :attr:`fraction` of it) and the confidence of each
        check (computed once)."""
        if (total, batch_size) not in self._cache:
            end = min(total, max(1, math.ceil(self.fraction * total / batch_size)) * batch_size)
            self._cache[total, batch_size] = self._plan(end, batch_size)
        return self._cache[total, batch_size]

    def _plan(self, total: int, batch_size: int) -> tuple[list[int], float]:
        if self.stages is not None:
            return stage_sizes(list(self.stages), total, batch_size), self.confidence
        candidates = candidate_sizes(total, batch_size)
        if not len(self.history) or not len(candidates):
            sizes = stage_sizes(list(FIRST_PLAN), total, batch_size)
            return sizes, 1 - (1 - self.confidence) / max(1, len(sizes) - 1)
        cost, accuracy = self.history[:, 0], self.history[:, 1]
        history_hits = self._unpacked("history_hits") + [None] * (len(cost) - len(self.history_hits))
        known = [len(h) for h in self._unpacked("front_hits") + history_hits if h is not None]
        per_sample = max(1, max(known, default=total) // total)  # labels per sample (tokens)
        labels = candidates * per_sample
        best: tuple[float, list[int], float] = (float(total), [total], self.confidence)
        for checks in range(1, min(MAX_CHECKS, len(candidates)) + 1):
            confidence = 1 - (1 - self.confidence) / checks
            stopped = np.zeros((len(candidates), len(cost)), dtype=bool)  # replayed: stopped there, at that level
            for i, hits in enumerate(history_hits):
                if hits is None:  # its accuracy as if every prefix had it, unpaired
                    stopped[:, i] = self.verdicts(np.rint(accuracy[i] * candidates), candidates, labels, cost[i],
                                                  None, confidence)[0] > 0
                    continue
                seen = labels <= len(hits)  # a raced-out individual's prefix ends where it stopped
                stopped[~seen, i] = True
                if seen.any():
                    correct = np.cumsum(hits)[labels[seen] - 1]
                    stopped[seen, i] = self.verdicts(correct, candidates[seen], labels[seen], cost[i],
                                                     hits[: labels[seen].max()], confidence)[0] > 0
            for chosen in combinations(range(len(candidates)), checks):
                spent = np.full(len(cost), float(total))
                for k in reversed(chosen):  # the first check that stops an individual decides what it spent
                    spent = np.where(stopped[k], candidates[k], spent)
                if spent.mean() < best[0] - 1e-9:
                    best = (float(spent.mean()), [int(candidates[k]) for k in chosen] + [total], confidence)
        return best[1], best[2]

    def stop_reason(self, correct: int, n: int, cost: float, confidence: float,
                    hits: np.ndarray | None = None) -> tuple[str, float, float]:
        """'' to continue, else why to stop; plus the accuracy interval (``hits``: the prefix's per-label hits)."""
        labels = n if hits is None else len(hits)
        verdict, low, high = (a[0] for a in self.verdicts(correct, n, labels, cost, hits, confidence))
        return ("", "below the accuracy constraint", "dominated")[int(verdict)], float(low), float(high)
