"""The record of one evaluated individual, as it travels from an evaluator to the results file."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATUS_OK = "ok"
STATUS_FAILED = "failed"


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
    status: str = STATUS_OK
    error: str = ""
    slurm_job_id: str = ""
    slurm_array_task_id: int = -1
    node: str = ""
    gpu: str = ""
    ci_low: float = float("nan")
    ci_high: float = float("nan")

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


def genome_key(genome: np.ndarray) -> tuple:
    """A hashable key that identifies a genome exactly (used by the evaluation cache)."""
    return tuple(float(v) for v in np.asarray(genome, dtype=np.float64).ravel())
