"""Energy-aware quantization: the cost is the estimated DRAM energy of one inference (batch 1).

Per target layer, three transfer counts say how many elements move between DRAM and the accelerator:
``weight_reads``, ``input_reads`` and ``output_writes``. Moving them costs
``(weight_reads * weight_bits + input_reads * input_bits + output_writes * output_bits) / access_bits * pj_per_access``
picojoules (settings under ``exploration.extra_args.energy``; defaults: 32-bit accesses at 640 pJ, the 45 nm
DRAM read of Horowitz, ISSCC 2014; outputs written back with 8 bits).

The counts come from a CSV table (``energy.table``: rows matched to layers by NAME) made with an accelerator model
such as Timeloop, from the reference tool's Timeloop table (``energy_evaluation.dram_analysis_file``, converted
into the equivalent counts, see :func:`read_timeloop_table`), or from the built-in analytic model with an on-chip
buffer of ``buffer_bytes``: when a layer's weights, input and output fit into the buffer together, every element
moves once; otherwise the weights are split into ``passes = ceil(weight_bits_total / (buffer_bits / 2))`` chunks,
the input is streamed in once per chunk (``input_reads = inputs * passes``), and weights and outputs still move
once.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ..errors import UserError
from ..models.layers import LayerInfo
from ..workload import EnergySpec, WorkloadSpec
from .quantization import QuantizationProblem

TRANSFERS = ("weight_reads", "input_reads", "output_writes")


@dataclass(frozen=True)
class LayerTensors:
    """Element counts of one layer's weight, input and output for one inference."""

    name: str
    kind: str
    weights: int
    inputs: int
    outputs: int


