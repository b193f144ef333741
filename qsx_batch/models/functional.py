"""Layers that a model never calls but whose weight it passes to ``F.linear`` or ``F.conv*`` itself (torchvision's
Swin: ``F.linear(x, self.qkv.weight, ...)``). Such a use runs as a call of the layer, so that its quantizers, its
sparsity hook and its profile see it like any other.

The calls are caught with a :class:`torch.overrides.TorchFunctionMode` that is active while the model runs
(:func:`route_functional_uses`). It sees every torch function the model's own Python code calls, however the code
reaches the weight, and hands on everything else unchanged. A weight used inside another torch function (such as
``F.multi_head_attention_forward``) is out of its sight: :mod:`.attention` makes those projections layers.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

FUNCTIONS = frozenset({F.linear, F.conv1d, F.conv2d, F.conv3d})


def call_as(module: nn.Module, func, args: tuple, kwargs: dict):
    """``func(x, weight, ...)`` as a call of ``module``: its forward pre-hooks on ``x``, its input and weight
    quantizers (a pytorch-quantization layer), the function, then its forward hooks."""
    x, weight, *rest = args
    hook_args = (x,)
    for hook in module._forward_pre_hooks.values():
        result = hook(module, hook_args)
        if result is not None:
            hook_args = result if isinstance(result, tuple) else (result,)
    x = hook_args[0]
    if hasattr(module, "_input_quantizer"):
        x, weight = module._input_quantizer(x), module._weight_quantizer(weight)
    out = func(x, weight, *rest, **kwargs)
    for hook in module._forward_hooks.values():
        result = hook(module, hook_args, out)
        if result is not None:
            out = result
    return out


class FunctionalUses(TorchFunctionMode):
    """While active, ``F.linear``/``F.conv*`` on the weight of one of the named layers of ``model`` runs as a call
    of that layer (:func:`call_as`). The layers are looked up on entry, so layers swapped since (quantized
    twins) are the ones called."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names
        self.by_weight: dict[int, nn.Module] = {}

    def __enter__(self):
        modules = [self.model.get_submodule(name) for name in self.names]
        self.by_weight = {id(module.weight): module for module in modules}
        return super().__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FUNCTIONS and len(args) >= 2:
            module = self.by_weight.get(id(args[1]))
            if module is not None and module.weight is args[1]:
                return call_as(module, func, args, kwargs)
        return func(*args, **kwargs)


def route_functional_uses(model: nn.Module, names: list[str]) -> None:
    """Make every forward pass of ``model`` run under :class:`FunctionalUses` for ``names`` (nothing without
    names: the mode costs a Python call per torch function)."""
    if not names:
        return
    active: list[FunctionalUses] = []

    def enter(module, inputs):
        mode = FunctionalUses(model, names)
        mode.__enter__()
        active.append(mode)

    def leave(module, inputs, output):
        active.pop().__exit__(None, None, None)

    model.register_forward_pre_hook(enter)
    model.register_forward_hook(leave, always_call=True)
