"""The layout of a results file: format name and version, the columns of every table, the run header.

Layout and meaning of every field: docs/results-format.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

FORMAT = "qsx-batch-results"
FORMAT_VERSION = 1
STR = h5py.string_dtype()
GROW_ROWS = 64  # rows added to every column of a table at once (the chunk length)

# column name -> (dtype, width); width "genes"/"layers" is filled in per run, 2 is the objective pair.
COLUMNS: dict[str, tuple[Any, Any]] = {
    "genome": ("f8", "genes"),
    "params": ("f8", "genes"),
    "accuracy": ("f8", None),
    "correct": ("i8", None),
    "samples": ("i8", None),
    "cost": ("f8", None),
    "objectives": ("f8", 2),
    "fitness": ("f8", 2),
    "constraint": ("f8", None),
    "blocks_total": ("i8", "layers"),
    "blocks_already": ("i8", "layers"),
    "blocks_created": ("i8", "layers"),
    "generation": ("i4", None),
    "eval_seconds": ("f8", None),
    "finished_at": ("f8", None),
    "status": (STR, None),
    "error": (STR, None),
    "host": (STR, None),
    "device": (STR, None),
    "slurm_job_id": (STR, None),
    "slurm_array_task_id": ("i8", None),
    "node": (STR, None),
    "gpu": (STR, None),
    "attempt": ("i4", None),
    "ci_low": ("f8", None),
    "ci_high": ("f8", None),
}
BASELINE_COLUMNS = {**COLUMNS, "label": (STR, None), "dataset": (STR, None)}
GENERATION_COLUMNS: dict[str, tuple[Any, Any]] = {
    "population": ("i8", "pop"),
    "evaluated": ("i8", None),
    "eval_seconds": ("f8", None),
    "samples": ("i8", None),
    "hypervolume": ("f8", None),
    "finished_at": ("f8", None),
}


CORE_TABLES = ("individuals", "baseline", "generations")

# Follow-up tables, appended by 'evaluate' and 'retrain' once a run is done.
REEVALUATIONS = "reevaluations"
REEVALUATION_RESULT_FIELDS = ("genome", "params", "accuracy", "correct", "samples", "cost", "blocks_total",
                              "blocks_already", "blocks_created", "eval_seconds", "status", "error", "host",
                              "device", "slurm_job_id", "slurm_array_task_id", "node", "gpu")
REEVALUATION_COLUMNS: dict[str, tuple[Any, Any]] = {
    "individual": ("i8", None), "dataset": (STR, None), **{k: COLUMNS[k] for k in REEVALUATION_RESULT_FIELDS},
    "finished_at": ("f8", None)}
RETRAINING = "retraining"
RETRAINING_COLUMNS: dict[str, tuple[Any, Any]] = {
    "individual": ("i8", None), "epoch": ("i4", None), "loss": ("f8", None), "accuracy": ("f8", None),
    "samples": ("i8", None), "learning_rate": ("f8", None), "weights": (STR, None), "finished_at": ("f8", None)}
FOLLOW_UP_COLUMNS = {REEVALUATIONS: REEVALUATION_COLUMNS, RETRAINING: RETRAINING_COLUMNS}


@dataclass(frozen=True)
class RunHeader:
    """What is fixed for a run: written once when the file is created."""

    workload_name: str
    workload_sha256: str
    workload_yaml: str
    workload_path: str
    problem: str
    seed: int
    cost_name: str
    cost_unit: str
    maximize_cost: bool
    integer: bool
    gene_names: list[str]
    lower: np.ndarray
    upper: np.ndarray
    layer_names: list[str]
    layer_kinds: list[str]
    layer_params: list[int]
    layer_macs: list[int]
    layer_input_shapes: list[str]
    pop_size: int
    versions: dict[str, str]
    worst_cost: float
    max_blocks_per_sample: float
