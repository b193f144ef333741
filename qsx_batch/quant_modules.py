"""Swap Conv2d/Linear layers for pytorch-quantization's fake-quantizing QuantConv2d/QuantLinear."""

from __future__ import annotations

import warnings

from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from absl import logging as absl_logging
    from pytorch_quantization import nn as quant_nn
    from pytorch_quantization.tensor_quant import QuantDescriptor

absl_logging.set_verbosity(absl_logging.ERROR)

from .problems.layers import set_submodule  # noqa: E402


def _descriptors(calib_method: str) -> tuple[QuantDescriptor, QuantDescriptor]:
    """Per-tensor input quantizer with the chosen calibrator; per-output-channel max weight quantizer."""
    return (
        QuantDescriptor(num_bits=8, calib_method=calib_method),
        QuantDescriptor(num_bits=8, axis=(0,), calib_method="max"),
    )


def to_quant_module(module: nn.Module, calib_method: str) -> nn.Module:
    """A QuantConv2d/QuantLinear with ``module``'s configuration and weights."""
    desc_in, desc_w = _descriptors(calib_method)
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
