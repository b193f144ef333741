"""Fake-quantized layers: Conv2d/Linear swapped for pytorch-quantization's QuantConv2d/QuantLinear (an attention's
Q, K, V projections for a twin with the same quantizers), their TensorQuantizers named, and a faster quantizer for
inference with the same numbers."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from absl import logging as absl_logging
    from pytorch_quantization import nn as quant_nn
    from pytorch_quantization.nn.modules._utils import QuantMixin
    from pytorch_quantization.tensor_quant import QuantDescriptor

import torch.nn.functional as F

from .attention import AttentionMatmul, InProjection
from .fused import Fused
from .layers import set_submodule

absl_logging.set_verbosity(absl_logging.ERROR)


def _descriptors(calib_method: str) -> tuple[QuantDescriptor, QuantDescriptor]:
    """Per-tensor input quantizer with the chosen calibrator; per-output-channel max weight quantizer."""
    return (
        QuantDescriptor(num_bits=8, calib_method=calib_method),
        QuantDescriptor(num_bits=8, axis=(0,), calib_method="max"),
    )


class QuantInProjection(InProjection, QuantMixin):
    """An attention's Q, K or V projection with an input and a weight quantizer, as QuantLinear has."""

    def __init__(self, attention: nn.MultiheadAttention, role: str, desc_in: QuantDescriptor,
                 desc_w: QuantDescriptor):
        super().__init__(attention, role)
        self.init_quantizer(desc_in, desc_w)  # the library allows it only from an __init__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._input_quantizer(x), self._weight_quantizer(self.weight), self.bias)


class QuantAttentionMatmul(AttentionMatmul):
    """A product of two activations with a quantizer on each: per tensor, the first (the input) calibrated with the
    workload's method, the second (in the place of a weight) with max."""

    def __init__(self, desc_in: QuantDescriptor):
        super().__init__()
        self._input_quantizer = quant_nn.TensorQuantizer(desc_in)
        self._weight_quantizer = quant_nn.TensorQuantizer(QuantDescriptor(num_bits=8, calib_method="max"))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self._input_quantizer(a), self._weight_quantizer(b))


def to_quant_module(module: nn.Module, calib_method: str) -> nn.Module:
    """A QuantConv2d/QuantLinear with ``module``'s configuration and weights (a :class:`QuantInProjection` on
    the same attention for a Q, K or V projection, a :class:`QuantAttentionMatmul` for a product)."""
    desc_in, desc_w = _descriptors(calib_method)
    if isinstance(module, AttentionMatmul):
        return QuantAttentionMatmul(desc_in)
    if isinstance(module, InProjection):
        new = QuantInProjection(module._attention, module.role, desc_in, desc_w)
        return new.to(module.weight.device)
    if isinstance(module, nn.Conv2d):
        new = quant_nn.QuantConv2d(
            module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
            module.dilation, module.groups, module.bias is not None, module.padding_mode,
            quant_desc_input=desc_in, quant_desc_weight=desc_w,
        )
    else:
        new = quant_nn.QuantLinear(
            module.in_features, module.out_features, module.bias is not None,
            quant_desc_input=desc_in, quant_desc_weight=desc_w,
        )
    new.load_state_dict(module.state_dict(), strict=False)
    return new.to(module.weight.device)


def quantize_layers(model: nn.Module, names: list[str], calib_method: str) -> list[nn.Module]:
    """Replace the named layers in place; return the new modules in the same order."""
    new_modules = []
    for name in names:
        new = to_quant_module(model.get_submodule(name), calib_method)
        set_submodule(model, name, new)
        new_modules.append(new)
    return new_modules


def quantizers_of(modules: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """(name, TensorQuantizer) for each quantized layer: input first, then weight."""
    pairs = []
    for name, module in modules:
        pairs.append((f"{name}.input", module._input_quantizer))
        pairs.append((f"{name}.weight", module._weight_quantizer))
    return pairs


def split_quantizer_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's state on the CPU in two parts: everything a plain (unquantized) model of its type loads, and
    the TensorQuantizers' buffers (amax)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return ({k: v for k, v in state.items() if "_quantizer." not in k},
            {k: v for k, v in state.items() if "_quantizer." in k})


ZERO_AMAX = 1.0 / (1 << 24)  # an amax at or below it quantizes everything to 0 (pytorch-quantization's bound)


