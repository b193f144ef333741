"""The record of one evaluated individual, as it travels from an evaluator to the results file."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class Status(str, Enum):
    """How an individual's evaluation ended; stored as its plain string value (``ok``, ``failed``, ``raced_out``)."""

    OK = "ok"
    FAILED = "failed"
    RACED_OUT = "raced_out"

    __str__ = str.__str__
    __format__ = str.__format__


@dataclass
class IndividualResult:
    """Scores and per-layer statistics of one setting of the whole network on one dataset."""

    genome: np.ndarray
    params: np.ndarray
    accuracy: float
    correct: int
    samples: int
    cost: float
    blocks_total: np.ndarray
    blocks_already: np.ndarray
    blocks_created: np.ndarray
    eval_seconds: float
    host: str
    device: str
    status: str = Status.OK
    error: str = ""
    slurm_job_id: str = ""
    slurm_array_task_id: int = -1
    node: str = ""
    gpu: str = ""
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    metrics: np.ndarray = field(default_factory=lambda: np.zeros(0))  # every metric's accuracy; [0] is accuracy
    hits: np.ndarray | None = None  # racing: per label of the samples used, whether the first metric counted it

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @classmethod
    def failed(cls, genome: np.ndarray | None, genes: int, layers: int, worst_cost: float, error: str,
               **fields) -> IndividualResult:
        """An individual without a score: the worst fitness (so the search drops it) and why; ``fields`` say where
        and how long it ran."""
        zeros = np.zeros(layers, dtype=np.int64)
        vector = np.full(genes, np.nan) if genome is None else np.asarray(genome, dtype=float)
        record = {"samples": 0, "eval_seconds": 0.0, "host": "", "device": "", **fields}
        return cls(genome=vector, params=np.full(genes, np.nan), accuracy=0.0, correct=0, cost=worst_cost,
                   blocks_total=zeros, blocks_already=zeros, blocks_created=zeros, status=Status.FAILED, error=error,
                   **record)


def genome_key(genome: np.ndarray) -> tuple:
    """A hashable key that identifies a genome exactly (used by the evaluation cache)."""
    return tuple(float(v) for v in np.asarray(genome, dtype=np.float64).ravel())
