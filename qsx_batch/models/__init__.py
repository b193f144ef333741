"""Model registry: built-in networks, torchvision classifiers by name, and ``module.path:callable``."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError, writing
from ..plugins import import_callable, is_import_reference
from .lenet5 import LeNet5
from .resnet_cifar import resnet8, resnet20

BUILTIN_MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
    "resnet8": resnet8,
    "resnet20": resnet20,
}


def torchvision_model_names() -> list[str]:
    """The classification models that torchvision can build by name."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def model_names() -> list[str]:
    """Every name ``model.type`` accepts (besides ``module.path:callable``)."""
    return sorted(BUILTIN_MODELS) + torchvision_model_names()


def _constructor(name: str) -> Callable[..., nn.Module]:
    if is_import_reference(name):
        return import_callable(name, "model.type")
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name]
    if name in torchvision_model_names():
        import torchvision

        return lambda **kwargs: torchvision.models.get_model(name, weights=None, **kwargs)
    raise UserError(
        f"Unknown model.type '{name}'. Valid names: {', '.join(model_names())}, "
        "or your own network as 'module.path:callable'."
    )


def build_model(name: str, extra_args: dict[str, Any] | None = None) -> nn.Module:
    """Construct the network (random weights) named by ``model.type``."""
    try:
        model = _constructor(name)(**(extra_args or {}))
    except TypeError as exc:
        raise UserError(f"model.type '{name}' rejected model.extra_args {extra_args}: {exc}.") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model.type '{name}' returned {type(model).__name__}, not a torch.nn.Module.")
    return model


def load_weights(model: nn.Module, path: Path, model_name: str) -> None:
    """Load a state dict saved with ``torch.save`` (plain or under 'state_dict') into ``model``."""
    if not path.is_file():
        raise UserError(f"Weights file {path} (model.weights) does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign or corrupt file
        raise UserError(f"Weights file {path} cannot be read as PyTorch weights: {exc}".strip()) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"Weights file {path} holds a {type(state).__name__}, not a state dict.")
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} (file {list(state[k].shape)}, model {list(v.shape)})" for k, v in expected.items()
                  if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)):
        if keys:
            problems.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
    if problems:
        raise UserError(f"Weights file {path} does not fit model.type '{model_name}': " + "; ".join(problems) + ".")
    model.load_state_dict(state, strict=True)


def save_file(obj: Any, path: Path) -> None:
    """``torch.save`` into a temporary file, then renamed: a reader never sees half a file, and a full disk is an
    OSError naming ``path`` (torch's own writer reports it without errno or file)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_bytes(buffer.getbuffer())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)


def save_weights(model: nn.Module, path: Path) -> None:
    """Save ``model``'s state dict so that :func:`load_weights` reads it back."""
    save_file(model.state_dict(), path)
