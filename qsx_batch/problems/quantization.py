"""Per-quantizer bit widths: every quantized layer has an input and a weight TensorQuantizer."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..models.attention import AttentionMatmul
from ..models.layers import LayerInfo
from ..models.quantized import InferenceTensorQuantizer, IntegerGridLayer, quantize_layers, quantizers_of
from ..workload import WorkloadSpec
from .base import Problem
from .costs import COST_FUNCTIONS


class QuantizationProblem(Problem):
    """Genes are integer bit widths in [num_bits_lower_limit, num_bits_upper_limit], ordered
    ``layer.input, layer.weight`` for each layer in model order.

    Weights are fake-quantized once per individual (not on every batch): ``configure`` writes the quantized
    weights into the layer and bypasses the weight quantizer; inputs are quantized on every batch. The
    quantizers are :class:`InferenceTensorQuantizer` (same numbers as pytorch-quantization, faster).
    """

    name = "quantization_problem"
    default_start = "sensitivity"

    def __init__(self, model: nn.Module, layers: list[LayerInfo], spec: WorkloadSpec):
        super().__init__(model, layers, spec)
        extra = spec.exploration.extra_args
        calib_method = spec.calibration.method if spec.calibration else "max"
        if extra.bit_weighting_function not in COST_FUNCTIONS:
            raise UserError(
                f"Unknown exploration.extra_args.bit_weighting_function '{extra.bit_weighting_function}'. "
                f"Valid names: {', '.join(COST_FUNCTIONS)}."
            )
        self.cost_function, self.cost_unit = COST_FUNCTIONS[extra.bit_weighting_function]
        self.cost_name = extra.bit_weighting_function
        self.lower, self.upper = extra.num_bits_lower_limit, extra.num_bits_upper_limit
        self.modules = quantize_layers(model, self.layer_names, calib_method)
        self.quantizers = quantizers_of(list(zip(self.layer_names, self.modules)))
        for _, q in self.quantizers:
            q.__class__ = InferenceTensorQuantizer  # same state and numbers, faster without autograd
        # layers with weights (an attention's products of activations have none; both their quantizers run on
        # every batch)
        self.weighted = [m for m in self.modules if not isinstance(m, AttentionMatmul)]
        self.fp32_weights = [m.weight.detach().clone() for m in self.weighted]
        self.grids: list[IntegerGridLayer | None] = [None] * len(self.weighted)  # see evaluate_on_integer_grid

    def evaluate_on_integer_grid(self) -> None:
        """From the next :meth:`configure` on, every Conv2d and Linear layer whose quantizers allow it computes
        on the integer grid (:class:`IntegerGridLayer`, ``exploration.gpu_math: integer``); the others stay
        fake-quantized: an attention's projections and products, and layers a model calls through ``F.linear``
        (Swin: the model passes its own bias)."""
        functional = {id(m) for m, layer in zip(self.modules, self.layers) if layer.functional}
        self.grids = [IntegerGridLayer(m) if IntegerGridLayer.fits(m) and id(m) not in functional else None
                      for m in self.weighted]

    @property
    def gene_names(self) -> list[str]:
        return [name for name, _ in self.quantizers]

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.quantizers)
        return np.full(n, self.lower, dtype=float), np.full(n, self.upper, dtype=float)

    def decode(self, genome: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(genome, dtype=float))

    def fp32_params(self) -> np.ndarray:
        return np.full(len(self.quantizers), 32.0)

    def encode(self, params: np.ndarray, source: str) -> np.ndarray:
        """Bit widths are the genome; each must be a whole number within the workload's limits."""
        params = np.asarray(params, dtype=float)
        wrong = [v for v in params if v != np.rint(v) or not self.lower <= v <= self.upper]
        if wrong:
            raise UserError(f"{source}: value {wrong[0]:g} is not a bit width from num_bits_lower_limit "
                            f"{self.lower} to num_bits_upper_limit {self.upper}.")
        return params.copy()

    def reference_genomes(self) -> dict[str, np.ndarray | None]:
        return {"fp32": None, f"all_{self.upper}_bit": self.neutral_genome()}

    @torch.no_grad()
    def configure(self, genome: np.ndarray | None) -> None:
        if genome is None:
            self._leave_grids()
            for module, weight in zip(self.weighted, self.fp32_weights):
                module.weight.copy_(weight)
            for _, q in self.quantizers:
                q.disable()
            return
        bits = self.decode(genome).astype(int)
        for (_, q), b in zip(self.quantizers, bits):
            q._num_bits = int(b)
            q.enable()
        for module, weight, grid in zip(self.weighted, self.fp32_weights, self.grids):
            if grid is not None:
                grid.enter(weight)
                continue
            module.weight.copy_(module._weight_quantizer(weight))
            module._weight_quantizer.disable()

    def _leave_grids(self) -> None:
        for grid in self.grids:
            if grid is not None:
                grid.leave()

    @torch.no_grad()
    def configure_trainable(self, genome: np.ndarray) -> None:
        """Bit widths of ``genome`` with fp32 weights fake-quantized on every forward pass (quantization-aware training)."""
        self.configure(genome)
        self._leave_grids()
        for module, weight in zip(self.weighted, self.fp32_weights):
            module.weight.copy_(weight)
            module._weight_quantizer.enable()

    def cost(self, params: np.ndarray, blocks_created: np.ndarray, samples: int) -> float:
        bits = np.asarray(params)
        return self.cost_function(bits[0::2], bits[1::2], self.layers)

    def settings(self, genome: np.ndarray) -> dict:
        """Per quantizer: its layer, role (input, weight), bit width, axis (per channel) and calibrated amax."""
        bits = np.rint(np.asarray(genome, dtype=float)[: len(self.quantizers)]).astype(int)
        out = []
        for (name, q), b in zip(self.quantizers, bits):
            layer, _, role = name.rpartition(".")
            amax = q._amax.detach().cpu()
            out.append({"name": name, "layer": layer, "role": role, "bits": int(b),
                        "axis": None if amax.numel() == 1 else 0,
                        "amax": float(amax) if amax.numel() == 1 else amax.flatten().tolist()})
        return {"quantizers": out}
