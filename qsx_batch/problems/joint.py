"""Joint quantization + sparsity: bits for every quantizer AND a threshold for every layer input.

The cost is ``effective_bitops`` per sample: for every layer, MACs x (share of its input tiles that are not zero)
x weight bits x input bits. The share of non-zero tiles is measured on the evaluation data (tiles already zero
plus tiles zeroed by the threshold), so the MACs counted are those a block-sparse accelerator still performs.
Thresholds act on a layer's input before its input quantizer.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ..errors import UserError
from ..models.layers import LayerInfo
from ..workload import WorkloadSpec
from .quantization import QuantizationProblem
from .sparsity import SparsityProblem


class JointProblem(QuantizationProblem):
    """Genes: the quantization genes (``layer.input``/``layer.weight`` bits), then one threshold step per layer."""

    name = "joint_problem"
    default_start = "random"  # the head start is not measured on it
    cost_name = "effective_bitops"
    cost_unit = "effective BitOps per sample"

    def __init__(self, model: nn.Module, layers: list[LayerInfo], spec: WorkloadSpec):
        extra = spec.exploration.extra_args
        if extra.discrete_threshold_method == "continuous":
            raise UserError("joint_problem needs discrete thresholds (exploration.extra_args."
                            "discrete_threshold_method: linear or log), not continuous.")
        super().__init__(model, layers, spec)
        self.cost_name, self.cost_unit = JointProblem.cost_name, JointProblem.cost_unit
        self.sparsity = SparsityProblem(model, layers, spec)
        self.n_bits = len(self.quantizers)
        zeros = np.zeros(len(layers), dtype=np.int64)
        self._counts = (zeros, zeros, zeros)  # tile counts of the last evaluation, read by cost()

    @property
    def gene_names(self) -> list[str]:
        return [f"{n}.bits" for n in super().gene_names] + [f"{n}.threshold" for n in self.sparsity.gene_names]

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        (ql, qu), (sl, su) = super().bounds, self.sparsity.bounds
        return np.concatenate([ql, sl]), np.concatenate([qu, su])

    def decode(self, genome: np.ndarray) -> np.ndarray:
        genome = np.asarray(genome, dtype=float)
        return np.concatenate([super().decode(genome[: self.n_bits]), self.sparsity.decode(genome[self.n_bits:])])

    def fp32_params(self) -> np.ndarray:
        return np.concatenate([super().fp32_params(), self.sparsity.fp32_params()])

    def encode(self, params: np.ndarray, source: str) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        return np.concatenate([super().encode(params[: self.n_bits], source),
                               self.sparsity.encode(params[self.n_bits:], source)])

    def uniform_genome(self, value: float) -> np.ndarray:
        raise UserError("exploration.predefined_parameters is not available for the joint problem: one value cannot "
                        "be a bit width and a threshold at once; give whole individuals in "
                        "exploration.initial_population instead.")

    def neutral_genome(self) -> np.ndarray:
        """Every bit width at the upper limit, every threshold zero (also the all-upper baseline)."""
        return np.concatenate([np.full(self.n_bits, float(self.upper)), np.zeros(len(self.layers))])

    def settings(self, genome: np.ndarray) -> dict:
        genome = np.asarray(genome, dtype=float)
        return {**super().settings(genome[: self.n_bits]), **self.sparsity.settings(genome[self.n_bits:])}

    def configure(self, genome: np.ndarray | None) -> None:
        super().configure(None if genome is None else np.asarray(genome)[: self.n_bits])
        self.sparsity.configure(None if genome is None else np.asarray(genome)[self.n_bits:])

    def blocks_per_sample(self) -> float:
        return self.sparsity.blocks_per_sample()

    def read_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._counts = self.sparsity.read_counts()
        return self._counts

    def cost(self, params: np.ndarray, blocks_created: np.ndarray, samples: int) -> float:
        total, already, _ = self._counts
        zero = np.asarray(already) + np.asarray(blocks_created)
        dense = np.where(total > 0, 1.0 - zero / np.maximum(total, 1), 1.0)
        bits = np.asarray(params)[: self.n_bits]
        return float(sum(layer.macs * d * int(w) * int(i)
                         for layer, d, i, w in zip(self.layers, dense, bits[0::2], bits[1::2])))

    def worst_cost(self) -> float:
        """All bits at the upper limit and no zero tiles: plain BitOps at the upper limit."""
        return float(sum(layer.macs * self.upper * self.upper for layer in self.layers))
