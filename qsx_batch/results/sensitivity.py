"""A stored sensitivity sweep read back as a grid (per gene and value, the accuracy), and the starting individuals
it suggests for NSGA-II (``exploration.initial_population: sensitivity``). Reading a sweep needs no torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation.record import Status, genome_key

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
    ok: np.ndarray
    reference_accuracy: float  # NaN until the reference genome is stored
    neutral_parameters: np.ndarray  # per gene, the parameter of the reference genome (NaN until stored)

    @classmethod
    def from_table(cls, table: Mapping[str, np.ndarray], gene_names: list[str]) -> Sensitivity:
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
