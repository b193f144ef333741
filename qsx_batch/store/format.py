"""The layout of a results file: format name and version, HDF5 settings, every column with its meaning and units,
the run header.

Layout and meaning of every field: docs/results-format.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np

FORMAT = "qsx-batch-results"
FORMAT_VERSION = 2
# HDF5 1.10 object formats (superblock 3, so SWMR works): every HDF5 since 1.10 parses what is written. Every
# writable h5py.File of the store uses these bounds; "latest" under HDF5 2.0 writes objects HDF5 1.14 cannot read.
LIBVER = ("v110", "latest")
GROW_ROWS = 64  # rows added to every column of a table at once (the chunk length)
COST_UNIT = "<cost_unit>"  # units placeholder: the run's cost_unit root attribute
TIME_UNITS = "seconds since 1970-01-01"  # CF: netCDF readers and xarray show these columns as dates
OBJECTIVES = ("accuracy", "cost")


@dataclass(frozen=True)
class Column:
    """One dataset of the layout: numpy dtype (``"str"``: UTF-8 text of at most ``width`` bytes, 0: as wide as
    its longest value), the axis of its second dimension (None: one value per row), description and units."""

    dtype: str
    description: str
    units: str = ""
    axis: str | None = None
    width: int = 0

    def h5_dtype(self, values: list[str] | None = None) -> np.dtype | h5py.Datatype:
        """The HDF5 type; text is null-terminated UTF-8 of fixed length, which every reader reads (PyTables reads
        no variable-length text; h5dump shows null padding as \\000)."""
        if self.dtype != "str":
            return np.dtype(self.dtype)
        text = h5py.h5t.C_S1.copy()
        text.set_size((self.width or max((len(v.encode()) for v in values or []), default=0)) + 1)  # + the null
        text.set_strpad(h5py.h5t.STR_NULLTERM)
        text.set_cset(h5py.h5t.CSET_UTF8)
        return h5py.Datatype(text)


def text_column(width: int, description: str) -> Column:
    return Column("str", description, width=width)


COLUMNS: dict[str, Column] = {
    "genome": Column("f8", "raw genome: bit width per quantizer gene, threshold step per sparsity gene (NaN for the "
                     "fp32 baseline)", axis="gene"),
    "params": Column("f8", "decoded parameter per gene: bits per quantizer (32 = fp32) or threshold per layer input "
                     "(NaN where evaluation failed)", axis="gene"),
    "accuracy": Column("f8", "accuracy: the first metric of model.accuracy_function (top-1: correct / samples)",
                       "1"),
    "metrics": Column("f8", "every metric of model.accuracy_function, named by the root attribute metric_names; "
                      "the first is accuracy (NaN where evaluation failed)", "1", axis="metric"),
    "correct": Column("i8", "correctly classified samples", "1"),
    "samples": Column("i8", "samples evaluated", "1"),
    "cost": Column("f8", "the second objective, named by the root attribute cost_name", COST_UNIT),
    "objectives": Column("f8", "(accuracy, cost) as reported", axis="objective"),
    "fitness": Column("f8", "what NSGA-II minimized: (-accuracy, cost), or (-accuracy, -cost) for a maximized cost",
                      axis="objective"),
    "constraint": Column("f8", "minimum accuracy minus accuracy: feasible when <= 0; raced out: minus its lower "
                         "bound, always infeasible (NaN for baseline rows)", "1"),
    "blocks_total": Column("i8", "sparsity: tiles of the layer input over all samples (0 for quantization)", "1",
                           axis="layer"),
    "blocks_already": Column("i8", "sparsity: tiles that were already all zero", "1", axis="layer"),
    "blocks_created": Column("i8", "sparsity: tiles newly zeroed by the threshold", "1", axis="layer"),
    "generation": Column("i4", "generation that first proposed it (-1 for baseline rows)"),
    "eval_seconds": Column("f8", "evaluation wall time", "s"),
    "finished_at": Column("f8", "when the row was stored (unix time)", TIME_UNITS),
    "status": text_column(16, "ok, failed (see error) or raced_out (stopped early by racing)"),
    "error": text_column(2048, "error text of a failed evaluation or why racing stopped it (cut to 2048 bytes)"),
    "host": text_column(256, "host that evaluated it"),
    "device": text_column(32, "torch device (cpu, cuda:0, ...)"),
    "slurm_job_id": text_column(64, "SLURM job id, <job>_<task> (empty for local runs)"),
    "slurm_array_task_id": Column("i8", "SLURM array task id (-1 for local runs)"),
    "node": text_column(256, "SLURM node list (empty for local runs)"),
    "gpu": text_column(128, "GPU name (empty on a CPU)"),
    "attempt": Column("i4", "attempt that produced the result (1: the first)"),
    "ci_low": Column("f8", "racing: lower confidence bound of the accuracy when stopped early (NaN otherwise)", "1"),
    "ci_high": Column("f8", "racing: upper confidence bound of the accuracy when stopped early (NaN otherwise)", "1"),
}
BASELINE_COLUMNS = {**COLUMNS, "label": text_column(64, "reference setting: fp32 or all_<upper>_bit"),
                    "dataset": text_column(64, "dataset block: exploration or baseline")}
GENERATION_COLUMNS: dict[str, Column] = {
    "population": Column("i8", "rows (in individuals) of the population after the generation, -1 padded",
                         axis="member"),
    "evaluated": Column("i8", "individuals stored up to this generation", "1"),
    "eval_seconds": Column("f8", "evaluation time of the individuals stored up to this generation", "s"),
    "samples": Column("i8", "samples evaluated up to this generation", "1"),
    "hypervolume": Column("f8", "normalized hypervolume of the population after the generation, reference point "
                          "(1, 1)", "1"),
    "finished_at": COLUMNS["finished_at"],
}

CORE_TABLES = ("individuals", "baseline", "generations")

# Follow-up tables, appended by 'evaluate' and 'retrain' once a run is done, and the sensitivity sweep (by
# 'sensitivity', or before generation 0 with initial_population: sensitivity; created with every new file).
INDIVIDUAL = Column("i8", "row of the individual in the table individuals")
REEVALUATIONS = "reevaluations"
REEVALUATION_RESULT_FIELDS = ("genome", "params", "accuracy", "metrics", "correct", "samples", "cost", "blocks_total",
                              "blocks_already", "blocks_created", "eval_seconds", "status", "error", "host",
                              "device", "slurm_job_id", "slurm_array_task_id", "node", "gpu")
REEVALUATION_COLUMNS: dict[str, Column] = {
    "individual": INDIVIDUAL, "dataset": text_column(256, "dotted key of the workload's dataset block"),
    **{k: COLUMNS[k] for k in REEVALUATION_RESULT_FIELDS}, "finished_at": COLUMNS["finished_at"]}
RETRAINING = "retraining"
RETRAINING_COLUMNS: dict[str, Column] = {
    "individual": INDIVIDUAL, "epoch": Column("i4", "epoch (0: before fine-tuning)"),
    "loss": Column("f8", "mean training loss of the epoch (NaN for epoch 0)", "1"),
    "accuracy": Column("f8", "top-1 accuracy on the validation samples after the epoch", "1"),
    "samples": Column("i8", "validation samples", "1"),
    "learning_rate": Column("f8", "learning rate of the optimizer", "1"),
    "weights": text_column(4096, "file of the fine-tuned weights (absolute path)"),
    "finished_at": COLUMNS["finished_at"]}
SENSITIVITY = "sensitivity"
SENSITIVITY_COLUMNS: dict[str, Column] = {
    "swept_gene": Column("i4", "swept gene (row of /genes); -1 for the reference row, every gene at its neutral value "
                   "(the upper bit width, a zero threshold)"),
    "swept_value": Column("f8", "genome value of the swept gene (NaN for the reference row)"),
    "swept_parameter": Column("f8", "decoded parameter of the swept gene: bits or threshold (NaN for the reference row)"),
    "discordant": Column("i8", "labels (samples, or tokens) on which this point and the reference row disagree about "
                         "being right; -1 where unknown (a point copied from the run, a custom metric)", "1"),
    "labels": Column("i8", "labels compared with the reference row for discordant (0 where unknown)", "1"),
    **{k: COLUMNS[k] for k in REEVALUATION_RESULT_FIELDS}, "finished_at": COLUMNS["finished_at"]}
FOLLOW_UP_COLUMNS = {REEVALUATIONS: REEVALUATION_COLUMNS, RETRAINING: RETRAINING_COLUMNS,
                     SENSITIVITY: SENSITIVITY_COLUMNS}
TABLE_COLUMNS = {"individuals": COLUMNS, "baseline": BASELINE_COLUMNS, "generations": GENERATION_COLUMNS,
                 **FOLLOW_UP_COLUMNS}

# Per-gene and per-layer facts of the run (groups /genes and /layers) and the accuracy constraint.
GENE_COLUMNS: dict[str, Column] = {
    "names": Column("str", "gene name: <layer>.input / <layer>.weight quantizer, or <layer>.input threshold"),
    "lower": Column("f8", "lowest value of the gene"),
    "upper": Column("f8", "highest value of the gene"),
}
LAYER_COLUMNS: dict[str, Column] = {
    "names": Column("str", "target layer, in model order"),
    "kinds": Column("str", "module type"),
    "params": Column("i8", "weights of the layer", "1"),
    "macs": Column("i8", "multiply-accumulates per sample", "1"),
    "input_shapes": Column("str", "input shape of one sample, e.g. 6x14x14"),
}
# The dimension scales: ``row`` of every table; ``gene``, ``layer`` and ``objective`` hold the names along a
# second axis; ``member`` (and ``gene``/``layer`` in /genes and /layers) are plain dimensions without values.
AXES = {"row": "row of the table", "gene": "gene names (see /genes)", "layer": "target layers (see /layers)",
        "objective": "objective names", "member": "position in the population",
        "metric": "metrics of the accuracy function"}
COUNT = Column("i8", "committed rows: rows beyond it are spare or from an append cut short")
MINIMUM_ACCURACY = Column("f8", "accuracy constraint of the run (NaN: none)", "1")


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
    metric_names: list[str] = field(default_factory=lambda: ["classification_accuracy"])
    # how generation 0 was seeded: sensitivity, random or listed; "" in files from before initial_population: auto
    initial_population: str = ""