def layer_tensors(model: nn.Module, layers: list[LayerInfo]) -> list[LayerTensors]:
    """Weight, input and output sizes of every target layer (outputs derived from the MACs per sample)."""
    out = []
    for layer in layers:
        module = model.get_submodule(layer.name)
        if layer.kind == "Conv2d":
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif layer.kind == "AttentionMatmul":  # Q x K^T or softmax x V: the input's last dimension is summed
            per_output = layer.input_shape[-1]
        else:
            per_output = module.in_features
        out.append(LayerTensors(layer.name, layer.kind, layer.params, int(np.prod(layer.input_shape)),
                                layer.macs // per_output))
    return out


def analytic_transfers(tensors: list[LayerTensors], input_bits: np.ndarray, weight_bits: np.ndarray,
                       spec: EnergySpec) -> np.ndarray:
    """(layers, 3) element transfers of the analytic buffer model for the given bit widths."""
    buffer_bits = spec.buffer_bytes * 8
    rows = []
    for t, a, w in zip(tensors, input_bits, weight_bits):
        fits = t.weights * w + t.inputs * a + t.outputs * spec.output_bits <= buffer_bits
        passes = 1 if fits else math.ceil(t.weights * w / (buffer_bits / 2))
        rows.append((t.weights, t.inputs * passes, t.outputs))
    return np.asarray(rows, dtype=float)


def _number(value: str, path: Path, line: int, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number < 0:
        raise UserError(f"Energy table {path}, line {line}: {column} = {value!r} is not a non-negative number.")
    return number


def read_transfer_table(path: Path, layer_names: list[str]) -> np.ndarray:
    """(layers, 3) transfers from a CSV with columns ``layer`` and :data:`TRANSFERS`, rows matched by layer name."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"Energy table {path} cannot be read: {exc}.") from None
    missing_columns = [c for c in ("layer", *TRANSFERS) if c not in header]
    if missing_columns:
        raise UserError(f"Energy table {path} lacks the columns {missing_columns}; it needs layer, "
                        f"{', '.join(TRANSFERS)} (write a template with 'qsx-batch energy WORKLOAD').")
    by_name: dict[str, np.ndarray] = {}
    for line, record in enumerate(records, start=2):
        name = (record["layer"] or "").strip()
        if name in by_name:
            raise UserError(f"Energy table {path}, line {line}: layer '{name}' appears twice.")
        by_name[name] = np.array([_number(record[c], path, line, c) for c in TRANSFERS])
    absent = [n for n in layer_names if n not in by_name]
    unknown = [n for n in by_name if n not in layer_names]
    if absent or unknown:
        raise UserError(f"Energy table {path} does not match the model's target layers by name: no row for "
                        f"{absent or 'none'}; rows for unknown layers {unknown or 'none'}. "
                        f"The target layers are: {', '.join(layer_names)}.")
    return np.stack([by_name[n] for n in layer_names])


TIMELOOP_COLUMNS = tuple(f"{t}_{k}" for t in "wio" for k in ("reads", "updates", "fills", "energy")) + ("bitwidth",)


def read_timeloop_table(path: Path, tensors: list[LayerTensors], spec: EnergySpec) -> np.ndarray:
    """(layers, 3) transfers equivalent to a DRAM table of the reference tool's ``energy_analysis.py``.

    Its rows are the Conv2d layers in model order with Timeloop's DRAM reads, updates and fills and energy per
    access of weights (w), inputs (i) and outputs (o) at ``bitwidth`` bits. The reference tool scaled each
    tensor's energy at 16 bits linearly with the bit width: weights with the layer's weight bits, its inputs and
    the previous layer's outputs with its input bits, and the last layer's outputs stayed at 16 bits. The counts
    returned here give exactly that energy in this model (weights, inputs plus previous outputs, and the last
    layer's outputs at ``output_bits``).
    """
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header, records = reader.fieldnames or [], list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"DRAM table {path} (exploration.energy_evaluation.dram_analysis_file) cannot be read: "
                        f"{exc}.") from None
    missing = [c for c in TIMELOOP_COLUMNS if c not in header]
    if missing:
        raise UserError(f"DRAM table {path} lacks the columns {missing} of the reference tool's energy_analysis.py "
                        f"table ({', '.join(TIMELOOP_COLUMNS)}).")
    not_conv = [t.name for t in tensors if t.kind != "Conv2d"]
    if not_conv or len(records) != len(tensors):
        raise UserError(f"DRAM table {path} has {len(records)} rows, one per Conv2d layer in model order as the "
                        f"reference tool quantized them, but the target layers are {len(tensors)} "
                        f"({len(not_conv)} of them not Conv2d: {not_conv[:3]}). Set problem.layer_types: [Conv2d] "
                        "(and skip_layers) to match the table.")
    pj_per_bit = spec.pj_per_access / spec.access_bits
    energy16 = np.zeros((len(records), 3))  # pJ of weights, inputs, outputs at 16 bits
    for row, record in enumerate(records):
        numbers = {c: _number(record[c], path, row + 2, c) for c in TIMELOOP_COLUMNS}
        for k, t in enumerate("wio"):
            moved = numbers[f"{t}_reads"] + numbers[f"{t}_updates"] + numbers[f"{t}_fills"]
            energy16[row, k] = moved * numbers[f"{t}_energy"] * 16 / max(numbers["bitwidth"], 1.0)
    transfers = np.zeros((len(records), 3))
    transfers[:, 0] = energy16[:, 0] / 16 / pj_per_bit
    transfers[:, 1] = (energy16[:, 1] + np.concatenate([[0.0], energy16[:-1, 2]])) / 16 / pj_per_bit
    transfers[-1, 2] = energy16[-1, 2] / spec.output_bits / pj_per_bit
    return transfers


class EnergyModel:
    """DRAM energy per layer of one network, from a transfer table (``energy.table`` or the reference tool's
    ``dram_analysis_file``) or the analytic model."""

    def __init__(self, tensors: list[LayerTensors], spec: EnergySpec, timeloop_table: Path | None = None,
                 transfer_table: Path | None = None):
        """``transfer_table`` (``energy.table``) and ``timeloop_table`` are resolved paths; give at most one."""
        self.tensors = tensors
        self.spec = spec
        if transfer_table and timeloop_table:
            raise UserError("Set either exploration.extra_args.energy.table or exploration.energy_evaluation."
                            "dram_analysis_file, not both: they are two tables of the same DRAM transfers.")
        self.source_file = transfer_table or timeloop_table
        if transfer_table:
            self.table = read_transfer_table(transfer_table, [t.name for t in tensors])
        elif timeloop_table:
            self.table = read_timeloop_table(timeloop_table, tensors, spec)
        else:
            self.table = None

    @property
    def source(self) -> str:
        return f"table {self.source_file}" if self.table is not None else \
            f"analytic model, buffer {self.spec.buffer_bytes} bytes"

    def transfers(self, input_bits: np.ndarray, weight_bits: np.ndarray) -> np.ndarray:
        """(layers, 3) elements moved: weight reads, input reads, output writes."""
        if self.table is not None:
            return self.table
        return analytic_transfers(self.tensors, input_bits, weight_bits, self.spec)

    def layer_energy_pj(self, input_bits: np.ndarray, weight_bits: np.ndarray) -> np.ndarray:
        """DRAM energy of every layer in picojoules."""
        moved = self.transfers(input_bits, weight_bits)
        bits = moved[:, 0] * weight_bits + moved[:, 1] * input_bits + moved[:, 2] * self.spec.output_bits
        return bits / self.spec.access_bits * self.spec.pj_per_access

    def energy_uj(self, input_bits: np.ndarray, weight_bits: np.ndarray) -> float:
        """Total energy in microjoules."""
        return float(self.layer_energy_pj(np.asarray(input_bits, float), np.asarray(weight_bits, float)).sum() / 1e6)

    def rows(self, input_bits: np.ndarray, weight_bits: np.ndarray) -> list[dict]:
        """The per-layer table: sizes, bits, transfers, DRAM accesses and energy."""
        moved = self.transfers(input_bits, weight_bits)
        energy = self.layer_energy_pj(input_bits, weight_bits)
        return [{"layer": t.name, "kind": t.kind, "weights": t.weights, "inputs": t.inputs, "outputs": t.outputs,
                 "weight_bits": int(w), "input_bits": int(a), "output_bits": self.spec.output_bits,
                 **{c: float(v) for c, v in zip(TRANSFERS, m)},
                 "dram_accesses": float(e / self.spec.pj_per_access), "energy_uj": float(e / 1e6)}
                for t, a, w, m, e in zip(self.tensors, input_bits, weight_bits, moved, energy)]


def energy_model(spec: WorkloadSpec, tensors: list[LayerTensors]) -> EnergyModel:
    """The energy model a workload asks for (its ``energy`` settings and, if any, its ``energy_evaluation``)."""
    evaluation, energy = spec.exploration.energy_evaluation, spec.exploration.extra_args.energy
    timeloop = evaluation.dram_analysis_file if evaluation else None
    return EnergyModel(tensors, energy, spec.input_path(timeloop) if timeloop else None,
                       spec.input_path(energy.table) if energy.table else None)


class EnergyAwareQuantProblem(QuantizationProblem):
    """Per-quantizer bit widths (as the quantization problem) with DRAM energy per inference as the cost."""

    name = "energy_aware_quant_problem"

    def __init__(self, model: nn.Module, layers: list[LayerInfo], spec: WorkloadSpec):
        self.energy = energy_model(spec, layer_tensors(model, layers))
        super().__init__(model, layers, spec)
        self.cost_name, self.cost_unit = "dram_energy", "uJ per inference"

    def cost(self, params: np.ndarray, blocks_created: np.ndarray, samples: int) -> float:
        bits = np.asarray(params, dtype=float)
        return self.energy.energy_uj(bits[0::2], bits[1::2])
