"""Find the layers a problem acts on and measure their size on the real input shape."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from .attention import AttentionMatmul, InProjection
from .functional import FunctionalUses

# a MultiheadAttention's Q, K and V projections are Linear layers once exposed (.attention), its two products of
# activations AttentionMatmul layers
LAYER_TYPES = {"Conv2d": (nn.Conv2d,), "Linear": (nn.Linear, InProjection), "AttentionMatmul": (AttentionMatmul,)}


@dataclass(frozen=True)
class LayerInfo:
    """One target layer: its dotted name, type, weight count, and per-sample MACs and input shape; ``functional``:
    the model passes the layer's weight to ``F.linear``/``F.conv*`` instead of calling it (:mod:`.functional`)."""

    name: str
    kind: str
    params: int
    macs: int
    input_shape: tuple[int, ...]
    functional: bool = False


def target_layers(model: nn.Module, layer_types: list[str], skip: list[str]) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs of the given layer types, in model order, minus skipped names."""
    names = {name for name, _ in model.named_modules()}
    unknown = [s for s in skip if s not in names]
    if unknown:
        raise UserError(f"problem.skip_layers names layers the model does not have: {unknown}.")
    types = tuple(kind for t in layer_types for kind in LAYER_TYPES[t])
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, types) and n not in skip]
    if not found:
        raise UserError(f"The model has no layers of types {layer_types} to act on (problem.layer_types).")
    return found


@dataclass(frozen=True)
class Uncovered:
    """A module with weights of its own that the search leaves in fp32 (a type outside ``problem.layer_types``,
    a skipped layer, or weights an attention module uses through its functional path)."""

    name: str
    kind: str
    weights: int


def uncovered_layers(model: nn.Module, covered: list[str]) -> list[Uncovered]:
    """Modules whose own parameters of two or more dimensions (matmul and convolution weights, embeddings; not
    normalization scales) no target layer covers, in model order (an attention whose Q, K and V projections are
    all targets is covered)."""
    taken: dict[int, int] = {}  # parameter -> its elements that target layers cover
    for name in covered:
        module = model.get_submodule(name)
        if isinstance(module, AttentionMatmul):
            continue  # a product of activations holds no weight
        source = module.parameter() if isinstance(module, InProjection) else module.weight
        taken[id(source)] = taken.get(id(source), 0) + module.weight.numel()
    out = []
    for name, module in model.named_modules():
        if name in covered:
            continue
        weights = sum(p.numel() - taken.get(id(p), 0) for p in module.parameters(recurse=False) if p.dim() >= 2)
        if weights:
            out.append(Uncovered(name, type(module).__name__, int(weights)))
    return out


def _macs(module: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    """MACs of one call on the profile's single sample: every output element (however the model reshaped the
    sample, into windows or tokens) costs one weight row (for a product of activations, one row of its input)."""
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return int(out.numel() * per_output)
    if isinstance(module, AttentionMatmul):
        return int(out.numel() * inputs[0].shape[-1])
    return int(out.numel() * module.in_features)


def _kind(module: nn.Module) -> str:
    return next(kind for kind, types in LAYER_TYPES.items() if isinstance(module, types))


def profile_layers(model: nn.Module, layers: list[tuple[str, nn.Module]], sample: torch.Tensor) -> list[LayerInfo]:
    """Run one sample through ``model`` and record each layer's input shape and MACs per sample. Layers it never
    calls are looked for in a second pass among the weights it passes to ``F.linear``/``F.conv*`` itself."""
    seen: dict[str, LayerInfo] = {}
    handles = []
    functional: set[str] = set()
    for name, module in layers:
        def hook(mod, inputs, output, name=name):
            x = inputs[0]  # the sample's, or (reshaped by the model) its windows', tokens' or heads' rows
            weights = 0 if isinstance(mod, AttentionMatmul) else int(mod.weight.numel())
            seen[name] = LayerInfo(name, _kind(mod), weights, _macs(mod, inputs, output),
                                   tuple(x.shape[1:] if x.shape[0] == 1 else x.shape), name in functional)
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(sample[:1])
            functional.update(n for n, _ in layers if n not in seen)
            if functional:
                with FunctionalUses(model, sorted(functional)):
                    model(sample[:1])
    finally:
        for h in handles:
            h.remove()
    missing = [n for n, _ in layers if n not in seen]
    if missing:
        raise UserError(f"Layers {missing} are never called in the model's forward pass, nor is their weight used "
                        "through F.linear or F.conv*; add them to problem.skip_layers.")
    return [seen[n] for n, _ in layers]


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``name``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
