"""Cost functions of the quantization problem (``exploration.extra_args.bit_weighting_function``).

Each takes the input and weight bit widths per layer and the layer profiles, and returns a cost to minimize.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..models.layers import LayerInfo

CostFunction = Callable[[np.ndarray, np.ndarray, list[LayerInfo]], float]


def bits_weighted_linear(input_bits: np.ndarray, weight_bits: np.ndarray, layers: list[LayerInfo]) -> float:
    """Sum of all bit widths."""
    return float(input_bits.sum() + weight_bits.sum())


def bits_weighted_per_layer(input_bits: np.ndarray, weight_bits: np.ndarray, layers: list[LayerInfo]) -> float:
    """0.5 x weight bits + 5.0 x input bits per layer, as the reference tool weighted them."""
    return float((0.5 * weight_bits + 5.0 * input_bits).sum())


def model_size_bits(input_bits: np.ndarray, weight_bits: np.ndarray, layers: list[LayerInfo]) -> float:
    """Bits needed to store the quantized weights: parameters x weight bits."""
    return float(sum(layer.params * int(w) for layer, w in zip(layers, weight_bits)))


def bitops(input_bits: np.ndarray, weight_bits: np.ndarray, layers: list[LayerInfo]) -> float:
    """Bit operations per sample: MACs x weight bits x input bits, on the real input shape."""
    return float(sum(layer.macs * int(w) * int(i) for layer, w, i in zip(layers, weight_bits, input_bits)))


COST_FUNCTIONS: dict[str, tuple[CostFunction, str]] = {
    "bits_weighted_linear": (bits_weighted_linear, "bits"),
    "bits_weighted_per_layer": (bits_weighted_per_layer, "weighted bits"),
    "model_size_bits": (model_size_bits, "bits"),
    "bitops": (bitops, "BitOps per sample"),
}
