"""Workload files: the schema (:mod:`.schema`), the handle of a loaded workload (:mod:`.handle`) and reading a
file with its errors (:mod:`.loading`). Everything other modules use is re-exported here.

One rule for paths: inputs are kept as written and resolve against the workload file's folder when used
(``Workload.input_path``); outputs (``results``, ``calibration.file``) are relative to the working folder.
"""

from .handle import DEFAULT_WORKLOAD, Workload, default_workload_path
from .loading import differing_keys, dump_workload, load_workload, parse_workload
from .schema import (
    DATASET_SHORT_NAMES,
    INITIAL_POPULATION_KINDS,
    TRAINING_BLOCKS,
    CalibrationSpec,
    DatasetSpec,
    EnergyEvaluationSpec,
    EnergySpec,
    ExplorationSpec,
    ExtraArgs,
    LaunchSpec,
    NsgaSpec,
    ReevaluationSpec,
    SensitivitySpec,
    TrainingSpec,
    WorkloadSpec,
    parse_size,
)

__all__ = ["DATASET_SHORT_NAMES", "DEFAULT_WORKLOAD", "INITIAL_POPULATION_KINDS", "TRAINING_BLOCKS", "CalibrationSpec",
           "DatasetSpec", "EnergyEvaluationSpec", "EnergySpec", "ExplorationSpec", "ExtraArgs", "LaunchSpec", "NsgaSpec",
           "ReevaluationSpec", "SensitivitySpec", "TrainingSpec", "Workload", "WorkloadSpec", "default_workload_path",
           "differing_keys", "dump_workload", "load_workload", "parse_size", "parse_workload"]
