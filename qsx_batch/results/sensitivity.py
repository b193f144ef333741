"""A stored sensitivity sweep read back as a grid (per gene and value, the accuracy), and the starting individuals
it suggests for NSGA-II (``exploration.initial_population: sensitivity``). Reading a sweep needs no torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation.record import Status, genome_key

LOSS_STEPS = 1000  # resolution of the knapsack's summed loss
# what the knapsack counts as a value's loss, from the least to the most cautious: each family of starting
# individuals is solved with one (Sensitivity.prices)
PRICES = ("loss", "lost_labels", "changed_labels")

if TYPE_CHECKING:  # read on a laptop without torch (results.Run.sensitivity)
    from ..problems import Problem


@dataclass(frozen=True)
class Sensitivity:
    """A stored sweep: per row the swept gene (-1: reference), its genome value and parameter, the accuracy."""

    gene_names: list[str]
    genes: np.ndarray
    values: np.ndarray
    parameters: np.ndarray
    accuracy: np.ndarray
    cost: np.ndarray
    ok: np.ndarray
    reference_accuracy: float  # NaN until the reference genome is stored
    reference_cost: float
    neutral_parameters: np.ndarray  # per gene, the parameter of the reference genome (NaN until stored)
    discordant: np.ndarray  # per row, labels it and the reference disagree on (-1: unknown)
    labels: np.ndarray  # per row, labels compared with the reference (0: unknown)

    @classmethod
    def from_table(cls, table: Mapping[str, np.ndarray], gene_names: list[str]) -> Sensitivity:
        """The sweep held by a ``sensitivity`` table."""
        genes = np.asarray(table["swept_gene"], dtype=int)
        ok = np.asarray(table["status"]) == Status.OK
        reference = np.flatnonzero((genes < 0) & ok)
        return cls(gene_names=list(gene_names), genes=genes, values=np.asarray(table["swept_value"], dtype=float),
                   parameters=np.asarray(table["swept_parameter"], dtype=float),
                   accuracy=np.asarray(table["accuracy"], dtype=float), cost=np.asarray(table["cost"], dtype=float),
                   ok=ok, reference_accuracy=float(table["accuracy"][reference[0]]) if len(reference) else float("nan"),
                   reference_cost=float(table["cost"][reference[0]]) if len(reference) else float("nan"),
                   neutral_parameters=np.asarray(table["params"][reference[0]], dtype=float) if len(reference)
                   else np.full(len(gene_names), np.nan),
                   **{name: np.asarray(table[name], dtype=int) if name in table  # a file of before: unknown
                      else np.full(len(genes), unknown) for name, unknown in (("discordant", -1), ("labels", 0))})

    @property
    def rows(self) -> int:
        return len(self.genes)

    def loss(self) -> np.ndarray:
        """Per row: accuracy points lost against the reference genome (NaN where the evaluation failed)."""
        return np.where(self.ok, self.reference_accuracy - self.accuracy, np.nan)

    def prices(self) -> dict[str, np.ndarray]:
        """Per :data:`PRICES` entry and row, what the knapsack counts as the row's loss (NaN where failed):

        - ``loss``: the measured loss, counted from zero;
        - ``lost_labels``: the share of labels the reference gets right and this point wrong (the ones it wins
          back are not counted);
        - ``changed_labels``: the share of labels on which the two disagree.

        Each bounds the one before from above. Single-gene losses do not add up: on ResNet-20, values that each
        lose nothing, or even win a few labels, wreck the network together (performance.md). Counting labels a
        value loses or changes is more cautious, because those add up across genes. Where the sweep has no labels
        to compare (a point copied from the run, a custom metric, a file of an earlier version), all three are
        the measured loss."""
        loss = self.loss()
        known = (self.discordant >= 0) & (self.labels > 0) & np.isfinite(loss)
        changed = np.where(known, self.discordant / np.maximum(self.labels, 1), loss)
        lost = np.where(known, np.clip((changed + loss) / 2, 0, changed), loss)  # (lost - won + lost + won) / 2
        return {"loss": loss, "lost_labels": lost, "changed_labels": changed}

    def curve(self, gene: int) -> tuple[np.ndarray, np.ndarray]:
        """One gene's (parameters, accuracies), sorted by parameter, with the reference point at the gene's
        neutral parameter (failed evaluations as NaN accuracy)."""
        rows = np.flatnonzero(self.genes == gene)
        params = [*self.parameters[rows], self.neutral_parameters[gene]]
        accuracy = [*np.where(self.ok[rows], self.accuracy[rows], np.nan), self.reference_accuracy]
        order = np.argsort(params, kind="stable")
        return np.asarray(params)[order], np.asarray(accuracy)[order]

    def loss_at(self, gene: int, value: float, price: str = "loss") -> float:
        """The stored loss (or another of :meth:`prices`) of ``gene`` at genome ``value`` (NaN: not stored,
        failed or raced out)."""
        rows = np.flatnonzero((self.genes == gene) & (self.values == value) & self.ok)
        return float(self.prices()[price][rows[0]]) if len(rows) else float("nan")

    def starting_genomes(self, problem: Problem, budgets: list[float],
                         prices: tuple[str, ...] = PRICES) -> np.ndarray:
        """Per price of :meth:`prices` and loss budget one genome: the cheapest choice of one swept value per gene
        (or its neutral value) whose summed single-gene prices stay within the budget, as HAWQ-V3's ILP and
        ModelOpt AutoQuantize pick per-layer formats. Distinct genomes, without the all-neutral one, by price
        then budget."""
        genomes: dict[tuple, np.ndarray] = {}
        priced = self.prices()
        for price in prices:
            for genome in self._knapsack(problem, sorted(budgets), priced[price]):
                genomes.setdefault(genome_key(genome), genome)
        return np.array(list(genomes.values())).reshape(-1, len(problem.neutral_genome()))

    def _knapsack(self, problem: Problem, budgets: list[float], loss: np.ndarray) -> list[np.ndarray]:
        """Per budget (ascending) the cheapest genome whose summed ``loss`` (per row) fits. Costs add up as the
        sweep measured them one gene at a time; the multiple-choice knapsack is solved exactly by dynamic
        programming over the loss in steps of 1/:data:`LOSS_STEPS` of the largest budget."""
        neutral = problem.neutral_genome()
        step = max(budgets[-1], 1e-9) / LOSS_STEPS

        def units(loss):  # rounded up: a choice never looks cheaper in loss than it was measured
            return np.ceil(np.maximum(loss, 0.0) / step - 1e-6).astype(int)

        capacity = int(units(budgets[-1]))
        sign = -1.0 if problem.maximize_cost else 1.0
        best = np.full(capacity + 1, np.inf)  # least summed cost change for exactly u loss units
        best[0] = 0.0
        choices = []
        for gene in range(len(neutral)):
            rows = np.flatnonzero((self.genes == gene) & (loss <= budgets[-1] + 1e-12))  # NaN (failed) is left out
            values = np.concatenate([[neutral[gene]], self.values[rows]])
            weights = np.concatenate([[0], units(loss[rows])])
            deltas = np.concatenate([[0.0], sign * (self.cost[rows] - self.reference_cost)])
            merged, picked = np.full_like(best, np.inf), np.zeros(capacity + 1, dtype=int)
            for c, (weight, delta) in enumerate(zip(weights, deltas)):
                shifted = np.full_like(best, np.inf)
                shifted[weight:] = best[: capacity + 1 - weight] + delta
                better = shifted < merged - 1e-12  # ties keep the earlier choice: neutral first
                merged, picked = np.where(better, shifted, merged), np.where(better, c, picked)
            best = merged
            choices.append((values, weights, picked))
        genomes = []
        for budget in budgets:
            u = int(np.argmin(best[: units(budget) + 1]))  # the cheapest; of equal ones, the least loss
            genome = neutral.copy()
            for gene in reversed(range(len(neutral))):
                values, weights, picked = choices[gene]
                genome[gene] = values[picked[u]]
                u -= int(weights[picked[u]])
            if not np.array_equal(genome, neutral):
                genomes.append(genome)
        return genomes

    def groups(self) -> list[tuple[np.ndarray, list[int]]]:
        """The genes grouped by the range they were swept over (bit widths, thresholds): (the parameters any of
        them was evaluated at, genes); an adaptive sweep leaves some of a gene's values out."""
        groups: dict[tuple, list[int]] = {}
        params: dict[tuple, set] = {}
        for gene in range(len(self.gene_names)):
            swept, _ = self.curve(gene)
            ends = tuple(np.round([np.nanmin(swept), np.nanmax(swept)], 12)) if np.isfinite(swept).any() else ()
            groups.setdefault(ends, []).append(gene)
            params.setdefault(ends, set()).update(np.round(swept[np.isfinite(swept)], 12))
        return [(np.array(sorted(params[ends])), genes) for ends, genes in groups.items()]

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
