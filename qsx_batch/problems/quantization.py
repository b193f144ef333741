"""Per-quantizer bit widths: every quantized layer has an input and a weight TensorQuantizer."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..quant_modules import quantize_layers
from ..calibration import quantizers_of
from ..workload import ExtraArgs
from .base import Problem
from .costs import COST_FUNCTIONS
from .layers import LayerInfo


class QuantizationProblem(Problem):
    """Genes are integer bit widths in [num_bits_lower_limit, num_bits_upper_limit], ordered
    ``layer.input, layer.weight`` for each layer in model order.

    Weights are fake-quantized once per individual (not on every batch): ``configure`` writes the quantized
    weights into the layer and bypasses the weight quantizer; inputs are quantized on every batch.
    """

    name = "quantization_problem"

    def __init__(self, model: nn.Module, layers: list[LayerInfo], extra: ExtraArgs, calib_method: str):
        super().__init__(model, layers)
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
        self.fp32_weights = [m.weight.detach().clone() for m in self.modules]

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

    def reference_genomes(self) -> dict[str, np.ndarray | None]:
        return {"fp32": None, f"all_{self.upper}_bit": self.bounds[1]}

    @torch.no_grad()
    def configure(self, genome: np.ndarray | None) -> None:
        for module, weight in zip(self.modules, self.fp32_weights):
            module.weight.copy_(weight)
        if genome is None:
            for _, q in self.quantizers:
                q.disable()
            return
        bits = self.decode(genome).astype(int)
        for (_, q), b in zip(self.quantizers, bits):
            q._num_bits = int(b)
            q.enable()
        for module in self.modules:
            module.weight.copy_(module._weight_quantizer(module.weight))
            module._weight_quantizer.disable()

    def cost(self, params: np.ndarray, blocks_created: np.ndarray, samples: int) -> float:
        bits = np.asarray(params)
        return self.cost_function(bits[0::2], bits[1::2], self.layers)