def _to_grid(inputs: torch.Tensor, amax: torch.Tensor, max_bound: torch.Tensor, low: Any,
             high: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``clamp(round(x * s), low, high)`` with ``s = max_bound / amax`` (0 where amax is zero), ``s`` and where
    amax is zero."""
    scale = max_bound / amax
    zero = amax <= ZERO_AMAX
    out = inputs * torch.where(zero, 0.0, scale)
    return out.round_().clamp_(low, high), scale, zero


def quantize_to_grid(inputs: torch.Tensor, amax: torch.Tensor, max_bound: torch.Tensor, low: Any,
                     high: Any) -> torch.Tensor:
    """The integer values ``clamp(round(x * s), low, high)`` of :func:`quantize_dequantize`, as floats."""
    return _to_grid(inputs, amax, max_bound, low, high)[0]


def quantize_dequantize(inputs: torch.Tensor, amax: torch.Tensor, max_bound: torch.Tensor, low: Any,
                        high: Any) -> torch.Tensor:
    """``clamp(round(x * s), low, high) / s`` with ``s = max_bound / amax`` (0 where amax <= 2**-24, and 1 for
    the division there): pytorch-quantization's arithmetic, in place on one intermediate, without host
    synchronisation. ``low`` and ``high`` are numbers (eager: scalar clamp bounds are the fast ones on the CPU) or
    0-d tensors (compiled: one graph for every bit width)."""
    out, scale, zero = _to_grid(inputs, amax, max_bound, low, high)
    return out.div_(torch.where(zero, 1.0, scale))


FUSED_FAKE_QUANT = Fused(quantize_dequantize)
FUSED_GRID = Fused(quantize_to_grid)


def _bounds(num_bits: int, narrow_range: bool) -> tuple[float, float]:
    """The signed integer grid's (low, high): ``high = 2**(num_bits-1) - 1``, ``low = -high`` when narrow."""
    high = 2.0 ** (num_bits - 1) - 1.0
    return (-high if narrow_range else -high - 1.0), high


_BOUND_TENSORS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def fake_quant(inputs: torch.Tensor, amax: torch.Tensor, num_bits: int, narrow_range: bool,
               grid: bool = False) -> torch.Tensor:
    """pytorch-quantization's signed fake quantization bit for bit (:func:`quantize_dequantize`), or with ``grid``
    its integer values (:func:`quantize_to_grid`): one fused kernel on a GPU (:data:`FUSED_FAKE_QUANT`,
    :data:`FUSED_GRID`), torch's eager kernels elsewhere."""
    low, high = _bounds(num_bits, narrow_range)
    function = FUSED_GRID if grid else FUSED_FAKE_QUANT
    if not function.active(inputs):
        return function.function(inputs, amax, torch.full_like(amax, high), low, high)
    key = (inputs.device, num_bits, narrow_range)
    if key not in _BOUND_TENSORS:
        _BOUND_TENSORS[key] = (torch.tensor(low, device=inputs.device), torch.tensor(high, device=inputs.device))
    low_t, high_t = _BOUND_TENSORS[key]
    x, a = _flat(inputs, amax)
    return function(x, a, high_t, low_t, high_t).view(inputs.shape)


def _flat(inputs: torch.Tensor, amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``inputs`` and ``amax`` as (n,) and () for one amax, as (C, n) and (C, 1) for one amax per slice of the
    first axis, so every tensor rank shares two compiled graphs (others as they are)."""
    if not inputs.is_contiguous():
        return inputs, amax
    if amax.numel() == 1:
        return inputs.view(-1), amax.reshape(())
    if amax.dim() == inputs.dim() and amax.shape[0] == inputs.shape[0] and amax[0].numel() == 1:
        return inputs.view(inputs.shape[0], -1), amax.reshape(-1, 1)
    return inputs, amax


class InferenceTensorQuantizer(quant_nn.TensorQuantizer):
    """A TensorQuantizer that fake-quantizes with :func:`fake_quant` when no gradient is needed (the library
    clamps with tensor bounds, several times slower on CPU). Training, dynamic or learned amax, unsigned and
    non-fp32 tensors keep the library's own path.

    A weight (a Parameter) is fake-quantized once per setting, not once per batch: the result is kept until the
    weight, its amax or the bit width changes (the key holds the tensors themselves, so no freed tensor's
    address can be mistaken for them)."""

    _kept: tuple | None = None  # (weight, its version, amax, its version, bits, narrow range), fake-quantized weight
    _grid = False  # pass the integer values on, not divided back (an :class:`IntegerGridLayer`'s input)

    def static_signed(self) -> bool:
        """Whether this quantizer has a fixed fp32 amax and a signed grid, the cases :func:`fake_quant` covers."""
        amax = getattr(self, "_amax", None)
        return (amax is not None and amax.dtype == torch.float32 and self._fake_quant and not self._learn_amax
                and not self._unsigned and not quant_nn.TensorQuantizer.use_fb_fake_quant)

    def _fast(self, inputs: torch.Tensor) -> bool:
        return (self.static_signed() and inputs.dtype == torch.float32
                and not (inputs.requires_grad and torch.is_grad_enabled()))

    def _quant_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self._fast(inputs):
            if self._grid:
                raise RuntimeError("an integer-grid input quantizer got an input it cannot put on the grid "
                                   f"({inputs.dtype}, gradient {inputs.requires_grad})")
            return super()._quant_forward(inputs)
        amax = self._get_amax(inputs)
        if not isinstance(inputs, nn.Parameter):
            return fake_quant(inputs, amax, self._num_bits, self._narrow_range, self._grid)
        key = (inputs, inputs._version, self._amax, self._amax._version, self._num_bits, self._narrow_range)
        kept = self._kept
        if kept is None or any(a is not b if isinstance(a, torch.Tensor) else a != b for a, b in zip(kept[0], key)):
            kept = self._kept = (key, fake_quant(inputs, amax, self._num_bits, self._narrow_range))
        return kept[1]


def _step(quantizer: quant_nn.TensorQuantizer) -> torch.Tensor:
    """The real value of one integer step of ``quantizer``'s grid, ``amax / max_bound`` (0 where amax is 0)."""
    amax = quantizer._amax.detach()
    high = _bounds(quantizer._num_bits, quantizer._narrow_range)[1]
    return torch.where(amax <= ZERO_AMAX, 0.0, amax / high)


class IntegerGridLayer:
    """A QuantConv2d or QuantLinear evaluated on the integer grid (``exploration.gpu_math: integer``): the input
    quantizer passes the inputs' integer values on, the weight holds the weights' integer values, and a forward
    hook scales the integer sums by the two grid steps per output channel and adds the bias. Products of integers
    below 2048 are exact in TF32 and their sums exact in fp32 up to 2**24, so a GPU's TF32 convolutions compute
    what integer hardware does; the fake-quantized path rounds every dequantized value to TF32's 10 bits of
    mantissa instead. On the CPU both paths agree up to float rounding."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.bias = module.bias
        self.channels_last_dim = isinstance(module, quant_nn.QuantLinear)  # a linear's output: (..., channels)
        self.scale: torch.Tensor | None = None
        self.handle: Any = None

    @staticmethod
    def fits(module: nn.Module) -> bool:
        """A QuantConv2d or QuantLinear whose two quantizers have fixed signed grids."""
        return (type(module) in (quant_nn.QuantConv2d, quant_nn.QuantLinear)
                and all(isinstance(q, InferenceTensorQuantizer) and q.static_signed()
                        for q in (module._input_quantizer, module._weight_quantizer)))

    @torch.no_grad()
    def enter(self, fp32_weight: torch.Tensor) -> None:
        """Put the layer on the grid of its quantizers' current bit widths (the weight quantizer is left off)."""
        m, weights = self.module, self.module._weight_quantizer
        m.weight.copy_(fake_quant(fp32_weight, weights._amax, weights._num_bits, weights._narrow_range, grid=True))
        weights.disable()
        m._input_quantizer._grid = True
        self.scale = (_step(m._input_quantizer) * _step(weights)).reshape(-1)
        if self.handle is None:
            m.bias = None
            self.handle = m.register_forward_hook(self._rescale)

    def leave(self) -> None:
        """Back to the fake-quantized path (the caller writes the weight)."""
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
            self.module.bias = self.bias
        self.module._input_quantizer._grid = False

    def _rescale(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        shape = (-1,) if self.channels_last_dim else (-1,) + (1,) * (output.dim() - 2)
        output.mul_(self.scale.view(shape))
        return output if self.bias is None else output.add_(self.bias.view(shape))
